//! Secrets handed to systemd as credentials: `/run/credstore/NAME`, where
//! `LoadCredential=NAME` (systemd 251 or later) and `ImportCredential=`
//! find them; older systemd reads `LoadCredential=NAME:/run/credstore/NAME`.
//!
//! `/run/credstore` is a ramfs of its own (mode 0700, root), mounted on
//! the device when it is not a mount point yet and is empty: never over
//! files someone else put there. Each credential is root:root 0400 (systemd
//! copies it, as root, into the unit's `$CREDENTIALS_DIRECTORY`, readable
//! by the unit's user, `DynamicUser=` too). A credential is written under a
//! temporary name with its final owner and mode, then renamed over the
//! old one, so a service starting meanwhile reads the old or the new value,
//! never a part. Only the names recorded in `/run/secrets.d/credentials.json`
//! were written by sealed-firstboot; only they are ever removed (when their
//! secret leaves the store). Nothing is followed: `/run/credstore` must be
//! a real directory and every name is opened with `O_NOFOLLOW`.

use super::error::RuntimeError;
use super::fsops::{self, Kind, StepError};
use super::{mount, UnsealOptions, GENERATIONS_DIR};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use sealed_bundle::validate_credential_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The directory, below `/run`.
pub const CREDSTORE_DIR: &str = "credstore";
/// Its mode (systemd's own tmpfiles line for it says 0700 too).
const CREDSTORE_MODE: u32 = 0o700;
/// Each credential's mode.
const CREDENTIAL_MODE: u32 = 0o400;
/// The record of what we wrote, in `/run/secrets.d`.
pub const STATE_FILE: &str = "credentials.json";
const STATE_TMP: &str = "credentials.json.tmp";
const STATE_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    credentials: Vec<String>,
}

/// One credential to write: its name, the secret it comes from, its bytes.
pub struct Credential<'a> {
    pub name: &'a str,
    pub secret: &'a str,
    pub value: &'a [u8],
}

/// What [`write`] did.
#[derive(Debug, Default)]
pub struct CredstoreReport {
    /// Credential names written.
    pub written: Vec<String>,
    /// Credential names removed (their secret left the store).
    pub removed: Vec<String>,
    /// `(secret, why)` for credentials that could not be written.
    pub failed: Vec<(String, String)>,
}

/// Write `creds` into `ROOT/run/credstore` and remove the ones an earlier
/// unseal wrote that are no longer wanted. With nothing to write and
/// nothing written before, nothing is touched (not even created).
pub fn write(
    root: &Path,
    creds: &[Credential<'_>],
    opts: &UnsealOptions,
    kept: &BTreeSet<String>,
) -> Result<CredstoreReport, RuntimeError> {
    let run_host = root.join("run");
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::io("open the root directory", root, e))?;
    let run = fsops::open_or_create_dir(root_fd.as_fd(), "run", 0o755, false)
        .map_err(|e| step(e, "open", &run_host))?;
    let gens_host = run_host.join(GENERATIONS_DIR);
    let gens = fsops::open_or_create_dir(run.as_fd(), GENERATIONS_DIR, 0o751, opts.apply_ownership)
        .map_err(|e| step(e, "open", &gens_host))?;
    let old = read_state(gens.as_fd());
    let mut report = CredstoreReport::default();
    if creds.is_empty() && old.is_empty() {
        return Ok(report);
    }
    let host = run_host.join(CREDSTORE_DIR);
    let dir = prepare(run.as_fd(), &host, opts)?;
    // A name there already that no unseal of ours recorded is someone
    // else's credential: neither replaced nor, later, removed.
    let mut foreign = BTreeSet::new();
    for c in creds {
        if old.contains(c.name) || validate_credential_name(c.name).is_err() {
            continue;
        }
        match fsops::kind_at(dir.as_fd(), c.name) {
            Ok(Kind::Missing) => {}
            Ok(_) => {
                foreign.insert(c.name.to_owned());
                report.failed.push((
                    c.secret.to_owned(),
                    format!(
                        "{} is there and was not written by sealed-firstboot: left alone (remove it, or choose another credential name)",
                        host.join(c.name).display()
                    ),
                ));
            }
            Err(e) => return Err(RuntimeError::io("inspect", host.join(c.name), e)),
        }
    }
    let creds: Vec<&Credential<'_>> = creds.iter().filter(|c| !foreign.contains(c.name)).collect();
    let wanted: BTreeSet<String> = creds.iter().map(|c| c.name.to_owned()).collect();
    // Recorded before anything is created, so a crash in between still
    // lets the next run remove what it finds.
    let union: BTreeSet<String> = old.union(&wanted).cloned().collect();
    write_state(gens.as_fd(), &gens_host, &union, opts.apply_ownership)?;
    for c in creds {
        match write_one(dir.as_fd(), c, opts) {
            Ok(()) => report.written.push(c.name.to_owned()),
            Err(e) => report.failed.push((
                c.secret.to_owned(),
                format!(
                    "cannot write the credential {}: {e}",
                    host.join(c.name).display()
                ),
            )),
        }
    }
    for stale in old.difference(&wanted) {
        // A name that is not ours to judge (a damaged record) stays, and so
        // does the credential of a secret that failed at this unseal but is
        // still in the store.
        if validate_credential_name(stale).is_err() || kept.contains(stale) {
            continue;
        }
        match fsops::kind_at(dir.as_fd(), stale) {
            Ok(Kind::Missing) => {}
            Ok(Kind::Dir) => report.failed.push((
                stale.clone(),
                format!(
                    "{} is a directory, not the credential sealed-firstboot wrote; left alone",
                    host.join(stale).display()
                ),
            )),
            Ok(_) => match rfs::unlinkat(dir.as_fd(), stale.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => report.removed.push(stale.clone()),
                Err(e) => {
                    return Err(RuntimeError::io(
                        "remove the stale credential",
                        host.join(stale),
                        e,
                    ))
                }
            },
            Err(e) => return Err(RuntimeError::io("inspect", host.join(stale), e)),
        }
    }
    let kept: BTreeSet<String> = union
        .into_iter()
        .filter(|n| !report.removed.contains(n))
        .collect();
    write_state(gens.as_fd(), &gens_host, &kept, opts.apply_ownership)?;
    Ok(report)
}

