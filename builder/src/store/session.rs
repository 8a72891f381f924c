//! A store verified with a member's identity, before anything in it is
//! used: the key opens, `store.toml`'s MAC holds, `recipients.txt` lists
//! what was accepted, every `meta.toml` and version file is the one
//! authenticated, nothing else is in `secrets/`, and the audit log's chain
//! and head hold. Changes go through [`Session::commit`] (one journal),
//! reads are audited through [`Session::audit`] before a value leaves.

use super::audit::{self, Entry, Head, Tip};
use super::crypto::{Identity, Recipients, RecipientsFile};
use super::integrity::{sha256_hex, Index, StoreKey};
use super::journal::{self, Recovered, Writer};
use super::layout::{self, at_error, Store, Tree};
use super::metadata::SecretMeta;
use super::names::Scope;
use super::{Problem, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use zeroize::Zeroizing;

/// How strict [`Session::open`] is about `recipients.txt`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RecipientsCheck {
    /// Lines nobody accepted are an integrity problem (every command but
    /// the ones that accept them).
    MustMatch,
    /// The difference is returned for a member to review (`rekey`).
    MayDiffer,
}

/// The difference between the accepted recipients and `recipients.txt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientsDiff {
    /// Keys recipients.txt adds (with the line that names it).
    pub added: Vec<(String, String)>,
    /// Accepted keys recipients.txt no longer lists.
    pub removed: Vec<String>,
}

impl RecipientsDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    fn between(accepted: &[String], file: &RecipientsFile) -> RecipientsDiff {
        let now = file.keys();
        RecipientsDiff {
            added: now
                .iter()
                .filter(|k| !accepted.contains(k))
                .map(|k| {
                    let line = file
                        .line_of(k)
                        .map(|l| format!("line {}: {}", l.number, l.text))
                        .unwrap_or_default();
                    (k.clone(), line)
                })
                .collect(),
            removed: accepted
                .iter()
                .filter(|k| !now.contains(k))
                .cloned()
                .collect(),
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self
            .added
            .iter()
            .map(|(k, line)| Problem {
                path: layout::RECIPIENTS.into(),
                problem: format!(
                    "{line} adds {k}, which no member accepted: nothing is encrypted to it; a member reviews it with `build-image store rekey` (or adds it with `build-image store recipients add`), else remove the line"
                ),
            })
            .collect();
        out.extend(self.removed.iter().map(|k| Problem {
            path: layout::RECIPIENTS.into(),
            problem: format!(
                "no longer lists {k}, which the store still encrypts to: a member accepts the removal with `build-image store rekey` (or `build-image store recipients rm`), else restore the line"
            ),
        }));
        out
    }
}

/// A verified store.
pub struct Session<'s> {
    pub store: &'s Store,
    pub key: StoreKey,
    pub index: Index,
    pub metas: BTreeMap<String, SecretMeta>,
    /// The accepted recipients: what values are encrypted to.
    pub recipients: Recipients,
    /// `recipients.txt` as written (and verified).
    pub file: RecipientsFile,
    /// Its bytes, as verified (a change of recipients edits these, never
    /// the file read again).
    pub recipients_txt: Vec<u8>,
    /// With [`RecipientsCheck::MayDiffer`]: what a member would accept.
    pub recipients_diff: RecipientsDiff,
    /// The bytes of `key.age`.
    pub key_file: Vec<u8>,
    pub log: Vec<Entry>,
    pub tip: Tip,
    /// The interrupted change this open finished, if any.
    pub recovered: Option<String>,
}

