//! ext4 partitions made by the standard tool, `mke2fs -d`, written straight
//! into the image at the partition's offset (`-E offset=`).
//!
//! * A tarball source is unpacked with the `tar` crate into a staging
//!   directory first (this Debian's mke2fs 1.47.0 does not read tarballs).
//!   Owners, modes, times and device nodes come from the tar headers and are
//!   applied afterwards with `debugfs -w`, so they are right even when the
//!   builder does not run as root.
//! * Reproducibility: the filesystem UUID doubles as the htree hash seed;
//!   with `SOURCE_DATE_EPOCH`, `E2FSPROGS_FAKE_TIME` fixes the superblock
//!   and new-inode times, and file times are clamped to the epoch (mke2fs
//!   1.47.0 copies ctime/atime from the source tree, which vary between
//!   checkouts and reads).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::debugfs::{debugfs_write, quote};
use super::ImageError;
use crate::host_tools::find_tool;

/// Find a tool from e2fsprogs or say which package to install.
pub fn require_e2fs_tool(name: &'static str) -> Result<PathBuf, ImageError> {
    find_tool(name).ok_or(ImageError::ToolMissing {
        tool: name,
        package: "e2fsprogs",
    })
}

/// What to make.
#[derive(Debug)]
pub struct Ext4Job<'a> {
    pub image: &'a Path,
    /// Byte offset of the partition.
    pub offset: u64,
    /// Partition size in bytes.
    pub size: u64,
    pub label: &'a str,
    pub source: &'a Path,
    pub uuid: uuid::Uuid,
    pub source_date_epoch: Option<u64>,
    /// Where to stage an unpacked tarball (a directory on the same disk as
    /// the image, not /tmp which may be a small tmpfs).
    pub scratch_dir: &'a Path,
}

/// ext4 volume labels are at most 16 bytes.
pub fn validate_label(label: &str) -> Result<(), ImageError> {
    if label.len() > 16 {
        return Err(ImageError::InvalidLayout(format!(
            "ext4 label {label:?} is {} bytes long; the limit is 16",
            label.len()
        )));
    }
    if label.contains('\0') {
        return Err(ImageError::InvalidLayout(format!(
            "ext4 label {label:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// Check the source before any work is done.
pub fn check_source(source: &Path) -> Result<SourceKind, ImageError> {
    let meta = fs::metadata(source).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImageError::SourceMissing(source.to_path_buf())
        } else {
            ImageError::io(format!("cannot read ext4 source {}", source.display()), e)
        }
    })?;
    if meta.is_dir() {
        return Ok(SourceKind::Dir);
    }
    if !meta.is_file() {
        return Err(ImageError::Tarball {
            path: source.to_path_buf(),
            reason: "neither a directory nor a regular file".into(),
        });
    }
    let mut magic = [0u8; 6];
    let n = File::open(source)
        .and_then(|mut f| crate::io::read_full(&mut f, &mut magic))
        .map_err(|e| ImageError::io(format!("cannot read {}", source.display()), e))?;
    use crate::io::compressed::Format;
    let compressed = match &magic[..n] {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        head => match Format::of_magic(head) {
            Format::Zstd => Some("zstd"),
            Format::Xz => Some("xz"),
            Format::Raw => None,
        },
    };
    if let Some(kind) = compressed {
        return Err(ImageError::Tarball {
            path: source.to_path_buf(),
            reason: format!(
                "{kind}-compressed tarballs are not supported; decompress it first \
                 (the source must be a directory or a plain .tar)"
            ),
        });
    }
    Ok(SourceKind::Tar)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Dir,
    Tar,
}

/// Build the filesystem.
pub fn make(job: &Ext4Job<'_>) -> Result<(), ImageError> {
    validate_label(job.label)?;
    let mke2fs = require_e2fs_tool("mke2fs")?;
    let kind = check_source(job.source)?;
    let kib = job.size / 1024;

    let staging;
    let (root, fixups) = match kind {
        SourceKind::Dir => {
            let fixups = match job.source_date_epoch {
                Some(epoch) => clamp_tree_times(job.source, epoch)?,
                None => Vec::new(),
            };
            (job.source.to_path_buf(), fixups)
        }
        SourceKind::Tar => {
            staging = tempfile::Builder::new()
                .prefix(".build-image-rootfs-")
                .tempdir_in(job.scratch_dir)
                .map_err(|e| {
                    ImageError::io(
                        format!(
                            "cannot create a staging directory in {}",
                            job.scratch_dir.display()
                        ),
                        e,
                    )
                })?;
            let fixups = unpack_tarball(job.source, staging.path(), job.source_date_epoch)?;
            (staging.path().to_path_buf(), fixups)
        }
    };

    // The partition lies in a freshly created sparse image, so it already
    // reads as zeros: `lazy_journal_init` skips writing a zeroed journal
    // (16 MiB and more of real disk use) without changing a single byte.
    let ext = format!(
        "offset={},root_owner=0:0,hash_seed={},lazy_journal_init=1",
        job.offset, job.uuid
    );
    let mut cmd = Command::new(&mke2fs);
    cmd.arg("-q")
        .args(["-t", "ext4"])
        .arg("-d")
        .arg(&root)
        .arg("-E")
        .arg(&ext)
        .arg("-L")
        .arg(job.label)
        .arg("-U")
        .arg(job.uuid.to_string())
        .arg("-F")
        .arg(job.image)
        .arg(format!("{kib}k"));
    set_time_env(&mut cmd, job.source_date_epoch);
    crate::child_env::scrub(&mut cmd);
    run(cmd, "mke2fs")?;

    if !fixups.is_empty() {
        apply_fixups(job, &fixups)?;
    }
    Ok(())
}

pub(super) fn set_time_env(cmd: &mut Command, epoch: Option<u64>) {
    // mke2fs reads these from the environment; ours decides, not the caller's.
    cmd.env_remove("E2FSPROGS_FAKE_TIME");
    cmd.env_remove("SOURCE_DATE_EPOCH");
    if let Some(t) = epoch {
        cmd.env("E2FSPROGS_FAKE_TIME", t.to_string());
        cmd.env("SOURCE_DATE_EPOCH", t.to_string());
    }
    // Keep messages parseable.
    cmd.env("LC_ALL", "C");
}

pub(super) fn run(mut cmd: Command, tool: &'static str) -> Result<Vec<u8>, ImageError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImageError::ToolMissing {
                tool,
                package: "e2fsprogs",
            }
        } else {
            ImageError::io(format!("cannot run {tool}"), e)
        }
    })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(ImageError::ToolFailed {
            tool,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(out.stderr)
}

/// One metadata change applied with debugfs after mke2fs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fixup {
    /// `mknod` in the parent directory: (parent, name, kind: 'p'|'c'|'b', major, minor)
    Mknod {
        parent: Vec<u8>,
        name: Vec<u8>,
        kind: char,
        major: u32,
        minor: u32,
    },
    /// `set_inode_field PATH FIELD VALUE`
    Set {
        path: Vec<u8>,
        field: &'static str,
        value: String,
    },
}

