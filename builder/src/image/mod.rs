//! Disk images without root or loop devices.
//!
//! * [`assemble_with`] writes a sparse GPT or MBR image: FAT partitions with
//!   `fatfs`, ext4 with `mke2fs -d` (the standard tool), raw partition images
//!   copied in sparsely. One file per step: [`layout`] (types, sizes,
//!   placement), [`gpt`], [`mbr`], [`fat`], [`ext4`], and [`slice`] (the
//!   partition window `fatfs` works on).
//! * [`read_table`] (of a file) or [`read_table_from`] (of any `Read + Seek`
//!   handle, such as a block device, through a [`DiskView`]),
//!   [`find_boot_partition`] and the `fat_*` functions read any image's
//!   partition table (including ones made by other tools, such
//!   as Raspberry Pi OS) and read or change files in its FAT boot partition
//!   in place ([`read`]).
//!
//! Reproducibility: with a fixed disk GUID/signature, partition UUIDs,
//! filesystem UUIDs and FAT volume ids, two assemblies of the same layout are
//! byte-identical. ext4 additionally needs `SOURCE_DATE_EPOCH` (it fixes
//! mke2fs's clock and clamps file times). Whatever is not fixed is random.

pub mod agent;
pub mod debugfs;
pub mod disk;
pub mod ext4;
pub mod fat;
mod fat_boot;
pub mod fat_files;
mod fat_repair;
pub mod gpt_table;
pub mod host_keys;
pub mod layout;
pub mod mbr_table;
pub mod read;
pub mod slice;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub use disk::DiskView;
pub use fat_files::{fat_read_file, fat_remove_file, fat_write_files};
pub use layout::{
    human_size, parse_size, place, FatFile, Layout, PartitionContent, PartitionKind, PartitionSpec,
    Placed, Placement, TableKind,
};
pub use read::{
    find_boot_partition, read_table, read_table_from, DiskInfo, PartInfo, PartitionSelector,
};
pub use slice::PartitionSlice;

use layout::SECTOR;

/// Everything that can go wrong while making or reading an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid size {input:?}: {reason}")]
    InvalidSize { input: String, reason: String },
    #[error("invalid layout: {0}")]
    InvalidLayout(String),
    #[error(
        "partition {index} ({label:?}) ends at byte {end}, past the usable end ({limit}) of the \
         {total}-byte image; the layout needs at least {needed} bytes"
    )]
    DoesNotFit {
        index: u32,
        label: String,
        end: u64,
        limit: u64,
        total: u64,
        needed: u64,
    },
    #[error("GPT partition name {label:?} is {units} UTF-16 units long; the limit is 36")]
    GptLabelTooLong { label: String, units: usize },
    #[error("invalid FAT volume label {label:?}: {reason}")]
    InvalidFatLabel { label: String, reason: String },
    #[error("an MBR holds at most 4 primary partitions; the layout has {0} (use a GPT)")]
    TooManyMbrPartitions(usize),
    #[error("partition too small for a FAT filesystem ({}): {reason}", human_size(*size))]
    FatTooSmall { size: u64, reason: String },
    #[error(
        "FAT filesystem full while writing {path:?} ({} free); make the partition larger",
        human_size(*free)
    )]
    FatFull { path: String, free: u64 },
    #[error("invalid path {path:?} in a FAT filesystem: {reason}")]
    InvalidFatPath { path: String, reason: String },
    #[error("not a FAT filesystem: {reason}")]
    NotFat { reason: String },
    #[error("{tool} not found; install the Debian package {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("debugfs gave unexpected output for {path}: {reason}")]
    DebugfsOutput { path: String, reason: String },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("ext4 source {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    #[error("ext4 source {}: {reason}", path.display())]
    Tarball { path: PathBuf, reason: String },
    #[error("partition image {}: {reason}", path.display())]
    ImageFile { path: PathBuf, reason: String },
    #[error("{}: no partition table (no MBR signature and no GPT header)", .0.display())]
    NoPartitionTable(PathBuf),
    #[error("{}: {reason}", path.display())]
    BadTable { path: PathBuf, reason: String },
    #[error("no FAT boot partition: {0}")]
    NoBootPartition(String),
    #[error("several partitions could be the boot partition: {0}; choose one by label or index")]
    AmbiguousBootPartition(String),
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("invalid SOURCE_DATE_EPOCH {0:?}: expected a non-negative integer (seconds)")]
    InvalidSourceDateEpoch(String),
    #[error("partition {index} ({label:?}): {error}")]
    Partition {
        index: u32,
        label: String,
        error: Box<ImageError>,
    },
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, error: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            error,
        }
    }

    fn in_partition(self, p: &Placed) -> Self {
        ImageError::Partition {
            index: p.index,
            label: p.label.clone(),
            error: Box::new(self),
        }
    }

    /// The error without the "partition N" wrapper.
    pub fn innermost(&self) -> &ImageError {
        match self {
            ImageError::Partition { error, .. } => error.innermost(),
            e => e,
        }
    }
}