impl<'s> Session<'s> {
    /// Finish a pending change, then verify the whole store with
    /// `identity`. Every problem found is in the error.
    pub fn open(
        store: &'s mut Store,
        identity: &Identity,
        check: RecipientsCheck,
    ) -> Result<Session<'s>, StoreError> {
        let mut recovered = None;
        if store.pending() {
            if let Recovered::Finished(op) = journal::recover(store, identity)? {
                recovered = Some(op);
            }
        }
        let store: &'s Store = store;
        let mut s = verify(store, identity, check)?;
        s.recovered = recovered;
        Ok(s)
    }

    pub fn id(&self) -> String {
        self.key.id()
    }

    pub fn meta(&self, name: &str) -> Option<&SecretMeta> {
        self.metas.get(name)
    }

    /// Decrypt one version: its file must be the one `meta.toml` records.
    pub fn read_value(
        &self,
        identity: &Identity,
        name: &str,
        scope: &Scope,
        version: u32,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let rel = layout::version_rel(name, scope, version);
        let want = self
            .meta(name)
            .and_then(|m| m.scope(scope))
            .and_then(|s| s.versions.iter().find(|v| v.version == version))
            .map(|v| v.sha256.clone())
            .ok_or_else(|| StoreError::integrity(self.store.root(), &rel, "not in meta.toml"))?;
        let bytes = self.store.read_version(name, scope, version)?;
        if sha256_hex(&bytes) != want {
            return Err(StoreError::integrity(
                self.store.root(),
                &rel,
                "its bytes are not the ones meta.toml authenticates",
            ));
        }
        identity.decrypt(
            &bytes,
            &self.store.root().join(&rel).display().to_string(),
            super::input::MAX_VALUE,
        )
    }

    /// Append audit lines and the head now (reads: before the value leaves).
    pub fn audit(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let root = self.store.root();
        let (bytes, tip) = audit::chain(&self.tip, entries, &self.key);
        let (f, _) = self
            .store
            .dir()
            .open_for_update(layout::AUDIT)
            .map_err(|e| at_error(root, e))?
            .ok_or_else(|| StoreError::integrity(root, layout::AUDIT, "it is missing"))?;
        use std::os::unix::fs::FileExt;
        f.set_len(self.tip.len)
            .and_then(|_| f.write_all_at(&bytes, self.tip.len))
            .and_then(|_| f.sync_all())
            .map_err(super::io(format!(
                "appending to {}",
                root.join(layout::AUDIT).display()
            )))?;
        self.store.replace_file(
            layout::AUDIT_HEAD,
            &Head::new(&tip, &self.key).to_bytes(),
            0o644,
        )?;
        self.log.extend(audit::parse(&bytes).unwrap_or_default());
        self.tip = tip;
        Ok(())
    }

    /// Commit `change` as a whole: new version files, every `meta.toml`
    /// that differs, the removed names and scopes, a new `store.toml`, and
    /// the audit lines, authenticated under the store key (both keys when
    /// it changes).
    pub fn commit(&self, change: Change) -> Result<(), StoreError> {
        let (key, recipients) = match &change.rekey {
            Some(r) => (&r.key, &r.recipients),
            None => (&self.key, &self.recipients),
        };
        let mut w = Writer::begin(self.store)?;
        let mut secrets = BTreeMap::new();
        for name in self.metas.keys() {
            if !change.metas.contains_key(name) {
                w.remove(&format!("{}/{name}", layout::SECRETS));
            }
        }
        for path in &change.remove {
            w.remove(path);
        }
        if let Some(r) = &change.rekey {
            w.keep_old_key(&self.key_file)?;
            w.put(layout::KEY, &r.key_file, 0o644)?;
            if let Some(text) = &r.recipients_txt {
                w.put(layout::RECIPIENTS, text, 0o644)?;
            }
        }
        for (path, bytes) in &change.files {
            w.put(path, bytes, 0o644)?;
        }
        for (name, meta) in &change.metas {
            let bytes = meta.to_toml().into_bytes();
            let hash = sha256_hex(&bytes);
            if self.index.secrets.get(name) != Some(&hash) {
                w.put(&layout::meta_rel(name), &bytes, 0o644)?;
            }
            secrets.insert(name.clone(), hash);
        }
        let (lines, tip) = audit::chain(&self.tip, &change.audit, key);
        let key_file = match &change.rekey {
            Some(r) => &r.key_file,
            None => &self.key_file,
        };
        let index = Index::new(key, key_file, recipients.strings(), tip.count, secrets);
        w.put(layout::INDEX, index.to_toml().as_bytes(), 0o644)?;
        w.put(layout::AUDIT_HEAD, &Head::new(&tip, key).to_bytes(), 0o644)?;
        w.append_audit(self.tip.len, &lines)?;
        let keys: Vec<&StoreKey> = match &change.rekey {
            Some(r) => vec![&r.key, &self.key],
            None => vec![&self.key],
        };
        w.commit(&change.op, &self.key.id(), &keys)
    }
}

