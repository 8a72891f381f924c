//! Helpers for the end-to-end tests: locate (and build) the real binaries,
//! run commands capturing everything they print, require real tools, and
//! search artifacts for planted marker values.

pub mod device;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Path of a workspace binary, built once per test process with the same
/// cargo that runs the tests (so it is never stale).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "build-image",
                "-p",
                "sealed-firstboot",
            ])
            .current_dir(workspace())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let path = target_dir().join("debug").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Whether a real tool is available. Without it a test may skip locally
/// (printing why), but under CI=true it must fail: scripts/test installs it.
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} (Debian package {package}) is required under CI=true; scripts/test installs it");
        }
        eprintln!("SKIP: {tool} not found (install the Debian package {package}, or run scripts/test as root)");
    }
    found
}

/// Everything a command printed, kept for leak checks.
#[derive(Default)]
pub struct Transcript {
    pub text: Vec<u8>,
}

impl Transcript {
    /// Run a command, record its stdout and stderr, and return its output.
    pub fn run(&mut self, cmd: &mut Command) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()));
        // Program and arguments only: Command's Debug would show the
        // environment, where tests pass secrets on purpose.
        let mut line = format!("$ {}", cmd.get_program().to_string_lossy());
        for a in cmd.get_args() {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        line.push('\n');
        self.text.extend_from_slice(line.as_bytes());
        self.text.extend_from_slice(&out.stdout);
        self.text.extend_from_slice(&out.stderr);
        out
    }

    /// Run a command that must succeed.
    pub fn ok(&mut self, cmd: &mut Command) -> Output {
        let out = self.run(cmd);
        assert!(
            out.status.success(),
            "{:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir` (not following symlinks) that contains
/// `needle`, read in chunks so large sparse images are fine.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && file_contains(&e.path(), needle) {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// Whether a file contains `needle` (streamed, overlap-safe).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut buf = vec![0u8; 4 << 20];
    let keep = needle.len().saturating_sub(1);
    let mut filled = 0;
    loop {
        let n = match f.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let end = filled + n;
        if contains(&buf[..end], needle) {
            return true;
        }
        let tail = end.min(keep);
        buf.copy_within(end - tail..end, 0);
        filled = tail;
    }
}

/// Byte range [start, start+len) of a file.
pub fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).expect("open");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).expect("read range");
    v
}

/// Partitions as `sfdisk --json` reports them: (start bytes, size bytes, type, name).
pub fn sfdisk_partitions(image: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(image)
        .output()
        .expect("sfdisk");
    assert!(
        out.status.success(),
        "sfdisk --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    // Without the device node names, which repeat the file name.
    let mut parts = v["partitiontable"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &mut parts {
        if let Some(o) = p.as_object_mut() {
            o.remove("node");
        }
    }
    parts
}

/// Copy a directory tree (regular files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A minimal device tree: `etc/passwd` and `etc/group` with root and the
/// given extra `(name, id)` accounts (user and group of the same name).
pub fn device_tree(root: &Path, extra: &[(&str, u32)]) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for (name, id) in extra {
        passwd.push_str(&format!(
            "{name}:x:{id}:{id}::/nonexistent:/usr/sbin/nologin\n"
        ));
        group.push_str(&format!("{name}:x:{id}:\n"));
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();
}

/// Copy `sealed-secrets/FILE` for each of `files` out of the FAT partition
/// starting at byte `offset` of `image` into `dest` (created), with mtools.
pub fn copy_sealed_out(image: &Path, offset: u64, files: &[&str], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for f in files {
        let out = Command::new("mcopy")
            .args(["-n", "-i", &format!("{}@@{offset}", image.display())])
            .arg(format!("::/sealed-secrets/{f}"))
            .arg(dest.join(f))
            .output()
            .expect("running mcopy");
        assert!(
            out.status.success(),
            "mcopy {f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Run `sealed-firstboot --root ROOT CMD` and return its output.
pub fn firstboot(root: &Path, cmd: &str) -> Output {
    Command::new(bin("sealed-firstboot"))
        .arg("--root")
        .arg(root)
        .arg(cmd)
        .output()
        .expect("running sealed-firstboot")
}

/// [`firstboot`] that must succeed.
pub fn firstboot_ok(root: &Path, cmd: &str) -> Output {
    let out = firstboot(root, cmd);
    assert!(
        out.status.success(),
        "sealed-firstboot {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
