//! Test helpers: real tools, skipped with a reason when missing (but a
//! failure when `CI=true`).

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether `name` is installed. When it is not: a failure under `CI=true`,
/// otherwise a printed reason and `false` (the caller skips).
pub fn require_tool(name: &str) -> bool {
    if super::ext4::find_tool(name).is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} is required (CI=true) but not installed");
    }
    eprintln!("skipping: {name} is not installed");
    false
}

/// `require_tool` for several tools.
pub fn require_tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n))
}

/// Run a tool (found in PATH or sbin), panicking with its output on failure.
pub fn run_ok(tool: &str, args: &[&str]) -> Output {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a tool and return its output whatever the status.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let path = super::ext4::find_tool(tool).unwrap_or_else(|| panic!("{tool} not found"));
    Command::new(path)
        .args(args)
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `path` as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// Copy `len` bytes at `offset` of `image` into a new file (dd-equivalent).
pub fn extract(image: &Path, offset: u64, len: u64, dest: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(dest).unwrap();
    std::io::copy(&mut f.take(len), &mut out).unwrap();
}
