//! The boot-partition contract: where the builder puts the bundle and the
//! image key on the FAT boot partition (seal, inject, flash), where
//! `inspect` and the device look for them, and the bounded readers of both
//! files.

use super::error::BundleError;
use super::limits;
use std::path::Path;
use zeroize::Zeroizing;

// Each name is spelled once; the paths below are put together from them.
macro_rules! boot_subdir {
    () => {
        "sealed-secrets"
    };
}
macro_rules! bundle_file {
    () => {
        "bundle"
    };
}
macro_rules! key_file {
    () => {
        "image.key"
    };
}

/// Directory on the boot partition that holds the bundle and the key.
pub const BOOT_SUBDIR: &str = boot_subdir!();
/// File name of the bundle in [`BOOT_SUBDIR`].
pub const BUNDLE_FILE: &str = bundle_file!();
/// File name of the image key in [`BOOT_SUBDIR`].
pub const KEY_FILE: &str = key_file!();
/// The bundle, relative to the boot partition's root (`/`-separated).
pub const BUNDLE_PATH: &str = concat!(boot_subdir!(), "/", bundle_file!());
/// The image key (embedded mode, or put there by `flash`), relative to the
/// boot partition's root (`/`-separated).
pub const KEY_PATH: &str = concat!(boot_subdir!(), "/", key_file!());

/// Largest image key file accepted (a key file is 84 bytes).
pub const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Read a bundle file: a regular file (a FIFO, device, directory or
/// symbolic link is refused at once), checked against the size limit
/// before anything is allocated.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    read_boot_file(path, limits::MAX_BUNDLE_BYTES, "bundle")
}

/// Read an image key file: a regular file of at most
/// [`MAX_KEY_FILE_BYTES`] (FIFOs, devices, directories and symbolic links
/// are refused at once). The bytes are zeroized when dropped.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, BundleError> {
    read_boot_file(path, MAX_KEY_FILE_BYTES, "image key").map(Zeroizing::new)
}

/// The one bounded reader for files found on the boot partition.
fn read_boot_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, BundleError> {
    use crate::fsutil::{read_regular_bounded, ReadError};
    read_regular_bounded(path, limit).map_err(|e| match e {
        ReadError::TooLarge { size, limit } if what == "bundle" => {
            BundleError::TooLarge { size, limit }
        }
        ReadError::Io(source) => {
            BundleError::io(format!("reading {what} {}", path.display()), source)
        }
        other => BundleError::NotReadable {
            path: path.display().to_string(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_subdir_and_file_names() {
        assert_eq!(BUNDLE_PATH, format!("{BOOT_SUBDIR}/{BUNDLE_FILE}"));
        assert_eq!(KEY_PATH, format!("{BOOT_SUBDIR}/{KEY_FILE}"));
        assert_eq!(BUNDLE_PATH, "sealed-secrets/bundle");
        assert_eq!(KEY_PATH, "sealed-secrets/image.key");
    }

    #[test]
    fn key_reader_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, vec![b'a'; MAX_KEY_FILE_BYTES as usize + 1]).unwrap();
        let e = read_key_file(&p).unwrap_err();
        assert!(matches!(e, BundleError::NotReadable { .. }), "{e}");
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(read_key_file(&p).unwrap().as_slice(), b"x");
    }
}
