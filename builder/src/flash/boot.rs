//! The boot partition of a flashed target: finding it (also on a block
//! device, whose file length reads as 0), checking the key against the
//! bundle there, writing the key file and reading it back.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sealed_firstboot::bundle::{Header, ImageKey};
use zeroize::Zeroizing;

use crate::image::{self, fat, BootSelector, DiskInfo, FatFile, ImageError, PartInfo};
use crate::sealing::{BUNDLE_PATH, EMBEDDED_KEY_PATH};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// Copy `[start, start+len)` (clipped to `size`) from `dev` into `shadow`.
fn copy_region(dev: &File, shadow: &File, start: u64, len: u64, size: u64) -> io::Result<()> {
    if start >= size {
        return Ok(());
    }
    let len = len.min(size - start);
    let mut buf = vec![0u8; len as usize];
    dev.read_exact_at(&mut buf, start)?;
    shadow.write_all_at(&buf, start)
}

fn u32_le(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// GPT partition arrays wherever a header (primary or backup, 512 or 4096
/// byte sectors) says they are.
fn gpt_array_regions(dev: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for lb in [512u64, 4096] {
        for at in [lb, size.saturating_sub(lb)] {
            let mut h = [0u8; 92];
            if at + 92 > size || dev.read_exact_at(&mut h, at).is_err() || &h[..8] != b"EFI PART" {
                continue;
            }
            let lba = u64::from_le_bytes(h[72..80].try_into().unwrap_or([0; 8]));
            let bytes = u32_le(&h, 80) * u32_le(&h, 84);
            if bytes <= MIB {
                if let Some(start) = lba.checked_mul(lb) {
                    out.push((start, bytes));
                }
            }
        }
    }
    out
}

/// Every EBR of the extended partition's chain, if the MBR has one.
fn ebr_regions(dev: &File, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut s = [0u8; 512];
    if size < SECTOR || dev.read_exact_at(&mut s, 0).is_err() || s[510..] != [0x55, 0xaa] {
        return out;
    }
    for i in 0..4 {
        let o = 446 + 16 * i;
        if !matches!(s[o + 4], 0x05 | 0x0f | 0x85) {
            continue;
        }
        let ext = u32_le(&s, o + 8);
        let mut ebr = ext;
        for _ in 0..4096 {
            let at = ebr * SECTOR;
            let mut e = [0u8; 512];
            if at + SECTOR > size || dev.read_exact_at(&mut e, at).is_err() {
                break;
            }
            out.push((at, SECTOR));
            if e[510..] != [0x55, 0xaa] || e[446 + 16 + 4] == 0 || u32_le(&e, 446 + 16 + 12) == 0 {
                break;
            }
            ebr = ext + u32_le(&e, 446 + 16 + 8);
        }
    }
    out
}

/// Read the partition table of the first `size` bytes of `dev` (a block
/// device, or any file). [`image::read_table`] wants a path whose length is
/// the disk size, which a block device does not have; so the table, the
/// GPT arrays, the EBRs and the first bytes of every partition are copied
/// into a sparse temporary file of `size` bytes and read from there.
pub(crate) fn read_table_of(dev: &File, size: u64) -> Result<DiskInfo, ImageError> {
    let shadow = tempfile::Builder::new()
        .prefix("build-image-flash-table.")
        .tempfile()
        .map_err(|e| ImageError::io("cannot create a temporary file", e))?;
    let sf = shadow.as_file();
    sf.set_len(size)
        .map_err(|e| ImageError::io("cannot size a temporary file", e))?;
    let copy = |start: u64, len: u64| {
        copy_region(dev, sf, start, len, size)
            .map_err(|e| ImageError::io(format!("cannot read the target at byte {start}"), e))
    };
    copy(0, MIB)?;
    copy(size.saturating_sub(MIB), MIB)?;
    for (start, len) in gpt_array_regions(dev, size)
        .into_iter()
        .chain(ebr_regions(dev, size))
    {
        copy(start, len)?;
    }
    // First pass: where the partitions are; then their first bytes (for
    // the filesystem probe), and the final answer.
    let first = image::read_table(shadow.path())?;
    for p in &first.partitions {
        copy(p.start, p.size.min(64 << 10))?;
    }
    image::read_table(shadow.path())
}

/// The boot partition of the target, as `sel` picks it.
pub(crate) fn find_boot(
    target_path: &Path,
    dev: &File,
    is_block: bool,
    size: u64,
    sel: &BootSelector,
) -> Result<(DiskInfo, PartInfo), ImageError> {
    let info = if is_block {
        read_table_of(dev, size)?
    } else {
        image::read_table(target_path)?
    };
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

/// Write the key file into the FAT boot partition of `dev` (opened for
/// writing), as [`image::fat_write_files`] does on an image path.
pub(crate) fn write_key(dev: &File, boot: &PartInfo, text: &[u8]) -> Result<(), ImageError> {
    write_boot_file(dev, boot, EMBEDDED_KEY_PATH, text)
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
    let result = (|| {
        let fs = fat::open(dev, boot.start, boot.size)?;
        fat::write_files(&fs, &files)?;
        fat::close(fs)?;
        fat::fix_dot_entries(dev, boot.start)?;
        dev.sync_all()
            .map_err(|e| ImageError::io("cannot sync the target", e))
    })();
    crate::sealing::zeroize_files(&mut files);
    result
}
