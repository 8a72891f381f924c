//! [`FlashError`]: everything that stops a flash, and which of those are
//! refusals (nothing written yet). Causes are `source()`s, never repeated
//! in a message: the error printer joins the chain.

use std::io;
use std::path::{Path, PathBuf};

use crate::image::ImageError;
use crate::seal::EMBEDDED_KEY_PATH;

/// Everything that stops a flash. Refusals (the target checks, bad inputs)
/// happen before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("cannot read the image {}", image.display())]
    ImageOpen {
        image: PathBuf,
        #[source]
        cause: io::Error,
    },
    #[error("the image {} is not a regular file", image.display())]
    ImageNotFile { image: PathBuf },
    #[error("reading the image {} failed at byte {offset}", image.display())]
    ImageRead {
        image: PathBuf,
        offset: u64,
        #[source]
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
    #[error("cannot read the bmap {}", bmap.display())]
    BmapOpen {
        bmap: PathBuf,
        #[source]
        cause: io::Error,
    },
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
    #[error("cannot read the key file {}", key.display())]
    KeyOpen {
        key: PathBuf,
        #[source]
        cause: io::Error,
    },
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
    #[error("cannot read {}", path.display())]
    SystemInfo {
        path: PathBuf,
        #[source]
        cause: io::Error,
    },
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
         RAID, swap or another program)",
        target.display()
    )]
    Busy {
        target: PathBuf,
        #[source]
        cause: io::Error,
    },
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
    #[error("{}: {what}", target.display())]
    TargetIo {
        target: PathBuf,
        what: String,
        #[source]
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
    #[error("cannot place the key on {}", target.display())]
    BootPartition {
        target: PathBuf,
        #[source]
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
