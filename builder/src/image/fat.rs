//! FAT filesystems with `fatfs` on a [`PartitionSlice`]: format (FAT32, or
//! FAT16/FAT12 when the partition is too small for FAT32), then create,
//! read and remove files.
//!
//! `fatfs` is built without its `chrono` feature, so every timestamp is
//! 1980-01-01 00:00: the output only depends on the inputs.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use super::layout::{human_size, FatFile, SECTOR};
use super::slice::{PartitionSlice, SliceHandle};
use super::ImageError;

/// A mounted FAT filesystem inside an image file.
/// A mounted FAT filesystem and the handle that writes its cache back.
pub struct Fat {
    fs: FileSystem<PartitionSlice>,
    cache: SliceHandle,
}

impl std::ops::Deref for Fat {
    type Target = FileSystem<PartitionSlice>;
    fn deref(&self) -> &Self::Target {
        &self.fs
    }
}

/// Characters a FAT volume label may not contain (besides lowercase and
/// non-ASCII, which are rejected separately).
const LABEL_FORBIDDEN: &[u8] = b"\"*+,./:;<=>?[\\]|";
/// Characters a long file name may not contain.
const NAME_FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// Check a FAT volume label and pad it to the 11 bytes stored on disk.
/// `Ok(None)` for an empty label (the filesystem then has none: `NO NAME`).
pub fn volume_label_bytes(label: &str) -> Result<Option<[u8; 11]>, ImageError> {
    let bad = |reason: String| ImageError::InvalidFatLabel {
        label: label.to_string(),
        reason,
    };
    if label.is_empty() {
        return Ok(None);
    }
    if label.len() > 11 {
        return Err(bad(format!("{} bytes long; the limit is 11", label.len())));
    }
    for c in label.chars() {
        if !c.is_ascii() || c.is_ascii_control() {
            return Err(bad(format!("{c:?} is not printable ASCII")));
        }
        if c.is_ascii_lowercase() {
            return Err(bad(format!(
                "lowercase letters are not portable in FAT labels; use {:?}",
                label.to_ascii_uppercase()
            )));
        }
        if LABEL_FORBIDDEN.contains(&(c as u8)) {
            return Err(bad(format!("{c:?} is not allowed in a FAT label")));
        }
    }
    if label.starts_with(' ') {
        return Err(bad("a FAT label cannot start with a space".into()));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

/// Split and check a path inside a FAT filesystem (`/`-separated; a
/// leading `/` is allowed). Returns the components.
pub fn path_components(path: &str) -> Result<Vec<&str>, ImageError> {
    let bad = |reason: &str| ImageError::InvalidFatPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let rel = path.strip_prefix('/').unwrap_or(path);
    split_checked(rel, &bad)
}

/// Check a [`FatFile`]: its components, and that a directory has no data.
pub fn entry_components(f: &FatFile) -> Result<Vec<&str>, ImageError> {
    let bad = |reason: &str| ImageError::InvalidFatPath {
        path: f.path.clone(),
        reason: reason.to_string(),
    };
    let rel = f.path.strip_prefix('/').unwrap_or(&f.path);
    if f.is_dir() {
        if !f.data.is_empty() {
            return Err(bad("a directory (path ending in \"/\") cannot carry data"));
        }
        return split_checked(rel.strip_suffix('/').unwrap_or(rel), &bad);
    }
    split_checked(rel, &bad)
}

fn split_checked<'p>(
    rel: &'p str,
    bad: &dyn Fn(&str) -> ImageError,
) -> Result<Vec<&'p str>, ImageError> {
    if rel.is_empty() {
        return Err(bad("empty path"));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts {
        if p.is_empty() {
            return Err(bad("empty component (\"//\" or trailing \"/\")"));
        }
        if *p == "." || *p == ".." {
            return Err(bad("\".\" and \"..\" are not allowed"));
        }
        if p.chars()
            .any(|c| NAME_FORBIDDEN.contains(&c) || c.is_control())
        {
            return Err(bad(
                "contains a character FAT does not allow (\" * : < > ? \\ | or a control character)",
            ));
        }
        if p.ends_with(' ') || p.ends_with('.') {
            return Err(bad("a name cannot end with a space or a dot on FAT"));
        }
        if p.encode_utf16().count() > 255 {
            return Err(bad("a name is longer than 255 UTF-16 units"));
        }
    }
    Ok(parts)
}

/// Format the volume id the way `blkid` shows it (`ABCD-1234`).
pub fn volume_id_string(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

fn format_error(size: u64, e: io::Error) -> ImageError {
    let msg = e.to_string();
    let too_small = [
        "too small",
        "Cannot select FAT type",
        "Invalid FAT type",
        "does not match",
    ]
    .iter()
    .any(|m| msg.contains(m));
    if too_small {
        ImageError::FatTooSmall { size, reason: msg }
    } else {
        ImageError::io(
            format!("cannot format a FAT filesystem in {}", human_size(size)),
            e,
        )
    }
}

/// Format `[start, start+len)` of `file` as FAT32 (FAT16/FAT12 if too small).
pub fn format(
    file: &File,
    start: u64,
    len: u64,
    label: Option<[u8; 11]>,
    volume_id: u32,
) -> Result<(), ImageError> {
    let slice = PartitionSlice::new(clone(file)?, start, len)
        .map_err(|e| ImageError::io("bad partition window", e))?;
    if len / SECTOR > u64::from(u32::MAX) {
        return Err(ImageError::InvalidLayout(format!(
            "a FAT filesystem cannot be larger than 2 TiB ({} requested)",
            human_size(len)
        )));
    }
    let mut opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .volume_id(volume_id);
    if let Some(l) = label {
        opts = opts.volume_label(l);
    }
    let cache = slice.handle();
    fatfs::format_volume(slice, opts).map_err(|e| format_error(len, e))?;
    cache
        .flush()
        .map_err(|e| ImageError::io("cannot write the FAT filesystem", e))
}

/// Store the partition's first sector in the BPB "hidden sectors" field (as
/// `mkfs.fat --offset` does), in the backup boot sector too for FAT32.
pub fn set_hidden_sectors(file: &File, start: u64, fat_type: FatType) -> Result<(), ImageError> {
    let hidden = u32::try_from(start / SECTOR).unwrap_or(0).to_le_bytes();
    let io = |e| ImageError::io("cannot update the FAT boot sector", e);
    file.write_all_at(&hidden, start + 0x1c).map_err(io)?;
    if fat_type == FatType::Fat32 {
        file.write_all_at(&hidden, start + 6 * SECTOR + 0x1c)
            .map_err(io)?;
    }
    Ok(())
}

/// Make the boot sectors, FATs and (FAT12/16) root directory region real
/// data in the sparse image, zeros included. Left as holes, a bmap would
/// mark them unmapped and flashing onto a card with old data would leave
/// garbage in the FATs. Returns the length of the region.
pub fn allocate_metadata(file: &File, start: u64) -> Result<u64, ImageError> {
    let io = |e| ImageError::io("cannot allocate the FAT metadata region", e);
    let len = metadata_len(file, start)?;
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < len {
        let n = CHUNK.min(len - pos) as usize;
        // Rewrite what is there: data stays, holes become allocated zeros.
        file.read_exact_at(&mut buf[..n], start + pos).map_err(io)?;
        file.write_all_at(&buf[..n], start + pos).map_err(io)?;
        pos += n as u64;
    }
    Ok(len)
}

/// Length of the boot sectors, FATs and FAT12/16 root directory region of
/// the FAT filesystem at `start`, from its BPB.
pub fn metadata_len(file: &File, start: u64) -> Result<u64, ImageError> {
    let io = |e| ImageError::io("cannot read the FAT boot sector", e);
    let mut bpb = [0u8; 64];
    file.read_exact_at(&mut bpb, start).map_err(io)?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bpb[o], bpb[o + 1]]));
    let bytes_per_sector = u16_at(0x0b);
    let reserved = u16_at(0x0e);
    let fats = u64::from(bpb[0x10]);
    let root_entries = u16_at(0x11);
    let fat_size = match u16_at(0x16) {
        0 => u64::from(u32::from_le_bytes([
            bpb[0x24], bpb[0x25], bpb[0x26], bpb[0x27],
        ])),
        n => n,
    };
    Ok((reserved + fats * fat_size) * bytes_per_sector + root_entries * 32)
}

