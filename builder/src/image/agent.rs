//! Install the device agent, `sealed-firstboot`, into the ext4 root
//! filesystem of an image: the binary for the image's architecture, its
//! systemd unit enabled under `sysinit.target.wants/`, a drop-in that waits
//! for the boot partition's mount, and `/etc/sealed-firstboot.conf` naming
//! that mount point.
//!
//! [`configure`] writes only the configuration (the signers an image
//! pins, the paths it allows), for `build` without the agent.
//!
//! Like the rest of the builder it needs no root, loop device or mount:
//! `debugfs -w` edits the filesystem at the partition's offset. Only the
//! files named in [`INSTALLED`] (and directories missing on their way)
//! change; a file already as wanted is left alone, so a second run changes
//! no byte.

use super::debugfs::{self, debugfs_cat, debugfs_write, quote, quoted, Inode, Kind};
use super::read::{describe_all, DiskInfo, PartInfo, Picked};
use super::{ImageError, PartitionSelector};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The unit file shipped with the device binary.
pub const UNIT_TEXT: &str = include_str!("../../../firstboot/sealed-firstboot.service");

const BINARY_PATH: &str = "/usr/bin/sealed-firstboot";
const UNIT_PATH: &str = "/etc/systemd/system/sealed-firstboot.service";
const DROPIN_PATH: &str = "/etc/systemd/system/sealed-firstboot.service.d/boot-dir.conf";
const WANTS_LINK: &str = "/etc/systemd/system/sysinit.target.wants/sealed-firstboot.service";
const CONFIG_PATH: &str = "/etc/sealed-firstboot.conf";

/// Every path the installation may write, for messages and reports.
pub const INSTALLED: [&str; 5] = [BINARY_PATH, UNIT_PATH, DROPIN_PATH, WANTS_LINK, CONFIG_PATH];

/// Binaries in the root filesystem whose ELF header tells its architecture.
const ARCH_PROBES: [&str; 5] = [
    "/usr/bin/env",
    "/usr/lib/systemd/systemd",
    "/bin/env",
    "/lib/systemd/systemd",
    "/sbin/init",
];

