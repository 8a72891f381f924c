//! `build-image flash IMAGE TARGET`: write an image (`.img`, `.img.zst`, `.img.xz`)
//! to a disk or a file, bmap-aware; put the image key onto its boot
//! partition; read everything back.
//!
//! Order of work, so that a refusal never writes a byte:
//!
//! 1. the image, the bmap (own reader, [`bmap`]) and the key are opened and
//!    checked: a malformed bmap, a bmap whose `ImageSize` differs from the
//!    image, an unreadable or invalid key, and (for a plain `.img`) a key
//!    that does not belong to the image's bundle are refused;
//! 2. the target is resolved (symlinks followed: messages name the real
//!    device) and checked ([`safety`]): the system disk (`/`, swap), a
//!    mounted device, a read-only one, one smaller than the image, and
//!    without `--yes` a partition or a non-removable disk are refused; a
//!    block device is then opened `O_EXCL`, which the kernel refuses while
//!    anything holds it;
//! 3. the image is streamed onto the target: with a bmap only the mapped
//!    ranges, each checked against its SHA-256 as it goes by; without one
//!    everything (a fresh regular file target stays sparse: all-zero blocks
//!    are not written);
//! 4. with `verify`, every written range is read back (page cache dropped
//!    first) and compared;
//! 5. with a key, the FAT boot partition is found on the target, the bundle
//!    there is checked against the key's id, `sealed-secrets/image.key` is
//!    written in place and read back.

mod boot;
pub mod safety;
mod write;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sealed_firstboot::bundle::ImageKey;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::image::{self, BootSelector, ImageError, PartInfo};
use crate::io::compressed::Format;
use crate::seal::{BUNDLE_PATH, EMBEDDED_KEY_PATH};

pub use crate::output::bmap::{self, Bmap};
pub use safety::{check_block_device, BlockTarget, DevNum, SysRoots};

/// Options of [`flash`].
#[derive(Clone, Debug)]
pub struct FlashOptions {
    /// Block map. Default: the first existing of `IMAGE.bmap`, and for
    /// `X.zst` `X.bmap`, and for `N.img[.zst]` `N.bmap` (see [`default_bmap`]).
    pub bmap: Option<PathBuf>,
    /// Ignore any bmap: write the whole image.
    pub no_bmap: bool,
    /// Image key file, written onto the boot partition as
    /// `sealed-secrets/image.key`.
    pub key: Option<PathBuf>,
    /// Allow a disk that is not removable, and a partition.
    pub yes: bool,
    /// Read everything back and compare (default true).
    pub verify: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Which partition receives the key (default: the ESP, else the only FAT one).
    pub partition: BootSelector,
    /// Overwrite an existing regular file that is not an earlier flash
    /// output.
    pub force: bool,
    /// A device's bundle to put onto the boot partition of the written
    /// (base) image: a file (from `build-image bundle`), or a device
    /// directory of a fleet build with `--bundles-only`
    /// (`DIR/sealed-secrets/bundle`, whose `*.key` is taken unless `key` is
    /// given). A fleet is then one base image plus one small directory per
    /// device.
    pub bundle: Option<PathBuf>,
}

impl Default for FlashOptions {
    fn default() -> Self {
        FlashOptions {
            bmap: None,
            no_bmap: false,
            key: None,
            yes: false,
            verify: true,
            progress: false,
            partition: BootSelector::Auto,
            bundle: None,
            force: false,
        }
    }
}

/// What [`flash`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlashReport {
    pub image: PathBuf,
    /// The real target (symlinks resolved).
    pub target: PathBuf,
    /// `block-device` or `file`.
    pub target_kind: &'static str,
    /// Size of the (uncompressed) image.
    pub image_size: u64,
    /// Bytes written (without the key file).
    pub bytes_written: u64,
    /// Bytes the bmap maps (the whole image without a bmap).
    pub mapped_bytes: u64,
    pub used_bmap: bool,
    pub bmap: Option<PathBuf>,
    pub key_written: bool,
    /// Whether a device bundle (`--bundle`) was put onto the boot partition.
    pub bundle_written: bool,
    /// Boot partition that received the key.
    pub boot_partition: Option<u32>,
    /// Whether the data (and the key) were read back and compared.
    pub verified: bool,
    /// SHA-256 of the mapped bytes in order (the whole image without a bmap).
    pub sha256_mapped: String,
}

