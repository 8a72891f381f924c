//! `build-image inject`: seal the recipe's secrets into an existing image
//! (`.img` or `.img.zst`, GPT or MBR) by writing into its FAT boot partition
//! in place: no root, no loop devices, no mounting. Every byte outside the
//! files written stays as it was.
//!
//! The work happens on a sparse copy beside the output, renamed into place
//! at the end, so a failure (or `--in-place`) never leaves a half-written
//! image behind.

use crate::cmd::error::{io_err, BuildError};
use crate::cmd::progress::Progress;
use crate::cmd::report::SealedImage;
use crate::image::{self, PartitionSelector};
use crate::io::compressed::{Format, ImageName};
use crate::io::sparse;
use crate::output::manifest;
use crate::output::zst;
use crate::recipe::devices::Override;
use crate::recipe::Recipe;
use crate::seal::{self, KeyMode};
use crate::secrets;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;

use std::path::{Path, PathBuf};

pub struct InjectOptions {
    /// Output image; default `NAME.sealed.img[.zst]` beside the input.
    pub output: Option<PathBuf>,
    /// Replace the input image (atomically) instead of writing a new one.
    pub in_place: bool,
    pub selector: PartitionSelector,
    pub key_mode: KeyMode,
    pub created_at: sealed_bundle::Stamp,
    /// Install sealed-firstboot into the image's root filesystem too (its
    /// configuration then pins the signer).
    pub agent: Option<image::agent::AgentRequest>,
    /// How the bundle is signed.
    pub signing: crate::seal::signing::Signing,
    /// `SOURCE_DATE_EPOCH`, read once by the caller.
    pub assemble: image::AssembleOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct InjectReport {
    #[serde(flatten)]
    pub sealed: SealedImage,
    /// The output image is zstd-compressed.
    pub compressed: bool,
    /// The partition the bundle went into.
    pub boot_partition: u32,
}

/// `foo.img.zst` → (`foo`, zstd); `foo.img.xz` → (`foo`, xz); `foo.img`
/// and `foo` → (`foo`, raw): [`ImageName`] of the file name.
fn split_name(path: &Path) -> (String, Format) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = ImageName::parse(&name);
    (n.stem.to_string(), n.format)
}

/// Where the output image and key go. A `.img.zst` input gives a
/// `.sealed.img.zst`; a `.img.xz` input (build-image writes no xz) a sparse
/// `.sealed.img`.
pub fn output_paths(input: &Path, opts: &InjectOptions) -> (PathBuf, PathBuf) {
    let (stem, suffix) = split_name(input);
    let dir = input.parent().unwrap_or(Path::new("."));
    let output = if opts.in_place {
        input.to_path_buf()
    } else {
        opts.output.clone().unwrap_or_else(|| {
            dir.join(format!(
                "{stem}.sealed.img{}",
                if suffix == Format::Zstd { ".zst" } else { "" }
            ))
        })
    };
    let (out_stem, _) = split_name(&output);
    let key = output
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{out_stem}.key"));
    (output, key)
}

