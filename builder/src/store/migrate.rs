//! `store migrate`: upgrade a store written by an earlier build-image
//! (format 1: no store key, nothing authenticated) to format 2.
//!
//! A member's identity decrypts every version; the member accepts the
//! recipients `recipients.txt` lists now (shown first). Each value is
//! encrypted again to exactly those recipients (a format-1 file's
//! recipients cannot be read from it), under a new store key, every
//! `meta.toml` records its files' SHA-256, the audit log is chained and
//! authenticated from its first line, and the crash leftovers format 1
//! left (`.tmp-*` files) are removed. One change: a crash leaves the old
//! store or the new one.

use super::audit::{self, Entry, Head, Tip};
use super::crypto::{Identity, Recipients, RecipientsFile};
use super::integrity::{sha256_hex, Index, StoreKey, FORMAT};
use super::journal::Writer;
use super::layout::{self, Store};
use super::metadata::SecretMeta;
use super::StoreError;
use std::collections::BTreeMap;

/// What a migration did.
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub id: String,
    pub names: usize,
    pub versions: usize,
    pub recipients: Vec<String>,
    /// Leftovers of earlier crashes that were removed.
    pub removed: Vec<String>,
}

/// The recipients a migration would accept (to show before asking).
pub fn recipients(store: &Store) -> Result<RecipientsFile, StoreError> {
    let text = store
        .read(layout::RECIPIENTS, layout::MAX_RECIPIENTS)?
        .unwrap_or_default();
    RecipientsFile::parse(
        &String::from_utf8_lossy(&text),
        &store.root().join(layout::RECIPIENTS),
    )
}

/// Migrate the (locked) format-1 store.
pub fn migrate(store: &Store, identity: &Identity) -> Result<Migrated, StoreError> {
    let root = store.root();
    let tree = store.load()?;
    if tree.index.is_some() || tree.key_file.is_some() {
        return Err(StoreError::Conflict(format!(
            "{} is not a format 1 store (it has store.toml or key.age): nothing to migrate",
            root.display()
        )));
    }
    if !tree.problems.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems: tree.problems,
        });
    }
    let file = recipients(store)?;
    let keys = Recipients::from_keys(&file.keys(), &root.join(layout::RECIPIENTS))?;
    // Leftovers of format 1's temporary files: removed. Anything else
    // unexpected is for the user to look at.
    let mut removed = Vec::new();
    let mut strange = Vec::new();
    for (rel, _) in &tree.unexpected {
        let last = rel.rsplit('/').next().unwrap_or("");
        if last.starts_with(".tmp-") {
            removed.push(rel.clone());
        } else {
            strange.push(super::Problem {
                path: rel.clone(),
                problem: "no part of the store: move it away before migrating".into(),
            });
        }
    }
    let key = StoreKey::generate();
    let fingerprint = keys.fingerprint();
    let mut w = Writer::begin(store)?;
    let mut metas = BTreeMap::new();
    let mut versions = 0;
    for (name, files) in &tree.names {
        let Some(bytes) = &files.meta else {
            strange.push(super::Problem {
                path: format!("{}/{name}", layout::SECRETS),
                problem: "a directory without meta.toml: move it away before migrating".into(),
            });
            continue;
        };
        let mut meta = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(SecretMeta::parse)
            .map_err(|e| StoreError::integrity(root, &layout::meta_rel(name), e))?;
        if meta.name != *name {
            return Err(StoreError::integrity(
                root,
                &layout::meta_rel(name),
                format!("it names {:?}", meta.name),
            ));
        }
        for scope in meta.scope_list() {
            let Some(sc) = meta.scopes.get_mut(&scope.to_string()) else {
                continue;
            };
            for v in &mut sc.versions {
                let bytes = store.read_version(name, &scope, v.version)?;
                let value = identity.decrypt(
                    &bytes,
                    &root
                        .join(layout::version_rel(name, &scope, v.version))
                        .display()
                        .to_string(),
                    super::input::MAX_VALUE,
                )?;
                let ciphertext = keys.encrypt(&value)?;
                v.sha256 = sha256_hex(&ciphertext);
                v.recipients = fingerprint.clone();
                w.put(
                    &layout::version_rel(name, &scope, v.version),
                    &ciphertext,
                    0o644,
                )?;
                versions += 1;
            }
        }
        metas.insert(name.clone(), meta);
    }
    if !strange.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems: strange,
        });
    }
    for rel in &removed {
        w.remove(rel);
    }
    let mut secrets = BTreeMap::new();
    for (name, meta) in &metas {
        let bytes = meta.to_toml().into_bytes();
        secrets.insert(name.clone(), sha256_hex(&bytes));
        w.put(&layout::meta_rel(name), &bytes, 0o644)?;
    }
    // The log: every format-1 line, chained and authenticated, then ours.
    let mut entries = match &tree.audit {
        Some(log) => {
            audit::parse(log).map_err(|e| StoreError::integrity(root, layout::AUDIT, e))?
        }
        None => Vec::new(),
    };
    for e in &mut entries {
        e.generation = 0;
        e.prev.clear();
        e.mac.clear();
    }
    entries.push(Entry::new("migrate").detail(format!(
        "format 1 to {FORMAT}: {} secret(s), {versions} version(s), {} recipient(s)",
        metas.len(),
        keys.keys.len()
    )));
    let (log, tip) = audit::chain(&Tip::empty(&key.id()), &entries, &key);
    let key_file = keys.encrypt(&key.to_plaintext())?;
    let index = Index::new(&key, &key_file, keys.strings(), tip.count, secrets);
    w.put(layout::KEY, &key_file, 0o644)?;
    w.put(layout::AUDIT, &log, 0o644)?;
    w.put(layout::AUDIT_HEAD, &Head::new(&tip, &key).to_bytes(), 0o644)?;
    w.put(".gitignore", layout::GITIGNORE.as_bytes(), 0o644)?;
    // Last of the puts: with store.toml the directory is a format-2 store.
    w.put(layout::INDEX, index.to_toml().as_bytes(), 0o644)?;
    w.commit("migrate", &key.id(), &[&key])?;
    Ok(Migrated {
        id: key.id(),
        names: metas.len(),
        versions,
        recipients: keys.strings(),
        removed,
    })
}