/// Knobs that do not belong in a [`Layout`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssembleOptions {
    /// Fixes ext4 timestamps (`E2FSPROGS_FAKE_TIME`, time clamping).
    pub source_date_epoch: Option<u64>,
}

impl AssembleOptions {
    /// Options from the environment (`SOURCE_DATE_EPOCH`).
    /// An empty variable counts as unset; anything but an integer is an error.
    pub fn from_env() -> Result<Self, ImageError> {
        let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(parse_source_date_epoch(&v)?),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(v)) => {
                return Err(ImageError::InvalidSourceDateEpoch(
                    v.to_string_lossy().into_owned(),
                ))
            }
        };
        Ok(AssembleOptions { source_date_epoch })
    }
}

/// Parse a `SOURCE_DATE_EPOCH` value (seconds since 1970, non-negative).
pub fn parse_source_date_epoch(v: &str) -> Result<u64, ImageError> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| ImageError::InvalidSourceDateEpoch(v.to_string()))
}

/// Removes the output on drop unless disarmed.
struct RemoveOnError<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        // Only ever a regular file: never unlink a device node or a symlink.
        let regular = std::fs::symlink_metadata(self.path).is_ok_and(|m| m.is_file());
        if self.armed && regular {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Identifiers picked for one assembly (given ones or random ones).
struct Ids {
    disk_guid: uuid::Uuid,
    disk_signature: u32,
    part_uuids: Vec<uuid::Uuid>,
    fs_uuids: Vec<uuid::Uuid>,
    volume_ids: Vec<u32>,
}

fn random_nonzero_u32() -> u32 {
    loop {
        let v: u32 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

fn per_partition<T>(layout: &Layout, f: impl Fn(&PartitionSpec) -> T) -> Vec<T> {
    layout.partitions.iter().map(f).collect()
}

fn pick_ids(layout: &Layout) -> Ids {
    Ids {
        disk_guid: layout.disk_guid.unwrap_or_else(uuid::Uuid::new_v4),
        disk_signature: layout.disk_signature.unwrap_or_else(random_nonzero_u32),
        part_uuids: per_partition(layout, |p| p.uuid.unwrap_or_else(uuid::Uuid::new_v4)),
        fs_uuids: per_partition(layout, |p| {
            p.content.fs_uuid().unwrap_or_else(uuid::Uuid::new_v4)
        }),
        volume_ids: per_partition(layout, |p| {
            p.content.volume_id().unwrap_or_else(random_nonzero_u32)
        }),
    }
}

/// Check everything that can be checked before the output is created.
fn precheck(layout: &Layout, placed: &[Placed]) -> Result<(), ImageError> {
    if layout.table == TableKind::Gpt {
        let mut seen = HashSet::new();
        if let Some(g) = layout.disk_guid {
            seen.insert(g);
        }
        for (p, spec) in placed.iter().zip(&layout.partitions) {
            if let Some(u) = spec.uuid {
                if u.is_nil() || !seen.insert(u) {
                    return Err(ImageError::InvalidLayout(format!(
                        "partition {} ({:?}): GUID {u} is nil or used twice",
                        p.index, p.label
                    )));
                }
            }
        }
    }
    if layout.table == TableKind::Gpt && layout.disk_guid.is_some_and(|g| g.is_nil()) {
        return Err(ImageError::InvalidLayout("the disk GUID is nil".into()));
    }
    for (p, spec) in placed.iter().zip(&layout.partitions) {
        if let PartitionKind::Other { gpt_type, mbr_type } = &spec.kind {
            let bad = match layout.table {
                TableKind::Gpt => gpt_type.is_nil(),
                TableKind::Mbr => *mbr_type == 0 || *mbr_type == 0xee,
            };
            if bad {
                return Err(ImageError::InvalidLayout(format!(
                    "partition {} ({:?}): partition type {} is reserved",
                    p.index,
                    p.label,
                    match layout.table {
                        TableKind::Gpt => gpt_type.to_string(),
                        TableKind::Mbr => format!("0x{mbr_type:02x}"),
                    }
                )));
            }
        }
        let check = || -> Result<(), ImageError> {
            match &spec.content {
                PartitionContent::Empty => Ok(()),
                PartitionContent::Fat {
                    volume_label,
                    files,
                    ..
                } => {
                    fat::volume_label_bytes(volume_label)?;
                    for f in files {
                        fat::entry_components(f)?;
                    }
                    Ok(())
                }
                PartitionContent::Ext4 { source, fs_uuid } => {
                    ext4::validate_label(&spec.label)?;
                    if fs_uuid.is_some_and(|u| u.is_nil()) {
                        return Err(ImageError::InvalidLayout("the ext4 UUID is nil".into()));
                    }
                    ext4::check_source(source)?;
                    ext4::require_e2fs_tool("mke2fs")?;
                    if spec.size < 1 << 20 {
                        return Err(ImageError::InvalidLayout(format!(
                            "{} is too small for ext4 (at least 1 MiB)",
                            human_size(spec.size)
                        )));
                    }
                    Ok(())
                }
                PartitionContent::ImageFile(path) => {
                    let meta = std::fs::metadata(path).map_err(|e| ImageError::ImageFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    if !meta.is_file() {
                        return Err(ImageError::ImageFile {
                            path: path.clone(),
                            reason: "not a regular file".into(),
                        });
                    }
                    if meta.len() > spec.size {
                        return Err(ImageError::ImageFile {
                            path: path.clone(),
                            reason: format!(
                                "{} bytes do not fit in the {}-byte partition",
                                meta.len(),
                                spec.size
                            ),
                        });
                    }
                    Ok(())
                }
            }
        };
        check().map_err(|e| e.in_partition(p))?;
    }
    Ok(())
}

/// Build `out` (created or truncated, sparse) from `layout`. On error `out`
/// is removed. `opts.source_date_epoch` (the caller reads `SOURCE_DATE_EPOCH`
/// once) fixes the ext4 times.
pub fn assemble_with(
    out: &Path,
    layout: &Layout,
    opts: &AssembleOptions,
) -> Result<Placement, ImageError> {
    // From here on, any error removes `out`: no stale or half-made image.
    let mut guard = RemoveOnError {
        path: out,
        armed: true,
    };
    let mut result = place(layout)?;
    precheck(layout, &result.partitions)?;
    let ids = pick_ids(layout);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(|e| ImageError::io(format!("cannot create {}", out.display()), e))?;
    file.set_len(result.size)
        .map_err(|e| ImageError::io(format!("cannot size {}", out.display()), e))?;

    let scratch = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    // Partitions are disjoint byte ranges of the file, written with
    // positioned writes: ext4 partitions (an mke2fs child each, the longest
    // step) run on their own threads while the FAT and raw partitions are
    // written here.
    let fs_uuids: Vec<Result<Option<String>, ImageError>> = std::thread::scope(|scope| {
        let placed = &result.partitions;
        let (file, ids, scratch) = (&file, &ids, &scratch);
        let mut slots: Vec<Option<Result<Option<String>, ImageError>>> =
            placed.iter().map(|_| None).collect();
        let mut threads = Vec::new();
        for (i, (p, spec)) in placed.iter().zip(&layout.partitions).enumerate() {
            if matches!(spec.content, PartitionContent::Ext4 { .. }) {
                threads.push((
                    i,
                    scope.spawn(move || write_content(out, file, p, spec, ids, i, opts, scratch)),
                ));
            }
        }
        for (i, (p, spec)) in placed.iter().zip(&layout.partitions).enumerate() {
            if !matches!(spec.content, PartitionContent::Ext4 { .. }) {
                slots[i] = Some(write_content(out, file, p, spec, ids, i, opts, scratch));
            }
        }
        for (i, t) in threads {
            slots[i] = Some(t.join().unwrap_or_else(|_| {
                Err(ImageError::io(
                    "writing the partition",
                    std::io::Error::other("the worker thread panicked"),
                ))
            }));
        }
        slots.into_iter().map(|s| s.unwrap_or(Ok(None))).collect()
    });
    for (i, (p, fs_uuid)) in result.partitions.iter_mut().zip(fs_uuids).enumerate() {
        p.fs_uuid = fs_uuid.map_err(|e| e.in_partition(p))?;
        p.part_uuid = Some(match layout.table {
            TableKind::Gpt => read::fmt_guid(&ids.part_uuids[i]),
            TableKind::Mbr => format!("{:08x}-{:02x}", ids.disk_signature, p.index),
        });
    }

    let file = match layout.table {
        TableKind::Gpt => {
            let entries: Vec<gpt_table::GptEntry> = result
                .partitions
                .iter()
                .zip(&layout.partitions)
                .enumerate()
                .map(|(i, (p, spec))| gpt_table::GptEntry {
                    name: spec.label.clone(),
                    type_guid: spec.kind.gpt_type(),
                    part_guid: ids.part_uuids[i],
                    start: p.start,
                    size: p.size,
                    legacy_bootable: spec.bootable,
                })
                .collect();
            result.disk_id = read::fmt_guid(&ids.disk_guid);
            gpt_table::write(file, ids.disk_guid, &entries)?
        }
        TableKind::Mbr => {
            let entries: Vec<mbr_table::MbrEntry> = result
                .partitions
                .iter()
                .zip(&layout.partitions)
                .map(|(p, spec)| mbr_table::MbrEntry {
                    bootable: spec.bootable,
                    type_byte: spec.kind.mbr_type(),
                    // place() checked both fit in 32 bits.
                    start_lba: u32::try_from(p.start / SECTOR).unwrap_or(u32::MAX),
                    sectors: u32::try_from(p.size / SECTOR).unwrap_or(u32::MAX),
                })
                .collect();
            mbr_table::write(&file, ids.disk_signature, &entries)
                .map_err(|e| ImageError::io("cannot write the MBR", e))?;
            result.disk_id = format!("0x{:08x}", ids.disk_signature);
            file
        }
    };
    file.sync_all()
        .map_err(|e| ImageError::io(format!("cannot sync {}", out.display()), e))?;
    guard.armed = false;
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn write_content(
    out: &Path,
    file: &File,
    p: &Placed,
    spec: &PartitionSpec,
    ids: &Ids,
    i: usize,
    opts: &AssembleOptions,
    scratch: &Path,
) -> Result<Option<String>, ImageError> {
    match &spec.content {
        PartitionContent::Empty => Ok(None),
        PartitionContent::Fat {
            volume_label,
            files,
            ..
        } => {
            let vid = ids.volume_ids[i];
            fat::format(
                file,
                p.start,
                p.size,
                fat::volume_label_bytes(volume_label)?,
                vid,
            )?;
            let fs = fat::open(file, p.start, p.size)?;
            let fat_type = fs.fat_type();
            fat::write_files(&fs, files)?;
            fat::close(fs)?;
            fat_repair::fix_dot_entries(file, p.start)?;
            fat::set_hidden_sectors(file, p.start, fat_type)?;
            fat::allocate_metadata(file, p.start)?;
            Ok(Some(fat::volume_id_string(vid)))
        }
        PartitionContent::Ext4 { source, .. } => {
            let uuid = ids.fs_uuids[i];
            ext4::make(&ext4::Ext4Job {
                image: out,
                offset: p.start,
                size: p.size,
                label: &spec.label,
                source,
                uuid,
                source_date_epoch: opts.source_date_epoch,
                scratch_dir: scratch,
            })?;
            Ok(Some(uuid.hyphenated().to_string()))
        }
        PartitionContent::ImageFile(path) => {
            copy_sparse(path, file, p.start, p.size)?;
            Ok(None)
        }
    }
}

/// Copy `src` into `dst` at `offset`, skipping all-zero 4 KiB blocks (the
/// destination is a fresh sparse file, so they read as zeros already).
fn copy_sparse(src: &Path, dst: &File, offset: u64, limit: u64) -> Result<u64, ImageError> {
    use crate::io::sparse_write::{copy_nonzero, CopyError};
    let err = |reason: String| ImageError::ImageFile {
        path: src.to_path_buf(),
        reason,
    };
    let mut input = File::open(src).map_err(|e| err(e.to_string()))?;
    copy_nonzero(&mut input, dst, offset, limit).map_err(|e| match e {
        CopyError::Read(e) => err(e.to_string()),
        CopyError::TooLong { limit } => err(format!(
            "grew past the {limit}-byte partition while being copied"
        )),
        CopyError::Write(e) => ImageError::io("cannot write to the image", e),
    })
}