/// Largest agent binary accepted (and largest file read to probe the
/// architecture).
const MAX_AGENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest existing `/etc/sealed-firstboot.conf` read (the device's limit).
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Architectures a device binary is built for (`scripts/build-device-binaries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Aarch64,
    Armv7,
    X86_64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The architecture of an ELF file from its header.
    pub fn from_elf(header: &[u8]) -> Result<Arch, String> {
        if header.len() < 20 || &header[..4] != b"\x7fELF" {
            return Err("not an ELF file".into());
        }
        let (class, data) = (header[4], header[5]);
        if data != 1 {
            return Err("big-endian ELF".into());
        }
        let machine = u16::from_le_bytes([header[18], header[19]]);
        match (class, machine) {
            (2, 0xb7) => Ok(Arch::Aarch64),
            (2, 0x3e) => Ok(Arch::X86_64),
            (1, 0x28) => Ok(Arch::Armv7),
            (c, m) => Err(format!(
                "ELF machine {m:#x} ({}-bit), for which no device binary is built",
                if c == 2 { 64 } else { 32 }
            )),
        }
    }
}

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("no root filesystem to install sealed-firstboot into: {0}")]
    NoRoot(String),
    #[error(
        "several partitions could be the root filesystem: {0}; choose one with --root-partition"
    )]
    AmbiguousRoot(String),
    #[error(
        "partition {0} holds {1}, not ext4: sealed-firstboot can be installed only into an \
         ext2/3/4 root filesystem (install it into the image some other way)"
    )]
    NotExt(String, String),
    #[error("cannot tell the architecture of the root filesystem in partition {index}: {reason}")]
    UnknownArch { index: u32, reason: String },
    #[error(
        "no sealed-firstboot binary for {arch}: looked for sealed-firstboot-{arch} in {searched}; \
         build them with scripts/build-device-binaries, or pass --agent FILE"
    )]
    AgentMissing {
        arch: &'static str,
        searched: String,
    },
    #[error("agent {}: {reason}", path.display())]
    BadAgent { path: PathBuf, reason: String },
    #[error(
        "agent {} is built for {found}, but the image's root filesystem is {image}",
        path.display()
    )]
    AgentMismatch {
        path: PathBuf,
        found: &'static str,
        image: &'static str,
    },
    #[error(
        "cannot tell where the boot partition (partition {index}) is mounted on the device: \
         {reason}; pass --boot-dir (e.g. /boot/firmware)"
    )]
    BootDirUnknown { index: u32, reason: String },
    // '%' would be a systemd specifier in the drop-in's RequiresMountsFor=.
    #[error(
        "invalid boot directory {0:?}: an absolute path without spaces, '#', '%', '\\' or '..'"
    )]
    BadBootDir(String),
    #[error("the image's {CONFIG_PATH} is invalid (line {line}: {reason}); fix or remove it")]
    BadConfig { line: usize, reason: String },
    #[error("the image's {CONFIG_PATH} pins signers, so its device would refuse this unsigned bundle; sign it (drop --unsigned), or remove the signer lines")]
    PinnedButUnsigned,
    #[error("{path} in the image is a directory; refusing to replace it")]
    IsDirectory { path: &'static str },
    #[error("{path} in the image is a symbolic link or a special file; make it a regular file or remove it")]
    NotRegular { path: &'static str },
    #[error("{0} in the image's root filesystem is not a directory; refusing to write below it")]
    NotADirectory(String),
    #[error("{path} in the image is {size} bytes (limit {limit}); refusing to read it")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        cause: std::io::Error,
    },
}

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct AgentRequest {
    /// `--agent FILE`: this binary instead of the shipped one.
    pub binary: Option<PathBuf>,
    /// `--boot-dir`: the boot partition's mount point on the device.
    pub boot_dir: Option<String>,
    /// `--root-partition`: default the only ext partition besides the boot one.
    pub root: Option<PartitionSelector>,
}

/// What the image's `/etc/sealed-firstboot.conf` must say besides
/// `boot_dir`: the signers it pins (replacing any `signer` lines it has;
/// none for an unsigned build) and the `/run` prefixes it allows (added
/// to any it has).
#[derive(Clone, Debug, Default)]
pub struct DeviceConfig {
    pub signers: Vec<sealed_bundle::Signer>,
    pub allow_paths: Vec<String>,
}

impl DeviceConfig {
    fn is_empty(&self) -> bool {
        self.signers.is_empty() && self.allow_paths.is_empty()
    }
}

/// What [`configure`] wrote, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConfigReport {
    pub root_partition: u32,
    /// Whether the file changed (false: it already said all this).
    pub changed: bool,
}

/// What was installed, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AgentReport {
    pub arch: Arch,
    pub binary: PathBuf,
    pub root_partition: u32,
    pub boot_dir: String,
    /// Paths written (empty when everything was already in place).
    pub changed: Vec<String>,
}

/// Install the agent into `image` (a raw image file, written in place).
pub fn install(
    image: &Path,
    info: &DiskInfo,
    boot: &PartInfo,
    req: &AgentRequest,
    device: &DeviceConfig,
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<AgentReport, AgentError> {
    let root = find_root(info, boot, req.root.as_ref())?;
    // The binary given with --agent is read once: the bytes checked are the
    // bytes installed.
    let given = match &req.binary {
        Some(p) => Some((p.clone(), read_agent(p)?)),
        None => None,
    };
    let arch = match (probe_arch(image, &root), &given) {
        (Ok(arch), _) => arch,
        // The root does not tell: the binary given says what it is for.
        (Err(AgentError::UnknownArch { .. }), Some((p, bytes))) => elf_arch(p, bytes)?,
        (Err(e), _) => return Err(e),
    };
    let (binary, agent_bytes) = match given {
        Some((p, bytes)) => {
            check_arch(&p, &bytes, arch)?;
            (p, bytes)
        }
        None => find_agent(arch)?,
    };
    let boot_dir = match &req.boot_dir {
        Some(d) => d.clone(),
        None => boot_dir_of(image, &root, boot)?,
    };
    let boot_dir = check_boot_dir(&boot_dir)?;
    let existing_config = read_config(image, &root)?;
    let config = config_text(existing_config.as_deref(), Some(&boot_dir), device)?;
    let dropin = format!(
        "# Written by build-image: provision once the boot partition is mounted.\n\
         [Unit]\nRequiresMountsFor={boot_dir}\n"
    );

    let wanted: [(&'static str, Want); 5] = [
        (BINARY_PATH, Want::File(&agent_bytes, 0o755)),
        (UNIT_PATH, Want::File(UNIT_TEXT.as_bytes(), 0o644)),
        (DROPIN_PATH, Want::File(dropin.as_bytes(), 0o644)),
        (WANTS_LINK, Want::Link(UNIT_PATH)),
        (CONFIG_PATH, Want::File(config.as_bytes(), 0o644)),
    ];
    let changed = write_wanted(image, &root, &wanted, scratch, epoch)?;
    Ok(AgentReport {
        arch,
        binary,
        root_partition: root.index,
        boot_dir,
        changed,
    })
}

/// Write what `device` says into the image's `/etc/sealed-firstboot.conf`
/// (keeping its other settings), for an image whose agent is not
/// installed by build-image. `Ok(None)` when there is nothing to say, or
/// no ext root filesystem to say it in (the caller warns).
#[allow(clippy::too_many_arguments)]
pub fn configure(
    image: &Path,
    info: &DiskInfo,
    boot: &PartInfo,
    root_sel: Option<&PartitionSelector>,
    device: &DeviceConfig,
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<Option<ConfigReport>, AgentError> {
    if device.is_empty() {
        return Ok(None);
    }
    let root = match find_root(info, boot, root_sel) {
        Ok(r) => r,
        Err(AgentError::NoRoot(_) | AgentError::NotExt(..)) if root_sel.is_none() => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let existing = read_config(image, &root)?;
    let config = config_text(existing.as_deref(), None, device)?;
    let wanted = [(CONFIG_PATH, Want::File(config.as_bytes(), 0o644))];
    let changed = write_wanted(image, &root, &wanted, scratch, epoch)?;
    Ok(Some(ConfigReport {
        root_partition: root.index,
        changed: !changed.is_empty(),
    }))
}

/// The configuration the agent already in an image will run with (for an
/// `inject` that does not install one): `Ok(None)` when it cannot be told
/// (no single ext root filesystem, no debugfs) or the image has no
/// configuration file (then the agent's defaults decide: nothing pinned).
pub fn image_config(
    image: &Path,
    info: &DiskInfo,
    boot: &PartInfo,
) -> Result<Option<sealed_bundle::config::Config>, AgentError> {
    let Ok(root) = find_root(info, boot, None) else {
        return Ok(None);
    };
    let existing = match read_config(image, &root) {
        Ok(e) => e,
        Err(AgentError::Image(ImageError::ToolMissing { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(bytes) = existing else {
        return Ok(None);
    };
    sealed_bundle::config::parse(&String::from_utf8_lossy(&bytes))
        .map(Some)
        .map_err(|(line, reason)| AgentError::BadConfig { line, reason })
}

/// The image's `/etc/sealed-firstboot.conf`, if it has one (a regular
/// file of at most the device's limit).
fn read_config(image: &Path, root: &PartInfo) -> Result<Option<Vec<u8>>, AgentError> {
    Ok(match stat(image, root.start, CONFIG_PATH)? {
        Some(s) if s.kind == Kind::File && s.size > MAX_CONFIG_BYTES => {
            return Err(AgentError::TooLarge {
                path: CONFIG_PATH.into(),
                size: s.size,
                limit: MAX_CONFIG_BYTES,
            })
        }
        Some(s) if s.kind == Kind::Dir => {
            return Err(AgentError::IsDirectory { path: CONFIG_PATH })
        }
        Some(s) if s.kind == Kind::File => debugfs_cat(image, root.start, CONFIG_PATH)?,
        // A link (debugfs cannot follow it inside the image) or a special
        // file: its settings cannot be kept, so nothing is replaced.
        Some(_) => return Err(AgentError::NotRegular { path: CONFIG_PATH }),
        None => None,
    })
}

/// Write each wanted path that is not already as wanted (one debugfs
/// session); returns the paths written.
fn write_wanted(
    image: &Path,
    root: &PartInfo,
    wanted: &[(&'static str, Want<'_>)],
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<Vec<String>, AgentError> {
    let staged = tempfile::Builder::new()
        .prefix(".build-image-agent-")
        .tempdir_in(scratch)
        .map_err(|cause| AgentError::Io {
            context: format!("creating a temporary directory in {}", scratch.display()),
            cause,
        })?;
    let mut script = Vec::new();
    let mut changed = Vec::new();
    // Directories already checked (or to be made): each is looked at once.
    let mut known_dirs: Vec<String> = Vec::new();
    for (n, (path, want)) in wanted.iter().enumerate() {
        let have = stat(image, root.start, path)?;
        if have
            .as_ref()
            .is_some_and(|h| is_as_wanted(h, want, image, root.start, path))
        {
            continue;
        }
        if have.as_ref().is_some_and(|h| h.kind == Kind::Dir) {
            return Err(AgentError::IsDirectory { path });
        }
        mkdirs(image, root.start, path, &mut known_dirs, &mut script)?;
        if have.is_some() {
            line(&mut script, "rm", &[path])?;
        }
        match want {
            Want::File(bytes, mode) => {
                let host = staged.path().join(n.to_string());
                fs::write(&host, bytes).map_err(|cause| AgentError::Io {
                    context: format!("staging {path}"),
                    cause,
                })?;
                let host = host.to_string_lossy().into_owned();
                line(&mut script, "write", &[&host, path])?;
                set_owner_mode(&mut script, path, 0o100000 | mode)?;
            }
            Want::Link(target) => {
                line(&mut script, "symlink", &[path, target])?;
                set_owner_mode(&mut script, path, 0o120777)?;
            }
        }
        changed.push(path.to_string());
    }
    if !script.is_empty() {
        debugfs_write(image, root.start, &script, staged.path(), epoch)?;
    }
    Ok(changed)
}

/// Install into an image just assembled, whose boot partition is number
/// `boot_index` (`epoch`, from `SOURCE_DATE_EPOCH`, fixes the new inodes'
/// times).
pub fn install_built(
    image: &Path,
    boot_index: u32,
    req: &AgentRequest,
    device: &DeviceConfig,
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<AgentReport, AgentError> {
    let info = super::read_table(image)?;
    let boot = super::find_boot_partition(&info, &PartitionSelector::Index(boot_index))?;
    install(image, &info, &boot, req, device, scratch, epoch)
}

/// [`configure`] an image just assembled, whose boot partition is number
/// `boot_index`.
pub fn configure_built(
    image: &Path,
    boot_index: u32,
    root_sel: Option<&PartitionSelector>,
    device: &DeviceConfig,
    scratch: &Path,
    epoch: Option<u64>,
) -> Result<Option<ConfigReport>, AgentError> {
    if device.is_empty() {
        return Ok(None);
    }
    let info = super::read_table(image)?;
    let boot = super::find_boot_partition(&info, &PartitionSelector::Index(boot_index))?;
    configure(image, &info, &boot, root_sel, device, scratch, epoch)
}

enum Want<'a> {
    File(&'a [u8], u32),
    Link(&'static str),
}

/// Whether `have` (at `path`) is already as wanted: root-owned, and the
/// same file content and mode, or the same link.
fn is_as_wanted(have: &Inode, want: &Want<'_>, image: &Path, offset: u64, path: &str) -> bool {
    if have.uid != 0 || have.gid != 0 {
        return false;
    }
    match want {
        Want::File(bytes, mode) => {
            have.kind == Kind::File
                && have.mode == *mode
                && have.size == bytes.len() as u64
                && debugfs_cat(image, offset, path)
                    .ok()
                    .flatten()
                    .is_some_and(|content| content == *bytes)
        }
        Want::Link(target) => have.kind == Kind::Link && have.link.as_deref() == Some(target),
    }
}

/// The inode at `path` of the root filesystem at `offset`; `None` when it
/// does not exist.
fn stat(image: &Path, offset: u64, path: &str) -> Result<Option<Inode>, AgentError> {
    Ok(debugfs::lookup(image, offset, path)?)
}

fn line(script: &mut Vec<u8>, cmd: &str, args: &[&str]) -> Result<(), AgentError> {
    script.extend_from_slice(cmd.as_bytes());
    for a in args {
        script.push(b' ');
        script.extend(quote(a.as_bytes())?);
    }
    script.push(b'\n');
    Ok(())
}

fn set_owner_mode(script: &mut Vec<u8>, path: &str, mode: u32) -> Result<(), AgentError> {
    let p = quoted(path)?;
    script.extend_from_slice(
        format!(
            "set_inode_field {p} uid 0\nset_inode_field {p} gid 0\nset_inode_field {p} mode 0{mode:o}\n"
        )
        .as_bytes(),
    );
    Ok(())
}

/// Make the missing directories above `path` (root-owned, 0755).
fn mkdirs(
    image: &Path,
    offset: u64,
    path: &str,
    known: &mut Vec<String>,
    script: &mut Vec<u8>,
) -> Result<(), AgentError> {
    let mut dir = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push('/');
        dir.push_str(part);
        if known.contains(&dir) {
            continue;
        }
        match stat(image, offset, &dir)? {
            Some(s) if s.kind == Kind::Dir => {}
            Some(_) => return Err(AgentError::NotADirectory(dir.clone())),
            None => {
                line(script, "mkdir", &[&dir])?;
                set_owner_mode(script, &dir, 0o40755)?;
            }
        }
        known.push(dir.clone());
    }
    Ok(())
}

fn is_ext(p: &PartInfo) -> bool {
    matches!(p.fs_type.as_deref(), Some("ext2" | "ext3" | "ext4"))
}

/// The root partition: as selected, else the only ext filesystem besides
/// the boot partition (a partition named or labelled `rootfs`/`root` wins
/// among several).
pub fn find_root(
    info: &DiskInfo,
    boot: &PartInfo,
    sel: Option<&PartitionSelector>,
) -> Result<PartInfo, AgentError> {
    match sel.and_then(|sel| super::read::pick(info, sel)) {
        Some(Picked::One(p)) if !is_ext(p) => {
            return Err(AgentError::NotExt(p.describe(), fs_name(p)))
        }
        Some(Picked::One(p)) => return Ok(p.clone()),
        Some(Picked::Missing(m)) => return Err(AgentError::NoRoot(m)),
        Some(Picked::Several(m)) => return Err(AgentError::AmbiguousRoot(m)),
        None => {}
    }
    let candidates: Vec<&PartInfo> = info
        .partitions
        .iter()
        .filter(|p| p.index != boot.index && is_ext(p))
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            // Say what the likely root holds instead.
            match info
                .partitions
                .iter()
                .filter(|p| p.index != boot.index)
                .max_by_key(|p| p.size)
            {
                Some(p) => Err(AgentError::NotExt(p.describe(), fs_name(p))),
                None => Err(AgentError::NoRoot(format!(
                    "the image has no partition besides the boot partition; partitions: {}",
                    describe_all(&info.partitions)
                ))),
            }
        }
        many => {
            let named = |p: &&&PartInfo| p.is_called("rootfs") || p.is_called("root");
            let by_name: Vec<&&PartInfo> = many.iter().filter(named).collect();
            match by_name.as_slice() {
                [one] => Ok((**one).clone()),
                _ => Err(AgentError::AmbiguousRoot(describe_all(
                    many.iter().copied(),
                ))),
            }
        }
    }
}

fn fs_name(p: &PartInfo) -> String {
    p.fs_type
        .clone()
        .unwrap_or_else(|| "no filesystem build-image recognises".into())
}

/// The root filesystem's architecture from the ELF header of a binary in it.
fn probe_arch(image: &Path, root: &PartInfo) -> Result<Arch, AgentError> {
    let mut last = String::from("no binary found");
    for probe in ARCH_PROBES {
        // Only regular files (debugfs `cat` of a symlink reads garbage), and
        // not a hostile image's gigabyte "binary".
        match stat(image, root.start, probe)? {
            Some(s) if s.kind == Kind::File && s.size <= MAX_AGENT_BYTES => {}
            Some(s) if s.kind == Kind::File => {
                last = format!("{probe} is {} bytes, too large to be read", s.size);
                continue;
            }
            _ => continue,
        }
        match debugfs_cat(image, root.start, probe)? {
            Some(bytes) if bytes.starts_with(b"\x7fELF") => {
                return Arch::from_elf(&bytes).map_err(|reason| AgentError::UnknownArch {
                    index: root.index,
                    reason: format!("{probe}: {reason}"),
                });
            }
            Some(_) => last = format!("{probe} is not an ELF binary"),
            None => {}
        }
    }
    Err(AgentError::UnknownArch {
        index: root.index,
        reason: format!(
            "{last} (looked at {}); pass --agent FILE",
            ARCH_PROBES.join(", ")
        ),
    })
}

/// An agent binary: a regular file (links followed) of at most
/// `MAX_AGENT_BYTES`, opened without blocking (a FIFO is refused at once).
fn read_agent(path: &Path) -> Result<Vec<u8>, AgentError> {
    crate::io::limit::read_file(path, MAX_AGENT_BYTES)
        .map(|bytes| bytes.to_vec())
        .map_err(|e| AgentError::BadAgent {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The architecture an agent binary is built for, from its ELF header.
fn elf_arch(path: &Path, bytes: &[u8]) -> Result<Arch, AgentError> {
    Arch::from_elf(bytes).map_err(|reason| AgentError::BadAgent {
        path: path.to_path_buf(),
        reason,
    })
}

/// An agent binary must be an ELF for the image's architecture.
fn check_arch(path: &Path, bytes: &[u8], arch: Arch) -> Result<(), AgentError> {
    let found = elf_arch(path, bytes)?;
    if found != arch {
        return Err(AgentError::AgentMismatch {
            path: path.to_path_buf(),
            found: found.name(),
            image: arch.name(),
        });
    }
    Ok(())
}

/// Directories searched for `sealed-firstboot-ARCH`, in order:
/// `$SEALED_IMAGE_AGENT_DIR` alone when it is set.
pub fn agent_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("SEALED_IMAGE_AGENT_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
        return dirs;
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        // Installed: beside build-image, or in ../lib/sealed-image
        // (/usr/bin → /usr/lib/sealed-image). From a checkout:
        // target/{release,debug}/ → target/device (scripts/build-device-binaries).
        dirs.push(exe_dir.clone());
        dirs.push(exe_dir.join("../lib/sealed-image"));
        dirs.push(exe_dir.join("../device"));
        // Test binaries live one level deeper (target/debug/deps).
        dirs.push(exe_dir.join("../../device"));
    }
    dirs
}

/// The shipped agent for `arch`, and its bytes (checked).
fn find_agent(arch: Arch) -> Result<(PathBuf, Vec<u8>), AgentError> {
    let name = format!("sealed-firstboot-{}", arch.name());
    let dirs = agent_dirs();
    for d in &dirs {
        let p = d.join(&name);
        if p.is_file() {
            let bytes = read_agent(&p)?;
            check_arch(&p, &bytes, arch)?;
            return Ok((p, bytes));
        }
    }
    Err(AgentError::AgentMissing {
        arch: arch.name(),
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Where the device mounts the boot partition, from the image's
/// `/etc/fstab` (by PARTUUID, LABEL, PARTLABEL, UUID or device name).
fn boot_dir_of(image: &Path, root: &PartInfo, boot: &PartInfo) -> Result<String, AgentError> {
    let unknown = |reason: String| AgentError::BootDirUnknown {
        index: boot.index,
        reason,
    };
    match stat(image, root.start, "/etc/fstab")? {
        None => return Err(unknown("the root filesystem has no /etc/fstab".into())),
        Some(s) if s.kind != Kind::File => {
            return Err(unknown("its /etc/fstab is not a regular file".into()))
        }
        Some(s) if s.size > MAX_CONFIG_BYTES * 16 => {
            return Err(unknown(format!("its /etc/fstab is {} bytes", s.size)))
        }
        Some(_) => {}
    }
    let fstab = debugfs_cat(image, root.start, "/etc/fstab")?
        .ok_or_else(|| unknown("the root filesystem has no /etc/fstab".into()))?;
    let serial = boot.fs_uuid.as_deref();
    let fstab = String::from_utf8_lossy(&fstab);
    for l in fstab.lines() {
        let mut f = l.split_whitespace();
        let (Some(spec), Some(dir)) = (f.next(), f.next()) else {
            continue;
        };
        if spec.starts_with('#') {
            continue;
        }
        let eq = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        let hit = if let Some(v) = spec.strip_prefix("PARTUUID=") {
            eq(boot.uuid.as_deref(), v)
        } else if let Some(v) = spec.strip_prefix("LABEL=") {
            eq(boot.fs_label.as_deref(), v)
        } else if let Some(v) = spec.strip_prefix("PARTLABEL=") {
            eq(boot.label.as_deref(), v)
        } else if let Some(v) = spec.strip_prefix("UUID=") {
            eq(serial, v)
        } else if let Some(dev) = spec.strip_prefix("/dev/") {
            // mmcblk0p1, sda1, vda1: the partition number at the end.
            let digits: String = dev
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            !dev.starts_with("disk/") && digits.parse::<u32>().ok() == Some(boot.index)
        } else {
            false
        };
        if hit {
            return Ok(dir.to_string());
        }
    }
    Err(unknown(format!(
        "no /etc/fstab line names it (PARTUUID={}, LABEL={}, UUID={})",
        boot.uuid.as_deref().unwrap_or("?"),
        boot.fs_label.as_deref().unwrap_or("?"),
        serial.unwrap_or("?")
    )))
}

fn check_boot_dir(dir: &str) -> Result<String, AgentError> {
    let ok = dir.starts_with('/')
        && dir.len() > 1
        && dir.len() <= 1024
        && !dir
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | '\\' | '%'))
        && !dir.split('/').any(|c| c == "." || c == "..");
    if !ok {
        return Err(AgentError::BadBootDir(dir.to_string()));
    }
    Ok(dir.trim_end_matches('/').to_string())
}

/// The configuration file: the image's own (its other settings kept) with
/// `boot_dir` set (when given), its `signer` lines replaced by the pinned
/// signers and the allowed paths added, or a new one.
fn config_text(
    existing: Option<&[u8]>,
    boot_dir: Option<&str>,
    device: &DeviceConfig,
) -> Result<String, AgentError> {
    let text = existing
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let key_of = |l: &str| {
        l.split('#')
            .next()
            .unwrap_or_default()
            .split_once('=')
            .map(|(k, _)| k.trim().to_owned())
    };
    // The `boot_dir` lines this replaces are not checked (several of them,
    // which the device refuses, become one); every other line is, with
    // its own number.
    let checked: String = text
        .lines()
        .map(|l| match key_of(l) {
            Some(k) if k == "boot_dir" && boot_dir.is_some() => "\n".to_string(),
            _ => format!("{l}\n"),
        })
        .collect();
    let parsed = sealed_bundle::config::parse(&checked)
        .map_err(|(line, reason)| AgentError::BadConfig { line, reason })?;
    if device.signers.is_empty() && !parsed.signers.is_empty() {
        return Err(AgentError::PinnedButUnsigned);
    }
    let signer_lines: String = device
        .signers
        .iter()
        .map(|s| format!("signer = {s}\n"))
        .collect();
    let mut out = String::new();
    if existing.is_none() {
        out.push_str("# sealed-firstboot configuration (written by build-image)\n");
    }
    let (mut boot_set, mut signers_set) = (false, false);
    for l in text.lines() {
        let key = key_of(l);
        match (key.as_deref(), boot_dir) {
            (Some("boot_dir"), Some(dir)) => {
                if !std::mem::replace(&mut boot_set, true) {
                    out.push_str(&format!("boot_dir = {dir}\n"));
                }
                continue;
            }
            (Some("signer"), _) if !device.signers.is_empty() => {
                if !std::mem::replace(&mut signers_set, true) {
                    out.push_str(&signer_lines);
                }
                continue;
            }
            _ => {}
        }
        out.push_str(l);
        out.push('\n');
    }
    if let (Some(dir), false) = (boot_dir, boot_set) {
        out.push_str("# Where the boot partition holding sealed-secrets/ is mounted:\n");
        out.push_str(&format!("boot_dir = {dir}\n"));
    }
    if !device.signers.is_empty() && !signers_set {
        out.push_str("# Only bundles signed by one of these keys are applied:\n");
        out.push_str(&signer_lines);
    }
    let missing: Vec<&String> = device
        .allow_paths
        .iter()
        .filter(|p| !parsed.allow_paths.contains(p))
        .collect();
    if !missing.is_empty() {
        out.push_str(
            "# /run prefixes bundles may write to although the default rule refuses them:\n",
        );
        for p in missing {
            out.push_str(&format!("allow_path = {p}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    fn part(index: u32, fs: &str, label: Option<&str>, fs_label: Option<&str>) -> PartInfo {
        PartInfo {
            index,
            start: u64::from(index) << 20,
            size: 1 << 20,
            type_id: "0x83".into(),
            label: label.map(Into::into),
            uuid: None,
            is_fat_boot_candidate: fs == "vfat",
            fs_type: Some(fs.into()),
            fs_label: fs_label.map(Into::into),
            fs_uuid: None,
        }
    }

    /// The root is picked like the boot partition (number, or name/label
    /// with case ignored), and a name two partitions carry is refused.
    #[test]
    fn roots_are_picked_by_number_or_a_name_only_one_carries() {
        let info = DiskInfo {
            table: crate::image::TableKind::Mbr,
            disk_id: "0x5ea1ed01".into(),
            size: 8 << 20,
            partitions: vec![
                part(1, "vfat", None, Some("bootfs")),
                part(2, "ext4", None, Some("rootfs")),
                part(3, "ext4", None, Some("ROOTFS")),
                part(4, "ext4", None, Some("data")),
            ],
        };
        let boot = info.partitions[0].clone();
        let root = |sel: Option<PartitionSelector>| find_root(&info, &boot, sel.as_ref());
        let label = |l: &str| Some(PartitionSelector::Label(l.into()));
        assert_eq!(root(label("DATA")).unwrap().index, 4);
        assert_eq!(root(Some(PartitionSelector::Index(3))).unwrap().index, 3);
        assert!(
            matches!(root(label("rootfs")), Err(AgentError::AmbiguousRoot(m)) if m.contains("2 (") && m.contains("3 ("))
        );
        // Two named rootfs among three ext partitions: no guess either.
        assert!(matches!(root(None), Err(AgentError::AmbiguousRoot(_))));
        match root(Some(PartitionSelector::Index(9))) {
            Err(AgentError::NoRoot(m)) => {
                assert!(m.starts_with("no partition 9; partitions: 1 ("), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(root(label("bootfs")), Err(AgentError::NotExt(..))));
    }

    #[test]
    fn elf_headers_name_the_architecture() {
        assert_eq!(Arch::from_elf(&elf(2, 0xb7)), Ok(Arch::Aarch64));
        assert_eq!(Arch::from_elf(&elf(2, 0x3e)), Ok(Arch::X86_64));
        assert_eq!(Arch::from_elf(&elf(1, 0x28)), Ok(Arch::Armv7));
        assert!(Arch::from_elf(&elf(2, 0xf3)).unwrap_err().contains("0xf3"));
        assert_eq!(
            Arch::from_elf(b"#!/bin/sh\n").unwrap_err(),
            "not an ELF file"
        );
        assert_eq!(Arch::from_elf(b"\x7fEL").unwrap_err(), "not an ELF file");
    }

    #[test]
    fn config_keeps_other_settings_and_sets_boot_dir_once() {
        let none = DeviceConfig::default();
        let config_text = |e, b: &str| super::config_text(e, Some(b), &none);
        let new = config_text(None, "/boot/firmware").unwrap();
        assert_eq!(
            sealed_bundle::config::parse(&new).unwrap().boot_dir,
            Some(PathBuf::from("/boot/firmware"))
        );
        let mine = b"# mine\nidentity = ssh-host-key\nboot_dir=/boot\nboot_dir = /old # again\n";
        let merged = config_text(Some(mine), "/boot/efi").unwrap();
        assert_eq!(
            merged,
            "# mine\nidentity = ssh-host-key\nboot_dir = /boot/efi\n"
        );
        // Idempotent.
        assert_eq!(
            config_text(Some(merged.as_bytes()), "/boot/efi").unwrap(),
            merged
        );
        assert!(matches!(
            config_text(Some(b"colour = blue\n"), "/boot"),
            Err(AgentError::BadConfig { line: 1, .. })
        ));
        // What the device would refuse at boot is refused here, with its
        // line: a one-value key other than the boot_dir replaced, twice.
        assert!(matches!(
            config_text(Some(b"identity = tpm2\n\nidentity = generated\n"), "/boot"),
            Err(AgentError::BadConfig { line: 3, .. })
        ));
    }

    /// The signers replace the image's own signer lines (in place, so a
    /// second run changes nothing), allowed paths are added, and an
    /// unsigned build is refused for an image that pins signers.
    #[test]
    fn config_pins_the_build_signers() {
        use sealed_bundle::SigningKey;
        let (a, b) = (
            SigningKey::generate().signer(),
            SigningKey::generate().signer(),
        );
        let pins = DeviceConfig {
            signers: vec![a, b],
            allow_paths: vec!["/run/systemd/network".into()],
        };
        let old = SigningKey::generate().signer();
        let mine = format!("boot_dir = /boot\nsigner = {old}\nidentity = generated\n");
        let text = config_text(Some(mine.as_bytes()), None, &pins).unwrap();
        let parsed = sealed_bundle::config::parse(&text).unwrap();
        assert_eq!(parsed.signers, [a, b]);
        assert_eq!(parsed.allow_paths, ["/run/systemd/network"]);
        assert_eq!(parsed.boot_dir.as_deref(), Some(Path::new("/boot")));
        assert!(!text.contains(&old.to_string()));
        assert_eq!(
            config_text(Some(text.as_bytes()), None, &pins).unwrap(),
            text
        );
        let fresh = config_text(None, None, &pins).unwrap();
        assert_eq!(
            sealed_bundle::config::parse(&fresh).unwrap().signers,
            [a, b]
        );
        assert!(matches!(
            config_text(Some(mine.as_bytes()), None, &DeviceConfig::default()),
            Err(AgentError::PinnedButUnsigned)
        ));
    }

    #[test]
    fn boot_dirs_are_checked() {
        assert_eq!(check_boot_dir("/boot/firmware/").unwrap(), "/boot/firmware");
        for bad in [
            "boot", "/", "/a b", "/a#b", "/a/../b", "/a\nb", "/a\\b", "/boot/%H",
        ] {
            assert!(
                matches!(check_boot_dir(bad), Err(AgentError::BadBootDir(d)) if d == bad),
                "{bad:?}"
            );
        }
    }
}
