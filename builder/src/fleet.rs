//! Fleet builds: one image (or one bundle + key) per device, each with its
//! own image key. The base image is assembled once; each device gets a
//! sparse copy of it with only its bundle written into the boot partition.
//! Every device's secrets are collected and sealed before anything is
//! written, so a missing secret on any device fails the whole shard cleanly.

use crate::build::{self, io_err, BuildError};
use crate::devices::Device;
use crate::image::{self, BootSelector};
use crate::output::{sparse, staging::Staging, sums};
use crate::progress::Progress;
use crate::recipe::Recipe;
use crate::seal::{self, KeyMode, Sealed};
use crate::secrets::{self, SecretsError};
use serde::Serialize;
use std::path::PathBuf;

pub struct FleetOptions {
    pub out_dir: PathBuf,
    /// Key mode of devices without a known recipient.
    pub key_mode: KeyMode,
    pub created_at: sealed_firstboot::bundle::Stamp,
    /// Write `DEVICE/sealed-secrets/bundle` (+ key) instead of whole images,
    /// for `inject` or `flash`.
    pub bundles_only: bool,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub devices: Vec<DeviceReport>,
}

#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub dir: PathBuf,
    pub image: Option<PathBuf>,
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
    recipe.validate_layout()?;
    progress.step("collecting and sealing secrets for every device");
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut failures: Vec<(String, SecretsError)> = Vec::new();
    for d in devices {
        let overrides = match crate::store::recipe::device_overrides(recipe, d) {
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
                sealed.push(seal::seal(&contents, &mode, opts.created_at)?);
            }
            Err(e) => failures.push((d.name.clone(), e)),
        }
    }
    if !failures.is_empty() {
        return Err(BuildError::Fleet(failures));
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
        let layout = build::layout(recipe, Vec::new())?;
        image::assemble(&base, &layout)?;
        let index = recipe
            .partitions
            .iter()
            .position(|p| p.secrets)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| BuildError::Invalid("no partition has secrets = true".into()))?;
        let info = image::read_table(&base)?;
        Some(image::find_boot_partition(
            &info,
            &BootSelector::Index(index),
        )?)
    };

    let mut reports = Vec::new();
    let mut moved = Vec::new();
    for (d, s) in devices.iter().zip(&sealed) {
        progress.step(&format!("device {}", d.name));
        let dir = staging.path(&d.name);
        std::fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut files = s.boot_files();
        let result = match &boot {
            Some(part) => {
                let img = dir.join(&img_name);
                sparse::sparse_copy(&base, &img)
                    .map_err(io_err(format!("copying the base image for {}", d.name)))
                    .and_then(|_| {
                        image::fat_write_files(&img, part, &files).map_err(BuildError::from)
                    })
            }
            None => files.iter().try_for_each(|f| {
                let p = dir.join(&f.path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io_err(format!("creating {}", parent.display())))?;
                }
                write_private(&p, &f.data).map_err(io_err(format!("writing {}", p.display())))
            }),
        };
        seal::zeroize_files(&mut files);
        result?;
        let key = s
            .write_key_file(&dir.join(&key_name))
            .map_err(io_err(format!("writing the key of {}", d.name)))?;
        if boot.is_some() {
            sums::write_sums(&dir, std::slice::from_ref(&img_name))
                .map_err(io_err(format!("writing SHA256SUMS of {}", d.name)))?;
        }
        let final_dir = opts.out_dir.join(&d.name);
        reports.push(DeviceReport {
            name: d.name.clone(),
            dir: final_dir.clone(),
            image: boot.as_ref().map(|_| final_dir.join(&img_name)),
            key: key.then(|| final_dir.join(&key_name)),
            key_mode: s.mode.name(),
            bundle_id: s.header.bundle_id_hex(),
        });
        moved.push(d.name.clone());
    }
    let _ = std::fs::remove_file(&base);
    for n in &moved {
        let dest = opts.out_dir.join(n);
        if dest.exists() {
            std::fs::remove_dir_all(&dest)
                .map_err(io_err(format!("replacing {}", dest.display())))?;
        }
    }
    staging.commit(&moved).map_err(io_err(format!(
        "moving outputs into {}",
        opts.out_dir.display()
    )))?;
    Ok(FleetReport { devices: reports })
}

/// A bundle or embedded key file: created 0600.
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
