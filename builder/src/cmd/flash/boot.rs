//! Step 5 of a flash: the boot partition of the written target: finding
//! it (also on a block device, whose file length reads as 0: the table is
//! read on the handle), the device bundle written there, the key checked
//! against the bundle there, the key file written; each read back.

use std::fs::File;
use std::path::Path;

use sealed_bundle::{Header, ImageKey};
use zeroize::Zeroizing;

use super::inputs::Inputs;
use super::target::Checked;
use super::{write, FlashError, FlashOptions};
use crate::image::{
    self, fat, DiskInfo, DiskView, FatFile, ImageError, PartInfo, PartitionSelector,
};
use crate::seal::{BUNDLE_PATH, EMBEDDED_KEY_PATH};

/// Put the device bundle, then the key, into the boot partition of the
/// `image_size` bytes written to `dst`. Returns the partition's number
/// (`None` when there was nothing to place).
pub(super) fn place(
    inputs: &Inputs<'_>,
    target: &Checked,
    dst: &File,
    image_size: u64,
    opts: &FlashOptions,
) -> Result<Option<u32>, FlashError> {
    if inputs.device_bundle.is_none() && inputs.key.is_none() {
        return Ok(None);
    }
    let place = |e| FlashError::BootPartition {
        target: target.shown.clone(),
        cause: Box::new(e),
    };
    let ro = File::open(&target.real).map_err(|e| target.io_err("cannot open for reading", e))?;
    let (_, part) = find_boot(&target.real, &ro, image_size, &opts.partition).map_err(place)?;
    if let Some((bundle, _)) = &inputs.device_bundle {
        let written = write_boot_checked(dst, &ro, &part, BUNDLE_PATH, bundle, opts.verify);
        if !written.map_err(place)? {
            return Err(FlashError::BundleVerifyFailed {
                target: target.shown.clone(),
            });
        }
    }
    if let Some((k, text)) = &inputs.key {
        let bundle = read_boot_file(&ro, &part, BUNDLE_PATH).map_err(place)?;
        if let Some(reason) = key_mismatch(bundle.as_deref().map(|v| v.as_slice()), k) {
            return Err(FlashError::KeyMismatch {
                key: inputs.key_path.clone().unwrap_or_default(),
                reason,
                image_written: true,
            });
        }
        let key_text = text.as_bytes();
        let written = write_boot_checked(dst, &ro, &part, EMBEDDED_KEY_PATH, key_text, opts.verify);
        if !written.map_err(place)? {
            return Err(FlashError::KeyVerifyFailed {
                target: target.shown.clone(),
            });
        }
    }
    Ok(Some(part.index))
}

/// The boot partition of the target, as `sel` picks it. The table is read
/// on the handle from the first `size` bytes of `dev` (the image written
/// onto it), a block device or a file alike.
pub(crate) fn find_boot(
    target_path: &Path,
    dev: &File,
    size: u64,
    sel: &PartitionSelector,
) -> Result<(DiskInfo, PartInfo), ImageError> {
    let info = image::read_table_from(DiskView::new(dev, size), target_path)?;
    let boot = image::find_boot_partition(&info, sel)?;
    if !matches!(boot.start.checked_add(boot.size), Some(end) if end <= size) {
        return Err(ImageError::NoBootPartition(format!(
            "partition {} lies outside the {size}-byte image",
            boot.describe()
        )));
    }
    Ok((info, boot))
}

/// Read a file from the FAT boot partition of `dev` without writing.
pub(crate) fn read_boot_file(
    dev: &File,
    boot: &PartInfo,
    path: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, ImageError> {
    let fs = fat::open(dev, boot.start, boot.size)?;
    let data = fat::read_file(&fs, path)?;
    // Dropped, not closed: nothing was written (the handle is read-only).
    drop(fs);
    Ok(data.map(Zeroizing::new))
}

/// Why `key` cannot unlock the bundle found on the boot partition (`None`:
/// it can, as far as the clear header tells).
pub(crate) fn key_mismatch(bundle: Option<&[u8]>, key: &ImageKey) -> Option<String> {
    let Some(bytes) = bundle else {
        return Some(format!(
            "the boot partition has no {BUNDLE_PATH}: there are no sealed secrets for the key to unlock"
        ));
    };
    let header = match Header::parse(bytes) {
        Ok(h) => h,
        Err(e) => {
            return Some(format!(
                "the bundle {BUNDLE_PATH} is unreadable: {}",
                sealed_bundle::report::chain(&e)
            ))
        }
    };
    if header.is_age_recipient() {
        return Some(
            "the bundle is sealed to a device's age recipient and needs no image key".into(),
        );
    }
    if header.key_id != key.id() {
        return Some(format!(
            "the key (id {}) is not the one the bundle is sealed to (id {}): wrong key file for this image?",
            key.id(),
            header.key_id
        ));
    }
    None
}

/// Write one file (the key, a device bundle) into the FAT boot partition
/// of `dev`; its copy in memory is zeroized afterwards.
pub(crate) fn write_boot_file(
    dev: &File,
    boot: &PartInfo,
    path: &str,
    data: &[u8],
) -> Result<(), ImageError> {
    let mut files = vec![FatFile::file(path, data.to_vec())];
    let result = image::fat_files::fat_write_files_on(dev, boot, &files, "the target");
    crate::seal::zeroize_files(&mut files);
    result
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
    write_boot_file(dst, part, path, data)?;
    if !verify {
        return Ok(true);
    }
    write::drop_cache(ro);
    let back = read_boot_file(ro, part, path)?;
    Ok(back.as_deref().map(|v| v.as_slice()) == Some(data))
}
