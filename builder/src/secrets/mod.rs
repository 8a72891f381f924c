//! Collect the recipe's secrets from their sources: check every one, report
//! all missing required secrets at once, validate each value against its
//! type, apply processing, and produce the bundle contents.

pub mod password_hash;
pub mod sources;

use crate::recipe::devices::Override;
use crate::recipe::{Recipe, SecretType};
use sealed_bundle::{Contents, Manifest, SecretEntry};
use serde::Serialize;
use sources::{Fetched, SourceError};
use std::collections::BTreeMap;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum SecretsError {
    #[error("{} required secret(s) missing:\n{}", .0.len(), format_missing(.0))]
    Missing(Vec<Missing>),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("template {name}: {reason}")]
    Template { name: String, reason: String },
    #[error("secret {name} ({kind}): {reason}")]
    Invalid {
        name: String,
        kind: SecretType,
        reason: String,
    },
}

impl SecretsError {
    /// The store error behind this one, if a store source failed.
    pub fn store_error(&self) -> Option<&crate::store::StoreError> {
        match self {
            SecretsError::Source(SourceError::Store { cause, .. }) => Some(cause),
            _ => None,
        }
    }
}

/// A required secret that no source provided.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub name: String,
    pub description: Option<String>,
    pub how: String,
}

