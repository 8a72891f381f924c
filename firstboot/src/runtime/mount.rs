//! The ramfs under `/run/secrets.d`: never swapped out (tmpfs can be).

use rustix::fs as rfs;
use rustix::mount::{mount, MountFlags};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// `statfs.f_type` of a ramfs (`RAMFS_MAGIC` in `linux/magic.h`).
pub const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// The file system type of the directory open at `dir`.
pub(super) fn fs_type(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rfs::fstatfs(dir)?;
    // `f_type` is signed on some targets and 32 bits on others.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_type as u64) & 0xffff_ffff)
}

/// Whether `dir` is the root of a mount (its device differs from its
/// parent's).
pub(super) fn is_mount_point(parent: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(rfs::fstat(parent)?.st_dev != rfs::fstat(dir)?.st_dev)
}

/// Mount a fresh ramfs (nosuid, nodev, noexec; its root directory with
/// `mode`) on the directory open at `dir` (`host_path` is where it is, used
/// only when `/proc` is not mounted). Going through `/proc/self/fd` mounts
/// on exactly the directory we opened without following symbolic links,
/// rather than re-resolving the path.
pub(super) fn mount_ramfs(dir: BorrowedFd<'_>, host_path: &Path, mode: u32) -> io::Result<()> {
    let proc_fd = Path::new("/proc/self/fd");
    let target = if proc_fd.is_dir() {
        proc_fd.join(dir.as_raw_fd().to_string())
    } else {
        PathBuf::from(host_path)
    };
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let data = std::ffi::CString::new(format!("mode={mode:04o}")).map_err(io::Error::other)?;
    mount("ramfs", &target, "ramfs", flags, Some(data.as_c_str()))?;
    Ok(())
}
