//! Where things live in a store directory, the store lock, and atomic writes
//! (temporary file in the same directory, fsync, rename, directory fsync).

use super::names::Scope;
use super::{io, StoreError};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const RECIPIENTS: &str = "recipients.txt";
pub const AUDIT: &str = "audit.jsonl";
pub const SECRETS: &str = "secrets";
pub const META: &str = "meta.toml";
/// Staging area for multi-file changes (same filesystem, so renames are atomic).
pub const TMP: &str = ".tmp";
pub const LOCK: &str = ".lock";

const GITIGNORE: &str = "# build-image store: local lock and staging files\n.lock\n.tmp/\n";
/// Version files are binary: git shows them as changed, never as text diffs.
const GITATTRIBUTES: &str = "*.age binary\n";

/// An open store, locked exclusively for as long as it lives.
pub struct Store {
    root: PathBuf,
    _lock: File,
}

impl Store {
    /// Open an existing store (it has `recipients.txt`) and take its lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        if !root.join(RECIPIENTS).is_file() {
            return Err(StoreError::NotAStore {
                path: root.to_path_buf(),
            });
        }
        Self::locked(root)
    }

    /// Create a new store with the given recipients file text. Refuses a
    /// directory that already is a store.
    pub fn create(root: &Path, recipients_text: &str) -> Result<Store, StoreError> {
        if root.join(RECIPIENTS).exists() {
            return Err(StoreError::AlreadyInitialised {
                path: root.to_path_buf(),
            });
        }
        std::fs::create_dir_all(root.join(SECRETS))
            .map_err(io(format!("creating {}", root.display())))?;
        let store = Self::locked(root)?;
        if root.join(RECIPIENTS).exists() {
            return Err(StoreError::AlreadyInitialised {
                path: root.to_path_buf(),
            });
        }
        write_atomic(&root.join(".gitignore"), GITIGNORE.as_bytes(), 0o644)?;
        write_atomic(
            &root.join(".gitattributes"),
            GITATTRIBUTES.as_bytes(),
            0o644,
        )?;
        let audit = root.join(AUDIT);
        if !audit.exists() {
            write_atomic(&audit, b"", 0o644)?;
        }
        // Last: its presence is what makes the directory a store.
        write_atomic(&root.join(RECIPIENTS), recipients_text.as_bytes(), 0o644)?;
        Ok(store)
    }

    fn locked(root: &Path) -> Result<Store, StoreError> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(root.join(LOCK))
            .map_err(io(format!("opening the lock of {}", root.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            StoreError::Io {
                context: format!("locking {}", root.display()),
                cause: e.into(),
            }
        })?;
        // Holding the lock, nobody else stages: leftovers of a crash go.
        let _ = std::fs::remove_dir_all(root.join(TMP));
        Ok(Store {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn recipients_file(&self) -> PathBuf {
        self.root.join(RECIPIENTS)
    }
    pub fn audit_file(&self) -> PathBuf {
        self.root.join(AUDIT)
    }
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join(SECRETS)
    }
    pub fn name_dir(&self, name: &str) -> PathBuf {
        self.secrets_dir().join(name)
    }
    pub fn meta_file(&self, name: &str) -> PathBuf {
        self.name_dir(name).join(META)
    }
    pub fn version_file(&self, name: &str, scope: &Scope, version: u32) -> PathBuf {
        version_path(&self.name_dir(name), scope, version)
    }

    /// A fresh, empty staging directory inside the store (removed on drop).
    pub fn staging(&self) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.root.join(TMP);
        std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&tmp)
            .map_err(io(format!(
                "creating a staging directory in {}",
                tmp.display()
            )))
    }

    /// The names present, sorted.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.secrets_dir();
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if super::validate_name(&name).is_ok() && entry.path().join(META).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// `DIR/SCOPE/vN.age` under a name directory.
pub fn version_path(name_dir: &Path, scope: &Scope, version: u32) -> PathBuf {
    name_dir
        .join(scope.dir_name())
        .join(format!("v{version}.age"))
}

/// Write a file atomically: temporary file beside it, fsync, rename over,
/// fsync of the directory. A failure leaves the old file (or none).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(io(format!("writing {}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| io(format!("renaming into {}", path.display()))(e.error))?;
    sync_dir(dir)
}

/// fsync a directory so that renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}
