//! FAT filesystems with `fatfs` on a [`PartitionSlice`]: format (FAT32, or
//! FAT16/FAT12 when the partition is too small for FAT32), then create,
//! read and remove files.
//!
//! `fatfs` is built without its `chrono` feature, so every timestamp is
//! 1980-01-01 00:00: the output only depends on the inputs. The boot
//! sector's fields are read by [`super::fat_boot`]; the repair of the
//! `.`/`..` entries `fatfs` writes is [`super::fat_repair`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use super::fat_boot::BootSector;
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
    let bpb = BootSector::read(file, start)
        .map_err(|e| ImageError::io("cannot read the FAT boot sector", e))?;
    Ok(bpb.metadata_len())
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
            assert!(
                matches!(path_components(bad), Err(ImageError::InvalidFatPath { .. })),
                "{bad:?}"
            );
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
        assert!(matches!(
            read_file(&fs, "a/b"),
            Err(ImageError::InvalidFatPath { .. })
        ));
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