/// A change to commit: the whole new set of metadata, the new version
/// files, what to remove, the audit lines, and a new key when the
/// recipients change.
pub struct Change {
    pub op: String,
    pub metas: BTreeMap<String, SecretMeta>,
    /// Relative path → bytes (new version files).
    pub files: Vec<(String, Vec<u8>)>,
    /// Relative paths removed (scope directories of a name that stays).
    pub remove: Vec<String>,
    pub audit: Vec<Entry>,
    pub rekey: Option<Rekey>,
}

impl Change {
    pub fn new(op: &str, metas: BTreeMap<String, SecretMeta>) -> Change {
        Change {
            op: op.into(),
            metas,
            files: Vec::new(),
            remove: Vec::new(),
            audit: Vec::new(),
            rekey: None,
        }
    }
}

/// A new store key and the recipients it is encrypted to.
pub struct Rekey {
    pub key: StoreKey,
    pub recipients: Recipients,
    /// The new `key.age`.
    pub key_file: Vec<u8>,
    /// A new `recipients.txt`, when the command writes one.
    pub recipients_txt: Option<Vec<u8>>,
}

impl Rekey {
    pub fn new(
        old: &StoreKey,
        recipients: Recipients,
        recipients_txt: Option<Vec<u8>>,
    ) -> Result<Rekey, StoreError> {
        let key = old.rotate();
        let key_file = recipients.encrypt(&key.to_plaintext())?;
        Ok(Rekey {
            key,
            recipients,
            key_file,
            recipients_txt,
        })
    }
}

fn verify<'s>(
    store: &'s Store,
    identity: &Identity,
    check: RecipientsCheck,
) -> Result<Session<'s>, StoreError> {
    let root = store.root();
    let tree = store.load()?;
    let fatal = |path: &str, problem: String| StoreError::integrity(root, path, problem);
    let Some(index_bytes) = &tree.index else {
        return Err(no_index(root, tree));
    };
    let index = Index::parse(index_bytes).map_err(|e| fatal(layout::INDEX, e))?;
    let Some(key_file) = tree.key_file.clone() else {
        // A link, a special file there (already named), else missing.
        let mut problems = problems_at(&tree, layout::KEY);
        if problems.is_empty() {
            problems.push(Problem {
                path: layout::KEY.into(),
                problem: "the store key file is missing".into(),
            });
        }
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems,
        });
    };
    // Before decrypting: a key.age that is not the one store.toml names
    // was replaced (a file no member's identity opens is not a reason to
    // doubt the identity).
    if sha256_hex(&key_file) != index.key_file {
        return Err(fatal(
            layout::KEY,
            "it is not the key file store.toml names: one of the two was changed (replaced, or put back from another commit) without the store key".into(),
        ));
    }
    let plain = identity
        .decrypt(
            &key_file,
            &root.join(layout::KEY).display().to_string(),
            super::integrity::MAX_KEY_PLAINTEXT,
        )
        .map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => fatal(
                layout::KEY,
                format!("it is not a store key build-image wrote ({reason})"),
            ),
            e => e,
        })?;
    let key = StoreKey::from_plaintext(&plain).map_err(|e| fatal(layout::KEY, e))?;
    drop(plain);
    if key.id() != index.id || key.generation() != index.generation {
        return Err(fatal(
            layout::KEY,
            format!(
                "it holds the key of store {} generation {}, store.toml names store {} generation {}",
                key.id(),
                key.generation(),
                index.id,
                index.generation
            ),
        ));
    }
    super::integrity::check_pin(&key).map_err(|e| fatal(layout::KEY, e))?;
    if !index.verify(&key) {
        return Err(fatal(
            layout::INDEX,
            "it was changed without the store key (by someone who is not a member)".into(),
        ));
    }
    let mut problems = tree.problems.clone();
    let recipients = Recipients::from_keys(&index.recipients, &root.join(layout::INDEX))
        .map_err(|e| fatal(layout::INDEX, e.to_string()))?;
    let recipients_txt = tree.recipients.clone().unwrap_or_default();
    let text = String::from_utf8_lossy(&recipients_txt).into_owned();
    let file = match RecipientsFile::parse(&text, &root.join(layout::RECIPIENTS)) {
        Ok(f) => f,
        Err(StoreError::Recipients { line, reason, .. }) => {
            return Err(fatal(
                layout::RECIPIENTS,
                if line == 0 {
                    reason
                } else {
                    format!("line {line}: {reason}")
                },
            ))
        }
        Err(e) => return Err(e),
    };
    let recipients_diff = RecipientsDiff::between(&index.recipients, &file);
    if check == RecipientsCheck::MustMatch {
        problems.extend(recipients_diff.problems());
    }
    let metas = check_secrets(&tree, &index, &mut problems);
    let (log, tip) = match (&tree.audit, &tree.audit_head) {
        (Some(log), Some(head)) => match audit::verify(log, head, &key, index.audit_floor) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem {
                    path: e.file.into(),
                    problem: e.problem,
                });
                (Vec::new(), Tip::empty(&key.id()))
            }
        },
        (None, _) => {
            problems.push(Problem {
                path: layout::AUDIT.into(),
                problem: "the audit log is missing".into(),
            });
            (Vec::new(), Tip::empty(&key.id()))
        }
        (_, None) => {
            problems.push(Problem {
                path: layout::AUDIT_HEAD.into(),
                problem: "the audit log's head is missing".into(),
            });
            (Vec::new(), Tip::empty(&key.id()))
        }
    };
    problems.extend(changes_past_the_index(root, &log, index.audit_floor));
    if !problems.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems,
        });
    }
    Ok(Session {
        store,
        key,
        index,
        metas,
        recipients,
        file,
        recipients_txt,
        recipients_diff,
        key_file,
        log,
        tip,
        recovered: None,
    })
}

