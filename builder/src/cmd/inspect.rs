//! `build-image inspect`: what an image holds, without revealing values:
//! the partition table, the FAT boot partition, the bundle's clear header
//! and, with the image key, the manifest (names, types, paths, owners).

use crate::cmd::build::{BUNDLE_PATH, EMBEDDED_KEY_PATH};
use crate::image::{self, ImageError, PartitionSelector};
use sealed_bundle::{self as bundle, BundleError, ImageKey, Manifest};
use serde::Serialize;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InspectError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("bundle in {image}: {cause}")]
    Bundle { image: String, cause: BundleError },
    #[error("--key: {0}")]
    Key(BundleError),
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub image: String,
    pub table: String,
    pub disk_id: String,
    pub size: u64,
    pub partitions: Vec<crate::image::PartInfo>,
    /// Index of the FAT partition searched for `sealed-secrets/`.
    pub boot_partition: Option<u32>,
    pub bundle: Option<BundleInfo>,
    /// `sealed-secrets/image.key` is on the boot partition (embedded mode).
    pub embedded_key: bool,
    /// Only with the right key: names, types, paths, owners, modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Serialize)]
pub struct BundleInfo {
    pub size: u64,
    pub format_version: u16,
    pub bundle_id: String,
    pub created_at: u64,
    pub key_id: String,
    /// `image-key` or `age-recipient`.
    pub sealed_to: &'static str,
    /// Who signed it (`sealed-signer1…`), once its signature verified;
    /// absent: unsigned (format 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

pub fn inspect(
    image_path: &Path,
    selector: &PartitionSelector,
    key: Option<&Path>,
) -> Result<Inspection, InspectError> {
    let info = image::read_table(image_path)?;
    let boot = image::find_boot_partition(&info, selector).ok();
    let mut bundle_info = None;
    let mut manifest = None;
    let mut embedded_key = false;
    if let Some(part) = &boot {
        embedded_key = image::fat_read_file(image_path, part, EMBEDDED_KEY_PATH)?.is_some();
        if let Some(bytes) = image::fat_read_file(image_path, part, BUNDLE_PATH)? {
            let bundle_err = |source| InspectError::Bundle {
                image: image_path.display().to_string(),
                cause: source,
            };
            // The signature must verify with the signer the header names
            // (which signers a device pins is the device's business).
            let header = bundle::verify(&bytes, &bundle::Policy::default()).map_err(bundle_err)?;
            bundle_info = Some(BundleInfo {
                size: bytes.len() as u64,
                format_version: header.version,
                bundle_id: header.bundle_id_hex(),
                created_at: header.created_at,
                key_id: header.key_id.to_string(),
                sealed_to: if header.is_age_recipient() {
                    "age-recipient"
                } else {
                    "image-key"
                },
                signer: header.signer.map(|s| s.to_string()),
            });
            if let Some(key_path) = key {
                let key = ImageKey::from_file(key_path).map_err(InspectError::Key)?;
                let opened = bundle::open(&bytes, &key).map_err(bundle_err)?;
                manifest = Some(opened.contents.manifest.clone());
            }
        }
    }
    Ok(Inspection {
        image: image_path.display().to_string(),
        table: format!("{:?}", info.table).to_lowercase(),
        disk_id: info.disk_id.clone(),
        size: info.size,
        partitions: info.partitions.to_vec(),
        boot_partition: boot.map(|p| p.index),
        bundle: bundle_info,
        embedded_key,
        manifest,
    })
}

/// Human-readable report.
pub fn render(i: &Inspection) -> String {
    let mut s = format!(
        "{}: {} bytes, {} partition table {}\n",
        i.image, i.size, i.table, i.disk_id
    );
    s.push_str("  #  START        SIZE         TYPE                                  NAME / FS\n");
    for p in &i.partitions {
        s.push_str(&format!(
            "  {:<2} {:<12} {:<12} {:<37} {} {} {}\n",
            p.index,
            p.start,
            p.size,
            p.type_id,
            p.label.as_deref().unwrap_or("-"),
            p.fs_type.as_deref().unwrap_or("-"),
            p.fs_label.as_deref().unwrap_or("")
        ));
    }
    match (&i.boot_partition, &i.bundle) {
        (None, _) => s.push_str("no FAT boot partition found\n"),
        (Some(n), None) => s.push_str(&format!(
            "boot partition {n}: no sealed-secrets/bundle (already provisioned, or never sealed)\n"
        )),
        (Some(n), Some(b)) => {
            s.push_str(&format!(
                "boot partition {n}: bundle v{} {} bytes, id {}, created {}, sealed to {} (key id {})\n",
                b.format_version, b.size, b.bundle_id, b.created_at, b.sealed_to, b.key_id
            ));
            s.push_str(&match &b.signer {
                Some(signer) => format!("  signed by {signer} (the signature verifies)\n"),
                None => "  unsigned (format 2): devices that pin a signer refuse it\n".into(),
            });
            if i.embedded_key {
                s.push_str("  image key EMBEDDED: anyone holding this image can open the bundle\n");
            }
        }
    }
    if let Some(m) = &i.manifest {
        s.push_str("secrets (no values):\n");
        for e in &m.secrets {
            s.push_str(&format!(
                "  {:<24} {:<11} {:<40} {}:{} {:04o}\n",
                e.name, e.kind, e.path, e.owner, e.group, e.mode
            ));
        }
        for e in &m.templates {
            s.push_str(&format!(
                "  {:<24} {:<11} {:<40} {}:{} {:04o}\n",
                e.name, "template", e.path, e.owner, e.group, e.mode
            ));
        }
    }
    s
}