/// Seal the recipe's secrets into `input`.
pub fn inject(
    recipe: &Recipe,
    input: &Path,
    opts: &InjectOptions,
    overrides: &BTreeMap<String, Override>,
    progress: &Progress,
) -> Result<InjectReport, BuildError> {
    let (output, key_path) = output_paths(input, opts);
    // The output's format follows its name: `-o x.img.zst` writes zstd
    // whatever the input was.
    let out_compressed = match split_name(&output).1 {
        Format::Zstd => true,
        Format::Raw => false,
        Format::Xz => {
            return Err(BuildError::Invalid(format!(
                "{}: build-image does not write xz; name the output .img or .img.zst",
                output.display()
            )))
        }
    };
    if output.exists() && !opts.in_place {
        return Err(BuildError::OutputExists {
            path: output,
            hint: "remove it, choose --output, or use --in-place",
        });
    }
    if matches!(opts.key_mode, KeyMode::Separate) && key_path.exists() {
        return Err(BuildError::OutputExists {
            path: key_path,
            hint: "it may be the key of another image; refusing to overwrite it",
        });
    }
    fs::metadata(input).map_err(io_err(format!("reading {}", input.display())))?;
    // The input's format from its magic number, not its name.
    let format = crate::io::compressed::Format::detect(input)
        .map_err(io_err(format!("reading {}", input.display())))?;
    let compressed = format.is_compressed();

    progress.step("collecting secrets");
    let contents = secrets::collect_with(recipe, overrides)?;
    let paths = recipe.path_policy();
    let how = seal::SealOptions {
        signing: &opts.signing,
        paths: &paths,
    };
    let sealed = seal::seal(&contents, &opts.key_mode, opts.created_at, &how)?;
    let secrets = manifest::secrets_from(recipe, &contents.manifest);
    let device = crate::cmd::build::device_config(recipe, &opts.signing);
    let contents_paths: Vec<(String, String)> = contents
        .manifest
        .entries()
        .map(|e| (e.name.clone(), e.path.clone()))
        .collect();
    drop(contents);

    let dir = output.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let work = Temp(dir.join(format!(".inject-{}.img.tmp", std::process::id())));
    progress.step("copying the image");
    if compressed {
        fs::File::open(input)
            .and_then(|f| crate::io::compressed::decoder(f, format))
            .and_then(|mut r| crate::io::sparse_write::copy_to_sparse_file(&mut r, &work.0))
            .map_err(io_err(format!("decompressing {}", input.display())))?;
    } else {
        sparse::sparse_copy(input, &work.0)
            .map_err(io_err(format!("copying {}", input.display())))?;
    }

    // The working copy must be writable whatever the input's mode (a
    // read-only input works for a non-root user); the output gets the
    // input's mode back.
    let input_mode = fs::metadata(input)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    fs::set_permissions(
        &work.0,
        std::os::unix::fs::PermissionsExt::from_mode(input_mode | 0o600),
    )
    .map_err(io_err(format!("writing {}", output.display())))?;

    progress.step("writing the boot partition");
    // Errors name the user's image, never the working copy.
    let in_image = |message: String| BuildError::InImage {
        image: input.to_path_buf(),
        message: message.replace(&work.0.display().to_string(), &input.display().to_string()),
    };
    let named = |e: image::ImageError| in_image(e.to_string());
    let info = image::read_table(&work.0).map_err(named)?;
    let part = image::find_boot_partition(&info, &opts.selector).map_err(named)?;
    let agent = match &opts.agent {
        Some(req) => {
            progress.step("installing sealed-firstboot");
            let epoch = opts.assemble.source_date_epoch;
            Some(
                image::agent::install(&work.0, &info, &part, req, &device, dir, epoch)
                    .map_err(|e| in_image(e.to_string()))?,
            )
        }
        None => {
            refused_by_the_image(&work.0, &info, &part, &sealed, &contents_paths).map_err(|e| {
                match e {
                    Refusal::Agent(e) => in_image(e.to_string()),
                    Refusal::Signer(why) => {
                        crate::seal::signing::SigningError::Conflict(why).into()
                    }
                    Refusal::Path(why) => BuildError::Invalid(why),
                }
            })?;
            None
        }
    };
    let mut files = sealed.boot_files();
    let written = image::fat_write_files(&work.0, &part, &files);
    seal::zeroize_files(&mut files);
    written.map_err(named)?;
    // A key left by an earlier embedded-key injection would be taken for
    // this bundle's key on the device ("wrong image key"): only embedded
    // mode keeps a key on the boot partition.
    if !matches!(opts.key_mode, KeyMode::Embedded) {
        image::fat_remove_file(&work.0, &part, seal::EMBEDDED_KEY_PATH).map_err(named)?;
    }

    let final_tmp = if out_compressed {
        progress.step("compressing");
        let z = Temp(dir.join(format!(".inject-{}.img.zst.tmp", std::process::id())));
        zst::compress_image(&work.0, &z.0, 19, 0)
            .map_err(io_err(format!("compressing {}", output.display())))?;
        z
    } else {
        work
    };
    let key_tmp = Temp(dir.join(format!(".inject-{}.key.tmp", std::process::id())));
    let wrote_key = sealed
        .write_key_file(&key_tmp.0)
        .map_err(io_err(format!("writing {}", key_path.display())))?;
    // Never over a key (one a concurrent run wrote after the check above).
    if wrote_key
        && !crate::output::staging::rename_noreplace(&key_tmp.0, &key_path)
            .map_err(io_err(format!("writing {}", key_path.display())))?
    {
        return Err(BuildError::OutputExists {
            path: key_path,
            hint: "it appeared while this image was written (another run?): it is kept; nothing was written",
        });
    }
    fs::set_permissions(
        &final_tmp.0,
        std::os::unix::fs::PermissionsExt::from_mode(input_mode),
    )
    .map_err(io_err(format!("writing {}", output.display())))?;
    fs::rename(&final_tmp.0, &output).map_err(io_err(format!("writing {}", output.display())))?;

    Ok(InjectReport {
        sealed: SealedImage {
            image: output,
            key: wrote_key.then_some(key_path),
            key_mode: opts.key_mode.name(),
            bundle_id: sealed.header.bundle_id_hex(),
            key_id: sealed.header.key_id.to_string(),
            created_at: sealed.header.created_at,
            signer: sealed.header.signer.map(|s| s.to_string()),
            pinned_signers: if agent.is_some() {
                device.signers.iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
            secrets,
            agent,
        },
        compressed: out_compressed,
        boot_partition: part.index,
    })
}

/// Why the agent already in an image would refuse this bundle.
enum Refusal {
    Agent(image::agent::AgentError),
    Signer(String),
    Path(String),
}

/// Without `--install-agent`, the image's own configuration decides what
/// its device applies: a bundle it would refuse at first boot (unsigned or
/// signed by a key it does not pin, wiped then; a path it does not allow)
/// is refused here, before anything is written. An image whose
/// configuration cannot be read (no ext root, no debugfs) is not checked.
fn refused_by_the_image(
    image: &Path,
    info: &image::DiskInfo,
    part: &image::PartInfo,
    sealed: &seal::Sealed,
    paths: &[(String, String)],
) -> Result<(), Refusal> {
    let Some(config) = image::agent::image_config(image, info, part).map_err(Refusal::Agent)?
    else {
        return Ok(());
    };
    if !config.signers.is_empty() {
        let pinned = config
            .signers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let fix = "sign with a key it pins, or pass --install-agent to pin this one";
        match sealed.header.signer {
            None => {
                return Err(Refusal::Signer(format!(
                    "the image's /etc/sealed-firstboot.conf pins {pinned}: its device would refuse (and wipe) this unsigned bundle at first boot; {fix}"
                )))
            }
            Some(s) if !config.signers.contains(&s) => {
                return Err(Refusal::Signer(format!(
                    "the image's /etc/sealed-firstboot.conf pins {pinned}, not {s}: its device would refuse (and wipe) this bundle at first boot; {fix}"
                )))
            }
            Some(_) => {}
        }
    }
    let policy = config.path_policy();
    for (name, path) in paths {
        if let Err(why) = policy.check(path) {
            return Err(Refusal::Path(format!(
                "secret {name} ({path}): the image's /etc/sealed-firstboot.conf does not allow it: {why}; or pass --install-agent to write the recipe's allow_path lines"
            )));
        }
    }
    Ok(())
}

/// A temporary path removed on drop unless it was renamed away.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
