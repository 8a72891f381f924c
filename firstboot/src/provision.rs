//! First boot (and re-provisioning): open the bundle found on the boot
//! partition, reseal it to the device identity, replace the store, and only
//! then wipe bundle and key from the boot partition.

use crate::bundle::{self, BundleError, Header, ImageKey, OpenWith};
use crate::fsutil::{self, failpoint};
use crate::identity::{self, IdentityError};
use crate::store::{State, Store, StoreError};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Directory on the boot partition that holds the bundle and the key.
pub const BOOT_SUBDIR: &str = "sealed-secrets";
pub const BUNDLE_FILE: &str = "bundle";
pub const KEY_FILE: &str = "image.key";
/// Candidate boot partition mount points, relative to the root, in order.
pub const BOOT_DIR_CANDIDATES: [&str; 3] = ["boot/efi", "boot/firmware", "boot"];
/// Optional configuration file, relative to the root.
pub const CONFIG_FILE: &str = "etc/sealed-firstboot.conf";

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("image key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("a bundle is present at {bundle} but its image key is not at {key}: copy the build's NAME.key there (or use `build-image flash`, which does)")]
    KeyMissing { bundle: PathBuf, key: PathBuf },
    #[error("refusing bundle {bundle_id} created at {created_at}: the store already holds bundle {applied_id} created at {applied_at}; an older or equally old bundle would roll secrets back")]
    Replay {
        bundle_id: String,
        created_at: u64,
        applied_id: String,
        applied_at: u64,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No bundle on the boot partition.
    NoBundle,
    /// A new bundle was applied; the bundle and key are wiped.
    Applied { bundle_id: String, secrets: usize },
    /// The bundle was applied before a crash; only the wipe was left to do.
    AlreadyApplied { bundle_id: String },
}

/// Resolve the boot partition directory (relative to `root`): the explicit
/// choice, else `boot_dir=` in `/etc/sealed-firstboot.conf`, else the first
/// candidate holding a `sealed-secrets/` directory, else the first existing
/// candidate.
pub fn boot_dir(root: &Path, explicit: Option<&Path>) -> Result<PathBuf, ProvisionError> {
    let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    if let Some(p) = explicit {
        return Ok(rel(p));
    }
    let conf = root.join(CONFIG_FILE);
    match std::fs::read_to_string(&conf) {
        Ok(text) => {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                match line.split_once('=') {
                    Some(("boot_dir", v)) if v.trim().starts_with('/') => {
                        return Ok(rel(Path::new(v.trim())))
                    }
                    _ => {
                        return Err(ProvisionError::Config {
                            path: conf,
                            reason: format!(
                                "line {}: expected boot_dir=/absolute/path, found {line:?}",
                                n + 1
                            ),
                        })
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ProvisionError::Io {
                context: format!("reading {}", conf.display()),
                source: e,
            })
        }
    }
    let candidates: Vec<PathBuf> = BOOT_DIR_CANDIDATES.iter().map(|c| root.join(c)).collect();
    Ok(candidates
        .iter()
        .find(|c| c.join(BOOT_SUBDIR).is_dir())
        .or_else(|| candidates.iter().find(|c| c.is_dir()))
        .unwrap_or(&candidates[0])
        .clone())
}

/// Apply the bundle in `boot_dir` (absolute, already under the root), if any.
pub fn provision(root: &Path, boot_dir: &Path, now: u64) -> Result<Outcome, ProvisionError> {
    // Finish the clean-up of a run interrupted after its store switch.
    let store = Store::new(root);
    store.remove_stale()?;
    let sub = boot_dir.join(BOOT_SUBDIR);
    let bundle_path = sub.join(BUNDLE_FILE);
    let key_path = sub.join(KEY_FILE);
    if !bundle_path.exists() {
        // A key without its bundle is of no use and must not stay readable.
        wipe(&key_path)?;
        return Ok(Outcome::NoBundle);
    }
    let bundle_err = |source| ProvisionError::Bundle {
        path: bundle_path.clone(),
        source,
    };
    let bytes = bundle::read_bundle_file(&bundle_path).map_err(bundle_err)?;
    let header = Header::parse(&bytes).map_err(bundle_err)?;
    let bundle_id = header.bundle_id_hex();

    if let Some(current) = store.current()? {
        if current.state.bundle_id == bundle_id {
            finish_wipe(&bundle_path, &key_path)?;
            return Ok(Outcome::AlreadyApplied { bundle_id });
        }
        if header.created_at <= current.state.created_at {
            return Err(ProvisionError::Replay {
                bundle_id,
                created_at: header.created_at,
                applied_id: current.state.bundle_id,
                applied_at: current.state.created_at,
            });
        }
    }

    let device = identity::load_or_create(root)?;
    let opened = if header.is_age_recipient() {
        bundle::open_with(&bytes, OpenWith::Identity(&device.identity)).map_err(bundle_err)?
    } else {
        if !key_path.exists() {
            return Err(ProvisionError::KeyMissing {
                bundle: bundle_path,
                key: key_path,
            });
        }
        let key = ImageKey::from_file(&key_path).map_err(|source| ProvisionError::Key {
            path: key_path.clone(),
            source,
        })?;
        bundle::open(&bytes, &key).map_err(bundle_err)?
    };
    let state = State {
        bundle_id: bundle_id.clone(),
        created_at: header.created_at,
        applied_at: now,
    };
    store.replace(
        &device.recipient(),
        &opened.contents.manifest,
        &opened.contents.values,
        &state,
    )?;
    failpoint("provision-before-wipe");
    finish_wipe(&bundle_path, &key_path)?;
    Ok(Outcome::Applied {
        bundle_id,
        secrets: opened.contents.manifest.secrets.len(),
    })
}

/// Wipe the key first (it is the secret part), then the bundle.
fn finish_wipe(bundle: &Path, key: &Path) -> Result<(), ProvisionError> {
    wipe(key)?;
    failpoint("provision-between-wipes");
    wipe(bundle)?;
    if let Some(dir) = bundle.parent() {
        // Leave no empty directory behind; a non-empty one holds user files.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

fn wipe(path: &Path) -> Result<(), ProvisionError> {
    fsutil::shred_and_remove(path)
        .map(|_| ())
        .map_err(|source| ProvisionError::Io {
            context: format!("wiping {}", path.display()),
            source,
        })
}