fn format_missing(m: &[Missing]) -> String {
    m.iter()
        .map(|m| match &m.description {
            Some(d) => format!("  ✗ {} ({d}): {}", m.name, m.how),
            None => format!("  ✗ {}: {}", m.name, m.how),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One row of `build-image check`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    pub required: bool,
    pub present: bool,
    pub source: String,
    pub description: Option<String>,
    /// How to provide it, when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// Why the value is unusable, when present but invalid (never the value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a store source failed because the store is not what its key
    /// authenticates or there is no identity for it: that kind, so `check`
    /// exits as every other command reading the store.
    #[serde(skip)]
    pub store_trouble: Option<crate::store::ErrorKind>,
}

/// Check every secret without keeping values.
pub fn check(recipe: &Recipe) -> Vec<Status> {
    recipe
        .secrets
        .iter()
        .map(|(name, s)| {
            let spec = sources::effective(name, s.source.as_ref());
            let mut st = Status {
                name: name.clone(),
                kind: s.kind,
                required: s.required,
                present: false,
                source: sources::describe(recipe, &spec),
                description: s.description.clone(),
                how: None,
                error: None,
                store_trouble: None,
            };
            match sources::fetch(recipe, name, &spec) {
                Ok(Fetched::Found(v)) => {
                    st.present = true;
                    if let Err(e) = normalise(name, s.kind, v) {
                        st.error = Some(e.to_string());
                    }
                }
                Ok(Fetched::Missing { how }) => st.how = Some(how),
                Err(e) => {
                    if let SourceError::Store { cause, .. } = &e {
                        st.store_trouble = cause.is_store_trouble().then_some(cause.kind());
                    }
                    st.error = Some(e.to_string());
                }
            }
            st
        })
        .collect()
}

/// Collect all values into bundle contents, or fail listing every missing
/// required secret.
pub fn collect(recipe: &Recipe) -> Result<Contents, SecretsError> {
    collect_with(recipe, &BTreeMap::new())
}

/// [`collect`], with per-device overrides taking the place of the recipe's
/// sources.
pub fn collect_with(
    recipe: &Recipe,
    overrides: &BTreeMap<String, Override>,
) -> Result<Contents, SecretsError> {
    let mut missing = Vec::new();
    let mut values = BTreeMap::new();
    let mut entries = Vec::new();
    let mut first_error = None;
    for (name, s) in &recipe.secrets {
        let fetched = match overrides.get(name) {
            Some(Override::Value(v)) => Ok(Fetched::Found(v.clone())),
            Some(Override::Source(spec)) => sources::fetch(recipe, name, spec),
            None => sources::fetch(recipe, name, &sources::effective(name, s.source.as_ref())),
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                first_error.get_or_insert(SecretsError::Source(e));
                continue;
            }
        };
        let value = match fetched {
            Fetched::Found(v) => v,
            Fetched::Missing { how } => {
                if s.required {
                    missing.push(Missing {
                        name: name.clone(),
                        description: s.description.clone(),
                        how,
                    });
                }
                continue;
            }
        };
        let value = match normalise(name, s.kind, value).and_then(|v| {
            password_hash::apply(s.process, v).map_err(|reason| invalid(name, s.kind, reason))
        }) {
            Ok(v) => v,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        let entry = recipe
            .secret_entry(name, s)
            .map_err(|reason| invalid(name, s.kind, reason))?;
        entries.push(entry);
        values.insert(name.clone(), value);
    }
    if !missing.is_empty() {
        return Err(SecretsError::Missing(missing));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let templates = collect_templates(recipe, &mut values)?;
    Ok(Contents {
        manifest: Manifest {
            secrets: entries,
            templates,
            partial: false,
            signers: None,
        },
        values,
    })
}

/// Read every template, check that each placeholder names a secret that is
/// present in this build, and add the texts to `values`.
fn collect_templates(
    recipe: &Recipe,
    values: &mut BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Vec<SecretEntry>, SecretsError> {
    let mut entries = Vec::new();
    for (name, t) in &recipe.templates {
        let err = |reason: String| SecretsError::Template {
            name: name.clone(),
            reason,
        };
        let path = recipe.resolve(&t.source);
        let text = crate::io::limit::read_file(&path, crate::io::bounded::MAX_VALUE_BYTES)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if std::str::from_utf8(&text).is_err() {
            return Err(err(format!("{} is not UTF-8 text", path.display())));
        }
        let names = sealed_bundle::placeholders(&text).map_err(&err)?;
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !recipe.secrets.contains_key(n.as_str()))
            .map(|n| format!("${{SECRET:{n}}}"))
            .collect();
        if !unknown.is_empty() {
            return Err(err(format!(
                "unknown placeholder(s) {} in {}: the recipe has no such secret",
                unknown.join(", "),
                path.display()
            )));
        }
        if let Some(absent) = names.iter().find(|n| !values.contains_key(n.as_str())) {
            return Err(err(format!(
                "uses ${{SECRET:{absent}}}, an optional secret that is not provided in this build"
            )));
        }
        entries.push(recipe.template_entry(name, t).map_err(err)?);
        values.insert(name.clone(), text);
    }
    Ok(entries)
}

fn invalid(name: &str, kind: SecretType, reason: String) -> SecretsError {
    SecretsError::Invalid {
        name: name.into(),
        kind,
        reason,
    }
}

/// Check a value against its type. `single-line` values lose one trailing
/// newline (files and command output usually end with one).
fn normalise(
    name: &str,
    kind: SecretType,
    mut v: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let err = |reason: &str| invalid(name, kind, reason.into());
    match kind {
        SecretType::File => Ok(v),
        SecretType::SingleLine => {
            let len = v.len();
            if v.ends_with(b"\r\n") {
                v.truncate(len - 2);
            } else if v.ends_with(b"\n") {
                v.truncate(len - 1);
            }
            if std::str::from_utf8(&v).is_err() {
                return Err(err("value is not UTF-8 text"));
            }
            if v.iter().any(|&c| c == b'\n' || c == b'\r') {
                return Err(err(
                    "value contains a line break; use type = \"multi-line\"",
                ));
            }
            if v.is_empty() {
                return Err(err("value is empty"));
            }
            Ok(v)
        }
        SecretType::MultiLine => {
            if std::str::from_utf8(&v).is_err() {
                return Err(err("value is not UTF-8 text"));
            }
            Ok(v)
        }
        SecretType::Env => {
            let text = std::str::from_utf8(&v).map_err(|_| err("value is not UTF-8 text"))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = line
                    .split_once('=')
                    .map(|(k, _)| k)
                    .ok_or_else(|| err(&format!("line {} is not KEY=VALUE", i + 1)))?;
                let key_ok = key.bytes().enumerate().all(|(j, c)| {
                    c == b'_' || c.is_ascii_alphabetic() || (j > 0 && c.is_ascii_digit())
                }) && !key.is_empty();
                if !key_ok {
                    return Err(err(&format!(
                        "line {}: key is not a valid environment variable name",
                        i + 1
                    )));
                }
            }
            Ok(v)
        }
    }
}
