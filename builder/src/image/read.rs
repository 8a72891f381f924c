//! Reading existing images: the partition table (GPT or MBR, including
//! images this crate did not make, such as Raspberry Pi OS) and which
//! partition is the FAT boot partition. Files inside it: `fat_files.rs`.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

use gpt::disk::LogicalBlockSize;
use gpt::GptConfig;

use super::disk::DiskView;
use super::fat_boot::BootSector;
use super::layout::{TableKind, GPT_TYPE_BASIC_DATA, GPT_TYPE_ESP, SECTOR};
use super::mbr_table;
use super::ImageError;

/// A partition table as found in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    pub table: TableKind,
    /// GPT disk GUID (uppercase) or MBR signature (`0x1234abcd`).
    pub disk_id: String,
    /// Image size in bytes.
    pub size: u64,
    pub partitions: Vec<PartInfo>,
}

/// One partition of an image (as `inspect --json` prints it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartInfo {
    /// Partition number (1-based; MBR logical partitions start at 5).
    pub index: u32,
    /// Byte offset.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT type GUID (uppercase) or MBR type byte (`0x0c`).
    pub type_id: String,
    /// GPT partition name (MBR partitions have none: see `fs_label`).
    pub label: Option<String>,
    /// GPT partition GUID (uppercase) or MBR PARTUUID (`1234abcd-01`).
    pub uuid: Option<String>,
    /// FAT filesystem in a partition whose type says FAT or ESP.
    #[serde(skip)]
    pub is_fat_boot_candidate: bool,
    /// Filesystem found at the start of the partition: `vfat`, `ext4`, `ext3`, `ext2`.
    #[serde(rename = "filesystem")]
    pub fs_type: Option<String>,
    /// Filesystem label (FAT volume label or ext label), if any.
    pub fs_label: Option<String>,
    /// What `UUID=` in fstab names: the FAT volume serial (`XXXX-XXXX`) or
    /// the ext filesystem UUID.
    #[serde(skip)]
    pub fs_uuid: Option<String>,
}

impl PartInfo {
    /// An EFI system partition by type (GPT ESP GUID or MBR 0xef).
    pub fn is_esp_type(&self) -> bool {
        self.type_id == fmt_guid(&GPT_TYPE_ESP) || self.type_id == "0xef"
    }

    /// Whether its GPT name or filesystem label is `name`, ASCII case ignored.
    pub fn is_called(&self, name: &str) -> bool {
        [self.label.as_deref(), self.fs_label.as_deref()]
            .into_iter()
            .flatten()
            .any(|x| x.eq_ignore_ascii_case(name))
    }

    /// Whether a FAT filesystem was found in it.
    pub fn is_fat(&self) -> bool {
        self.fs_type.as_deref() == Some("vfat")
    }

    /// One-line description for messages and `inspect`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} (type {}", self.index, self.type_id);
        if let Some(l) = &self.label {
            s.push_str(&format!(", name {l:?}"));
        }
        if let Some(t) = &self.fs_type {
            s.push_str(&format!(", {t}"));
        }
        if let Some(l) = &self.fs_label {
            s.push_str(&format!(" {l:?}"));
        }
        s.push(')');
        s
    }
}

/// How to pick a partition: the FAT boot partition (`--partition`), or
/// the root filesystem (`--root-partition`, `[agent] root-partition`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionSelector {
    /// The default: the ESP if there is one, else the only FAT partition of
    /// a FAT type (boot); the only ext4 partition besides the boot one
    /// (root).
    Auto,
    /// By GPT partition name, or by filesystem label (ASCII case ignored).
    Label(String),
    /// By partition number.
    Index(u32),
}

impl PartitionSelector {
    /// A partition number, else a GPT name or filesystem label (as
    /// `--partition` and `[agent] root-partition` take it).
    pub fn from_arg(s: &str) -> PartitionSelector {
        match s.parse::<u32>() {
            Ok(n) => PartitionSelector::Index(n),
            Err(_) => PartitionSelector::Label(s.to_string()),
        }
    }
}

