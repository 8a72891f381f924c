//! The one preparation of a runtime directory under `/run`
//! (`/run/secrets.d`, `/run/credstore`): created with its mode (root's on
//! the device) and, where the options ask for it (on the device), a ramfs
//! of its own, so plaintext is never swapped out. Whatever is there first
//! is checked, not trusted: a directory that is already a mount point must
//! be a ramfs (a tmpfs mounted there beforehand is refused, it may be
//! swapped), and one that is not a mount point must be empty before a
//! ramfs is mounted over it (files hidden under the mount would outlive it).

use super::error::RuntimeError;
use super::fsops::{self, StepError};
use super::{mount, UnsealOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `RUN/name`, created with `mode` (owned by root when the options apply
/// ownership) and, with `opts.mount_ramfs`, a ramfs: see the module
/// documentation. `host` is the directory's path, for errors.
pub(super) fn ramfs_dir(
    run: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    host: &Path,
    opts: &UnsealOptions,
) -> Result<OwnedFd, RuntimeError> {
    let mut dir = fsops::open_or_create_dir(run, name, mode, opts.apply_ownership)
        .map_err(|e| from_step(e, "create", host))?;
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
            mount::mount_ramfs(dir.as_fd(), host, mode)
                .map_err(|e| RuntimeError::io("mount a ramfs on", host, e))?;
            // The descriptor still refers to the directory under the mount.
            dir = fsops::open_dir(run, name)
                .map_err(|e| from_step(e, "open", host))?
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
    fsops::set_owner_mode(dir.as_fd(), mode, opts.apply_ownership.then_some((0, 0)))
        .map_err(|e| RuntimeError::io("set the owner and mode of", host, e))?;
    Ok(dir)
}

/// A directory step's failure as the runtime reports it.
pub(super) fn from_step(e: StepError, op: &'static str, path: impl Into<PathBuf>) -> RuntimeError {
    let path = path.into();
    match e {
        StepError::Symlink => RuntimeError::Occupied {
            path,
            what: "a symbolic link",
            expected: "a directory",
        },
        StepError::NotDir(what) => RuntimeError::Occupied {
            path,
            what,
            expected: "a directory",
        },
        StepError::Io(source) => RuntimeError::Io { op, path, source },
    }
}
