//! `build-image`: the CLI used in CI pipelines. Argument parsing and
//! reporting only; the work is in the library.

use anyhow::{Context, Result};
use build_image::build::{self, BuildError, BuildOptions, KeyMode};
use build_image::recipe::Recipe;
use build_image::secrets::{self, SecretsError};
use clap::{Parser, Subcommand};
use sealed_firstboot::bundle::Stamp;
use sealed_firstboot::report::chain_message;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

/// Exit codes, documented in the README.
mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const RECIPE: u8 = 3;
    pub const MISSING_SECRETS: u8 = 4;
    pub const SECRET_INVALID: u8 = 5;
    pub const IMAGE: u8 = 6;
    pub const REFUSED: u8 = 7;
}

#[derive(Parser)]
#[command(
    name = "build-image",
    version,
    about = "Build device disk images with sealed secrets baked in",
    long_about = "Build device disk images with sealed secrets baked in.\n\n\
        build-image reads a recipe (TOML), collects the secrets it names from their \
        sources (environment, files, commands, dotenv files), seals them under a fresh \
        image key and writes them into a disk image it assembles (GPT or MBR, FAT boot \
        partition, ext4 root). On first boot sealed-firstboot reseals them to the device.",
    after_help = "EXIT CODES:\n  0 success   1 failure   2 usage   3 invalid recipe\n  \
        4 required secrets missing   5 a secret value is invalid or its source failed\n  \
        6 image assembly or output failed   7 flash refused the target (nothing written)\n  \
        8 store: the name already exists   9 store: no such secret   10 store: no identity or it cannot decrypt"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the bundle is sealed (default: a fresh image key written beside the image).
#[derive(clap::Args)]
struct KeyArgs {
    /// Store the image key on the boot partition: the image file alone then
    /// reveals the secrets (weaker; for labs and demos)
    #[arg(long, conflicts_with = "recipient")]
    embed_key: bool,
    /// Seal straight to a known device's age recipient (age1…): no image key
    #[arg(long, value_name = "AGE1…")]
    recipient: Option<String>,
    /// Order the bundle by this sequence number before its sealing time: a
    /// device applies a bundle only when its (sequence, sealing time) is
    /// newer than what it holds. Without it, the real clock at sealing
    /// (nanoseconds; never SOURCE_DATE_EPOCH) orders bundles
    #[arg(long, value_name = "N")]
    sequence: Option<u64>,
}

/// Installing the device agent into the image's root filesystem.
#[derive(clap::Args)]
struct AgentArgs {
    /// Install sealed-firstboot into the image's ext4 root filesystem (no
    /// root, loop device or mount: debugfs at the partition's offset): the
    /// binary for the root's architecture (read from the ELF header of
    /// /usr/bin/env), its unit enabled under sysinit.target.wants/, and
    /// /etc/sealed-firstboot.conf with the boot partition's mount point.
    /// Running it again updates in place. Same as `[agent] install = true`
    #[arg(long)]
    install_agent: bool,
    /// The sealed-firstboot binary to install (implies --install-agent).
    /// Default: sealed-firstboot-ARCH shipped with build-image (beside it,
    /// in ../lib/sealed-image, or target/device from
    /// scripts/build-device-binaries; $SEALED_IMAGE_AGENT_DIR first)
    #[arg(long, value_name = "FILE")]
    agent: Option<PathBuf>,
    /// With --install-agent: where the device mounts the boot partition
    /// (default: the image's /etc/fstab line for it, e.g. /boot/firmware)
    #[arg(long, value_name = "DIR")]
    boot_dir: Option<String>,
    /// With --install-agent: the root partition, by number or GPT name /
    /// ext label (default: the only ext4 partition besides the boot one)
    #[arg(long, value_name = "N|LABEL")]
    root_partition: Option<String>,
}

