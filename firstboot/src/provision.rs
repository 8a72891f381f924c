//! First boot (and re-provisioning): open the bundle found on the boot
//! partition, reseal it to the device identity, replace the store, and only
//! then wipe bundle and key from the boot partition.
//!
//! The caller holds the device lock ([`crate::store::Store::lock`]).
//!
//! Who signed a bundle is checked first, before anything is decrypted
//! ([`crate::trust`]): with signers pinned, an unsigned bundle or one
//! signed by anyone else is refused, and one found on the boot partition
//! is wiped with its key (it can never be applied here, must not block the
//! next legitimate one, and must not stay in clear on the partition).
//!
//! Wiping is crash-safe: a file is first renamed to `NAME.wipe`, then
//! overwritten with zeros, fsynced and removed; a `.wipe` file found later
//! (its bundle had reached the store before the rename) is wiped again. A
//! bundle whose first bytes are zeros (a wipe interrupted by an older
//! version) is recognised as such and removed too.

use crate::config::{self, Config, ConfigError, IdentityMode};
use crate::fsutil::{self, failpoint};
use crate::identity::{self, IdentityError};
use crate::store::{Current, SignerList, State, Store, StoreError};
use crate::trust::Trust;
use sealed_bundle::{
    self as bundle, BundleError, Contents, Header, ImageKey, Manifest, OpenWith, Stamp,
};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub use sealed_bundle::boot::{BUNDLE_FILE, KEY_FILE, SUBDIR as BOOT_SUBDIR};
/// Suffix of a file being wiped.
pub const WIPE_SUFFIX: &str = ".wipe";
/// Candidate boot partition mount points, relative to the root, in order.
pub const BOOT_DIR_CANDIDATES: [&str; 3] = ["boot/efi", "boot/firmware", "boot"];
/// Optional configuration file, relative to the root.
pub const CONFIG_FILE: &str = config::CONFIG_FILE;

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error("bundle {path}: {source} (the bundle and its key are kept)")]
    Bundle { path: PathBuf, source: BundleError },
    /// Refused for who signed it: nothing was decrypted, the store is as
    /// it was.
    #[error("refused bundle {bundle_id}: {source}{}; the store is unchanged", if *.wiped { " (the bundle and its key were wiped from the boot partition)" } else { "" })]
    Untrusted {
        bundle_id: String,
        source: BundleError,
        wiped: bool,
    },
    #[error("image key {path}: {source} (the bundle and its key are kept)")]
    Key { path: PathBuf, source: BundleError },
    #[error("a bundle is present at {bundle} but its image key is not at {key}: copy the build's NAME.key there (or use `build-image flash`, which does)")]
    KeyMissing { bundle: PathBuf, key: PathBuf },
    #[error("refused bundle {bundle_id} sealed at {stamp}: the store already holds bundle {applied_id} sealed at {applied_stamp}; an older or equally old bundle would roll secrets back{}", if *.wiped { " (the refused bundle and its key were wiped)" } else { "" })]
    Replay {
        bundle_id: String,
        stamp: Stamp,
        applied_id: String,
        applied_stamp: Stamp,
        wiped: bool,
    },
    #[error("bundle {bundle_id} is partial and {}: {source} (the store is unchanged)", if *.empty_store { "the store is empty, so it is all there is, and as a whole it is invalid" } else { "does not fit the secrets in the store" })]
    Merge {
        bundle_id: String,
        source: BundleError,
        /// Checked on its own, as a full bundle (nothing to merge with).
        empty_store: bool,
    },
    #[error("an update bundle sealed with an image key needs that key: pass --key FILE")]
    KeyNeeded,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}; the bundle and its key are kept")]
    NoIdentity(IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No bundle on the boot partition.
    NoBundle,
    /// A new bundle was applied; the bundle and key are wiped. `notes`:
    /// what the journal should say (how a new identity was bound).
    Applied {
        bundle_id: String,
        secrets: usize,
        notes: Vec<String>,
    },
    /// The bundle was applied before a crash; only the wipe was left to do.
    AlreadyApplied { bundle_id: String },
    /// What was on the boot partition was the remains of an interrupted
    /// wipe; it is gone now.
    WipedLeftover,
}

/// Resolve the boot partition directory (relative to `root`): the explicit
/// choice, else `boot_dir` in `/etc/sealed-firstboot.conf`, else the first
/// candidate holding a `sealed-secrets/` directory, else the first existing
/// candidate.
pub fn boot_dir(root: &Path, explicit: Option<&Path>) -> Result<PathBuf, ProvisionError> {
    let config = config::load(root)?;
    Ok(boot_dir_with(root, explicit, &config))
}

