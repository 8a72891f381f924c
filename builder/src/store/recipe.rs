//! What builds and `check` need from the store: `source = { store = "NAME" }`,
//! per-device resolution (device > tag > global) for fleets, and the
//! device × secret matrix of `check --devices`.

use super::audit::{self, Entry};
use super::commands::resolve;
use super::crypto::Identity;
use super::layout::Store;
use super::metadata::SecretMeta;
use super::names::Scope;
use super::StoreError;
use crate::devices::Device;
use crate::recipe::{Recipe, SourceSpec};
use crate::secrets::Override;
use crate::sources::{self, Fetched, SourceError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The recipe's store: `[store] path`, else `secrets-store/` beside it.
pub fn store_dir(recipe: &Recipe) -> PathBuf {
    match recipe.store.as_ref().and_then(|s| s.path.as_ref()) {
        Some(p) => recipe.resolve(p),
        None => recipe.base_dir.join("secrets-store"),
    }
}

/// The command that creates a missing store secret, with the recipe's
/// description.
pub fn set_command(recipe: &Recipe, secret: &str, store_name: &str) -> String {
    let description = recipe
        .secrets
        .get(secret)
        .and_then(|s| s.description.as_deref())
        .unwrap_or("…");
    format!(
        "build-image store set {store_name} --store {} --description {}",
        shell_quote(&store_dir(recipe).display().to_string()),
        shell_quote(description)
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn source_err(secret: &str, e: StoreError) -> SourceError {
    SourceError::Invalid {
        name: secret.into(),
        reason: format!("store: {e}"),
    }
}

/// Read one store secret (global scope) for a build: missing names say how
/// to create them; reads are audited.
pub fn fetch(recipe: &Recipe, secret: &str, store_name: &str) -> Result<Fetched, SourceError> {
    super::validate_name(store_name).map_err(|e| source_err(secret, e))?;
    let dir = store_dir(recipe);
    let missing = || {
        Ok(Fetched::Missing {
            how: set_command(recipe, secret, store_name),
        })
    };
    if !dir.join(super::layout::RECIPIENTS).is_file() {
        return missing();
    }
    let store = Store::open(&dir).map_err(|e| source_err(secret, e))?;
    let meta = SecretMeta::load(&store, store_name).map_err(|e| source_err(secret, e))?;
    let Some((scope, version)) = meta
        .as_ref()
        .and_then(|m| m.scope(&Scope::Global).map(|s| (Scope::Global, s.current)))
    else {
        return missing();
    };
    read(recipe, &store, store_name, &scope, version, "")
        .map(Fetched::Found)
        .map_err(|e| source_err(secret, e))
}

fn read(
    recipe: &Recipe,
    store: &Store,
    name: &str,
    scope: &Scope,
    version: u32,
    device: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    let identity = Identity::load(None)?;
    let value = identity.decrypt_file(&store.version_file(name, scope, version))?;
    let mut detail = format!("recipe {}", recipe.path.display());
    if !device.is_empty() {
        detail.push_str(&format!(" device {device}"));
    }
    audit::append(
        store,
        &[Entry::new("read")
            .secret(name, &scope.to_string(), version)
            .detail(detail)],
    )?;
    Ok(value)
}

/// A device's overrides plus its store values resolved device > tag >
/// global, for every store secret the device does not set itself.
pub fn device_overrides(
    recipe: &Recipe,
    device: &Device,
) -> Result<BTreeMap<String, Override>, SourceError> {
    let mut out = device.overrides.clone();
    let dir = store_dir(recipe);
    let mut store = None;
    for (secret, s) in &recipe.secrets {
        let Some(SourceSpec::Store(name)) = &s.source else {
            continue;
        };
        if out.contains_key(secret) || !dir.join(super::layout::RECIPIENTS).is_file() {
            continue;
        }
        super::validate_name(name).map_err(|e| source_err(secret, e))?;
        if store.is_none() {
            store = Some(Store::open(&dir).map_err(|e| source_err(secret, e))?);
        }
        let Some(st) = store.as_ref() else { continue };
        let meta = SecretMeta::load(st, name).map_err(|e| source_err(secret, e))?;
        // Not in the store at all: the recipe's source reports it missing.
        let Some((scope, version)) = meta
            .as_ref()
            .and_then(|m| resolve(m, &device.name, &device.tags))
        else {
            continue;
        };
        let value = read(recipe, st, name, &scope, version, &device.name)
            .map_err(|e| source_err(secret, e))?;
        out.insert(secret.clone(), Override::Value(value));
    }
    Ok(out)
}

/// One cell of the `check --devices` matrix.
#[derive(Debug, Serialize)]
pub struct Cell {
    pub secret: String,
    pub present: bool,
    /// Where the value would come from (never the value).
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeviceRow {
    pub device: String,
    pub tags: Vec<String>,
    pub secrets: Vec<Cell>,
}

/// The device × secret matrix: resolved from metadata only, nothing is
/// decrypted.
pub fn matrix(recipe: &Recipe, devices: &[Device]) -> Vec<DeviceRow> {
    let dir = store_dir(recipe);
    let store = dir
        .join(super::layout::RECIPIENTS)
        .is_file()
        .then(|| Store::open(&dir).ok())
        .flatten();
    let mut metas: BTreeMap<String, Option<SecretMeta>> = BTreeMap::new();
    // Sources other than the store: asked once, the value dropped at once.
    let mut plain: BTreeMap<String, (bool, String, Option<String>)> = BTreeMap::new();
    devices
        .iter()
        .map(|d| {
            let secrets = recipe
                .secrets
                .iter()
                .map(|(secret, s)| {
                    if let Some(o) = d.overrides.get(secret) {
                        let from = match o {
                            Override::Value(_) => "devices file (value)".to_string(),
                            Override::Source(spec) => {
                                format!("devices file: {}", sources::describe(recipe, spec))
                            }
                        };
                        return Cell {
                            secret: secret.clone(),
                            present: true,
                            from,
                            how: None,
                        };
                    }
                    let spec = sources::effective(secret, s.source.as_ref());
                    if let SourceSpec::Store(name) = &spec {
                        let meta = metas.entry(name.clone()).or_insert_with(|| {
                            store
                                .as_ref()
                                .and_then(|st| SecretMeta::load(st, name).ok().flatten())
                        });
                        return match meta.as_ref().and_then(|m| resolve(m, &d.name, &d.tags)) {
                            Some((scope, v)) => Cell {
                                secret: secret.clone(),
                                present: true,
                                from: format!("store {name} {scope} v{v}"),
                                how: None,
                            },
                            None => Cell {
                                secret: secret.clone(),
                                present: false,
                                from: format!("store {name}"),
                                how: Some(set_command(recipe, secret, name)),
                            },
                        };
                    }
                    let (present, from, how) = plain
                        .entry(secret.clone())
                        .or_insert_with(|| {
                            let from = sources::describe(recipe, &spec);
                            match sources::fetch(recipe, secret, &spec) {
                                Ok(Fetched::Found(_)) => (true, from, None),
                                Ok(Fetched::Missing { how }) => (false, from, Some(how)),
                                Err(e) => (false, from, Some(e.to_string())),
                            }
                        })
                        .clone();
                    Cell {
                        secret: secret.clone(),
                        present,
                        from,
                        how,
                    }
                })
                .collect();
            DeviceRow {
                device: d.name.clone(),
                tags: d.tags.clone(),
                secrets,
            }
        })
        .collect()
}

/// The matrix as a text table.
pub fn render_matrix(rows: &[DeviceRow]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.device);
        if !row.tags.is_empty() {
            out.push_str(&format!("  (tags: {})", row.tags.join(", ")));
        }
        out.push('\n');
        for cell in &row.secrets {
            let mark = if cell.present { "✓" } else { "✗" };
            out.push_str(&format!("  {mark} {:<24} {}\n", cell.secret, cell.from));
            if let Some(how) = &cell.how {
                out.push_str(&format!("    └ missing: {how}\n"));
            }
        }
    }
    out
}
