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
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rfs::openat(gens, PENDING_FILE, flags, Mode::empty()) else {
        return Plan::default();
    };
    if !rfs::fstat(&fd)
        .is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile)
    {
        return Plan::default();
    }
    let mut text = Vec::new();
    if std::fs::File::from(fd)
        .take(MAX_BYTES)
        .read_to_end(&mut text)
        .is_err()
    {
        return Plan::default();
    }
    let record: Record = serde_json::from_slice(&text).unwrap_or_default();
    let ok = |u: &String| crate::bundle::validate_unit(u).is_ok();
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
    match rfs::unlinkat(gens, PENDING_TMP, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(io(e.into())),
    }
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd: OwnedFd = rfs::openat(gens, PENDING_TMP, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| io(e.into()))?;
    fsops::set_owner_mode(fd.as_fd(), 0o600, chown_root.then_some((0, 0))).map_err(io)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    drop(file);
    rfs::renameat(gens, PENDING_TMP, gens, PENDING_FILE).map_err(|e| io(e.into()))?;
    rfs::fsync(gens).map_err(|e| io(e.into()))
}
