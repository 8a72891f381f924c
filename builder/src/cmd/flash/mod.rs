//! `build-image flash IMAGE TARGET`: write an image (`.img`, `.img.zst`, `.img.xz`)
//! to a disk or a file, bmap-aware; put the image key onto its boot
//! partition; read everything back.
//!
//! Order of work, so that a refusal never writes a byte:
//!
//! 1. (`inputs.rs`) the image, the bmap ([`bmap`]) and the key are opened and
//!    checked: a malformed bmap, a bmap whose `ImageSize` differs from the
//!    image, an unreadable or invalid key, and (for a plain `.img`) a key
//!    that does not belong to the image's bundle are refused;
//! 2. (`target.rs`) the target is resolved (symlinks followed: messages name the real
//!    device) and checked ([`safety`]): the system disk (`/`, swap), a
//!    mounted device, a read-only one, one smaller than the image, and
//!    without `--yes` a partition or a non-removable disk are refused; a
//!    block device is then opened `O_EXCL`, which the kernel refuses while
//!    anything holds it;
//! 3. (`write.rs`) the image is streamed onto the target: with a bmap only the mapped
//!    ranges, each checked against its SHA-256 as it goes by; without one
//!    everything (a fresh regular file target stays sparse: all-zero blocks
//!    are not written);
//! 4. with `verify`, every written range is read back (page cache dropped
//!    first) and compared;
//! 5. (`boot.rs`) with a key or a device bundle, the FAT boot partition is found on the target, the bundle
//!    there is checked against the key's id, `sealed-secrets/image.key` is
//!    written in place and read back.
//!
//! The errors are [`FlashError`] (`error.rs`); progress bars come from
//! [`crate::cmd::progress`].

mod boot;
mod error;
mod inputs;
pub mod safety;
mod target;
mod write;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::image::PartitionSelector;

pub use crate::output::bmap::{self, Bmap};
pub use error::FlashError;
pub use inputs::{default_bmap, load_bmap};
pub use safety::{check_block_device, BlockTarget, DevNum, SysRoots};

use inputs::Inputs;
use target::Checked;

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
    pub partition: PartitionSelector,
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
            partition: PartitionSelector::Auto,
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
    let mut inputs = Inputs::open(image_path, opts)?;
    let target = Checked::check(target, &mut inputs, opts, roots)?;
    inputs.check_key_fits(&opts.partition)?;
    let dst = target.open(inputs.image_size, opts.force)?;
    let copied = write_image(&inputs, &target, &dst, opts)?;
    if opts.verify {
        verify(&target, &dst, &copied, opts)?;
    }
    let boot_partition = boot::place(&inputs, &target, &dst, copied.image_size, opts)?;
    Ok(FlashReport {
        image: image_path.to_path_buf(),
        target: target.real,
        target_kind: if target.is_block {
            "block-device"
        } else {
            "file"
        },
        image_size: copied.image_size,
        bytes_written: copied.bytes_written,
        mapped_bytes: copied.mapped_bytes,
        used_bmap: inputs.bmap.is_some(),
        bmap: inputs.bmap.is_some().then_some(inputs.bmap_path).flatten(),
        key_written: inputs.key.is_some(),
        bundle_written: inputs.device_bundle.is_some(),
        boot_partition,
        verified: opts.verify,
        sha256_mapped: hex::encode(copied.sha256_mapped),
    })
}

/// Step 3: stream the image onto the target: with a bmap only the mapped
/// ranges, each checked against its SHA-256 as it goes by; without one
/// everything (a file target stays sparse). Flushed.
fn write_image(
    inputs: &Inputs<'_>,
    target: &Checked,
    dst: &File,
    opts: &FlashOptions,
) -> Result<write::Copied, FlashError> {
    let names = write::Names {
        image: inputs.image,
        target: &target.shown,
    };
    let mut src =
        write::Source::open(inputs.image, inputs.format).map_err(|e| FlashError::ImageOpen {
            image: inputs.image.to_path_buf(),
            cause: e,
        })?;
    let total = inputs
        .bmap
        .as_ref()
        .map(|b| b.mapped_bytes())
        .or(inputs.image_size);
    let b = crate::cmd::progress::bytes(opts.progress, total, "writing");
    let copied = match &inputs.bmap {
        Some(bm) => write::copy_mapped(&mut src, dst, bm, &names, &b)?,
        None => write::copy_all(
            &mut src,
            dst,
            !target.is_block,
            inputs.image_size,
            &names,
            &b,
        )?,
    };
    b.finish_and_clear();
    if !target.is_block {
        dst.set_len(copied.image_size)
            .map_err(|e| target.io_err("cannot size", e))?;
    }
    dst.sync_all()
        .map_err(|e| target.io_err("cannot flush", e))?;
    Ok(copied)
}

/// Step 4: read every written range back (page cache dropped first) and
/// compare.
fn verify(
    target: &Checked,
    dst: &File,
    copied: &write::Copied,
    opts: &FlashOptions,
) -> Result<(), FlashError> {
    let b = crate::cmd::progress::bytes(opts.progress, Some(copied.mapped_bytes), "verifying");
    write::verify(dst, copied, &target.shown, &b)?;
    b.finish_and_clear();
    Ok(())
}
