//! The repair of the `.` and `..` entries `fatfs` 0.3 writes (see
//! [`fix_dot_entries`]), on the raw FAT geometry of the boot sector.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use fatfs::FatType;

use super::fat_boot::BootSector;
use super::ImageError;

/// Raw FAT geometry, read from the boot sector.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    cluster_size: u64,
    fat_offset: u64,
    fat_bytes: u64,
    root_dir_offset: u64,
    root_dir_bytes: u64,
    data_offset: u64,
    clusters: u32,
    fat_type: FatType,
    root_cluster: u32,
}

fn geometry(file: &File, base: u64) -> io::Result<Geometry> {
    let b = BootSector::read(file, base)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "invalid FAT boot sector");
    let bps = b.bytes_per_sector;
    let spc = b.sectors_per_cluster;
    let reserved = b.reserved_sectors;
    let fats = b.fats;
    let root_entries = b.root_entries;
    let total = b.total_sectors;
    let fat_sectors = b.fat_sectors;
    if bps == 0 || spc == 0 || fats == 0 || fat_sectors == 0 {
        return Err(bad());
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_sector = reserved + fats * fat_sectors + root_sectors;
    let clusters = total.checked_sub(data_sector).ok_or_else(bad)? / spc;
    let fat_type = if clusters < 4085 {
        FatType::Fat12
    } else if clusters < 65525 {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    Ok(Geometry {
        cluster_size: bps * spc,
        fat_offset: base + reserved * bps,
        fat_bytes: fat_sectors * bps,
        root_dir_offset: base + (reserved + fats * fat_sectors) * bps,
        root_dir_bytes: root_sectors * bps,
        data_offset: base + data_sector * bps,
        clusters: u32::try_from(clusters).map_err(|_| bad())?,
        fat_type,
        root_cluster: b.root_cluster,
    })
}

impl Geometry {
    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) < u64::from(self.clusters) + 2
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c - 2) * self.cluster_size
    }

    /// The next cluster of a chain, `None` at its end (or on a bad entry).
    fn next(&self, file: &File, c: u32) -> io::Result<Option<u32>> {
        let c64 = u64::from(c);
        let (entry_off, next) = match self.fat_type {
            FatType::Fat12 => {
                let off = c64 + c64 / 2;
                let mut b = [0u8; 2];
                file.read_exact_at(&mut b, self.fat_offset + off)?;
                let v = u16::from_le_bytes(b);
                (off, u32::from(if c & 1 == 1 { v >> 4 } else { v & 0x0fff }))
            }
            FatType::Fat16 => {
                let mut b = [0u8; 2];
                file.read_exact_at(&mut b, self.fat_offset + c64 * 2)?;
                (c64 * 2, u32::from(u16::from_le_bytes(b)))
            }
            FatType::Fat32 => {
                let mut b = [0u8; 4];
                file.read_exact_at(&mut b, self.fat_offset + c64 * 4)?;
                (c64 * 4, u32::from_le_bytes(b) & 0x0fff_ffff)
            }
        };
        if entry_off >= self.fat_bytes {
            return Ok(None);
        }
        Ok(self.valid_cluster(next).then_some(next))
    }

    /// Byte ranges holding a directory: the fixed root region (FAT12/16)
    /// or the clusters of a chain.
    fn dir_ranges(&self, file: &File, first: Option<u32>) -> io::Result<Vec<(u64, u64)>> {
        let Some(mut c) = first else {
            return Ok(vec![(self.root_dir_offset, self.root_dir_bytes)]);
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        while self.valid_cluster(c) && seen.insert(c) {
            out.push((self.cluster_offset(c), self.cluster_size));
            match self.next(file, c)? {
                Some(n) => c = n,
                None => break,
            }
        }
        Ok(out)
    }
}

const ATTR_LFN: u8 = 0x0f;
const ATTR_DIR: u8 = 0x10;
const ATTR_VOLUME: u8 = 0x08;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// `fatfs` 0.3 writes a long-name entry in front of the `.` and `..`
/// entries of every directory it creates, which `fsck.fat` rejects ("Expected
/// a valid '.' entry in this slot") and some firmware may trip on. Walk the
/// directory tree and rewrite such directories' first slots as `.`, `..`
/// followed by two deleted entries; `..` of a top-level directory points to
/// cluster 0 as the FAT specification requires. Other directories are left
/// untouched. Returns how many directories were fixed.
pub fn fix_dot_entries(file: &File, base: u64) -> Result<usize, ImageError> {
    let io_err = |e| ImageError::io("cannot repair FAT directory entries", e);
    let g = geometry(file, base).map_err(io_err)?;
    let root = match g.fat_type {
        FatType::Fat32 => Some(g.root_cluster),
        _ => None,
    };
    let mut fixed = 0;
    let mut seen = HashSet::new();
    // (first cluster or None for the FAT12/16 root, parent is root)
    let mut stack: Vec<(Option<u32>, bool)> = vec![(root, false)];
    while let Some((dir, parent_is_root)) = stack.pop() {
        let is_root = dir == root;
        if !is_root {
            if let Some(c) = dir {
                if fix_one(file, &g, c, parent_is_root).map_err(io_err)? {
                    fixed += 1;
                }
            }
        }
        for (off, len) in g.dir_ranges(file, dir).map_err(io_err)? {
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_at(&mut buf, off).map_err(io_err)?;
            for e in buf.chunks_exact(32) {
                if e[0] == 0 {
                    break;
                }
                let attr = e[11];
                if e[0] == 0xe5 || attr & 0x3f == ATTR_LFN || attr & ATTR_VOLUME != 0 {
                    continue;
                }
                if attr & ATTR_DIR == 0 || &e[..11] == DOT || &e[..11] == DOTDOT {
                    continue;
                }
                let hi = if g.fat_type == FatType::Fat32 {
                    u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
                } else {
                    0
                };
                let c = hi | u32::from(u16::from_le_bytes([e[26], e[27]]));
                if g.valid_cluster(c) && seen.insert(c) {
                    stack.push((Some(c), is_root));
                }
            }
        }
    }
    Ok(fixed)
}

fn fix_one(file: &File, g: &Geometry, cluster: u32, parent_is_root: bool) -> io::Result<bool> {
    if g.cluster_size < 128 {
        return Ok(false);
    }
    let off = g.cluster_offset(cluster);
    let mut s = [0u8; 128];
    file.read_exact_at(&mut s, off)?;
    let is_lfn = |e: &[u8]| e[0] != 0 && e[0] != 0xe5 && e[11] & 0x3f == ATTR_LFN;
    let pattern = is_lfn(&s[0..32])
        && &s[32..43] == DOT
        && s[43] & ATTR_DIR != 0
        && is_lfn(&s[64..96])
        && &s[96..107] == DOTDOT
        && s[107] & ATTR_DIR != 0;
    if !pattern {
        return Ok(false);
    }
    let mut fixed = [0u8; 128];
    fixed[0..32].copy_from_slice(&s[32..64]);
    fixed[32..64].copy_from_slice(&s[96..128]);
    if parent_is_root {
        // `..` of a top-level directory names the root as cluster 0.
        fixed[32 + 20..32 + 22].fill(0);
        fixed[32 + 26..32 + 28].fill(0);
    }
    // The two freed slots become deleted entries (later slots may be in use).
    fixed[64..96].copy_from_slice(&s[0..32]);
    fixed[64] = 0xe5;
    fixed[96..128].copy_from_slice(&s[64..96]);
    fixed[96] = 0xe5;
    file.write_all_at(&fixed, off)?;
    Ok(true)
}