/// [`boot_dir`] with an already loaded configuration.
pub fn boot_dir_with(root: &Path, explicit: Option<&Path>, config: &Config) -> PathBuf {
    let rel = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    if let Some(p) = explicit.or(config.boot_dir.as_deref()) {
        return rel(p);
    }
    // A real directory, not a link (with --root, a link may lead out).
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let candidates: Vec<PathBuf> = BOOT_DIR_CANDIDATES.iter().map(|c| root.join(c)).collect();
    candidates
        .iter()
        .find(|c| is_dir(c) && is_dir(&c.join(BOOT_SUBDIR)))
        .or_else(|| candidates.iter().find(|c| is_dir(c)))
        .unwrap_or(&candidates[0])
        .clone()
}

/// Apply the bundle in `boot_dir` (absolute, already under the root), if any.
pub fn provision(root: &Path, boot_dir: &Path, now: u64) -> Result<Outcome, ProvisionError> {
    let config = config::load(root)?;
    provision_with(root, boot_dir, now, &config)
}

/// [`provision`] with an already loaded configuration.
pub fn provision_with(
    root: &Path,
    boot_dir: &Path,
    now: u64,
    config: &Config,
) -> Result<Outcome, ProvisionError> {
    let sub = boot_dir.join(BOOT_SUBDIR);
    // `sealed-secrets/` is ours: a real directory, never a link, on the
    // device itself as under --root (through a link, the wipe would
    // destroy files named `bundle` or `image.key` wherever it points).
    // Checked before anything else is touched.
    match std::fs::symlink_metadata(&sub) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(ProvisionError::Io {
                context: "opening the boot partition".into(),
                source: std::io::Error::other(format!(
                    "{} is a symbolic link, which is never followed (the bundle and key go in a real directory there)",
                    sub.display()
                )),
            })
        }
        Ok(m) if !m.is_dir() => {
            return Err(ProvisionError::Io {
                context: "opening the boot partition".into(),
                source: std::io::Error::other(format!("{} is not a directory", sub.display())),
            })
        }
        _ => {}
    }
    // Finish the clean-up of a run interrupted after its store switch.
    let store = Store::new(root);
    store.remove_stale()?;
    // With --root, the boot directory must not lead out of the tree.
    if let Ok(rel) = sub.strip_prefix(root) {
        fsutil::in_root(root, &rel.to_string_lossy()).map_err(|source| ProvisionError::Io {
            context: "opening the boot partition".into(),
            source,
        })?;
    }
    let bundle_path = sub.join(BUNDLE_FILE);
    let key_path = sub.join(KEY_FILE);
    // Files renamed for wiping belong to a bundle the store already holds.
    for path in [&key_path, &bundle_path] {
        shred(&wipe_name(path))?;
    }
    if !exists(&bundle_path) {
        // A key without its bundle is of no use and must not stay readable.
        wipe(&key_path)?;
        remove_if_empty(&sub);
        return Ok(Outcome::NoBundle);
    }
    let bundle_err = |source| ProvisionError::Bundle {
        path: bundle_path.clone(),
        source,
    };
    let bytes = bundle::read_bundle_file(&bundle_path).map_err(bundle_err)?;
    let header = match Header::parse(&bytes) {
        Ok(h) => h,
        Err(BundleError::BadMagic | BundleError::TruncatedHeader { .. })
            if is_wipe_leftover(&bytes) =>
        {
            finish_wipe(&bundle_path, &key_path)?;
            return Ok(Outcome::WipedLeftover);
        }
        Err(e) => return Err(bundle_err(e)),
    };
    let bundle_id = header.bundle_id_hex();

    let current = store.current()?;
    if let Some(current) = &current {
        if current.state.bundle_id == bundle_id {
            finish_wipe(&bundle_path, &key_path)?;
            return Ok(Outcome::AlreadyApplied { bundle_id });
        }
    }

    // Who signed it, before anything is decrypted. A bundle refused for
    // that can never be applied here: it is wiped with its key.
    let trust = Trust::effective(config, current.as_ref());
    let policy = trust.policy(config);
    if let Err(source) = bundle::verify(&bytes, &policy) {
        if source.is_signature_refusal() {
            finish_wipe(&bundle_path, &key_path)?;
            return Err(ProvisionError::Untrusted {
                bundle_id,
                source,
                wiped: true,
            });
        }
        return Err(bundle_err(source));
    }
    // Open (and so authenticate) before judging the order: a bundle
    // refused as a replay is then wiped, anything else is kept.
    let opened = open_bundle(
        root,
        &bytes,
        &header,
        config,
        current.as_ref(),
        &policy,
        || {
            if !exists(&key_path) {
                return Err(ProvisionError::KeyMissing {
                    bundle: bundle_path.clone(),
                    key: key_path.clone(),
                });
            }
            ImageKey::from_file(&key_path).map_err(|source| ProvisionError::Key {
                path: key_path.clone(),
                source,
            })
        },
    )
    .map_err(|e| match e {
        ProvisionError::Bundle { source, .. } => bundle_err(source),
        other => other,
    })?;
    if let Err(e) = check_order(&header, current.as_ref(), true) {
        finish_wipe(&bundle_path, &key_path)?;
        return Err(e);
    }
    let (secrets, notes) = commit(root, &store, opened, now, config, current.as_ref())?;
    failpoint("provision-before-wipe");
    finish_wipe(&bundle_path, &key_path)?;
    Ok(Outcome::Applied {
        bundle_id,
        secrets,
        notes,
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The bundle is now in the store.
    Applied {
        bundle_id: String,
        secrets: usize,
        partial: bool,
        notes: Vec<String>,
    },
    /// The store already holds this very bundle: nothing to do.
    AlreadyApplied { bundle_id: String },
}

/// Apply an update bundle from anywhere (a file, standard input) on a
/// running device, with the same rules as provisioning: signed by a pinned
/// signer (checked first), authenticated with `key` (image-key bundles) or
/// the device identity (recipient bundles), newer than the store, validated
/// as a whole, crash-safe. A partial bundle replaces only the secrets it
/// lists. The caller holds the device lock.
pub fn apply(
    root: &Path,
    bytes: &[u8],
    key: Option<&ImageKey>,
    now: u64,
    config: &Config,
) -> Result<Applied, ProvisionError> {
    let store = Store::new(root);
    store.remove_stale()?;
    let bundle_err = |source| ProvisionError::Bundle {
        path: PathBuf::from("(update bundle)"),
        source,
    };
    if bytes.len() as u64 > bundle::limits::MAX_BUNDLE_BYTES {
        return Err(bundle_err(BundleError::TooLarge {
            size: bytes.len() as u64,
            limit: bundle::limits::MAX_BUNDLE_BYTES,
        }));
    }
    let header = Header::parse(bytes).map_err(bundle_err)?;
    let bundle_id = header.bundle_id_hex();
    let current = store.current()?;
    let trust = Trust::effective(config, current.as_ref());
    let policy = trust.policy(config);
    bundle::verify(bytes, &policy).map_err(|source| {
        if source.is_signature_refusal() {
            ProvisionError::Untrusted {
                bundle_id: bundle_id.clone(),
                source,
                wiped: false,
            }
        } else {
            bundle_err(source)
        }
    })?;
    if current
        .as_ref()
        .is_some_and(|c| c.state.bundle_id == bundle_id)
    {
        return Ok(Applied::AlreadyApplied { bundle_id });
    }
    let opened = open_bundle(
        root,
        bytes,
        &header,
        config,
        current.as_ref(),
        &policy,
        || key.cloned().ok_or(ProvisionError::KeyNeeded),
    )?;
    check_order(&header, current.as_ref(), false)?;
    let partial = opened.contents.manifest.partial;
    let (secrets, notes) = commit(root, &store, opened, now, config, current.as_ref())?;
    Ok(Applied::Applied {
        bundle_id,
        secrets,
        partial,
        notes,
    })
}

/// Open (and so authenticate) a bundle that `policy` accepts: with the
/// image key `key` gives (asked for only when the bundle is sealed with
/// one), or with the device identity. Identity candidates, in order: the
/// persisted identity; then, only when that one does not open it, the one
/// the SSH host key derives, and only in `identity = ssh-host-key` mode or
/// for the one-time migration of a store written before identities were
/// persisted (a controller sealed to `ssh-keyscan` output then). A host
/// key that cannot be read is no candidate.
fn open_bundle(
    root: &Path,
    bytes: &[u8],
    header: &Header,
    config: &Config,
    current: Option<&Current>,
    policy: &bundle::Policy,
    key: impl FnOnce() -> Result<ImageKey, ProvisionError>,
) -> Result<bundle::Opened, ProvisionError> {
    let bundle_err = |source| ProvisionError::Bundle {
        path: PathBuf::from("(update bundle)"),
        source,
    };
    if !header.is_age_recipient() {
        let key = key()?;
        return bundle::open_with(bytes, OpenWith::ImageKey(&key), policy).map_err(bundle_err);
    }
    let persisted = identity::load(root)?;
    let no_candidate = || BundleError::WrongKey {
        expected: header.key_id.to_string(),
        actual: "none (no device identity yet)".into(),
    };
    let mut result = match &persisted {
        Some(p) => bundle::open_with(bytes, OpenWith::Identity(&p.identity), policy),
        None => Err(no_candidate()),
    };
    let migrating = persisted.is_none() && current.is_some_and(|c| c.state.recipient.is_none());
    let derive = config.identity == IdentityMode::SshHostKey || migrating;
    if derive && matches!(result, Err(BundleError::WrongKey { .. })) {
        if let Ok(Some(derived)) = identity::ssh_derived(root) {
            result = bundle::open_with(bytes, OpenWith::Identity(&derived), policy);
        }
    }
    result.map_err(bundle_err)
}

/// A bundle must be newer than the store: `(sequence, sealing time)`.
fn check_order(
    header: &Header,
    current: Option<&Current>,
    wiped: bool,
) -> Result<(), ProvisionError> {
    let Some(current) = current else {
        return Ok(());
    };
    let applied = current.state.stamp();
    if header.stamp() <= applied {
        return Err(ProvisionError::Replay {
            bundle_id: header.bundle_id_hex(),
            stamp: header.stamp(),
            applied_id: current.state.bundle_id.clone(),
            applied_stamp: applied,
            wiped,
        });
    }
    Ok(())
}

/// Reseal opened contents to the persisted identity (created now if there
/// is none) and make them the current store. A partial bundle is merged
/// into the secrets already in the store first; on an empty store it is a
/// full bundle, checked as one. A signer list the bundle carries becomes
/// the pinned list, kept with the new store (else the current list is
/// carried over). Returns how many entries (secrets and templates) the
/// bundle held, and what the journal should say. A device identity that
/// cannot be created (no usable TPM2 for `identity = tpm2`) fails here,
/// before the store changes: the bundle is kept.
fn commit(
    root: &Path,
    store: &Store,
    opened: bundle::Opened,
    now: u64,
    config: &Config,
    current: Option<&Current>,
) -> Result<(usize, Vec<String>), ProvisionError> {
    let bundle::Opened { header, contents } = opened;
    let secrets = contents.manifest.entries().count();
    let signers = match &contents.manifest.signers {
        Some(list) => Some(SignerList {
            signers: list.clone(),
            set_by: header.bundle_id_hex(),
        }),
        None => current.and_then(|c| c.signers.clone()),
    };
    let paths = config.path_policy();
    let contents = match current {
        Some(current) if contents.manifest.partial => {
            merge(root, config, current, contents, &header)?
        }
        _ => {
            let full = Contents {
                manifest: Manifest {
                    partial: false,
                    signers: None,
                    ..contents.manifest
                },
                values: contents.values,
            };
            // A partial bundle on an empty store is all there will be:
            // every template must render from it alone.
            full.validate(&paths)
                .map_err(|source| ProvisionError::Merge {
                    bundle_id: header.bundle_id_hex(),
                    source,
                    empty_store: true,
                })?;
            full
        }
    };
    let device = identity::load_or_create(root, config).map_err(ProvisionError::NoIdentity)?;
    let mut notes: Vec<String> = device.note.clone().into_iter().collect();
    if device.created {
        notes.push(format!(
            "created the device identity {} ({})",
            device.recipient(),
            device.binding.describe()
        ));
    }
    let state = State {
        bundle_id: header.bundle_id_hex(),
        created_at: header.created_at,
        created_nanos: header.created_nanos,
        sequence: header.sequence,
        applied_at: now,
        recipient: Some(device.recipient().to_string()),
        identity: device.source.map(|s| s.as_str().to_owned()),
    };
    store.replace(
        &device.recipient(),
        &contents.manifest,
        &contents.values,
        &state,
        signers.as_ref(),
    )?;
    Ok((secrets, notes))
}

/// The store's secrets with those of a partial bundle replacing (or
/// adding to) them, checked as a whole.
fn merge(
    root: &Path,
    config: &Config,
    current: &Current,
    update: Contents,
    header: &Header,
) -> Result<Contents, ProvisionError> {
    let identity = crate::unseal::store_identity(root, current, config.identity, &mut Vec::new())
        .map_err(|e| match e {
        crate::unseal::UnsealError::Store(e) => ProvisionError::Store(e),
        crate::unseal::UnsealError::Identity(e) => ProvisionError::Identity(e),
        crate::unseal::UnsealError::Config(e) => ProvisionError::Config(e),
        crate::unseal::UnsealError::Runtime(e) => ProvisionError::Io {
            context: "reading the store".into(),
            source: std::io::Error::other(e.to_string()),
        },
    })?;
    let replaced: std::collections::BTreeSet<String> =
        update.manifest.entries().map(|e| e.name.clone()).collect();
    let keep = |e: &&bundle::SecretEntry| !replaced.contains(&e.name);
    // Only what is kept is decrypted: a partial bundle may replace a
    // secret whose store file is damaged. One that is kept must open, or
    // the merge would lose it.
    let mut values = std::collections::BTreeMap::new();
    for e in current.manifest.entries().filter(keep) {
        values.insert(e.name.clone(), current.decrypt(&identity, e)?);
    }
    let mut manifest = Manifest {
        secrets: current
            .manifest
            .secrets
            .iter()
            .filter(keep)
            .cloned()
            .collect(),
        templates: current
            .manifest
            .templates
            .iter()
            .filter(keep)
            .cloned()
            .collect(),
        partial: false,
        signers: None,
    };
    let Contents {
        manifest: new,
        values: new_values,
    } = update;
    manifest.secrets.extend(new.secrets);
    manifest.templates.extend(new.templates);
    values.extend(new_values);
    let merged = Contents { manifest, values };
    merged
        .validate(&config.path_policy())
        .map_err(|source| ProvisionError::Merge {
            bundle_id: header.bundle_id_hex(),
            source,
            empty_store: false,
        })?;
    Ok(merged)
}

/// A file whose first bytes are zeros is what an interrupted overwrite
/// leaves; no bundle starts that way (the magic is not zero).
fn is_wipe_leftover(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().take(bundle::MAGIC.len()).all(|&b| b == 0)
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn wipe_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(WIPE_SUFFIX);
    path.with_file_name(name)
}

/// Wipe the key first (it is the secret part), then the bundle.
fn finish_wipe(bundle: &Path, key: &Path) -> Result<(), ProvisionError> {
    wipe(key)?;
    failpoint("provision-between-wipes");
    wipe(bundle)?;
    if let Some(dir) = bundle.parent() {
        remove_if_empty(dir);
    }
    Ok(())
}

/// Leave no empty `sealed-secrets/` behind; a non-empty one holds user files.
fn remove_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Rename to `NAME.wipe` (so a crash mid-overwrite is recognised), then
/// overwrite, fsync and remove.
fn wipe(path: &Path) -> Result<(), ProvisionError> {
    if !exists(path) {
        return Ok(());
    }
    let target = wipe_name(path);
    let io = |context: String| move |source| ProvisionError::Io { context, source };
    std::fs::rename(path, &target).map_err(io(format!("renaming {}", path.display())))?;
    if let Some(dir) = path.parent() {
        fsutil::sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
    }
    failpoint("provision-wipe-renamed");
    shred(&target)
}

fn shred(path: &Path) -> Result<(), ProvisionError> {
    fsutil::shred_and_remove(path)
        .map(|_| ())
        .map_err(|source| ProvisionError::Io {
            context: format!("wiping {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the device itself (root `/`, where the `--root` confinement
    /// does not apply), `<boot>/sealed-secrets` as a symbolic link is
    /// refused like under `--root`, before anything is read, renamed or
    /// wiped: through it, the wipe would destroy files named `image.key`
    /// or `bundle` wherever it points. Checked first, so this test touches
    /// nothing of this machine's.
    #[test]
    fn a_linked_sealed_secrets_directory_is_refused_on_the_device_too() {
        let boot = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(KEY_FILE), b"not yours to wipe").unwrap();
        std::fs::write(elsewhere.path().join(BUNDLE_FILE), b"nor this").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), boot.path().join(BOOT_SUBDIR)).unwrap();
        let err = provision_with(Path::new("/"), boot.path(), 0, &Config::default())
            .expect_err("a linked sealed-secrets/ must be refused");
        let msg = err.to_string();
        assert!(msg.contains("symbolic link"), "{msg}");
        assert!(msg.contains(BOOT_SUBDIR), "{msg}");
        for f in [KEY_FILE, BUNDLE_FILE] {
            assert!(
                elsewhere.path().join(f).exists(),
                "{f} was wiped through the link"
            );
        }
        // A file there, or anything but a directory, is refused too.
        std::fs::remove_file(boot.path().join(BOOT_SUBDIR)).unwrap();
        std::fs::write(boot.path().join(BOOT_SUBDIR), b"x").unwrap();
        let err = provision_with(Path::new("/"), boot.path(), 0, &Config::default())
            .expect_err("a file at sealed-secrets must be refused");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
