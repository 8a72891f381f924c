//! Finding the system tools build-image runs (mke2fs, debugfs): `$PATH`
//! first, then the sbin directories.
//!
//! This file is also compiled into the test-support crate
//! (`testkit/src/tools.rs` includes it by path), which must not depend on
//! build-image: one lookup for the product and for its tests. It may use
//! only `std`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Directories searched for system tools besides `$PATH` (Debian keeps
/// sfdisk, mkfs.vfat, mke2fs and debugfs in /usr/sbin, which a normal
/// user's `$PATH` often lacks).
pub const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// An executable named `name` in `$PATH`, then in [`SBIN_DIRS`].
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
