//! Files under a directory descriptor, never following a link: a [`Dir`]
//! is opened once (the path its user gave, links and all), and everything
//! below it is reached component by component with `openat(…,
//! O_NOFOLLOW)`, so a link planted inside can neither be read through nor
//! written through. Files are checked to be regular on the open
//! descriptor and read with a bound; opening never blocks (a FIFO or a
//! device is refused at once). Nothing here knows what the files mean.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why an operation under a [`Dir`] failed; `path` is the full path, for
/// messages.
#[derive(Debug, thiserror::Error)]
pub enum AtError {
    #[error("{path} is {what}, not {want}")]
    Kind {
        path: PathBuf,
        what: &'static str,
        want: &'static str,
    },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
}

impl AtError {
    pub fn path(&self) -> &Path {
        match self {
            AtError::Kind { path, .. }
            | AtError::TooLarge { path, .. }
            | AtError::Io { path, .. } => path,
        }
    }
}

/// What a directory entry is (links are never followed to find out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A link, a FIFO, a device, a socket: named for messages.
    Other(&'static str),
}

impl Kind {
    fn of(file_type: FileType) -> Kind {
        match file_type {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Other("a symbolic link"),
            FileType::Fifo => Kind::Other("a FIFO"),
            FileType::CharacterDevice => Kind::Other("a character device"),
            FileType::BlockDevice => Kind::Other("a block device"),
            FileType::Socket => Kind::Other("a socket"),
            FileType::Unknown => Kind::Other("of an unknown type"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Other(what) => what,
        }
    }
}

/// An open directory.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Open the directory at `path` (links in `path` itself are followed:
    /// it is what the user named).
    pub fn open(path: &Path) -> Result<Dir, AtError> {
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The full path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full path of an entry, for messages.
    pub fn child_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, or `None` when it does not exist.
    pub fn kind(&self, name: &str) -> Result<Option<Kind>, AtError> {
        check_name(&self.path, name)?;
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Kind::of(FileType::from_raw_mode(st.st_mode)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io_error(&self.child_path(name), e)),
        }
    }

