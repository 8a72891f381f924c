//! `build-image bundle`: update bundles for devices that are already
//! deployed, without building an image. The same collection, checks and
//! sealing as `build`; the result is applied on the device with
//! `sealed-firstboot apply FILE|-` (over SSH), or put on a boot partition
//! by `inject`/`flash` in image-key mode.
//!
//! One device: sealed to its recipient (`--recipient`, `--ssh-recipient`)
//! or under a fresh image key. A fleet: each device of a devices file with
//! its own recipient (or image key) and values. `--only NAME…` makes a
//! partial bundle: the device replaces the listed secrets and keeps the
//! rest of its store.

use crate::cmd::error::{io_err, BuildError};
use crate::output::staging::Staging;
use crate::recipe::devices::Device;
use crate::recipe::devices::Override;
use crate::recipe::Recipe;
use crate::seal::{self, KeyMode, Sealed};
use crate::secrets::{self, SecretsError};
use sealed_bundle::{Contents, Stamp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct BundleOptions {
    pub out_dir: PathBuf,
    /// Separate (image key beside the bundle) or a recipient; devices of a
    /// devices file with a recipient are sealed to it.
    pub key_mode: KeyMode,
    pub created_at: Stamp,
    /// Names of the secrets and templates of a partial bundle; empty: a
    /// full bundle that replaces the device's store.
    pub only: Vec<String>,
    /// Replace existing output files.
    pub force: bool,
    /// How the bundles are signed.
    pub signing: crate::seal::signing::Signing,
    /// `--set-signers`: the bundle replaces the signers its devices pin.
    pub set_signers: Option<Vec<sealed_bundle::Signer>>,
    /// `--signers-only`: a partial bundle with no secrets, only the new
    /// signer list.
    pub signers_only: bool,
}

impl BundleOptions {
    /// Whether the bundle leaves the device's other secrets in place.
    fn partial(&self) -> bool {
        !self.only.is_empty() || self.signers_only
    }
}

/// What was written (safe to print: no values, no key).
#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub bundles: Vec<BundleOutput>,
}

#[derive(Debug, Serialize)]
pub struct BundleOutput {
    /// The device, for fleet bundles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub bundle: PathBuf,
    /// The image key file (image-key mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub key_mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub bundle_id: String,
    pub sequence: u64,
    pub partial: bool,
    /// Names of the secrets and templates in the bundle.
    pub secrets: Vec<String>,
    /// Who signed it (`sealed-signer1…`); absent: unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signers it makes its devices pin (`--set-signers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sets_signers: Option<Vec<String>>,
}