/// What is printed on success.
#[derive(clap::Args)]
struct ReportArgs {
    /// Print a JSON summary on stdout (never values or keys)
    #[arg(long)]
    json: bool,
    /// Print nothing on success
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a recipe
    #[command(after_help = "EXAMPLES:\n  \
        build-image build image-recipes/demo/recipe.toml --out out/\n  \
        WIFI_PSK=… build-image build recipe.toml --out out/ --json\n  \
        build-image build recipe.toml --out out/ --recipient age1…\n\n\
        OUTPUTS:\n  OUT/NAME.img     sparse disk image\n  \
        OUT/NAME.img.zst the image compressed with zstd (multithreaded; --no-zst skips it)\n  \
        OUT/NAME.bmap    block map (bmaptool format 2.0): `bmaptool copy` and `flash` write only mapped blocks\n  \
        OUT/build.json   what was built: recipe hash, partitions, secret names and paths, bundle id,\n                   \
        output hashes (never values or keys)\n  \
        OUT/NAME.key     image key (separate key mode, mode 0600): copy it onto the boot\n                   \
        partition as sealed-secrets/image.key when flashing; keep it apart from the image\n  \
        OUT/SHA256SUMS   checksums of the image, .img.zst and .bmap (not of the key)")]
    Build {
        /// The recipe file (TOML)
        recipe: PathBuf,
        /// Output directory (created if needed)
        #[arg(long, short, default_value = "out")]
        out: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        report: ReportArgs,
        /// Fleet build: one image per device listed in FILE (TOML or .csv), each
        /// with its own image key, into OUT/DEVICE/
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
        /// With --devices: build only shard I of N (1-based), for a CI job matrix
        #[arg(long, value_name = "I/N", requires = "devices")]
        shard: Option<String>,
        /// With --devices: write OUT/DEVICE/sealed-secrets/bundle (+ key) instead
        /// of images, for `inject` or `flash`
        #[arg(long, requires = "devices")]
        bundles_only: bool,
        /// With --devices: also write each device's raw NAME.img (by default a
        /// device gets NAME.img.zst and NAME.bmap, made from the base image's
        /// compressed frames and range hashes; with --no-zst, raw images)
        #[arg(long, requires = "devices", conflicts_with = "bundles_only")]
        raw_images: bool,
        /// zstd level of NAME.img.zst (1-22)
        #[arg(long, value_name = "N", default_value_t = build_image::output::zst::DEFAULT_LEVEL,
              value_parser = clap::value_parser!(i32).range(1..=22))]
        zst_level: i32,
        /// Do not write NAME.img.zst
        #[arg(long)]
        no_zst: bool,
        /// Replace the outputs of an earlier build in OUT, NAME.key included
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Seal a recipe's secrets into an existing image (.img or .img.zst)
    #[command(after_help = "EXAMPLES:\n  \
        build-image inject raspios-lite.img.zst --recipe pi.toml\n      \
        → raspios-lite.sealed.img.zst and raspios-lite.sealed.key\n  \
        build-image inject disk.img --recipe r.toml --in-place --partition bootfs\n\n\
        The FAT boot partition is written in place (no root, no loop device, no mount);\n\
        every other byte of the image stays identical. The recipe's [[partition]]\n\
        tables are not needed: only [image] name and the secrets.")]
    Inject {
        /// The existing image: .img, or .img.zst (then the output is .img.zst too)
        image: PathBuf,
        /// The recipe with the secrets
        #[arg(long, value_name = "FILE")]
        recipe: PathBuf,
        /// Output image (default: NAME.sealed.img[.zst] beside the input)
        #[arg(long, short, value_name = "FILE", conflicts_with = "in_place")]
        output: Option<PathBuf>,
        /// Replace the input image (atomically, through a temporary copy)
        #[arg(long)]
        in_place: bool,
        /// The FAT boot partition: its number, or its GPT name / FAT label
        /// (default: the ESP, else the only FAT partition)
        #[arg(long, value_name = "N|LABEL")]
        partition: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Write an image to a disk (bmap-aware), put the image key on its boot
    /// partition, verify by reading back
    #[command(after_help = "EXAMPLES:\n  \
        build-image flash out/demo/demo.img /dev/sdX --key out/demo/demo.key\n  \
        build-image flash raspios.sealed.img.zst /dev/disk/by-id/usb-… --key raspios.sealed.key\n  \
        build-image flash disk.img copy.img        (a regular file: written sparse)\n\n\
        A bmap beside the image (IMAGE.bmap, X.img.bmap for X.img.zst, or N.bmap) is used:\n\
        only mapped blocks are written, each range checked against its SHA-256.\n\
        Refused (exit code 7), with nothing written: the system disk (/ or swap), anything\n\
        mounted or busy, a read-only or too small device, and without --yes a partition\n\
        or a non-removable disk.")]
    Flash {
        /// The image: .img or .img.zst
        image: PathBuf,
        /// A whole-disk block device (/dev/sdX, /dev/mmcblkN, /dev/disk/by-id/…) or a file
        target: PathBuf,
        /// Image key file, written onto the boot partition as sealed-secrets/image.key
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// A device's bundle to put onto the boot partition of a base image:
        /// a device directory of `build --devices … --bundles-only` (its
        /// sealed-secrets/bundle and *.key) or a bundle file from
        /// `build-image bundle` (with --key in image-key mode)
        #[arg(long, value_name = "DIR|FILE")]
        bundle: Option<PathBuf>,
        /// Block map (bmaptool 2.x) to use instead of the one found beside the image
        #[arg(long, value_name = "FILE", conflicts_with = "no_bmap")]
        bmap: Option<PathBuf>,
        /// Ignore any bmap: write the whole image
        #[arg(long)]
        no_bmap: bool,
        /// The FAT boot partition for the key and bundle: its number, or its GPT name / FAT label
        #[arg(long, value_name = "N|LABEL")]
        partition: Option<String>,
        /// Allow a non-removable disk or a partition as target
        #[arg(long, short)]
        yes: bool,
        /// Do not read back and compare
        #[arg(long)]
        no_verify: bool,
        /// Overwrite an existing regular file that is not an earlier flash output
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Show an image's partitions, boot partition and bundle header; with
    /// --key, its manifest (names, types, paths, owners; never values)
    #[command(after_help = "EXAMPLES:\n  build-image inspect out/demo/demo.img\n  \
        build-image inspect out/demo/demo.img --key out/demo/demo.key --json")]
    Inspect {
        /// The image file (.img)
        image: PathBuf,
        /// Image key file: also decrypt and show the manifest
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The FAT boot partition: its number, or its GPT name / FAT label
        /// (default: the ESP, else the only FAT partition)
        #[arg(long, value_name = "N|LABEL")]
        partition: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Compute a device's age recipient from its SSH host public key
    #[command(
        after_help = "EXAMPLES:\n  ssh-keyscan -t ed25519 device.local | build-image pubkey --ssh-pubkey -\n  \
        build-image pubkey --ssh-pubkey /etc/ssh/ssh_host_ed25519_key.pub\n\n\
        The recipient equals what `sealed-firstboot pubkey` prints on a device with that\n\
        host key (and what ssh-to-age computes); seal to it with `build --recipient`."
    )]
    Pubkey {
        /// File with ssh-ed25519 public key lines (authorized_keys, known_hosts or
        /// ssh-keyscan format), or - for standard input
        #[arg(long, value_name = "FILE")]
        ssh_pubkey: PathBuf,
    },
    /// Seal an update bundle for devices that are already deployed (no image)
    #[command(after_help = "EXAMPLES:\n  \
        build-image bundle recipe.toml --out out/ --recipient age1…\n  \
        build-image bundle recipe.toml --out out/ --ssh-recipient \"$(ssh-keyscan -t ed25519 kiosk-001 2>/dev/null)\"\n  \
        build-image bundle recipe.toml --out out/ --devices devices.toml --only wifi_psk\n  \
        ssh root@kiosk-001 sealed-firstboot apply - < out/kiosk-001.bundle\n\n\
        OUTPUTS:\n  OUT/NAME.bundle    one device (NAME is the recipe's image name)\n  \
        OUT/DEVICE.bundle  per device of --devices\n  \
        OUT/*.key          the image key, when not sealed to a recipient (0600): copy it \
        to the device and pass `apply --key`, or onto a boot partition as sealed-secrets/image.key\n\n\
        The device applies a bundle only when it is newer than its store: the sealing \
        time (real clock) or --sequence orders them. --only makes a partial bundle: the \
        device replaces the listed secrets and keeps the others.")]
    Bundle {
        /// The recipe file (TOML)
        recipe: PathBuf,
        /// Output directory
        #[arg(long, short)]
        out: PathBuf,
        /// Seal to this device's age recipient (age1…)
        #[arg(long, value_name = "AGE1…", conflicts_with_all = ["ssh_recipient", "devices"])]
        recipient: Option<String>,
        /// Seal to the recipient of this SSH host public key line
        /// ("ssh-ed25519 AAAA…", as ssh-keyscan or ssh_host_ed25519_key.pub print it)
        #[arg(long, value_name = "LINE", conflicts_with = "devices")]
        ssh_recipient: Option<String>,
        /// Devices file (TOML or CSV): one bundle per device, sealed to its
        /// `recipient` (or under its own image key)
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
        /// Only this shard of the devices (I/N)
        #[arg(long, value_name = "I/N", requires = "devices")]
        shard: Option<String>,
        /// A partial bundle with only these secrets or templates (repeat or
        /// separate with commas); the device keeps the rest of its store
        #[arg(long, value_name = "NAME", value_delimiter = ',')]
        only: Vec<String>,
        /// Order the bundle by this sequence number before its sealing time
        #[arg(long, value_name = "N")]
        sequence: Option<u64>,
        /// Replace existing bundle and key files in OUT
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Check that every secret of a recipe can be found (never prints values)
    #[command(
        after_help = "EXAMPLES:\n  build-image check image-recipes/demo/recipe.toml\n  \
        build-image check recipe.toml --json | jq '.[] | select(.present | not)'\n  \
        build-image check recipe.toml --devices devices.toml   (device × secret matrix)\n\n\
        Exit code 4 when a required secret is missing, 5 when one is invalid."
    )]
    Check {
        /// The recipe file (TOML)
        recipe: PathBuf,
        /// Print the table as JSON
        #[arg(long)]
        json: bool,
        /// Show the device × secret matrix of this devices file (TOML or .csv)
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
    },
    /// The team secrets store: encrypted values with descriptions, versions,
    /// scopes and an audit log (see `build-image store --help`)
    Store(build_image::store::cli::StoreArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("build-image: error: {}", chain_message(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        return exit::USAGE;
    }
    if let Some(f) = e.downcast_ref::<build_image::flash::FlashError>() {
        return if f.is_refusal() {
            exit::REFUSED
        } else {
            exit::IMAGE
        };
    }
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<build_image::store::StoreError>() {
            return s.exit_code();
        }
        if let Some(b) = cause.downcast_ref::<BuildError>() {
            return match b {
                BuildError::Recipe(_) => exit::RECIPE,
                BuildError::Secrets(SecretsError::Missing(_)) => exit::MISSING_SECRETS,
                BuildError::Secrets(_) => exit::SECRET_INVALID,
                BuildError::Invalid(_) => exit::RECIPE,
                BuildError::Fleet(f)
                    if f.iter().all(|(_, e)| matches!(e, SecretsError::Missing(_))) =>
                {
                    exit::MISSING_SECRETS
                }
                BuildError::Fleet(_) => exit::SECRET_INVALID,
                _ => exit::IMAGE,
            };
        }
        if cause
            .downcast_ref::<build_image::recipe::RecipeError>()
            .is_some()
        {
            return exit::RECIPE;
        }
    }
    exit::FAILURE
}

