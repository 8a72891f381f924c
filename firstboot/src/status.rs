//! `sealed-firstboot status`: what the store holds and whether each secret
//! is live in `/run/secrets`. Metadata only, never values.

use crate::store::{Store, StoreError};
use serde::Serialize;
use std::path::Path;

/// The device's state, for people and for fleet rollouts (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The applied bundle.
    pub bundle_id: String,
    /// Its sequence number (0: not set).
    pub sequence: u64,
    /// When it was sealed (unix seconds and nanoseconds).
    pub created_at: u64,
    pub created_nanos: u32,
    /// When this device applied it (unix seconds).
    pub applied_at: u64,
    /// The identity the store is sealed to, and where it came from.
    pub recipient: Option<String>,
    pub identity: Option<String>,
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
    pub ok: bool,
}

/// The status of `root`, or `None` when nothing was ever provisioned.
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
            let sealed = current
                .dir
                .join("secrets")
                .join(format!("{}.age", e.name))
                .is_file();
            let live = exists_in_root(root, &e.path);
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
                ok: sealed && live,
            }
        })
        .collect();
    let s = current.state;
    Ok(Some(Status {
        ok: secrets.iter().all(|x| x.ok),
        bundle_id: s.bundle_id,
        sequence: s.sequence,
        created_at: s.created_at,
        created_nanos: s.created_nanos,
        applied_at: s.applied_at,
        recipient: s.recipient,
        identity: s.identity,
        secrets,
    }))
}

/// Whether a device path exists inside `root`, resolving symlinks whose
/// absolute targets are device paths (as `/run/x -> /run/secrets/...`)
/// inside the root.
pub fn exists_in_root(root: &Path, device_path: &str) -> bool {
    let mut path = root.join(device_path.trim_start_matches('/'));
    for _ in 0..8 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&path) {
                Ok(t) if t.is_absolute() => {
                    path = root.join(t.strip_prefix("/").unwrap_or(&t));
                }
                Ok(t) => {
                    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    path = parent.join(t);
                }
                Err(_) => return false,
            },
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}