    /// Whether `name` has other hard links (links not followed); false
    /// when it does not exist.
    pub fn has_other_links(&self, name: &str) -> Result<bool, AtError> {
        check_name(&self.path, name)?;
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(st.st_nlink > 1),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(io_error(&self.child_path(name), e)),
        }
    }

    fn wrong_kind(&self, name: &str, want: &'static str) -> AtError {
        let what = match self.kind(name) {
            Ok(Some(k)) => k.describe(),
            _ => "not accessible",
        };
        AtError::Kind {
            path: self.child_path(name),
            what,
            want,
        }
    }

    /// The subdirectory `name`, or `None` when it does not exist. A link
    /// (to a directory or not) is refused.
    pub fn sub(&self, name: &str) -> Result<Option<Dir>, AtError> {
        check_name(&self.path, name)?;
        match rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.child_path(name),
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                Err(self.wrong_kind(name, "a directory"))
            }
            Err(e) => Err(io_error(&self.child_path(name), e)),
        }
    }

    /// The subdirectory `name`, created (with `mode`) when missing.
    pub fn sub_or_create(&self, name: &str, mode: u32) -> Result<Dir, AtError> {
        if let Some(d) = self.sub(name)? {
            return Ok(d);
        }
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io_error(&self.child_path(name), e)),
        }
        self.sub(name)?
            .ok_or_else(|| io_error(&self.child_path(name), rustix::io::Errno::NOENT))
    }

    /// Open `name` for reading: a regular file, never a link, never
    /// blocking. `None` when it does not exist.
    fn open_regular(&self, name: &str, flags: OFlags) -> Result<Option<(File, u64)>, AtError> {
        check_name(&self.path, name)?;
        let fd = match rfs::openat(
            &self.fd,
            name,
            flags | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO | rustix::io::Errno::ISDIR) => {
                return Err(self.wrong_kind(name, "a regular file"))
            }
            Err(e) => return Err(io_error(&self.child_path(name), e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_error(&self.child_path(name), e))?;
        let kind = Kind::of(FileType::from_raw_mode(st.st_mode));
        if kind != Kind::File {
            return Err(AtError::Kind {
                path: self.child_path(name),
                what: kind.describe(),
                want: "a regular file",
            });
        }
        Ok(Some((File::from(fd), st.st_size as u64)))
    }

    /// [`Dir::open_regular`] for reading, refusing a file larger than
    /// `limit` at once.
    fn open_bounded(&self, name: &str, limit: u64) -> Result<Option<(File, u64)>, AtError> {
        let Some((f, size)) = self.open_regular(name, OFlags::RDONLY)? else {
            return Ok(None);
        };
        if size > limit {
            return Err(self.too_large(name, limit));
        }
        Ok(Some((f, size)))
    }

    fn too_large(&self, name: &str, limit: u64) -> AtError {
        AtError::TooLarge {
            path: self.child_path(name),
            limit,
        }
    }

    /// Read the regular file `name`, at most `limit` bytes (more is
    /// refused, never truncated). `None` when it does not exist.
    pub fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, AtError> {
        let Some((f, size)) = self.open_bounded(name, limit)? else {
            return Ok(None);
        };
        let mut f = f;
        let mut out = super::limit::read_bounded(&mut f, limit, size).map_err(|e| match e {
            super::limit::BoundedReadError::TooLarge { .. } => self.too_large(name, limit),
            super::limit::BoundedReadError::Io(e) => AtError::Io {
                path: self.child_path(name),
                cause: e,
            },
        })?;
        Ok(Some(std::mem::take(&mut *out)))
    }

    /// The SHA-256 of the regular file `name` (at most `limit` bytes), read
    /// in chunks. `None` when it does not exist.
    pub fn sha256(&self, name: &str, limit: u64) -> Result<Option<[u8; 32]>, AtError> {
        let Some((mut f, _)) = self.open_bounded(name, limit)? else {
            return Ok(None);
        };
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(AtError::Io {
                        path: self.child_path(name),
                        cause: e,
                    })
                }
            };
            total += n as u64;
            if total > limit {
                return Err(self.too_large(name, limit));
            }
            hasher.update(&chunk[..n]);
        }
        Ok(Some(hasher.finalize().into()))
    }

    /// Open the existing regular file `name` for writing in place (never
    /// through a link, nor one with other hard links: a write would change
    /// them too); its current length comes with it.
    pub fn open_for_update(&self, name: &str) -> Result<Option<(File, u64)>, AtError> {
        let Some((f, len)) = self.open_regular(name, OFlags::WRONLY)? else {
            return Ok(None);
        };
        let st = rfs::fstat(&f).map_err(|e| io_error(&self.child_path(name), e))?;
        if st.st_nlink > 1 {
            return Err(AtError::Kind {
                path: self.child_path(name),
                what: "a file with other hard links",
                want: "a file of its own",
            });
        }
        Ok(Some((f, len)))
    }

    /// The entries, sorted by name (`.` and `..` left out). Names that
    /// are not UTF-8 come back lossily converted, kind and all, so that
    /// callers can refuse them by name.
    pub fn entries(&self) -> Result<Vec<(String, Kind)>, AtError> {
        let mut dir = rfs::Dir::read_from(&self.fd).map_err(|e| io_error(&self.path, e))?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_error(&self.path, e))?;
            let raw = entry.file_name().to_bytes();
            if raw == b"." || raw == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(raw).into_owned();
            let kind = match rfs::statat(&self.fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Kind::of(FileType::from_raw_mode(st.st_mode)),
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io_error(&self.child_path(&name), e)),
            };
            let kind = if std::str::from_utf8(raw).is_err() {
                Kind::Other("named in bytes that are not UTF-8")
            } else {
                kind
            };
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Create the new file `name` with exactly `mode`, write `data`, fsync.
    /// Refused when anything (a link too) already has that name.
    pub fn write_new(&self, name: &str, data: &[u8], mode: u32) -> Result<(), AtError> {
        check_name(&self.path, name)?;
        let path = self.child_path(name);
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| io_error(&path, e))?;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_error(&path, e))?;
        let mut f = File::from(fd);
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|cause| AtError::Io { path, cause })
    }

    /// Move `name` to `to/to_name`, replacing what is there (a link there
    /// is replaced, never followed).
    pub fn rename(&self, name: &str, to: &Dir, to_name: &str) -> Result<(), AtError> {
        check_name(&self.path, name)?;
        check_name(&to.path, to_name)?;
        rfs::renameat(&self.fd, name, &to.fd, to_name)
            .map_err(|e| io_error(&to.child_path(to_name), e))
    }

    /// Move `name` to `to/to_name` only if nothing has that name there
    /// (`RENAME_NOREPLACE`). Returns false when something does.
    pub fn rename_noreplace(&self, name: &str, to: &Dir, to_name: &str) -> Result<bool, AtError> {
        check_name(&self.path, name)?;
        check_name(&to.path, to_name)?;
        match rfs::renameat_with(&self.fd, name, &to.fd, to_name, rfs::RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(io_error(&to.child_path(to_name), e)),
        }
    }

    /// Remove `name`: a file or a link itself, or a directory with
    /// everything in it (links inside removed, never followed). Returns
    /// false when it did not exist.
    pub fn remove(&self, name: &str) -> Result<bool, AtError> {
        self.remove_at_depth(name, 0)
    }

    fn remove_at_depth(&self, name: &str, depth: usize) -> Result<bool, AtError> {
        // Deeper than anything this code makes: refused, not recursed into.
        const MAX_DEPTH: usize = 64;
        match self.kind(name)? {
            None => Ok(false),
            Some(Kind::Dir) if depth >= MAX_DEPTH => Err(AtError::Kind {
                path: self.child_path(name),
                what: "a directory nested too deeply",
                want: "one to remove",
            }),
            Some(Kind::Dir) => {
                if let Some(sub) = self.sub(name)? {
                    for (n, _) in sub.entries()? {
                        sub.remove_at_depth(&n, depth + 1)?;
                    }
                }
                match rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
                    Err(e) => Err(io_error(&self.child_path(name), e)),
                }
            }
            Some(_) => match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
                Err(e) => Err(io_error(&self.child_path(name), e)),
            },
        }
    }

    /// fsync the directory (renames and removals in it become durable).
    pub fn sync(&self) -> Result<(), AtError> {
        rfs::fsync(&self.fd).map_err(|e| io_error(&self.path, e))
    }

    /// Take an exclusive `flock` on the file `name` (created 0600 when
    /// missing, never through a link), waiting for it, or (`wait` false)
    /// `None` when another holds it.
    /// Take an exclusive `flock` on this directory itself (waiting, or
    /// not: `Ok(false)` when another holds it). Unlike a lock file, the
    /// directory cannot be removed and made anew under a holder, so two
    /// holders never coexist. Released when this `Dir` is closed.
    pub fn lock_self(&self, wait: bool) -> Result<bool, AtError> {
        let op = if wait {
            rfs::FlockOperation::LockExclusive
        } else {
            rfs::FlockOperation::NonBlockingLockExclusive
        };
        match rfs::flock(&self.fd, op) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(false),
            Err(e) => Err(io_error(&self.path, e)),
        }
    }

    pub fn lock(&self, name: &str, wait: bool) -> Result<Option<File>, AtError> {
        check_name(&self.path, name)?;
        let path = self.child_path(name);
        let fd = match rfs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO | rustix::io::Errno::ISDIR) => {
                return Err(self.wrong_kind(name, "a regular file"))
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| io_error(&path, e))?;
        let kind = Kind::of(FileType::from_raw_mode(st.st_mode));
        if kind != Kind::File {
            return Err(AtError::Kind {
                path,
                what: kind.describe(),
                want: "a regular file",
            });
        }
        let op = if wait {
            rfs::FlockOperation::LockExclusive
        } else {
            rfs::FlockOperation::NonBlockingLockExclusive
        };
        match rfs::flock(&fd, op) {
            Ok(()) => Ok(Some(File::from(fd))),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One path component: not empty, not `.`/`..`, no `/` or NUL.
fn check_name(dir: &Path, name: &str) -> Result<(), AtError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(AtError::Io {
            path: dir.join(name),
            cause: io::Error::new(io::ErrorKind::InvalidInput, "not a single file name"),
        });
    }
    Ok(())
}

