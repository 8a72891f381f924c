//! Sealing collected secrets for an image: under a fresh image key
//! (separate or embedded) or straight to a device recipient; the files that
//! go onto the boot partition; the key file that stays apart.

pub mod signing;

use crate::image::FatFile;
use crate::seal::signing::Signing;
use sealed_bundle::{
    self as bundle, BundleError, Contents, Header, ImageKey, PathPolicy, SealTo, Sealing, Stamp,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use zeroize::Zeroize;

/// Where the bundle and an embedded key go on the boot partition (the
/// contract lives in the device's bundle module).
pub use sealed_bundle::boot::{BUNDLE_PATH, KEY_PATH as EMBEDDED_KEY_PATH};

/// How the image key is handled.
#[derive(Debug, Clone)]
pub enum KeyMode {
    /// `NAME.key` beside the image (0600); the default.
    Separate,
    /// The key is stored on the boot partition next to the bundle.
    Embedded,
    /// Sealed straight to a device's age recipient: no image key at all.
    Recipient(age::x25519::Recipient),
}

impl KeyMode {
    pub fn name(&self) -> &'static str {
        match self {
            KeyMode::Separate => "separate",
            KeyMode::Embedded => "embedded",
            KeyMode::Recipient(_) => "recipient",
        }
    }
}

/// A sealed bundle and, unless sealed to a recipient, its image key.
pub struct Sealed {
    pub bundle: Vec<u8>,
    pub key: Option<ImageKey>,
    pub header: Header,
    pub mode: KeyMode,
}

/// How every bundle of a run is sealed besides its key mode: signed (or
/// not), and where its files may go (the recipe's `[policy]`).
pub struct SealOptions<'a> {
    pub signing: &'a Signing,
    pub paths: &'a PathPolicy,
}

/// Seal `contents` (a fresh image key per call), validated as a whole by
/// the device's rules and signed. `stamp` orders bundles on the device:
/// the real clock at sealing, never `SOURCE_DATE_EPOCH`.
pub fn seal(
    contents: &Contents,
    mode: &KeyMode,
    stamp: Stamp,
    how: &SealOptions<'_>,
) -> Result<Sealed, BundleError> {
    let sealing = |to| Sealing {
        to,
        stamp,
        signing: how.signing.key(),
        paths: how.paths,
    };
    let (bundle, key) = match mode {
        KeyMode::Recipient(r) => (
            bundle::seal_bundle(contents, &sealing(SealTo::Recipient(r)))?,
            None,
        ),
        KeyMode::Separate | KeyMode::Embedded => {
            let key = ImageKey::generate();
            (
                bundle::seal_bundle(contents, &sealing(SealTo::ImageKey(&key)))?,
                Some(key),
            )
        }
    };
    let header = Header::parse(&bundle)?;
    Ok(Sealed {
        bundle,
        key,
        header,
        mode: mode.clone(),
    })
}

impl Sealed {
    /// The files for the boot partition: the bundle, and the key when embedded.
    /// Zeroize them with [`zeroize_files`] once written.
    pub fn boot_files(&self) -> Vec<FatFile> {
        let mut files = vec![FatFile {
            path: BUNDLE_PATH.into(),
            data: self.bundle.clone(),
        }];
        if let (KeyMode::Embedded, Some(k)) = (&self.mode, &self.key) {
            files.push(FatFile {
                path: EMBEDDED_KEY_PATH.into(),
                data: k.to_file_text().as_bytes().to_vec(),
            });
        }
        files
    }

    /// In separate key mode, write the key file (new file, 0600, fsynced).
    /// Returns whether a key file was written.
    pub fn write_key_file(&self, path: &Path) -> std::io::Result<bool> {
        let (KeyMode::Separate, Some(k)) = (&self.mode, &self.key) else {
            return Ok(false);
        };
        write_private(path, k.to_file_text().as_bytes())?;
        Ok(true)
    }
}

/// A new file only its owner can read (0600), synced: keys and bundles.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Overwrite the data of boot files (which may hold an embedded key).
pub fn zeroize_files(files: &mut [FatFile]) {
    files.iter_mut().for_each(|f| f.data.zeroize());
}
