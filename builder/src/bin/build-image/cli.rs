//! The command line: clap definitions, help texts and examples.

use std::path::PathBuf;

use build_image::image::PartitionSelector;
use clap::{Parser, Subcommand};

/// `--recipient`: an age1… recipient or an ssh-ed25519 public key, checked
/// (small-order keys refused).
pub(crate) fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    build_image::recipient::parse(s)
}

/// `--ssh-recipient`: an ssh-ed25519 public key line.
pub(crate) fn parse_ssh_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    if !s.split_whitespace().any(|t| t == "ssh-ed25519") {
        return Err("not an ssh-ed25519 public key line".into());
    }
    build_image::recipient::parse(s)
}

/// `--shard I/N` (1-based, 1 <= I <= N).
pub(crate) fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("takes I/N, e.g. 2/4")?;
    let i: usize = i.trim().parse().map_err(|_| "I is not a number")?;
    let n: usize = n.trim().parse().map_err(|_| "N is not a number")?;
    if n == 0 || i == 0 || i > n {
        return Err("need 1 <= I <= N".into());
    }
    Ok((i, n))
}

/// `--partition`, `--root-partition`: a partition number, else a GPT name
/// or filesystem label.
pub(crate) fn parse_partition(s: &str) -> Result<PartitionSelector, String> {
    Ok(PartitionSelector::from_arg(s))
}

#[derive(Parser)]
#[command(
    name = "build-image",
    version,
    about = "Build device disk images with sealed secrets baked in",
    long_about = "Build device disk images with sealed secrets baked in.\n\n\
        build-image reads a recipe (TOML), collects the secrets it names from their \
        sources (environment, files, commands, dotenv files), seals them under a fresh \
        image key, signs the bundle with the team's signing key and writes it into a disk image \
        it assembles (GPT or MBR, FAT boot partition, ext4 root, whose configuration pins the \
        signer). On first boot sealed-firstboot checks the signature and reseals the secrets \
        to the device.",
    after_help = "EXIT CODES:\n  0 success   1 failure   2 usage   3 invalid recipe\n  \
        4 required secrets missing   5 a secret value is invalid or its source failed\n  \
        6 image assembly or output failed   7 flash refused the target (nothing written)\n  \
        8 store: the name already exists   9 store: no such secret   10 store: no identity or it cannot decrypt\n  \
        11 store: not what its key authenticates (tampered, a link in it, format 1: migrate)"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How the bundle is sealed (default: a fresh image key written beside the image).
#[derive(clap::Args)]
pub(crate) struct KeyArgs {
    /// Store the image key on the boot partition: the image file alone then
    /// reveals the secrets (weaker; for labs and demos)
    #[arg(long, conflicts_with = "recipient")]
    pub(crate) embed_key: bool,
    /// Seal straight to a known device's age recipient (age1…): no image key
    #[arg(long, value_name = "AGE1…", value_parser = parse_recipient)]
    pub(crate) recipient: Option<age::x25519::Recipient>,
    /// Order the bundle by this sequence number before its sealing time: a
    /// device applies a bundle only when its (sequence, sealing time) is
    /// newer than what it holds. Without it, the real clock at sealing
    /// (nanoseconds; never SOURCE_DATE_EPOCH) orders bundles
    #[arg(long, value_name = "N")]
    pub(crate) sequence: Option<u64>,
}

/// How the bundle is signed.
#[derive(clap::Args)]
pub(crate) struct SigningArgs {
    /// The signing key (from `build-image keygen --signing`). Default:
    /// $SEALED_IMAGE_SIGNING_KEY (the key itself), else the file
    /// $SEALED_IMAGE_SIGNING_KEY_FILE, else the recipe's [signing] key. The
    /// image pins its public key (and [signing] trust): its device applies
    /// only bundles signed by them
    #[arg(long, value_name = "FILE")]
    pub(crate) signing_key: Option<std::path::PathBuf>,
    /// Seal an unsigned bundle (format 2) for devices that pin no signer
    /// (agents from before signatures read only format 2). Never the
    /// default: a device that pins a signer refuses it
    #[arg(long, conflicts_with = "signing_key")]
    pub(crate) unsigned: bool,
}

