//! Secrets handed to systemd as credentials, at every unseal:
//!
//! - `credential = "NAME"`: `/run/credstore/NAME` (ramfs, root, 0400; see
//!   [`crate::runtime`]'s credstore), for `LoadCredential=NAME`.
//! - `credential-encrypted = "NAME"`: `/etc/credstore.encrypted/NAME`,
//!   encrypted on the device by `systemd-creds encrypt --name=NAME` with
//!   the keys `credential_key` names (default `host+tpm2` with
//!   `identity = tpm2`, else `host`) and, with a TPM2, the configured PCRs
//!   (default none), for `LoadCredentialEncrypted=NAME` and for services
//!   that start before sealed-firstboot. It is written again only when the
//!   store changed (a new bundle) or the file is missing, and removed when
//!   its secret leaves the store; `/var/lib/sealed-secrets/credentials.json`
//!   records which names sealed-firstboot wrote for which bundle (names
//!   only, no value, no hash of one).
//!
//! A credential that cannot be written fails alone, named with its secret.
//! The credentials of a secret still in the store that failed at this
//! unseal stay as they were: only a secret leaving the store removes them.

use crate::config::Config;
use crate::fsutil;
use crate::identity::tpm2;
use crate::runtime::{self, Credential, RuntimeError, UnsealOptions};
use sealed_bundle::{validate_credential_name, SecretEntry};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where encrypted credentials go, relative to the root.
pub const ENCRYPTED_DIR: &str = "etc/credstore.encrypted";
/// The record of the encrypted credentials written, relative to the root.
pub const ENCRYPTED_STATE: &str = "var/lib/sealed-secrets/credentials.json";
const STATE_MAX_BYTES: u64 = 1024 * 1024;

