//! Secrets whose path is outside `/run/secrets`: a symlink at the path,
//! pointing into `/run/secrets/.outside/NAME`, and the state file that
//! remembers which links we made.

use super::error::RuntimeError;
use super::fsops::{self, Kind, StepError};
use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;
use sealed_bundle::validate_device_path;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// Directory inside a generation holding secrets whose path is outside
/// `/run/secrets`, one file per secret name.
pub const OUTSIDE_DIR: &str = ".outside";
/// State file in `/run/secrets.d`: the link paths we created.
pub const STATE_FILE: &str = "links.json";
pub(super) const STATE_TMP: &str = "links.json.tmp";
const STATE_MAX_BYTES: u64 = 1024 * 1024;
/// Temporary name used to replace a link atomically.
const LINK_TMP: &str = ".sealed-firstboot-link.tmp";
/// Every link we create points below this.
const TARGET_PREFIX: &str = "/run/secrets/";

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    links: Vec<String>,
}

/// One link to install.
#[derive(Debug)]
pub(super) struct Link<'a> {
    /// Secret name (for messages).
    pub name: &'a str,
    /// Device path of the link, e.g. `/run/wpa/psk`.
    pub path: &'a str,
    /// The path's components below `/run`.
    pub comps: Vec<&'a str>,
    /// Absolute target as seen on the device.
    pub target: String,
}

impl Link<'_> {
    fn parent(&self) -> &[&str] {
        &self.comps[..self.comps.len().saturating_sub(1)]
    }

    fn base(&self) -> &str {
        self.comps.last().copied().unwrap_or_default()
    }

    fn step_error(&self, i: usize, e: StepError) -> RuntimeError {
        let op = "open the directory of the link";
        RuntimeError::walk_step((self.name, self.path), "", &self.comps, i, e, op)
    }

    fn io(&self, op: &'static str, e: impl Into<std::io::Error>) -> RuntimeError {
        RuntimeError::secret_io(self.name, self.path, op, e)
    }

    /// Whether the existing symlink at the link path may be replaced: we
    /// made it (it is in the state file) or it points into `/run/secrets/`.
    fn replaceable(&self, target: &[u8], known: &BTreeSet<String>) -> bool {
        known.contains(self.path) || target.starts_with(TARGET_PREFIX.as_bytes())
    }

    fn occupied(&self, what: String) -> RuntimeError {
        RuntimeError::LinkOccupied {
            name: self.name.to_owned(),
            path: self.path.to_owned(),
            what,
        }
    }
}

/// Check a link location without changing anything: no symlink or
/// non-directory among existing parents, and nothing at the path but a
/// link we may replace.
///
/// Every existing directory on the way (below `/run`) must be writable
/// by root (and the caller) alone: in a directory another user can write,
/// that user could plant or swap what sits at the link path.
pub(super) fn preflight(
    run: BorrowedFd<'_>,
    link: &Link<'_>,
    known: &BTreeSet<String>,
) -> Result<(), RuntimeError> {
    let me = rustix::process::geteuid().as_raw();
    let mut cur = run
        .try_clone_to_owned()
        .map_err(|e| link.io("open /run", e))?;
    for (i, comp) in link.parent().iter().enumerate() {
        match fsops::open_dir(cur.as_fd(), comp) {
            Ok(Some(fd)) => cur = fd,
            Ok(None) => return Ok(()),
            Err(e) => return Err(link.step_error(i, e)),
        }
        let st = rfs::fstat(&cur).map_err(|e| link.io("inspect a directory of the link", e))?;
        let foreign_owner = st.st_uid != 0 && st.st_uid != me;
        if foreign_owner || st.st_mode & 0o022 != 0 {
            return Err(RuntimeError::UnsafeLinkDir {
                name: link.name.to_owned(),
                path: link.path.to_owned(),
                dir: format!("/run/{}", link.comps[..=i].join("/")),
                why: if foreign_owner {
                    format!("is owned by uid {}", st.st_uid)
                } else {
                    format!(
                        "is writable by its group or others (mode {:o})",
                        st.st_mode & 0o7777
                    )
                },
            });
        }
    }
    check_existing(cur.as_fd(), link, known).map(|_| ())
}

/// What is at the link path now: `Ok(None)` when free, `Ok(Some(target))`
/// for a link we may replace, an error otherwise.
fn check_existing(
    parent: BorrowedFd<'_>,
    link: &Link<'_>,
    known: &BTreeSet<String>,
) -> Result<Option<Vec<u8>>, RuntimeError> {
    match fsops::kind_at(parent, link.base()).map_err(|e| link.io("inspect the link path", e))? {
        Kind::Missing => Ok(None),
        Kind::Symlink => {
            let target = fsops::read_link(parent, link.base())
                .map_err(|e| link.io("read the existing link", e))?;
            if link.replaceable(&target, known) {
                Ok(Some(target))
            } else {
                Err(link.occupied(format!(
                    "a symbolic link to {:?}",
                    String::from_utf8_lossy(&target)
                )))
            }
        }
        other => Err(link.occupied(other.describe().to_owned())),
    }
}

