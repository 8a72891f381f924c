//! `build-image build`: recipe → secrets → bundle → image → outputs.

use crate::cmd::progress::Progress;
use crate::cmd::report::SealedImage;
use crate::image::{self, PartitionContent};
use crate::output::bmap;
use crate::output::{manifest, staging::Staging, sums, zst};
use crate::recipe::plan::Plan;
use crate::recipe::Recipe;
use crate::seal;
use crate::secrets::{self};
use serde::Serialize;
use std::path::PathBuf;

use crate::cmd::error::io_err;
pub use crate::cmd::error::BuildError;
pub use crate::seal::{KeyMode, BUNDLE_PATH, EMBEDDED_KEY_PATH};

pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub key_mode: KeyMode,
    /// When the bundle is sealed (the real clock, never `SOURCE_DATE_EPOCH`) and its sequence number: orders bundles on the device.
    pub created_at: sealed_bundle::Stamp,
    /// zstd level of `NAME.img.zst`; `None` skips the compressed copy.
    pub zst_level: Option<i32>,
    /// Replace an existing `NAME.key` (it may be the only key of an image
    /// already flashed: never replaced silently).
    pub force: bool,
    /// Install sealed-firstboot into the root filesystem.
    pub agent: Option<image::agent::AgentRequest>,
    /// How the bundle is signed; the image pins its signer.
    pub signing: crate::seal::signing::Signing,
    /// `SOURCE_DATE_EPOCH`, read once by the caller: fixes ext4 times.
    pub assemble: image::AssembleOptions,
}

/// What a build produced (safe to print: no values, no key).
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    #[serde(flatten)]
    pub sealed: SealedImage,
    pub image_size: u64,
    /// The outputs as build.json and SHA256SUMS list them.
    pub files: Vec<manifest::OutputFile>,
    /// Warnings about the image (SSH host keys shipped in the root, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Run a whole build. On any error nothing is left in the output directory.