fn script(fixups: &[Fixup]) -> Result<Vec<u8>, ImageError> {
    let mut s = Vec::new();
    for f in fixups {
        match f {
            Fixup::Mknod {
                parent,
                name,
                kind,
                major,
                minor,
            } => {
                s.extend_from_slice(b"cd ");
                s.extend(quote(parent)?);
                s.extend_from_slice(b"\nmknod ");
                s.extend(quote(name)?);
                if *kind == 'p' {
                    s.extend_from_slice(b" p\n");
                } else {
                    s.extend_from_slice(format!(" {kind} {major} {minor}\n").as_bytes());
                }
                s.extend_from_slice(b"cd /\n");
            }
            Fixup::Set { path, field, value } => {
                s.extend_from_slice(b"set_inode_field ");
                s.extend(quote(path)?);
                s.extend_from_slice(format!(" {field} {value}\n").as_bytes());
            }
        }
    }
    Ok(s)
}

fn apply_fixups(job: &Ext4Job<'_>, fixups: &[Fixup]) -> Result<(), ImageError> {
    debugfs_write(
        job.image,
        job.offset,
        &script(fixups)?,
        job.scratch_dir,
        job.source_date_epoch,
    )
}

/// Inode path (`/a/b`) of a relative path.
fn inode_path(rel: &Path) -> Vec<u8> {
    let mut p = Vec::new();
    for c in rel.components() {
        if let Component::Normal(n) = c {
            p.push(b'/');
            p.extend_from_slice(n.as_bytes());
        }
    }
    if p.is_empty() {
        p.push(b'/');
    }
    p
}

fn time_fixups(path: &[u8], mtime: i64, ctime: i64, epoch: Option<u64>, out: &mut Vec<Fixup>) {
    let clamp = |t: i64| {
        match epoch {
            Some(e) => t.min(i64::try_from(e).unwrap_or(i64::MAX)),
            None => t,
        }
        .max(0)
    };
    let m = clamp(mtime);
    for (field, v) in [("mtime", m), ("atime", m), ("ctime", clamp(ctime))] {
        out.push(Fixup::Set {
            path: path.to_vec(),
            field,
            value: format!("@{v}"),
        });
    }
}

/// Times to clamp for every entry of a source directory.
fn clamp_tree_times(root: &Path, epoch: u64) -> Result<Vec<Fixup>, ImageError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full)
            .map_err(|e| ImageError::io(format!("cannot stat {}", full.display()), e))?;
        time_fixups(
            &inode_path(&rel),
            meta.mtime(),
            meta.ctime(),
            Some(epoch),
            &mut out,
        );
        if meta.is_dir() {
            let mut names = Vec::new();
            for entry in fs::read_dir(&full)
                .map_err(|e| ImageError::io(format!("cannot list {}", full.display()), e))?
            {
                let entry = entry
                    .map_err(|e| ImageError::io(format!("cannot list {}", full.display()), e))?;
                names.push(entry.file_name());
            }
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    Ok(out)
}

