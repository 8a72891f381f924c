//! Every boot: store → `/run/secrets`. Picks the identity that opens the
//! store, decrypts each secret, renders the templates and hands the files
//! to the [`runtime`](crate::runtime). A secret that cannot be decrypted or
//! whose owner is missing fails alone; the others are unsealed.
//!
//! The caller holds the device lock.

use crate::config::{self, Config, ConfigError, IdentityMode};
use crate::credentials;
use crate::identity::{self, IdentityError, IdentitySource};
use crate::runtime::{self, RuntimeError, SecretFile, UnsealOptions};
use crate::store::{Current, Store, StoreError};
use sealed_bundle as bundle;
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
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// Credentials written to `/run/credstore`.
    pub credentials: Vec<String>,
    /// Encrypted credentials written now to `/etc/credstore.encrypted`.
    pub encrypted_credentials: Vec<String>,
    /// Credentials removed (their secret left the store).
    pub removed_credentials: Vec<String>,
    /// The restarts due (recorded before the new secrets went live, kept
    /// until `systemctl` ran): for what this unseal changed under running
    /// units, and what an interrupted run left.
    pub pending: crate::restart::Plan,
}

/// Unseal the current store of `root` into `ROOT/run/secrets`.
pub fn unseal_store(root: &Path, opts: &UnsealOptions) -> Result<UnsealOutcome, UnsealError> {
    let config = config::load(root)?;
    unseal_store_with(root, opts, &config)
}

/// [`unseal_store`] with an already loaded configuration. Each secret is
/// checked again against where files may go on this device (its
/// configuration may have changed since the store was written) and fails
/// alone when it breaks the rule; everything unsealed together is bounded
/// ([`bundle::limits::MAX_UNSEALED_BYTES`]) before a template is rendered.
pub fn unseal_store_with(
    root: &Path,
    opts: &UnsealOptions,
    config: &Config,
) -> Result<UnsealOutcome, UnsealError> {
    unseal_store_restarting(root, opts, config, false)
}

