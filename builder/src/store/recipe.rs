//! What builds and `check` need from the store: `source = { store = "NAME" }`,
//! per-device resolution (device > tag > global) for fleets, and the
//! device × secret matrix of `check --devices`.

use super::audit::Entry;
use super::commands::resolve;
use super::crypto::Identity;
use super::layout::Store;
use super::metadata::SecretMeta;
use super::names::Scope;
use super::session::{self, RecipientsCheck, Session};
use super::StoreError;
use crate::recipe::devices::Device;
use crate::recipe::{Recipe, SourceSpec};
use crate::secrets::sources::{self, Fetched, SourceError};
use crate::secrets::Override;
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

/// `s` as one word for a POSIX shell: bare when it holds only safe
/// characters, else single-quoted by the bundle's one quoting routine (the
/// `shell` template escape).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&c))
    {
        return s.to_string();
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    sealed_firstboot::bundle::quote_into(&mut out, s.as_bytes(), b'\'', |b| {
        (b == b'\'').then_some(b"'\\''")
    });
    String::from_utf8_lossy(&out).into_owned()
}

fn source_err(secret: &str, e: StoreError) -> SourceError {
    SourceError::Store {
        name: secret.into(),
        cause: e,
    }
}

/// A store pinned by SEALED_IMAGE_STORE_ID is expected to be there: a
/// recipe that reads it while it is gone is refused (its secrets would be
/// missing, an optional one left out without a word).
fn gone_but_pinned(dir: &std::path::Path) -> Option<StoreError> {
    let pin = super::integrity::pin()?;
    Some(StoreError::integrity(
        dir,
        ".",
        format!(
            "there is no store here, but {}={pin} pins one: it was removed (put it back as a member committed it, `git checkout -- {}`), or the recipe names another place",
            super::integrity::STORE_ID_ENV,
            dir.display()
        ),
    ))
}

/// Whether the recipe's store exists: any file of a store (one with
/// recipients.txt removed is a store, refused as such, not no store).
fn has_store(dir: &std::path::Path) -> bool {
    super::layout::is_store(dir)
}

/// Read one store secret (global scope) for a build: missing names say how
/// to create them; the store is verified with the identity before anything
/// in it is used; reads are audited.
pub fn fetch(recipe: &Recipe, secret: &str, store_name: &str) -> Result<Fetched, SourceError> {
    super::validate_name(store_name).map_err(|e| source_err(secret, e))?;
    let dir = store_dir(recipe);
    let missing = || {
        Ok(Fetched::Missing {
            how: set_command(recipe, secret, store_name),
        })
    };
    if !has_store(&dir) {
        if let Some(e) = gone_but_pinned(&dir) {
            return Err(source_err(secret, e));
        }
        return missing();
    }
    let mut store = Store::open(&dir).map_err(|e| source_err(secret, e))?;
    let Some(identity) = Identity::load_optional(None).map_err(|e| source_err(secret, e))? else {
        // Without an identity nothing can be verified or decrypted: a name
        // the store does not even list is reported missing (with how to
        // create it), anything else needs the identity.
        let listed = session::peek(&store)
            .map(|u| {
                u.metas
                    .get(store_name)
                    .is_some_and(|m| m.scope(&Scope::Global).is_some())
            })
            .unwrap_or(true);
        if !listed {
            return missing();
        }
        return Err(source_err(
            secret,
            StoreError::no_identity("the recipe reads this secret from the store"),
        ));
    };
    let mut s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)
        .map_err(|e| source_err(secret, e))?;
    let Some(version) = s
        .meta(store_name)
        .and_then(|m| m.scope(&Scope::Global).map(|sc| sc.current))
    else {
        return missing();
    };
    read(
        recipe,
        &mut s,
        &identity,
        store_name,
        &Scope::Global,
        version,
        "",
    )
    .map(Fetched::Found)
    .map_err(|e| source_err(secret, e))
}

