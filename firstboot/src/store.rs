//! The device store: each secret resealed to the device identity as a
//! standard age file, plus the manifest (no values) and the state (which
//! bundle was applied, for replay protection).
//!
//! Layout under `ROOT/var/lib/sealed-secrets/`:
//! ```text
//! identity                 the persisted device identity (see identity.rs)
//! .lock                    held by every command (one runner at a time)
//! current -> store-<id>    symlink, swapped atomically
//! store-<id>/manifest.json
//! store-<id>/state.json
//! store-<id>/signers.json  the signers a bundle pinned (when one did)
//! store-<id>/secrets/<name>.age
//! ```
//! A store directory is written completely and made durable under a
//! temporary name, renamed, and only then does `current` point to it. A crash
//! at any moment leaves `current` on a complete old or a complete new store.

use crate::fsutil::{self, failpoint};
use sealed_bundle::{Manifest, SecretEntry, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

pub const STORE_DIR: &str = "var/lib/sealed-secrets";
const CURRENT: &str = "current";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("store is damaged: {0}")]
    Damaged(String),
    #[error("secret {name}: age: {reason}")]
    Age { name: String, reason: String },
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// Which bundle the store came from, and which identity it is sealed to.
/// Fields added after the first release default, so older state files
/// still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Hex bundle id.
    pub bundle_id: String,
    /// The bundle's created-at, unix seconds.
    pub created_at: u64,
    /// Nanoseconds within `created_at`.
    #[serde(default)]
    pub created_nanos: u32,
    /// The bundle's sequence number (0: not set).
    #[serde(default)]
    pub sequence: u64,
    /// When the device applied it, unix seconds.
    pub applied_at: u64,
    /// The `age1…` recipient every store file is sealed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Where that identity came from (generated, ssh-host-key, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl State {
    /// The applied bundle's place in the order of bundles.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            sequence: self.sequence,
            seconds: self.created_at,
            nanos: self.created_nanos,
        }
    }
}

/// The signers a signed bundle pinned (`build-image bundle --set-signers`):
/// they replace the configuration's `signer` lines from then on, and are
/// carried into every later store until another bundle sets a list. Kept
/// in the store directory, so they change atomically with the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerList {
    /// `sealed-signer1…` public keys.
    pub signers: Vec<String>,
    /// The bundle that set them (hex id).
    pub set_by: String,
}

const SIGNERS_FILE: &str = "signers.json";

/// How long a command waits for another sealed-firstboot to finish.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A handle on the store directory of a root.
pub struct Store {
    root: PathBuf,
    dir: PathBuf,
}

