//! The restarts that are due: `/run/secrets.d/pending-restarts.json`.
//!
//! A unit that read a secret must be restarted (or reloaded) when the
//! secret changes under it. The units are recorded here before the new
//! generation goes live, and the record is cleared only once `systemctl`
//! ran for them, so a crash (kill -9) in between loses no restart: the
//! next `apply` or `unseal` runs them. It lives on the ramfs with the
//! secrets, so a reboot (which starts every unit afresh, after the
//! boot-time unseal) clears it too. The boot-time `run` records nothing:
//! the units start after it.

use super::error::RuntimeError;
use super::fsops;
use crate::restart::Plan;
use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;
use std::path::Path;

pub const PENDING_FILE: &str = "pending-restarts.json";
pub(super) const PENDING_TMP: &str = "pending-restarts.json.tmp";
const MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    restart: BTreeSet<String>,
    reload: BTreeSet<String>,
}

/// The recorded restarts (none when there is no record, or an unreadable
/// one: it is ours, on a root-only ramfs). Unit names are checked again.
pub(super) fn read(gens: BorrowedFd<'_>) -> Plan {
    let Some(text) = fsops::read_state_file(gens, PENDING_FILE, MAX_BYTES) else {
        return Plan::default();
    };
    let record: Record = serde_json::from_slice(&text).unwrap_or_default();
    let ok = |u: &String| sealed_bundle::validate_unit(u).is_ok();
    let mut plan = Plan {
        restart: record.restart.into_iter().filter(ok).collect(),
        reload: record.reload.into_iter().filter(ok).collect(),
    };
    let restart = plan.restart.clone();
    plan.reload.retain(|u| !restart.contains(u));
    plan
}

/// Replace the record with `plan` (removed when it is empty): temporary
/// file, fsync, rename. Mode 0600.
pub(super) fn write(
    gens: BorrowedFd<'_>,
    host_dir: &Path,
    plan: &Plan,
    chown_root: bool,
) -> Result<(), RuntimeError> {
    let path = host_dir.join(PENDING_FILE);
    let io = |e: std::io::Error| RuntimeError::io("record the restarts due in", &path, e);
    if plan.is_empty() {
        return match rfs::unlinkat(gens, PENDING_FILE, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => rfs::fsync(gens).map_err(|e| io(e.into())),
            Err(e) => Err(io(e.into())),
        };
    }
    let record = Record {
        restart: plan.restart.clone(),
        reload: plan.reload.clone(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| io(e.into()))?;
    fsops::write_state_file(gens, PENDING_FILE, PENDING_TMP, &json, chown_root).map_err(io)
}
