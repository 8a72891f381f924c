//! Where things live in a store directory, the store lock, and reading the
//! whole tree. Everything inside the store is reached through directory
//! descriptors without following links ([`crate::io::at`]): a link or a
//! special file anywhere in it is refused by name, nothing outside the
//! store is read or written. Temporary files live only in `.tmp/`, which
//! the next command (holding the lock) empties, or finishes when it holds
//! a committed change ([`super::journal`]).

use super::names::Scope;
use super::{Problem, StoreError};
use crate::io::at::{AtError, Dir, Kind};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub const RECIPIENTS: &str = "recipients.txt";
pub const INDEX: &str = "store.toml";
pub const KEY: &str = "key.age";
pub const AUDIT: &str = "audit.jsonl";
pub const AUDIT_HEAD: &str = "audit.head";
pub const SECRETS: &str = "secrets";
pub const META: &str = "meta.toml";
/// Staging area (same filesystem, so renames are atomic).
pub const TMP: &str = ".tmp";
pub const LOCK: &str = ".lock";
/// Inside `.tmp/`: a change being committed.
pub const JOURNAL: &str = "journal";

pub const GITIGNORE: &str = "# build-image store: local lock and staging files\n.lock\n.tmp/\n";
/// Version files are binary: git shows them as changed, never as text diffs.
pub const GITATTRIBUTES: &str = "*.age binary\n";

/// Bounds of what is read from the store.
pub const MAX_RECIPIENTS: u64 = 1 << 20;
pub const MAX_INDEX: u64 = 16 << 20;
pub const MAX_KEY_FILE: u64 = 1 << 20;
pub const MAX_META: u64 = 4 << 20;
pub const MAX_HEAD: u64 = 4096;
/// A version file: the largest value, age's 16 bytes per 64 KiB chunk,
/// and a header for many recipients.
pub const MAX_VERSION_FILE: u64 = super::input::MAX_VALUE + (2 << 20);

/// An open store, locked exclusively for as long as it lives.
pub struct Store {
    root: PathBuf,
    dir: Dir,
    /// A committed change waits in `.tmp/journal` (a crash): the next
    /// command with an identity finishes it.
    pending: bool,
    _lock: File,
}

