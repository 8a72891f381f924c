//! Real tools, and what a test does when something it needs is missing:
//! locally it skips with a printed reason, under `CI=true` it fails
//! (scripts/test installs the tools; CI runs the root tests as root).

use std::path::PathBuf;

// The product's own lookup (build-image runs mke2fs and debugfs through
// it), compiled here from its one source file: testkit cannot depend on
// build-image.
#[path = "../../builder/src/host_tools.rs"]
mod host_tools;
pub use host_tools::{find_tool, SBIN_DIRS};

/// Whether the tests run under `CI=true`.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The rule for a test that cannot run here because `what` is missing:
/// under `CI=true` a panic (the test fails); otherwise it prints why it
/// skips and returns `false` (the caller returns).
pub fn unavailable(what: &str, hint: &str) -> bool {
    if ci() {
        panic!("{what} is required under CI=true but missing ({hint})");
    }
    eprintln!("skipping: {what} is missing ({hint})");
    false
}

/// The path of `name`, or `None` after [`unavailable`] said why.
pub fn tool(name: &str) -> Option<PathBuf> {
    find_tool(name).or_else(|| {
        unavailable(name, "not installed");
        None
    })
}

/// Whether `name` is installed; see [`unavailable`] when not.
pub fn require_tool(name: &str) -> bool {
    tool(name).is_some()
}

/// [`require_tool`] for several tools (stops at the first missing one).
pub fn require_tools(names: &[&str]) -> bool {
    names.iter().all(|n| require_tool(n))
}

/// [`require_tool`] naming the Debian package that has the tool.
pub fn require_tool_from(name: &str, package: &str) -> bool {
    find_tool(name).is_some()
        || unavailable(
            name,
            &format!("install the Debian package {package}, or run scripts/test as root"),
        )
}

/// [`require_tool_from`] for `(tool, package)` pairs.
pub fn require_tools_from(pairs: &[(&str, &str)]) -> bool {
    pairs.iter().all(|(t, p)| require_tool_from(t, p))
}

/// Whether the tests run as root; see [`unavailable`] when not (`what`
/// says what needs it).
pub fn require_root(what: &str) -> bool {
    rustix::process::geteuid().is_root() || unavailable(&format!("root for {what}"), "run as root")
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
}