/// The recipe reduced to what a partial bundle carries: the listed
/// secrets and templates (and the secrets those templates use, which the
/// builder checks exist). Unknown names are a recipe error.
pub fn only(recipe: &Recipe, names: &[String]) -> Result<Recipe, BuildError> {
    if names.is_empty() {
        return Ok(recipe.clone());
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !recipe.secrets.contains_key(*n) && !recipe.templates.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = recipe
            .secrets
            .keys()
            .chain(recipe.templates.keys())
            .map(String::as_str)
            .collect();
        return Err(BuildError::Invalid(format!(
            "--only names {} that the recipe does not have (it has: {})",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    let mut r = recipe.clone();
    r.templates.retain(|n, _| names.contains(n));
    // A listed template travels with the secrets it uses.
    let mut keep: Vec<String> = names.to_vec();
    for t in r.templates.values() {
        let path = r.resolve(&t.source);
        let text = crate::io::limit::read_file(&path, crate::io::bounded::MAX_VALUE_BYTES)
            .map_err(|e| {
                BuildError::Invalid(format!("reading template {}: {e}", path.display()))
            })?;
        keep.extend(sealed_bundle::placeholders(&text).unwrap_or_default());
    }
    r.secrets.retain(|n, _| keep.contains(n));
    Ok(r)
}

/// The recipe a bundle carries: all of it, the `--only` names, or nothing
/// (`--signers-only`).
fn carried(recipe: &Recipe, opts: &BundleOptions) -> Result<Recipe, BuildError> {
    if opts.signers_only {
        let mut r = recipe.clone();
        r.secrets.clear();
        r.templates.clear();
        return Ok(r);
    }
    only(recipe, &opts.only)
}

/// Seal one bundle for one device (or any device holding its image key).
pub fn single(recipe: &Recipe, opts: &BundleOptions) -> Result<BundleReport, BuildError> {
    let reduced = carried(recipe, opts)?;
    let contents = collect(recipe, &reduced, opts, &BTreeMap::new())?;
    let paths = recipe.path_policy();
    let how = seal::SealOptions {
        signing: &opts.signing,
        paths: &paths,
    };
    let sealed = seal::seal(&contents, &opts.key_mode, opts.created_at, &how)?;
    let name = recipe.image.name.clone();
    write(opts, vec![(None, name, sealed, names(&contents))])
}

/// Seal one bundle per device of a devices file (already sharded). Every
/// device's secrets are collected first: a missing one fails all, nothing
/// is written.
pub fn fleet(
    recipe: &Recipe,
    devices: &[Device],
    opts: &BundleOptions,
) -> Result<BundleReport, BuildError> {
    let reduced = carried(recipe, opts)?;
    let paths = recipe.path_policy();
    let how = seal::SealOptions {
        signing: &opts.signing,
        paths: &paths,
    };
    let mut sealed = Vec::new();
    let mut failures: Vec<(String, SecretsError)> = Vec::new();
    for d in devices {
        // The device's own values, then its store values (device > tag > global).
        let all = match crate::secrets::sources::store::device_overrides(&reduced, d) {
            Ok(o) => o,
            Err(e) => {
                failures.push((d.name.clone(), SecretsError::Source(e)));
                continue;
            }
        };
        let overrides: BTreeMap<String, Override> = all
            .into_iter()
            .filter(|(n, _)| reduced.secrets.contains_key(n))
            .collect();
        match collect(recipe, &reduced, opts, &overrides) {
            Ok(contents) => {
                let mode = match &d.recipient {
                    Some(r) => KeyMode::Recipient(r.clone()),
                    None => opts.key_mode.clone(),
                };
                let s = seal::seal(&contents, &mode, opts.created_at, &how)?;
                sealed.push((Some(d.name.clone()), d.name.clone(), s, names(&contents)));
            }
            Err(BuildError::Secrets(e)) => failures.push((d.name.clone(), e)),
            Err(e) => return Err(e),
        }
    }
    if !failures.is_empty() {
        return Err(BuildError::Fleet(failures));
    }
    write(opts, sealed)
}

/// The bundle's contents from the `carried` part of `recipe`. A partial
/// bundle is checked as the full build checks: its templates render (in
/// validation, before sealing), and every template of the recipe it does
/// not carry that uses one of its secrets must hold the new value in each
/// of its escapes (the device renders it with the rest of its store).
fn collect(
    recipe: &Recipe,
    carried: &Recipe,
    opts: &BundleOptions,
    overrides: &BTreeMap<String, Override>,
) -> Result<Contents, BuildError> {
    let mut contents = secrets::collect_with(carried, overrides)?;
    contents.manifest.partial = opts.partial();
    contents.manifest.signers = opts
        .set_signers
        .as_ref()
        .map(|l| l.iter().map(ToString::to_string).collect());
    if contents.manifest.partial {
        for (name, t) in &recipe.templates {
            if carried.templates.contains_key(name) {
                continue;
            }
            let path = recipe.resolve(&t.source);
            let text = crate::io::limit::read_file(&path, crate::io::bounded::MAX_VALUE_BYTES)
                .map_err(|e| SecretsError::Template {
                    name: name.clone(),
                    reason: format!("reading {}: {e}", path.display()),
                })?;
            sealed_bundle::check_escapes(&text, &contents.values).map_err(|reason| {
                SecretsError::Template {
                    name: name.clone(),
                    reason: format!(
                        "{reason} (the template stays on the device and is rendered there with this bundle's new value)"
                    ),
                }
            })?;
        }
    }
    Ok(contents)
}

fn names(c: &Contents) -> Vec<String> {
    c.manifest.entries().map(|e| e.name.clone()).collect()
}

/// Write `STEM.bundle` (+ `STEM.key`) for each, all or nothing.
fn write(
    opts: &BundleOptions,
    sealed: Vec<(Option<String>, String, Sealed, Vec<String>)>,
) -> Result<BundleReport, BuildError> {
    let mut files = Vec::new();
    for (_, stem, s, _) in &sealed {
        files.push(format!("{stem}.bundle"));
        if s.key.is_some() {
            files.push(format!("{stem}.key"));
        }
    }
    if !opts.force {
        if let Some(f) = files.iter().find(|f| opts.out_dir.join(f).exists()) {
            return Err(BuildError::OutputExists {
                path: opts.out_dir.join(f),
                hint: "pass --force to replace it",
            });
        }
    }
    let staging = Staging::new(&opts.out_dir, "bundle")
        .map_err(io_err(format!("creating {}", opts.out_dir.display())))?;
    let mut bundles = Vec::new();
    for (device, stem, s, secrets) in &sealed {
        let bundle_name = format!("{stem}.bundle");
        crate::seal::write_private(&staging.path(&bundle_name), &s.bundle)
            .map_err(io_err(format!("writing {bundle_name}")))?;
        let key_name = format!("{stem}.key");
        let wrote_key = s
            .write_key_file(&staging.path(&key_name))
            .map_err(io_err(format!("writing {key_name}")))?;
        bundles.push(BundleOutput {
            device: device.clone(),
            bundle: opts.out_dir.join(&bundle_name),
            key: wrote_key.then(|| opts.out_dir.join(&key_name)),
            key_mode: s.mode.name(),
            recipient: match &s.mode {
                KeyMode::Recipient(r) => Some(r.to_string()),
                _ => None,
            },
            bundle_id: s.header.bundle_id_hex(),
            sequence: s.header.sequence,
            partial: opts.partial(),
            secrets: secrets.clone(),
            signer: s.header.signer.map(|s| s.to_string()),
            sets_signers: opts
                .set_signers
                .as_ref()
                .map(|l| l.iter().map(ToString::to_string).collect()),
        });
    }
    // Without --force, nothing is replaced (a concurrent run's bundle or
    // key written after the check above is kept, and this run fails).
    let keep = crate::output::staging::Keep {
        files: if opts.force {
            Vec::new()
        } else {
            files.clone()
        },
        inside: None,
    };
    staging
        .commit_keeping(&files, &[], &keep)
        .map_err(io_err(format!(
            "moving bundles into {}",
            opts.out_dir.display()
        )))?;
    Ok(BundleReport { bundles })
}
