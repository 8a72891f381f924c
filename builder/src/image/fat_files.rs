//! Files inside the FAT partition of an existing image, read, written and
//! removed in place (no root, loop device or mount): what inject, flash,
//! inspect and fleet builds put onto or read from the boot partition.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::fat;
use super::layout::FatFile;
use super::read::{check_bounds, open_ro, with_len, PartInfo};
use super::ImageError;

fn open_rw(image: &Path) -> Result<(File, u64), ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| ImageError::io(format!("cannot open {} for writing", image.display()), e))?;
    with_len(file, image)
}

/// Read a file from the partition's FAT filesystem; `Ok(None)` if absent.
pub fn fat_read_file(
    image: &Path,
    part: &PartInfo,
    path: &str,
) -> Result<Option<Vec<u8>>, ImageError> {
    let (file, len) = open_ro(image)?;
    check_bounds(image, len, part)?;
    let fs = fat::open(&file, part.start, part.size)?;
    // Dropped, not closed: nothing was written, and the file is read-only.
    fat::read_file(&fs, path)
}

/// Create or replace files (and directories) in the partition's FAT
/// filesystem, in place.
pub fn fat_write_files(image: &Path, part: &PartInfo, files: &[FatFile]) -> Result<(), ImageError> {
    for f in files {
        fat::entry_components(f)?;
    }
    let (file, len) = open_rw(image)?;
    check_bounds(image, len, part)?;
    fat_write_files_on(&file, part, files, &image.display().to_string())
}

/// [`fat_write_files`] on an open image or block device (`flash`); `name`
/// says what it is in messages.
pub fn fat_write_files_on(
    file: &File,
    part: &PartInfo,
    files: &[FatFile],
    name: &str,
) -> Result<(), ImageError> {
    let fs = fat::open(file, part.start, part.size)?;
    fat::write_files(&fs, files)?;
    fat::close(fs)?;
    super::fat_repair::fix_dot_entries(file, part.start)?;
    file.sync_all()
        .map_err(|e| ImageError::io(format!("cannot sync {name}"), e))
}

/// Overwrite with zeros and delete a file of the partition's FAT
/// filesystem, in place. `Ok(false)` if it was not there.
pub fn fat_remove_file(image: &Path, part: &PartInfo, path: &str) -> Result<bool, ImageError> {
    fat::path_components(path)?;
    let (file, len) = open_rw(image)?;
    check_bounds(image, len, part)?;
    let fs = fat::open(&file, part.start, part.size)?;
    let removed = fat::remove_file(&fs, path)?;
    fat::close(fs)?;
    file.sync_all()
        .map_err(|e| ImageError::io(format!("cannot sync {}", image.display()), e))?;
    Ok(removed)
}
