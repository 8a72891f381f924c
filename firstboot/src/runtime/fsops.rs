//! Directory-fd-relative primitives that never follow symbolic links.

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Flags to open a directory without following a symlink at the last
/// component (earlier components are never passed: we walk one at a time).
pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What is at a name, not following symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Missing,
    Dir,
    Symlink,
    Other(&'static str),
}

impl Kind {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Other(what) => what,
        }
    }
}

pub(super) fn kind_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Kind> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::RegularFile => Kind::Other("a regular file"),
            _ => Kind::Other("a special file"),
        }),
        Err(Errno::NOENT) => Ok(Kind::Missing),
        Err(e) => Err(e.into()),
    }
}

/// Why one step of a walk failed.
#[derive(Debug)]
pub(super) enum StepError {
    Symlink,
    NotDir(&'static str),
    Io(io::Error),
}

/// Open the existing directory `name` in `parent`; `Ok(None)` if missing.
pub(super) fn open_dir(parent: BorrowedFd<'_>, name: &str) -> Result<Option<OwnedFd>, StepError> {
    match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => Err(classify(parent, name, e)),
        Err(e) => Err(StepError::Io(e.into())),
    }
}

fn classify(parent: BorrowedFd<'_>, name: &str, e: Errno) -> StepError {
    match kind_at(parent, name) {
        Ok(Kind::Symlink) => StepError::Symlink,
        Ok(Kind::Other(what)) => StepError::NotDir(what),
        Ok(_) => StepError::Io(e.into()),
        Err(e) => StepError::Io(e),
    }
}

/// Open the directory `name` in `parent`, creating it with exactly `mode`
/// (umask-independent) when missing, owned by root when `chown_root`.
pub(super) fn open_or_create_dir(
    parent: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    chown_root: bool,
) -> Result<OwnedFd, StepError> {
    if let Some(fd) = open_dir(parent, name)? {
        return Ok(fd);
    }
    let created = match rfs::mkdirat(parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(StepError::Io(e.into())),
    };
    let fd = open_dir(parent, name)?
        .ok_or_else(|| StepError::Io(io::Error::from(io::ErrorKind::NotFound)))?;
    if created {
        set_owner_mode(fd.as_fd(), mode, chown_root.then_some((0, 0))).map_err(StepError::Io)?;
    }
    Ok(fd)
}

/// `fchown` (when asked) then `fchmod` to exactly `mode`.
pub(super) fn set_owner_mode(
    fd: BorrowedFd<'_>,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rfs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    rfs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Walk `comps` from `start`, one component at a time, never following a
/// symlink. `Ok(None)` when a component is missing. On error, the index of
/// the failing component.
pub(super) fn walk_existing(
    start: BorrowedFd<'_>,
    comps: &[&str],
) -> Result<Option<OwnedFd>, (usize, StepError)> {
    let mut cur = start
        .try_clone_to_owned()
        .map_err(|e| (0, StepError::Io(e)))?;
    for (i, comp) in comps.iter().enumerate() {
        match open_dir(cur.as_fd(), comp) {
            Ok(Some(fd)) => cur = fd,
            Ok(None) => return Ok(None),
            Err(e) => return Err((i, e)),
        }
    }
    Ok(Some(cur))
}

/// Like [`walk_existing`], creating missing directories with `mode`.
pub(super) fn walk_create(
    start: BorrowedFd<'_>,
    comps: &[&str],
    mode: u32,
    chown_root: bool,
) -> Result<OwnedFd, (usize, StepError)> {
    let mut cur = start
        .try_clone_to_owned()
        .map_err(|e| (0, StepError::Io(e)))?;
    for (i, comp) in comps.iter().enumerate() {
        cur = open_or_create_dir(cur.as_fd(), comp, mode, chown_root).map_err(|e| (i, e))?;
    }
    Ok(cur)
}

/// Create a new file with its final mode and owner before the first byte of
/// `value` is written. Refuses to reuse or follow anything at `name`.
pub(super) fn create_secret_file(
    dir: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
    value: &[u8],
) -> io::Result<()> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(mode))?;
    // Still empty here: fix owner and exact mode (the umask may have
    // narrowed the create mode), then write.
    set_owner_mode(fd.as_fd(), mode, owner)?;
    let mut file = File::from(fd);
    file.write_all(value)?;
    Ok(())
}

/// The target of the symlink `name` in `dir`.
pub(super) fn read_link(dir: BorrowedFd<'_>, name: &str) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Remove `name` if it is a symbolic link; refuse anything else.
pub(super) fn unlink_if_symlink(dir: BorrowedFd<'_>, name: &str) -> io::Result<Kind> {
    let kind = kind_at(dir, name)?;
    if kind == Kind::Symlink {
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(kind)
}

/// Names in a directory (without `.` and `..`).
pub(super) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut d = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = d.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Remove `name` in `parent` and everything below it, without following
/// symbolic links (a symlink is removed, never its target).
pub(super) fn remove_tree(parent: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rfs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let dir = rfs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    for child in list(dir.as_fd())? {
        remove_tree(dir.as_fd(), &child)?;
    }
    drop(dir);
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the file `name` in `dir` holds exactly `value` with `mode` (and,
/// when given, `owner`). Anything unexpected (missing, a link, another
/// type, unreadable) counts as different.
pub(super) fn same_file(
    dir: BorrowedFd<'_>,
    name: &str,
    value: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> bool {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rfs::openat(dir, name, flags, Mode::empty()) else {
        return false;
    };
    let Ok(st) = rfs::fstat(&fd) else {
        return false;
    };
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile
        || st.st_mode & 0o7777 != mode
        || st.st_size as u64 != value.len() as u64
        || owner.is_some_and(|(u, g)| st.st_uid != u || st.st_gid != g)
    {
        return false;
    }
    let mut old = zeroize::Zeroizing::new(Vec::with_capacity(value.len()));
    let read = sealed_bundle::io::read_limited_into(File::from(fd), value.len() as u64, &mut old);
    read.is_ok() && old.as_slice() == value
}

/// A small state file of ours in `dir` (the records in `/run/secrets.d`):
/// its bytes when it is a regular file of at most `limit` bytes, else none
/// (missing, a link, too large or unreadable all count as no record).
pub(super) fn read_state_file(dir: BorrowedFd<'_>, name: &str, limit: u64) -> Option<Vec<u8>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::empty()).ok()?;
    let st = rfs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    sealed_bundle::io::read_limited(File::from(fd), limit).ok()
}

/// Replace the state file `name` in `dir` with `bytes` and a line break:
/// written under `tmp` (0600, root's when `chown_root`), fsynced, renamed
/// over it, the directory fsynced.
pub(super) fn write_state_file(
    dir: BorrowedFd<'_>,
    name: &str,
    tmp: &str,
    bytes: &[u8],
    chown_root: bool,
) -> io::Result<()> {
    match rfs::unlinkat(dir, tmp, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
    let fd: OwnedFd = rfs::openat(dir, tmp, flags, Mode::from_raw_mode(0o600))?;
    set_owner_mode(fd.as_fd(), 0o600, chown_root.then_some((0, 0)))?;
    let mut file = File::from(fd);
    file.write_all(bytes)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())?;
    drop(file);
    rfs::renameat(dir, tmp, dir, name)?;
    rfs::fsync(dir).map_err(Into::into)
}
