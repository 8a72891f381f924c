//! Fleet builds: one image (or one bundle + key) per device, each with its
//! own image key. The base image is assembled once; each device gets a
//! sparse copy of it with only its bundle written into the boot partition.
//! Every device's secrets are collected and sealed before anything is
//! written, so a missing secret on any device fails the whole shard cleanly.

use crate::cmd::build::{device_config, pin_signers, AgentSetup};
use crate::cmd::error::{io_err, BuildError};
use crate::cmd::progress::Progress;
use crate::image::{self, PartitionSelector};
use crate::io::sparse;
use crate::output::bmap;
use crate::output::{frames, staging::Staging, sums};
use crate::recipe::devices::Device;
use crate::recipe::plan::Plan;
use crate::recipe::Recipe;
use crate::seal::{self, KeyMode, Sealed};
use crate::secrets::{self, SecretsError};
use serde::Serialize;
use std::path::PathBuf;

/// The file that marks a device directory as made by a fleet build (only
/// such a directory is ever replaced).
pub const DEVICE_DIR_MARKER: &str = ".sealed-image-device";

pub struct FleetOptions {
    pub out_dir: PathBuf,
    /// Key mode of devices without a known recipient.
    pub key_mode: KeyMode,
    pub created_at: sealed_bundle::Stamp,
    /// Write `DEVICE/sealed-secrets/bundle` (+ key) instead of whole images,
    /// for `inject` or `flash`.
    pub bundles_only: bool,
    /// zstd level of each device's `NAME.img.zst`; `None`: no `.img.zst`
    /// (then raw images are written).
    pub zst_level: Option<i32>,
    /// Also write each device's raw `NAME.img`.
    pub raw_images: bool,
    /// Replace a device's existing `NAME.key` (perhaps the only key of an
    /// image already flashed); without it such a device is refused.
    pub force: bool,
    /// Install sealed-firstboot into the base image's root filesystem.
    pub agent: Option<crate::image::agent::AgentRequest>,
    /// How every device's bundle is signed; the base image pins its signer.
    pub signing: crate::seal::signing::Signing,
    /// `SOURCE_DATE_EPOCH`, read once by the caller.
    pub assemble: image::AssembleOptions,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub devices: Vec<DeviceReport>,
}

#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub dir: PathBuf,
    /// The raw image (`--raw-images`, or without `.img.zst`).
    pub image: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_zst: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub key_mode: &'static str,
    pub bundle_id: String,
}