/// Installing the device agent into the image's root filesystem.
#[derive(clap::Args)]
pub(crate) struct AgentArgs {
    /// Install sealed-firstboot into the image's ext4 root filesystem (no
    /// root, loop device or mount: debugfs at the partition's offset): the
    /// binary for the root's architecture (read from the ELF header of
    /// /usr/bin/env), its unit enabled under sysinit.target.wants/, and
    /// /etc/sealed-firstboot.conf with the boot partition's mount point and
    /// the pinned signers.
    /// Running it again updates in place. Same as `[agent] install = true`
    #[arg(long)]
    pub(crate) install_agent: bool,
    /// The sealed-firstboot binary to install (implies --install-agent).
    /// Default: sealed-firstboot-ARCH shipped with build-image (beside it,
    /// in ../lib/sealed-image, or target/device from
    /// scripts/build-device-binaries; only $SEALED_IMAGE_AGENT_DIR when set)
    #[arg(long, value_name = "FILE")]
    pub(crate) agent: Option<PathBuf>,
    /// With --install-agent: where the device mounts the boot partition
    /// (default: the image's /etc/fstab line for it, e.g. /boot/firmware)
    #[arg(long, value_name = "DIR")]
    pub(crate) boot_dir: Option<String>,
    /// With --install-agent: the root partition, by number or GPT name /
    /// ext label, case ignored (default: the only ext4 partition besides the
    /// boot one)
    #[arg(long, value_name = "N|LABEL", value_parser = parse_partition)]
    pub(crate) root_partition: Option<PartitionSelector>,
}