impl Store {
    /// Open an existing store (it has `recipients.txt`) and take its lock.
    /// Leftovers of a crash in `.tmp/` are removed; a committed change is
    /// kept for [`super::Session::open`] to finish.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Self::open_with(root, true)
    }

    /// [`Store::open`] for a second store while one is held (`import
    /// --from`): refused when another command holds its lock, never waited
    /// for (two commands crossing would wait on each other for ever).
    pub fn open_if_free(root: &Path) -> Result<Store, StoreError> {
        Self::open_with(root, false)
    }

    fn open_with(root: &Path, wait: bool) -> Result<Store, StoreError> {
        let not_a_store = || StoreError::NotAStore {
            path: root.to_path_buf(),
        };
        let dir = match Dir::open(root) {
            Ok(d) => d,
            Err(AtError::Io { cause, .. })
                if matches!(
                    cause.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(not_a_store())
            }
            Err(e) => return Err(at_error(root, e)),
        };
        match dir.kind(RECIPIENTS).map_err(|e| at_error(root, e))? {
            // The other files of a store are there: recipients.txt was
            // removed, which is no reason to take it for no store.
            None => match store_file_in(&dir).map_err(|e| at_error(root, e))? {
                Some(other) => {
                    return Err(StoreError::integrity(
                        root,
                        RECIPIENTS,
                        format!(
                            "it is missing, but {other} is there: this is a store whose recipients.txt was removed (not by build-image); put it back as a member committed it (`git checkout -- {}`)",
                            root.join(RECIPIENTS).display()
                        ),
                    ))
                }
                None => return Err(not_a_store()),
            },
            Some(Kind::File) => {}
            Some(k) => {
                return Err(StoreError::integrity(
                    root,
                    RECIPIENTS,
                    format!("it is {}, not a regular file", k.describe()),
                ))
            }
        }
        Self::locked_with(root, dir, wait)
    }

    /// Take the lock of `dir` (waiting for it) and clean `.tmp/`.
    pub(crate) fn locked(root: &Path, dir: Dir) -> Result<Store, StoreError> {
        Self::locked_with(root, dir, true)
    }

    fn locked_with(root: &Path, dir: Dir, wait: bool) -> Result<Store, StoreError> {
        let busy = || {
            StoreError::Io {
            context: root.display().to_string(),
            cause: std::io::Error::other(
                "the store is in use by another build-image command (it holds the store's lock): run this again when that one is done",
            ),
        }
        };
        // The store directory itself is the lock: `.lock` can be removed
        // (`git clean -X`) or replaced while a command holds it, and a
        // second command would then lock a new file and write at the same
        // time. `.lock` is still taken, after it, for older build-images.
        if !dir.lock_self(wait).map_err(|e| at_error(root, e))? {
            return Err(busy());
        }
        let lock = dir.lock(LOCK, wait).map_err(|e| match e {
            AtError::Kind { what, .. } => StoreError::integrity(
                root,
                LOCK,
                format!("the lock is {what}: remove it (it is not part of the store; build-image creates it)"),
            ),
            e => at_error(root, e),
        })?;
        let Some(lock) = lock else {
            return Err(busy());
        };
        let pending = Self::clean_tmp(root, &dir).map_err(|e| match e {
            StoreError::Integrity { .. } | StoreError::Io { .. } => StoreError::Io {
                context: format!(
                    "cleaning the staging directory {} (it holds nothing of the store when no change was interrupted: remove it by hand, `rm -rf {}`)",
                    root.join(TMP).display(),
                    root.join(TMP).display()
                ),
                cause: std::io::Error::other(e.to_string()),
            },
            e => e,
        })?;
        Ok(Store {
            root: root.to_path_buf(),
            dir,
            pending,
            _lock: lock,
        })
    }

    /// Empty `.tmp/` but a committed change in it (whether there is one).
    fn clean_tmp(root: &Path, dir: &Dir) -> Result<bool, StoreError> {
        let mut pending = false;
        match dir.kind(TMP).map_err(|e| at_error(root, e))? {
            None => {}
            Some(Kind::Dir) => {
                let tmp = dir
                    .sub(TMP)
                    .map_err(|e| at_error(root, e))?
                    .ok_or_else(|| StoreError::integrity(root, TMP, "vanished"))?;
                for (name, kind) in tmp.entries().map_err(|e| at_error(root, e))? {
                    if name == JOURNAL && kind == Kind::Dir {
                        let journal = tmp
                            .sub(JOURNAL)
                            .map_err(|e| at_error(root, e))?
                            .ok_or_else(|| StoreError::integrity(root, TMP, "vanished"))?;
                        if journal
                            .kind(super::journal::PLAN)
                            .map_err(|e| at_error(root, e))?
                            == Some(Kind::File)
                        {
                            pending = true;
                            continue;
                        }
                    }
                    // Holding the lock, nobody else stages: leftovers go.
                    tmp.remove(&name).map_err(|e| at_error(root, e))?;
                }
            }
            // Not ours (a link or a file someone put there): removed, never
            // followed.
            Some(_) => {
                dir.remove(TMP).map_err(|e| at_error(root, e))?;
            }
        }
        Ok(pending)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    pub(crate) fn set_pending(&mut self, pending: bool) {
        self.pending = pending;
    }

    /// The staging directory `.tmp/` (created when missing).
    pub fn tmp(&self) -> Result<Dir, StoreError> {
        self.dir
            .sub_or_create(TMP, 0o700)
            .map_err(|e| at_error(&self.root, e))
    }

    /// Replace the top-level file `name` with `data`: written in `.tmp/`,
    /// fsynced, renamed over, the directory fsynced.
    pub fn replace_file(&self, name: &str, data: &[u8], mode: u32) -> Result<(), StoreError> {
        let tmp = self.tmp()?;
        let staged = format!("{name}.{}", std::process::id());
        let _ = tmp.remove(&staged);
        tmp.write_new(&staged, data, mode)
            .and_then(|_| tmp.rename(&staged, &self.dir, name))
            .and_then(|_| self.dir.sync())
            .map_err(|e| {
                let _ = tmp.remove(&staged);
                at_error(&self.root, e)
            })
    }

    /// Read a top-level file with a bound.
    pub fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.dir
            .read(name, limit)
            .map_err(|e| at_error(&self.root, e))
    }

    /// Read the bytes of one version file (bounded, never through a link).
    pub fn read_version(
        &self,
        name: &str,
        scope: &Scope,
        version: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let rel = version_rel(name, scope, version);
        let missing = || StoreError::integrity(&self.root, &rel, "it is missing");
        let dir = self
            .walk(&[SECRETS, name, &scope.dir_name()])?
            .ok_or_else(missing)?;
        dir.read(&version_file(version), MAX_VERSION_FILE)
            .map_err(|e| at_error(&self.root, e))?
            .ok_or_else(missing)
    }

    /// The directory at `parts` below the root (`None` when missing).
    pub fn walk(&self, parts: &[&str]) -> Result<Option<Dir>, StoreError> {
        let mut dir: Option<Dir> = None;
        for p in parts {
            let next = match &dir {
                None => self.dir.sub(p),
                Some(d) => d.sub(p),
            }
            .map_err(|e| at_error(&self.root, e))?;
            match next {
                Some(d) => dir = Some(d),
                None => return Ok(None),
            }
        }
        Ok(dir)
    }

    /// Read the whole tree: the top-level files, every `meta.toml`, the
    /// SHA-256 of every version file, and what does not belong.
    pub fn load(&self) -> Result<Tree, StoreError> {
        let root = &self.root;
        let mut tree = Tree::default();
        let read = |name: &str,
                    limit: u64,
                    problems: &mut Vec<Problem>|
         -> Result<Option<Vec<u8>>, StoreError> {
            Ok(or_problem(root, self.dir.read(name, limit), problems)?.flatten())
        };
        let mut problems = Vec::new();
        tree.recipients = read(RECIPIENTS, MAX_RECIPIENTS, &mut problems)?;
        tree.index = read(INDEX, MAX_INDEX, &mut problems)?;
        tree.key_file = read(KEY, MAX_KEY_FILE, &mut problems)?;
        tree.audit = read(AUDIT, super::audit::MAX_LOG, &mut problems)?;
        // The one file written in place: a write would change every other
        // link of it (outside the store, say) too.
        if tree.audit.is_some()
            && self
                .dir
                .has_other_links(AUDIT)
                .map_err(|e| at_error(root, e))?
        {
            problems.push(Problem {
                path: AUDIT.into(),
                problem: format!(
                    "it has other hard links: build-image appends to it in place, which would change them too; give the store its own copy (`cp {0} {0}.copy && mv {0}.copy {0}`)",
                    root.join(AUDIT).display()
                ),
            });
        }
        tree.audit_head = read(AUDIT_HEAD, MAX_HEAD, &mut problems)?;
        let secrets = match self.dir.sub(SECRETS) {
            Ok(d) => d,
            Err(e @ AtError::Kind { .. }) => {
                problems.push(problem(root, &e));
                None
            }
            Err(e) => return Err(at_error(root, e)),
        };
        if let Some(secrets) = secrets {
            for (name, kind) in secrets.entries().map_err(|e| at_error(root, e))? {
                let rel = format!("{SECRETS}/{name}");
                if kind != Kind::Dir || super::validate_name(&name).is_err() {
                    tree.unexpected.push((rel, kind));
                    continue;
                }
                let Some(ndir) = secrets.sub(&name).map_err(|e| at_error(root, e))? else {
                    continue;
                };
                let mut files = NameFiles::default();
                for (entry, kind) in ndir.entries().map_err(|e| at_error(root, e))? {
                    let erel = format!("{rel}/{entry}");
                    if entry == META {
                        files.meta =
                            or_problem(root, ndir.read(META, MAX_META), &mut problems)?.flatten();
                        continue;
                    }
                    if kind != Kind::Dir || scope_of_dir(&entry).is_none() {
                        tree.unexpected.push((erel, kind));
                        continue;
                    }
                    let Some(sdir) = ndir.sub(&entry).map_err(|e| at_error(root, e))? else {
                        continue;
                    };
                    let mut versions = BTreeMap::new();
                    for (file, kind) in sdir.entries().map_err(|e| at_error(root, e))? {
                        let frel = format!("{erel}/{file}");
                        match (kind, version_of_file(&file)) {
                            (Kind::File, Some(v)) => {
                                let h = sdir.sha256(&file, MAX_VERSION_FILE);
                                if let Some(h) = or_problem(root, h, &mut problems)?.flatten() {
                                    versions.insert(v, super::integrity::hex(&h));
                                }
                            }
                            _ => tree.unexpected.push((frel, kind)),
                        }
                    }
                    files.scopes.insert(entry, versions);
                }
                tree.names.insert(name, files);
            }
        }
        tree.problems = problems;
        Ok(tree)
    }
}

