//! Step 2 of a flash: the target, resolved (symlinks followed: messages
//! name the real device), checked (never one of the inputs; a block device
//! by [`super::safety`]) and opened: exclusive for a device, fresh and
//! sparse for a file.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::inputs::Inputs;
use super::safety::{check_block_device, DevNum, SysRoots};
use super::{write, FlashError, FlashOptions};

/// A target that passed the checks.
pub(super) struct Checked {
    /// The real path (symlinks resolved).
    pub real: PathBuf,
    /// How messages name it: as given, with the real path where it differs.
    pub shown: PathBuf,
    pub is_block: bool,
}

impl Checked {
    /// Resolve and check `target` for `inputs`. A block device is checked
    /// against the image's size, measured here for a compressed image
    /// without a bmap (then known in `inputs.image_size`).
    pub fn check(
        target: &Path,
        inputs: &mut Inputs<'_>,
        opts: &FlashOptions,
        roots: &SysRoots,
    ) -> Result<Checked, FlashError> {
        let resolved = resolve_target(target)?;
        let real = match &resolved {
            Target::Block { real, .. } | Target::File { real } => real.clone(),
        };
        let shown = write::shown(target, &real);
        for (what, input) in inputs.files(opts) {
            if same_file(&real, input) {
                return Err(FlashError::TargetIsInput {
                    target: shown,
                    what,
                    input: input.to_path_buf(),
                });
            }
        }
        if let Target::Block { dev, .. } = &resolved {
            let bt = check_block_device(*dev, &shown, inputs.image_size, opts.yes, roots)?;
            if inputs.image_size.is_none() {
                let b = crate::cmd::progress::bytes(opts.progress, None, "measuring the image");
                let n = write::measure_stream(inputs.image, inputs.format, &b).map_err(|e| {
                    FlashError::ImageRead {
                        image: inputs.image.to_path_buf(),
                        offset: 0,
                        cause: e,
                    }
                })?;
                b.finish_and_clear();
                if bt.size < n {
                    return Err(FlashError::TargetTooSmall {
                        target: shown,
                        target_size: bt.size,
                        image_size: n,
                    });
                }
                inputs.image_size = Some(n);
            }
        }
        Ok(Checked {
            real,
            shown,
            is_block: matches!(resolved, Target::Block { .. }),
        })
    }

    pub fn io_err(&self, what: &str, e: io::Error) -> FlashError {
        FlashError::TargetIo {
            target: self.shown.clone(),
            what: what.to_string(),
            cause: e,
        }
    }

    /// Open the target for writing an image of `image_size` bytes (when
    /// known): a block device exclusively (`O_EXCL`: the kernel refuses
    /// while anything holds it), at least that large; a file fresh, 0600,
    /// sparse, and an existing one only when it is an earlier flash output
    /// or with `force`.
    pub fn open(&self, image_size: Option<u64>, force: bool) -> Result<File, FlashError> {
        if self.is_block {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
                .open(&self.real)
                .map_err(|e| {
                    if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
                        FlashError::Busy {
                            target: self.shown.clone(),
                            cause: e,
                        }
                    } else {
                        self.io_err("cannot open for writing", e)
                    }
                })?;
            let size = (&f)
                .seek(SeekFrom::End(0))
                .map_err(|e| self.io_err("cannot get the device size", e))?;
            if let Some(need) = image_size {
                if size < need {
                    return Err(FlashError::TargetTooSmall {
                        target: self.shown.clone(),
                        target_size: size,
                        image_size: need,
                    });
                }
            }
            return Ok(f);
        }
        // A file target holds the bundle (and with --key the key): 0600,
        // and an existing file is overwritten only when it is an earlier
        // flash output (marked with an xattr) or with --force.
        if let Ok(m) = std::fs::metadata(&self.real) {
            if m.len() > 0 && !force && !is_flash_output(&self.real) {
                return Err(FlashError::TargetFileExists {
                    target: self.shown.clone(),
                });
            }
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.real)
            .map_err(|e| self.io_err("cannot create", e))?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| self.io_err("cannot set the mode of", e))?;
        mark_flash_output(&f);
        if let Some(n) = image_size {
            f.set_len(n).map_err(|e| self.io_err("cannot size", e))?;
        }
        Ok(f)
    }
}

/// The extended attribute that marks a file as written by `flash`.
const FLASH_OUTPUT_XATTR: &str = "user.sealed-image.flash-output";

fn is_flash_output(path: &Path) -> bool {
    let mut buf = [0u8; 8];
    rustix::fs::getxattr(path, FLASH_OUTPUT_XATTR, &mut buf[..]).is_ok()
}

/// Best effort: a filesystem without user xattrs only means the next flash
/// onto this file needs --force.
fn mark_flash_output(f: &File) {
    let _ = rustix::fs::fsetxattr(f, FLASH_OUTPUT_XATTR, b"1", rustix::fs::XattrFlags::empty());
}

/// A resolved target.
enum Target {
    Block { real: PathBuf, dev: DevNum },
    File { real: PathBuf },
}

fn resolve_target(target: &Path) -> Result<Target, FlashError> {
    let io_err = |what: &str, e| FlashError::TargetIo {
        target: target.to_path_buf(),
        what: what.to_string(),
        cause: e,
    };
    match std::fs::metadata(target) {
        Ok(md) => {
            let real = std::fs::canonicalize(target).map_err(|e| io_err("cannot resolve", e))?;
            let ft = md.file_type();
            if ft.is_block_device() {
                Ok(Target::Block {
                    real,
                    dev: DevNum::from_raw(md.rdev()),
                })
            } else if ft.is_file() && real.starts_with("/dev") {
                // Left by an earlier copy to an absent device: writing it
                // would only fill memory, never a disk.
                Err(FlashError::TargetKind {
                    target: write::shown(target, &real),
                    kind: "a regular file under /dev, not a device (left by an earlier copy \
                           to an absent disk?)",
                })
            } else if ft.is_file() {
                Ok(Target::File { real })
            } else {
                Err(FlashError::TargetKind {
                    target: write::shown(target, &real),
                    // Not a block device and not a regular file.
                    kind: sealed_bundle::io::not_regular(md.mode()).unwrap_or("not a regular file"),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(target).is_ok() {
                // A dangling symlink (a /dev/disk/by-id link of an unplugged device).
                return Err(FlashError::TargetMissing {
                    target: target.to_path_buf(),
                });
            }
            let name = target.file_name().ok_or_else(|| FlashError::TargetKind {
                target: target.to_path_buf(),
                kind: "not a file name",
            })?;
            let parent = match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let parent = std::fs::canonicalize(parent)
                .map_err(|e| io_err("cannot resolve the folder", e))?;
            if parent.starts_with("/dev") {
                return Err(FlashError::TargetMissing {
                    target: target.to_path_buf(),
                });
            }
            Ok(Target::File {
                real: parent.join(name),
            })
        }
        Err(e) => Err(io_err("cannot stat", e)),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
