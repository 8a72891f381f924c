//! Helpers for the end-to-end tests: locate (and build) the real binaries,
//! read what real tools say of the artifacts, drive `sealed-firstboot` on a
//! device tree. The generic helpers (real tools and the CI=true rule, run
//! helpers, transcripts, marker searches) are the workspace's `testkit`,
//! re-exported here.

pub mod device;
pub mod hardware;
pub mod http;
pub mod pi;
pub mod serve;
pub mod webdriver;

pub use testkit::*;

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

/// The tools that read a built image's partition table and FAT partition,
/// with their Debian packages, for [`require_tools_from`].
pub const FAT_TOOLS: &[(&str, &str)] = &[("mcopy", "mtools"), ("sfdisk", "fdisk")];

/// A fresh temp directory for a test that can run here (`ready`: what it
/// needs is there, e.g. [`require_tools_from`] said so); `None` when the
/// test skips.
pub fn scratch_if(ready: bool) -> Option<tempfile::TempDir> {
    ready.then(|| tempfile::tempdir().unwrap())
}

/// Run `script` with `sh -e` in `dir`, the sbin directories on `$PATH`
/// (mkfs and the like live there); it must succeed.
pub fn sh(script: &str, dir: &Path) {
    let out = command("sh")
        .arg("-ec")
        .arg(format!("PATH=$PATH:{}\n{script}", SBIN_DIRS.join(":")))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out, script);
}

/// The `SHA256SUMS` in `dir` must verify (`sha256sum --quiet -c`); a
/// failure names `what` and shows what sha256sum said.
pub fn assert_checksums(dir: &Path, what: &str) {
    let out = command("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_success(&out, format!("{what}: sha256sum -c SHA256SUMS"));
}

/// Fails when `dir` holds anything: `what` (a failed command) must leave
/// nothing behind. A `dir` that does not exist holds nothing.
pub fn assert_left_nothing(dir: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what} left {left:?}");
}

/// The signing key the tests sign with (committed, not a secret).
pub fn test_signing_key() -> PathBuf {
    workspace().join("tests/data/TEST-ONLY-signing.key")
}

/// The test signing key's public key (`sealed-signer1…`).
pub fn test_signer() -> sealed_bundle::Signer {
    let text = std::fs::read(test_signing_key()).unwrap();
    sealed_bundle::SigningKey::from_file_text(&text)
        .unwrap()
        .signer()
}

/// `build-image`, not started yet, signing with the test key
/// (`$SEALED_IMAGE_SIGNING_KEY_FILE`) unless the test says otherwise.
pub fn build_image_cmd() -> Command {
    let mut c = Command::new(bin("build-image"));
    c.env_remove("SEALED_IMAGE_SIGNING_KEY")
        .env("SEALED_IMAGE_SIGNING_KEY_FILE", test_signing_key());
    c
}

/// `build-image build RECIPE --out OUT`, not started yet.
pub fn build_cmd(recipe: &Path, out: &Path) -> Command {
    let mut c = build_image_cmd();
    c.arg("build").arg(recipe).arg("--out").arg(out);
    c
}

/// The partition table as `sfdisk --json` reports it (label, id,
/// partitions…).
pub fn sfdisk_table(image: &Path) -> serde_json::Value {
    let out = run_ok("sfdisk", &["--json", s(image)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    v["partitiontable"].clone()
}

/// Partitions as `sfdisk --json` reports them: (start bytes, size bytes, type, name).
pub fn sfdisk_partitions(image: &Path) -> Vec<serde_json::Value> {
    // Without the device node names, which repeat the file name.
    let mut parts = sfdisk_table(image)["partitions"]
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

/// The string field `key` of each object in the JSON array `list`.
pub fn field_strs<'a>(list: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    items
        .iter()
        .map(|e| e[key].as_str().unwrap_or_else(|| panic!("no {key} in {e}")))
        .collect()
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
        let out = command("mcopy")
            .args(["-n", "-i", &format!("{}@@{offset}", image.display())])
            .arg(format!("::/sealed-secrets/{f}"))
            .arg(dest.join(f))
            .output()
            .expect("running mcopy");
        assert_success(&out, format!("mcopy {f}"));
    }
}

/// The file `path` (absolute) of the FAT filesystem at byte `offset` of
/// `image`, as `mtype` prints it.
pub fn fat_file(image: &Path, offset: u64, path: &str) -> String {
    let fat = format!("{}@@{offset}", image.display());
    stdout(&run("mtype", &["-i", &fat, &format!("::{path}")]))
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
    assert_success(&out, format!("sealed-firstboot {cmd}"));
    out
}
