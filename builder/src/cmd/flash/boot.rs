//! The boot partition of a flashed target: finding it (also on a block
//! device, whose file length reads as 0: the table is read on the handle),
//! checking the key against the bundle there, writing the key file and
//! reading it back.

use std::fs::File;
use std::path::Path;

use sealed_firstboot::bundle::{Header, ImageKey};
use zeroize::Zeroizing;

use crate::image::{self, fat, BootSelector, DiskInfo, DiskView, FatFile, ImageError, PartInfo};
use crate::seal::BUNDLE_PATH;

/// The boot partition of the target, as `sel` picks it. The table is read
/// on the handle from the first `size` bytes of `dev` (the image written
/// onto it), a block device or a file alike.
pub(crate) fn find_boot(
    target_path: &Path,
    dev: &File,
    size: u64,
    sel: &BootSelector,
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
        Err(e) => return Some(format!("the bundle {BUNDLE_PATH} is unreadable: {e}")),
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
