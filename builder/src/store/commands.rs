//! The store operations behind `build-image store …`. Each one validates
//! everything it can before writing, writes new files before the metadata
//! that refers to them, and appends to the audit log.

use super::audit::{self, Entry};
use super::crypto::{Identity, Recipients};
use super::input::{self, ValueInput};
use super::layout::{self, write_atomic, Store};
use super::metadata::{now, Generator, ScopeMeta, SecretMeta, VersionMeta};
use super::names::{validate_name, Scope};
use super::{io, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// `store init`: create the directory with its recipients.
pub fn init(root: &Path, recipients: &[String]) -> Result<usize, StoreError> {
    let mut text = String::from(
        "# Recipients of this store: every secret version is encrypted to all of them.\n\
         # One key a line: age1… or ssh-ed25519 AAAA… (comments after #). After a change,\n\
         # run `build-image store rekey` so that every version follows.\n",
    );
    for r in recipients {
        for line in r.lines() {
            text.push_str(line.trim());
            text.push('\n');
        }
    }
    let parsed = Recipients::parse(&text, &root.join(layout::RECIPIENTS))?;
    let store = Store::create(root, &text)?;
    audit::append(
        &store,
        &[Entry::new("init").detail(format!("{} recipients", parsed.keys.len()))],
    )?;
    Ok(parsed.keys.len())
}

/// What `set`, `rotate` report (never the value).
#[derive(Debug, Serialize)]
pub struct Written {
    pub name: String,
    pub scope: String,
    pub version: u32,
    pub operation: String,
}

/// `store set NAME` (and `--update`).
pub fn set(
    store: &Store,
    name: &str,
    scope: &Scope,
    description: Option<&str>,
    update: bool,
    value: &ValueInput,
) -> Result<Written, StoreError> {
    validate_name(name)?;
    let meta = SecretMeta::load(store, name)?;
    let exists = meta.as_ref().is_some_and(|m| m.scope(scope).is_some());
    if exists && !update {
        return Err(StoreError::Exists {
            name: name.into(),
            scope: scope.to_string(),
        });
    }
    if update && !exists {
        return Err(not_found(
            store,
            name,
            format!(
                " (scope {scope}): create it with `build-image store set {name}` without --update"
            ),
        ));
    }
    if let (Some(m), Some(d), false) = (&meta, description, update) {
        if m.description != d {
            return Err(StoreError::Conflict(format!(
                "secret {name} already exists (scopes: {}) with another description: \
                 change it with `build-image store set {name} --update --description …`",
                m.scopes.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let recipients = Recipients::load(&store.recipients_file())?;
    let generator = match value {
        ValueInput::Generate(g) => Some(g.clone()),
        _ => None,
    };
    let v = input::read(value, name)?;
    let op = if update { "update" } else { "set" };
    let mut meta = meta.unwrap_or_else(|| SecretMeta {
        description: String::new(),
        name: name.into(),
        scopes: BTreeMap::new(),
    });
    if let Some(d) = description {
        meta.description = d.into();
    }
    add_version(store, meta, scope, &v, &recipients, op, generator)
}

/// `store rotate NAME`: a new version; regenerated like the last one when it
/// was generated and no other input is given.
pub fn rotate(
    store: &Store,
    name: &str,
    scope: &Scope,
    value: Option<&ValueInput>,
) -> Result<Written, StoreError> {
    validate_name(name)?;
    let meta = existing(store, name)?;
    let current = meta.scope(scope).ok_or_else(|| no_scope(&meta, scope))?;
    let input = match (value, &current.generator) {
        (Some(v), _) => v.clone(),
        (None, Some(g)) => ValueInput::Generate(g.clone()),
        (None, None) => ValueInput::Stdin,
    };
    let generator = match &input {
        ValueInput::Generate(g) => Some(g.clone()),
        _ => None,
    };
    let recipients = Recipients::load(&store.recipients_file())?;
    let v = input::read(&input, name)?;
    add_version(store, meta, scope, &v, &recipients, "rotate", generator)
}

fn add_version(
    store: &Store,
    mut meta: SecretMeta,
    scope: &Scope,
    value: &[u8],
    recipients: &Recipients,
    op: &str,
    generator: Option<Generator>,
) -> Result<Written, StoreError> {
    let ciphertext = recipients.encrypt(value)?;
    let now = now();
    let by = audit::actor();
    let new_name = meta.scopes.is_empty();
    let key = scope.to_string();
    let version = meta.scopes.get(&key).map(|s| s.latest() + 1).unwrap_or(1);
    let entry = meta.scopes.entry(key).or_insert_with(|| ScopeMeta {
        created_at: now.clone(),
        created_by: by.clone(),
        current: version,
        generator: None,
        updated_at: now.clone(),
        updated_by: by.clone(),
        versions: Vec::new(),
    });
    entry.current = version;
    entry.generator = generator;
    entry.updated_at = now.clone();
    entry.updated_by = by.clone();
    entry.versions.push(VersionMeta {
        created_at: now,
        created_by: by,
        operation: op.into(),
        recipients: recipients.fingerprint(),
        version,
    });
    let name = meta.name.clone();
    if new_name {
        // A new name: build its whole directory aside, then one rename.
        let stage = store.staging()?;
        let dir = stage.path().join(&name);
        write_atomic(
            &layout::version_path(&dir, scope, version),
            &ciphertext,
            0o644,
        )?;
        meta.save_in(&dir)?;
        let target = store.name_dir(&name);
        std::fs::rename(&dir, &target)
            .map_err(io(format!("renaming into {}", target.display())))?;
        layout::sync_dir(&store.secrets_dir())?;
    } else {
        // The new version file first; the metadata that makes it current last.
        let file = store.version_file(&name, scope, version);
        write_atomic(&file, &ciphertext, 0o644)?;
        if let Err(e) = meta.save_in(&store.name_dir(&name)) {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
    }
    audit::append(
        store,
        &[Entry::new(op).secret(&name, &scope.to_string(), version)],
    )?;
    Ok(Written {
        name,
        scope: scope.to_string(),
        version,
        operation: op.into(),
    })
}

/// `store get NAME [--scope S] [--version N]`: the value, after the audit
/// line is durable.
pub fn get(
    store: &Store,
    identity: &Identity,
    name: &str,
    scope: &Scope,
    version: Option<u32>,
) -> Result<(Zeroizing<Vec<u8>>, u32), StoreError> {
    validate_name(name)?;
    let meta = existing(store, name)?;
    let s = meta.scope(scope).ok_or_else(|| no_scope(&meta, scope))?;
    let version = version.unwrap_or(s.current);
    if !s.versions.iter().any(|v| v.version == version) {
        return Err(StoreError::NoSuchVersion {
            name: name.into(),
            what: format!("version {version} in scope {scope}"),
            have: format!(
                "versions: {}",
                s.versions
                    .iter()
                    .map(|v| v.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let value = identity.decrypt_file(&store.version_file(name, scope, version))?;
    audit::append(
        store,
        &[Entry::new("get").secret(name, &scope.to_string(), version)],
    )?;
    Ok((value, version))
}

/// `store rm NAME [--scope S]`: the whole name, or one scope of it.
pub fn rm(store: &Store, name: &str, scope: Option<&Scope>) -> Result<Vec<String>, StoreError> {
    validate_name(name)?;
    let mut meta = existing(store, name)?;
    let removed: Vec<String> = match scope {
        Some(s) => {
            meta.scope(s).ok_or_else(|| no_scope(&meta, s))?;
            vec![s.to_string()]
        }
        None => meta.scopes.keys().cloned().collect(),
    };
    let dir = store.name_dir(name);
    let whole = removed.len() == meta.scopes.len();
    if whole {
        let stage = store.staging()?;
        let aside = stage.path().join(name);
        std::fs::rename(&dir, &aside).map_err(io(format!("removing {}", dir.display())))?;
        layout::sync_dir(&store.secrets_dir())?;
        drop(stage); // deletes the files
    } else if let Some(s) = scope {
        meta.scopes.remove(&s.to_string());
        meta.save_in(&dir)?;
        let sdir = dir.join(s.dir_name());
        let _ = std::fs::remove_dir_all(&sdir);
    }
    let entries: Vec<Entry> = removed
        .iter()
        .map(|s| {
            let mut e = Entry::new("rm");
            e.name = Some(name.into());
            e.scope = Some(s.clone());
            e
        })
        .collect();
    audit::append(store, &entries)?;
    Ok(removed)
}

/// One row of `store list`.
#[derive(Debug, Serialize)]
pub struct ListRow {
    pub name: String,
    pub description: String,
    pub scopes: Vec<ScopeRow>,
}

#[derive(Debug, Serialize)]
pub struct ScopeRow {
    pub scope: String,
    pub current: u32,
    pub versions: usize,
    pub updated_at: String,
    pub updated_by: String,
}

pub fn list(store: &Store) -> Result<Vec<ListRow>, StoreError> {
    let mut rows = Vec::new();
    for name in store.names()? {
        let Some(meta) = SecretMeta::load(store, &name)? else {
            continue;
        };
        rows.push(ListRow {
            name: meta.name.clone(),
            description: meta.description.clone(),
            scopes: meta
                .scopes
                .iter()
                .map(|(scope, s)| ScopeRow {
                    scope: scope.clone(),
                    current: s.current,
                    versions: s.versions.len(),
                    updated_at: s.updated_at.clone(),
                    updated_by: s.updated_by.clone(),
                })
                .collect(),
        });
    }
    Ok(rows)
}

/// `store history NAME`: the metadata of every version.
pub fn history(store: &Store, name: &str) -> Result<SecretMeta, StoreError> {
    validate_name(name)?;
    existing(store, name)
}

/// A problem `store audit` found (never about values).
#[derive(Debug, Serialize)]
pub struct Finding {
    pub name: String,
    pub scope: String,
    pub version: Option<u32>,
    pub problem: String,
}

/// `store audit`: the log, and a consistency check of the files against the
/// metadata and of each version's recipients against recipients.txt.
pub fn audit(store: &Store) -> Result<(Vec<Entry>, Vec<Finding>), StoreError> {
    let log = audit::read(store)?;
    let fingerprint = Recipients::load(&store.recipients_file())?.fingerprint();
    let mut findings = Vec::new();
    for name in store.names()? {
        let Some(meta) = SecretMeta::load(store, &name)? else {
            continue;
        };
        for scope in meta.scope_list() {
            let Some(s) = meta.scope(&scope) else {
                continue;
            };
            for v in &s.versions {
                let mut f = |problem: String| {
                    findings.push(Finding {
                        name: name.clone(),
                        scope: scope.to_string(),
                        version: Some(v.version),
                        problem,
                    })
                };
                if !store.version_file(&name, &scope, v.version).is_file() {
                    f("its age file is missing".into());
                } else if v.recipients != fingerprint {
                    f(
                        "encrypted to an older set of recipients: run `build-image store rekey`"
                            .into(),
                    );
                }
            }
            let sdir = store.name_dir(&name).join(scope.dir_name());
            if let Ok(entries) = std::fs::read_dir(&sdir) {
                for e in entries.flatten() {
                    let file = e.file_name().to_string_lossy().into_owned();
                    let known = s
                        .versions
                        .iter()
                        .any(|v| file == format!("v{}.age", v.version));
                    if !known {
                        findings.push(Finding {
                            name: name.clone(),
                            scope: scope.to_string(),
                            version: None,
                            problem: format!("{file} is not listed in meta.toml"),
                        });
                    }
                }
            }
        }
    }
    Ok((log, findings))
}

/// `store rekey`: decrypt every version and encrypt it again to the current
/// recipients. Everything is decrypted and re-encrypted in memory before
/// the first file is replaced, so a key that cannot open one file changes
/// nothing.
pub fn rekey(store: &Store, identity: &Identity) -> Result<usize, StoreError> {
    let recipients = Recipients::load(&store.recipients_file())?;
    let fingerprint = recipients.fingerprint();
    let mut staged = Vec::new();
    let mut metas = Vec::new();
    let mut entries = Vec::new();
    for name in store.names()? {
        let Some(mut meta) = SecretMeta::load(store, &name)? else {
            continue;
        };
        for scope in meta.scope_list() {
            let Some(s) = meta.scopes.get_mut(&scope.to_string()) else {
                continue;
            };
            for v in &mut s.versions {
                let file = store.version_file(&name, &scope, v.version);
                let value = identity.decrypt_file(&file)?;
                staged.push((file, recipients.encrypt(&value)?));
                v.recipients = fingerprint.clone();
                entries.push(Entry::new("rekey").secret(&name, &scope.to_string(), v.version));
            }
        }
        metas.push(meta);
    }
    for (file, ciphertext) in &staged {
        write_atomic(file, ciphertext, 0o644)?;
    }
    for meta in &metas {
        meta.save_in(&store.name_dir(&meta.name))?;
    }
    if entries.is_empty() {
        entries.push(Entry::new("rekey").detail("no secrets"));
    }
    audit::append(store, &entries)?;
    Ok(staged.len())
}

/// Where a device's value comes from: device > tag (in the order of the
/// device's tags) > global.
pub fn resolve(meta: &SecretMeta, device: &str, tags: &[String]) -> Option<(Scope, u32)> {
    let mut order = vec![Scope::Device(device.into())];
    order.extend(tags.iter().map(|t| Scope::Tag(t.clone())));
    order.push(Scope::Global);
    order
        .into_iter()
        .find_map(|s| meta.scope(&s).map(|m| (s.clone(), m.current)))
}

pub(crate) fn existing(store: &Store, name: &str) -> Result<SecretMeta, StoreError> {
    SecretMeta::load(store, name)?.ok_or_else(|| {
        not_found(
            store,
            name,
            format!(": create it with `build-image store set {name} --description \"…\"`"),
        )
    })
}

fn not_found(store: &Store, name: &str, hint: String) -> StoreError {
    StoreError::NotFound {
        name: name.into(),
        store: store.root().to_path_buf(),
        hint,
    }
}

fn no_scope(meta: &SecretMeta, scope: &Scope) -> StoreError {
    StoreError::NoSuchVersion {
        name: meta.name.clone(),
        what: format!("scope {scope}"),
        have: format!(
            "scopes: {}",
            meta.scopes.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metadata::rfc3339;

    fn scope_meta(current: u32) -> ScopeMeta {
        ScopeMeta {
            created_at: rfc3339(0),
            created_by: "t".into(),
            current,
            generator: None,
            updated_at: rfc3339(0),
            updated_by: "t".into(),
            versions: (1..=current)
                .map(|version| VersionMeta {
                    created_at: rfc3339(0),
                    created_by: "t".into(),
                    operation: "set".into(),
                    recipients: String::new(),
                    version,
                })
                .collect(),
        }
    }

    #[test]
    fn resolution_is_device_then_tags_in_order_then_global() {
        let mut meta = SecretMeta {
            description: String::new(),
            name: "WIFI_PSK".into(),
            scopes: BTreeMap::new(),
        };
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(resolve(&meta, "d1", &tags(&["a"])), None);
        meta.scopes.insert("global".into(), scope_meta(3));
        assert_eq!(
            resolve(&meta, "d1", &tags(&["a"])),
            Some((Scope::Global, 3))
        );
        meta.scopes.insert("tag:b".into(), scope_meta(1));
        meta.scopes.insert("tag:a".into(), scope_meta(2));
        assert_eq!(
            resolve(&meta, "d1", &tags(&["b", "a"])),
            Some((Scope::Tag("b".into()), 1))
        );
        assert_eq!(
            resolve(&meta, "d1", &tags(&["a", "b"])),
            Some((Scope::Tag("a".into()), 2))
        );
        meta.scopes.insert("device:d1".into(), scope_meta(1));
        assert_eq!(
            resolve(&meta, "d1", &tags(&["a"])),
            Some((Scope::Device("d1".into()), 1))
        );
        assert_eq!(resolve(&meta, "d2", &[]), Some((Scope::Global, 3)));
    }

    #[test]
    fn set_update_rm_in_process() {
        let tmp = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        init(tmp.path(), &[id.to_public().to_string()]).unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let file = tmp.path().join("v");
        std::fs::write(&file, "value-1").unwrap();
        let input = ValueInput::File(file.clone());
        let w = set(&store, "A_B", &Scope::Global, Some("d"), false, &input).unwrap();
        assert_eq!(w.version, 1);
        assert!(matches!(
            set(&store, "A_B", &Scope::Global, None, false, &input),
            Err(StoreError::Exists { .. })
        ));
        assert!(matches!(
            set(
                &store,
                "A_B",
                &Scope::Tag("x".into()),
                Some("other"),
                false,
                &input
            ),
            Err(StoreError::Conflict(_))
        ));
        let w = set(&store, "A_B", &Scope::Tag("x".into()), None, false, &input).unwrap();
        assert_eq!((w.scope.as_str(), w.version), ("tag:x", 1));
        std::fs::write(&file, "value-2").unwrap();
        let w = set(&store, "A_B", &Scope::Global, None, true, &input).unwrap();
        assert_eq!(w.version, 2);
        let identity = Identity::parse(&secret(&id), "t").unwrap();
        let (v, n) = get(&store, &identity, "A_B", &Scope::Global, None).unwrap();
        assert_eq!((&v[..], n), (&b"value-2"[..], 2));
        assert_eq!(
            rm(&store, "A_B", Some(&Scope::Tag("x".into()))).unwrap(),
            ["tag:x"]
        );
        assert!(!store.name_dir("A_B").join("tag.x").exists());
        assert_eq!(rm(&store, "A_B", None).unwrap(), ["global"]);
        assert!(matches!(
            get(&store, &identity, "A_B", &Scope::Global, None),
            Err(StoreError::NotFound { .. })
        ));
        assert!(list(&store).unwrap().is_empty());
    }

    fn secret(id: &age::x25519::Identity) -> String {
        use age::secrecy::ExposeSecret;
        id.to_string().expose_secret().to_string()
    }
}
