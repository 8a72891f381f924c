//! recipe → layout: the recipe's `[[partition]]` tables as the image
//! layout `image::assemble_with` builds (sizes, types, ids, FAT files from
//! the build host).

use crate::image::{FatFile, Layout, PartitionContent, PartitionKind, PartitionSpec};
use crate::recipe::{PartitionType, Recipe, RecipeError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What turning a recipe into a layout can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The recipe asks for something that cannot be laid out.
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> PlanError {
    move |cause| PlanError::Io { context, cause }
}

/// A recipe whose layout was checked, once ([`Plan::new`]), with what the
/// later steps of `build` and `build --devices` need from it.
pub struct Plan<'a> {
    pub recipe: &'a Recipe,
    /// The number of the (one) partition that receives the bundle.
    pub boot_index: u32,
    /// The root partition `[agent] root-partition` names, if it names one.
    pub root: Option<crate::image::PartitionSelector>,
}

impl<'a> Plan<'a> {
    /// Check the recipe's layout (`Recipe::validate_layout`: partitions,
    /// exactly one FAT secrets partition, no contradicting keys).
    pub fn new(recipe: &'a Recipe) -> Result<Plan<'a>, RecipeError> {
        recipe.validate_layout()?;
        let boot_index = recipe
            .partitions
            .iter()
            .position(|p| p.secrets)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| recipe.invalid("no partition has secrets = true".into()))?;
        Ok(Plan {
            recipe,
            boot_index,
            root: root_selector(recipe),
        })
    }

    /// The image layout; the secrets partition receives `boot_files`.
    pub fn layout(&self, boot_files: Vec<FatFile>) -> Result<Layout, PlanError> {
        layout(self.recipe, boot_files)
    }
}

/// The root partition `[agent] root-partition` names (a number, or a GPT
/// name or filesystem label), if it names one.
pub fn root_selector(recipe: &Recipe) -> Option<crate::image::PartitionSelector> {
    recipe
        .agent
        .root_partition
        .as_deref()
        .map(crate::image::PartitionSelector::from_arg)
}

/// Turn the recipe's partitions into an image layout; the secrets partition
/// receives `boot_files` in addition to its own files.
fn layout(recipe: &Recipe, boot_files: Vec<FatFile>) -> Result<Layout, PlanError> {
    let mut boot_files = Some(boot_files);
    let mut partitions = Vec::new();
    for p in &recipe.partitions {
        let size = p.size.0;
        let mut kind = match p.kind {
            PartitionType::Esp => PartitionKind::Esp,
            PartitionType::Fat => PartitionKind::Fat,
            PartitionType::Linux => PartitionKind::LinuxFs,
        };
        if p.type_guid.is_some() || p.mbr_type.is_some() {
            let mbr_type = p.mbr_type.map_or_else(|| kind.mbr_type(), |t| t.0);
            kind = PartitionKind::Other {
                gpt_type: p.type_guid.unwrap_or_else(|| kind.gpt_type()),
                mbr_type,
            };
        }
        let content = if let Some(img) = &p.image {
            PartitionContent::ImageFile(recipe.resolve(img))
        } else {
            match p.kind {
                PartitionType::Esp | PartitionType::Fat => {
                    let mut files = Vec::new();
                    for (dest, src) in &p.files {
                        collect_fat_files(
                            &recipe.resolve(src),
                            dest.trim_matches('/'),
                            &mut files,
                        )?;
                    }
                    if p.secrets {
                        files.extend(boot_files.take().unwrap_or_default());
                    }
                    let volume_id = p.volume_id.map(|v| v.0);
                    PartitionContent::Fat {
                        volume_label: p.label.to_uppercase().chars().take(11).collect(),
                        volume_id,
                        files,
                    }
                }
                PartitionType::Linux => match &p.source {
                    Some(src) => PartitionContent::Ext4 {
                        source: recipe.resolve(src),
                        fs_uuid: p.fs_uuid,
                    },
                    None => PartitionContent::Empty,
                },
            }
        };
        partitions.push(PartitionSpec {
            label: p.label.clone(),
            size,
            kind,
            uuid: p.uuid,
            bootable: p.bootable,
            content,
        });
    }
    let disk_signature = recipe.image.disk_signature.map(|v| v.0);
    Ok(Layout {
        table: recipe.image.table,
        disk_guid: recipe.image.disk_guid,
        disk_signature,
        partitions,
        total_size: recipe.image.size.map(|s| s.0),
    })
}

