//! Classic DOS/MBR partition table: write (up to 4 primary partitions) and
//! read (primary entries plus the logical partitions of an extended one).

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;

use super::disk::DiskView;
use super::layout::SECTOR;

/// One primary entry to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrEntry {
    pub bootable: bool,
    pub type_byte: u8,
    /// First sector (LBA).
    pub start_lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

/// An entry read back from an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrPart {
    /// 1..=4 for primaries, 5.. for logical partitions.
    pub index: u32,
    pub bootable: bool,
    pub type_byte: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

/// A parsed MBR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MbrTable {
    pub signature: u32,
    pub partitions: Vec<MbrPart>,
    /// A 0xEE entry is present (protective MBR of a GPT disk).
    pub protective: bool,
}

const HEADS: u64 = 255;
const SECTORS_PER_TRACK: u64 = 63;

/// CHS triple for an LBA as stored in a partition entry (255 heads, 63
/// sectors per track; clamped to 1023/254/63 past the CHS limit, like sfdisk).
fn chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (HEADS * SECTORS_PER_TRACK);
    if cyl > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS_PER_TRACK) % HEADS;
    let sector = lba % SECTORS_PER_TRACK + 1;
    [
        head as u8,
        (sector as u8 & 0x3f) | (((cyl >> 8) as u8 & 0x03) << 6),
        (cyl & 0xff) as u8,
    ]
}

/// The 512-byte MBR sector for these entries (boot code left zero).
pub fn encode(signature: u32, entries: &[MbrEntry]) -> io::Result<[u8; 512]> {
    if entries.len() > 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an MBR holds at most 4 primary partitions",
        ));
    }
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&signature.to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let o = 446 + 16 * i;
        let last = u64::from(e.start_lba) + u64::from(e.sectors).saturating_sub(1);
        s[o] = if e.bootable { 0x80 } else { 0x00 };
        s[o + 1..o + 4].copy_from_slice(&chs(u64::from(e.start_lba)));
        s[o + 4] = e.type_byte;
        s[o + 5..o + 8].copy_from_slice(&chs(last));
        s[o + 8..o + 12].copy_from_slice(&e.start_lba.to_le_bytes());
        s[o + 12..o + 16].copy_from_slice(&e.sectors.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    Ok(s)
}