fn clone(file: &File) -> Result<File, ImageError> {
    file.try_clone()
        .map_err(|e| ImageError::io("cannot duplicate the image file handle", e))
}

/// Mount the FAT filesystem at `[start, start+len)` of `file`.
pub fn open(file: &File, start: u64, len: u64) -> Result<Fat, ImageError> {
    let slice = PartitionSlice::new(clone(file)?, start, len)
        .map_err(|e| ImageError::io("bad partition window", e))?;
    let cache = slice.handle();
    let fs = FileSystem::new(slice, FsOptions::new()).map_err(|e| ImageError::NotFat {
        reason: e.to_string(),
    })?;
    Ok(Fat { fs, cache })
}

/// Flush and unmount, reporting errors (dropping would swallow them).
pub fn close(fat: Fat) -> Result<(), ImageError> {
    let Fat { fs, cache } = fat;
    fs.unmount()
        .map_err(|e| ImageError::io("cannot flush the FAT filesystem", e))?;
    cache
        .flush()
        .map_err(|e| ImageError::io("cannot flush the FAT filesystem", e))
}

fn fat_io(path: &str, what: &str, e: io::Error, fs: &Fat) -> ImageError {
    let msg = e.to_string();
    if msg.contains("No space left") {
        let free = fs
            .stats()
            .map(|s| u64::from(s.free_clusters()) * u64::from(s.cluster_size()))
            .unwrap_or(0);
        return ImageError::FatFull {
            path: path.to_string(),
            free,
        };
    }
    if msg.contains("Is a directory") || msg.contains("Not a directory") {
        return ImageError::InvalidFatPath {
            path: path.to_string(),
            reason: format!(
                "{} (a file and a directory of the same name)",
                msg.to_lowercase()
            ),
        };
    }
    ImageError::io(format!("FAT: cannot {what} {path:?}"), e)
}

