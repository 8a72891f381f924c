//! One function per command: load the inputs, call the library, report.

use anyhow::{Context, Result};
use build_image::cmd::build::{self, BuildOptions, KeyMode};
use build_image::cmd::error::BuildError;
use build_image::image::PartitionSelector;
use build_image::recipe::Recipe;
use build_image::secrets;
use sealed_bundle::report::printable;
use sealed_bundle::Stamp;
use std::io::Read;
use std::process::ExitCode;

use crate::cli::*;
use crate::exit::{self, UsageError};

/// The bundle's stamp: the real clock now (never `SOURCE_DATE_EPOCH`, which
/// CI pins for reproducible images and would make every rotation look like
/// a replay), and the user's sequence number.
fn created_at(sequence: Option<u64>) -> Stamp {
    Stamp::now().with_sequence(sequence.unwrap_or(0))
}

fn key_mode(key: KeyArgs) -> KeyMode {
    match (key.embed_key, key.recipient) {
        (_, Some(r)) => KeyMode::Recipient(r),
        (true, None) => KeyMode::Embedded,
        (false, None) => KeyMode::Separate,
    }
}

/// The signing key for this run (`--signing-key`, the environment, the
/// recipe), or `--unsigned`.
fn signing(args: SigningArgs, recipe: &Recipe) -> Result<build_image::seal::signing::Signing> {
    let req = build_image::seal::signing::SigningRequest {
        key_file: args.signing_key,
        unsigned: args.unsigned,
    };
    Ok(build_image::seal::signing::resolve(&req, Some(recipe)).map_err(BuildError::from)?)
}

/// The devices of a devices file (usage errors: exit 2), only shard
/// `I/N` when given.
fn load_devices(
    recipe: &Recipe,
    devices: &std::path::Path,
    shard: Option<(usize, usize)>,
) -> Result<Vec<build_image::recipe::devices::Device>> {
    let names = recipe.secrets.keys().cloned().collect();
    let list = build_image::recipe::devices::load(devices, &names)
        .map_err(|e| anyhow::Error::new(e).context(UsageError))?;
    Ok(build_image::recipe::devices::shard(list, shard))
}

fn selector(partition: Option<PartitionSelector>) -> PartitionSelector {
    partition.unwrap_or(PartitionSelector::Auto)
}