pub(crate) fn fmt_guid(g: &uuid::Uuid) -> String {
    g.hyphenated().to_string().to_uppercase()
}

fn is_fat_type_byte(t: u8) -> bool {
    matches!(t, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e | 0xef)
}

pub(super) fn open_ro(image: &Path) -> Result<(File, u64), ImageError> {
    let file = File::open(image)
        .map_err(|e| ImageError::io(format!("cannot open {}", image.display()), e))?;
    with_len(file, image)
}

/// An opened image and its length.
pub(super) fn with_len(file: File, image: &Path) -> Result<(File, u64), ImageError> {
    let len = file
        .metadata()
        .map_err(|e| ImageError::io(format!("cannot stat {}", image.display()), e))?
        .len();
    Ok((file, len))
}

fn has_gpt_signature<D: Read + Seek>(disk: &mut DiskView<D>, at: u64) -> bool {
    let mut sig = [0u8; 8];
    at + 8 <= disk.len() && disk.read_exact_at(&mut sig, at).is_ok() && &sig == b"EFI PART"
}

/// Read the partition table of an image file.
pub fn read_table(image: &Path) -> Result<DiskInfo, ImageError> {
    let (file, len) = open_ro(image)?;
    read_table_from(DiskView::new(file, len), image)
}

/// Read the partition table of a disk: any `Read + Seek` handle (an open
/// image, a block device, whose metadata length reads as 0) seen as its
/// first bytes ([`DiskView`]: a target larger than the image written onto
/// it is read as the image, backup GPT header included); `image` names it
/// in errors.
pub fn read_table_from<D: Read + Seek>(
    mut disk: DiskView<D>,
    image: &Path,
) -> Result<DiskInfo, ImageError> {
    let len = disk.len();
    let bad = |reason: String| ImageError::BadTable {
        path: image.to_path_buf(),
        reason,
    };
    let mbr = mbr_table::read(&mut disk).map_err(bad)?;
    let lb = if has_gpt_signature(&mut disk, 512) {
        Some(LogicalBlockSize::Lb512)
    } else if has_gpt_signature(&mut disk, 4096) {
        Some(LogicalBlockSize::Lb4096)
    } else if mbr.as_ref().is_some_and(|m| m.protective) {
        // Primary header damaged: the backup may still be readable.
        Some(LogicalBlockSize::Lb512)
    } else {
        None
    };

    let mut partitions = Vec::new();
    let (table, disk_id) = if let Some(lb) = lb {
        check_gpt_array_sizes(&mut disk, lb.as_u64()).map_err(bad)?;
        // The gpt crate finds the backup header at the end of the view.
        let (disk_guid, gpt_parts) = {
            let gpt = GptConfig::new()
                .writable(false)
                .logical_block_size(lb)
                .open_from_device(&mut disk)
                .map_err(|e| bad(format!("unreadable GPT: {e}")))?;
            (*gpt.guid(), gpt.partitions().clone())
        };
        let lbs = lb.as_u64();
        for (&index, p) in gpt_parts.iter() {
            if !p.is_used() {
                continue;
            }
            let start = p.first_lba.checked_mul(lbs);
            let size = p.sectors_len().ok().and_then(|n| n.checked_mul(lbs));
            let (start, size) = match (start, size) {
                (Some(s), Some(z)) if s.checked_add(z).is_some_and(|e| e <= len) => (s, z),
                _ => {
                    return Err(bad(format!(
                        "GPT partition {index} (LBA {}..={}) lies outside the {len}-byte image",
                        p.first_lba, p.last_lba
                    )))
                }
            };
            let type_guid = p.part_type_guid.guid;
            let Probe {
                fs_type,
                fs_label,
                fs_uuid,
            } = probe_fs(&mut disk, start, size);
            let candidate = fs_type.as_deref() == Some("vfat")
                && (type_guid == GPT_TYPE_ESP || type_guid == GPT_TYPE_BASIC_DATA);
            partitions.push(PartInfo {
                index,
                start,
                size,
                type_id: fmt_guid(&type_guid),
                label: (!p.name.is_empty()).then(|| p.name.clone()),
                uuid: Some(fmt_guid(&p.part_guid)),
                is_fat_boot_candidate: candidate,
                fs_type,
                fs_label,
                fs_uuid,
            });
        }
        (TableKind::Gpt, fmt_guid(&disk_guid))
    } else if let Some(m) = mbr {
        for p in &m.partitions {
            let start = p.start_lba * SECTOR;
            let size = p.sectors * SECTOR;
            let Probe {
                fs_type,
                fs_label,
                fs_uuid,
            } = probe_fs(&mut disk, start, size);
            let candidate = fs_type.as_deref() == Some("vfat") && is_fat_type_byte(p.type_byte);
            partitions.push(PartInfo {
                index: p.index,
                start,
                size,
                type_id: format!("0x{:02x}", p.type_byte),
                label: None,
                uuid: Some(format!("{:08x}-{:02x}", m.signature, p.index)),
                is_fat_boot_candidate: candidate,
                fs_type,
                fs_label,
                fs_uuid,
            });
        }
        (TableKind::Mbr, format!("0x{:08x}", m.signature))
    } else {
        return Err(ImageError::NoPartitionTable(image.to_path_buf()));
    };
    partitions.sort_by_key(|p| p.index);
    Ok(DiskInfo {
        table,
        disk_id,
        size: len,
        partitions,
    })
}