/// Every change writes its audit lines and `store.toml` (whose floor is
/// the log's length then) in one commit; only reads append to the log
/// after it. A change logged past the floor is one `store.toml` does not
/// hold: the index (with the metadata and files) was put back as it was
/// before it, the log kept.
fn changes_past_the_index(root: &std::path::Path, log: &[Entry], floor: u64) -> Option<Problem> {
    let (n, e) = log
        .iter()
        .enumerate()
        .skip(usize::try_from(floor).unwrap_or(usize::MAX))
        .find(|(_, e)| !audit::READ_OPS.contains(&e.op.as_str()))?;
    Some(Problem {
        path: layout::INDEX.into(),
        problem: format!(
            "it is older than the audit log: line {} records a change ({}{}) that it does not hold, so store.toml (and what it authenticates) was put back as it was before (from git history, say) without the store key; put the store back as a member last committed it (`git checkout -- {}`)",
            n + 1,
            e.op,
            e.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default(),
            root.display()
        ),
    })
}

/// The problems the walk found at one store file (a link, a special file).
fn problems_at(tree: &Tree, path: &str) -> Vec<Problem> {
    tree.problems
        .iter()
        .filter(|p| p.path == path)
        .cloned()
        .collect()
}

/// Why a store without `store.toml` is refused: a problem with the file
/// itself (a link…), traces of format 2 (it was removed), else it is a
/// format-1 store to migrate.
fn no_index(root: &std::path::Path, tree: Tree) -> StoreError {
    let mut problems = problems_at(&tree, layout::INDEX);
    if problems.is_empty() {
        problems = super::migrate::format_2_traces(root, &tree);
    }
    if problems.is_empty() {
        return StoreError::OldFormat {
            path: root.to_path_buf(),
        };
    }
    StoreError::Integrity {
        store: root.to_path_buf(),
        problems,
    }
}

