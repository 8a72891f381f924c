//! A crate's import graph, read from its source: every `crate::a::b…` path
//! (in `use` lines and in code, grouped `crate::{a, b::c}` included; `//`
//! comment lines left out) as an edge from the module of the file that
//! holds it to the module it names. Architecture tests state their layering
//! rules over it: no circle between top-level modules, and which module may
//! not import which.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// One `crate::…` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The file, relative to the source root (`recipe/plan.rs`).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The module path of the file (`["recipe", "plan"]`; `mod.rs` is its
    /// folder, `lib.rs` and `main.rs` are `[]`).
    pub from: Vec<String>,
    /// The path named after `crate::`, up to two segments
    /// (`["image", "layout"]`); lower-case segments only (a type or a
    /// function at the crate root ends it).
    pub to: Vec<String>,
}

impl Import {
    /// The top-level module of the importing file (`""` for the root).
    pub fn from_top(&self) -> &str {
        self.from.first().map(String::as_str).unwrap_or("")
    }

    /// The top-level module named.
    pub fn to_top(&self) -> &str {
        self.to.first().map(String::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} -> crate::{}",
            self.file.display(),
            self.line,
            if self.from.is_empty() {
                "crate".to_string()
            } else {
                self.from.join("::")
            },
            self.to.join("::")
        )
    }
}

/// Every `crate::…` reference in the `.rs` files under `src`, leaving out
/// the folders named in `skip` (relative to `src`, e.g. `bin`: a binary is
/// a crate of its own).
pub fn crate_imports(src: &Path, skip: &[&str]) -> io::Result<Vec<Import>> {
    let mut files = Vec::new();
    walk(src, src, skip, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for rel in files {
        let text = std::fs::read_to_string(src.join(&rel))?;
        let from = module_of(&rel);
        for (i, line) in text.lines().enumerate() {
            for to in paths_in(line) {
                out.push(Import {
                    file: rel.clone(),
                    line: i + 1,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_path_buf();
        if entry.file_type()?.is_dir() {
            if !skip.iter().any(|s| Path::new(s) == rel) {
                walk(root, &path, skip, out)?;
            }
        } else if rel.extension().is_some_and(|e| e == "rs") {
            out.push(rel);
        }
    }
    Ok(())
}

/// The module path of a source file relative to the crate root.
pub fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_string();
        let at_root = parts.is_empty();
        if !(stem == "mod" || (at_root && (stem == "lib" || stem == "main"))) {
            parts.push(stem);
        }
    }
    parts
}

/// The `crate::…` paths of one line (none on a `//` comment line).
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        // `build_image::crate::` does not exist, but `mycrate::` does.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for item in inner.split(',') {
                let path = segments(item.trim());
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let path = segments(after);
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// Up to two lower-case path segments at the start of `s`.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while out.len() < 2 {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let seg = &rest[..end];
        if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        out.push(seg.to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The edges between top-level modules (`from` → `to`, self edges and the
/// crate root left out), each with the references that make it.
pub fn top_level_graph(imports: &[Import]) -> BTreeMap<String, BTreeMap<String, Vec<Import>>> {
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<Import>>> = BTreeMap::new();
    for i in imports {
        let (from, to) = (i.from_top(), i.to_top());
        if from.is_empty() || to.is_empty() || from == to {
            continue;
        }
        graph
            .entry(from.to_string())
            .or_default()
            .entry(to.to_string())
            .or_default()
            .push(i.clone());
    }
    graph
}

/// Every circle between top-level modules, each as the modules along it
/// (`["a", "b", "a"]`), one per strongly connected group.
pub fn circles(imports: &[Import]) -> Vec<Vec<String>> {
    let graph = top_level_graph(imports);
    let nodes: BTreeSet<&String> = graph
        .keys()
        .chain(graph.values().flat_map(|m| m.keys()))
        .collect();
    let mut out = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for start in nodes {
        if seen.contains(start.as_str()) {
            continue;
        }
        if let Some(path) = path_back(&graph, start) {
            for n in &path {
                seen.insert(n.clone());
            }
            out.push(path);
        }
    }
    out
}

/// A path `start → … → start`, if there is one (breadth-first: the
/// shortest).
fn path_back(
    graph: &BTreeMap<String, BTreeMap<String, Vec<Import>>>,
    start: &str,
) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(n) = queue.pop_front() {
        for next in graph.get(&n).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut path = vec![start.to_string()];
                let mut at = n.clone();
                while at != start {
                    path.push(at.clone());
                    at = prev[&at].clone();
                }
                path.push(start.to_string());
                path.reverse();
                return Some(path);
            }
            if !prev.contains_key(next) {
                prev.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

/// The references from any module of `from` to any of `to` (top-level
/// names).
pub fn imports_between<'a>(imports: &'a [Import], from: &[&str], to: &[&str]) -> Vec<&'a Import> {
    imports
        .iter()
        .filter(|i| from.contains(&i.from_top()) && to.contains(&i.to_top()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_use_lines_groups_and_code() {
        assert_eq!(
            paths_in("use crate::image::{FatFile, Layout};"),
            [vec!["image".to_string()]]
        );
        assert_eq!(
            paths_in("use crate::{recipe::plan, io};"),
            [
                vec!["recipe".to_string(), "plan".to_string()],
                vec!["io".to_string()]
            ]
        );
        assert_eq!(
            paths_in("    let x = crate::seal::signing::ENV_KEY; crate::Foo"),
            [vec!["seal".to_string(), "signing".to_string()]]
        );
        assert!(paths_in("/// see [`crate::store`]").is_empty());
        assert!(paths_in("use mycrate::store;").is_empty());
        assert_eq!(module_of(Path::new("recipe/mod.rs")), ["recipe"]);
        assert_eq!(module_of(Path::new("recipe/plan.rs")), ["recipe", "plan"]);
        assert!(module_of(Path::new("lib.rs")).is_empty());
        assert_eq!(module_of(Path::new("child_env.rs")), ["child_env"]);
    }

    #[test]
    fn circles_are_found_and_named() {
        let (dir, src) = crate::scratch("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("a/mod.rs"), "use crate::b::X;\n").unwrap();
        std::fs::write(src.join("b.rs"), "// crate::c\nfn f() { crate::c::g() }\n").unwrap();
        std::fs::write(src.join("c.rs"), "use crate::a;\n").unwrap();
        std::fs::write(src.join("d.rs"), "use crate::a;\n").unwrap();
        std::fs::write(src.join("bin/main.rs"), "use crate::d;\n").unwrap();
        let imports = crate_imports(&src, &["bin"]).unwrap();
        assert_eq!(imports.len(), 4, "{imports:?}");
        assert_eq!(circles(&imports), [["a", "b", "c", "a"]]);
        assert_eq!(imports_between(&imports, &["d"], &["a", "b"]).len(), 1);
        std::fs::write(src.join("c.rs"), "").unwrap();
        assert!(circles(&crate_imports(&src, &["bin"]).unwrap()).is_empty());
        drop(dir);
    }
}