/// Refuse partition arrays that would make the `gpt` crate allocate a huge
/// buffer (a crafted header can claim 2^32 entries).
fn check_gpt_array_sizes<D: Read + Seek>(disk: &mut DiskView<D>, lb: u64) -> Result<(), String> {
    let len = disk.len();
    for at in [lb, len.saturating_sub(lb)] {
        let mut h = [0u8; 92];
        if at + 92 > len || disk.read_exact_at(&mut h, at).is_err() || &h[..8] != b"EFI PART" {
            continue;
        }
        let num = u64::from(u32::from_le_bytes([h[80], h[81], h[82], h[83]]));
        let size = u64::from(u32::from_le_bytes([h[84], h[85], h[86], h[87]]));
        if num * size > 1 << 20 || size < 128 {
            return Err(format!(
                "GPT header at byte {at} declares {num} entries of {size} bytes: not a sane GPT"
            ));
        }
    }
    Ok(())
}

fn trim_label(raw: &[u8]) -> Option<String> {
    let end = raw
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map(|p| p + 1)
        .unwrap_or(0);
    let s = String::from_utf8_lossy(&raw[..end]).into_owned();
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

/// What the first bytes of a partition say about its filesystem.
#[derive(Default)]
struct Probe {
    fs_type: Option<String>,
    fs_label: Option<String>,
    fs_uuid: Option<String>,
}

/// Look at the first bytes of a partition: FAT boot sector or ext superblock.
fn probe_fs<D: Read + Seek>(disk: &mut DiskView<D>, start: u64, size: u64) -> Probe {
    let mut b = [0u8; 2048];
    if size < 2048 || disk.read_exact_at(&mut b, start).is_err() {
        return Probe::default();
    }
    let u32_of = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    // ext2/3/4: superblock at 1024, magic 0xEF53 at +56.
    let sb = &b[1024..];
    if sb[56] == 0x53 && sb[57] == 0xef {
        let (compat, incompat) = (u32_of(sb, 92), u32_of(sb, 96));
        let t = if incompat & 0x40 != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let uuid = uuid::Uuid::from_slice(&sb[104..120]).ok();
        return Probe {
            fs_type: Some(t.into()),
            fs_label: trim_label(&sb[120..136]),
            fs_uuid: uuid.map(|u| u.hyphenated().to_string()),
        };
    }
    // FAT: boot sector signature and a sane BPB.
    let mut sector = [0u8; BootSector::LEN];
    sector.copy_from_slice(&b[..BootSector::LEN]);
    let bpb = BootSector::parse(&sector);
    if !bpb.is_sane() {
        return Probe::default();
    }
    Probe {
        fs_type: Some("vfat".into()),
        fs_label: bpb.volume.and_then(|(_, label)| trim_label(&label)),
        fs_uuid: bpb
            .volume
            .map(|(serial, _)| format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
    }
}

fn listing(info: &DiskInfo) -> String {
    if info.partitions.is_empty() {
        return "the image has no partitions".into();
    }
    format!("partitions: {}", describe_all(info.partitions.iter()))
}

/// Partitions described for a message, `; ` between them.
pub(crate) fn describe_all<'a>(parts: impl IntoIterator<Item = &'a PartInfo>) -> String {
    parts
        .into_iter()
        .map(PartInfo::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a selector by number or by name found.
pub(crate) enum Picked<'a> {
    One(&'a PartInfo),
    /// Nothing matched: what was asked for, and the image's partitions.
    Missing(String),
    /// Several matched: their descriptions.
    Several(String),
}

/// The partition a number or a name (GPT name or filesystem label, ASCII
/// case ignored) picks; `None` for [`PartitionSelector::Auto`], whose rules
/// differ between the boot and the root partition.
pub(crate) fn pick<'a>(info: &'a DiskInfo, sel: &PartitionSelector) -> Option<Picked<'a>> {
    let (hits, missing): (Vec<&PartInfo>, String) = match sel {
        PartitionSelector::Auto => return None,
        PartitionSelector::Index(i) => (
            info.partitions.iter().filter(|p| p.index == *i).collect(),
            format!("no partition {i}"),
        ),
        PartitionSelector::Label(l) => (
            info.partitions.iter().filter(|p| p.is_called(l)).collect(),
            format!("no partition named or labelled {l:?}"),
        ),
    };
    Some(match hits.as_slice() {
        [one] => Picked::One(one),
        [] => Picked::Missing(format!("{missing}; {}", listing(info))),
        many => Picked::Several(describe_all(many.iter().copied())),
    })
}

/// Pick the FAT boot partition.
pub fn find_boot_partition(
    info: &DiskInfo,
    sel: &PartitionSelector,
) -> Result<PartInfo, ImageError> {
    let chosen = match pick(info, sel) {
        Some(Picked::One(p)) => p,
        Some(Picked::Missing(m)) => return Err(ImageError::NoBootPartition(m)),
        Some(Picked::Several(m)) => return Err(ImageError::AmbiguousBootPartition(m)),
        None => {
            let candidates: Vec<&PartInfo> = info
                .partitions
                .iter()
                .filter(|p| p.is_fat_boot_candidate)
                .collect();
            let esps: Vec<&PartInfo> = candidates
                .iter()
                .copied()
                .filter(|p| p.is_esp_type())
                .collect();
            match (esps.as_slice(), candidates.as_slice()) {
                ([one], _) => *one,
                ([], [one]) => *one,
                ([], []) => {
                    return Err(ImageError::NoBootPartition(format!(
                        "no FAT partition of type ESP or FAT; {}",
                        listing(info)
                    )))
                }
                // Several ESPs, or no ESP and several FAT partitions.
                (esps, fats) => {
                    let many = if esps.len() > 1 { esps } else { fats };
                    return Err(ImageError::AmbiguousBootPartition(describe_all(
                        many.iter().copied(),
                    )));
                }
            }
        }
    };
    if !chosen.is_fat() {
        return Err(ImageError::NotFat {
            reason: format!("partition {} holds no FAT filesystem", chosen.describe()),
        });
    }
    Ok(chosen.clone())
}

pub(super) fn check_bounds(image: &Path, len: u64, part: &PartInfo) -> Result<(), ImageError> {
    match part.start.checked_add(part.size) {
        Some(end) if end <= len => Ok(()),
        _ => Err(ImageError::BadTable {
            path: image.to_path_buf(),
            reason: format!(
                "partition {} ({}+{} bytes) lies outside the {len}-byte image",
                part.index, part.start, part.size
            ),
        }),
    }
}