pub fn build(
    recipe: &Recipe,
    opts: &BuildOptions,
    progress: &Progress,
) -> Result<BuildReport, BuildError> {
    let plan = Plan::new(recipe)?;
    let mut warnings = crate::recipe::plan::host_key_warnings(recipe);
    warnings.extend(opts.signing.warning());
    progress.step("collecting secrets");
    let contents = secrets::collect(recipe)?;
    progress.step("sealing the bundle");
    let paths = recipe.path_policy();
    let how = seal::SealOptions {
        signing: &opts.signing,
        paths: &paths,
    };
    let sealed = seal::seal(&contents, &opts.key_mode, opts.created_at, &how)?;
    // Names and paths only, for build.json; the values go with `contents`.
    let bundled = contents.manifest.clone();
    drop(contents);
    let header = &sealed.header;

    let name = &recipe.image.name;
    let existing_key = opts.out_dir.join(format!("{name}.key"));
    if !opts.force && std::fs::symlink_metadata(&existing_key).is_ok() {
        return Err(BuildError::OutputExists {
            path: existing_key,
            hint: "it may be the key of an image already written; pass --force to replace it (and the other outputs)",
        });
    }
    let staging = Staging::new(&opts.out_dir, name)
        .map_err(io_err(format!("creating {}", opts.out_dir.display())))?;
    let img_name = format!("{name}.img");
    let key_name = format!("{name}.key");

    let mut layout = plan.layout(sealed.boot_files())?;
    progress.step("assembling the image");
    let assembled = image::assemble_with(&staging.path(&img_name), &layout, &opts.assemble);
    // The embedded key's copy in the layout is zeroized whatever happened.
    for p in &mut layout.partitions {
        if let PartitionContent::Fat { files, .. } = &mut p.content {
            seal::zeroize_files(files);
        }
    }
    let assembled = assembled?;

    let img = staging.path(&img_name);
    let agent_setup = AgentSetup {
        agent: opts.agent.as_ref(),
        device: device_config(recipe, &opts.signing),
        epoch: opts.assemble.source_date_epoch,
    };
    let (agent, pinned) = pin_signers(&img, &plan, &agent_setup, staging.dir(), progress)?;
    warnings.extend(agent_setup.warning(pinned));
    let mut files = vec![img_name.clone()];
    let key_path = staging.path(&key_name);
    let wrote_key = sealed
        .write_key_file(&key_path)
        .map_err(io_err(format!("writing {}", key_path.display())))?;

    // The image's SHA-256 (the longest single pass over it) runs on its own
    // thread while the block map and the compressed copy are written.
    let (img_hash, bmap_name, zst_name) = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| sums::sha256_file(&img));
        let outputs = (|| {
            progress.step("writing the block map");
            let bmap_name = format!("{name}.bmap");
            bmap::write_bmap(&img, &staging.path(&bmap_name))
                .map_err(io_err(format!("writing {bmap_name}")))?;
            let mut zst_name = None;
            if let Some(level) = opts.zst_level {
                progress.step("compressing");
                let z = format!("{name}.img.zst");
                zst::compress_image(&img, &staging.path(&z), level, 0)
                    .map_err(io_err(format!("writing {z}")))?;
                zst_name = Some(z);
            }
            Ok::<_, BuildError>((bmap_name, zst_name))
        })();
        let img_hash = hasher
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the hashing thread panicked")))
            .map_err(io_err(format!("hashing {img_name}")));
        outputs.and_then(|(b, z)| Ok((img_hash?, b, z)))
    })?;
    let mut hashed = vec![img_name.clone(), bmap_name.clone()];
    let mut known = vec![(img_name.clone(), Some(img_hash)), (bmap_name, None)];
    if let Some(z) = zst_name {
        hashed.push(z.clone());
        known.push((z, None));
    }
    progress.step("writing checksums");
    // The key is a secret: it is not listed in SHA256SUMS or build.json.
    let sums = sums::write_sums_known(staging.dir(), &known)
        .map_err(io_err("writing SHA256SUMS".into()))?;

    let recipe_info = manifest::RecipeInfo::from_file(&recipe.path)
        .map_err(io_err(format!("hashing {}", recipe.path.display())))?;
    let image_info = manifest::ImageInfo::from_assembled(name, &img_name, &layout, &assembled);
    let mut m = manifest::BuildManifest::new(
        recipe_info,
        image_info,
        &header.bundle_id_hex(),
        &header.key_id.to_string(),
        opts.key_mode.name(),
        header.created_at,
    );
    m.partitions = manifest::partitions_from(&layout, &assembled);
    m.secrets = manifest::secrets_from(recipe, &bundled);
    m.templates = manifest::templates_from(recipe, &bundled);
    m.key_file = wrote_key.then(|| key_name.clone());
    m.signer = header.signer.map(|s| s.to_string());
    m.pinned_signers = if pinned {
        agent_setup
            .device
            .signers
            .iter()
            .map(ToString::to_string)
            .collect()
    } else {
        Vec::new()
    };
    m.warnings = warnings.clone();
    if let KeyMode::Recipient(r) = &opts.key_mode {
        m.recipient = Some(r.to_string());
    }
    m.outputs = sums
        .iter()
        .map(|(n, h)| manifest::OutputFile::with_sha256(staging.dir(), n, h))
        .collect::<Result<_, _>>()
        .map_err(io_err("sizing outputs".into()))?;
    manifest::write_build_json(&staging.path(manifest::BUILD_JSON_NAME), &m)
        .map_err(io_err("writing build.json".into()))?;

    files.extend(hashed.iter().skip(1).cloned());
    if wrote_key {
        files.push(key_name.clone());
    }
    files.push("SHA256SUMS".into());
    files.push(manifest::BUILD_JSON_NAME.into());
    // Every output of a build of NAME, so that none of an earlier build
    // (a `.img.zst` from a build with --no-zst now) stays beside this set.
    let set: Vec<String> = [
        img_name.clone(),
        format!("{name}.img.zst"),
        format!("{name}.bmap"),
        key_name.clone(),
        "SHA256SUMS".into(),
        manifest::BUILD_JSON_NAME.into(),
    ]
    .into();
    failpoint_commit()?;
    // Without --force a key is never replaced, even one a concurrent build
    // wrote after the check above.
    let keep = crate::output::staging::Keep {
        files: if opts.force {
            Vec::new()
        } else {
            vec![key_name.clone()]
        },
        inside: None,
    };
    staging
        .commit_keeping(&files, &set, &keep)
        .map_err(io_err(format!(
            "moving outputs into {}",
            opts.out_dir.display()
        )))?;

    Ok(BuildReport {
        sealed: SealedImage {
            image: opts.out_dir.join(&img_name),
            key: matches!(opts.key_mode, KeyMode::Separate).then(|| opts.out_dir.join(&key_name)),
            key_mode: opts.key_mode.name(),
            bundle_id: header.bundle_id_hex(),
            key_id: header.key_id.to_string(),
            created_at: header.created_at,
            signer: m.signer.clone(),
            pinned_signers: m.pinned_signers.clone(),
            secrets: m.secrets,
            agent,
        },
        image_size: assembled.size,
        files: m.outputs,
        warnings,
    })
}