/// The bundle's stamp: the real clock now (never `SOURCE_DATE_EPOCH`, which
/// CI pins for reproducible images and would make every rotation look like
/// a replay), and the user's sequence number.
fn created_at(sequence: Option<u64>) -> Stamp {
    Stamp::now().with_sequence(sequence.unwrap_or(0))
}

/// Marks an error as a usage error (exit code 2).
#[derive(Debug)]
struct UsageError;

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid arguments")
    }
}

fn key_mode(key: KeyArgs) -> Result<KeyMode> {
    Ok(match (key.embed_key, key.recipient) {
        (_, Some(r)) => {
            KeyMode::Recipient(age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                anyhow::anyhow!("--recipient {r:?} is not an age X25519 recipient: {e}")
                    .context(UsageError)
            })?)
        }
        (true, None) => KeyMode::Embedded,
        (false, None) => KeyMode::Separate,
    })
}

/// The devices of a devices file (usage errors: exit 2), only shard
/// `I/N` when given.
fn load_devices(
    recipe: &Recipe,
    devices: &std::path::Path,
    shard: Option<&str>,
) -> Result<Vec<build_image::devices::Device>> {
    let names = recipe.secrets.keys().cloned().collect();
    let list = build_image::devices::load(devices, &names)
        .map_err(|e| anyhow::Error::new(e).context(UsageError))?;
    let shard = shard
        .map(build_image::devices::parse_shard)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e).context(UsageError))?;
    Ok(build_image::devices::shard(list, shard))
}

