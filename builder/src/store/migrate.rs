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
use super::layout::{self, Store, Tree};
use super::metadata::SecretMeta;
use super::{Problem, StoreError};
use std::collections::BTreeMap;

/// What a migration did.
#[derive(Debug, serde::Serialize)]
pub struct Migrated {
    pub id: String,
    /// What to pin in CI as `SEALED_IMAGE_STORE_ID`.
    pub pin: String,
    pub names: usize,
    pub versions: usize,
    pub recipients: Vec<String>,
    /// Leftovers of earlier crashes that were removed.
    pub removed: Vec<String>,
}

/// What in a store without `store.toml` shows it was already format 2
/// (format 1 wrote none of it): `key.age`, `audit.head`, chained audit
/// lines, version hashes in a `meta.toml`. Such a store had its
/// `store.toml` removed (and maybe more) by someone without the store key:
/// migrating it would authenticate whatever they left, so it is refused.
pub fn format_2_traces(root: &std::path::Path, tree: &Tree) -> Vec<Problem> {
    let mut traces = Vec::new();
    if tree.key_file.is_some() {
        traces.push(layout::KEY.to_string());
    }
    if tree.audit_head.is_some() {
        traces.push(layout::AUDIT_HEAD.to_string());
    }
    let chained = tree
        .audit
        .as_deref()
        .and_then(|log| audit::parse(log).ok())
        .is_some_and(|lines| {
            lines
                .iter()
                .any(|e| !e.mac.is_empty() || !e.prev.is_empty() || e.generation != 0)
        });
    if chained {
        traces.push(format!("{} (its lines are chained)", layout::AUDIT));
    }
    for (name, files) in &tree.names {
        let hashed = files
            .meta
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| SecretMeta::parse(t).ok())
            .is_some_and(|m| {
                m.scopes
                    .values()
                    .flat_map(|s| &s.versions)
                    .any(|v| !v.sha256.is_empty())
            });
        if hashed {
            traces.push(format!(
                "{} (it records file hashes)",
                layout::meta_rel(name)
            ));
        }
    }
    if traces.is_empty() {
        return Vec::new();
    }
    vec![Problem {
        path: layout::INDEX.into(),
        problem: format!(
            "it is missing, but {} show(s) the store was authenticated (format 2): store.toml was removed by someone without the store key, and what they left is not to be trusted; put the store back as a member committed it (`git checkout -- {}`), never `migrate` it",
            traces.join(", "),
            root.display()
        ),
    }]
}

/// A format-1 store read for migrating: what is shown before asking is
/// what [`migrate`] uses.
pub struct Format1 {
    tree: Tree,
    /// The recipients the migration makes the store's members.
    pub recipients: RecipientsFile,
}

impl Format1 {
    /// The secrets' names (to show before asking).
    pub fn names(&self) -> Vec<&str> {
        self.tree.names.keys().map(String::as_str).collect()
    }
}

/// Read the (locked) store and check it is one to migrate: format 1 (no
/// `store.toml` and no trace of format 2), no link or special file.
pub fn read(store: &Store) -> Result<Format1, StoreError> {
    let root = store.root();
    let tree = store.load()?;
    if tree.index.is_some() {
        return Err(StoreError::Conflict(format!(
            "{} is not a format 1 store (it has store.toml): nothing to migrate",
            root.display()
        )));
    }
    let traces = format_2_traces(root, &tree);
    if !traces.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems: traces,
        });
    }
    if !tree.problems.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems: tree.problems,
        });
    }
    let text = tree.recipients.clone().unwrap_or_default();
    let recipients = RecipientsFile::parse(
        &String::from_utf8_lossy(&text),
        &root.join(layout::RECIPIENTS),
    )?;
    Ok(Format1 { tree, recipients })
}

/// Migrate the (locked) format-1 store read by [`read`], to the
/// recipients shown then.
pub fn migrate(store: &Store, identity: &Identity, old: Format1) -> Result<Migrated, StoreError> {
    let root = store.root();
    let Format1 {
        tree,
        recipients: file,
    } = old;
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
            strange.push(Problem {
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
            strange.push(Problem {
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
        pin: key.pin(),
        names: metas.len(),
        versions,
        recipients: keys.strings(),
        removed,
    })
}
