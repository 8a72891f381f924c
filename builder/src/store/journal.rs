//! A change to the store, committed as a whole (a redo journal).
//!
//! Every new file is written and fsynced in `.tmp/journal/` first, with
//! `plan.json`: the steps (move a staged file into place, remove a
//! directory, append to the audit log at a given length) and their MAC
//! under the store key. Writing the plan (renamed into place) is the
//! commit; then the steps run, each one safe to run again. A command
//! killed before the plan leaves the store untouched (the next command
//! removes the debris); killed after it, the next command with a member's
//! identity checks the plan's MAC and finishes it. A change of store key
//! (`rekey`) is authenticated under both keys and keeps a copy of the old
//! `key.age`, so an identity of the old recipients or of the new ones can
//! finish it: the store is never split between them.

use super::crypto::Identity;
use super::integrity::{sha256_hex, StoreKey};
use super::layout::{at_error, Store, AUDIT, JOURNAL, KEY, SECRETS};
use super::StoreError;
use crate::io::at::Dir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

/// The commit record in `.tmp/journal/`.
pub const PLAN: &str = "plan.json";
/// The previous `key.age`, kept while a change of key is committed.
const OLD_KEY: &str = "key.age.old";
const MAX_PLAN: u64 = 64 << 20;

/// Top-level names a plan may write.
const WRITABLE: &[&str] = &[
    SECRETS,
    super::layout::INDEX,
    KEY,
    super::layout::RECIPIENTS,
    AUDIT,
    super::layout::AUDIT_HEAD,
    ".gitignore",
    ".gitattributes",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Move the staged `file` to `path` (relative to the store).
    Put { path: String, file: String },
    /// Remove `path` (a directory with its contents, or a file).
    Remove { path: String },
    /// Cut the file at `path` to `at` bytes and write the staged `file` there.
    Append { path: String, at: u64, file: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    op: String,
    id: String,
    /// SHA-256 of `store.toml` when the change began (empty: there was
    /// none). The plan is carried out only on that store, or on the one
    /// it was making (a crash in its steps): never replayed on another.
    #[serde(default)]
    base: String,
    steps: Vec<Step>,
    /// Staged file → SHA-256.
    files: BTreeMap<String, String>,
    /// Key generation → MAC of the plan without its MACs.
    #[serde(default)]
    macs: BTreeMap<u32, String>,
}

impl Plan {
    fn unsigned(&self) -> Vec<u8> {
        let mut p = self.clone();
        p.macs.clear();
        serde_json::to_vec(&p).unwrap_or_default()
    }
    fn verified_by(&self, key: &StoreKey) -> bool {
        key.id() == self.id
            && self
                .macs
                .get(&key.generation())
                .is_some_and(|mac| key.verify(mac, "journal", &[&self.unsigned()]))
    }
}

/// A change being staged.
pub struct Writer<'s> {
    store: &'s Store,
    journal: Dir,
    base: String,
    files: BTreeMap<String, String>,
    removes: Vec<Step>,
    puts: Vec<Step>,
    appends: Vec<Step>,
}

