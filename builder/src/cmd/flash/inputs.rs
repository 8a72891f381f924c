//! Step 1 of a flash: the image, the bmap, the device bundle and the key,
//! opened and checked before the target is looked at.

use std::fs::File;
use std::path::{Path, PathBuf};

use sealed_bundle::ImageKey;
use zeroize::Zeroizing;

use super::{boot, write, FlashError, FlashOptions};
use crate::image::{self, PartitionSelector};
use crate::io::compressed::{Format, ImageName};
use crate::io::limit::{self, BoundedReadError};
use crate::output::bmap::{self, Bmap};
use crate::seal::BUNDLE_PATH;

/// What a flash writes, opened and checked.
pub(super) struct Inputs<'a> {
    pub image: &'a Path,
    pub format: Format,
    pub bmap_path: Option<PathBuf>,
    pub bmap: Option<Bmap>,
    /// The image's size: the bmap's, a plain image's length; for a
    /// compressed image without a bmap known only once measured.
    pub image_size: Option<u64>,
    /// The device bundle's bytes and the key file found beside it.
    pub device_bundle: Option<(Zeroizing<Vec<u8>>, Option<PathBuf>)>,
    pub key_path: Option<PathBuf>,
    pub key: Option<(ImageKey, Zeroizing<String>)>,
}

