//! The FAT boot sector (its BIOS parameter block), parsed in one place for
//! its three readers: the metadata region a bmap must map
//! ([`super::fat::metadata_len`]), the raw geometry of the `.`/`..` repair
//! ([`super::fat_repair`]) and the filesystem probe of any partition
//! (`read.rs`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The fields of a FAT boot sector this crate reads (offsets in the
/// comments). Counts are in sectors unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BootSector {
    /// 0x0b
    pub bytes_per_sector: u64,
    /// 0x0d
    pub sectors_per_cluster: u64,
    /// 0x0e
    pub reserved_sectors: u64,
    /// 0x10
    pub fats: u64,
    /// 0x11: root directory entries (FAT12/16; 0 on FAT32)
    pub root_entries: u64,
    /// 0x13, or 0x20 when that is 0
    pub total_sectors: u64,
    /// 0x15
    pub media: u8,
    /// 0x16, or (FAT32) 0x24 when that is 0
    pub fat_sectors: u64,
    /// Whether the 16-bit FAT size (0x16) is 0: the FAT32 layout.
    pub fat32_layout: bool,
    /// 0x2c: the root directory's first cluster (FAT32)
    pub root_cluster: u32,
    /// 0x1fe: the 0x55AA signature
    pub signed: bool,
    /// The volume serial and label of the extended BPB, when its signature
    /// (0x29, at 0x42 on FAT32, 0x26 otherwise) is there.
    pub volume: Option<(u32, [u8; 11])>,
}

impl BootSector {
    /// Bytes a boot sector takes.
    pub const LEN: usize = 512;

    /// The fields of the sector `b`, unchecked (see [`Self::is_sane`]).
    pub fn parse(b: &[u8; Self::LEN]) -> BootSector {
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let nonzero = |small: u64, large: usize| {
            if small != 0 {
                small
            } else {
                u64::from(u32_at(large))
            }
        };
        let fat32_layout = u16_at(0x16) == 0;
        let ext = if fat32_layout { 0x42 } else { 0x26 };
        let volume = (b[ext] == 0x29).then(|| {
            let mut label = [0u8; 11];
            label.copy_from_slice(&b[ext + 5..ext + 16]);
            (u32_at(ext + 1), label)
        });
        BootSector {
            bytes_per_sector: u16_at(0x0b),
            sectors_per_cluster: u64::from(b[0x0d]),
            reserved_sectors: u16_at(0x0e),
            fats: u64::from(b[0x10]),
            root_entries: u16_at(0x11),
            total_sectors: nonzero(u16_at(0x13), 0x20),
            media: b[0x15],
            fat_sectors: nonzero(u16_at(0x16), 0x24),
            fat32_layout,
            root_cluster: u32_at(0x2c),
            signed: b[0x1fe] == 0x55 && b[0x1ff] == 0xaa,
            volume,
        }
    }

    /// The boot sector of the FAT filesystem at byte `start` of `file`.
    pub fn read(file: &File, start: u64) -> io::Result<BootSector> {
        let mut b = [0u8; Self::LEN];
        file.read_exact_at(&mut b, start)?;
        Ok(Self::parse(&b))
    }

    /// Whether this looks like a FAT boot sector: signed, a sector size and
    /// cluster size FAT allows, reserved sectors, one or two FATs, a valid
    /// media byte.
    pub fn is_sane(&self) -> bool {
        self.signed
            && matches!(self.bytes_per_sector, 512 | 1024 | 2048 | 4096)
            && self.sectors_per_cluster != 0
            && self.sectors_per_cluster.is_power_of_two()
            && self.reserved_sectors >= 1
            && (1..=2).contains(&self.fats)
            && (self.media == 0xf0 || self.media >= 0xf8)
    }

    /// Bytes of the boot sectors, FATs and (FAT12/16) root directory.
    pub fn metadata_len(&self) -> u64 {
        (self.reserved_sectors + self.fats * self.fat_sectors) * self.bytes_per_sector
            + self.root_entries * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(fat32: bool) -> [u8; BootSector::LEN] {
        let mut b = [0u8; BootSector::LEN];
        b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        b[0x0d] = 8;
        b[0x0e..0x10].copy_from_slice(&32u16.to_le_bytes());
        b[0x10] = 2;
        b[0x15] = 0xf8;
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        if fat32 {
            b[0x20..0x24].copy_from_slice(&1_000_000u32.to_le_bytes());
            b[0x24..0x28].copy_from_slice(&1000u32.to_le_bytes());
            b[0x2c..0x30].copy_from_slice(&2u32.to_le_bytes());
            b[0x42] = 0x29;
            b[0x43..0x47].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
            b[0x47..0x52].copy_from_slice(b"ESP        ");
        } else {
            b[0x11..0x13].copy_from_slice(&512u16.to_le_bytes());
            b[0x13..0x15].copy_from_slice(&40_000u16.to_le_bytes());
            b[0x16..0x18].copy_from_slice(&40u16.to_le_bytes());
            b[0x26] = 0x29;
            b[0x27..0x2b].copy_from_slice(&7u32.to_le_bytes());
            b[0x2b..0x36].copy_from_slice(b"BOOT       ");
        }
        b
    }

    #[test]
    fn fat32_and_fat16_fields() {
        let b = BootSector::parse(&sector(true));
        assert!(b.is_sane() && b.fat32_layout);
        assert_eq!(
            (b.total_sectors, b.fat_sectors, b.root_cluster),
            (1_000_000, 1000, 2)
        );
        assert_eq!(b.volume, Some((0x1234_abcd, *b"ESP        ")));
        assert_eq!(b.metadata_len(), (32 + 2 * 1000) * 512);
        let b = BootSector::parse(&sector(false));
        assert!(b.is_sane() && !b.fat32_layout);
        assert_eq!(
            (b.total_sectors, b.fat_sectors, b.root_entries),
            (40_000, 40, 512)
        );
        assert_eq!(b.volume, Some((7, *b"BOOT       ")));
        assert_eq!(b.metadata_len(), (32 + 2 * 40) * 512 + 512 * 32);
    }

    #[test]
    fn insane_sectors_are_told_apart() {
        let mut unsigned = sector(true);
        unsigned[0x1ff] = 0;
        let mut odd_sector = sector(true);
        odd_sector[0x0b..0x0d].copy_from_slice(&513u16.to_le_bytes());
        let mut three_fats = sector(false);
        three_fats[0x10] = 3;
        let mut media = sector(false);
        media[0x15] = 0x12;
        let mut no_ext = sector(false);
        no_ext[0x26] = 0;
        for bad in [unsigned, odd_sector, three_fats, media] {
            assert!(!BootSector::parse(&bad).is_sane());
        }
        assert_eq!(BootSector::parse(&no_ext).volume, None);
    }
}
