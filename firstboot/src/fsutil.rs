//! Crash-safe file primitives: temp file, fsync, rename, directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Failure injection for the crash-safety tests: when the environment
/// variable `SEALED_FIRSTBOOT_FAILPOINT` equals `name`, the process exits
/// at once with status 86, as if the power had been cut there.
pub fn failpoint(name: &str) {
    if std::env::var_os("SEALED_FIRSTBOOT_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("sealed-firstboot: failpoint {name} hit, exiting");
        std::process::exit(86);
    }
}

/// Whether `root` is this machine's own `/` (then the system is the host:
/// units may be restarted, a ramfs mounted). `--root /`, `--root //` and a
/// link to `/` are; any other tree is not.
pub fn is_host_root(root: &Path) -> bool {
    fs::canonicalize(root).is_ok_and(|p| p == Path::new("/"))
}

/// `root/rel`, once no existing component of `rel` (below `root`) is a
/// symbolic link, when `root` is a tree and not the host's `/`. Absolute
/// links in a tree point at the host (`etc -> /etc`, `var -> /var`), and
/// relative ones may climb out of it: with `--root`, nothing outside the
/// tree is read or written, so such a tree is refused. On the device
/// itself (`root` is `/`) the path is the system's own.
///
/// Run as root (a deploy user's `sudo sealed-firstboot … --root TREE`),
/// a check at one moment says nothing about the next if another user can
/// change the tree: they could swap a directory for a link to the host's
/// own (`/var`, or `/` itself) between the check and the use, and have
/// their bundle land in the device's store. So, as root, the tree, every
/// directory above it and every existing directory of `rel` must be
/// unchangeable by other users ([`others_may_change`]).
pub fn in_root(root: &Path, rel: &str) -> io::Result<std::path::PathBuf> {
    let full = root.join(rel.trim_start_matches('/'));
    if is_host_root(root) {
        return Ok(full);
    }
    let guarded = rustix::process::geteuid().is_root();
    if guarded {
        check_tree_owner(root)?;
    }
    let mut at = root.to_path_buf();
    for comp in Path::new(rel.trim_start_matches('/')).components() {
        let std::path::Component::Normal(name) = comp else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain path below the root", full.display()),
            ));
        };
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link: with --root nothing outside the tree is read or written, and a link in it may lead out (use a tree without it, or run on the device)",
                    at.display()
                )))
            }
            Ok(m) if guarded && m.is_dir() && others_may_change(&m, false) => {
                return Err(changeable(&at, &m))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(full)
}

/// Whether a user other than root could change the directory `meta`
/// describes (rename an entry of it, or put a link in its place): it is
/// not root's, or it is writable by others (or by a group other than
/// root's). A sticky directory (`/tmp`) lets others remove only their own
/// entries: `sticky_ok` accepts it, for the directories above a tree.
pub fn others_may_change(meta: &fs::Metadata, sticky_ok: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    let writable = mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.gid() != 0);
    meta.uid() != 0 || (writable && !(sticky_ok && mode & 0o1000 != 0))
}

fn changeable(dir: &Path, meta: &fs::Metadata) -> io::Error {
    use std::os::unix::fs::MetadataExt;
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} may be changed by other users than root (owner {}, group {}, mode {:04o}): \
             as root with --root, the tree, every directory above it and every directory in it \
             sealed-firstboot uses must be root's and writable by no one else, or another user \
             could swap one for a link (to the device's own store) while it works; \
             run it as that user instead, or on a tree only root can change",
            dir.display(),
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        ),
    )
}

/// As root: the tree at `root` (the nearest existing directory, if it does
/// not exist yet) and every directory above it are unchangeable by others.
fn check_tree_owner(root: &Path) -> io::Result<()> {
    let mut existing = root;
    let canonical = loop {
        match fs::canonicalize(existing) {
            Ok(c) => break c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => break fs::canonicalize(".")?,
            },
            Err(e) => return Err(e),
        }
    };
    for (i, dir) in canonical.ancestors().enumerate() {
        let meta = fs::symlink_metadata(dir)?;
        if others_may_change(&meta, i > 0) {
            return Err(changeable(dir, &meta));
        }
    }
    Ok(())
}

/// fsync a directory so that renames and unlinks inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `path` with `mode` (never wider at any moment), write `data`,
/// fsync, and rename into place; then fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    via_temp(path, "tmp", |dir, tmp| {
        write_new(tmp, data, mode)?;
        fs::rename(tmp, path)?;
        sync_dir(dir)
    })
}

