//! Real tools, and what a test does when something it needs is missing.
//!
//! The rule (honest skips): a test that needs an external tool, root or a
//! property of the machine (loop devices, `/` on a block device) is marked
//! `#[ignore = "needs …; scripts/test runs it"]`, the reason naming what it
//! needs. A plain `cargo test` lists it as ignored, with that reason, and
//! never reports it as passed. Inside, the test still calls the
//! `require_*` functions here, and they never return quietly: what is
//! missing is a panic that says what and how to get it. So a test run with
//! `--include-ignored` (or `--ignored`) either really runs or fails.
//!
//! `scripts/test` installs the Debian packages (as root) and then runs
//! `cargo test --workspace -- --include-ignored` when every requirement is
//! there; otherwise it runs the plain command and prints what is missing
//! and which ignored tests were therefore not run. Under `CI=true` it
//! always includes the ignored tests, so a missing tool fails CI.

use std::path::PathBuf;

// The product's own lookup (build-image runs mke2fs and debugfs through
// it), compiled here from its one source file: testkit cannot depend on
// build-image.
#[path = "../../builder/src/host_tools.rs"]
mod host_tools;
pub use host_tools::{find_tool, SBIN_DIRS};

/// What a test does when `what` is missing: it fails, naming `what` and
/// how to get it (`hint`). Only tests marked `#[ignore = "needs …"]` may
/// need something that can be missing; they run with `--include-ignored`.
#[track_caller]
pub fn missing(what: &str, hint: &str) -> ! {
    panic!(
        "{what} is missing ({hint}); this test is #[ignore]d for that reason: \
         run it where its requirements are, e.g. scripts/test as root"
    );
}

/// The path of `name`; a test fails when it is not installed.
#[track_caller]
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| missing(name, "not installed"))
}

/// [`require_tool`] for several tools.
#[track_caller]
pub fn require_tools(names: &[&str]) {
    for n in names {
        require_tool(n);
    }
}

/// [`require_tool`] naming the Debian package that has the tool.
#[track_caller]
pub fn require_tool_from(name: &str, package: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        missing(
            name,
            &format!("install the Debian package {package}, or run scripts/test as root"),
        )
    })
}

/// [`require_tool_from`] for `(tool, package)` pairs.
#[track_caller]
pub fn require_tools_from(pairs: &[(&str, &str)]) {
    for (t, p) in pairs {
        require_tool_from(t, p);
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A test fails unless it runs as root (`what` says what needs it).
#[track_caller]
pub fn require_root(what: &str) {
    if !is_root() {
        missing(&format!("root (for {what})"), "run as root");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_by_name_and_run_by_path() {
        let sh = find_tool("sh").expect("sh is installed");
        assert!(sh.is_absolute());
        assert_eq!(find_tool("no-such-tool-testkit"), None);
        let out = crate::run_ok("sh", &["-c", "echo $LC_ALL"]);
        assert_eq!(crate::stdout(&out), "C\n");
        let out = crate::run(&sh, &["-c", "exit 3"]);
        crate::assert_exit(&out, 3, "sh");
    }

    #[test]
    fn a_missing_tool_fails_the_test_and_says_so() {
        let err = std::panic::catch_unwind(|| require_tool("no-such-tool-testkit")).unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a formatted panic");
        assert!(msg.contains("no-such-tool-testkit is missing"), "{msg}");
        let err = std::panic::catch_unwind(|| {
            require_tools_from(&[("sh", "dash"), ("no-such-tool-testkit", "nothing")])
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a formatted panic");
        assert!(msg.contains("Debian package nothing"), "{msg}");
    }
}
