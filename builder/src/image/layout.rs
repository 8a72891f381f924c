//! Layout types, size parsing and partition placement.
//!
//! Placement rules: partitions are laid out in order, each starting on the
//! next 1 MiB boundary (the first one at 1 MiB, leaving room for the MBR or
//! the primary GPT). A GPT image keeps its last 33 sectors free for the
//! backup partition array and header.

use std::path::PathBuf;

use super::ImageError;

/// Sector size used for every table this module writes.
pub const SECTOR: u64 = 512;
/// Partition alignment (start of every partition).
pub const ALIGN: u64 = 1024 * 1024;
/// Sectors at the end of a GPT disk used by the backup array + header.
pub const GPT_BACKUP_SECTORS: u64 = 33;
/// Longest GPT partition name, in UTF-16 code units.
pub const GPT_NAME_MAX: usize = 36;
/// Most partitions a GPT written by this module can hold.
pub const GPT_MAX_PARTITIONS: usize = 128;
/// Most primary partitions of a DOS/MBR table.
pub const MBR_MAX_PARTITIONS: usize = 4;

/// Partition table kind: of a layout, of an image read back, and the
/// recipe's `[image] table` (`gpt`, `mbr` or `dos`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// GUID partition table (UEFI), with protective MBR and backup at the end.
    #[default]
    Gpt,
    /// Classic DOS/MBR table, up to 4 primary partitions.
    #[serde(alias = "dos")]
    Mbr,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
        })
    }
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub table: TableKind,
    /// GPT disk GUID (random when `None`). Ignored for MBR.
    pub disk_guid: Option<uuid::Uuid>,
    /// MBR disk signature (random when `None`). Ignored for GPT.
    pub disk_signature: Option<u32>,
    pub partitions: Vec<PartitionSpec>,
    /// Total image size in bytes; `None` = partitions + alignment + backup GPT.
    pub total_size: Option<u64>,
}

/// One partition of a [`Layout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition name (at most 36 UTF-16 units). Not stored in an MBR.
    pub label: String,
    /// Size in bytes, a non-zero multiple of 512.
    pub size: u64,
    pub kind: PartitionKind,
    /// GPT partition GUID (random when `None`). Ignored for MBR.
    pub uuid: Option<uuid::Uuid>,
    /// MBR: active flag (0x80). GPT: "legacy BIOS bootable" attribute.
    pub bootable: bool,
    pub content: PartitionContent,
}

/// Partition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    /// EFI system partition (GPT C12A7328-…, MBR 0xef).
    Esp,
    /// Linux filesystem data (GPT 0FC63DAF-…, MBR 0x83).
    LinuxFs,
    /// FAT data partition (GPT Microsoft basic data EBD0A0A2-…, MBR 0x0c FAT32 LBA).
    Fat,
    /// Anything else.
    Other { gpt_type: uuid::Uuid, mbr_type: u8 },
}

pub const GPT_TYPE_ESP: uuid::Uuid = uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
pub const GPT_TYPE_LINUX_FS: uuid::Uuid = uuid::uuid!("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
pub const GPT_TYPE_BASIC_DATA: uuid::Uuid = uuid::uuid!("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");

impl Layout {
    /// `partitions` in `table`: random disk ids, and the smallest size that
    /// holds them (set the other fields with struct update syntax).
    pub fn new(table: TableKind, partitions: Vec<PartitionSpec>) -> Self {
        Layout {
            table,
            disk_guid: None,
            disk_signature: None,
            partitions,
            total_size: None,
        }
    }
}

impl PartitionSpec {
    /// A partition with a random GUID, not bootable.
    pub fn new(
        label: impl Into<String>,
        size: u64,
        kind: PartitionKind,
        content: PartitionContent,
    ) -> Self {
        PartitionSpec {
            label: label.into(),
            size,
            kind,
            uuid: None,
            bootable: false,
            content,
        }
    }
}

impl PartitionKind {
    pub fn gpt_type(&self) -> uuid::Uuid {
        match self {
            PartitionKind::Esp => GPT_TYPE_ESP,
            PartitionKind::LinuxFs => GPT_TYPE_LINUX_FS,
            PartitionKind::Fat => GPT_TYPE_BASIC_DATA,
            PartitionKind::Other { gpt_type, .. } => *gpt_type,
        }
    }

    pub fn mbr_type(&self) -> u8 {
        match self {
            PartitionKind::Esp => 0xef,
            PartitionKind::LinuxFs => 0x83,
            PartitionKind::Fat => 0x0c,
            PartitionKind::Other { mbr_type, .. } => *mbr_type,
        }
    }
}

/// What goes into a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionContent {
    /// Left as a hole (reads as zeros).
    Empty,
    /// A fresh FAT32 filesystem (FAT16/FAT12 when too small for FAT32).
    Fat {
        /// Volume label: at most 11 bytes of uppercase ASCII; empty = none.
        volume_label: String,
        /// Volume serial number (random when `None`).
        volume_id: Option<u32>,
        files: Vec<FatFile>,
    },
    /// An ext4 filesystem made by `mke2fs -d`.
    Ext4 {
        /// A directory or an (uncompressed) tarball.
        source: PathBuf,
        /// Filesystem UUID, also used as the htree hash seed (random when `None`).
        fs_uuid: Option<uuid::Uuid>,
    },
    /// An existing partition image, copied in sparsely.
    ImageFile(PathBuf),
}