/// What an image built from `recipe` with `signing` says in its
/// `/etc/sealed-firstboot.conf`: the signers it pins, the paths it allows.
pub fn device_config(
    recipe: &Recipe,
    signing: &crate::seal::signing::Signing,
) -> image::agent::DeviceConfig {
    image::agent::DeviceConfig {
        signers: signing.pins(recipe),
        allow_paths: recipe.policy.allow_paths.clone(),
    }
}

/// What goes into a built image's root for its agent: the agent itself
/// when asked, the configuration it reads.
pub(crate) struct AgentSetup<'a> {
    pub agent: Option<&'a image::agent::AgentRequest>,
    pub device: image::agent::DeviceConfig,
    /// `SOURCE_DATE_EPOCH`, for the new inodes' times.
    pub epoch: Option<u64>,
}

impl AgentSetup<'_> {
    /// The warning of an image with no ext4 root to pin its signers in.
    pub fn warning(&self, pinned: bool) -> Option<String> {
        (!pinned && !self.device.signers.is_empty()).then(|| {
            "the image has no ext4 root filesystem to pin the signer in (/etc/sealed-firstboot.conf): its device accepts any bundle until a signer is pinned there".into()
        })
    }
}

/// Install the agent (when asked) or write just its configuration into an
/// image just assembled: the signers it pins and the paths it allows.
/// Returns the agent's report and whether the signers are pinned.
pub(crate) fn pin_signers(
    img: &std::path::Path,
    plan: &Plan,
    setup: &AgentSetup,
    scratch: &std::path::Path,
    progress: &Progress,
) -> Result<(Option<image::agent::AgentReport>, bool), BuildError> {
    let (device, epoch) = (&setup.device, setup.epoch);
    let boot = plan.boot_index;
    if let Some(req) = setup.agent {
        progress.step("installing sealed-firstboot");
        let report = image::agent::install_built(img, boot, req, device, scratch, epoch)?;
        return Ok((Some(report), true));
    }
    if device.signers.is_empty() && device.allow_paths.is_empty() {
        return Ok((None, false));
    }
    progress.step("pinning the signer in the root filesystem");
    let configured =
        image::agent::configure_built(img, boot, plan.root.as_ref(), device, scratch, epoch)?;
    Ok((None, configured.is_some()))
}

/// Test hook: `BUILD_IMAGE_FAILPOINT=before-commit` fails the build just
/// before its outputs are committed (after every file was written).
fn failpoint_commit() -> Result<(), BuildError> {
    if std::env::var_os("BUILD_IMAGE_FAILPOINT").is_some_and(|v| v == "before-commit") {
        return Err(BuildError::Io {
            context: "failpoint before-commit".into(),
            cause: std::io::Error::other("injected failure"),
        });
    }
    Ok(())
}