fn selector(partition: Option<String>) -> build_image::image::BootSelector {
    match partition {
        None => build_image::image::BootSelector::Auto,
        Some(p) => match p.parse::<u32>() {
            Ok(n) => build_image::image::BootSelector::Index(n),
            Err(_) => build_image::image::BootSelector::Label(p),
        },
    }
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
            .or_else(|| table.root_partition.clone())
            .map(|p| selector(Some(p))),
    }))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build {
            recipe,
            out,
            key,
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
            let key_mode = key_mode(key)?;
            if let Some(devices) = devices {
                let list = load_devices(&recipe, &devices, shard.as_deref())?;
                for w in build_image::image::host_keys::warnings(&recipe) {
                    eprintln!("build-image: warning: {w}");
                }
                let opts = build_image::fleet::FleetOptions {
                    out_dir: out,
                    key_mode,
                    created_at: created_at(sequence),
                    bundles_only,
                    zst_level: (!no_zst).then_some(zst_level),
                    raw_images,
                    force,
                    agent,
                };
                let progress = build_image::progress::Progress::new(quiet || json);
                let report = build_image::fleet::build_fleet(&recipe, &list, &opts, &progress)?;
                progress.finish();
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else if !quiet {
                    for d in &report.devices {
                        eprintln!(
                            "built {} ({}, bundle {})",
                            d.dir.display(),
                            d.key_mode,
                            d.bundle_id
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let opts = BuildOptions {
                out_dir: out,
                key_mode,
                created_at: created_at(sequence),
                zst_level: (!no_zst).then_some(zst_level),
                force,
                agent,
            };
            let progress = build_image::progress::Progress::new(quiet || json);
            let report = build::build(&recipe, &opts, &progress)?;
            progress.finish();
            for w in &report.warnings {
                eprintln!("build-image: warning: {w}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !quiet {
                eprintln!(
                    "built {} ({} bytes, {} secrets, bundle {})",
                    report.image.display(),
                    report.image_size,
                    report.secrets.iter().filter(|s| s.included).count(),
                    report.bundle_id
                );
                let absent: Vec<&str> = report
                    .secrets
                    .iter()
                    .filter(|s| !s.included)
                    .map(|s| s.name.as_str())
                    .collect();
                if !absent.is_empty() {
                    eprintln!("optional secrets not provided: {}", absent.join(", "));
                }
                match &report.key {
                    Some(k) => eprintln!(
                        "image key: {} (mode 0600): keep it apart from the image; put it on the boot partition as sealed-secrets/image.key when flashing",
                        k.display()
                    ),
                    None if report.key_mode == "embedded" => eprintln!(
                        "image key embedded in the image: anyone with the image file can read the secrets"
                    ),
                    None => eprintln!("sealed to the device recipient: only that device can open it"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject {
            image,
            recipe,
            output,
            in_place,
            partition,
            key,
            agent,
            report: ReportArgs { json, quiet },
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let agent = agent_request(&recipe, agent)?;
            let opts = build_image::inject::InjectOptions {
                agent,
                output,
                in_place,
                selector: selector(partition),
                created_at: created_at(key.sequence),
                key_mode: key_mode(key)?,
            };
            let progress = build_image::progress::Progress::new(quiet || json);
            let report = build_image::inject::inject(
                &recipe,
                &image,
                &opts,
                &Default::default(),
                &progress,
            )?;
            progress.finish();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !quiet {
                eprintln!(
                    "sealed {} secrets into {} (boot partition {}, bundle {})",
                    report.secrets.iter().filter(|s| s.included).count(),
                    report.image.display(),
                    report.boot_partition,
                    report.bundle_id
                );
                if let Some(k) = &report.key {
                    eprintln!(
                        "image key: {} (mode 0600): keep it apart from the image",
                        k.display()
                    );
                }
            }
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
            let opts = build_image::flash::FlashOptions {
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
            let r = build_image::flash::flash(&image, &target, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if !quiet {
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
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            image,
            key,
            partition,
            json,
        } => {
            let selector = match partition {
                None => build_image::image::BootSelector::Auto,
                Some(p) => match p.parse::<u32>() {
                    Ok(n) => build_image::image::BootSelector::Index(n),
                    Err(_) => build_image::image::BootSelector::Label(p),
                },
            };
            let report =
                build_image::inspect::inspect(&image, &selector, key.as_deref()).map_err(|e| {
                    anyhow::Error::new(e).context(format!("inspecting {}", image.display()))
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", build_image::inspect::render(&report));
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
            report: ReportArgs { json, quiet },
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let key_mode = match (recipient, ssh_recipient) {
                (Some(r), _) => key_mode(KeyArgs {
                    embed_key: false,
                    recipient: Some(r),
                    sequence,
                })?,
                (None, Some(line)) => KeyMode::Recipient(
                    sealed_firstboot::identity::recipient_from_ssh_public_key(&line)
                        .map_err(|e| anyhow::anyhow!("--ssh-recipient: {e}").context(UsageError))?,
                ),
                (None, None) => KeyMode::Separate,
            };
            let opts = build_image::update::BundleOptions {
                out_dir: out,
                key_mode,
                created_at: created_at(sequence),
                only,
                force,
            };
            let report = match devices {
                Some(devices) => {
                    let list = load_devices(&recipe, &devices, shard.as_deref())?;
                    build_image::update::fleet(&recipe, &list, &opts)?
                }
                None => build_image::update::single(&recipe, &opts)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !quiet {
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
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey { ssh_pubkey } => {
            let mut text = String::new();
            if ssh_pubkey.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading standard input")?;
            } else {
                text = std::fs::read_to_string(&ssh_pubkey)
                    .with_context(|| format!("reading {}", ssh_pubkey.display()))?;
            }
            let mut found = 0;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || !line.contains("ssh-ed25519") {
                    continue;
                }
                let r = sealed_firstboot::identity::recipient_from_ssh_public_key(line)
                    .map_err(|e| anyhow::anyhow!("{} line {}: {e}", ssh_pubkey.display(), n + 1))?;
                println!("{r}");
                found += 1;
            }
            if found == 0 {
                anyhow::bail!("{}: no ssh-ed25519 public key found", ssh_pubkey.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(args) => {
            build_image::store::cli::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            recipe,
            json,
            devices: Some(devices),
        } => {
            let recipe = Recipe::load(&recipe).map_err(BuildError::from)?;
            let list = load_devices(&recipe, &devices, None)?;
            let rows = build_image::store::recipe::matrix(&recipe, &list);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", build_image::store::recipe::render_matrix(&rows));
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
            for w in build_image::image::host_keys::warnings(&recipe) {
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
                    println!(
                        "{mark:<2} {:<24} {:<11} {:<9} {:<34} {}",
                        r.name,
                        r.kind.as_str(),
                        if r.required { "required" } else { "optional" },
                        r.source,
                        r.description.as_deref().unwrap_or("")
                    );
                    if let Some(how) = &r.how {
                        println!("   └ missing: {how}");
                    }
                    if let Some(e) = &r.error {
                        let what = if r.present { "invalid" } else { "failed" };
                        println!("   └ {what}: {e}");
                    }
                }
            }
            Ok(if invalid {
                ExitCode::from(exit::SECRET_INVALID)
            } else if missing {
                ExitCode::from(exit::MISSING_SECRETS)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