impl PartitionContent {
    /// A FAT filesystem with a random volume id.
    pub fn fat(volume_label: impl Into<String>, files: Vec<FatFile>) -> Self {
        PartitionContent::Fat {
            volume_label: volume_label.into(),
            volume_id: None,
            files,
        }
    }

    /// The ext4 filesystem UUID the layout fixes, if any.
    pub fn fs_uuid(&self) -> Option<uuid::Uuid> {
        match self {
            PartitionContent::Ext4 { fs_uuid, .. } => *fs_uuid,
            _ => None,
        }
    }

    /// The FAT volume id the layout fixes, if any.
    pub fn volume_id(&self) -> Option<u32> {
        match self {
            PartitionContent::Fat { volume_id, .. } => *volume_id,
            _ => None,
        }
    }

    /// An ext4 filesystem from a directory or tarball, with a random UUID.
    pub fn ext4(source: impl Into<PathBuf>) -> Self {
        PartitionContent::Ext4 {
            source: source.into(),
            fs_uuid: None,
        }
    }
}

/// A file (or directory) to put into a FAT filesystem.
///
/// A `path` ending in `/` (see [`FatFile::dir`]) makes an empty directory;
/// parent directories of any entry are created as needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatFile {
    /// Path inside the filesystem, `/`-separated, e.g. `sealed-secrets/bundle`.
    pub path: String,
    /// File contents (must be empty for a directory).
    pub data: Vec<u8>,
}

impl FatFile {
    /// A regular file.
    pub fn file(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        FatFile {
            path: path.into(),
            data: data.into(),
        }
    }

    /// A directory: the path with a trailing `/`.
    pub fn dir(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.ends_with('/') {
            path.push('/');
        }
        FatFile {
            path,
            data: Vec::new(),
        }
    }

    /// Whether this entry stands for a directory (trailing `/`).
    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// Result of [`super::assemble_with`] (and of [`place`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Image size in bytes.
    pub size: u64,
    /// GPT disk GUID (uppercase) or MBR signature (`0x1234abcd`); empty for a placement alone.
    pub disk_id: String,
    pub partitions: Vec<Placed>,
}

/// Where a partition ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// 1-based partition number (as in `/dev/sda1`).
    pub index: u32,
    pub label: String,
    /// Byte offset in the image.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT partition GUID (uppercase) or MBR PARTUUID (`1234abcd-01`); `None` in a placement alone.
    pub part_uuid: Option<String>,
    /// Filesystem UUID (ext4) or volume id (FAT, `ABCD-1234`), when one was made.
    pub fs_uuid: Option<String>,
}

/// Parse a size: `4096` (bytes), `4096B`, `512K`, `512KiB`, `64M`, `64MiB`,
/// `1G`, `1GiB`, `2T`, `2TiB` (binary units; case of the unit letter ignored).
/// Zero, overflow, decimal units (`MB`) and anything else are rejected.
pub fn parse_size(s: &str) -> Result<u64, ImageError> {
    let bad = |reason: &str| ImageError::InvalidSize {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(bad(
            "expected a number, optionally followed by K, M, G or T",
        ));
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(bad(
                "decimal units are ambiguous: use K/M/G/T or KiB/MiB/GiB/TiB (powers of 1024)",
            ))
        }
        _ => {
            return Err(bad(
                "unknown unit (expected B, K, M, G, T, KiB, MiB, GiB or TiB)",
            ))
        }
    };
    let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
    if n == 0 {
        return Err(bad("size must be greater than zero"));
    }
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| bad("size overflows 64 bits"))
}

/// Format a byte count for messages (`64 MiB`, `1536 KiB`, `1000 bytes`).
pub fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (scale, name) in UNITS {
        if n >= scale && n.is_multiple_of(scale) {
            return format!("{} {name}", n / scale);
        }
    }
    format!("{n} bytes")
}