/// Everything that stops a flash. Refusals (the target checks, bad inputs)
/// happen before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("cannot read the image {}: {cause}", image.display())]
    ImageOpen { image: PathBuf, cause: io::Error },
    #[error("the image {} is not a regular file", image.display())]
    ImageNotFile { image: PathBuf },
    #[error("reading the image {} failed at byte {offset}: {cause}", image.display())]
    ImageRead {
        image: PathBuf,
        offset: u64,
        cause: io::Error,
    },
    #[error(
        "the image {} is {actual}, but {expected} bytes were expected (the bmap's ImageSize, or \
         its size when first measured){}",
        image.display(),
        partial_note(partially_written.as_deref())
    )]
    ImageLength {
        image: PathBuf,
        expected: u64,
        actual: String,
        partially_written: Option<PathBuf>,
    },
    #[error("cannot read the bmap {}: {cause}", bmap.display())]
    BmapOpen { bmap: PathBuf, cause: io::Error },
    #[error("malformed bmap {}: {reason}", bmap.display())]
    BmapMalformed { bmap: PathBuf, reason: String },
    #[error(
        "the bmap {} is for an image of {bmap_size} bytes, but {} is {image_size} bytes: \
         not the bmap of this image",
        bmap.display(),
        image.display()
    )]
    BmapSizeMismatch {
        bmap: PathBuf,
        bmap_size: u64,
        image: PathBuf,
        image_size: u64,
    },
    #[error(
        "the data of {blocks} of {} does not match the bmap checksum (expected {expected}, \
         got {actual}): corrupted image or wrong bmap{}",
        image.display(),
        partial_note(Some(target))
    )]
    ChecksumMismatch {
        image: PathBuf,
        /// `blocks 3-5 (bytes 12288..24576)`.
        blocks: String,
        expected: String,
        actual: String,
        target: PathBuf,
    },
    #[error(
        "the target {} is an existing file that is not an earlier flash output; pass --force to overwrite it",
        target.display()
    )]
    TargetFileExists { target: PathBuf },
    #[error("device bundle {}: {reason}", bundle.display())]
    BundleInvalid { bundle: PathBuf, reason: String },
    #[error("the device bundle written to {} does not read back identically", target.display())]
    BundleVerifyFailed { target: PathBuf },
    #[error("cannot read the key file {}: {cause}", key.display())]
    KeyOpen { key: PathBuf, cause: io::Error },
    #[error("{} is not an image key file: {reason}", key.display())]
    KeyInvalid { key: PathBuf, reason: String },
    #[error(
        "refusing the key {}: {reason}{}",
        key.display(),
        if *image_written { " (the image was written, the key was not)" } else { "" }
    )]
    KeyMismatch {
        key: PathBuf,
        reason: String,
        image_written: bool,
    },
    #[error(
        "the target {} does not exist (is the card or stick plugged in? a missing device \
         node is never created as a file)",
        target.display()
    )]
    TargetMissing { target: PathBuf },
    #[error(
        "the target {} is {kind}: only a block device (a whole disk) or a regular file can be written",
        target.display()
    )]
    TargetKind { target: PathBuf, kind: &'static str },
    #[error("the target {} is the same file as the {what} {}", target.display(), input.display())]
    TargetIsInput {
        target: PathBuf,
        what: &'static str,
        input: PathBuf,
    },
    #[error("block device {dev} ({}) is not listed under {}", target.display(), sys.display())]
    UnknownDevice {
        target: PathBuf,
        dev: String,
        sys: PathBuf,
    },
    #[error("cannot read {}: {cause}", path.display())]
    SystemInfo { path: PathBuf, cause: io::Error },
    #[error("refusing to write {}: disk {disk} is the system disk: {reason}", target.display())]
    SystemDisk {
        target: PathBuf,
        disk: String,
        reason: String,
    },
    #[error(
        "refusing to write {}: it is mounted ({}); umount it first (devices checked: {devices})",
        target.display(),
        mounts.join("; ")
    )]
    Mounted {
        target: PathBuf,
        mounts: Vec<String>,
        devices: String,
    },
    #[error(
        "refusing to write {}: the kernel reports it busy (held by a mount, a device mapper, \
         RAID, swap or another program): {cause}",
        target.display()
    )]
    Busy { target: PathBuf, cause: io::Error },
    #[error("refusing to write {}: it is read-only (write-protect switch?)", target.display())]
    ReadOnly { target: PathBuf },
    #[error(
        "refusing to write {}: it holds {target_size} bytes, the image needs {image_size}",
        target.display()
    )]
    TargetTooSmall {
        target: PathBuf,
        target_size: u64,
        image_size: u64,
    },
    #[error(
        "refusing to write {}: it is a partition of {disk}, not a whole disk \
         (flash /dev/{disk} instead, or pass --yes to write into the partition)",
        target.display()
    )]
    IsPartition { target: PathBuf, disk: String },
    #[error(
        "refusing to write {}: disk {disk} is not removable (an internal disk?); pass --yes if \
         you are sure",
        target.display()
    )]
    NotRemovable { target: PathBuf, disk: String },
    #[error("{}: {what}: {cause}", target.display())]
    TargetIo {
        target: PathBuf,
        what: String,
        cause: io::Error,
    },
    #[error(
        "verification failed on {}: {what} read back with SHA-256 {actual}, expected {expected}",
        target.display()
    )]
    VerifyFailed {
        target: PathBuf,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot place the key on {}: {cause}", target.display())]
    BootPartition {
        target: PathBuf,
        cause: Box<ImageError>,
    },
    #[error(
        "verification failed on {}: {EMBEDDED_KEY_PATH} does not read back as written",
        target.display()
    )]
    KeyVerifyFailed { target: PathBuf },
}

