//! The store operations behind `build-image store …`. Each one works on a
//! [`Session`] (the store verified with a member's identity), validates
//! everything it can before writing, and commits its files, metadata and
//! audit lines as one change.

use super::audit::{self, Entry, Tip};
use super::crypto::{Identity, Recipients, RecipientsFile};
use super::input::{self, ValueInput};
use super::integrity::{sha256_hex, Index, StoreKey};
use super::layout::{self, at_error, Store};
use super::metadata::{now, Generator, ScopeMeta, SecretMeta, VersionMeta};
use super::names::{validate_name, Scope};
use super::session::{Change, Rekey, Session};
use super::{Problem, StoreError};
use crate::io::at::Dir;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// What `store init` made.
#[derive(Debug, Serialize)]
pub struct Initialised {
    pub recipients: usize,
    /// The store id.
    pub id: String,
    /// What to pin in CI as `SEALED_IMAGE_STORE_ID` (`ID:GENERATION:TAG`).
    pub pin: String,
}

/// `store init`: create the directory with its recipients, a fresh store
/// key encrypted to them, the index and the audit log.
pub fn init(root: &Path, recipients: &[String]) -> Result<Initialised, StoreError> {
    check_cli_recipients("--recipient", recipients)?;
    let mut text = String::from(
        "# Recipients of this store: every secret version is encrypted to all of them.\n\
         # One key a line: age1… or ssh-ed25519 AAAA… (comments after #). A change takes\n\
         # effect only when a member accepts it: `build-image store recipients add|rm KEY`,\n\
         # or `build-image store rekey` after editing this file.\n",
    );
    for r in recipients {
        for line in r.lines() {
            text.push_str(line.trim());
            text.push('\n');
        }
    }
    let file = RecipientsFile::parse(&text, &root.join(layout::RECIPIENTS))?;
    let keys = Recipients::from_keys(&file.keys(), &root.join(layout::RECIPIENTS))?;
    // Any file of a store (recipients.txt may have been removed, by
    // someone who would like a new store written over the old one).
    let exists = |dir: &Dir| -> Result<(), StoreError> {
        match layout::store_file_in(dir).map_err(|e| at_error(root, e))? {
            Some(_) if interrupted_init(dir) => Ok(()),
            Some(file) => Err(StoreError::AlreadyInitialised {
                path: root.to_path_buf(),
                file: file.to_string(),
            }),
            None => Ok(()),
        }
    };
    std::fs::create_dir_all(root).map_err(super::io(format!("creating {}", root.display())))?;
    let dir = Dir::open(root).map_err(|e| at_error(root, e))?;
    exists(&dir)?;
    let store = Store::locked(root, dir)?;
    // Again under the lock: two inits at once make one store.
    exists(store.dir())?;
    let key = StoreKey::generate();
    let key_file = keys.encrypt(&key.to_plaintext())?;
    let (log, tip) = audit::chain(
        &Tip::empty(&key.id()),
        &[Entry::new("init").detail(format!("{} recipients", keys.keys.len()))],
        &key,
    );
    let index = Index::new(&key, &key_file, keys.strings(), tip.count, BTreeMap::new());
    store
        .dir()
        .sub_or_create(layout::SECRETS, 0o755)
        .map_err(|e| at_error(root, e))?;
    for (name, bytes) in [
        (".gitignore", layout::GITIGNORE.as_bytes().to_vec()),
        (".gitattributes", layout::GITATTRIBUTES.as_bytes().to_vec()),
        (layout::KEY, key_file),
        (layout::INDEX, index.to_toml().into_bytes()),
        (layout::AUDIT, log),
        (layout::AUDIT_HEAD, audit::Head::new(&tip, &key).to_bytes()),
        // Last: its presence is what makes the directory a store.
        (layout::RECIPIENTS, text.into_bytes()),
    ] {
        store.replace_file(name, &bytes, 0o644)?;
    }
    Ok(Initialised {
        recipients: keys.keys.len(),
        id: key.id(),
        pin: key.pin(),
    })
}