impl<'a> Inputs<'a> {
    /// Open and check the inputs of a flash of `image`.
    pub fn open(image: &'a Path, opts: &FlashOptions) -> Result<Inputs<'a>, FlashError> {
        let image_md = std::fs::metadata(image).map_err(|e| FlashError::ImageOpen {
            image: image.to_path_buf(),
            cause: e,
        })?;
        if !image_md.is_file() {
            return Err(FlashError::ImageNotFile {
                image: image.to_path_buf(),
            });
        }
        let format = image_format(image)?;
        let compressed = format.is_compressed();
        let bmap_path = match (&opts.bmap, opts.no_bmap) {
            (_, true) => None,
            (Some(p), false) => Some(p.clone()),
            (None, false) => default_bmap(image),
        };
        let bmap = bmap_path.as_deref().map(load_bmap).transpose()?;
        if let (Some(b), Some(p)) = (&bmap, &bmap_path) {
            let actual = if compressed {
                // Only a declared size larger than the bmap's is certainly wrong
                // (a multi-frame file declares the first frame only).
                (format == Format::Zstd)
                    .then(|| write::zstd_declared_size(image))
                    .flatten()
                    .filter(|&n| n > b.image_size)
            } else {
                Some(image_md.len()).filter(|&n| n != b.image_size)
            };
            if let Some(image_size) = actual {
                return Err(FlashError::BmapSizeMismatch {
                    bmap: p.clone(),
                    bmap_size: b.image_size,
                    image: image.to_path_buf(),
                    image_size,
                });
            }
        }
        let image_size = match (&bmap, compressed) {
            (Some(b), _) => Some(b.image_size),
            (None, false) => Some(image_md.len()),
            (None, true) => None,
        };
        let device_bundle = opts.bundle.as_deref().map(load_bundle).transpose()?;
        let key_path = opts
            .key
            .clone()
            .or_else(|| device_bundle.as_ref().and_then(|(_, k)| k.clone()));
        let key = key_path.as_deref().map(load_key).transpose()?;
        Ok(Inputs {
            image,
            format,
            bmap_path,
            bmap,
            image_size,
            device_bundle,
            key_path,
            key,
        })
    }

    /// The input files, by what they are (none may be the target).
    pub fn files<'s>(&'s self, opts: &'s FlashOptions) -> Vec<(&'static str, &'s Path)> {
        [
            Some(("image", self.image)),
            self.bmap_path.as_deref().map(|p| ("bmap", p)),
            self.key_path.as_deref().map(|p| ("key file", p)),
            opts.bundle.as_deref().map(|p| ("bundle", p)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The key must fit the bundle it will unlock: the device bundle's, or
    /// a plain image's own (a compressed image's is checked after writing,
    /// on the target).
    pub fn check_key_fits(&self, partition: &PartitionSelector) -> Result<(), FlashError> {
        let Some((k, _)) = &self.key else {
            return Ok(());
        };
        let keyp = self.key_path.clone().unwrap_or_default();
        let refuse = |reason: String| FlashError::KeyMismatch {
            key: keyp.clone(),
            reason,
            image_written: false,
        };
        if let Some((bundle, _)) = &self.device_bundle {
            return match boot::key_mismatch(Some(bundle.as_slice()), k) {
                Some(reason) => Err(refuse(reason)),
                None => Ok(()),
            };
        }
        if self.format.is_compressed() {
            return Ok(());
        }
        let in_image = |e: image::ImageError| refuse(format!("{}: {e}", self.image.display()));
        let boot = image::read_table(self.image)
            .and_then(|info| image::find_boot_partition(&info, partition))
            .map_err(in_image)?;
        let bundle = image::fat_read_file(self.image, &boot, BUNDLE_PATH).map_err(in_image)?;
        let bundle = bundle.map(Zeroizing::new);
        match boot::key_mismatch(bundle.as_deref().map(|v| v.as_slice()), k) {
            Some(reason) => Err(refuse(reason)),
            None => Ok(()),
        }
    }
}

/// The bmap used by default for `image`, if one exists.
pub fn default_bmap(image: &Path) -> Option<PathBuf> {
    let s = image.as_os_str().to_string_lossy().into_owned();
    let name = ImageName::parse(&s);
    let mut candidates = vec![format!("{s}.bmap")];
    if name.format == Format::Zstd {
        let img = if name.img { ".img" } else { "" };
        candidates.push(format!("{}{img}.bmap", name.stem));
    }
    if name.img && name.format != Format::Xz {
        candidates.push(format!("{}.bmap", name.stem));
    }
    candidates
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Load and check a bmap file.
pub fn load_bmap(path: &Path) -> Result<Bmap, FlashError> {
    let open_err = |e| FlashError::BmapOpen {
        bmap: path.to_path_buf(),
        cause: e,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let bytes = limit::read_bounded(&mut f, bmap::MAX_BMAP_BYTES, 0).map_err(|e| match e {
        BoundedReadError::TooLarge { limit } => FlashError::BmapMalformed {
            bmap: path.to_path_buf(),
            reason: format!("larger than {limit} bytes"),
        },
        BoundedReadError::Io(e) => open_err(e),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FlashError::BmapMalformed {
        bmap: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })?;
    Bmap::parse(text).map_err(|reason| FlashError::BmapMalformed {
        bmap: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// A device bundle for `--bundle`: the file, or `DIR/sealed-secrets/bundle`
/// of a device directory (from `build --bundles-only`) with the only
/// `*.key` of that directory. The clear header is checked here.
fn load_bundle(path: &Path) -> Result<(Zeroizing<Vec<u8>>, Option<PathBuf>), FlashError> {
    let invalid = |reason: String| FlashError::BundleInvalid {
        bundle: path.to_path_buf(),
        reason,
    };
    let (file, key) = if path.is_dir() {
        let keys: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| invalid(e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "key") && p.is_file())
            .collect();
        if keys.len() > 1 {
            return Err(invalid(format!(
                "{} key files in the directory; name the one with --key",
                keys.len()
            )));
        }
        (path.join(BUNDLE_PATH), keys.into_iter().next())
    } else {
        (path.to_path_buf(), None)
    };
    let bundle_error = |e: sealed_bundle::BundleError| {
        invalid(format!(
            "{}: {}",
            file.display(),
            sealed_bundle::report::chain(&e)
        ))
    };
    let bytes = sealed_bundle::read_bundle_file(&file).map_err(bundle_error)?;
    sealed_bundle::Header::parse(&bytes).map_err(bundle_error)?;
    Ok((Zeroizing::new(bytes), key))
}

/// Read and parse a key file (bounded, regular files only: the device's
/// own reader); the text written to the boot partition is the canonical
/// key file text.
fn load_key(path: &Path) -> Result<(ImageKey, Zeroizing<String>), FlashError> {
    let invalid = |reason: String| FlashError::KeyInvalid {
        key: path.to_path_buf(),
        reason,
    };
    // A key file on the build host may be a symbolic link (into a secrets
    // directory, say), as before: the link is resolved here; what it points
    // to must still be a regular file of at most 1 KiB.
    let real = std::fs::canonicalize(path).map_err(|e| invalid(e.to_string()))?;
    let key = ImageKey::from_file(&real).map_err(|e| invalid(sealed_bundle::report::chain(&e)))?;
    let text = key.to_file_text();
    Ok((key, text))
}

fn image_format(path: &Path) -> Result<Format, FlashError> {
    Format::detect(path).map_err(|e| FlashError::ImageOpen {
        image: path.to_path_buf(),
        cause: e,
    })
}