fn io_error(path: &Path, e: rustix::io::Errno) -> AtError {
    AtError::Io {
        path: path.to_path_buf(),
        cause: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_devices_are_refused_and_nothing_outside_changes() {
        let (tmp, root) = testkit::scratch("root");
        std::fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("file-link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir-link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        testkit::mkfifo(&root.join("fifo"));
        std::os::unix::fs::symlink(tmp.path().join("missing"), root.join("lock")).unwrap();
        let d = Dir::open(&root).unwrap();
        for name in ["file-link", "zero", "fifo"] {
            assert!(
                matches!(d.read(name, 10), Err(AtError::Kind { .. })),
                "{name}"
            );
        }
        assert!(matches!(d.sub("dir-link"), Err(AtError::Kind { .. })));
        assert!(matches!(
            d.sub_or_create("dir-link", 0o755),
            Err(AtError::Kind { .. })
        ));
        assert!(matches!(d.lock("lock", true), Err(AtError::Kind { .. })));
        assert!(!tmp.path().join("missing").exists());
        assert!(matches!(
            d.write_new("file-link", b"x", 0o600),
            Err(crate::io::at::AtError::Io { .. })
        ));
        d.remove("dir-link").unwrap();
        d.remove("file-link").unwrap();
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(d.read("nothing", 1).unwrap().is_none());
        d.write_new("f", b"0123456789", 0o640).unwrap();
        assert!(matches!(d.read("f", 9), Err(AtError::TooLarge { .. })));
        assert_eq!(d.read("f", 10).unwrap().unwrap(), b"0123456789");
        assert_eq!(
            d.sha256("f", 10).unwrap().unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"0123456789"))
        );
        let kinds: Vec<_> = d.entries().unwrap();
        assert!(kinds.contains(&("fifo".into(), Kind::Other("a FIFO"))));
        assert!(kinds.contains(&("zero".into(), Kind::Other("a symbolic link"))));
    }
}