/// Create (or replace) files and directories, creating parent directories.
pub fn write_files(fs: &Fat, files: &[FatFile]) -> Result<(), ImageError> {
    for f in files {
        let parts = entry_components(f)?;
        let (dirs, last) = if f.is_dir() {
            (&parts[..], None)
        } else {
            let (last, dirs) = parts
                .split_last()
                .ok_or_else(|| ImageError::InvalidFatPath {
                    path: f.path.clone(),
                    reason: "empty path".into(),
                })?;
            (dirs, Some(*last))
        };
        let mut dir = fs.root_dir();
        for d in dirs {
            dir = dir
                .create_dir(d)
                .map_err(|e| fat_io(&f.path, "create directory for", e, fs))?;
        }
        if let Some(name) = last {
            let mut file = dir
                .create_file(name)
                .map_err(|e| fat_io(&f.path, "create", e, fs))?;
            file.truncate()
                .map_err(|e| fat_io(&f.path, "truncate", e, fs))?;
            file.write_all(&f.data)
                .map_err(|e| fat_io(&f.path, "write", e, fs))?;
            file.flush().map_err(|e| fat_io(&f.path, "write", e, fs))?;
        }
    }
    Ok(())
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.to_string().contains("Not a directory")
}

/// Read a file; `Ok(None)` when it (or a parent directory) does not exist.
pub fn read_file(fs: &Fat, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let parts = path_components(path)?;
    let joined = parts.join("/");
    let mut file = match fs.root_dir().open_file(&joined) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(fat_io(path, "open", e, fs)),
    };
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| fat_io(path, "read", e, fs))?;
    Ok(Some(data))
}

/// Overwrite a file's contents with zeros, then delete it. `Ok(false)` when
/// it does not exist.
pub fn remove_file(fs: &Fat, path: &str) -> Result<bool, ImageError> {
    let parts = path_components(path)?;
    let joined = parts.join("/");
    let root = fs.root_dir();
    {
        let mut file = match root.open_file(&joined) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(fat_io(path, "open", e, fs)),
        };
        let mut len = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| fat_io(path, "read", e, fs))?;
            if n == 0 {
                break;
            }
            len += n as u64;
        }
        io::Seek::seek(&mut file, io::SeekFrom::Start(0))
            .map_err(|e| fat_io(path, "rewind", e, fs))?;
        let zeros = [0u8; 8192];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])
                .map_err(|e| fat_io(path, "overwrite", e, fs))?;
            left -= n as u64;
        }
        file.flush().map_err(|e| fat_io(path, "overwrite", e, fs))?;
    }
    root.remove(&joined)
        .map_err(|e| fat_io(path, "remove", e, fs))?;
    Ok(true)
}

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
    let mut b = [0u8; 512];
    file.read_exact_at(&mut b, base)?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "invalid FAT boot sector");
    let bps = u16_at(11);
    let spc = u64::from(b[13]);
    let reserved = u16_at(14);
    let fats = u64::from(b[16]);
    let root_entries = u16_at(17);
    let total = if u16_at(19) != 0 {
        u16_at(19)
    } else {
        u32_at(32)
    };
    let fat_sectors = if u16_at(22) != 0 {
        u16_at(22)
    } else {
        u32_at(36)
    };
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
        root_cluster: u32::try_from(u32_at(44)).map_err(|_| bad())?,
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