/// Create the link (and missing parents, 0755), or replace our old link
/// atomically (symlink to a temporary name, then rename over it).
pub(super) fn install(
    run: BorrowedFd<'_>,
    link: &Link<'_>,
    known: &BTreeSet<String>,
    chown_root: bool,
) -> Result<(), RuntimeError> {
    let parent = fsops::walk_create(run, link.parent(), 0o755, chown_root)
        .map_err(|(i, e)| link.step_error(i, e))?;
    let parent = parent.as_fd();
    match check_existing(parent, link, known)? {
        None => rfs::symlinkat(link.target.as_str(), parent, link.base())
            .map_err(|e| link.io("create the link", e)),
        Some(old) if old == link.target.as_bytes() => Ok(()),
        Some(_) => {
            match fsops::unlink_if_symlink(parent, LINK_TMP) {
                Ok(Kind::Missing | Kind::Symlink) => {}
                Ok(other) => {
                    return Err(link.io(
                        "replace the link",
                        std::io::Error::other(format!(
                            "{LINK_TMP} beside it is {}",
                            other.describe()
                        )),
                    ))
                }
                Err(e) => return Err(link.io("remove a stale temporary link", e)),
            }
            rfs::symlinkat(link.target.as_str(), parent, LINK_TMP)
                .map_err(|e| link.io("create a temporary link", e))?;
            rfs::renameat(parent, LINK_TMP, parent, link.base()).map_err(|e| {
                let _ = rfs::unlinkat(parent, LINK_TMP, AtFlags::empty());
                link.io("replace the link", e)
            })
        }
    }
}

/// Remove a link we created for a secret that no longer exists: only if it
/// is still a symlink into `/run/secrets/` and no parent is a symlink.
/// Anything else at that path is left alone.
pub(super) fn remove_stale(run: BorrowedFd<'_>, path: &str) -> Result<(), RuntimeError> {
    let Some(comps) = link_components(path) else {
        return Ok(());
    };
    let (base, parents) = match comps.split_last() {
        Some(x) => x,
        None => return Ok(()),
    };
    let parent = match fsops::walk_existing(run, parents) {
        Ok(Some(fd)) => fd,
        Ok(None) | Err(_) => return Ok(()),
    };
    let io = |e: std::io::Error| RuntimeError::io("remove the stale link", Path::new(path), e);
    if fsops::kind_at(parent.as_fd(), base).map_err(io)? != Kind::Symlink {
        return Ok(());
    }
    let target = fsops::read_link(parent.as_fd(), base).map_err(io)?;
    if !target.starts_with(TARGET_PREFIX.as_bytes()) {
        return Ok(());
    }
    match rfs::unlinkat(parent.as_fd(), *base, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io(e.into())),
    }
}

/// Components below `/run` of a valid link path from the state file.
fn link_components(path: &str) -> Option<Vec<&str>> {
    validate_device_path(path).ok()?;
    let rest = path.strip_prefix("/run/")?;
    if rest.starts_with("secrets/") {
        return None;
    }
    Some(rest.split('/').collect())
}

/// The links recorded in the state file. A missing, unreadable or corrupt
/// state file counts as empty (links into `/run/secrets/` stay replaceable
/// without it); invalid entries are ignored.
pub(super) fn read_state(gens: BorrowedFd<'_>) -> BTreeSet<String> {
    let Some(text) = fsops::read_state_file(gens, STATE_FILE, STATE_MAX_BYTES) else {
        return BTreeSet::new();
    };
    let state: State = serde_json::from_slice(&text).unwrap_or_default();
    state
        .links
        .into_iter()
        .filter(|p| link_components(p).is_some())
        .collect()
}

/// Replace the state file (temporary file, then rename), mode 0600.
pub(super) fn write_state(
    gens: BorrowedFd<'_>,
    host_dir: &Path,
    links: &BTreeSet<String>,
    chown_root: bool,
) -> Result<(), RuntimeError> {
    let path = host_dir.join(STATE_FILE);
    let io = |e: std::io::Error| RuntimeError::io("write the link state file", &path, e);
    let state = State {
        version: 1,
        links: links.iter().cloned().collect(),
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| io(e.into()))?;
    fsops::write_state_file(gens, STATE_FILE, STATE_TMP, &json, chown_root).map_err(io)
}
