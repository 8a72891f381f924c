//! Scratch space for one test.

use std::path::PathBuf;

/// A fresh temporary directory (removed when the returned guard drops) and
/// the path `name` inside it, not yet created.
pub fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}