/// A file or a directory tree from the build host, placed at `dest` in FAT.
fn collect_fat_files(src: &Path, dest: &str, out: &mut Vec<FatFile>) -> Result<(), PlanError> {
    // The path the recipe names is taken as it is (links followed); inside
    // a directory, a symbolic link is followed only when its target stays
    // inside that directory: a `boot/x -> /etc/shadow` must never copy the
    // build host's files into the image in clear.
    let root =
        std::fs::canonicalize(src).map_err(io_err(format!("boot file {}", src.display())))?;
    collect_fat_tree(&root, &root, dest, out, 0)
}

fn collect_fat_tree(
    root: &Path,
    src: &Path,
    dest: &str,
    out: &mut Vec<FatFile>,
    depth: usize,
) -> Result<(), PlanError> {
    let refuse = |path: &Path, why: String| {
        PlanError::Invalid(format!("boot file {}: {why}", path.display()))
    };
    if depth > 64 {
        return Err(refuse(
            src,
            "directories nested too deeply (a link loop?)".into(),
        ));
    }
    let meta = std::fs::metadata(src).map_err(io_err(format!("boot file {}", src.display())))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(io_err(format!("listing {}", src.display())))?
            .collect::<Result<_, _>>()
            .map_err(io_err(format!("listing {}", src.display())))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let d = if dest.is_empty() {
                name.clone()
            } else {
                format!("{dest}/{name}")
            };
            let path = e.path();
            let lmeta = std::fs::symlink_metadata(&path)
                .map_err(io_err(format!("boot file {}", path.display())))?;
            let next = if lmeta.file_type().is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(t) if t.starts_with(root) => t,
                    Ok(_) => {
                        return Err(refuse(
                            &path,
                            format!(
                                "a symbolic link to a place outside {} is not followed (it would copy a file of the build host into the image)",
                                root.display()
                            ),
                        ))
                    }
                    Err(_) => return Err(refuse(&path, "a dangling symbolic link".into())),
                }
            } else {
                path
            };
            collect_fat_tree(root, &next, &d, out, depth + 1)?;
        }
        return Ok(());
    }
    if let Some(what) = sealed_bundle::io::not_regular(meta.mode()) {
        return Err(refuse(
            src,
            format!("{what}: only regular files and directories go into a FAT partition"),
        ));
    }
    // Opened non-blocking and checked again on the descriptor (the path
    // could change in between).
    let data = crate::io::limit::read_file(src, u32::MAX as u64)
        .map_err(|e| refuse(src, e.to_string()))?;
    out.push(FatFile {
        path: dest.to_string(),
        data: data.to_vec(),
    });
    Ok(())
}

/// One warning per root partition whose source ships host keys. A source
/// that cannot be read is left to the build to report.
pub fn host_key_warnings(recipe: &Recipe) -> Vec<String> {
    let mut out = Vec::new();
    for p in &recipe.partitions {
        let Some(source) = &p.source else { continue };
        let Ok(keys) = crate::image::host_keys::in_source(&recipe.resolve(source)) else {
            continue;
        };
        if !keys.is_empty() {
            out.push(format!(
                "partition {}: its source {} ships SSH host keys ({}): every device made from this image gets the same host key; remove them and let the image create them on first boot (see README, \"SSH host keys\")",
                p.label,
                source.display(),
                keys.join(", ")
            ));
        }
    }
    out
}