fn partial_note(target: Option<&Path>) -> String {
    match target {
        Some(t) => format!(
            "; {} now holds a partial image: flash it again",
            t.display()
        ),
        None => String::new(),
    }
}

impl FlashError {
    /// A refusal before anything was written (bad input or unsafe target).
    pub fn is_refusal(&self) -> bool {
        use FlashError::*;
        match self {
            ImageOpen { .. }
            | ImageNotFile { .. }
            | BmapOpen { .. }
            | BmapMalformed { .. }
            | BmapSizeMismatch { .. }
            | KeyOpen { .. }
            | KeyInvalid { .. }
            | TargetMissing { .. }
            | TargetKind { .. }
            | TargetIsInput { .. }
            | UnknownDevice { .. }
            | SystemInfo { .. }
            | SystemDisk { .. }
            | Mounted { .. }
            | Busy { .. }
            | ReadOnly { .. }
            | TargetTooSmall { .. }
            | IsPartition { .. }
            | NotRemovable { .. } => true,
            ImageLength {
                partially_written, ..
            } => partially_written.is_none(),
            KeyMismatch { image_written, .. } => !image_written,
            BundleInvalid { .. } => true,
            TargetFileExists { .. } => true,
            _ => false,
        }
    }
}

/// The bmap used by default for `image`, if one exists.
pub fn default_bmap(image: &Path) -> Option<PathBuf> {
    let s = image.as_os_str().to_string_lossy().into_owned();
    let mut bases = vec![s.clone()];
    if let Some(stem) = s.strip_suffix(".zst") {
        bases.push(stem.to_string());
    }
    let mut candidates: Vec<String> = bases.iter().map(|b| format!("{b}.bmap")).collect();
    for b in &bases {
        if let Some(stem) = b.strip_suffix(".img") {
            candidates.push(format!("{stem}.bmap"));
        }
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
    let f = File::open(path).map_err(open_err)?;
    let mut text = String::new();
    f.take(bmap::MAX_BMAP_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                FlashError::BmapMalformed {
                    bmap: path.to_path_buf(),
                    reason: "not UTF-8 text".into(),
                }
            } else {
                open_err(e)
            }
        })?;
    if text.len() as u64 > bmap::MAX_BMAP_BYTES {
        return Err(FlashError::BmapMalformed {
            bmap: path.to_path_buf(),
            reason: format!("larger than {} bytes", bmap::MAX_BMAP_BYTES),
        });
    }
    Bmap::parse(&text).map_err(|reason| FlashError::BmapMalformed {
        bmap: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// The extended attribute that marks a file as written by `flash`.
const FLASH_OUTPUT_XATTR: &str = "user.sealed-image.flash-output";

fn is_flash_output(path: &Path) -> bool {
    let mut buf = [0u8; 8];
    rustix::fs::getxattr(path, FLASH_OUTPUT_XATTR, &mut buf[..]).is_ok()
}

/// Best effort: a filesystem without user xattrs only means the next flash
/// onto this file needs --force.
fn mark_flash_output(f: &File) {
    let _ = rustix::fs::fsetxattr(f, FLASH_OUTPUT_XATTR, b"1", rustix::fs::XattrFlags::empty());
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
    let bytes = sealed_firstboot::bundle::read_bundle_file(&file)
        .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    sealed_firstboot::bundle::Header::parse(&bytes)
        .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
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
    let key = ImageKey::from_file(&real).map_err(|e| invalid(e.to_string()))?;
    let text = key.to_file_text();
    Ok((key, text))
}

fn image_format(path: &Path) -> Result<Format, FlashError> {
    Format::detect(path).map_err(|e| FlashError::ImageOpen {
        image: path.to_path_buf(),
        cause: e,
    })
}

/// A resolved target.
enum Target {
    Block { real: PathBuf, dev: DevNum },
    File { real: PathBuf },
}

fn resolve_target(target: &Path) -> Result<Target, FlashError> {
    let io_err = |what: &str, e| FlashError::TargetIo {
        target: target.to_path_buf(),
        what: what.to_string(),
        cause: e,
    };
    match std::fs::metadata(target) {
        Ok(md) => {
            let real = std::fs::canonicalize(target).map_err(|e| io_err("cannot resolve", e))?;
            let ft = md.file_type();
            if ft.is_block_device() {
                Ok(Target::Block {
                    real,
                    dev: DevNum::from_raw(md.rdev()),
                })
            } else if ft.is_file() && real.starts_with("/dev") {
                // Left by an earlier copy to an absent device: writing it
                // would only fill memory, never a disk.
                Err(FlashError::TargetKind {
                    target: write::shown(target, &real),
                    kind: "a regular file under /dev, not a device (left by an earlier copy \
                           to an absent disk?)",
                })
            } else if ft.is_file() {
                Ok(Target::File { real })
            } else {
                Err(FlashError::TargetKind {
                    target: write::shown(target, &real),
                    // Not a block device and not a regular file.
                    kind: sealed_firstboot::fsutil::not_regular(md.mode())
                        .unwrap_or("not a regular file"),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(target).is_ok() {
                // A dangling symlink (a /dev/disk/by-id link of an unplugged device).
                return Err(FlashError::TargetMissing {
                    target: target.to_path_buf(),
                });
            }
            let name = target.file_name().ok_or_else(|| FlashError::TargetKind {
                target: target.to_path_buf(),
                kind: "not a file name",
            })?;
            let parent = match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let parent = std::fs::canonicalize(parent)
                .map_err(|e| io_err("cannot resolve the folder", e))?;
            if parent.starts_with("/dev") {
                return Err(FlashError::TargetMissing {
                    target: target.to_path_buf(),
                });
            }
            Ok(Target::File {
                real: parent.join(name),
            })
        }
        Err(e) => Err(io_err("cannot stat", e)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn bar(enabled: bool, len: Option<u64>, msg: &'static str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let b = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if len.is_some() {
        "{msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} {msg} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Write `image` to `target`; see the module documentation.
pub fn flash(image: &Path, target: &Path, opts: &FlashOptions) -> Result<FlashReport, FlashError> {
    flash_with_roots(image, target, opts, &SysRoots::host())
}

/// [`flash`] with explicit `/proc` and `/sys` roots for the target checks.
pub fn flash_with_roots(
    image_path: &Path,
    target: &Path,
    opts: &FlashOptions,
    roots: &SysRoots,
) -> Result<FlashReport, FlashError> {
    // 1. Inputs.
    let image_md = std::fs::metadata(image_path).map_err(|e| FlashError::ImageOpen {
        image: image_path.to_path_buf(),
        cause: e,
    })?;
    if !image_md.is_file() {
        return Err(FlashError::ImageNotFile {
            image: image_path.to_path_buf(),
        });
    }
    let format = image_format(image_path)?;
    let compressed = format.is_compressed();
    let bmap_path = match (&opts.bmap, opts.no_bmap) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => default_bmap(image_path),
    };
    let bmap = bmap_path.as_deref().map(load_bmap).transpose()?;
    if let (Some(b), Some(p)) = (&bmap, &bmap_path) {
        let actual = if compressed {
            // Only a declared size larger than the bmap's is certainly wrong
            // (a multi-frame file declares the first frame only).
            (format == Format::Zstd)
                .then(|| write::zstd_declared_size(image_path))
                .flatten()
                .filter(|&n| n > b.image_size)
        } else {
            Some(image_md.len()).filter(|&n| n != b.image_size)
        };
        if let Some(image_size) = actual {
            return Err(FlashError::BmapSizeMismatch {
                bmap: p.clone(),
                bmap_size: b.image_size,
                image: image_path.to_path_buf(),
                image_size,
            });
        }
    }
    let mut image_size = match (&bmap, compressed) {
        (Some(b), _) => Some(b.image_size),
        (None, false) => Some(image_md.len()),
        (None, true) => None,
    };
    let device_bundle = opts.bundle.as_deref().map(load_bundle).transpose()?;
    let key_path = opts.key.clone().or_else(|| {
        device_bundle
            .as_ref()
            .and_then(|(_, k): &(Zeroizing<Vec<u8>>, Option<PathBuf>)| k.clone())
    });
    let key = key_path.as_deref().map(load_key).transpose()?;

    // 2. The target.
    let resolved = resolve_target(target)?;
    let real = match &resolved {
        Target::Block { real, .. } | Target::File { real } => real.clone(),
    };
    let shown = write::shown(target, &real);
    let is_block = matches!(resolved, Target::Block { .. });
    let inputs: Vec<(&'static str, &Path)> = [
        Some(("image", image_path)),
        bmap_path.as_deref().map(|p| ("bmap", p)),
        key_path.as_deref().map(|p| ("key file", p)),
        opts.bundle.as_deref().map(|p| ("bundle", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (what, input) in &inputs {
        if same_file(&real, input) {
            return Err(FlashError::TargetIsInput {
                target: shown,
                what,
                input: input.to_path_buf(),
            });
        }
    }
    if let Target::Block { dev, .. } = &resolved {
        let bt = check_block_device(*dev, &shown, image_size, opts.yes, roots)?;
        if image_size.is_none() {
            let b = bar(opts.progress, None, "measuring the image");
            let n = write::measure_stream(image_path, format, &b).map_err(|e| {
                FlashError::ImageRead {
                    image: image_path.to_path_buf(),
                    offset: 0,
                    cause: e,
                }
            })?;
            b.finish_and_clear();
            if bt.size < n {
                return Err(FlashError::TargetTooSmall {
                    target: shown,
                    target_size: bt.size,
                    image_size: n,
                });
            }
            image_size = Some(n);
        }
    }

    // The key must fit the image: checked now for a plain image, after
    // writing (from the target) for a compressed one.
    if let (Some((bundle, _)), Some((k, _))) = (&device_bundle, &key) {
        if let Some(reason) = boot::key_mismatch(Some(bundle.as_slice()), k) {
            return Err(FlashError::KeyMismatch {
                key: key_path.clone().unwrap_or_default(),
                reason,
                image_written: false,
            });
        }
    }
    if let (Some((k, _)), false, None) = (&key, compressed, &device_bundle) {
        let keyp = key_path.clone().unwrap_or_default();
        let boot = image::read_table(image_path)
            .and_then(|info| image::find_boot_partition(&info, &opts.partition))
            .map_err(|e| FlashError::KeyMismatch {
                key: keyp.clone(),
                reason: format!("{}: {e}", image_path.display()),
                image_written: false,
            })?;
        let bundle = image::fat_read_file(image_path, &boot, BUNDLE_PATH).map_err(|e| {
            FlashError::KeyMismatch {
                key: keyp.clone(),
                reason: format!("{}: {e}", image_path.display()),
                image_written: false,
            }
        })?;
        let bundle = bundle.map(Zeroizing::new);
        if let Some(reason) = boot::key_mismatch(bundle.as_deref().map(|v| v.as_slice()), k) {
            return Err(FlashError::KeyMismatch {
                key: keyp,
                reason,
                image_written: false,
            });
        }
    }

    // Open the target: exclusive for a device, fresh and sparse for a file.
    let io_err = |what: &str, e| FlashError::TargetIo {
        target: shown.clone(),
        what: what.to_string(),
        cause: e,
    };
    let dst = if is_block {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&real)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                    FlashError::Busy {
                        target: shown.clone(),
                        cause: e,
                    }
                } else {
                    io_err("cannot open for writing", e)
                }
            })?;
        let size = (&f)
            .seek(SeekFrom::End(0))
            .map_err(|e| io_err("cannot get the device size", e))?;
        if let Some(need) = image_size {
            if size < need {
                return Err(FlashError::TargetTooSmall {
                    target: shown,
                    target_size: size,
                    image_size: need,
                });
            }
        }
        f
    } else {
        // A file target holds the bundle (and with --key the key): 0600,
        // and an existing file is overwritten only when it is an earlier
        // flash output (marked with an xattr) or with --force.
        if let Ok(m) = std::fs::metadata(&real) {
            if m.len() > 0 && !opts.force && !is_flash_output(&real) {
                return Err(FlashError::TargetFileExists { target: shown });
            }
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&real)
            .map_err(|e| io_err("cannot create", e))?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| io_err("cannot set the mode of", e))?;
        mark_flash_output(&f);
        if let Some(n) = image_size {
            f.set_len(n).map_err(|e| io_err("cannot size", e))?;
        }
        f
    };

    // 3. Write.
    let names = write::Names {
        image: image_path,
        target: &shown,
    };
    let mut src = write::Source::open(image_path, format).map_err(|e| FlashError::ImageOpen {
        image: image_path.to_path_buf(),
        cause: e,
    })?;
    let total = bmap.as_ref().map(|b| b.mapped_bytes()).or(image_size);
    let b = bar(opts.progress, total, "writing");
    let copied = match &bmap {
        Some(bm) => write::copy_mapped(&mut src, &dst, bm, &names, &b)?,
        None => write::copy_all(&mut src, &dst, !is_block, image_size, &names, &b)?,
    };
    b.finish_and_clear();
    if !is_block {
        dst.set_len(copied.image_size)
            .map_err(|e| io_err("cannot size", e))?;
    }
    dst.sync_all().map_err(|e| io_err("cannot flush", e))?;

    // 4. Verify.
    if opts.verify {
        let b = bar(opts.progress, Some(copied.mapped_bytes), "verifying");
        write::verify(&dst, &copied, &shown, &b)?;
        b.finish_and_clear();
    }

    // 5. The device bundle, then the key, into the written boot partition.
    let mut boot_partition = None;
    let place = |e| FlashError::BootPartition {
        target: shown.clone(),
        cause: Box::new(e),
    };
    let written_boot = if device_bundle.is_some() || key.is_some() {
        let ro = File::open(&real).map_err(|e| io_err("cannot open for reading", e))?;
        let (_, part) =
            boot::find_boot(&real, &ro, copied.image_size, &opts.partition).map_err(place)?;
        Some((ro, part))
    } else {
        None
    };
    if let (Some((bundle, _)), Some((ro, part))) = (&device_bundle, &written_boot) {
        let written = write_boot_checked(&dst, ro, part, BUNDLE_PATH, bundle, opts.verify);
        if !written.map_err(place)? {
            return Err(FlashError::BundleVerifyFailed { target: shown });
        }
        boot_partition = Some(part.index);
    }
    if let (Some((k, text)), Some((ro, part))) = (&key, &written_boot) {
        let bundle = boot::read_boot_file(ro, part, BUNDLE_PATH).map_err(place)?;
        if let Some(reason) = boot::key_mismatch(bundle.as_deref().map(|v| v.as_slice()), k) {
            return Err(FlashError::KeyMismatch {
                key: key_path.clone().unwrap_or_default(),
                reason,
                image_written: true,
            });
        }
        let key_text = text.as_bytes();
        let written = write_boot_checked(&dst, ro, part, EMBEDDED_KEY_PATH, key_text, opts.verify);
        if !written.map_err(place)? {
            return Err(FlashError::KeyVerifyFailed { target: shown });
        }
        boot_partition = Some(part.index);
    }

    Ok(FlashReport {
        image: image_path.to_path_buf(),
        target: real,
        target_kind: if is_block { "block-device" } else { "file" },
        image_size: copied.image_size,
        bytes_written: copied.bytes_written,
        mapped_bytes: copied.mapped_bytes,
        used_bmap: bmap.is_some(),
        bmap: bmap.is_some().then_some(bmap_path).flatten(),
        key_written: key.is_some(),
        bundle_written: device_bundle.is_some(),
        boot_partition,
        verified: opts.verify,
        sha256_mapped: bmap::hex(&copied.sha256_mapped),
    })
}

/// Write `data` as `path` into the boot partition `part` of `dst`; with
/// `verify`, read it back through `ro`, past the page cache. False when what
/// was read back differs.
fn write_boot_checked(
    dst: &File,
    ro: &File,
    part: &PartInfo,
    path: &str,
    data: &[u8],
    verify: bool,
) -> Result<bool, ImageError> {
    boot::write_boot_file(dst, part, path, data)?;
    if !verify {
        return Ok(true);
    }
    write::drop_cache(ro);
    let back = boot::read_boot_file(ro, part, path)?;
    Ok(back.as_deref().map(|v| v.as_slice()) == Some(data))
}