/// The committed store, opened for reading.
pub struct Current {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub state: State,
    /// The signers a bundle pinned, if one did.
    pub signers: Option<SignerList>,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            dir: root.join(STORE_DIR),
        }
    }

    /// With `--root`, the store directory must not lead out of the tree.
    fn confined(&self) -> Result<(), StoreError> {
        fsutil::in_root(&self.root, STORE_DIR)
            .map(|_| ())
            .map_err(io_err("opening the store".into()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the device-wide exclusive lock (`.lock` in the store
    /// directory): every command that reads or writes the store, the
    /// identity or the boot partition's bundle holds it. Waits at most
    /// `wait`, calling `on_wait` once when another runner holds it.
    pub fn lock(
        &self,
        wait: std::time::Duration,
        on_wait: impl FnOnce(),
    ) -> Result<fsutil::Lock, StoreError> {
        self.confined()?;
        fsutil::create_dir_all_mode(&self.dir, 0o700)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        let path = self.dir.join(".lock");
        fsutil::lock_exclusive(&path, wait, on_wait)
            .map_err(io_err(format!("locking {}", path.display())))
    }

    /// The committed store, if any.
    pub fn current(&self) -> Result<Option<Current>, StoreError> {
        self.confined()?;
        let link = self.dir.join(CURRENT);
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("reading {}", link.display()))(e)),
        };
        let name = target
            .to_str()
            .filter(|n| n.starts_with("store-") && !n.contains('/'))
            .ok_or_else(|| {
                StoreError::Damaged(format!("{} points outside the store", link.display()))
            })?;
        let dir = self.dir.join(name);
        // Real directories, never links (which could lead out of a tree).
        for d in [dir.clone(), dir.join("secrets")] {
            if !fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                return Err(StoreError::Damaged(format!(
                    "{} is not a directory",
                    d.display()
                )));
            }
        }
        let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
        // The form only: where files may go is checked per secret at
        // every unseal, with the device's configuration of the day.
        manifest
            .validate_shape()
            .map_err(|e| StoreError::Damaged(e.to_string()))?;
        let state: State = read_json(&dir.join("state.json"))?;
        let signers_path = dir.join(SIGNERS_FILE);
        let signers = match std::fs::symlink_metadata(&signers_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            _ => {
                let list: SignerList = read_json(&signers_path)?;
                sealed_bundle::check_signers(&list.signers)
                    .map_err(|e| StoreError::Damaged(format!("{}: {e}", signers_path.display())))?;
                Some(list)
            }
        };
        Ok(Some(Current {
            dir,
            manifest,
            state,
            signers,
        }))
    }

    /// Reseal `values` to `recipient` into a new store, with `signers` (the
    /// signer list a bundle set, if any), and make it current. Old stores
    /// are removed afterwards.
    pub fn replace(
        &self,
        recipient: &age::x25519::Recipient,
        manifest: &Manifest,
        values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
        state: &State,
        signers: Option<&SignerList>,
    ) -> Result<(), StoreError> {
        self.confined()?;
        fsutil::create_dir_all_mode(&self.dir, 0o700)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        let final_name = format!("store-{}", state.bundle_id);
        let final_dir = self.dir.join(&final_name);
        // Private to this process; leftovers of dead runs are removed by
        // `remove_stale` under the lock.
        let tmp = self
            .dir
            .join(format!(".{final_name}.tmp-{}", std::process::id()));
        remove_dir_if_exists(&tmp)?;
        if final_dir.exists() {
            // A previous run renamed it but crashed before the swap: redo it
            // from scratch, it is not current.
            if self.current_name()?.as_deref() == Some(final_name.as_str()) {
                return Err(StoreError::Damaged(format!(
                    "{final_name} is already current"
                )));
            }
            remove_dir_if_exists(&final_dir)?;
        }
        let secrets = tmp.join("secrets");
        fsutil::create_dir_all_mode(&secrets, 0o700)
            .map_err(io_err(format!("creating {}", secrets.display())))?;
        for entry in manifest.entries() {
            let value = values.get(&entry.name).ok_or_else(|| {
                StoreError::Damaged(format!("secret {} has no value", entry.name))
            })?;
            let sealed = age::encrypt(recipient, value).map_err(|e| StoreError::Age {
                name: entry.name.clone(),
                reason: e.to_string(),
            })?;
            let path = secrets.join(format!("{}.age", entry.name));
            fsutil::write_new(&path, &sealed, 0o400)
                .map_err(io_err(format!("writing {}", path.display())))?;
            failpoint("store-secret-written");
        }
        fsutil::sync_dir(&secrets).map_err(io_err(format!("syncing {}", secrets.display())))?;
        write_json_new(&tmp.join("manifest.json"), manifest)?;
        write_json_new(&tmp.join("state.json"), state)?;
        if let Some(list) = signers {
            write_json_new(&tmp.join(SIGNERS_FILE), list)?;
        }
        fsutil::sync_dir(&tmp).map_err(io_err(format!("syncing {}", tmp.display())))?;
        failpoint("store-before-rename");
        fs::rename(&tmp, &final_dir).map_err(io_err(format!("renaming {}", tmp.display())))?;
        fsutil::sync_dir(&self.dir).map_err(io_err(format!("syncing {}", self.dir.display())))?;
        failpoint("store-before-swap");
        let link_tmp = self.dir.join(".current.tmp");
        let _ = fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(&final_name, &link_tmp)
            .map_err(io_err(format!("creating {}", link_tmp.display())))?;
        fs::rename(&link_tmp, self.dir.join(CURRENT))
            .map_err(io_err("swapping the current store".to_string()))?;
        fsutil::sync_dir(&self.dir).map_err(io_err(format!("syncing {}", self.dir.display())))?;
        failpoint("store-after-swap");
        self.remove_stale()
    }

    fn current_name(&self) -> Result<Option<String>, StoreError> {
        let link = self.dir.join(CURRENT);
        match fs::read_link(&link) {
            Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("reading {}", link.display()))(e)),
        }
    }

    /// Remove store directories that are not current, and leftover temp
    /// entries from an interrupted run.
    pub fn remove_stale(&self) -> Result<(), StoreError> {
        self.confined()?;
        let current = self.current_name()?;
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("listing {}", self.dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", self.dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_store = name.starts_with("store-") && Some(&name) != current.as_ref();
            let leftover = name.starts_with(".store-") || name == ".current.tmp";
            if stale_store || leftover {
                let path = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    remove_dir_if_exists(&path)?;
                } else {
                    fs::remove_file(&path)
                        .map_err(io_err(format!("removing {}", path.display())))?;
                }
            }
        }
        fsutil::sync_dir(&self.dir).map_err(io_err(format!("syncing {}", self.dir.display())))
    }
}

impl Current {
    /// Decrypt one secret with the device identity.
    pub fn decrypt(
        &self,
        identity: &age::x25519::Identity,
        entry: &SecretEntry,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let path = self.dir.join("secrets").join(format!("{}.age", entry.name));
        let limit = sealed_bundle::limits::MAX_SECRET_BYTES + 1024 * 1024;
        let sealed = sealed_bundle::io::read_regular_bounded(&path, limit)
            .map_err(|e| StoreError::Damaged(format!("cannot read {}: {e}", path.display())))?;
        age::decrypt(identity, &sealed)
            .map(Zeroizing::new)
            .map_err(|e| StoreError::Age {
                name: entry.name.clone(),
                reason: e.to_string(),
            })
    }

    /// Decrypt every secret of the manifest.
    pub fn decrypt_all(
        &self,
        identity: &age::x25519::Identity,
    ) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, StoreError> {
        self.manifest
            .entries()
            .map(|e| Ok((e.name.clone(), self.decrypt(identity, e)?)))
            .collect()
    }
}

fn remove_dir_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let limit = 2 * sealed_bundle::limits::MAX_MANIFEST_BYTES;
    let bytes = sealed_bundle::io::read_regular_bounded(path, limit)
        .map_err(|e| StoreError::Damaged(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Damaged(format!("{}: {e}", path.display())))
}

fn write_json_new<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StoreError::Damaged(format!("encoding {}: {e}", path.display())))?;
    bytes.push(b'\n');
    fsutil::write_new(path, &bytes, 0o600).map_err(io_err(format!("writing {}", path.display())))
}
