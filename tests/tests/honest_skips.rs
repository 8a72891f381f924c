//! The rule of honest skips (README, "Tests"; testkit/src/tools.rs) kept
//! true over the workspace's sources: a test that cannot run here is
//! `#[ignore = "needs …"]`, never a printed skip and a pass; a root test is
//! named `as_root_*` (scripts/test leaves those out by name when not root);
//! and the tests scripts/test leaves out by name exist.

#![forbid(unsafe_code)]

use sealed_image_tests::workspace;
use std::path::{Path, PathBuf};

/// Every `.rs` file of the workspace's crates (not `target/`).
fn sources() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&workspace(), &mut v);
    v.sort();
    assert!(v.len() > 50, "found only {} sources", v.len());
    v
}

/// `(file, reason, test name)` of every `#[ignore…]` attribute (a line
/// that starts with one).
fn ignored() -> Vec<(PathBuf, String, String)> {
    let mut out = Vec::new();
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let attr = line.trim();
            if !attr.starts_with("#[ignore") {
                continue;
            }
            let reason = attr
                .split_once("= \"")
                .and_then(|(_, r)| r.strip_suffix("\"]"))
                .unwrap_or("")
                .to_string();
            let name = lines[i + 1..]
                .iter()
                .find_map(|l| l.trim().strip_prefix("fn "))
                .map(|f| f.split('(').next().unwrap().to_string())
                .unwrap_or_default();
            out.push((p.clone(), reason, name));
        }
    }
    out
}

#[test]
fn every_ignored_test_names_what_it_needs() {
    let all = ignored();
    assert!(all.len() >= 50, "only {} ignored tests found", all.len());
    for (p, reason, name) in &all {
        if p.ends_with("tests/tests/honest_skips.rs") {
            continue;
        }
        assert!(
            reason.starts_with("needs ") && reason.contains("scripts/test runs it"),
            "{}: {name}: #[ignore] without a \"needs …; scripts/test runs it\" reason: {reason:?}",
            p.display()
        );
        let root = reason.starts_with("needs root") || reason.contains(", root");
        assert_eq!(
            root,
            name.starts_with("as_root_"),
            "{}: {name}: a test that needs root is named as_root_* (and only it): {reason:?}",
            p.display()
        );
    }
}

#[test]
fn a_root_test_is_ignored() {
    let ignored: Vec<String> = ignored().into_iter().map(|(_, _, n)| n).collect();
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("fn as_root_") else {
                continue;
            };
            let name = format!("as_root_{}", rest.split('(').next().unwrap());
            assert!(
                ignored.contains(&name),
                "{}: {name} needs root but is not #[ignore]d",
                p.display()
            );
        }
    }
}

#[test]
fn the_tests_scripts_test_leaves_out_by_name_exist() {
    let script = std::fs::read_to_string(workspace().join("scripts/test")).unwrap();
    let names: Vec<String> = ignored().into_iter().map(|(_, _, n)| n).collect();
    let mut filters = 0;
    for line in script.lines() {
        let line = line.trim_start();
        let Some(rest) = line
            .strip_prefix("skip \"")
            .or_else(|| line.split_once(" skip \"").map(|(_, r)| r))
        else {
            continue;
        };
        let (_, list) = rest.split_once('"').unwrap();
        for filter in list.split_whitespace() {
            filters += 1;
            assert!(
                names.iter().any(|n| n.starts_with(filter)),
                "scripts/test leaves out {filter}, which names no ignored test"
            );
        }
    }
    assert!(
        filters >= 5,
        "found {filters} names in scripts/test's skip lines"
    );
}

#[test]
fn no_test_prints_a_skip_and_passes() {
    let patterns = [
        concat!("eprintln!(\"", "skip"),
        concat!("eprintln!(\"", "SKIP"),
        concat!("eprintln!(\"", "Skip"),
    ];
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        for pat in patterns {
            assert!(
                !text.contains(pat),
                "{}: a printed skip; mark the test #[ignore = \"needs …\"] and require what it needs",
                p.display()
            );
        }
    }
}