/// `--install-agent` and friends over the recipe's `[agent]` table.
fn agent_request(
    recipe: &Recipe,
    args: AgentArgs,
) -> Result<Option<build_image::image::agent::AgentRequest>> {
    let table = &recipe.agent;
    let install = args.install_agent || args.agent.is_some() || table.install;
    if !install {
        if args.boot_dir.is_some() || args.root_partition.is_some() {
            return Err(
                anyhow::anyhow!("--boot-dir and --root-partition need --install-agent")
                    .context(UsageError),
            );
        }
        return Ok(None);
    }
    Ok(Some(build_image::image::agent::AgentRequest {
        binary: args
            .agent
            .or_else(|| table.binary.as_deref().map(|b| recipe.resolve(b))),
        boot_dir: args.boot_dir.or_else(|| table.boot_dir.clone()),
        root: args
            .root_partition
            .or_else(|| build_image::recipe::plan::root_selector(recipe)),
    }))
}

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    // SOURCE_DATE_EPOCH, read once here: images built from the same inputs
    // with the same value are byte-identical.
    let assemble = build_image::image::AssembleOptions::from_env().map_err(BuildError::from)?;
    match cli.command {
        Command::Build {
            recipe,
            out,
            key,
            signing: signing_args,
            report: ReportArgs { json, quiet },
            devices,
            shard,
            bundles_only,
            raw_images,
            zst_level,
            no_zst,
            force,
            agent,
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let agent = agent_request(&recipe, agent)?;
            let sequence = key.sequence;
            let key_mode = key_mode(key);
            let signing = signing(signing_args, &recipe)?;
            if let Some(devices) = devices {
                let list = load_devices(&recipe, &devices, shard)?;
                for w in build_image::recipe::plan::host_key_warnings(&recipe) {
                    eprintln!("build-image: warning: {w}");
                }
                if let Some(w) = signing.warning() {
                    eprintln!("build-image: warning: {w}");
                }
                let opts = build_image::cmd::fleet::FleetOptions {
                    out_dir: out,
                    key_mode,
                    created_at: created_at(sequence),
                    bundles_only,
                    zst_level: (!no_zst).then_some(zst_level),
                    raw_images,
                    force,
                    agent,
                    signing,
                    assemble,
                };
                let progress = build_image::cmd::progress::Progress::new(quiet || json);
                let report =
                    build_image::cmd::fleet::build_fleet(&recipe, &list, &opts, &progress)?;
                progress.finish();
                print_report(json, quiet, &report, |report| {
                    for d in &report.devices {
                        eprintln!(
                            "built {} ({}, bundle {})",
                            d.dir.display(),
                            d.key_mode,
                            d.bundle_id
                        );
                    }
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let opts = BuildOptions {
                out_dir: out,
                key_mode,
                created_at: created_at(sequence),
                zst_level: (!no_zst).then_some(zst_level),
                force,
                agent,
                signing,
                assemble,
            };
            let progress = build_image::cmd::progress::Progress::new(quiet || json);
            let report = build::build(&recipe, &opts, &progress)?;
            progress.finish();
            for w in &report.warnings {
                eprintln!("build-image: warning: {w}");
            }
            print_report(json, quiet, &report, |report| {
                eprintln!(
                    "built {} ({} bytes, {} secrets, bundle {})",
                    report.sealed.image.display(),
                    report.image_size,
                    report.sealed.included(),
                    report.sealed.bundle_id
                );
                let absent: Vec<&str> = report
                    .sealed
                    .secrets
                    .iter()
                    .filter(|s| !s.included)
                    .map(|s| s.name.as_str())
                    .collect();
                if !absent.is_empty() {
                    eprintln!("optional secrets not provided: {}", absent.join(", "));
                }
                print_signed(&report.sealed);
                match &report.sealed.key {
                    Some(k) => eprintln!(
                        "image key: {} (mode 0600): keep it apart from the image; put it on the boot partition as sealed-secrets/image.key when flashing",
                        k.display()
                    ),
                    None if report.sealed.key_mode == "embedded" => eprintln!(
                        "image key embedded in the image: anyone with the image file can read the secrets"
                    ),
                    None => eprintln!("sealed to the device recipient: only that device can open it"),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject {
            image,
            recipe,
            output,
            in_place,
            partition,
            key,
            signing: signing_args,
            agent,
            report: ReportArgs { json, quiet },
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let agent = agent_request(&recipe, agent)?;
            let signing = signing(signing_args, &recipe)?;
            if let Some(w) = signing.warning() {
                eprintln!("build-image: warning: {w}");
            }
            let opts = build_image::cmd::inject::InjectOptions {
                agent,
                signing,
                assemble,
                output,
                in_place,
                selector: selector(partition),
                created_at: created_at(key.sequence),
                key_mode: key_mode(key),
            };
            let progress = build_image::cmd::progress::Progress::new(quiet || json);
            let report = build_image::cmd::inject::inject(
                &recipe,
                &image,
                &opts,
                &Default::default(),
                &progress,
            )?;
            progress.finish();
            print_report(json, quiet, &report, |report| {
                eprintln!(
                    "sealed {} secrets into {} (boot partition {}, bundle {})",
                    report.sealed.included(),
                    report.sealed.image.display(),
                    report.boot_partition,
                    report.sealed.bundle_id
                );
                if let Some(k) = &report.sealed.key {
                    eprintln!(
                        "image key: {} (mode 0600): keep it apart from the image",
                        k.display()
                    );
                }
                print_signed(&report.sealed);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Flash {
            image,
            target,
            key,
            bundle,
            bmap,
            no_bmap,
            partition,
            yes,
            no_verify,
            force,
            report: ReportArgs { json, quiet },
        } => {
            use std::io::IsTerminal;
            let opts = build_image::cmd::flash::FlashOptions {
                bmap,
                no_bmap,
                key,
                yes,
                verify: !no_verify,
                progress: !quiet && !json && std::io::stderr().is_terminal(),
                partition: selector(partition),
                bundle,
                force,
            };
            let r = build_image::cmd::flash::flash(&image, &target, &opts)?;
            print_report(json, quiet, &r, |r| {
                eprintln!(
                    "wrote {} ({} of {} bytes{}) to {}{}{}",
                    image.display(),
                    r.bytes_written,
                    r.image_size,
                    if r.used_bmap { ", bmap" } else { "" },
                    r.target.display(),
                    match (r.bundle_written, r.key_written) {
                        (true, true) => ", bundle and key on the boot partition",
                        (true, false) => ", bundle on the boot partition",
                        (false, true) => ", key on the boot partition",
                        (false, false) => "",
                    },
                    if r.verified { ", verified" } else { "" }
                );
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            image,
            key,
            partition,
            json,
        } => {
            let selector = selector(partition);
            let report = build_image::cmd::inspect::inspect(&image, &selector, key.as_deref())
                .map_err(|e| {
                    anyhow::Error::new(e).context(format!("inspecting {}", image.display()))
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", build_image::cmd::inspect::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle {
            recipe,
            out,
            recipient,
            ssh_recipient,
            devices,
            shard,
            only,
            sequence,
            force,
            signing: signing_args,
            set_signers,
            signers_only,
            report: ReportArgs { json, quiet },
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let signing = signing(signing_args, &recipe)?;
            if let Some(w) = signing.warning() {
                eprintln!("build-image: warning: {w}");
            }
            let set_signers = if set_signers.is_empty() {
                None
            } else {
                let list = sealed_bundle::check_signers(&set_signers)
                    .map_err(|e| anyhow::anyhow!("--set-signers: {e}").context(UsageError))?;
                if let Some(key) = signing.key() {
                    if !list.contains(&key.signer()) {
                        eprintln!(
                            "build-image: note: the bundle is signed by {}, which the new signer list does not name: its devices will refuse later bundles signed with it",
                            key.signer()
                        );
                    }
                }
                Some(list)
            };
            let key_mode = match recipient.or(ssh_recipient) {
                Some(r) => KeyMode::Recipient(r),
                None => KeyMode::Separate,
            };
            let opts = build_image::cmd::bundle::BundleOptions {
                out_dir: out,
                key_mode,
                created_at: created_at(sequence),
                only,
                force,
                signing,
                set_signers,
                signers_only,
            };
            let report = match devices {
                Some(devices) => {
                    let list = load_devices(&recipe, &devices, shard)?;
                    build_image::cmd::bundle::fleet(&recipe, &list, &opts)?
                }
                None => build_image::cmd::bundle::single(&recipe, &opts)?,
            };
            print_report(json, quiet, &report, |report| {
                for b in &report.bundles {
                    eprintln!(
                        "sealed {}{} ({}, {} bundle {}: {})",
                        b.bundle.display(),
                        b.key
                            .as_ref()
                            .map(|k| format!(" + {}", k.display()))
                            .unwrap_or_default(),
                        b.key_mode,
                        if b.partial { "partial" } else { "full" },
                        b.bundle_id,
                        b.secrets.join(", ")
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey {
            signing_key: Some(path),
            ..
        } => {
            let signing = build_image::seal::signing::from_file(&path, &path.display().to_string())
                .map_err(BuildError::from)?;
            if let Some(key) = signing.key() {
                println!("{}", key.signer());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { signing: _, output } => {
            let signer = build_image::seal::signing::keygen(&output)
                .with_context(|| format!("writing the signing key {}", output.display()))?;
            println!("{signer}");
            eprintln!(
                "build-image: wrote the signing key {} (0600): keep it like an image key; its public key (above) is what devices pin",
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey {
            ssh_pubkey: Some(ssh_pubkey),
            ..
        } => {
            let mut text = String::new();
            if ssh_pubkey.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading standard input")?;
            } else {
                text = std::fs::read_to_string(&ssh_pubkey)
                    .with_context(|| format!("reading {}", ssh_pubkey.display()))?;
            }
            let found = sealed_bundle::ssh::recipients_from_ssh_public_keys(&text)
                .map_err(|(n, e)| anyhow::anyhow!("{} line {n}: {e}", ssh_pubkey.display()))?;
            if found.is_empty() {
                anyhow::bail!("{}: no ssh-ed25519 public key found", ssh_pubkey.display());
            }
            for r in found {
                println!("{r}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey { .. } => Err(anyhow::anyhow!(
            "pubkey needs --ssh-pubkey FILE or --signing-key FILE"
        )
        .context(UsageError)),
        Command::Store(args) => {
            crate::store::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            crate::serve::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            recipe,
            json,
            devices: Some(devices),
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let list = load_devices(&recipe, &devices, None)?;
            let (rows, verified) = build_image::cmd::check::matrix(&recipe, &list)?;
            if !verified {
                eprintln!("build-image: unverified: no identity, so the store's metadata was not checked against its key (pass SEALED_IMAGE_STORE_IDENTITY to verify it)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let matrix = build_image::cmd::check::render_matrix(&rows);
                for line in matrix.lines() {
                    println!("{}", printable(line));
                }
            }
            let missing = rows.iter().any(|r| {
                r.secrets.iter().any(|c| {
                    !c.present && recipe.secrets.get(&c.secret).is_some_and(|s| s.required)
                })
            });
            Ok(if missing {
                ExitCode::from(exit::MISSING_SECRETS)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Check { recipe, json, .. } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let rows = secrets::check(&recipe);
            for w in build_image::recipe::plan::host_key_warnings(&recipe) {
                eprintln!("build-image: warning: {w}");
            }
            // A source that failed (a command that exited non-zero, timed
            // out, a FIFO) is failed, not missing.
            let missing = rows
                .iter()
                .any(|r| r.required && !r.present && r.error.is_none());
            let invalid = rows.iter().any(|r| r.error.is_some());
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<2} {:<24} {:<11} {:<9} {:<34} DESCRIPTION",
                    "", "SECRET", "TYPE", "REQUIRED", "SOURCE"
                );
                for r in &rows {
                    let mark = if r.present && r.error.is_none() {
                        "✓"
                    } else {
                        "✗"
                    };
                    // The recipe's and the store's text: no control
                    // characters to the terminal.
                    println!(
                        "{}",
                        printable(&format!(
                            "{mark:<2} {:<24} {:<11} {:<9} {:<34} {}",
                            r.name,
                            r.kind.as_str(),
                            if r.required { "required" } else { "optional" },
                            r.source,
                            r.description.as_deref().unwrap_or("")
                        ))
                    );
                    if let Some(how) = &r.how {
                        println!("   └ missing: {}", printable(how));
                    }
                    if let Some(e) = &r.error {
                        let what = if r.present { "invalid" } else { "failed" };
                        println!("   └ {what}: {}", printable(e));
                    }
                }
            }
            // A store not what its key authenticates (11), or no identity
            // for it (10): the store's own codes, as a build says.
            let store_trouble = rows.iter().filter_map(|r| r.store_trouble).max();
            Ok(if let Some(kind) = store_trouble {
                ExitCode::from(exit::store_code(kind))
            } else if invalid {
                ExitCode::from(exit::SECRET_INVALID)
            } else if missing {
                ExitCode::from(exit::MISSING_SECRETS)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Who signed the bundle and what the image pins (stderr).
fn print_signed(sealed: &build_image::cmd::report::SealedImage) {
    match (&sealed.signer, sealed.pinned_signers.len()) {
        (Some(s), 0) => eprintln!("signed by {s} (the image's root filesystem does not pin it)"),
        (Some(s), n) => eprintln!(
            "signed by {s}; the image pins {n} signer{} in /etc/sealed-firstboot.conf",
            if n == 1 { "" } else { "s" }
        ),
        (None, _) => eprintln!("unsigned bundle (format 2)"),
    }
}

/// With `--json`, `report` as JSON on stdout; otherwise, unless `--quiet`,
/// `human` prints its lines on stderr.
fn print_report<T: serde::Serialize>(
    json: bool,
    quiet: bool,
    report: &T,
    human: impl FnOnce(&T),
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else if !quiet {
        human(report);
    }
    Ok(())
}
