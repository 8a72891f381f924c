//! The store source, `source = { store = "NAME" }`: a build's read of one
//! store secret, and a fleet device's store values resolved device > tag >
//! global. The store itself (`crate::store`) knows nothing of recipes.

use super::{Fetched, SourceError};
use crate::recipe::devices::{Device, Override};
use crate::recipe::{Recipe, SourceSpec};
use crate::store::audit::Entry;
use crate::store::commands::resolve;
use crate::store::crypto::Identity;
use crate::store::layout::Store;
use crate::store::names::Scope;
use crate::store::session::{self, RecipientsCheck, Session};
use crate::store::StoreError;
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
    sealed_bundle::quote_into(&mut out, s.as_bytes(), b'\'', |b| {
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
pub fn gone_but_pinned(dir: &std::path::Path) -> Option<StoreError> {
    let pin = crate::store::integrity::pin()?;
    Some(StoreError::integrity(
        dir,
        ".",
        format!(
            "there is no store here, but {}={pin} pins one: it was removed (put it back as a member committed it, `git checkout -- {}`), or the recipe names another place",
            crate::store::integrity::STORE_ID_ENV,
            dir.display()
        ),
    ))
}

/// Whether the recipe's store exists: any file of a store (one with
/// recipients.txt removed is a store, refused as such, not no store).
pub fn has_store(dir: &std::path::Path) -> bool {
    crate::store::layout::is_store(dir)
}

/// Read one store secret (global scope) for a build: missing names say how
/// to create them; the store is verified with the identity before anything
/// in it is used; reads are audited.
pub fn fetch(recipe: &Recipe, secret: &str, store_name: &str) -> Result<Fetched, SourceError> {
    crate::store::validate_name(store_name).map_err(|e| source_err(secret, e))?;
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
        crate::store::validate_name(name).map_err(|e| source_err(secret, e))?;
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
