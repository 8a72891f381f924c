//! `audit.jsonl`: one JSON object a line, appended (O_APPEND, fsync) for
//! every operation that reads or changes values. Never a value.

use super::layout::Store;
use super::metadata::now;
use super::{io, StoreError};
use serde::{Deserialize, Serialize};
use std::io::Write;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339 UTC.
    pub at: String,
    /// `$USER`, or the CI job (`github:ACTOR run ID`, `gitlab:USER job ID`, …).
    pub by: String,
    /// get, set, update, rotate, rm, rekey, export, import, read (a build or check).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Free text without values: the recipe of a build, a file name, a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(op: &str) -> Entry {
        Entry {
            at: now(),
            by: actor(),
            op: op.into(),
            name: None,
            scope: None,
            version: None,
            detail: None,
        }
    }
    pub fn secret(mut self, name: &str, scope: &str, version: u32) -> Entry {
        self.name = Some(name.into());
        self.scope = Some(scope.into());
        self.version = Some(version);
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> Entry {
        self.detail = Some(d.into());
        self
    }
}

/// Who is acting: the CI job when running in CI, else the user.
pub fn actor() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").is_some() {
        return format!(
            "github:{} run {} ({})",
            var("GITHUB_ACTOR").unwrap_or_else(|| "?".into()),
            var("GITHUB_RUN_ID").unwrap_or_else(|| "?".into()),
            var("GITHUB_REPOSITORY").unwrap_or_else(|| "?".into())
        );
    }
    if var("GITLAB_CI").is_some() {
        return format!(
            "gitlab:{} job {}",
            var("GITLAB_USER_LOGIN").unwrap_or_else(|| "?".into()),
            var("CI_JOB_ID").unwrap_or_else(|| "?".into())
        );
    }
    if let Some(id) = var("CI_JOB_ID").or_else(|| var("BUILD_ID")) {
        return format!("ci:{} job {id}", var("USER").unwrap_or_else(|| "?".into()));
    }
    var("USER")
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Append entries to the store's audit log and make them durable.
pub fn append(store: &Store, entries: &[Entry]) -> Result<(), StoreError> {
    let path = store.audit_file();
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).unwrap_or_default());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(format!("appending to {}", path.display())))
}

/// Read the whole log.
pub fn read(store: &Store) -> Result<Vec<Entry>, StoreError> {
    let path = store.audit_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}
