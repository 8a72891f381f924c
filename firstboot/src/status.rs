//! `sealed-firstboot status`: what the store holds and whether each secret
//! is live in `/run/secrets`. Metadata only, never values.

use crate::store::{State, Store, StoreError};
use serde::Serialize;
use std::path::Path;

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
    Ok(Some(Status {
        ok: secrets.iter().all(|x| x.ok),
        state: current.state,
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