/// FAT type name for messages.
pub fn fat_type_name(t: FatType) -> &'static str {
    match t {
        FatType::Fat12 => "FAT12",
        FatType::Fat16 => "FAT16",
        FatType::Fat32 => "FAT32",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(volume_label_bytes("").unwrap(), None);
        assert_eq!(&volume_label_bytes("ESP").unwrap().unwrap(), b"ESP        ");
        assert_eq!(
            &volume_label_bytes("BOOT_FS-01!").unwrap().unwrap(),
            b"BOOT_FS-01!"
        );
        for bad in ["bootfs", "TWELVE_CHARS", "A.B", "ÉTÉ", "A\tB", " X", "A*"] {
            assert!(
                matches!(
                    volume_label_bytes(bad),
                    Err(ImageError::InvalidFatLabel { .. })
                ),
                "{bad}"
            );
        }
        let msg = volume_label_bytes("bootfs").unwrap_err().to_string();
        assert!(msg.contains("BOOTFS"), "{msg}");
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_components("sealed-secrets/bundle").unwrap(),
            vec!["sealed-secrets", "bundle"]
        );
        assert_eq!(path_components("/EFI/BOOT").unwrap(), vec!["EFI", "BOOT"]);
        for bad in [
            "", "/", "a//b", "a/", "../x", "a/./b", "a:b", "a\\b", "x.", "a\nb",
        ] {
            assert!(path_components(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volume_ids() {
        assert_eq!(volume_id_string(0x1234abcd), "1234-ABCD");
    }

    fn blank(len: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn picks_fat32_when_big_enough_else_smaller() {
        for (size, want) in [
            (64u64 << 20, FatType::Fat32),
            (16 << 20, FatType::Fat16),
            (1 << 20, FatType::Fat12),
        ] {
            let f = blank(size);
            format(&f, 0, size, None, 1).unwrap();
            let fs = open(&f, 0, size).unwrap();
            assert_eq!(fs.fat_type(), want, "{size}");
            close(fs).unwrap();
        }
        let f = blank(8192);
        assert!(matches!(
            format(&f, 0, 8192, None, 1),
            Err(ImageError::FatTooSmall { .. })
        ));
    }

    #[test]
    fn write_read_replace_remove() {
        let f = blank(2 << 20);
        format(&f, 0, 2 << 20, volume_label_bytes("T").unwrap(), 7).unwrap();
        let fs = open(&f, 0, 2 << 20).unwrap();
        write_files(
            &fs,
            &[
                FatFile::file("a/b/c.txt", b"hello".to_vec()),
                FatFile::dir("empty/dir"),
                FatFile::file("a/b/c.txt", b"hi".to_vec()),
                FatFile::file("A Long File Name.data", vec![9u8; 5000]),
            ],
        )
        .unwrap();
        assert_eq!(read_file(&fs, "a/b/c.txt").unwrap().unwrap(), b"hi");
        assert_eq!(read_file(&fs, "/A/B/C.TXT").unwrap().unwrap(), b"hi");
        assert_eq!(read_file(&fs, "a/b/missing").unwrap(), None);
        assert_eq!(read_file(&fs, "nope/x").unwrap(), None);
        assert_eq!(read_file(&fs, "a/b/c.txt/x").unwrap(), None);
        assert!(read_file(&fs, "a/b").is_err());
        assert!(fs.root_dir().open_dir("empty/dir").is_ok());
        assert!(remove_file(&fs, "a/b/c.txt").unwrap());
        assert!(!remove_file(&fs, "a/b/c.txt").unwrap());
        assert_eq!(read_file(&fs, "a/b/c.txt").unwrap(), None);
        // A file where a directory is wanted, and the other way round.
        let err = write_files(&fs, &[FatFile::file("A Long File Name.data/x", vec![1])]);
        assert!(
            matches!(err, Err(ImageError::InvalidFatPath { .. })),
            "{err:?}"
        );
        let err = write_files(&fs, &[FatFile::file("a/b", vec![1])]);
        assert!(
            matches!(err, Err(ImageError::InvalidFatPath { .. })),
            "{err:?}"
        );
        // Full.
        let err = write_files(&fs, &[FatFile::file("big", vec![1u8; 4 << 20])]);
        assert!(matches!(err, Err(ImageError::FatFull { .. })), "{err:?}");
        close(fs).unwrap();
    }
}
