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
    pub fn commit_set(self, files: &[String], also: &[String]) -> std::io::Result<Vec<PathBuf>> {
        self.commit_keeping(files, also, &Keep::default())
    }

    /// [`Staging::commit_set`] that never replaces a key: the names in
    /// `keep.files` go in with `RENAME_NOREPLACE` (and are never moved
    /// aside), and an earlier output moved aside that holds a file named
    /// `keep.inside` is not deleted: the commit fails and everything goes
    /// back. A key written meanwhile by a concurrent build survives; the
    /// error is [`std::io::ErrorKind::AlreadyExists`] naming it.
    pub fn commit_keeping(
        mut self,
        files: &[String],
        also: &[String],
        keep: &Keep,
    ) -> std::io::Result<Vec<PathBuf>> {
        let old = self
            .out
            .join(format!("{PREFIX}{}.old-{}", self.name, std::process::id()));
        let _ = fs::remove_dir_all(&old);
        fs::create_dir(&old)?;
        let mut aside: Vec<&String> = Vec::new();
        let mut moved_in: Vec<&String> = Vec::new();
        let exists = |p: PathBuf| {
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} appeared meanwhile (another build?): it is kept",
                    p.display()
                ),
            )
        };
        let result = (|| -> std::io::Result<()> {
            for f in files.iter().chain(also) {
                if keep.files.contains(f) {
                    continue;
                }
                if fs::symlink_metadata(self.out.join(f)).is_ok() && !aside.contains(&f) {
                    fs::rename(self.out.join(f), old.join(f))?;
                    aside.push(f);
                    if let Some(inside) = &keep.inside {
                        if fs::symlink_metadata(old.join(f).join(inside)).is_ok() {
                            return Err(exists(self.out.join(f).join(inside)));
                        }
                    }
                }
            }
            for f in files {
                if keep.files.contains(f) {
                    if !rename_noreplace(&self.dir.join(f), &self.out.join(f))? {
                        return Err(exists(self.out.join(f)));
                    }
                } else {
                    fs::rename(self.dir.join(f), self.out.join(f))?;
                }
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

/// What a commit must never replace (see [`Staging::commit_keeping`]).
#[derive(Default)]
pub struct Keep {
    pub files: Vec<String>,
    pub inside: Option<String>,
}

/// Rename `from` to `to` unless `to` exists (`RENAME_NOREPLACE`): false
/// when it does.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
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
        assert!(matches!(err, Err(e) if e.kind() == std::io::ErrorKind::NotFound));
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

    /// A key that appears between a build's check and its commit (a
    /// concurrent build) is never replaced or deleted: the commit fails and
    /// the earlier set is back.
    #[test]
    fn a_key_written_meanwhile_is_kept() {
        let (_dir, out) = testkit::scratch("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("a.img"), "old image").unwrap();
        let s = Staging::new(&out, "a").unwrap();
        fs::write(s.path("a.img"), "new image").unwrap();
        fs::write(s.path("a.key"), "new key").unwrap();
        fs::write(out.join("a.key"), "the other build's key").unwrap();
        let keep = Keep {
            files: vec!["a.key".into()],
            inside: None,
        };
        let e = s
            .commit_keeping(&["a.img".into(), "a.key".into()], &[], &keep)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs::read(out.join("a.key")).unwrap(),
            b"the other build's key"
        );
        assert_eq!(fs::read(out.join("a.img")).unwrap(), b"old image");
        // A device directory that got a key meanwhile: kept whole.
        fs::create_dir(out.join("dev1")).unwrap();
        fs::write(out.join("dev1/a.key"), "dev key").unwrap();
        let s = Staging::new(&out, "f").unwrap();
        fs::create_dir(s.path("dev1")).unwrap();
        fs::write(s.path("dev1/a.key"), "new").unwrap();
        let keep = Keep {
            files: Vec::new(),
            inside: Some("a.key".into()),
        };
        assert!(
            matches!(s.commit_keeping(&["dev1".into()], &[], &keep), Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read(out.join("dev1/a.key")).unwrap(), b"dev key");
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