/// Build the given devices (already sharded).
pub fn build_fleet(
    recipe: &Recipe,
    devices: &[Device],
    opts: &FleetOptions,
    progress: &Progress,
) -> Result<FleetReport, BuildError> {
    let plan = Plan::new(recipe)?;
    let paths = recipe.path_policy();
    let how = seal::SealOptions {
        signing: &opts.signing,
        paths: &paths,
    };
    progress.step("collecting and sealing secrets for every device");
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut failures: Vec<(String, SecretsError)> = Vec::new();
    for d in devices {
        let overrides = match crate::secrets::sources::store::device_overrides(recipe, d) {
            Ok(o) => o,
            Err(e) => {
                failures.push((d.name.clone(), SecretsError::Source(e)));
                continue;
            }
        };
        match secrets::collect_with(recipe, &overrides) {
            Ok(contents) => {
                let mode = match &d.recipient {
                    Some(r) => KeyMode::Recipient(r.clone()),
                    None => opts.key_mode.clone(),
                };
                sealed.push(seal::seal(&contents, &mode, opts.created_at, &how)?);
            }
            Err(e) => failures.push((d.name.clone(), e)),
        }
    }
    if !failures.is_empty() {
        return Err(BuildError::Fleet(failures));
    }

    // A device directory that exists must be one this tool made (it holds
    // the marker file): never replace a user's directory named like a
    // device (`--out .` with a device called `home`...).
    for d in devices {
        let dest = opts.out_dir.join(&d.name);
        if std::fs::symlink_metadata(&dest).is_ok()
            && !std::fs::symlink_metadata(dest.join(DEVICE_DIR_MARKER)).is_ok_and(|m| m.is_file())
        {
            return Err(BuildError::OutputExists {
                path: dest,
                hint: "it was not made by a fleet build of build-image (no .sealed-image-device marker); refusing to replace it: choose another --out or remove it",
            });
        }
        let existing_key = dest.join(format!("{}.key", recipe.image.name));
        if !opts.force && std::fs::symlink_metadata(&existing_key).is_ok() {
            return Err(BuildError::OutputExists {
                path: existing_key,
                hint: "it may be the key of an image already written; pass --force to replace it (and the device's other outputs)",
            });
        }
    }
    let name = &recipe.image.name;
    let staging = Staging::new(&opts.out_dir, &format!("fleet-{name}"))
        .map_err(io_err(format!("creating {}", opts.out_dir.display())))?;
    let img_name = format!("{name}.img");
    let key_name = format!("{name}.key");

    let base = staging.path(".base.img");
    let boot = if opts.bundles_only {
        None
    } else {
        progress.step("assembling the base image");
        let layout = plan.layout(Vec::new())?;
        image::assemble_with(&base, &layout, &opts.assemble)?;
        let index = plan.boot_index;
        let agent_setup = AgentSetup {
            agent: opts.agent.as_ref(),
            device: device_config(recipe, &opts.signing),
            epoch: opts.assemble.source_date_epoch,
        };
        let (_, pinned) = pin_signers(&base, &plan, &agent_setup, staging.dir(), progress)?;
        if let Some(w) = agent_setup.warning(pinned) {
            eprintln!("build-image: warning: {w}");
        }
        let info = image::read_table(&base)?;
        Some(image::find_boot_partition(
            &info,
            &PartitionSelector::Index(index),
        )?)
    };

    // Per-device images cost what differs from the base: the base is
    // mapped and compressed once (frame by frame), each device's bundle is
    // written into a scratch copy of the boot partition, and the blocks that
    // changed make the device's .img.zst (base frames reused) and .bmap
    // (base range hashes reused). Devices run in parallel.
    let raw = opts.raw_images || opts.zst_level.is_none();
    let shared = match &boot {
        Some(_) => {
            progress.step("mapping and compressing the base image");
            let (size, ranges) =
                bmap::ranges_of(&base).map_err(io_err("mapping the base image".into()))?;
            let frames = match opts.zst_level {
                Some(level) => Some(
                    frames::compress_base(&base, &staging.path(".base.frames"), level, 0)
                        .map_err(io_err("compressing the base image".into()))?,
                ),
                None => None,
            };
            Some((size, ranges, frames))
        }
        None => None,
    };
    let work = |d: &Device, s: &Sealed| -> Result<DeviceReport, BuildError> {
        let dir = staging.path(&d.name);
        std::fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        std::fs::write(
            dir.join(DEVICE_DIR_MARKER),
            "made by build-image build --devices; replaced by the next fleet build\n",
        )
        .map_err(io_err(format!("writing the marker in {}", dir.display())))?;
        let mut files = s.boot_files();
        let final_dir = opts.out_dir.join(&d.name);
        let mut report = DeviceReport {
            name: d.name.clone(),
            dir: final_dir.clone(),
            image: None,
            image_zst: None,
            bmap: None,
            key: None,
            key_mode: s.mode.name(),
            bundle_id: s.header.bundle_id_hex(),
        };
        let result = (|| -> Result<(), BuildError> {
            match (&boot, &shared) {
                (Some(part), Some((size, base_ranges, frames))) => {
                    let scratch_part = image::PartInfo {
                        start: 0,
                        ..part.clone()
                    };
                    let overlay = frames::overlay_of(
                        &base,
                        part.start,
                        part.size,
                        staging.dir(),
                        |scratch| image::fat_write_files(scratch, &scratch_part, &files),
                    )?;
                    let mut known = Vec::new();
                    if let Some(frames) = frames {
                        let zst_name = format!("{img_name}.zst");
                        let sha =
                            frames::write_device_zst(&base, frames, &overlay, &dir.join(&zst_name))
                                .map_err(io_err(format!("writing {zst_name} of {}", d.name)))?;
                        known.push((zst_name.clone(), Some(sha)));
                        report.image_zst = Some(final_dir.join(&zst_name));
                    }
                    let bmap_name = format!("{name}.bmap");
                    let ranges = frames::device_ranges(&base, *size, base_ranges, &overlay)
                        .map_err(io_err(format!("mapping the image of {}", d.name)))?;
                    bmap::write_ranges(&dir.join(&bmap_name), *size, &ranges)
                        .map_err(io_err(format!("writing {bmap_name} of {}", d.name)))?;
                    known.push((bmap_name.clone(), None));
                    report.bmap = Some(final_dir.join(&bmap_name));
                    if raw {
                        let img = dir.join(&img_name);
                        sparse::sparse_copy(&base, &img)
                            .map_err(io_err(format!("copying the base image for {}", d.name)))?;
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&img)
                            .map_err(io_err(format!("opening the image of {}", d.name)))?;
                        use std::os::unix::fs::FileExt;
                        for (o, b) in &overlay.blocks {
                            f.write_all_at(b, *o)
                                .map_err(io_err(format!("writing the image of {}", d.name)))?;
                        }
                        known.insert(0, (img_name.clone(), None));
                        report.image = Some(final_dir.join(&img_name));
                    }
                    sums::write_sums_known(&dir, &known)
                        .map_err(io_err(format!("writing SHA256SUMS of {}", d.name)))?;
                    Ok(())
                }
                _ => files.iter().try_for_each(|f| {
                    let p = dir.join(&f.path);
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(io_err(format!("creating {}", parent.display())))?;
                    }
                    crate::seal::write_private(&p, &f.data)
                        .map_err(io_err(format!("writing {}", p.display())))
                }),
            }
        })();
        seal::zeroize_files(&mut files);
        result?;
        let key = s
            .write_key_file(&dir.join(&key_name))
            .map_err(io_err(format!("writing the key of {}", d.name)))?;
        report.key = key.then(|| final_dir.join(&key_name));
        Ok(report)
    };
    let threads = crate::io::worker_threads().min(devices.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<DeviceReport, BuildError>>>> =
        std::sync::Mutex::new((0..devices.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (Some(d), Some(s)) = (devices.get(i), sealed.get(i)) else {
                    break;
                };
                let r = work(d, s);
                let failed = r.is_err();
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                if failed {
                    // Stop handing out work; the others finish theirs.
                    next.store(devices.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let mut reports = Vec::new();
    let mut moved = Vec::new();
    for (i, r) in results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .enumerate()
    {
        match r {
            Some(r) => {
                reports.push(r?);
                moved.push(devices[i].name.clone());
            }
            None => {
                return Err(BuildError::Invalid(format!(
                    "device {} was not built (an earlier device failed)",
                    devices[i].name
                )))
            }
        }
    }
    let _ = std::fs::remove_file(&base);
    let _ = std::fs::remove_file(staging.path(".base.frames"));
    // Earlier device directories (checked to be ours above) are replaced
    // as a set with the new ones.
    // Without --force, a device directory that got a key meanwhile (a
    // concurrent build) is kept, and the commit fails.
    let keep = crate::output::staging::Keep {
        files: Vec::new(),
        inside: (!opts.force).then(|| key_name.clone()),
    };
    staging
        .commit_keeping(&moved, &[], &keep)
        .map_err(io_err(format!(
            "moving outputs into {}",
            opts.out_dir.display()
        )))?;
    Ok(FleetReport { devices: reports })
}