/// What is printed on success.
#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// Print a JSON summary on stdout (never values or keys)
    #[arg(long)]
    pub(crate) json: bool,
    /// Print nothing on success
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Build an image from a recipe
    #[command(after_help = "EXAMPLES:\n  \
        build-image build image-recipes/demo/recipe.toml --out out/\n  \
        WIFI_PSK=… build-image build recipe.toml --out out/ --json\n  \
        build-image build recipe.toml --out out/ --recipient age1…\n  \
        build-image build recipe.toml --out out/ --signing-key signing.key\n  \
        SEALED_IMAGE_SIGNING_KEY=\"$CI_SIGNING_KEY\" build-image build recipe.toml --out out/\n\n\
        The bundle is signed and the image's /etc/sealed-firstboot.conf pins the signer\n\
        (and the recipe's [signing] trust): its device applies only bundles they signed.\n\n\
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
        signing: SigningArgs,
        #[command(flatten)]
        report: ReportArgs,
        /// Fleet build: one image per device listed in FILE (TOML or .csv), each
        /// with its own image key, into OUT/DEVICE/
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
        /// With --devices: build only shard I of N (1-based), for a CI job matrix
        #[arg(long, value_name = "I/N", requires = "devices", value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
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
    /// Seal a recipe's secrets into an existing image (.img, .img.zst or
    /// .img.xz), optionally installing sealed-firstboot into it
    #[command(after_help = "EXAMPLES:\n  \
        build-image inject raspios-lite.img.zst --recipe pi.toml\n      \
        → raspios-lite.sealed.img.zst and raspios-lite.sealed.key\n  \
        build-image inject 2024-11-19-raspios-bookworm-arm64-lite.img.xz --recipe pi.toml --install-agent\n      \
        → …lite.sealed.img (sparse) with sealed-firstboot for aarch64 installed and enabled\n  \
        build-image inject disk.img --recipe r.toml --in-place --partition bootfs\n\n\
        The FAT boot partition is written in place (no root, no loop device, no mount);\n\
        every other byte of the image stays identical. The recipe's [[partition]]\n\
        tables are not needed: only [image] name and the secrets.")]
    Inject {
        /// The existing image: .img, .img.zst (then the output is .img.zst
        /// too) or .img.xz (then a sparse .img); the format is read from its
        /// magic number
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
        /// The FAT boot partition: its number, or its GPT name / FAT label, case ignored
        /// (default: the ESP, else the only FAT partition)
        #[arg(long, value_name = "N|LABEL", value_parser = parse_partition)]
        partition: Option<PartitionSelector>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        signing: SigningArgs,
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
        /// The image: .img, .img.zst or .img.xz (read by its magic number)
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
        /// The FAT boot partition for the key and bundle: its number, or its
        /// GPT name / FAT label, case ignored
        #[arg(long, value_name = "N|LABEL", value_parser = parse_partition)]
        partition: Option<PartitionSelector>,
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
        /// The FAT boot partition: its number, or its GPT name / FAT label, case ignored
        /// (default: the ESP, else the only FAT partition)
        #[arg(long, value_name = "N|LABEL", value_parser = parse_partition)]
        partition: Option<PartitionSelector>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Compute a device's age recipient from its SSH host public key, or
    /// print a signing key's public key
    #[command(
        after_help = "EXAMPLES:\n  ssh-keyscan -t ed25519 device.local | build-image pubkey --ssh-pubkey -\n  \
        build-image pubkey --ssh-pubkey /etc/ssh/ssh_host_ed25519_key.pub\n  \
        build-image pubkey --signing-key signing.key\n\n\
        The recipient equals what `sealed-firstboot pubkey` prints on a device with that\n\
        host key (and what ssh-to-age computes); seal to it with `build --recipient`.\n\
        A signing key's public key (sealed-signer1…) is what devices pin."
    )]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["ssh_pubkey", "signing_key"])))]
    Pubkey {
        /// File with ssh-ed25519 public key lines (authorized_keys, known_hosts or
        /// ssh-keyscan format), or - for standard input
        #[arg(long, value_name = "FILE")]
        ssh_pubkey: Option<PathBuf>,
        /// A signing key file: print its public key (sealed-signer1…)
        #[arg(long, value_name = "FILE")]
        signing_key: Option<PathBuf>,
    },
    /// Create a signing key: the private key into a new file (0600), the
    /// public key (one line) on stdout
    #[command(after_help = "EXAMPLES:\n  \
        build-image keygen --signing -o signing.key\n      \
        → sealed-signer1… on stdout: the public key devices pin\n\n\
        Keep the key like an image key (a CI secret: SEALED_IMAGE_SIGNING_KEY holds its\n\
        text): whoever holds it can sign bundles that every device pinning it applies.\n\
        An existing file is never replaced. Several keys can be trusted at once\n\
        ([signing] trust in the recipe); `bundle --set-signers` retires a leaked one.")]
    Keygen {
        /// A signing key (Ed25519), the only kind there is
        #[arg(long, required = true)]
        signing: bool,
        /// Where to write the private key (created, never replaced)
        #[arg(long, short, value_name = "FILE", default_value = "signing.key")]
        output: PathBuf,
    },
    /// Seal an update bundle for devices that are already deployed (no image)
    #[command(after_help = "EXAMPLES:\n  \
        build-image bundle recipe.toml --out out/ --recipient age1…\n  \
        build-image bundle recipe.toml --out out/ --ssh-recipient \"$(ssh-keyscan -t ed25519 kiosk-001 2>/dev/null)\"\n  \
        build-image bundle recipe.toml --out out/ --devices devices.toml --only wifi_psk\n  \
        ssh root@kiosk-001 sealed-firstboot apply - < out/kiosk-001.bundle\n  \
        build-image bundle recipe.toml --out out/ --devices devices.toml --signing-key old.key \\\n      \
        --set-signers \"$(build-image pubkey --signing-key new.key)\" --signers-only\n      \
        (retire old.key: signed with a key the devices pin now, naming the ones they pin next)\n\n\
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
        #[arg(long, value_name = "AGE1…", conflicts_with_all = ["ssh_recipient", "devices"],
              value_parser = parse_recipient)]
        recipient: Option<age::x25519::Recipient>,
        /// Seal to the recipient of this SSH host public key line
        /// ("ssh-ed25519 AAAA…", as ssh-keyscan or ssh_host_ed25519_key.pub print it)
        #[arg(long, value_name = "LINE", conflicts_with = "devices",
              value_parser = parse_ssh_recipient)]
        ssh_recipient: Option<age::x25519::Recipient>,
        /// Devices file (TOML or CSV): one bundle per device, sealed to its
        /// `recipient` (or under its own image key)
        #[arg(long, value_name = "FILE")]
        devices: Option<PathBuf>,
        /// Only this shard of the devices (I/N)
        #[arg(long, value_name = "I/N", requires = "devices", value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
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
        signing: SigningArgs,
        /// Make the devices pin these signers instead of the ones they pin now
        /// (sealed-signer1…; repeat or separate with commas): retires a leaked
        /// key fleet-wide. The bundle must be signed by a key they pin now
        #[arg(
            long,
            value_name = "SIGNER",
            value_delimiter = ',',
            conflicts_with = "unsigned"
        )]
        set_signers: Vec<String>,
        /// With --set-signers: a bundle with no secrets, only the new signers
        /// (the devices keep their store)
        #[arg(long, requires = "set_signers", conflicts_with = "only")]
        signers_only: bool,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Check that every secret of a recipe can be found (never prints values)
    #[command(
        after_help = "EXAMPLES:\n  build-image check image-recipes/demo/recipe.toml\n  \
        build-image check recipe.toml --json | jq '.[] | select(.present | not)'\n  \
        build-image check recipe.toml --devices devices.toml   (device × secret matrix)\n\n\
        Exit code 4 when a required secret is missing, 5 when one is invalid, \
        11 when the store is not what its key authenticates (10: no identity for it)."
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
    Store(crate::store::StoreArgs),
    /// A web page and a REST API over the store: secrets, what each recipe
    /// needs and what is missing (an admin console for a trusted machine)
    Serve(crate::serve::ServeArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_one_based_and_within_n() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        assert_eq!(parse_shard(" 1 / 1 ").unwrap(), (1, 1));
        for bad in ["0/3", "4/3", "x", "1/0", "a/2", "1/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partitions_are_numbers_or_labels() {
        assert_eq!(parse_partition("2").unwrap(), PartitionSelector::Index(2));
        assert_eq!(
            parse_partition("bootfs").unwrap(),
            PartitionSelector::Label("bootfs".into())
        );
    }

    #[test]
    fn an_ssh_recipient_must_be_an_ssh_key_line() {
        let age = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";
        assert!(parse_recipient(age).is_ok());
        assert_eq!(
            parse_ssh_recipient(age).unwrap_err(),
            "not an ssh-ed25519 public key line"
        );
    }
}