pub(crate) fn align_up(n: u64, a: u64) -> Option<u64> {
    n.checked_add(a - 1).map(|x| x / a * a)
}

/// Check a GPT partition name.
pub fn validate_gpt_name(label: &str) -> Result<(), ImageError> {
    let units = label.encode_utf16().count();
    if units > GPT_NAME_MAX {
        return Err(ImageError::GptLabelTooLong {
            label: label.to_string(),
            units,
        });
    }
    if label.contains('\0') {
        return Err(ImageError::InvalidLayout(format!(
            "GPT partition name {label:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// Compute where every partition goes and the image size, checking that
/// everything fits and that the table can describe it. Does not touch disk
/// and does not look at contents (see `super::assemble` for those checks).
pub fn place(layout: &Layout) -> Result<Placement, ImageError> {
    let n = layout.partitions.len();
    if n == 0 {
        return Err(ImageError::InvalidLayout("layout has no partitions".into()));
    }
    match layout.table {
        TableKind::Mbr if n > MBR_MAX_PARTITIONS => {
            return Err(ImageError::TooManyMbrPartitions(n));
        }
        TableKind::Gpt if n > GPT_MAX_PARTITIONS => {
            return Err(ImageError::InvalidLayout(format!(
                "a GPT holds at most {GPT_MAX_PARTITIONS} partitions; layout has {n}"
            )));
        }
        _ => {}
    }
    if let Some(total) = layout.total_size {
        if total == 0 || total % SECTOR != 0 {
            return Err(ImageError::InvalidLayout(format!(
                "total image size {total} is not a non-zero multiple of {SECTOR} bytes"
            )));
        }
    }

    let overflow = || ImageError::InvalidLayout("partition sizes overflow 64 bits".into());
    let mut placed = Vec::with_capacity(n);
    let mut cursor = ALIGN;
    for (i, p) in layout.partitions.iter().enumerate() {
        let index = i as u32 + 1;
        if layout.table == TableKind::Gpt {
            validate_gpt_name(&p.label)?;
        }
        if p.size == 0 || p.size % SECTOR != 0 {
            return Err(ImageError::InvalidLayout(format!(
                "partition {index} ({:?}): size {} is not a non-zero multiple of {SECTOR} bytes",
                p.label, p.size
            )));
        }
        let start = align_up(cursor, ALIGN).ok_or_else(overflow)?;
        let end = start.checked_add(p.size).ok_or_else(overflow)?;
        if layout.table == TableKind::Mbr {
            let limit = u64::from(u32::MAX) * SECTOR;
            if start / SECTOR > u64::from(u32::MAX) || p.size / SECTOR > u64::from(u32::MAX) {
                return Err(ImageError::InvalidLayout(format!(
                    "partition {index} ({:?}) at {start}+{} bytes is beyond what an MBR can \
                     address ({}); use a GPT",
                    p.label,
                    p.size,
                    human_size(limit)
                )));
            }
        }
        placed.push(Placed {
            index,
            label: p.label.clone(),
            start,
            size: p.size,
            part_uuid: None,
            fs_uuid: None,
        });
        cursor = end;
    }

    let backup = match layout.table {
        TableKind::Gpt => GPT_BACKUP_SECTORS * SECTOR,
        TableKind::Mbr => 0,
    };
    let needed = cursor.checked_add(backup).ok_or_else(overflow)?;
    let size = match layout.total_size {
        Some(total) => {
            if needed > total {
                // Name the first partition that does not fit.
                let limit = total.saturating_sub(backup);
                let culprit = placed
                    .iter()
                    .find(|p| p.start + p.size > limit)
                    .or(placed.last());
                let (index, label, end) = match culprit {
                    Some(p) => (p.index, p.label.clone(), p.start + p.size),
                    None => (0, String::new(), cursor),
                };
                return Err(ImageError::DoesNotFit {
                    index,
                    label,
                    end,
                    limit,
                    total,
                    needed,
                });
            }
            total
        }
        None => {
            let end = align_up(cursor, ALIGN).ok_or_else(overflow)?;
            match layout.table {
                TableKind::Gpt => end.checked_add(ALIGN).ok_or_else(overflow)?,
                TableKind::Mbr => end,
            }
        }
    };
    if layout.table == TableKind::Gpt && size / SECTOR < 2 * GPT_BACKUP_SECTORS + 2 {
        return Err(ImageError::InvalidLayout(format!(
            "image of {size} bytes is too small for a GPT"
        )));
    }
    Ok(Placement {
        size,
        disk_id: String::new(),
        partitions: placed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(label: &str, size: u64) -> PartitionSpec {
        PartitionSpec::new(label, size, PartitionKind::LinuxFs, PartitionContent::Empty)
    }

    fn layout(table: TableKind, parts: Vec<PartitionSpec>, total: Option<u64>) -> Layout {
        Layout {
            total_size: total,
            ..Layout::new(table, parts)
        }
    }

    #[test]
    fn parse_size_accepts_binary_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4096B").unwrap(), 4096);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size(" 1G ").unwrap(), 1 << 30);
        assert_eq!(parse_size("1gib").unwrap(), 1 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("16777215T").unwrap(), 16777215u64 << 40);
    }

    #[test]
    fn parse_size_rejects_junk() {
        for bad in [
            "",
            "0",
            "0M",
            "M",
            "-1",
            "1.5G",
            "1MB",
            "1 GB",
            "12X",
            "1_000",
            "1  M",
            "1Mi",
            "16777216T",
            "99999999999999999999",
            "0x10",
            "+5",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(
                matches!(err, ImageError::InvalidSize { .. }),
                "{bad}: {err}"
            );
        }
        let msg = parse_size("1MB").unwrap_err().to_string();
        assert!(msg.contains("MiB"), "{msg}");
    }

    #[test]
    fn gpt_plan_aligns_and_reserves_backup() {
        let l = layout(
            TableKind::Gpt,
            vec![part("esp", 64 << 20), part("root", (100 << 20) + 512)],
            None,
        );
        let p = place(&l).unwrap();
        assert_eq!(p.partitions[0].start, 1 << 20);
        assert_eq!(p.partitions[1].start, 65 << 20);
        // root ends at 165 MiB + 512, rounded to 166 MiB, plus 1 MiB for the backup GPT.
        assert_eq!(p.size, 167 << 20);
        assert_eq!(p.partitions[1].index, 2);
    }

    #[test]
    fn mbr_plan_has_no_backup() {
        let l = layout(TableKind::Mbr, vec![part("a", 8 << 20)], None);
        assert_eq!(place(&l).unwrap().size, 9 << 20);
    }

    #[test]
    fn explicit_total_must_fit() {
        // 1 MiB gap + 8 MiB partition + 33 sectors of backup > 9 MiB
        let l = layout(TableKind::Gpt, vec![part("a", 8 << 20)], Some(9 << 20));
        match place(&l).unwrap_err() {
            ImageError::DoesNotFit { index, label, .. } => {
                assert_eq!((index, label.as_str()), (1, "a"));
            }
            e => panic!("{e}"),
        }
        let l = layout(TableKind::Mbr, vec![part("a", 8 << 20)], Some(9 << 20));
        assert_eq!(place(&l).unwrap().size, 9 << 20);
        let l = layout(
            TableKind::Gpt,
            vec![part("a", 8 << 20)],
            Some((9 << 20) + 33 * 512),
        );
        assert_eq!(place(&l).unwrap().size, (9 << 20) + 33 * 512);
        let l = layout(TableKind::Gpt, vec![part("a", 8 << 20)], Some(1000));
        assert!(matches!(place(&l), Err(ImageError::InvalidLayout(_))));
    }

    #[test]
    fn limits_are_checked() {
        let five = (0..5).map(|i| part(&format!("p{i}"), 1 << 20)).collect();
        assert!(matches!(
            place(&layout(TableKind::Mbr, five, None)),
            Err(ImageError::TooManyMbrPartitions(5))
        ));
        let long = "x".repeat(37);
        assert!(matches!(
            place(&layout(TableKind::Gpt, vec![part(&long, 1 << 20)], None)),
            Err(ImageError::GptLabelTooLong { units: 37, .. })
        ));
        // 36 UTF-16 units is fine, even with non-ASCII.
        let ok = "é".repeat(36);
        assert!(place(&layout(TableKind::Gpt, vec![part(&ok, 1 << 20)], None)).is_ok());
        // An emoji is two UTF-16 units.
        let emoji = "😀".repeat(19);
        assert!(place(&layout(TableKind::Gpt, vec![part(&emoji, 1 << 20)], None)).is_err());
        assert!(place(&layout(TableKind::Gpt, vec![part("a", 1000)], None)).is_err());
        assert!(place(&layout(TableKind::Gpt, vec![part("a", 0)], None)).is_err());
        assert!(place(&layout(TableKind::Gpt, vec![], None)).is_err());
        let huge = layout(TableKind::Mbr, vec![part("a", 4 << 40)], None);
        assert!(matches!(place(&huge), Err(ImageError::InvalidLayout(_))));
        let overflow = layout(
            TableKind::Gpt,
            vec![part("a", u64::MAX - 511), part("b", 1 << 20)],
            None,
        );
        assert!(place(&overflow).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(1536 << 10), "1536 KiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