impl<'s> Writer<'s> {
    /// Start a change (the store has no pending one).
    pub fn begin(store: &'s Store) -> Result<Writer<'s>, StoreError> {
        let tmp = store.tmp()?;
        tmp.remove(JOURNAL).map_err(|e| at_error(store.root(), e))?;
        let journal = tmp
            .sub_or_create(JOURNAL, 0o700)
            .map_err(|e| at_error(store.root(), e))?;
        let base = index_hash(store)?.unwrap_or_default();
        Ok(Writer {
            store,
            journal,
            base,
            files: BTreeMap::new(),
            removes: Vec::new(),
            puts: Vec::new(),
            appends: Vec::new(),
        })
    }

    fn stage(&mut self, data: &[u8], mode: u32) -> Result<String, StoreError> {
        let file = self.files.len().to_string();
        self.journal
            .write_new(&file, data, mode)
            .map_err(|e| at_error(self.store.root(), e))?;
        self.files.insert(file.clone(), sha256_hex(data));
        failpoint();
        Ok(file)
    }

    /// Write `data` to `path` (relative to the store).
    pub fn put(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), StoreError> {
        let file = self.stage(data, mode)?;
        self.puts.push(Step::Put {
            path: path.into(),
            file,
        });
        Ok(())
    }

    /// Remove `path` and what is in it.
    pub fn remove(&mut self, path: &str) {
        self.removes.push(Step::Remove { path: path.into() });
    }

    /// Append `data` to the audit log, which is `at` bytes long now.
    pub fn append_audit(&mut self, at: u64, data: &[u8]) -> Result<(), StoreError> {
        let file = self.stage(data, 0o600)?;
        self.appends.push(Step::Append {
            path: AUDIT.into(),
            at,
            file,
        });
        Ok(())
    }

    /// Keep the current `key.age` until the change is in (a change of key).
    pub fn keep_old_key(&mut self, key_file: &[u8]) -> Result<(), StoreError> {
        self.journal
            .write_new(OLD_KEY, key_file, 0o600)
            .map_err(|e| at_error(self.store.root(), e))
    }

    /// Commit: write the plan, authenticated under each of `keys` (of the
    /// store `id`), then carry it out and remove the journal.
    pub fn commit(self, op: &str, id: &str, keys: &[&StoreKey]) -> Result<(), StoreError> {
        let mut steps = self.removes;
        steps.extend(self.puts);
        steps.extend(self.appends);
        let mut plan = Plan {
            op: op.into(),
            id: id.into(),
            base: self.base,
            steps,
            files: self.files,
            macs: BTreeMap::new(),
        };
        let unsigned = plan.unsigned();
        for k in keys {
            plan.macs
                .insert(k.generation(), k.mac_hex("journal", &[&unsigned]));
        }
        let root = self.store.root();
        let bytes = serde_json::to_vec_pretty(&plan).unwrap_or_default();
        let staged = "plan.json.new";
        self.journal
            .write_new(staged, &bytes, 0o600)
            .and_then(|_| self.journal.sync())
            .and_then(|_| self.journal.rename(staged, &self.journal, PLAN))
            .and_then(|_| self.journal.sync())
            .map_err(|e| at_error(root, e))?;
        failpoint();
        apply(self.store, &self.journal, &plan)
    }
}

/// The SHA-256 of `store.toml` now (`None`: there is none).
fn index_hash(store: &Store) -> Result<Option<String>, StoreError> {
    Ok(store
        .read(super::layout::INDEX, super::layout::MAX_INDEX)?
        .map(|b| sha256_hex(&b)))
}

impl Plan {
    /// Whether the store is the one the plan was made on, or the one it
    /// makes (its steps ran in part): `store.toml` is the one before or
    /// the one it puts.
    fn fits(&self, index: Option<&str>) -> bool {
        let made = self.steps.iter().find_map(|s| match s {
            Step::Put { path, file } if path == super::layout::INDEX => self.files.get(file),
            _ => None,
        });
        let now = index.unwrap_or("");
        now == self.base || made.is_some_and(|h| h == now)
    }
}

/// Carry out a committed plan (again: every step is safe to repeat), then
/// remove the journal.
fn apply(store: &Store, journal: &Dir, plan: &Plan) -> Result<(), StoreError> {
    let root = store.root();
    let at = |e| at_error(root, e);
    for step in &plan.steps {
        match step {
            Step::Remove { path } => {
                let (parent, name) = split(path);
                let dir = if parent.is_empty() {
                    None
                } else {
                    match store.walk(&parent)? {
                        Some(d) => Some(d),
                        None => continue, // removed before a crash
                    }
                };
                let target = dir.as_ref().unwrap_or(store.dir());
                target.remove(name).map_err(at)?;
                target.sync().map_err(at)?;
            }
            Step::Put { path, file } => {
                if journal.kind(file).map_err(at)?.is_none() {
                    continue; // moved in before a crash
                }
                let (parent, name) = split(path);
                let dir = create_walk(store, &parent)?;
                let target = dir.as_ref().unwrap_or(store.dir());
                journal.rename(file, target, name).map_err(at)?;
                target.sync().map_err(at)?;
            }
            Step::Append {
                path,
                at: len,
                file,
            } => {
                let Some(data) = journal.read(file, super::audit::MAX_LOG).map_err(at)? else {
                    return Err(StoreError::integrity(
                        root,
                        &format!(".tmp/journal/{file}"),
                        "a staged audit entry of the committed change is missing",
                    ));
                };
                let (f, _) = store
                    .dir()
                    .open_for_update(path)
                    .map_err(at)?
                    .ok_or_else(|| StoreError::integrity(root, path, "it is missing"))?;
                f.set_len(*len)
                    .and_then(|_| f.write_all_at(&data, *len))
                    .and_then(|_| f.sync_all())
                    .map_err(super::io(format!(
                        "appending to {}",
                        root.join(path).display()
                    )))?;
            }
        }
        failpoint();
    }
    store.dir().sync().map_err(at)?;
    // The change is in: the plan goes first, then the rest of the journal.
    journal.remove(PLAN).map_err(at)?;
    journal.sync().map_err(at)?;
    store.tmp()?.remove(JOURNAL).map_err(at)?;
    Ok(())
}

/// `a/b/c` → (["a", "b"], "c").
fn split(path: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or("");
    (parts, name)
}

/// The directory at `parts`, created as needed (`None`: the root).
fn create_walk(store: &Store, parts: &[&str]) -> Result<Option<Dir>, StoreError> {
    let mut dir: Option<Dir> = None;
    for p in parts {
        let next = match &dir {
            None => store.dir().sub_or_create(p, 0o755),
            Some(d) => d.sub_or_create(p, 0o755),
        }
        .map_err(|e| at_error(store.root(), e))?;
        dir = Some(next);
    }
    Ok(dir)
}

/// A plan's path: components of names only, below a top-level store file
/// (to remove: format 1's `.tmp-*` leftovers too).
fn valid_path(path: &str, removing: bool) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && !p.contains('\0')
            && *p != "."
            && *p != ".."
            && (!p.starts_with('.') || (removing && p.starts_with(".tmp-")))
    };
    match parts.as_slice() {
        [top] => WRITABLE.contains(top),
        [top, rest @ ..] => *top == SECRETS && rest.len() <= 3 && rest.iter().all(plain),
        [] => false,
    }
}

