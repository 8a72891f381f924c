//! Outputs are written into a staging directory beside the final one and
//! moved into place only when everything succeeded, so a failed build
//! leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};

pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    /// Create `OUT/.build-NAME.tmp-PID` (and `OUT` itself if needed).
    pub fn new(out: &Path, name: &str) -> std::io::Result<Staging> {
        fs::create_dir_all(out)?;
        let dir = out.join(format!(".build-{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
            committed: false,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Move every staged file into the output directory (renames within one
    /// filesystem), then remove the staging directory.
    pub fn commit(mut self, files: &[String]) -> std::io::Result<Vec<PathBuf>> {
        let mut moved = Vec::new();
        for f in files {
            let to = self.out.join(f);
            fs::rename(self.dir.join(f), &to)?;
            moved.push(to);
        }
        fs::remove_dir_all(&self.dir)?;
        self.committed = true;
        Ok(moved)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