/// Write the MBR sector at LBA 0.
pub fn write(file: &File, signature: u32, entries: &[MbrEntry]) -> io::Result<()> {
    file.write_all_at(&encode(signature, entries)?, 0)
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

struct RawEntry {
    boot: u8,
    type_byte: u8,
    start: u32,
    sectors: u32,
}

fn entries_of(sector: &[u8; 512]) -> [RawEntry; 4] {
    std::array::from_fn(|i| {
        let o = 446 + 16 * i;
        let u32_at =
            |p: usize| u32::from_le_bytes([sector[p], sector[p + 1], sector[p + 2], sector[p + 3]]);
        RawEntry {
            boot: sector[o],
            type_byte: sector[o + 4],
            start: u32_at(o + 8),
            sectors: u32_at(o + 12),
        }
    })
}

/// Parse the MBR of `disk`. `Ok(None)` when sector 0 has no 0x55AA
/// signature. Errors describe malformed tables.
pub fn read<D: Read + Seek>(disk: &mut DiskView<D>) -> Result<Option<MbrTable>, String> {
    let disk_len = disk.len();
    let mut s = [0u8; 512];
    if disk_len < SECTOR {
        return Ok(None);
    }
    disk.read_exact_at(&mut s, 0)
        .map_err(|e| format!("cannot read sector 0: {e}"))?;
    if s[510] != 0x55 || s[511] != 0xaa {
        return Ok(None);
    }
    let signature = u32::from_le_bytes([s[440], s[441], s[442], s[443]]);
    let disk_sectors = disk_len / SECTOR;
    let mut partitions = Vec::new();
    let mut protective = false;
    let mut extended: Option<(u64, u64)> = None;
    for (i, e) in entries_of(&s).iter().enumerate() {
        if e.type_byte == 0 || e.sectors == 0 {
            continue;
        }
        if e.boot & 0x7f != 0 {
            return Err(format!(
                "MBR entry {} has an invalid boot flag 0x{:02x}",
                i + 1,
                e.boot
            ));
        }
        if e.type_byte == 0xee {
            protective = true;
            continue;
        }
        let start = u64::from(e.start);
        let sectors = u64::from(e.sectors);
        if start == 0 || start + sectors > disk_sectors {
            return Err(format!(
                "MBR entry {} (sectors {}..{}) lies outside the {}-sector image",
                i + 1,
                start,
                start + sectors,
                disk_sectors
            ));
        }
        if is_extended(e.type_byte) {
            if extended.is_some() {
                return Err("MBR has more than one extended partition".into());
            }
            extended = Some((start, sectors));
            continue;
        }
        partitions.push(MbrPart {
            index: i as u32 + 1,
            bootable: e.boot == 0x80,
            type_byte: e.type_byte,
            start_lba: start,
            sectors,
        });
    }
    if let Some((ext_start, ext_len)) = extended {
        read_logical(disk, ext_start, ext_len, disk_sectors, &mut partitions)?;
    }
    Ok(Some(MbrTable {
        signature,
        partitions,
        protective,
    }))
}

/// Follow the EBR chain of an extended partition.
fn read_logical<D: Read + Seek>(
    disk: &mut DiskView<D>,
    ext_start: u64,
    ext_len: u64,
    disk_sectors: u64,
    out: &mut Vec<MbrPart>,
) -> Result<(), String> {
    let mut ebr = ext_start;
    let mut index = 5u32;
    // A chain longer than the extended partition has sectors is a loop.
    for _ in 0..ext_len.min(4096) {
        let mut s = [0u8; 512];
        disk.read_exact_at(&mut s, ebr * SECTOR)
            .map_err(|e| format!("cannot read EBR at sector {ebr}: {e}"))?;
        if s[510] != 0x55 || s[511] != 0xaa {
            return Err(format!("EBR at sector {ebr} has no 0x55AA signature"));
        }
        let es = entries_of(&s);
        let (first, next) = (&es[0], &es[1]);
        if first.type_byte != 0 && first.sectors != 0 {
            let start = ebr + u64::from(first.start);
            let sectors = u64::from(first.sectors);
            if start + sectors > disk_sectors {
                return Err(format!("logical partition {index} lies outside the image"));
            }
            out.push(MbrPart {
                index,
                bootable: first.boot == 0x80,
                type_byte: first.type_byte,
                start_lba: start,
                sectors,
            });
            index += 1;
        }
        if next.type_byte == 0 || next.sectors == 0 {
            return Ok(());
        }
        let n = ext_start + u64::from(next.start);
        if n <= ebr || n >= ext_start + ext_len {
            return Err(format!(
                "EBR chain at sector {ebr} points to sector {n}: malformed"
            ));
        }
        ebr = n;
    }
    Err("EBR chain is too long (loop?)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_read_round_trips() {
        let entries = vec![
            MbrEntry {
                bootable: true,
                type_byte: 0x0c,
                start_lba: 8192,
                sectors: 1024 * 1024,
            },
            MbrEntry {
                bootable: false,
                type_byte: 0x83,
                start_lba: 8192 + 1024 * 1024,
                sectors: 4096,
            },
        ];
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 30).unwrap();
        write(&f, 0xdead_beef, &entries).unwrap();
        let t = read(&mut DiskView::new(&f, 1 << 30)).unwrap().unwrap();
        assert_eq!(t.signature, 0xdead_beef);
        assert!(!t.protective);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[0].index, 1);
        assert!(t.partitions[0].bootable);
        assert_eq!(t.partitions[0].type_byte, 0x0c);
        assert_eq!(t.partitions[1].start_lba, 8192 + 1024 * 1024);
        assert_eq!(t.partitions[1].sectors, 4096);
        assert!(encode(0, &[entries[0]; 5]).is_err());
    }

    #[test]
    fn chs_matches_sfdisk_conventions() {
        // LBA 2048 = C0 H32 S33 with 255/63 geometry.
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1 << 30), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn rejects_entries_outside_the_disk() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        let e = MbrEntry {
            bootable: false,
            type_byte: 0x83,
            start_lba: 2048,
            sectors: 4096,
        };
        write(&f, 1, &[e]).unwrap();
        assert!(read(&mut DiskView::new(&f, 1 << 20))
            .unwrap_err()
            .contains("outside"));
        let g = tempfile::tempfile().unwrap();
        g.set_len(4096).unwrap();
        assert_eq!(read(&mut DiskView::new(&g, 4096)).unwrap(), None);
    }
}
