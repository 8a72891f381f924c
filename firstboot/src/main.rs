//! `sealed-firstboot`: the device side. Deliberately small: no CLI framework.

use anyhow::{bail, Context, Result};
use sealed_firstboot::config::{self, Config};
use sealed_firstboot::provision::{self, Outcome};
use sealed_firstboot::runtime::UnsealOptions;
use sealed_firstboot::store::Store;
use sealed_firstboot::unseal::{self, UnsealOutcome};
use sealed_firstboot::{identity, store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
sealed-firstboot: bind an image's sealed secrets to this device

USAGE:
    sealed-firstboot [--root DIR] [--boot-dir DIR] COMMAND

COMMANDS:
    run        provision if a bundle is on the boot partition, then unseal
               (what sealed-firstboot.service runs at every boot)
    provision  open the bundle with its image key (or the device identity),
               reseal every secret to the device identity into the store,
               then overwrite and delete bundle and key from the boot partition
    unseal     decrypt the store into /run/secrets (new generation, atomic swap)
    pubkey     print the device's age recipient (age1...); creates the
               persisted identity if there is none yet
    status     list the secrets in the store with ✓/✗ for /run/secrets (never values)

OPTIONS:
    --root DIR      operate on the tree at DIR instead of / (tests, image prep)
    --boot-dir DIR  the boot partition mount point, absolute on the device
                    (default: boot_dir= in /etc/sealed-firstboot.conf, else the
                    first of /boot/efi, /boot/firmware, /boot holding sealed-secrets/)
    -h, --help      show this help
    -V, --version   show the version

EXIT CODES:
    0  success
    1  failure (nothing was changed that could lose a secret)
    2  usage error
    3  run: the bundle was refused or could not be applied, but the secrets
       already in the store were unsealed
    4  run, unseal: some secrets could not be unsealed (each is named: an
       owner or group missing on the device, a damaged store file); every
       other secret is in /run/secrets

Every command takes the device lock (/var/lib/sealed-secrets/.lock): a
second sealed-firstboot waits for the first (up to 5 minutes).

EXAMPLES:
    sealed-firstboot run
    sealed-firstboot --root /mnt/device-root pubkey
    sealed-firstboot --boot-dir /boot/firmware provision
";

struct Args {
    root: PathBuf,
    boot_dir: Option<PathBuf>,
    command: String,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut root = PathBuf::from("/");
    let mut boot_dir = None;
    let mut command = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy().into_owned();
        match s.as_str() {
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("sealed-firstboot {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--root" => root = it.next().ok_or("--root needs a directory")?.into(),
            "--boot-dir" => {
                boot_dir = Some(it.next().ok_or("--boot-dir needs a directory")?.into())
            }
            _ if s.starts_with("--root=") => root = PathBuf::from(&s["--root=".len()..]),
            _ if s.starts_with("--boot-dir=") => {
                boot_dir = Some(PathBuf::from(&s["--boot-dir=".len()..]))
            }
            "run" | "provision" | "unseal" | "pubkey" | "status" if command.is_none() => {
                command = Some(s)
            }
            _ => return Err(format!("unexpected argument {s:?}")),
        }
    }
    let command = command.ok_or("no command given")?;
    Ok(Some(Args {
        root,
        boot_dir,
        command,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealed-firstboot: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealed-firstboot: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code: some secrets could not be unsealed, the others were.
const EXIT_PARTIAL: u8 = 4;
/// Exit code: the bundle was refused, the existing secrets were unsealed.
const EXIT_REFUSED: u8 = 3;

fn dispatch(args: &Args) -> Result<ExitCode> {
    let root = &args.root;
    let store = Store::new(root);
    let lock_path = store.dir().join(".lock");
    let _lock = store
        .lock(store::LOCK_WAIT, || {
            eprintln!(
                "sealed-firstboot: waiting for another sealed-firstboot to finish (lock {})",
                lock_path.display()
            )
        })
        .context("taking the device lock")?;
    let config = config::load(root)?;
    match args.command.as_str() {
        "provision" => {
            do_provision(args, &config)?;
            Ok(ExitCode::SUCCESS)
        }
        "unseal" => Ok(exit_for(do_unseal(root)?, false)),
        "run" => {
            let provisioned = do_provision(args, &config);
            if let Err(e) = &provisioned {
                eprintln!("sealed-firstboot: error: {e:#}");
            }
            let outcome = do_unseal(root)?;
            if provisioned.is_err() && !outcome.had_store {
                bail!("the bundle was not applied and there are no earlier secrets to unseal");
            }
            if provisioned.is_err() {
                eprintln!("sealed-firstboot: the secrets already in the store were unsealed");
            }
            Ok(exit_for(outcome, provisioned.is_err()))
        }
        "pubkey" => {
            let device = identity::load_or_create(root, config.identity)
                .context("loading the device identity")?;
            println!("{}", device.recipient());
            if let Some(derived) = identity::ssh_derived(root).unwrap_or(None) {
                let derived = derived.to_public().to_string();
                if derived != device.recipient().to_string() {
                    eprintln!(
                        "sealed-firstboot: note: this is the persisted identity ({}); the SSH host key now derives another recipient, {derived}, which only opens bundles sealed to it and is never used for the store",
                        device.source.map_or("origin not recorded", |s| s.as_str())
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "status" => status(root),
        other => bail!("unknown command {other}"),
    }
}

fn exit_for(outcome: UnsealOutcome, refused: bool) -> ExitCode {
    if !outcome.failed.is_empty() {
        ExitCode::from(EXIT_PARTIAL)
    } else if refused {
        ExitCode::from(EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn do_provision(args: &Args, config: &Config) -> Result<()> {
    let boot = provision::boot_dir_with(&args.root, args.boot_dir.as_deref(), config);
    match provision::provision_with(&args.root, &boot, now(), config).context("provisioning")? {
        Outcome::NoBundle => eprintln!("sealed-firstboot: no bundle in {}", boot.display()),
        Outcome::Applied { bundle_id, secrets } => eprintln!(
            "sealed-firstboot: applied bundle {bundle_id} ({secrets} secrets); bundle and key wiped"
        ),
        Outcome::AlreadyApplied { bundle_id } => eprintln!(
            "sealed-firstboot: bundle {bundle_id} was already applied; bundle and key wiped"
        ),
        Outcome::WipedLeftover => eprintln!(
            "sealed-firstboot: removed the remains of an interrupted wipe from {}",
            boot.display()
        ),
    }
    Ok(())
}

fn do_unseal(root: &Path) -> Result<UnsealOutcome> {
    let is_root = rustix::process::geteuid().is_root();
    let opts = UnsealOptions {
        mount_ramfs: is_root && root == Path::new("/"),
        apply_ownership: is_root,
    };
    let outcome = unseal::unseal_store(root, &opts).context("unsealing")?;
    for note in &outcome.notes {
        eprintln!("sealed-firstboot: {note}");
    }
    if !outcome.had_store {
        eprintln!("sealed-firstboot: the store is empty; nothing to unseal");
        return Ok(outcome);
    }
    eprintln!(
        "sealed-firstboot: unsealed {} secrets into /run/secrets (generation {})",
        outcome.written.len(),
        outcome.generation
    );
    for (name, why) in &outcome.failed {
        eprintln!("sealed-firstboot: error: secret {name} was not unsealed: {why}");
    }
    Ok(outcome)
}

fn status(root: &Path) -> Result<ExitCode> {
    let store = Store::new(root);
    let Some(current) = store.current().context("opening the store")? else {
        println!(
            "no secrets provisioned (store {} is empty)",
            store::STORE_DIR
        );
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "bundle {} (created {}, applied {})",
        current.state.bundle_id, current.state.created_at, current.state.applied_at
    );
    let mut all_ok = true;
    for e in current.manifest.entries() {
        let sealed = current
            .dir
            .join("secrets")
            .join(format!("{}.age", e.name))
            .is_file();
        let live = exists_in_root(root, &e.path);
        let ok = sealed && live;
        all_ok &= ok;
        println!(
            "{} {:<24} {:<11} {:<32} {}:{} {:04o}{}",
            if ok { "✓" } else { "✗" },
            e.name,
            e.kind.as_str(),
            e.path,
            e.owner,
            e.group,
            e.mode,
            if !sealed {
                "  (missing from store)"
            } else if !live {
                "  (not unsealed)"
            } else {
                ""
            }
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether a device path exists inside `root`, resolving symlinks whose
/// absolute targets are device paths (as `/run/x -> /run/secrets/...`).
fn exists_in_root(root: &Path, device_path: &str) -> bool {
    let mut path = root.join(device_path.trim_start_matches('/'));
    for _ in 0..8 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&path) {
                Ok(t) if t.is_absolute() => {
                    path = root.join(t.strip_prefix("/").unwrap_or(&t));
                }
                Ok(t) => {
                    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    path = parent.join(t);
                }
                Err(_) => return false,
            },
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}