fn read(
    recipe: &Recipe,
    s: &mut Session,
    identity: &Identity,
    name: &str,
    scope: &Scope,
    version: u32,
    device: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    let value = s.read_value(identity, name, scope, version)?;
    let mut detail = format!("recipe {}", recipe.path.display());
    if !device.is_empty() {
        detail.push_str(&format!(" device {device}"));
    }
    s.audit(&[Entry::new("read")
        .secret(name, &scope.to_string(), version)
        .detail(detail)])?;
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
    let wanted: Vec<(&String, &String)> = recipe
        .secrets
        .iter()
        .filter_map(|(secret, s)| match &s.source {
            Some(SourceSpec::Store(name)) if !out.contains_key(secret) => Some((secret, name)),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    if !has_store(&dir) {
        return match gone_but_pinned(&dir) {
            Some(e) => Err(source_err(wanted[0].0, e)),
            None => Ok(out),
        };
    }
    for (secret, name) in &wanted {
        super::validate_name(name).map_err(|e| source_err(secret, e))?;
    }
    let first = wanted[0].0;
    let mut store = Store::open(&dir).map_err(|e| source_err(first, e))?;
    let Some(identity) = Identity::load_optional(None).map_err(|e| source_err(first, e))? else {
        // Nothing to verify with: the recipe's sources report each secret
        // (missing ones with how to create them).
        return Ok(out);
    };
    let mut s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)
        .map_err(|e| source_err(first, e))?;
    for (secret, name) in wanted {
        // Not in the store at all: the recipe's source reports it missing.
        let Some((scope, version)) = s
            .meta(name)
            .and_then(|m| resolve(m, &device.name, &device.tags))
        else {
            continue;
        };
        let value = read(
            recipe,
            &mut s,
            &identity,
            name,
            &scope,
            version,
            &device.name,
        )
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
/// decrypted. The metadata is verified when an identity is at hand;
/// `verified` says whether it was.
pub fn matrix(recipe: &Recipe, devices: &[Device]) -> Result<(Vec<DeviceRow>, bool), StoreError> {
    let dir = store_dir(recipe);
    let uses_store = uses_store(recipe);
    if uses_store && !has_store(&dir) {
        if let Some(e) = gone_but_pinned(&dir) {
            return Err(e);
        }
    }
    let (store_metas, verified) = if uses_store && has_store(&dir) {
        let mut store = Store::open(&dir)?;
        match Identity::load_optional(None)? {
            Some(identity) => {
                let s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)?;
                (Some(s.metas.clone()), true)
            }
            None => (Some(session::peek(&store)?.metas), false),
        }
    } else {
        (None, true)
    };
    Ok((matrix_of(recipe, devices, store_metas.as_ref()), verified))
}

/// Whether `recipe` reads any secret from the store.
pub fn uses_store(recipe: &Recipe) -> bool {
    recipe
        .secrets
        .values()
        .any(|s| matches!(s.source, Some(SourceSpec::Store(_))))
}

/// The device × secret matrix from the store's metadata (`None`: no
/// store), as [`matrix`] makes it: store secrets resolved device > tag >
/// global from metadata alone, other sources asked once each (their value
/// dropped at once), command sources included.
pub fn matrix_of(
    recipe: &Recipe,
    devices: &[Device],
    store_metas: Option<&BTreeMap<String, SecretMeta>>,
) -> Vec<DeviceRow> {
    matrix_with(recipe, devices, store_metas, Commands::Run)
}

/// Whether [`matrix_with`] runs `command` sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commands {
    Run,
    /// Not run: their cells are missing, `how` says why and what runs them.
    Skip {
        hint: &'static str,
    },
}

/// [`matrix_of`], with `command` sources run or not. A caller that has
/// verified the store passes its metadata (`build-image serve`).
pub fn matrix_with(
    recipe: &Recipe,
    devices: &[Device],
    store_metas: Option<&BTreeMap<String, SecretMeta>>,
    commands: Commands,
) -> Vec<DeviceRow> {
    let metas: BTreeMap<String, Option<SecretMeta>> = store_metas
        .iter()
        .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
        .collect();
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
                        let meta = metas.get(name).and_then(|m| m.as_ref());
                        return match meta.and_then(|m| resolve(m, &d.name, &d.tags)) {
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
                            if let (SourceSpec::Command(_), Commands::Skip { hint }) =
                                (&spec, commands)
                            {
                                return (false, from, Some(hint.to_string()));
                            }
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
