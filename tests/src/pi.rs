//! Disk images laid out like Raspberry Pi OS, made by the real tools
//! (truncate, sfdisk, mkfs.vfat, mtools), for `inject` and
//! `--install-agent`.

use crate::sh;
use std::path::{Path, PathBuf};

pub const SECTOR: u64 = 512;
/// The FAT32 "bootfs": at sector 8192 (4 MiB), 131072 sectors (64 MiB).
pub const BOOT_START: u64 = 8192;
pub const BOOT_SECTORS: u64 = 131072;
/// The root partition follows the boot partition.
pub const ROOT_START: u64 = BOOT_START + BOOT_SECTORS;
/// The root partition's byte offset.
pub const ROOT_OFF: u64 = ROOT_START * SECTOR;

/// The image `dir/name` of `size` (as truncate takes it): an MBR with the
/// disk id `disk_id`, partition 1 the FAT32 "bootfs" (the boot flag set
/// when `bootable`) holding `boot_file` (name, one line of text), partition
/// 2 (type 83) the rest, still empty: the caller makes its filesystem at
/// [`ROOT_OFF`].
pub fn disk(
    dir: &Path,
    name: &str,
    size: &str,
    disk_id: &str,
    bootable: bool,
    boot_file: (&str, &str),
) -> PathBuf {
    let flag = if bootable { ", bootable" } else { "" };
    let (file, text) = boot_file;
    sh(
        &format!(
            "truncate -s {size} {name}
             printf 'label: dos\\nlabel-id: {disk_id}\\nstart={BOOT_START}, size={BOOT_SECTORS}, type=c{flag}\\nstart={ROOT_START}, type=83\\n' | sfdisk -q {name}
             mkfs.vfat -F 32 -n bootfs --offset {BOOT_START} {name} {} >/dev/null
             echo '{text}' > {file}
             mcopy -i {name}@@{} {file} ::/{file}",
            BOOT_SECTORS / 2,
            BOOT_START * SECTOR,
        ),
        dir,
    );
    dir.join(name)
}