/// What finishing a pending change did.
pub enum Recovered {
    /// The change `op` is in.
    Finished(String),
    /// The journal was not authenticated by the store's key: removed.
    Discarded,
}

/// Finish the change a crash left committed in `.tmp/journal`, after
/// checking its MAC under a key `identity` opens: the store's `key.age`,
/// the old key kept by a change of key, or the new key it stages.
pub fn recover(store: &mut Store, identity: &Identity) -> Result<Recovered, StoreError> {
    let root = store.root().to_path_buf();
    let at = |e| at_error(&root, e);
    let tmp = store.tmp()?;
    let Some(journal) = tmp.sub(JOURNAL).map_err(at)? else {
        store.set_pending(false);
        return Ok(Recovered::Discarded);
    };
    let not_ours = |why: &str| {
        StoreError::integrity(
            &root,
            ".tmp/journal",
            format!("an interrupted change waits there, but {why}: if no member of this store ran a command that was interrupted, remove {}", root.join(".tmp").display()),
        )
    };
    let plan: Plan = journal
        .read(PLAN, MAX_PLAN)
        .map_err(at)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| not_ours("its plan is unreadable"))?;
    let paths_ok = plan.steps.iter().all(|s| match s {
        Step::Put { path, file } | Step::Append { path, file, .. } => {
            valid_path(path, false) && plan.files.contains_key(file) && !file.contains('/')
        }
        Step::Remove { path } => valid_path(path, true),
    });
    if !paths_ok {
        return Err(not_ours("its plan names paths outside the store's files"));
    }
    // The keys this identity opens.
    let mut keys = Vec::new();
    let mut opened_store_key = false;
    let key_file = store.read(KEY, super::layout::MAX_KEY_FILE)?;
    if let Some(k) = key_file.as_deref().and_then(|b| open_key(b, identity)) {
        opened_store_key = true;
        keys.push(k);
    }
    if let Some(k) = journal
        .read(OLD_KEY, super::layout::MAX_KEY_FILE)
        .map_err(at)?
        .and_then(|b| open_key(&b, identity))
    {
        keys.push(k);
    }
    for step in &plan.steps {
        if let Step::Put { path, file } = step {
            if path == KEY {
                if let Some(k) = journal
                    .read(file, super::layout::MAX_KEY_FILE)
                    .map_err(at)?
                    .and_then(|b| open_key(&b, identity))
                {
                    keys.push(k);
                }
            }
        }
    }
    if keys.is_empty() {
        return Err(StoreError::NotARecipient {
            what: format!(
                "the interrupted change in {} (rerun with an identity of the store's recipients, old or new)",
                root.join(".tmp/journal").display()
            ),
        });
    }
    let trusted = keys
        .iter()
        .any(|k| plan.verified_by(k) && super::integrity::check_pin(k).is_ok());
    // A member's change, but of another state of the store (an old
    // journal put back): carrying it out would undo what came after.
    let trusted = trusted && plan.fits(index_hash(store)?.as_deref());
    if !trusted {
        if opened_store_key {
            eprintln!(
                "build-image: warning: removed {}: it was not authenticated by the store key for the store as it is (not a change a member made, or one of an earlier state put back)",
                root.join(".tmp/journal").display()
            );
            tmp.remove(JOURNAL).map_err(at)?;
            store.set_pending(false);
            return Ok(Recovered::Discarded);
        }
        return Err(not_ours("it is not authenticated by a key of this store"));
    }
    for (file, hash) in &plan.files {
        if let Some(bytes) = journal.read(file, super::audit::MAX_LOG).map_err(at)? {
            if sha256_hex(&bytes) != *hash {
                return Err(not_ours("a staged file does not match its plan"));
            }
        }
    }
    apply(store, &journal, &plan)?;
    store.set_pending(false);
    Ok(Recovered::Finished(plan.op))
}