/// Every name's metadata against the index, every version file against
/// its metadata, and nothing else under `secrets/`.
fn check_secrets(
    tree: &Tree,
    index: &Index,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, SecretMeta> {
    let mut metas = BTreeMap::new();
    // Already reported by the tree (a link, a special file): not again.
    let reported: BTreeSet<String> = problems.iter().map(|p| p.path.clone()).collect();
    let mut add = |path: String, problem: &str| {
        problems.push(Problem {
            path,
            problem: problem.to_string(),
        })
    };
    for (rel, kind) in &tree.unexpected {
        let what = match kind {
            crate::io::at::Kind::File | crate::io::at::Kind::Dir => {
                format!("{} that is no part of the store (not in store.toml or meta.toml): added without the store key", kind.describe())
            }
            k => format!(
                "it is {}: a store holds only regular files and directories (nothing is read or written through it)",
                k.describe()
            ),
        };
        add(rel.clone(), &what);
    }
    for name in tree.names.keys() {
        if !index.secrets.contains_key(name) {
            add(
                format!("{}/{name}", layout::SECRETS),
                "a secret store.toml does not list: added (or restored) without the store key",
            );
        }
    }
    for (name, hash) in &index.secrets {
        let meta_rel = layout::meta_rel(name);
        let Some(files) = tree.names.get(name) else {
            add(
                format!("{}/{name}", layout::SECRETS),
                "missing: removed without the store key",
            );
            continue;
        };
        let Some(bytes) = &files.meta else {
            if !reported.contains(&meta_rel) {
                add(meta_rel, "missing: removed without the store key");
            }
            continue;
        };
        if sha256_hex(bytes) != *hash {
            add(
                meta_rel,
                "it was changed without the store key (by someone who is not a member)",
            );
            continue;
        }
        let meta = match std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(SecretMeta::parse)
        {
            Ok(m) if m.name == *name => m,
            Ok(m) => {
                add(meta_rel, &format!("it names {:?}, not {name}", m.name));
                continue;
            }
            Err(e) => {
                add(meta_rel, &e);
                continue;
            }
        };
        let mut dirs = BTreeSet::new();
        for scope in meta.scope_list() {
            let Some(s) = meta.scope(&scope) else {
                continue;
            };
            let dir = scope.dir_name();
            dirs.insert(dir.clone());
            let on_disk = files.scopes.get(&dir);
            for v in &s.versions {
                let rel = layout::version_rel(name, &scope, v.version);
                match on_disk.and_then(|d| d.get(&v.version)) {
                    None if reported.contains(&rel) => {}
                    None => add(rel, "missing: removed without the store key"),
                    Some(h) if *h != v.sha256 => add(
                        rel,
                        "its bytes are not the ones meta.toml authenticates (replaced, copied from another secret or forged with `age -r`)",
                    ),
                    Some(_) => {}
                }
            }
            if let Some(d) = on_disk {
                for v in d.keys() {
                    if !s.versions.iter().any(|m| m.version == *v) {
                        add(
                            layout::version_rel(name, &scope, *v),
                            "a version meta.toml does not list: added without the store key",
                        );
                    }
                }
            }
        }
        for dir in files.scopes.keys() {
            if !dirs.contains(dir) {
                add(
                    format!("{}/{name}/{dir}", layout::SECRETS),
                    "a scope meta.toml does not list: added without the store key",
                );
            }
        }
        metas.insert(name.clone(), meta);
    }
    metas
}

/// A store read without an identity: nothing is verified.
pub struct Unverified {
    pub metas: BTreeMap<String, SecretMeta>,
    pub log: Vec<Entry>,
    pub id: Option<String>,
}

/// Read the metadata and the log without checking them (no identity):
/// for `list`, `history`, `audit` and `check`, which say so.
pub fn peek(store: &Store) -> Result<Unverified, StoreError> {
    let root = store.root();
    if store.pending() {
        return Err(StoreError::no_identity(
            "an interrupted change waits in .tmp/journal: a command with a member's identity finishes it",
        ));
    }
    let tree = store.load()?;
    // Links and special files are refused even unverified: nothing is
    // read through them.
    let mut problems = tree.problems.clone();
    problems.extend(
        tree.unexpected
            .iter()
            .filter(|(_, k)| !matches!(k, crate::io::at::Kind::File | crate::io::at::Kind::Dir))
            .map(|(rel, k)| Problem {
                path: rel.clone(),
                problem: format!(
                    "it is {}: a store holds only regular files and directories",
                    k.describe()
                ),
            }),
    );
    if !problems.is_empty() {
        return Err(StoreError::Integrity {
            store: root.to_path_buf(),
            problems,
        });
    }
    let Some(index) = &tree.index else {
        return Err(no_index(root, tree));
    };
    let index = Index::parse(index).map_err(|e| StoreError::integrity(root, layout::INDEX, e))?;
    let mut metas = BTreeMap::new();
    for (name, files) in &tree.names {
        if let Some(m) = files
            .meta
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| SecretMeta::parse(t).ok())
            .filter(|m| m.name == *name)
        {
            metas.insert(name.clone(), m);
        }
    }
    let log = tree
        .audit
        .as_deref()
        .map(audit::parse)
        .transpose()
        .map_err(|e| StoreError::integrity(root, layout::AUDIT, e))?
        .unwrap_or_default();
    Ok(Unverified {
        metas,
        log,
        id: Some(index.id),
    })
}