fn step(e: StepError, op: &'static str, path: &Path) -> RuntimeError {
    match e {
        StepError::Symlink => RuntimeError::Occupied {
            path: path.to_path_buf(),
            what: "a symbolic link",
            expected: "a directory",
        },
        StepError::NotDir(what) => RuntimeError::Occupied {
            path: path.to_path_buf(),
            what,
            expected: "a directory",
        },
        StepError::Io(source) => RuntimeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
    }
}

/// `/run/credstore`, created (0700 root) and, on the device, a ramfs.
fn prepare(
    run: BorrowedFd<'_>,
    host: &Path,
    opts: &UnsealOptions,
) -> Result<OwnedFd, RuntimeError> {
    let mut dir =
        fsops::open_or_create_dir(run, CREDSTORE_DIR, CREDSTORE_MODE, opts.apply_ownership)
            .map_err(|e| step(e, "create", host))?;
    if opts.mount_ramfs {
        let mounted = mount::is_mount_point(run, dir.as_fd())
            .map_err(|e| RuntimeError::io("inspect", host, e))?;
        if !mounted {
            let names = fsops::list(dir.as_fd()).map_err(|e| RuntimeError::io("list", host, e))?;
            if !names.is_empty() {
                return Err(RuntimeError::Occupied {
                    path: host.to_path_buf(),
                    what: "a directory with files sealed-firstboot did not write, on a file system that may be swapped out",
                    expected: "an empty directory to mount a ramfs on, or a ramfs",
                });
            }
            mount::mount_ramfs_mode(dir.as_fd(), host, CREDSTORE_MODE)
                .map_err(|e| RuntimeError::io("mount a ramfs on", host, e))?;
            dir = fsops::open_dir(run, CREDSTORE_DIR)
                .map_err(|e| step(e, "open", host))?
                .ok_or_else(|| {
                    RuntimeError::io(
                        "open",
                        host,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })?;
        }
        let found =
            mount::fs_type(dir.as_fd()).map_err(|e| RuntimeError::io("inspect", host, e))?;
        if found != mount::RAMFS_MAGIC {
            return Err(RuntimeError::NotRamfs {
                path: host.to_path_buf(),
                found,
            });
        }
    }
    fsops::set_owner_mode(
        dir.as_fd(),
        CREDSTORE_MODE,
        opts.apply_ownership.then_some((0, 0)),
    )
    .map_err(|e| RuntimeError::io("set the owner and mode of", host, e))?;
    Ok(dir)
}

/// Write one credential: a private temporary file with its final owner
/// and mode, then renamed over the name.
fn write_one(dir: BorrowedFd<'_>, c: &Credential<'_>, opts: &UnsealOptions) -> std::io::Result<()> {
    if validate_credential_name(c.name).is_err() {
        return Err(std::io::Error::other("not a credential name"));
    }
    if fsops::kind_at(dir, c.name)? == Kind::Dir {
        return Err(std::io::Error::other(
            "a directory is in its place (not replaced)",
        ));
    }
    let tmp = format!(".{}.tmp-{}", c.name, std::process::id());
    let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let owner = opts.apply_ownership.then_some((0, 0));
    let written = fsops::create_secret_file(dir, &tmp, CREDENTIAL_MODE, owner, c.value)
        .and_then(|()| rfs::renameat(dir, tmp.as_str(), dir, c.name).map_err(Into::into));
    if written.is_err() {
        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    written
}

fn read_state(gens: BorrowedFd<'_>) -> BTreeSet<String> {
    let Some(bytes) = fsops::read_state_file(gens, STATE_FILE, STATE_MAX_BYTES) else {
        return BTreeSet::new();
    };
    serde_json::from_slice::<State>(&bytes)
        .map(|s| s.credentials.into_iter().collect())
        .unwrap_or_default()
}

fn write_state(
    gens: BorrowedFd<'_>,
    gens_host: &Path,
    names: &BTreeSet<String>,
    chown_root: bool,
) -> Result<(), RuntimeError> {
    let state = State {
        version: 1,
        credentials: names.iter().cloned().collect(),
    };
    let bytes = serde_json::to_vec(&state).unwrap_or_default();
    let path: PathBuf = gens_host.join(STATE_FILE);
    fsops::write_state_file(gens, STATE_FILE, STATE_TMP, &bytes, chown_root)
        .map_err(|e| RuntimeError::io("write", &path, e))
}
