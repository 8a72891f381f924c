//! `sealed-firstboot status`: what the store holds and whether each secret
//! is live in `/run/secrets`. Metadata only, never values.

use crate::config::Config;
use crate::store::{State, Store, StoreError};
use crate::trust::{Trust, TrustSource};
use serde::Serialize;
use std::path::{Component, Path, PathBuf};

/// The signers in force, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct SignerStatus {
    /// `sealed-signer1…` public keys.
    pub pinned: Vec<String>,
    /// Where the list comes from.
    #[serde(flatten)]
    pub source: TrustSource,
    /// Unsigned (format 2) bundles are accepted: only while nothing is pinned.
    pub unsigned_accepted: bool,
}

/// The signers `root` pins now (the store's list, else the configuration's).
pub fn signers(root: &Path, config: &Config) -> Result<SignerStatus, StoreError> {
    let current = Store::new(root).current()?;
    let trust = Trust::effective(config, current.as_ref());
    Ok(SignerStatus {
        pinned: trust.signers.iter().map(ToString::to_string).collect(),
        unsigned_accepted: trust.accepts_unsigned(),
        source: trust.source,
    })
}

/// The device's state, for people and for fleet rollouts (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The applied bundle (id, sequence, sealing and applying times) and
    /// the identity the store is sealed to: the store's own state record.
    #[serde(flatten)]
    pub state: State,
    pub secrets: Vec<SecretStatus>,
    /// Every secret is in the store and live.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `secret` or `template`.
    pub role: &'static str,
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Octal, as in the recipe (`"0400"`).
    pub mode: String,
    /// Its sealed file is in the store.
    pub sealed: bool,
    /// Its path exists under `/run`.
    pub live: bool,
    /// The systemd credential it is handed over as, and whether
    /// `/run/credstore/NAME` exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialStatus>,
    /// The encrypted credential, and whether
    /// `/etc/credstore.encrypted/NAME` exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_encrypted: Option<CredentialStatus>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    pub name: String,
    pub present: bool,
}

/// The status of `root`, or `None` when nothing was ever provisioned.
/// (The signers in force are [`signers`].)
pub fn status(root: &Path) -> Result<Option<Status>, StoreError> {
    let Some(current) = Store::new(root).current()? else {
        return Ok(None);
    };
    let templates: Vec<&str> = current
        .manifest
        .templates
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let secrets: Vec<SecretStatus> = current
        .manifest
        .entries()
        .map(|e| {
            let sealed = std::fs::symlink_metadata(
                current.dir.join("secrets").join(format!("{}.age", e.name)),
            )
            .is_ok_and(|m| m.is_file());
            let live = exists_in_root(root, &e.path);
            let cred = |name: &Option<String>, dir: &str| {
                name.as_ref().map(|n| CredentialStatus {
                    name: n.clone(),
                    present: std::fs::symlink_metadata(root.join(dir).join(n))
                        .is_ok_and(|m| m.is_file()),
                })
            };
            let credential = cred(&e.credential, "run/credstore");
            let credential_encrypted =
                cred(&e.credential_encrypted, crate::credentials::ENCRYPTED_DIR);
            let creds_ok = [&credential, &credential_encrypted]
                .into_iter()
                .flatten()
                .all(|c| c.present);
            SecretStatus {
                name: e.name.clone(),
                kind: e.kind.as_str().to_owned(),
                role: if templates.contains(&e.name.as_str()) {
                    "template"
                } else {
                    "secret"
                },
                path: e.path.clone(),
                owner: e.owner.clone(),
                group: e.group.clone(),
                mode: format!("{:04o}", e.mode),
                sealed,
                live,
                credential,
                credential_encrypted,
                ok: sealed && live && creds_ok,
            }
        })
        .collect();
    Ok(Some(Status {
        ok: secrets.iter().all(|x| x.ok),
        state: current.state,
        secrets,
    }))
}

/// Whether a device path exists inside `root`, resolving symbolic links
/// as the device would with `root` as its `/` (an absolute target starts
/// again at `root`, `..` never climbs above it), so nothing outside the
/// tree is looked at.
pub fn exists_in_root(root: &Path, device_path: &str) -> bool {
    let mut todo: Vec<PathBuf> = vec![PathBuf::from(device_path)];
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(next) = todo.pop() {
        let mut comps: Vec<Component<'_>> = next.components().collect();
        comps.reverse();
        // Remaining components of `next`, first last.
        let mut rest: Vec<std::ffi::OsString> = Vec::new();
        for c in comps {
            match c {
                Component::Normal(n) => rest.push(n.to_os_string()),
                Component::ParentDir => rest.push("..".into()),
                Component::RootDir => rest.push("/".into()),
                Component::CurDir | Component::Prefix(_) => {}
            }
        }
        while let Some(c) = rest.pop() {
            if c == "/" {
                at.clear();
                continue;
            }
            if c == ".." {
                at.pop();
                continue;
            }
            let mut host = root.to_path_buf();
            host.extend(&at);
            host.push(&c);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    let Ok(target) = std::fs::read_link(&host) else {
                        return false;
                    };
                    if links > 40 {
                        return false;
                    }
                    // Resolve the target, then what was left.
                    rest.reverse();
                    let left: PathBuf = rest.iter().collect();
                    todo.push(left);
                    todo.push(target);
                    rest.clear();
                    break;
                }
                Ok(_) => at.push(c),
                Err(_) => return false,
            }
        }
    }
    true
}