fn tar_err(path: &Path, what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Tarball {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Unpack a plain tarball into `dest`; returns the metadata to apply.
fn unpack_tarball(
    tarball: &Path,
    dest: &Path,
    epoch: Option<u64>,
) -> Result<Vec<Fixup>, ImageError> {
    let file = File::open(tarball).map_err(|e| tar_err(tarball, "cannot open", e))?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let entries = archive
        .entries()
        .map_err(|e| tar_err(tarball, "cannot read", e))?;
    let mut fixups = Vec::new();
    let mut specials = Vec::new();
    let mut count = 0usize;
    // Directories the archive lists, and the ones it only implies (parents
    // of entries, the root): those get root:root 0755 and the time of the
    // first entry inside them.
    let mut explicit: HashSet<PathBuf> = HashSet::new();
    let mut implied: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(tarball, "corrupt entry", e))?;
        let raw = entry
            .path()
            .map_err(|e| tar_err(tarball, "bad entry name", e))?
            .into_owned();
        let mut rel = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    return Err(tar_err(tarball, "entry escapes the root", raw.display()))
                }
            }
        }
        let header = entry.header();
        let kind = header.entry_type();
        if !(kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink())
        {
            explicit.insert(rel.clone());
            let t = header.mtime().unwrap_or(0);
            for a in rel.ancestors().skip(1) {
                implied.entry(a.to_path_buf()).or_insert(t);
            }
        }
        let mode = header.mode().map_err(|e| tar_err(tarball, "bad mode", e))?;
        let uid = header.uid().map_err(|e| tar_err(tarball, "bad uid", e))?;
        let gid = header.gid().map_err(|e| tar_err(tarball, "bad gid", e))?;
        let mtime = header
            .mtime()
            .map_err(|e| tar_err(tarball, "bad mtime", e))?;
        let target = dest.join(&rel);
        let type_bits: u32;
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else if kind.is_dir() {
            fs::create_dir_all(&target)
                .map_err(|e| tar_err(tarball, "cannot create directory", e))?;
            type_bits = 0o040000;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            if rel.as_os_str().is_empty() {
                continue;
            }
            let parent = rel
                .parent()
                .map(inode_path)
                .unwrap_or_else(|| b"/".to_vec());
            if let Some(p) = target.parent() {
                fs::create_dir_all(p)
                    .map_err(|e| tar_err(tarball, "cannot create directory", e))?;
            }
            let name = rel
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let (k, bits) = if kind.is_fifo() {
                ('p', 0o010000)
            } else if kind.is_character_special() {
                ('c', 0o020000)
            } else {
                ('b', 0o060000)
            };
            specials.push(Fixup::Mknod {
                parent,
                name,
                kind: k,
                major: header.device_major().ok().flatten().unwrap_or(0),
                minor: header.device_minor().ok().flatten().unwrap_or(0),
            });
            type_bits = bits;
        } else {
            if rel.as_os_str().is_empty() {
                continue;
            }
            let is_link = kind.is_symlink() || kind.is_hard_link();
            entry.set_preserve_permissions(false);
            entry.set_preserve_mtime(false);
            entry.set_unpack_xattrs(false);
            let ok = entry
                .unpack_in(dest)
                .map_err(|e| tar_err(tarball, &format!("cannot unpack {}", raw.display()), e))?;
            if !ok {
                return Err(tar_err(tarball, "entry escapes the root", raw.display()));
            }
            if kind.is_hard_link() {
                // Same inode as its target: metadata comes from the target's entry.
                count += 1;
                continue;
            }
            if !is_link {
                // Readable by us whatever the archive says; the real mode is set later.
                let _ = fs::set_permissions(
                    &target,
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                );
            }
            type_bits = if kind.is_symlink() {
                0o120000
            } else {
                0o100000
            };
        }
        count += 1;
        let path = inode_path(&rel);
        let perm = if kind.is_symlink() {
            0o777
        } else {
            mode & 0o7777
        };
        for (field, value) in [
            ("uid", uid.to_string()),
            ("gid", gid.to_string()),
            ("mode", format!("0{:o}", type_bits | perm)),
        ] {
            fixups.push(Fixup::Set {
                path: path.clone(),
                field,
                value,
            });
        }
        let t = i64::try_from(mtime).unwrap_or(i64::MAX);
        time_fixups(&path, t, t, epoch, &mut fixups);
    }
    if count == 0 {
        return Err(tar_err(tarball, "not a tar archive", "no entries"));
    }
    implied.entry(PathBuf::new()).or_insert(0);
    for (dir, t) in implied.into_iter().filter(|(d, _)| !explicit.contains(d)) {
        let path = inode_path(&dir);
        for (field, value) in [("uid", "0"), ("gid", "0"), ("mode", "040755")] {
            fixups.push(Fixup::Set {
                path: path.clone(),
                field,
                value: value.to_string(),
            });
        }
        let t = i64::try_from(t).unwrap_or(i64::MAX);
        time_fixups(&path, t, t, epoch, &mut fixups);
    }
    // Device nodes first (they must exist before their metadata is set).
    specials.extend(fixups);
    Ok(specials)
}
