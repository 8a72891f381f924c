//! A crate's module graph, read from its source files, for the
//! architecture tests: which module refers to which (`crate::a::b`,
//! `super::x`), and that the references never go round in a circle.
//!
//! ```no_run
//! let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
//! let graph = testkit::modules::import_graph(&src);
//! testkit::modules::assert_no_cycles(&testkit::modules::top_level(&graph));
//! ```
//!
//! Modules are named by their path below `src` (`runtime/links.rs` is
//! `runtime::links`, `store/mod.rs` is `store`); the crate root (`lib.rs`,
//! `main.rs`, `bin/…`) is left out. Only `crate::…` and `super::…` paths
//! count (a child module named without `crate::` from its parent is not a
//! reference between two modules), comments are skipped, and so is test
//! code: a module named `tests` and everything from a `#[cfg(test)]` line
//! on, since tests may use any module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it refers to (never itself).
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of the modules under `src`, each reference resolved to the
/// longest known module it names (`crate::bundle::open::f` is
/// `bundle::open` when that module exists, else `bundle`).
pub fn import_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, text) in &files {
        let refs = graph.entry(module.clone()).or_default();
        for path in references(module, text) {
            if let Some(target) = resolve(&path, &modules) {
                if target != *module {
                    refs.insert(target);
                }
            }
        }
    }
    graph
}

/// The graph between top-level modules: `runtime::links → store` is
/// `runtime → store`; references inside one top-level module are dropped.
pub fn top_level(graph: &Graph) -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut out = Graph::new();
    for (from, tos) in graph {
        let f = top(from);
        let entry = out.entry(f.clone()).or_default();
        for to in tos {
            let t = top(to);
            if t != f {
                entry.insert(t);
            }
        }
    }
    out
}

/// A circle of references (`a → b → … → a`), if there is one.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    // Depth-first search; `on_path` is the current chain.
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        on_path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = on_path.iter().position(|n| n == node) {
            let mut cycle = on_path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        on_path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, on_path) {
                return Some(c);
            }
        }
        on_path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Panic with the circle (and the whole graph) when there is one.
pub fn assert_no_cycles(graph: &Graph) {
    if let Some(cycle) = find_cycle(graph) {
        let listing: Vec<String> = graph
            .iter()
            .map(|(m, refs)| {
                let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
                format!("  {m} → {}", refs.join(", "))
            })
            .collect();
        panic!(
            "modules refer to each other in a circle: {}\nthe graph:\n{}",
            cycle.join(" → "),
            listing.join("\n")
        );
    }
}

fn collect(src: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.strip_prefix(src).is_ok_and(|r| r == Path::new("bin")) {
                continue;
            }
            collect(src, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let Some(module) = module_name(src, &path) else {
            continue;
        };
        if module.split("::").any(|c| c == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        out.push((module, text));
    }
}

/// `runtime/links.rs` → `runtime::links`; `store/mod.rs` → `store`;
/// `lib.rs` and `main.rs` → none.
fn module_name(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.is_empty() || (parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main")) {
        return None;
    }
    Some(parts.join("::"))
}

/// Every `crate::…`/`super::…` path of `text` (outside comments and test
/// code) as an absolute module path (`a::b::c`), including each name of a
/// `use crate::a::{b, c::d}` group.
fn references(module: &str, text: &str) -> Vec<String> {
    let mut code = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        code.push_str(line.split("//").next().unwrap_or_default());
        code.push('\n');
    }
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let base = if !starts_word {
            None
        } else if rest.starts_with(b"crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with(b"super::") {
            let mut parts: Vec<&str> = module.split("::").collect();
            let mut n = 0;
            while bytes[i + n..].starts_with(b"super::") {
                parts.pop();
                n += "super::".len();
            }
            Some((parts.iter().map(|s| s.to_string()).collect(), n))
        } else {
            None
        };
        match base {
            Some((prefix, skip)) => {
                let (paths, used) = parse_tree(&code[i + skip..]);
                for p in paths {
                    let mut full = prefix.clone();
                    full.extend(p);
                    out.push(full.join("::"));
                }
                i += skip + used.max(1);
            }
            None => i += 1,
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A path after `crate::`: `a::b::f`, or a group `a::{b, c::{d}}`; returns
/// every path it names and how many bytes it took.
fn parse_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut prefix = Vec::new();
    loop {
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if i > start {
            prefix.push(s[start..i].to_string());
        }
        if bytes[i..].starts_with(b"::") {
            i += 2;
            if bytes[i..].starts_with(b"{") {
                i += 1;
                let mut out = Vec::new();
                loop {
                    while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                        i += 1;
                    }
                    if i >= bytes.len() || bytes[i] == b'}' {
                        i += 1;
                        break;
                    }
                    let (paths, used) = parse_tree(&s[i..]);
                    for p in paths {
                        let mut full = prefix.clone();
                        full.extend(p);
                        out.push(full);
                    }
                    i += used.max(1);
                    // Skip an `as name` and anything else up to , or }.
                    while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                        i += 1;
                    }
                }
                return (out, i);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|p| modules.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_groups_and_super_are_resolved() {
        let refs = references(
            "runtime::links",
            "use crate::a::{b, c::{d, e as f}};\nlet s = \"…\";\nuse super::pending;\n// crate::not\nlet x = crate::g::h(1);\n#[cfg(test)]\nuse crate::late;",
        );
        assert_eq!(
            refs,
            ["a::b", "a::c::d", "a::c::e", "runtime::pending", "g::h"]
        );
    }

    #[test]
    fn a_circle_is_found_and_a_line_is_not() {
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        g.entry("c".into()).or_default();
        assert_eq!(find_cycle(&g), None);
        g.get_mut("c").unwrap().insert("a".into());
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    }
}
