//! Every boot: store → `/run/secrets`. Picks the identity that opens the
//! store, decrypts each secret, renders the templates and hands the files
//! to the [`runtime`](crate::runtime). A secret that cannot be decrypted or
//! whose owner is missing fails alone; the others are unsealed.
//!
//! The caller holds the device lock.

use crate::bundle;
use crate::identity::{self, IdentityError, IdentitySource};
use crate::runtime::{self, RuntimeError, SecretFile, UnsealOptions};
use crate::store::{Current, Store, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum UnsealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What an unseal did.
#[derive(Debug, Default)]
pub struct UnsealOutcome {
    /// False when the store is empty (nothing was unsealed).
    pub had_store: bool,
    /// The generation now behind `/run/secrets`.
    pub generation: u64,
    /// Names of the secrets and templates written.
    pub written: Vec<String>,
    /// Names of those whose bytes, owner or mode differ from the generation
    /// that was live before (or that are new).
    pub changed: Vec<String>,
    /// Secrets that failed, each with why (never a value).
    pub failed: Vec<(String, String)>,
    /// Something the journal should say (an identity migration).
    pub notes: Vec<String>,
}

/// Unseal the current store of `root` into `ROOT/run/secrets`.
pub fn unseal_store(root: &Path, opts: &UnsealOptions) -> Result<UnsealOutcome, UnsealError> {
    let store = Store::new(root);
    let Some(current) = store.current()? else {
        return Ok(UnsealOutcome::default());
    };
    let mut outcome = UnsealOutcome {
        had_store: true,
        ..Default::default()
    };
    let identity = store_identity(root, &current, &mut outcome.notes)?;
    let mut values: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    for entry in &current.manifest.secrets {
        match current.decrypt(&identity, entry) {
            Ok(v) => {
                values.insert(entry.name.clone(), v);
            }
            Err(e) => outcome.failed.push((entry.name.clone(), e.to_string())),
        }
    }
    let mut rendered = BTreeMap::new();
    for t in &current.manifest.templates {
        let text = match current.decrypt(&identity, t) {
            Ok(v) => v,
            Err(e) => {
                outcome.failed.push((t.name.clone(), e.to_string()));
                continue;
            }
        };
        let missing: Vec<String> = bundle::placeholders(&text)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !values.contains_key(n))
            .collect();
        if !missing.is_empty() {
            outcome.failed.push((
                t.name.clone(),
                format!("template needs secrets that failed: {}", missing.join(", ")),
            ));
            continue;
        }
        match bundle::render(&text, &values) {
            Ok(out) => {
                rendered.insert(t.name.clone(), out);
            }
            Err(e) => outcome.failed.push((t.name.clone(), e)),
        }
    }
    let mut files: Vec<SecretFile<'_>> = Vec::new();
    for entry in &current.manifest.secrets {
        if let Some(v) = values.get(&entry.name) {
            files.push(SecretFile { entry, value: v });
        }
    }
    for entry in &current.manifest.templates {
        if let Some(v) = rendered.get(&entry.name) {
            files.push(SecretFile { entry, value: v });
        }
    }
    let report = runtime::unseal(root, &files, opts)?;
    outcome.generation = report.generation;
    outcome.written = report.written;
    outcome.changed = report.changed;
    outcome.failed.extend(
        report
            .failed
            .iter()
            .map(|u| (u.secret.clone(), u.error.to_string())),
    );
    Ok(outcome)
}

/// The identity that opens the store: the persisted one. A store written
/// before identities were persisted has no recipient in its state and no
/// identity file: it was sealed to the identity the SSH host key derives,
/// which is then persisted (migration) once it is seen to open the store.
pub(crate) fn store_identity(
    root: &Path,
    current: &Current,
    notes: &mut Vec<String>,
) -> Result<age::x25519::Identity, UnsealError> {
    let want = current.state.recipient.as_deref();
    let fits = |id: &age::x25519::Identity| match want {
        Some(w) => id.to_public().to_string() == w,
        None => opens(current, id),
    };
    let persisted = identity::load(root)?;
    if let Some(p) = &persisted {
        if fits(&p.identity) {
            return Ok(p.identity.clone());
        }
    }
    if let Some(derived) = identity::ssh_derived(root)? {
        if fits(&derived) {
            if persisted.is_none() {
                identity::persist(root, derived.clone(), IdentitySource::MigratedSshHostKey)?;
                notes.push(format!(
                    "persisted the identity derived from the SSH host key ({}) that the store is sealed to",
                    derived.to_public()
                ));
            } else {
                notes.push(
                    "the store is sealed to the SSH host key's identity, not the persisted one; the next bundle reseals it".into(),
                );
            }
            return Ok(derived);
        }
    }
    match persisted {
        // Decryption then fails secret by secret, each one named.
        Some(p) => Ok(p.identity),
        None => Err(IdentityError::Missing {
            path: root.join(identity::IDENTITY_FILE),
            hint: match want {
                Some(w) => format!(" (the store is sealed to {w})"),
                None => String::new(),
            },
        }
        .into()),
    }
}

/// Whether `id` decrypts the store's first secret (an empty store opens
/// with anything).
fn opens(current: &Current, id: &age::x25519::Identity) -> bool {
    current
        .manifest
        .entries()
        .next()
        .is_none_or(|e| current.decrypt(id, e).is_ok())
}
