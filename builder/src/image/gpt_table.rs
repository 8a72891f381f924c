//! GPT writing with the `gpt` crate: protective MBR, primary header and
//! array at LBA 1.., backup array and header in the last 33 sectors.

use std::collections::BTreeMap;
use std::fs::File;

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::{Partition, PartitionAttributes};
use gpt::partition_types::{OperatingSystem, Type};
use gpt::GptConfig;

use super::layout::SECTOR;
use super::ImageError;

/// One GPT entry to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    pub name: String,
    pub type_guid: uuid::Uuid,
    pub part_guid: uuid::Uuid,
    /// Byte offset, a multiple of 512.
    pub start: u64,
    /// Byte length, a non-zero multiple of 512.
    pub size: u64,
    pub legacy_bootable: bool,
}

fn gpt_err(what: &str) -> impl Fn(gpt::GptError) -> ImageError + '_ {
    move |e| ImageError::Gpt(format!("{what}: {e}"))
}

/// Write a protective MBR and a GPT describing `entries` to `file`, whose
/// length must already be the final image size. Returns the file.
pub fn write(file: File, disk_guid: uuid::Uuid, entries: &[GptEntry]) -> Result<File, ImageError> {
    let len = file
        .metadata()
        .map_err(|e| ImageError::io("cannot stat the image", e))?
        .len();
    let sectors = len / SECTOR;

    let mut file = file;
    let pmbr =
        ProtectiveMBR::with_lb_size(u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX));
    pmbr.overwrite_lba0(&mut file)
        .map_err(|e| ImageError::Gpt(format!("cannot write the protective MBR: {e}")))?;

    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, Some(disk_guid))
        .map_err(gpt_err("cannot initialise the GPT"))?;

    let (first_usable, last_usable) = {
        let h = disk
            .primary_header()
            .map_err(|e| ImageError::Gpt(e.to_string()))?;
        (h.first_usable, h.last_usable)
    };

    let mut parts = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let first_lba = e.start / SECTOR;
        let last_lba = (e.start + e.size) / SECTOR - 1;
        if first_lba < first_usable || last_lba > last_usable {
            return Err(ImageError::Gpt(format!(
                "partition {} ({:?}) spans sectors {first_lba}..={last_lba}, outside the usable \
                 range {first_usable}..={last_usable}",
                i + 1,
                e.name
            )));
        }
        let flags = if e.legacy_bootable {
            PartitionAttributes::BOOTABLE.bits()
        } else {
            0
        };
        parts.insert(
            i as u32 + 1,
            Partition {
                part_type_guid: Type {
                    guid: e.type_guid,
                    os: OperatingSystem::None,
                },
                part_guid: e.part_guid,
                first_lba,
                last_lba,
                flags,
                name: e.name.clone(),
            },
        );
    }
    disk.update_partitions(parts)
        .map_err(gpt_err("cannot set the partition entries"))?;
    disk.write().map_err(gpt_err("cannot write the GPT"))
}
