//! Safety checks on a block device before anything is written to it.
//!
//! Everything is read from `/proc` and `/sys` through [`SysRoots`], so tests
//! can feed fake trees: `PROC/self/mountinfo`, `PROC/swaps`,
//! `SYS/block/DISK/{dev,size,removable,ro,holders/}` and
//! `SYS/block/DISK/PART/{dev,partition,size,ro,holders/}`.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::FlashError;

/// Where `/proc` and `/sys` are (the real ones, or fakes in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl SysRoots {
    /// The running system's `/proc` and `/sys`.
    pub fn host() -> SysRoots {
        SysRoots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

impl Default for SysRoots {
    fn default() -> Self {
        SysRoots::host()
    }
}

/// A device number, `major:minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Parse `8:1`.
    pub fn parse(s: &str) -> Option<DevNum> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNum {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    /// From a `st_rdev` / `st_dev` value.
    pub fn from_raw(dev: u64) -> DevNum {
        DevNum {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What the checks found out about a block device target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTarget {
    /// Kernel name of the target (`sdb`, `sdb1`, `mmcblk0`, `loop3`).
    pub name: String,
    /// Kernel name of the whole disk it belongs to (itself for a disk).
    pub disk: String,
    pub dev: DevNum,
    pub is_partition: bool,
    /// Size in bytes (sysfs `size` × 512).
    pub size: u64,
    /// The disk's `removable` flag.
    pub removable: bool,
}

/// One block device from sysfs.
#[derive(Clone, Debug)]
struct SysBlock {
    name: String,
    dev: DevNum,
    /// Whole disk this belongs to.
    disk: String,
    is_partition: bool,
    dir: PathBuf,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn sys_err(path: &Path, e: std::io::Error) -> FlashError {
    FlashError::SystemInfo {
        path: path.to_path_buf(),
        cause: e,
    }
}

fn sorted_dir(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// All disks and partitions listed under `SYS/block`.
fn block_devices(roots: &SysRoots) -> Result<Vec<SysBlock>, FlashError> {
    let base = roots.sys.join("block");
    let disks = sorted_dir(&base).map_err(|e| sys_err(&base, e))?;
    let mut out = Vec::new();
    for (disk, dir) in disks {
        let Some(dev) = read_trim(&dir.join("dev")).and_then(|s| DevNum::parse(&s)) else {
            continue;
        };
        out.push(SysBlock {
            name: disk.clone(),
            dev,
            disk: disk.clone(),
            is_partition: false,
            dir: dir.clone(),
        });
        for (name, sub) in sorted_dir(&dir).unwrap_or_default() {
            if !sub.join("partition").is_file() {
                continue;
            }
            if let Some(dev) = read_trim(&sub.join("dev")).and_then(|s| DevNum::parse(&s)) {
                out.push(SysBlock {
                    name,
                    dev,
                    disk: disk.clone(),
                    is_partition: true,
                    dir: sub,
                });
            }
        }
    }
    Ok(out)
}

/// A device and everything stacked on it (device mapper, md, …), by name.
fn with_holders(all: &[SysBlock], start: &SysBlock, out: &mut BTreeSet<(String, DevNum)>) {
    let mut todo = vec![start.clone()];
    while let Some(b) = todo.pop() {
        if !out.insert((b.name.clone(), b.dev)) || out.len() > 4096 {
            continue;
        }
        for (holder, _) in sorted_dir(&b.dir.join("holders")).unwrap_or_default() {
            if let Some(h) = all.iter().find(|x| x.name == holder) {
                todo.push(h.clone());
            }
        }
    }
}

/// A line of `/proc/self/mountinfo` we care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub dev: DevNum,
    pub mount_point: String,
    pub source: String,
}

/// Undo the octal escapes (`\040` for a space) of mountinfo and swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text (see proc(5)).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dev = DevNum::parse(fields.get(2)?)?;
            let mount_point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let source = unescape(fields.get(sep + 2).copied().unwrap_or(""));
            Some(MountEntry {
                dev,
                mount_point,
                source,
            })
        })
        .collect()
}

/// The file names of active swap areas from `/proc/swaps` text.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// Kernel name a `/dev/…` path refers to: the last component after
/// resolving symlinks (`/dev/mapper/x` → `dm-0`), or of the path as written.
fn dev_name(source: &str) -> Option<String> {
    if !source.starts_with("/dev/") {
        return None;
    }
    let p = Path::new(source);
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    real.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn hits(set: &BTreeSet<(String, DevNum)>, dev: Option<DevNum>, name: Option<&str>) -> bool {
    set.iter()
        .any(|(n, d)| Some(*d) == dev || Some(n.as_str()) == name)
}

fn describe_set(set: &BTreeSet<(String, DevNum)>) -> String {
    set.iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check that the block device `dev` (shown as `shown` in messages) may be
/// written with an image of `image_size` bytes (`None`: not known yet, the
/// caller checks the size later). Refuses, each with its own error:
/// the disk holding `/` or an active swap area; a device with a mounted
/// filesystem on it (or on something stacked on it); a read-only device; a
/// device smaller than the image; without `yes`, a partition rather than a
/// whole disk and a disk that is not removable.
pub fn check_block_device(
    dev: DevNum,
    shown: &Path,
    image_size: Option<u64>,
    yes: bool,
    roots: &SysRoots,
) -> Result<BlockTarget, FlashError> {
    let all = block_devices(roots)?;
    let me = all
        .iter()
        .find(|b| b.dev == dev)
        .ok_or_else(|| FlashError::UnknownDevice {
            target: shown.to_path_buf(),
            dev: dev.to_string(),
            sys: roots.sys.join("block"),
        })?
        .clone();
    let disk = all
        .iter()
        .find(|b| b.name == me.disk && !b.is_partition)
        .cloned()
        .unwrap_or_else(|| me.clone());

    // Everything on the whole disk (for "is this the system disk"), and
    // everything a write to the target would hit (the target, what is
    // stacked on it, and for a partition the whole disk node itself).
    let mut whole = BTreeSet::new();
    for b in all.iter().filter(|b| b.disk == disk.name) {
        with_holders(&all, b, &mut whole);
    }
    let hit = if me.is_partition {
        let mut hit = BTreeSet::new();
        with_holders(&all, &me, &mut hit);
        hit.insert((disk.name.clone(), disk.dev));
        hit
    } else {
        whole.clone()
    };

    let mountinfo_path = roots.proc.join("self/mountinfo");
    let mountinfo =
        std::fs::read_to_string(&mountinfo_path).map_err(|e| sys_err(&mountinfo_path, e))?;
    let mounts = parse_mountinfo(&mountinfo);
    let swaps_path = roots.proc.join("swaps");
    // No /proc/swaps means no swap support: nothing to check.
    let swaps = std::fs::read_to_string(&swaps_path)
        .map(|t| parse_swaps(&t))
        .unwrap_or_default();

    for m in mounts.iter().filter(|m| m.mount_point == "/") {
        if hits(&whole, Some(m.dev), dev_name(&m.source).as_deref()) {
            return Err(FlashError::SystemDisk {
                target: shown.to_path_buf(),
                disk: disk.name.clone(),
                reason: format!(
                    "it holds the running system's root filesystem (/ is {} on {})",
                    m.source, m.dev
                ),
            });
        }
    }
    for s in &swaps {
        let by_name = dev_name(s);
        // A swap file: the device of the filesystem holding it.
        let by_dev = if by_name.is_none() {
            std::fs::metadata(s)
                .ok()
                .map(|md| DevNum::from_raw(std::os::unix::fs::MetadataExt::dev(&md)))
        } else {
            None
        };
        if hits(&whole, by_dev, by_name.as_deref()) {
            return Err(FlashError::SystemDisk {
                target: shown.to_path_buf(),
                disk: disk.name.clone(),
                reason: format!("it holds the active swap area {s}"),
            });
        }
    }
    let mounted: Vec<String> = mounts
        .iter()
        .filter(|m| hits(&hit, Some(m.dev), dev_name(&m.source).as_deref()))
        .map(|m| {
            let name = hit
                .iter()
                .find(|(_, d)| *d == m.dev)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| m.source.clone());
            format!("{name} on {}", m.mount_point)
        })
        .collect();
    if !mounted.is_empty() {
        return Err(FlashError::Mounted {
            target: shown.to_path_buf(),
            mounts: mounted,
            devices: describe_set(&hit),
        });
    }

    if read_trim(&me.dir.join("ro")).as_deref() == Some("1")
        || read_trim(&disk.dir.join("ro")).as_deref() == Some("1")
    {
        return Err(FlashError::ReadOnly {
            target: shown.to_path_buf(),
        });
    }

    let size_path = me.dir.join("size");
    let sectors = read_trim(&size_path)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            sys_err(
                &size_path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "no size in sectors"),
            )
        })?;
    let size = sectors.saturating_mul(512);
    if let Some(need) = image_size {
        if size < need {
            return Err(FlashError::TargetTooSmall {
                target: shown.to_path_buf(),
                target_size: size,
                image_size: need,
            });
        }
    }

    if me.is_partition && !yes {
        return Err(FlashError::IsPartition {
            target: shown.to_path_buf(),
            disk: disk.name.clone(),
        });
    }
    let removable = read_trim(&disk.dir.join("removable")).as_deref() == Some("1");
    if !removable && !yes {
        return Err(FlashError::NotRemovable {
            target: shown.to_path_buf(),
            disk: disk.name.clone(),
        });
    }
    Ok(BlockTarget {
        name: me.name,
        disk: disk.name,
        dev,
        is_partition: me.is_partition,
        size,
        removable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Check the device `dev` (no image size) and expect a refusal of
    /// `kind`; returns the error for further checks.
    macro_rules! refused {
        ($f:expr, $dev:expr, $yes:expr, $kind:ident) => {{
            let e = $f.check($dev, None, $yes).unwrap_err();
            assert!(matches!(e, FlashError::$kind { .. }), "{}: {e}", $dev);
            e
        }};
    }

    /// A fake /proc and /sys: sda (fixed, root on sda2, swap on sda3),
    /// sdb (removable, two partitions, sdb2 under dm-0), mmcblk0 (removable,
    /// read-only), and a small removable sdc.
    struct Fake {
        _dir: tempfile::TempDir,
        roots: SysRoots,
    }

    fn dev(s: &str) -> DevNum {
        DevNum::parse(s).unwrap()
    }

    fn put(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let roots = SysRoots {
                proc: dir.path().join("proc"),
                sys: dir.path().join("sys"),
            };
            let f = Fake { _dir: dir, roots };
            f.disk("sda", "8:0", 1 << 30, false);
            for (i, p) in ["sda1", "sda2", "sda3"].iter().enumerate() {
                f.part("sda", p, &format!("8:{}", i + 1), 1 << 20);
            }
            f.disk("sdb", "8:16", 16 << 30, true);
            f.part("sdb", "sdb1", "8:17", 1 << 20);
            f.part("sdb", "sdb2", "8:18", 1 << 20);
            f.disk("dm-0", "253:0", 1 << 20, false);
            fs::create_dir_all(f.sys("block/sdb/sdb2/holders/dm-0")).unwrap();
            f.disk("mmcblk0", "179:0", 16 << 30, true);
            put(&f.sys("block/mmcblk0/ro"), "1\n");
            f.disk("sdc", "8:32", 64 << 20, true);
            f.mounts(&[
                "27 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw",
                "30 27 0:21 / /proc rw - proc proc rw",
                "31 27 8:1 / /boot/efi rw - vfat /dev/sda1 rw",
            ]);
            f.swaps(&["/dev/sda3 partition 1048572 0 -2"]);
            f
        }

        fn sys(&self, rel: &str) -> PathBuf {
            self.roots.sys.join(rel)
        }

        fn disk(&self, name: &str, devnum: &str, bytes: u64, removable: bool) {
            let d = self.sys(&format!("block/{name}"));
            put(&d.join("dev"), &format!("{devnum}\n"));
            put(&d.join("size"), &format!("{}\n", bytes / 512));
            put(&d.join("removable"), if removable { "1\n" } else { "0\n" });
            put(&d.join("ro"), "0\n");
            fs::create_dir_all(d.join("holders")).unwrap();
        }

        fn part(&self, disk: &str, name: &str, devnum: &str, bytes: u64) {
            let d = self.sys(&format!("block/{disk}/{name}"));
            put(&d.join("dev"), &format!("{devnum}\n"));
            put(&d.join("size"), &format!("{}\n", bytes / 512));
            put(&d.join("partition"), "1\n");
            put(&d.join("ro"), "0\n");
            fs::create_dir_all(d.join("holders")).unwrap();
        }

        fn mounts(&self, lines: &[&str]) {
            put(
                &self.roots.proc.join("self/mountinfo"),
                &(lines.join("\n") + "\n"),
            );
        }

        /// Only `/` mounted (one mountinfo line), and no swap.
        fn only_root(&self, mountinfo: &str) {
            self.mounts(&[mountinfo]);
            self.swaps(&[]);
        }

        fn swaps(&self, lines: &[&str]) {
            put(
                &self.roots.proc.join("swaps"),
                &format!(
                    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n{}\n",
                    lines.join("\n")
                ),
            );
        }

        fn check(&self, d: &str, size: Option<u64>, yes: bool) -> Result<BlockTarget, FlashError> {
            check_block_device(dev(d), Path::new("/dev/test"), size, yes, &self.roots)
        }
    }

    #[test]
    fn accepts_a_removable_unmounted_disk() {
        let f = Fake::new();
        let t = f.check("8:16", Some(1 << 30), false).unwrap();
        assert_eq!(t.name, "sdb");
        assert_eq!(t.disk, "sdb");
        assert!(!t.is_partition && t.removable);
        assert_eq!(t.size, 16 << 30);
    }

    #[test]
    fn refuses_the_root_disk_even_with_yes() {
        let f = Fake::new();
        for d in ["8:0", "8:1", "8:2"] {
            let e = f.check(d, None, true).unwrap_err();
            assert!(matches!(e, FlashError::SystemDisk { .. }), "{d}: {e}");
            assert!(e.to_string().contains("root filesystem"), "{e}");
        }
    }

    #[test]
    fn refuses_a_disk_with_active_swap() {
        let f = Fake::new();
        // Root elsewhere (an overlay), swap still on sda3.
        f.mounts(&["27 1 0:30 / / rw - overlay overlay rw"]);
        let e = refused!(f, "8:0", true, SystemDisk);
        assert!(e.to_string().contains("swap area /dev/sda3"), "{e}");
        // Swap off: sda is now a plain fixed disk (needs --yes).
        f.swaps(&[]);
        refused!(f, "8:0", false, NotRemovable);
        f.check("8:0", None, true).unwrap();
    }

    #[test]
    fn refuses_the_root_disk_behind_device_mapper() {
        let f = Fake::new();
        // / on dm-0, which is stacked on sdb2.
        f.only_root("27 1 253:0 / / rw - ext4 /dev/mapper/root rw");
        refused!(f, "8:16", true, SystemDisk);
    }

    #[test]
    fn refuses_a_mounted_partition_or_a_mounted_holder() {
        let f = Fake::new();
        f.mounts(&[
            "27 1 8:2 / / rw - ext4 /dev/sda2 rw",
            "40 27 8:17 / /media/user/BOOT\\040FS rw - vfat /dev/sdb1 rw",
        ]);
        let e = f.check("8:16", None, true).unwrap_err();
        match &e {
            FlashError::Mounted { mounts, .. } => {
                assert_eq!(mounts, &vec!["sdb1 on /media/user/BOOT FS".to_string()])
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("umount"), "{e}");
        // Only sdb2's stacked dm-0 mounted: still refused for the disk and sdb2.
        f.mounts(&[
            "27 1 8:2 / / rw - ext4 /dev/sda2 rw",
            "41 27 253:0 / /srv rw - ext4 /dev/mapper/vault rw",
        ]);
        refused!(f, "8:16", true, Mounted);
        refused!(f, "8:18", true, Mounted);
        // Its sibling partition sdb1 is not in use: allowed with --yes.
        f.check("8:17", None, true).unwrap();
    }

    #[test]
    fn refuses_read_only_and_unknown_devices_even_with_yes() {
        let f = Fake::new();
        refused!(f, "179:0", true, ReadOnly);
        refused!(f, "9:9", true, UnknownDevice);
    }

    #[test]
    fn refuses_a_device_smaller_than_the_image_even_with_yes() {
        let f = Fake::new();
        let e = f.check("8:32", Some((64 << 20) + 512), true).unwrap_err();
        match e {
            FlashError::TargetTooSmall {
                target_size,
                image_size,
                ..
            } => {
                assert_eq!(target_size, 64 << 20);
                assert_eq!(image_size, (64 << 20) + 512);
            }
            other => panic!("{other}"),
        }
        f.check("8:32", Some(64 << 20), false).unwrap();
    }

    #[test]
    fn refuses_a_partition_without_yes() {
        let f = Fake::new();
        let e = refused!(f, "8:17", false, IsPartition);
        assert!(e.to_string().contains("sdb"), "{e}");
        let t = f.check("8:17", None, true).unwrap();
        assert!(t.is_partition);
        assert_eq!(t.disk, "sdb");
    }

    #[test]
    fn refuses_a_fixed_disk_without_yes() {
        let f = Fake::new();
        f.only_root("27 1 0:30 / / rw - overlay overlay rw");
        let e = refused!(f, "8:0", false, NotRemovable);
        assert!(e.to_string().contains("--yes"), "{e}");
        f.check("8:0", None, true).unwrap();
    }

    #[test]
    fn parses_mountinfo_and_swaps() {
        let m = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
             bad line\n",
        );
        assert_eq!(
            m,
            vec![MountEntry {
                dev: dev("98:0"),
                mount_point: "/mnt 2".into(),
                source: "/dev/root".into(),
            }]
        );
        assert_eq!(
            parse_swaps("Filename Type Size Used Priority\n/swap\\040file file 10 0 -2\n"),
            vec!["/swap file".to_string()]
        );
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn the_host_root_disk_is_refused() {
        // On the real /proc and /sys: whatever holds / must be refused (when
        // / is on a block device at all; containers often have an overlay).
        let roots = SysRoots::host();
        let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
            eprintln!("skipping: no /proc/self/mountinfo");
            return;
        };
        let Some(root) = parse_mountinfo(&text)
            .into_iter()
            .rfind(|m| m.mount_point == "/")
        else {
            eprintln!("skipping: no / in mountinfo");
            return;
        };
        match check_block_device(root.dev, Path::new("/"), None, true, &roots) {
            Err(FlashError::SystemDisk { .. }) => {}
            Err(FlashError::UnknownDevice { .. }) | Err(FlashError::SystemInfo { .. }) => {
                eprintln!("skipping: / ({}) is not a block device here", root.dev)
            }
            other => panic!("the root device {} was not refused: {other:?}", root.dev),
        }
    }
}