fn open_key(key_file: &[u8], identity: &Identity) -> Option<StoreKey> {
    let plain = identity
        .decrypt(key_file, "key.age", super::integrity::MAX_KEY_PLAINTEXT)
        .ok()?;
    StoreKey::from_plaintext(&plain).ok()
}

/// Test hook: `BUILD_IMAGE_STORE_FAILPOINT=N` exits (status 86, as a
/// crash: nothing is cleaned up) at the Nth point of a commit: after each
/// staged file, after the plan, after each step.
fn failpoint() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Some(want) = std::env::var("BUILD_IMAGE_STORE_FAILPOINT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == want {
        std::process::exit(86);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_paths_stay_in_the_store() {
        for ok in [
            "store.toml",
            "secrets/A/meta.toml",
            "secrets/A/tag.x/v1.age",
            "audit.jsonl",
        ] {
            assert!(valid_path(ok, false), "{ok}");
        }
        for bad in [
            "../x",
            "secrets/../x",
            "/etc/passwd",
            "secrets//x",
            "elsewhere",
            "store.toml/x",
            "secrets/A/.tmp-1",
            ".tmp/x",
        ] {
            assert!(!valid_path(bad, false), "{bad}");
        }
        assert!(valid_path("secrets/A/global/.tmp-x1", true));
        assert!(!valid_path("secrets/A/global/..", true));
    }
}