/// [`unseal_store_with`] on a running system (`apply`, `unseal`), with
/// `restarts`: the units of what changes are recorded as due before the
/// swap ([`UnsealOutcome::pending`]). The boot-time unseal passes false
/// (units start after it).
pub fn unseal_store_restarting(
    root: &Path,
    opts: &UnsealOptions,
    config: &Config,
    restarts: bool,
) -> Result<UnsealOutcome, UnsealError> {
    let store = Store::new(root);
    let Some(current) = store.current()? else {
        return Ok(UnsealOutcome::default());
    };
    let mut outcome = UnsealOutcome {
        had_store: true,
        ..Default::default()
    };
    let identity = store_identity(root, &current, config.identity, &mut outcome.notes)?;
    let paths = config.path_policy();
    // Where the device does not let it go, a secret or template fails alone.
    let allowed = |e: &bundle::SecretEntry, failed: &mut Vec<(String, String)>| {
        let refusal = bundle::check_policy(e, &paths).err();
        if let Some(err) = &refusal {
            failed.push((e.name.clone(), err.reason.clone()));
        }
        refusal.is_none()
    };
    let mut values: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut total: u64 = 0;
    for entry in &current.manifest.secrets {
        match current.decrypt(&identity, entry) {
            Ok(v) => {
                total = total.saturating_add(v.len() as u64);
                values.insert(entry.name.clone(), v);
            }
            Err(e) => outcome.failed.push((entry.name.clone(), e.to_string())),
        }
    }
    let mut rendered = BTreeMap::new();
    for t in &current.manifest.templates {
        if !allowed(t, &mut outcome.failed) {
            continue;
        }
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
        // Sized before anything is allocated for it (a template that does
        // not parse fails in `render`, with its reason).
        let size = bundle::rendered_len(&text, &values).unwrap_or(0);
        if bundle::limits::MAX_UNSEALED_BYTES.saturating_sub(total) < size {
            outcome.failed.push((
                t.name.clone(),
                format!(
                    "the template renders to {size} bytes: with the other secrets, more than the {} one unseal writes",
                    bundle::limits::MAX_UNSEALED_BYTES
                ),
            ));
            continue;
        }
        match bundle::render(&text, &values) {
            Ok(out) => {
                total = total.saturating_add(out.len() as u64);
                rendered.insert(t.name.clone(), out);
            }
            Err(e) => outcome.failed.push((t.name.clone(), e)),
        }
    }
    // Secrets whose path the device does not allow (templates may still
    // have used their values).
    let mut refused = Vec::new();
    for entry in &current.manifest.secrets {
        if values.contains_key(&entry.name) && !allowed(entry, &mut outcome.failed) {
            refused.push(entry.name.clone());
        }
    }
    values.retain(|k, _| !refused.contains(k));
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
    let report = runtime::unseal_with_due(root, &files, opts, &|changed| {
        if restarts {
            crate::restart::plan(&current.manifest, changed)
        } else {
            crate::restart::Plan::default()
        }
    })?;
    // What was unsealed is also handed to systemd as the credentials the
    // entries name (a secret that failed fails alone, credential and all).
    let unsealed: Vec<(&bundle::SecretEntry, &[u8])> = files
        .iter()
        .filter(|f| report.written.contains(&f.entry.name))
        .map(|f| (f.entry, f.value))
        .collect();
    // The credentials of entries still in the store that failed at this
    // unseal: they have not left the store, so they are kept as they were.
    let kept: std::collections::BTreeSet<String> = current
        .manifest
        .secrets
        .iter()
        .chain(&current.manifest.templates)
        .filter(|e| !report.written.contains(&e.name))
        .flat_map(|e| e.credentials().map(|(_, n)| n.to_owned()))
        .collect();
    let creds = credentials::write(
        root,
        config,
        opts,
        &unsealed,
        &current.state.bundle_id,
        &kept,
    )?;
    outcome.generation = report.generation;
    outcome.written = report.written;
    outcome.changed = report.changed;
    outcome.pending = report.pending;
    outcome.failed.extend(
        report
            .failed
            .iter()
            .map(|u| (u.secret.clone(), u.error.to_string())),
    );
    outcome.failed.extend(
        report
            .refused
            .iter()
            .map(|(name, e)| (name.clone(), e.to_string())),
    );
    outcome.failed.extend(creds.failed);
    outcome.notes.extend(creds.notes);
    outcome.credentials = creds.plain;
    outcome.encrypted_credentials = creds.encrypted;
    outcome.removed_credentials = creds.removed;
    Ok(outcome)
}

/// The identity that opens the store: the persisted one. The identity the
/// SSH host key derives is tried only when that one does not fit, and only
/// in `identity = ssh-host-key` mode or for a store written before
/// identities were persisted (no recipient in its state, no identity
/// file): it was sealed to the host-key identity, which is then persisted
/// (migration) once it is seen to open the store. A host key that cannot
/// be read is no candidate.
pub(crate) fn store_identity(
    root: &Path,
    current: &Current,
    mode: IdentityMode,
    notes: &mut Vec<String>,
) -> Result<age::x25519::Identity, UnsealError> {
    let want = current.state.recipient.as_deref();
    let fits = |id: &age::x25519::Identity| match want {
        Some(w) => id.to_public().to_string() == w,
        None => opens(current, id),
    };
    let persisted = identity::load(root)?;
    if let Some(p) = &persisted {
        notes.extend(p.note.clone());
        if fits(&p.identity) {
            return Ok(p.identity.clone());
        }
    }
    let migrating = persisted.is_none() && want.is_none();
    let derived = if mode == IdentityMode::SshHostKey || migrating {
        identity::ssh_derived(root).ok().flatten()
    } else {
        None
    };
    if let Some(derived) = derived {
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
