//! Outputs are written into a staging directory beside the final ones and
//! committed as a set: a failed build leaves the previous outputs
//! untouched, or none, never a mix.
//!
//! `OUT/.build-NAME.tmp-PID` holds the new files. Committing moves every
//! file of the set that exists in `OUT` (the new names, and `also`: the
//! outputs of an earlier build that this one does not write, such as an old
//! `.img.zst`) aside into `OUT/.build-NAME.old-PID`, then moves the new
//! files in; if any step fails, what was moved in is removed and the old
//! files go back. Staging directories left by killed builds (they hold a
//! whole image and its key) are removed by the next run in `OUT`. An `OUT`
//! created for a build that fails is removed again when empty.

use std::fs;
use std::path::{Path, PathBuf};

const PREFIX: &str = ".build-";

pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    name: String,
    created_out: bool,
    committed: bool,
}

impl Staging {
    /// Create `OUT/.build-NAME.tmp-PID` (and `OUT` itself if needed),
    /// after removing the staging directories of dead builds in `OUT`.
    pub fn new(out: &Path, name: &str) -> std::io::Result<Staging> {
        let created_out = !out.exists();
        fs::create_dir_all(out)?;
        remove_dead_leftovers(out);
        let dir = out.join(format!("{PREFIX}{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
            name: name.to_string(),
            created_out,
            committed: false,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Move every staged file (or directory) named in `files` into the
    /// output directory, as a set.
    pub fn commit(self, files: &[String]) -> std::io::Result<Vec<PathBuf>> {
        self.commit_set(files, &[])
    }

    /// [`Staging::commit`], also moving away (and deleting once the new set
    /// is in) the earlier outputs named in `also` that this set replaces.
    pub fn commit_set(
        mut self,
        files: &[String],
        also: &[String],
    ) -> std::io::Result<Vec<PathBuf>> {
        let old = self
            .out
            .join(format!("{PREFIX}{}.old-{}", self.name, std::process::id()));
        let _ = fs::remove_dir_all(&old);
        fs::create_dir(&old)?;
        let mut aside: Vec<&String> = Vec::new();
        let mut moved_in: Vec<&String> = Vec::new();
        let result = (|| -> std::io::Result<()> {
            for f in files.iter().chain(also) {
                if fs::symlink_metadata(self.out.join(f)).is_ok() && !aside.contains(&f) {
                    fs::rename(self.out.join(f), old.join(f))?;
                    aside.push(f);
                }
            }
            for f in files {
                fs::rename(self.dir.join(f), self.out.join(f))?;
                moved_in.push(f);
            }
            Ok(())
        })();
        if let Err(e) = result {
            for f in moved_in {
                let _ = fs::rename(self.out.join(f), self.dir.join(f));
            }
            for f in aside {
                let _ = fs::rename(old.join(f), self.out.join(f));
            }
            let _ = fs::remove_dir_all(&old);
            return Err(e);
        }
        let _ = fs::remove_dir_all(&old);
        fs::remove_dir_all(&self.dir)?;
        self.committed = true;
        Ok(files.iter().map(|f| self.out.join(f)).collect())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
            if self.created_out {
                // Only when empty: never anything a user put there.
                let _ = fs::remove_dir(&self.out);
            }
        }
    }
}

/// Remove `OUT/.build-*.tmp-PID` and `.old-PID` directories whose process
/// is gone (a killed build's image and key must not linger).
fn remove_dead_leftovers(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let Some(pid) = name
            .rsplit_once(".tmp-")
            .or_else(|| name.rsplit_once(".old-"))
            .and_then(|(_, p)| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() as i32
            || rustix::process::Pid::from_raw(pid).is_some_and(|p| {
                !matches!(
                    rustix::process::test_kill_process(p),
                    Err(rustix::io::Errno::SRCH)
                )
            });
        let is_dir = e
            .file_type()
            .map(|t| t.is_dir() && !t.is_symlink())
            .unwrap_or(false);
        if !alive && is_dir {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_commit_restores_the_previous_set() {
        let (_dir, out) = testkit::scratch("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("a.img"), "old image").unwrap();
        fs::write(out.join("a.img.zst"), "old zst").unwrap();
        let s = Staging::new(&out, "a").unwrap();
        fs::write(s.path("a.img"), "new image").unwrap();
        // "SHA256SUMS" is named but was never staged: the commit fails.
        let err = s.commit_set(
            &["a.img".into(), "SHA256SUMS".into()],
            &["a.img.zst".into()],
        );
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(out.join("a.img")).unwrap(), "old image");
        assert_eq!(
            fs::read_to_string(out.join("a.img.zst")).unwrap(),
            "old zst"
        );
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_commit_replaces_the_whole_set_and_dead_leftovers_go() {
        let (dir, out) = testkit::scratch("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("a.img.zst"), "stale").unwrap();
        // A killed build's staging directory (pid 1 never runs a build, but
        // is alive: use an id that cannot exist).
        let dead = out.join(".build-a.tmp-999999999");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("a.key"), "key").unwrap();
        let mine = out.join("keep-me");
        fs::write(&mine, "user file").unwrap();
        let s = Staging::new(&out, "a").unwrap();
        assert!(!dead.exists(), "leftover of a dead build not removed");
        fs::write(s.path("a.img"), "new").unwrap();
        s.commit_set(&["a.img".into()], &["a.img.zst".into()])
            .unwrap();
        assert!(
            !out.join("a.img.zst").exists(),
            "stale output left beside the new set"
        );
        assert_eq!(fs::read_to_string(out.join("a.img")).unwrap(), "new");
        assert!(mine.exists());
        // An output directory created for a failed build is removed again.
        let fresh = dir.path().join("fresh");
        drop(Staging::new(&fresh, "a").unwrap());
        assert!(!fresh.exists());
    }
}