/// Whether `dir` holds what an interrupted `init` leaves (it writes
/// recipients.txt last): no recipients.txt, no secret, an audit log of
/// at most the init line. Writing it again loses nothing.
fn interrupted_init(dir: &Dir) -> bool {
    let no_recipients = matches!(dir.kind(layout::RECIPIENTS), Ok(None));
    let no_secrets = match dir.sub(layout::SECRETS) {
        Ok(None) => true,
        Ok(Some(d)) => d.entries().is_ok_and(|e| e.is_empty()),
        Err(_) => false,
    };
    let only_init = match dir.read(layout::AUDIT, audit::MAX_LOG) {
        Ok(None) => true,
        Ok(Some(log)) => audit::parse(&log)
            .is_ok_and(|lines| lines.iter().all(|e| e.op == "init") && lines.len() <= 1),
        Err(_) => false,
    };
    no_recipients && no_secrets && only_init
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
    s: &Session,
    name: &str,
    scope: &Scope,
    description: Option<&str>,
    update: bool,
    value: &ValueInput,
) -> Result<Written, StoreError> {
    validate_name(name)?;
    let meta = s.meta(name).cloned();
    let exists = meta.as_ref().is_some_and(|m| m.scope(scope).is_some());
    if exists && !update {
        return Err(StoreError::Exists {
            name: name.into(),
            scope: scope.to_string(),
        });
    }
    if update && !exists {
        return Err(not_found(
            s.store.root(),
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
    add_version(s, meta, scope, &v, op, generator)
}

/// `store rotate NAME`: a new version; regenerated like the last one when it
/// was generated and no other input is given (else read from stdin).
pub fn rotate(
    s: &Session,
    name: &str,
    scope: &Scope,
    value: Option<&ValueInput>,
) -> Result<Written, StoreError> {
    rotate_or(s, name, scope, value, Some(ValueInput::Stdin))
}

/// [`rotate`] where no value given means regenerated, and a secret that was
/// not generated is refused (nothing is read from stdin): the server's.
pub fn regenerate(
    s: &Session,
    name: &str,
    scope: &Scope,
    value: Option<&ValueInput>,
) -> Result<Written, StoreError> {
    rotate_or(s, name, scope, value, None)
}

fn rotate_or(
    s: &Session,
    name: &str,
    scope: &Scope,
    value: Option<&ValueInput>,
    otherwise: Option<ValueInput>,
) -> Result<Written, StoreError> {
    validate_name(name)?;
    let meta = existing(s, name)?.clone();
    let current = meta.scope(scope).ok_or_else(|| no_scope(&meta, scope))?;
    let input = match (value, &current.generator, otherwise) {
        (Some(v), _, _) => v.clone(),
        (None, Some(g), _) => ValueInput::Generate(g.clone()),
        (None, None, Some(o)) => o,
        (None, None, None) => {
            return Err(StoreError::Value(format!(
                "secret {name} ({scope}) was not generated, so it cannot be regenerated: give its new value"
            )))
        }
    };
    let generator = match &input {
        ValueInput::Generate(g) => Some(g.clone()),
        _ => None,
    };
    let v = input::read(&input, name)?;
    add_version(s, meta, scope, &v, "rotate", generator)
}

fn add_version(
    s: &Session,
    mut meta: SecretMeta,
    scope: &Scope,
    value: &[u8],
    op: &str,
    generator: Option<Generator>,
) -> Result<Written, StoreError> {
    let ciphertext = s.recipients.encrypt(value)?;
    let now = now();
    let by = audit::actor();
    let key = scope.to_string();
    let version = match meta.scopes.get(&key) {
        Some(s) => s.latest().checked_add(1).ok_or_else(|| {
            StoreError::Value(format!(
                "secret {} ({key}) is at version {}: there is no next one",
                meta.name,
                s.latest()
            ))
        })?,
        None => 1,
    };
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
        recipients: s.recipients.fingerprint(),
        sha256: sha256_hex(&ciphertext),
        version,
    });
    let name = meta.name.clone();
    let mut metas = s.metas.clone();
    metas.insert(name.clone(), meta);
    let mut change = Change::new(op, metas);
    change
        .files
        .push((layout::version_rel(&name, scope, version), ciphertext));
    change
        .audit
        .push(Entry::new(op).secret(&name, &scope.to_string(), version));
    s.commit(change)?;
    Ok(Written {
        name,
        scope: scope.to_string(),
        version,
        operation: op.into(),
    })
}

/// Change a secret's description alone: no new version, one audit line.
/// Returns whether anything changed.
pub fn describe(s: &Session, name: &str, description: &str) -> Result<bool, StoreError> {
    validate_name(name)?;
    let mut meta = existing(s, name)?.clone();
    if meta.description == description {
        return Ok(false);
    }
    meta.description = description.into();
    let mut metas = s.metas.clone();
    metas.insert(name.into(), meta);
    let mut change = Change::new("describe", metas);
    let mut entry = Entry::new("describe");
    entry.name = Some(name.into());
    change.audit.push(entry);
    s.commit(change)?;
    Ok(true)
}

/// `store get NAME [--scope S] [--version N]`: the value, after the audit
/// line is durable.
pub fn get(
    s: &mut Session,
    identity: &Identity,
    name: &str,
    scope: &Scope,
    version: Option<u32>,
) -> Result<(Zeroizing<Vec<u8>>, u32), StoreError> {
    validate_name(name)?;
    let meta = existing(s, name)?;
    let sm = meta.scope(scope).ok_or_else(|| no_scope(meta, scope))?;
    let version = version.unwrap_or(sm.current);
    if !sm.versions.iter().any(|v| v.version == version) {
        return Err(StoreError::NoSuchVersion {
            name: name.into(),
            what: format!("version {version} in scope {scope}"),
            have: format!(
                "versions: {}",
                sm.versions
                    .iter()
                    .map(|v| v.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let value = s.read_value(identity, name, scope, version)?;
    s.audit(&[Entry::new("get").secret(name, &scope.to_string(), version)])?;
    Ok((value, version))
}

/// `store rm NAME [--scope S]`: the whole name, or one scope of it.
pub fn rm(s: &Session, name: &str, scope: Option<&Scope>) -> Result<Vec<String>, StoreError> {
    validate_name(name)?;
    let meta = existing(s, name)?;
    let removed: Vec<String> = match scope {
        Some(sc) => {
            meta.scope(sc).ok_or_else(|| no_scope(meta, sc))?;
            vec![sc.to_string()]
        }
        None => meta.scopes.keys().cloned().collect(),
    };
    let mut metas = s.metas.clone();
    let mut change_remove = Vec::new();
    if removed.len() == meta.scopes.len() {
        metas.remove(name);
    } else if let Some(sc) = scope {
        if let Some(m) = metas.get_mut(name) {
            m.scopes.remove(&sc.to_string());
        }
        change_remove.push(format!("{}/{name}/{}", layout::SECRETS, sc.dir_name()));
    }
    let mut change = Change::new("rm", metas);
    change.remove = change_remove;
    change.audit = removed
        .iter()
        .map(|sc| {
            let mut e = Entry::new("rm");
            e.name = Some(name.into());
            e.scope = Some(sc.clone());
            e
        })
        .collect();
    s.commit(change)?;
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
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

pub fn list(metas: &BTreeMap<String, SecretMeta>) -> Vec<ListRow> {
    metas
        .values()
        .map(|meta| ListRow {
            name: meta.name.clone(),
            description: meta.description.clone(),
            scopes: meta
                .scopes
                .iter()
                .map(|(scope, s)| ScopeRow {
                    scope: scope.clone(),
                    current: s.current,
                    versions: s.versions.len(),
                    created_at: s.created_at.clone(),
                    created_by: s.created_by.clone(),
                    updated_at: s.updated_at.clone(),
                    updated_by: s.updated_by.clone(),
                })
                .collect(),
        })
        .collect()
}

/// `store history NAME`: the metadata of every version.
pub fn history(
    root: &Path,
    metas: &BTreeMap<String, SecretMeta>,
    name: &str,
) -> Result<SecretMeta, StoreError> {
    validate_name(name)?;
    metas.get(name).cloned().ok_or_else(|| {
        not_found(
            root,
            name,
            format!(": create it with `build-image store set {name} --description \"…\"`"),
        )
    })
}

/// What `store audit` checks beyond [`Session::open`]: each version
/// file's (and the key file's) age header holds exactly one X25519 stanza
/// per accepted recipient, and each was written for the current set.
pub fn check_stanzas(s: &Session) -> Result<Vec<Problem>, StoreError> {
    let want = s.recipients.keys.len();
    let fingerprint = s.recipients.fingerprint();
    let check = |path: String, bytes: &[u8]| {
        match super::crypto::stanzas(bytes) {
        Ok(st) if st.len() == want && st.iter().all(|t| t == "X25519") => None,
        Ok(st) => Some(Problem {
            path,
            problem: format!(
                "its age header has {} stanza(s) ({}), the store has {want} recipient(s): it was not encrypted to every recipient by build-image",
                st.len(),
                st.join(", ")
            ),
        }),
        Err(e) => Some(Problem { path, problem: e }),
    }
    };
    let mut problems: Vec<Problem> = check(layout::KEY.into(), &s.key_file).into_iter().collect();
    for (name, meta) in &s.metas {
        for scope in meta.scope_list() {
            let Some(sm) = meta.scope(&scope) else {
                continue;
            };
            for v in &sm.versions {
                let rel = layout::version_rel(name, &scope, v.version);
                problems.extend(check(
                    rel.clone(),
                    &s.store.read_version(name, &scope, v.version)?,
                ));
                if v.recipients != fingerprint {
                    problems.push(Problem {
                        path: rel,
                        problem:
                            "encrypted to another set of recipients: run `build-image store rekey`"
                                .into(),
                    });
                }
            }
        }
    }
    Ok(problems)
}

/// `store rekey` and `store recipients add|rm`: a new store key, every
/// version decrypted and encrypted again to `recipients` (the accepted
/// list from now on), everything authenticated again, in one change.
/// `recipients_txt` replaces recipients.txt when given.
pub fn rekey(
    s: &Session,
    identity: &Identity,
    op: &str,
    recipients: Recipients,
    recipients_txt: Option<Vec<u8>>,
    detail: String,
) -> Result<Rekeyed, StoreError> {
    let rk = Rekey::new(&s.key, recipients, recipients_txt)?;
    let (generation, pin) = (rk.key.generation(), rk.key.pin());
    let fingerprint = rk.recipients.fingerprint();
    let mut metas = s.metas.clone();
    let mut change_files = Vec::new();
    let mut entries = vec![Entry::new(op).detail(detail)];
    for (name, meta) in metas.iter_mut() {
        for scope in meta.scope_list() {
            let Some(sm) = meta.scopes.get_mut(&scope.to_string()) else {
                continue;
            };
            for v in &mut sm.versions {
                let value = s.read_value(identity, name, &scope, v.version)?;
                let ciphertext = rk.recipients.encrypt(&value)?;
                v.sha256 = sha256_hex(&ciphertext);
                v.recipients = fingerprint.clone();
                change_files.push((layout::version_rel(name, &scope, v.version), ciphertext));
                entries.push(Entry::new(op).secret(name, &scope.to_string(), v.version));
            }
        }
    }
    let n = change_files.len();
    let mut change = Change::new(op, metas);
    change.files = change_files;
    change.audit = entries;
    change.rekey = Some(rk);
    s.commit(change)?;
    Ok(Rekeyed {
        files: n,
        generation,
        pin,
    })
}

/// What a change of store key did.
#[derive(Debug, Serialize)]
pub struct Rekeyed {
    /// Version files encrypted again.
    pub files: usize,
    /// The new key's generation.
    pub generation: u32,
    /// What to pin in CI as `SEALED_IMAGE_STORE_ID` from now on.
    pub pin: String,
}

/// A short form of a recipient for messages (`age1abcdefgh…`).
pub fn short_key(k: &str) -> String {
    crate::recipient::short(k)
}

/// Check recipients given on the command line (`init --recipient`,
/// `export --recipient`, `recipients add|rm`): one that does not parse is
/// a usage error (exit 2), named as given, never a file's line.
pub fn check_cli_recipients(flag: &str, values: &[String]) -> Result<(), StoreError> {
    for value in values {
        for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
            crate::recipient::parse(line)
                .map_err(|e| StoreError::Value(format!("{flag} {}: {e}", short_key(line))))?;
        }
    }
    if values.iter().all(|v| v.trim().is_empty()) {
        return Err(StoreError::Value(format!(
            "{flag}: no recipient given (an age1… or ssh-ed25519 key)"
        )));
    }
    Ok(())
}

/// recipients.txt with `lines` added (refused when all are recipients).
pub fn recipients_added(
    s: &Session,
    lines: &[String],
) -> Result<(Recipients, Vec<u8>), StoreError> {
    let root = s.store.root();
    let mut text = String::from_utf8_lossy(&s.recipients_txt).into_owned();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    let mut new = 0;
    for line in lines {
        let key = crate::recipient::parse(line)
            .map_err(|e| StoreError::Value(format!("recipient {}: {e}", short_key(line.trim()))))?
            .to_string();
        if s.index.recipients.contains(&key) {
            continue;
        }
        text.push_str(line.trim());
        text.push('\n');
        new += 1;
    }
    if new == 0 {
        return Err(StoreError::Conflict(
            "every key given is a recipient already: nothing to add".into(),
        ));
    }
    let file = RecipientsFile::parse(&text, &root.join(layout::RECIPIENTS))?;
    Ok((
        Recipients::from_keys(&file.keys(), &root.join(layout::RECIPIENTS))?,
        text.into_bytes(),
    ))
}

/// recipients.txt without the lines naming `keys`.
pub fn recipients_removed(
    s: &Session,
    keys: &[String],
) -> Result<(Recipients, Vec<u8>, Vec<String>), StoreError> {
    let root = s.store.root();
    let mut gone = Vec::new();
    for k in keys {
        let key = crate::recipient::parse(k)
            .map_err(|e| StoreError::Value(format!("recipient {}: {e}", short_key(k.trim()))))?
            .to_string();
        if !s.index.recipients.contains(&key) {
            return Err(StoreError::NotFound {
                name: short_key(&key),
                store: root.to_path_buf(),
                hint: format!(
                    " among the recipients (they are: {})",
                    s.index
                        .recipients
                        .iter()
                        .map(|r| short_key(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        gone.push(key);
    }
    let text = String::from_utf8_lossy(&s.recipients_txt).into_owned();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        let drop = !t.is_empty()
            && !t.starts_with('#')
            && crate::recipient::parse(t).is_ok_and(|k| gone.contains(&k.to_string()));
        if !drop {
            out.push_str(line);
            out.push('\n');
        }
    }
    let file = RecipientsFile::parse(&out, &root.join(layout::RECIPIENTS)).map_err(|_| {
        StoreError::Value(
            "that would leave the store without recipients: add the new one first".into(),
        )
    })?;
    Ok((
        Recipients::from_keys(&file.keys(), &root.join(layout::RECIPIENTS))?,
        out.into_bytes(),
        gone,
    ))
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

pub(crate) fn existing<'a>(s: &'a Session, name: &str) -> Result<&'a SecretMeta, StoreError> {
    s.meta(name).ok_or_else(|| {
        not_found(
            s.store.root(),
            name,
            format!(": create it with `build-image store set {name} --description \"…\"`"),
        )
    })
}

fn not_found(root: &Path, name: &str, hint: String) -> StoreError {
    StoreError::NotFound {
        name: name.into(),
        store: root.to_path_buf(),
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
                    sha256: String::new(),
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
        use crate::store::session::RecipientsCheck::MustMatch;
        let (tmp, identity, mut store) = one_member_store();
        let file = tmp.path().join("v");
        std::fs::write(&file, "value-1").unwrap();
        let input = ValueInput::File(file.clone());
        let mut step = |f: &mut dyn FnMut(&mut Session)| {
            let mut s = Session::open(&mut store, &identity, MustMatch).unwrap();
            f(&mut s);
        };
        step(&mut |s| {
            let w = set(s, "A_B", &Scope::Global, Some("d"), false, &input).unwrap();
            assert_eq!(w.version, 1);
        });
        step(&mut |s| {
            assert!(matches!(
                set(s, "A_B", &Scope::Global, None, false, &input),
                Err(StoreError::Exists { .. })
            ));
            assert!(matches!(
                set(
                    s,
                    "A_B",
                    &Scope::Tag("x".into()),
                    Some("other"),
                    false,
                    &input
                ),
                Err(StoreError::Conflict(_))
            ));
            let w = set(s, "A_B", &Scope::Tag("x".into()), None, false, &input).unwrap();
            assert_eq!((w.scope.as_str(), w.version), ("tag:x", 1));
        });
        std::fs::write(&file, "value-2").unwrap();
        step(&mut |s| {
            let w = set(s, "A_B", &Scope::Global, None, true, &input).unwrap();
            assert_eq!(w.version, 2);
        });
        step(&mut |s| {
            let (v, n) = get(s, &identity, "A_B", &Scope::Global, None).unwrap();
            assert_eq!((&v[..], n), (&b"value-2"[..], 2));
            assert_eq!(
                rm(s, "A_B", Some(&Scope::Tag("x".into()))).unwrap(),
                ["tag:x"]
            );
        });
        assert!(!tmp.path().join("secrets/A_B/tag.x").exists());
        step(&mut |s| {
            assert_eq!(rm(s, "A_B", None).unwrap(), ["global"]);
        });
        step(&mut |s| {
            assert!(matches!(
                get(s, &identity, "A_B", &Scope::Global, None),
                Err(StoreError::NotFound { .. })
            ));
            assert!(list(&s.metas).is_empty());
            assert_eq!(
                s.log.iter().map(|e| e.op.as_str()).collect::<Vec<_>>(),
                ["init", "set", "set", "update", "get", "rm", "rm"]
            );
        });
    }

    #[test]
    fn describe_changes_the_description_alone_and_regenerate_never_reads_stdin() {
        use crate::store::session::RecipientsCheck::MustMatch;
        let (_tmp, identity, mut store) = one_member_store();
        let given = |v: &[u8]| ValueInput::Given(input::GivenValue(Zeroizing::new(v.to_vec())));
        {
            let s = Session::open(&mut store, &identity, MustMatch).unwrap();
            set(&s, "A_B", &Scope::Global, Some("old"), false, &given(b"v1")).unwrap();
        }
        {
            let s = Session::open(&mut store, &identity, MustMatch).unwrap();
            assert!(describe(&s, "A_B", "new").unwrap());
            assert!(matches!(
                describe(&s, "NOPE", "x"),
                Err(StoreError::NotFound { .. })
            ));
        }
        let s = Session::open(&mut store, &identity, MustMatch).unwrap();
        let m = s.meta("A_B").unwrap();
        assert_eq!(
            (m.description.as_str(), m.scopes["global"].current),
            ("new", 1)
        );
        assert_eq!(s.log.last().unwrap().op, "describe");
        assert!(!describe(&s, "A_B", "new").unwrap(), "unchanged: no commit");
        let e = regenerate(&s, "A_B", &Scope::Global, None).unwrap_err();
        assert!(matches!(e, StoreError::Value(_)), "{e}");
        let w = regenerate(&s, "A_B", &Scope::Global, Some(&given(b"v2"))).unwrap();
        assert_eq!(w.version, 2);
        drop(s);
        let mut s = Session::open(&mut store, &identity, MustMatch).unwrap();
        let (v, _) = get(&mut s, &identity, "A_B", &Scope::Global, None).unwrap();
        assert_eq!(&v[..], b"v2");
    }

    /// A new store whose one member is a fresh identity: its directory,
    /// the identity, the store opened.
    fn one_member_store() -> (tempfile::TempDir, Identity, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        init(tmp.path(), &[id.to_public().to_string()]).unwrap();
        let identity = Identity::parse(&secret(&id), "t").unwrap();
        let store = Store::open(tmp.path()).unwrap();
        (tmp, identity, store)
    }

    fn secret(id: &age::x25519::Identity) -> String {
        use age::secrecy::ExposeSecret;
        id.to_string().expose_secret().to_string()
    }
}