/// Run `f` with `path`'s directory and a private temporary name beside it
/// (`.NAME.TAG-PID`, removed first); the temporary file is gone afterwards
/// unless `f` renamed it into place.
fn via_temp<T>(
    path: &Path,
    tag: &str,
    f: impl FnOnce(&Path, &Path) -> io::Result<T>,
) -> io::Result<T> {
    // A bare file name's directory is the current one.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{tag}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let result = f(dir, &tmp);
    let _ = fs::remove_file(&tmp);
    result
}

/// Write a new file that must not exist yet, with `mode`, and fsync it.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Create a directory with `mode` (and its parents with 0755).
pub fn create_dir_all_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Overwrite a file's bytes with zeros, fsync, unlink it and fsync its
/// directory. Returns false when the file did not exist.
pub fn shred_and_remove(path: &Path) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_file() {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)?;
        // At least two writes, so that the fail point below sees a file
        // that is partly overwritten.
        let chunk = meta.len().div_ceil(2).clamp(1, 64 * 1024) as usize;
        let zeros = vec![0u8; chunk];
        let mut left = meta.len();
        let mut first = true;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
            if std::mem::take(&mut first) && left > 0 {
                // A power cut with the file partly overwritten.
                if std::env::var_os("SEALED_FIRSTBOOT_FAILPOINT")
                    .is_some_and(|v| v == "shred-partial")
                {
                    f.sync_all()?;
                }
                failpoint("shred-partial");
            }
        }
        f.sync_all()?;
    }
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(true)
}

/// Create `path` with `data` only if it does not exist yet: written and
/// fsynced under a private temporary name, then moved into place with
/// `RENAME_NOREPLACE`, so an existing file is never replaced and nobody sees
/// a partial one. Returns false (and leaves the existing file) when `path`
/// already exists.
pub fn create_exclusive(path: &Path, data: &[u8], mode: u32) -> io::Result<bool> {
    via_temp(path, "new", |dir, tmp| {
        write_new(tmp, data, mode)?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                sync_dir(dir)?;
                Ok(true)
            }
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    })
}

/// An exclusive lock held until dropped (`flock` on a lock file).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the exclusive lock on `path` (created 0600 when missing), waiting
/// at most `wait`. `on_wait` is called once if the lock is busy.
pub fn lock_exclusive(
    path: &Path,
    wait: std::time::Duration,
    on_wait: impl FnOnce(),
) -> io::Result<Lock> {
    use rustix::fs::{flock, FlockOperation};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)?;
    let start = std::time::Instant::now();
    let mut on_wait = Some(on_wait);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                if let Some(f) = on_wait.take() {
                    f();
                }
                if start.elapsed() >= wait {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another sealed-firstboot still holds the lock after {} s",
                            wait.as_secs()
                        ),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_with_links_out_are_refused_and_the_host_root_is_itself() {
        assert!(is_host_root(Path::new("/")));
        assert!(is_host_root(Path::new("//")));
        let (dir, _) = testkit::scratch("root");
        assert!(!is_host_root(dir.path()));
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("var/lib")).unwrap();
        assert_eq!(
            in_root(&root, "var/lib/sealed-secrets/identity").unwrap(),
            root.join("var/lib/sealed-secrets/identity")
        );
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let e = in_root(&root, "etc/passwd").unwrap_err().to_string();
        assert!(e.contains("etc is a symbolic link"), "{e}");
        std::os::unix::fs::symlink("../..", root.join("var/lib/sealed-secrets")).unwrap();
        assert!(in_root(&root, "var/lib/sealed-secrets/current").is_err());
        assert!(in_root(&root, "../x").is_err());
        // A link to / is the host itself.
        std::os::unix::fs::symlink("/", dir.path().join("slash")).unwrap();
        assert!(is_host_root(&dir.path().join("slash")));
    }

    #[test]
    fn create_exclusive_never_replaces() {
        let (dir, p) = testkit::scratch("identity");
        assert!(create_exclusive(&p, b"first", 0o400).unwrap());
        assert!(!create_exclusive(&p, b"second", 0o400).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp left");
    }

    #[test]
    fn lock_is_exclusive_and_waits_bounded() {
        let (_dir, p) = testkit::scratch("lock");
        let held = lock_exclusive(&p, std::time::Duration::from_secs(1), || {}).unwrap();
        let mut waited = false;
        let err = lock_exclusive(&p, std::time::Duration::from_millis(100), || waited = true)
            .unwrap_err();
        assert!(waited);
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(held);
        lock_exclusive(&p, std::time::Duration::from_millis(100), || {}).unwrap();
    }
}