impl Drop for Store {
    /// An empty `.tmp/` goes (still holding the lock: fields drop after).
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&self.dir, TMP, rustix::fs::AtFlags::REMOVEDIR);
    }
}

/// The files whose presence makes a directory a store (any one of them:
/// a store missing the others is a store with files removed).
pub const STORE_FILES: &[&str] = &[RECIPIENTS, INDEX, KEY, AUDIT, AUDIT_HEAD];

/// The first of [`STORE_FILES`] in `dir` (links and all), if any.
pub fn store_file_in(dir: &Dir) -> Result<Option<&'static str>, AtError> {
    for name in STORE_FILES {
        if dir.kind(name)?.is_some() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Whether `root` holds a store, or what is left of one (any of
/// [`STORE_FILES`], never followed). A missing or unreadable directory
/// holds none.
pub fn is_store(root: &Path) -> bool {
    Dir::open(root)
        .ok()
        .and_then(|d| store_file_in(&d).ok().flatten())
        .is_some()
}

/// Refuse an output (`get -o`, `export`) inside the store's directory: it
/// would be committed with the store (a value in clear), or refused as a
/// file that is no part of it.
pub fn refuse_output_inside(root: &Path, out: &Path) -> Result<(), StoreError> {
    let inside = match (
        std::fs::canonicalize(root),
        std::fs::canonicalize(crate::io::parent_dir(out)),
    ) {
        (Ok(r), Ok(d)) => d.starts_with(&r),
        _ => false,
    };
    if inside {
        return Err(StoreError::Value(format!(
            "{} is inside the store {}, which lives in git: write it outside the store",
            out.display(),
            root.display()
        )));
    }
    Ok(())
}

/// Everything read from a store, before it is checked.
#[derive(Default)]
pub struct Tree {
    pub recipients: Option<Vec<u8>>,
    pub index: Option<Vec<u8>>,
    pub key_file: Option<Vec<u8>>,
    pub audit: Option<Vec<u8>>,
    pub audit_head: Option<Vec<u8>>,
    /// By name: `meta.toml` and the scope directories' version files.
    pub names: BTreeMap<String, NameFiles>,
    /// Entries that are no part of a store (relative path, what they are).
    pub unexpected: Vec<(String, Kind)>,
    /// Links, special or oversized files where store files belong.
    pub problems: Vec<Problem>,
}

#[derive(Default)]
pub struct NameFiles {
    pub meta: Option<Vec<u8>>,
    /// Scope directory name → version → SHA-256 (hex) of `vN.age`.
    pub scopes: BTreeMap<String, BTreeMap<u32, String>>,
}

/// `secrets/NAME/SCOPE/vN.age`, relative to the store.
pub fn version_rel(name: &str, scope: &Scope, version: u32) -> String {
    format!(
        "{SECRETS}/{name}/{}/{}",
        scope.dir_name(),
        version_file(version)
    )
}

pub fn meta_rel(name: &str) -> String {
    format!("{SECRETS}/{name}/{META}")
}

pub fn version_file(version: u32) -> String {
    format!("v{version}.age")
}

/// The version of a `vN.age` file name (canonical: no leading zeros).
pub fn version_of_file(file: &str) -> Option<u32> {
    let n = file.strip_prefix('v')?.strip_suffix(".age")?;
    let v: u32 = n.parse().ok()?;
    (v > 0 && v.to_string() == n).then_some(v)
}

/// The scope a scope directory holds.
pub fn scope_of_dir(dir: &str) -> Option<Scope> {
    let scope = if dir == "global" {
        "global".to_string()
    } else if let Some(t) = dir.strip_prefix("tag.") {
        format!("tag:{t}")
    } else if let Some(d) = dir.strip_prefix("device.") {
        format!("device:{d}")
    } else {
        return None;
    };
    Scope::parse(&scope).ok().filter(|s| s.dir_name() == dir)
}

/// A read of a store file, where a link, a special or an oversized file is
/// a problem to name (and nothing read) rather than an error that stops
/// the walk.
fn or_problem<T>(
    root: &Path,
    r: Result<T, AtError>,
    problems: &mut Vec<Problem>,
) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ (AtError::Kind { .. } | AtError::TooLarge { .. })) => {
            problems.push(problem(root, &e));
            Ok(None)
        }
        Err(e) => Err(at_error(root, e)),
    }
}

