//! `sealed-firstboot`: the device side. Deliberately small: no CLI framework.

use anyhow::{bail, Context, Result};
use sealed_firstboot::provision::{self, Outcome};
use sealed_firstboot::runtime::{self, SecretFile, UnsealOptions};
use sealed_firstboot::store::Store;
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
    pubkey     print the device's age recipient (age1...)
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

fn dispatch(args: &Args) -> Result<ExitCode> {
    let root = &args.root;
    match args.command.as_str() {
        "provision" => {
            do_provision(args)?;
            Ok(ExitCode::SUCCESS)
        }
        "unseal" => {
            do_unseal(root)?;
            Ok(ExitCode::SUCCESS)
        }
        "run" => {
            let provisioned = do_provision(args);
            if let Err(e) = &provisioned {
                eprintln!("sealed-firstboot: error: {e:#}");
                eprintln!("sealed-firstboot: unsealing the secrets already in the store");
            }
            do_unseal(root)?;
            Ok(if provisioned.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        "pubkey" => {
            let device = identity::load_or_create(root).context("loading the device identity")?;
            println!("{}", device.recipient());
            Ok(ExitCode::SUCCESS)
        }
        "status" => status(root),
        other => bail!("unknown command {other}"),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn do_provision(args: &Args) -> Result<()> {
    let boot = provision::boot_dir(&args.root, args.boot_dir.as_deref())?;
    match provision::provision(&args.root, &boot, now()).context("provisioning")? {
        Outcome::NoBundle => eprintln!("sealed-firstboot: no bundle in {}", boot.display()),
        Outcome::Applied { bundle_id, secrets } => eprintln!(
            "sealed-firstboot: applied bundle {bundle_id} ({secrets} secrets); bundle and key wiped"
        ),
        Outcome::AlreadyApplied { bundle_id } => eprintln!(
            "sealed-firstboot: bundle {bundle_id} was already applied; bundle and key wiped"
        ),
    }
    Ok(())
}

fn do_unseal(root: &Path) -> Result<()> {
    let store = Store::new(root);
    let Some(current) = store.current().context("opening the store")? else {
        eprintln!("sealed-firstboot: the store is empty; nothing to unseal");
        return Ok(());
    };
    let device = identity::load(root)
        .context("loading the device identity")?
        .context("the store exists but the device identity is missing")?;
    let values = current.decrypt_all(&device.identity)?;
    let mut rendered = std::collections::BTreeMap::new();
    for t in &current.manifest.templates {
        let text = values
            .get(&t.name)
            .map(|v| v.as_slice())
            .unwrap_or_default();
        let out = sealed_firstboot::bundle::render(text, &values)
            .map_err(|e| anyhow::anyhow!("rendering template {}: {e}", t.name))?;
        rendered.insert(t.name.clone(), out);
    }
    let mut files: Vec<SecretFile<'_>> = Vec::new();
    for entry in &current.manifest.secrets {
        if let Some(v) = values.get(&entry.name) {
            files.push(SecretFile { entry, value: v });
        }
    }
    for entry in &current.manifest.templates {
        if let Some(v) = rendered.get(&entry.name) {
            files.push(SecretFile { entry, value: v });
        }
    }
    let is_root = rustix::process::geteuid().is_root();
    let opts = UnsealOptions {
        mount_ramfs: is_root && root == Path::new("/"),
        apply_ownership: is_root,
    };
    let report = runtime::unseal(root, &files, &opts).context("unsealing")?;
    eprintln!(
        "sealed-firstboot: unsealed {} secrets into /run/secrets (generation {})",
        report.written.len(),
        report.generation
    );
    Ok(())
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