/// What the credentials of one unseal came to.
#[derive(Debug, Default)]
pub struct CredentialsReport {
    /// `/run/credstore` names written.
    pub plain: Vec<String>,
    /// `/etc/credstore.encrypted` names written now (unchanged ones are
    /// not rewritten).
    pub encrypted: Vec<String>,
    /// Names removed from either place (plain ones as `NAME`, encrypted
    /// ones as `NAME (encrypted)`).
    pub removed: Vec<String>,
    /// `(secret, why)`.
    pub failed: Vec<(String, String)>,
    /// What the journal should say.
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptedState {
    version: u32,
    /// The store (bundle id) the files were written from.
    bundle_id: String,
    /// Credential name → the secret it holds.
    credentials: BTreeMap<String, String>,
}

/// Write the credentials the unsealed entries ask for; `values` holds the
/// bytes of every entry that was unsealed (secrets and rendered
/// templates), `bundle_id` names the store they came from.
pub fn write(
    root: &Path,
    config: &Config,
    opts: &UnsealOptions,
    entries: &[(&SecretEntry, &[u8])],
    bundle_id: &str,
    kept: &BTreeSet<String>,
) -> Result<CredentialsReport, RuntimeError> {
    let mut report = CredentialsReport::default();
    let plain: Vec<Credential<'_>> = entries
        .iter()
        .filter_map(|(e, v)| {
            e.credential.as_deref().map(|name| Credential {
                name,
                secret: &e.name,
                value: v,
            })
        })
        .collect();
    let r = runtime::write_credentials(root, &plain, opts, kept)?;
    report.plain = r.written;
    report.removed = r.removed;
    report.failed = r.failed;
    let encrypted: Vec<(&str, &SecretEntry, &[u8])> = entries
        .iter()
        .filter_map(|(e, v)| e.credential_encrypted.as_deref().map(|n| (n, *e, *v)))
        .collect();
    write_encrypted(root, config, &encrypted, bundle_id, kept, &mut report);
    Ok(report)
}

fn write_encrypted(
    root: &Path,
    config: &Config,
    wanted: &[(&str, &SecretEntry, &[u8])],
    bundle_id: &str,
    kept: &BTreeSet<String>,
    report: &mut CredentialsReport,
) {
    let dir = match fsutil::in_root(root, ENCRYPTED_DIR) {
        Ok(d) => d,
        Err(e) => {
            for (_, entry, _) in wanted {
                report
                    .failed
                    .push((entry.name.clone(), format!("{ENCRYPTED_DIR}: {e}")));
            }
            return;
        }
    };
    let state_path = match fsutil::in_root(root, ENCRYPTED_STATE) {
        Ok(p) => p,
        Err(e) => {
            report.notes.push(format!("{ENCRYPTED_STATE}: {e}"));
            return;
        }
    };
    let old = read_state(&state_path);
    if wanted.is_empty() && old.credentials.is_empty() {
        return;
    }
    let mut next = EncryptedState {
        version: 1,
        bundle_id: bundle_id.to_owned(),
        credentials: BTreeMap::new(),
    };
    let key = config.credential_key();
    let mut tool = None;
    // A credential that could not be written now stays recorded (its old
    // file, if any, is still ours), and the whole set is written again next
    // time (the record then names no store).
    let mut retry = false;
    for (name, entry, value) in wanted {
        let path = dir.join(name);
        let current = old.bundle_id == bundle_id
            && old.credentials.get(*name) == Some(&entry.name)
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if current {
            next.credentials
                .insert((*name).to_owned(), entry.name.clone());
            continue;
        }
        let fail = |why: String| {
            (
                entry.name.clone(),
                format!(
                    "cannot write the encrypted credential {}: {why}",
                    path.display()
                ),
            )
        };
        // A file there that no run of ours recorded is someone else's (an
        // administrator's own encrypted credential): neither replaced nor,
        // later, removed.
        if !old.credentials.contains_key(*name) && std::fs::symlink_metadata(&path).is_ok() {
            report.failed.push(fail(
                "it is there and was not written by sealed-firstboot: left alone (remove it, or choose another credential name)".into(),
            ));
            continue;
        }
        // Recorded before the file exists: a crash in between leaves a
        // name that the next run rewrites or removes, never a file of ours
        // it does not know.
        next.credentials
            .insert((*name).to_owned(), entry.name.clone());
        let t = match tool.get_or_insert_with(|| {
            if key.uses_tpm2() {
                tpm2::tool_for_tpm(root)
            } else {
                tpm2::tool(root)
            }
        }) {
            Ok(t) => t,
            Err(e) => {
                report.failed.push(fail(e.to_string()));
                retry = true;
                continue;
            }
        };
        let sealed = match tpm2::seal(t, name, key.as_str(), &config.tpm2_pcrs, value) {
            Ok(s) => s,
            Err(e) => {
                report.failed.push(fail(e.to_string()));
                retry = true;
                continue;
            }
        };
        if let Some(note) = sealed.note {
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
        let mut union = next.credentials.clone();
        for (n, s) in &old.credentials {
            union.entry(n.clone()).or_insert_with(|| s.clone());
        }
        let interim = EncryptedState {
            version: 1,
            bundle_id: old.bundle_id.clone(),
            credentials: union,
        };
        let written = save_state(&state_path, &interim).and_then(|()| {
            fsutil::create_dir_all_mode(&dir, 0o700)?;
            fsutil::write_atomic(&path, &sealed.blob, 0o400)
        });
        match written {
            Ok(()) => report.encrypted.push((*name).to_owned()),
            Err(e) => {
                report.failed.push(fail(e.to_string()));
                retry = true;
            }
        }
    }
    for (name, secret) in &old.credentials {
        if next.credentials.contains_key(name) || validate_credential_name(name).is_err() {
            continue;
        }
        // Its secret failed at this unseal but is still in the store: kept
        // as it is, and the set written again once it unseals (its value
        // may have changed meanwhile).
        if kept.contains(name) {
            next.credentials.insert(name.clone(), secret.clone());
            retry = true;
            continue;
        }
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => report.failed.push((
                secret.clone(),
                format!(
                    "{} is a directory, not the credential sealed-firstboot wrote; left alone",
                    path.display()
                ),
            )),
            Ok(_) => match std::fs::remove_file(&path) {
                Ok(()) => report.removed.push(format!("{name} (encrypted)")),
                Err(e) => {
                    // Kept in the record, to be removed next time.
                    next.credentials.insert(name.clone(), secret.clone());
                    report.failed.push((
                        secret.clone(),
                        format!("cannot remove {}: {e}", path.display()),
                    ));
                }
            },
            Err(_) => report.removed.push(format!("{name} (encrypted)")),
        }
    }
    if retry {
        next.bundle_id = String::new();
    }
    if let Err(e) = save_state(&state_path, &next) {
        report.notes.push(format!(
            "cannot record the encrypted credentials in {}: {e}",
            state_path.display()
        ));
    }
    let _ = fsutil::sync_dir(&dir);
}

fn read_state(path: &Path) -> EncryptedState {
    sealed_bundle::io::read_regular_bounded(path, STATE_MAX_BYTES)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(path: &Path, state: &EncryptedState) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    if let Some(dir) = path.parent() {
        fsutil::create_dir_all_mode(dir, 0o700)?;
    }
    fsutil::write_atomic(path, &bytes, 0o600)
}