fn problem(root: &Path, e: &AtError) -> Problem {
    let path = e
        .path()
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| e.path().display().to_string());
    let problem = match e {
        AtError::Kind { what, want, .. } => format!(
            "it is {what}, not {want} (a store holds only regular files and directories; nothing is read or written through it)"
        ),
        AtError::TooLarge { limit, .. } => format!("it is larger than {limit} bytes"),
        AtError::Io { cause, .. } => cause.to_string(),
    };
    Problem { path, problem }
}

/// An error under the store: links and special files are integrity
/// problems (named), the rest I/O errors.
pub fn at_error(root: &Path, e: AtError) -> StoreError {
    match &e {
        AtError::Kind { .. } | AtError::TooLarge { .. } => StoreError::Integrity {
            store: root.to_path_buf(),
            problems: vec![problem(root, &e)],
        },
        AtError::Io { path, cause } => StoreError::Io {
            context: path.display().to_string(),
            cause: std::io::Error::new(cause.kind(), cause.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_scope_names_are_canonical() {
        assert_eq!(version_of_file("v12.age"), Some(12));
        for bad in [
            "v0.age",
            "v012.age",
            "v1.age.tmp",
            "v.age",
            "x1.age",
            "v-1.age",
        ] {
            assert_eq!(version_of_file(bad), None, "{bad}");
        }
        assert_eq!(scope_of_dir("tag.lobby"), Some(Scope::Tag("lobby".into())));
        assert_eq!(scope_of_dir("global"), Some(Scope::Global));
        for bad in ["tag.", "rack.1", ".tmp-x", "device.a/b"] {
            assert_eq!(scope_of_dir(bad), None, "{bad}");
        }
    }

    /// `.lock` removed, or replaced by a link or a FIFO, while a command
    /// holds the store: a second command still finds the store in use
    /// (never two writers at once), and nothing is followed.
    #[test]
    fn a_removed_or_replaced_lock_file_never_lets_a_second_writer_in() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let key = age::x25519::Identity::generate().to_public().to_string();
        super::super::commands::init(&root, &[key]).unwrap();
        let held = Store::open(&root).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, b"untouched").unwrap();
        for swap in ["removed", "a link", "a FIFO", "a new file"] {
            let lock = root.join(LOCK);
            let _ = std::fs::remove_file(&lock);
            match swap {
                "a link" => std::os::unix::fs::symlink(&elsewhere, &lock).unwrap(),
                "a FIFO" => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &lock,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap(),
                "a new file" => std::fs::write(&lock, b"").unwrap(),
                _ => {}
            }
            let second = Store::open_if_free(&root);
            let Err(e) = second else {
                panic!("{swap}: a second command took the store while it is held");
            };
            assert!(e.to_string().contains("in use"), "{swap}: {e}");
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"untouched");
        drop(held);
        let _ = std::fs::remove_file(root.join(LOCK));
        Store::open_if_free(&root).expect("free once the holder is done");
    }
}
