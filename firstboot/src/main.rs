//! `sealed-firstboot`: the device side. Deliberately small: no CLI
//! framework; argument handling only, the flows live in the library.

use anyhow::{bail, Context, Result};
use sealed_bundle::report::chain_message;
use sealed_bundle::{self as bundle, ImageKey};
use sealed_firstboot::config::{self, Config};
use sealed_firstboot::provision::{self, Applied, Outcome};
use sealed_firstboot::runtime::UnsealOptions;
use sealed_firstboot::store::Store;
use sealed_firstboot::unseal::{self, UnsealOutcome};
use sealed_firstboot::{identity, restart, status, store};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
sealed-firstboot: bind an image's sealed secrets to this device

USAGE:
    sealed-firstboot [--root DIR] [--boot-dir DIR] COMMAND [ARGS]

COMMANDS:
    run        provision if a bundle is on the boot partition, then unseal
               (what sealed-firstboot.service runs at every boot)
    provision  check the bundle's signature (with signers pinned, only theirs
               is accepted), open it with its image key (or the device
               identity), reseal every secret to the device identity into the
               store, then overwrite and delete bundle and key from the boot
               partition (a bundle refused for its signature is wiped too)
    unseal     decrypt the store into /run/secrets (new generation, atomic swap);
               the secrets that name a credential also into /run/credstore
               (credential = NAME) or /etc/credstore.encrypted
               (credential-encrypted = NAME, through systemd-creds); then
               run the restarts still due (secrets changed under running
               units by an apply cut short: recorded before the swap)
    apply FILE|- [--key FILE] [--no-restart]
               apply an update bundle (from `build-image bundle`) on a running
               device, from a file or standard input, with the same rules as
               provision (signed by a pinned signer, newer than the store,
               authenticated, validated as a whole, crash-safe);
               a partial bundle replaces only the secrets it lists; the
               same bundle again finishes an apply that was cut short. Then
               unseal, and restart (try-restart) or reload the units that
               the changed secrets name in restart-units / reload-units (with
               --root, no unit of this machine: it says what it would run)
    pubkey [--json]
               print the device's age recipient (age1...); creates the
               identity if there is none yet; says how it is bound (a file,
               sealed by the TPM2, derived from the Raspberry Pi OTP key)
    identity migrate --to tpm2
               move a file identity into the TPM2 (same key; the file is
               overwritten and removed once the sealed form is proven to
               decrypt; crash-safe)
    status [--json]
               the applied bundle, the identity and its binding, the pinned
               signers (and where they come from), ✓/✗ per secret (in the
               store, live under /run, its credentials); never values

OPTIONS:
    --root DIR      operate on the tree at DIR instead of / (tests, image prep):
                    nothing outside it is read or written, no unit restarted,
                    as root, a tree another user could change is refused,
                    this machine's TPM and OTP key never used (identity = tpm2,
                    rpi-otp and credential-encrypted need
                    $SEALED_FIRSTBOOT_TOOL_DIR: a directory holding the
                    systemd-creds and rpi-fw-crypto to run instead, owned by
                    the caller or root; refused without --root, where the
                    system's own tools run by absolute path, clean environment)
    --boot-dir DIR  the boot partition mount point, absolute on the device
                    (default: boot_dir in /etc/sealed-firstboot.conf, else the
                    first of /boot/efi, /boot/firmware, /boot holding sealed-secrets/)
    -h, --help      show this help
    -V, --version   show the version

EXIT CODES:
    0  success
    1  failure (nothing was changed that could lose a secret)
    2  usage error
    3  run: the bundle was refused or could not be applied, but the secrets
       already in the store were unsealed
    4  run, unseal, apply: some secrets could not be unsealed (each is named:
       an owner or group missing on the device, a damaged store file, a
       link path outside /run/secrets squatted or in a directory another
       user can write: never followed or replaced), or a
       unit could not be restarted; every other secret is in /run/secrets
    5  status: something is not right (a secret missing from the store or
       not live)

Every command takes the device lock (/var/lib/sealed-secrets/.lock): a
second sealed-firstboot waits for the first (up to 5 minutes).

CONFIGURATION (/etc/sealed-firstboot.conf, key = value lines):
    boot_dir = /boot/firmware   the boot partition's mount point
    identity = generated        or ssh-host-key, tpm2 (sealed by the TPM2),
                                rpi-otp (derived from the Pi's OTP key)
    tpm2_pcrs = 7+14            the PCRs a TPM-sealed identity is bound to
                                (default none: updates never lock it out)
    credential_key = host       for credential-encrypted: host, tpm2 or
                                host+tpm2 (default host+tpm2 with
                                identity = tpm2, else host)
    signer = sealed-signer1...  a pinned signer (one line each); with any,
                                unsigned bundles are refused
    allow_path = /run/...       a /run prefix bundles may write to although
                                the default rule refuses it

EXAMPLES:
    sealed-firstboot run
    sealed-firstboot --root /mnt/device-root pubkey
    ssh root@kiosk-001 sealed-firstboot apply - < kiosk-001.bundle
    sealed-firstboot status --json
    sealed-firstboot identity migrate --to tpm2
";

struct Args {
    root: PathBuf,
    boot_dir: Option<PathBuf>,
    command: String,
    /// `apply`: the bundle file, or `-` for standard input.
    file: Option<String>,
    key: Option<PathBuf>,
    no_restart: bool,
    json: bool,
    /// `identity migrate --to BINDING`.
    migrate_to: Option<String>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        root: PathBuf::from("/"),
        boot_dir: None,
        command: String::new(),
        file: None,
        key: None,
        no_restart: false,
        json: false,
        migrate_to: None,
    };
    let mut identity_verb: Option<String> = None;
    let mut command = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy().into_owned();
        let value = |it: &mut dyn Iterator<Item = std::ffi::OsString>, flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match s.as_str() {
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("sealed-firstboot {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--root" => args.root = value(&mut it, "--root")?,
            "--boot-dir" => args.boot_dir = Some(value(&mut it, "--boot-dir")?),
            _ if s.starts_with("--root=") => args.root = PathBuf::from(&s["--root=".len()..]),
            _ if s.starts_with("--boot-dir=") => {
                args.boot_dir = Some(PathBuf::from(&s["--boot-dir=".len()..]))
            }
            "--key" if command.as_deref() == Some("apply") => {
                args.key = Some(value(&mut it, "--key")?)
            }
            "--no-restart" if command.as_deref() == Some("apply") => args.no_restart = true,
            "--json" if matches!(command.as_deref(), Some("status" | "pubkey")) => args.json = true,
            "run" | "provision" | "unseal" | "pubkey" | "status" | "apply" | "identity"
                if command.is_none() =>
            {
                command = Some(s)
            }
            "migrate" if command.as_deref() == Some("identity") && identity_verb.is_none() => {
                identity_verb = Some(s)
            }
            "--to" if identity_verb.is_some() => {
                args.migrate_to = Some(value(&mut it, "--to")?.to_string_lossy().into_owned())
            }
            _ if identity_verb.is_some() && s.starts_with("--to=") => {
                args.migrate_to = Some(s["--to=".len()..].to_string())
            }
            _ if command.as_deref() == Some("apply") && args.file.is_none() => args.file = Some(s),
            _ => return Err(format!("unexpected argument {s:?}")),
        }
    }
    args.command = command.ok_or("no command given")?;
    if args.command == "apply" && args.file.is_none() {
        return Err("apply needs a bundle file, or - for standard input".into());
    }
    if args.command == "identity" {
        if identity_verb.is_none() {
            return Err("identity needs a subcommand: identity migrate --to tpm2".into());
        }
        match args.migrate_to.as_deref() {
            Some("tpm2") => {}
            Some(other) => {
                return Err(format!(
                    "identity migrate --to {other:?}: only tpm2 (a file identity can move into the TPM2; rpi-otp derives another key, so it is chosen at the first provision)"
                ))
            }
            None => return Err("identity migrate needs --to tpm2".into()),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealed-firstboot: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The root is resolved once, here: a link given as --root (or on the
    // way to it) is never looked up again, so changing it while this runs
    // cannot move the work to another tree (or to this machine's own /).
    args.root = match std::fs::canonicalize(&args.root) {
        Ok(root) => root,
        Err(e) => {
            eprintln!(
                "sealed-firstboot: error: --root {}: {e}",
                args.root.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sealed-firstboot: error: {}", chain_message(&e));
            ExitCode::FAILURE
        }
    }
}

/// Exit code: some secrets could not be unsealed (or a unit restarted),
/// the others were.
const EXIT_PARTIAL: u8 = 4;
/// Exit code: the bundle was refused, the existing secrets were unsealed.
const EXIT_REFUSED: u8 = 3;
/// Exit code of `status`: something is not right.
const EXIT_STATUS_NOT_OK: u8 = 5;

fn dispatch(args: &Args) -> Result<ExitCode> {
    let root = &args.root;
    // Read an update bundle before waiting for the lock: standard input
    // may be a network stream.
    let update = match (&args.command[..], &args.file) {
        ("apply", Some(file)) => Some(read_update(file)?),
        _ => None,
    };
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
        "unseal" => {
            let outcome = do_unseal(root, &config, true)?;
            // Secrets changed under running units (an apply cut short):
            // the restarts due are run now.
            let restarted = run_pending_restarts(root, &outcome.pending)?;
            Ok(if restarted {
                exit_for(&outcome, false)
            } else {
                ExitCode::from(EXIT_PARTIAL)
            })
        }
        "run" => {
            let provisioned = do_provision(args, &config);
            if let Err(e) = &provisioned {
                eprintln!("sealed-firstboot: error: {}", chain_message(e));
            }
            let outcome = do_unseal(root, &config, false)?;
            if provisioned.is_err() && !outcome.had_store {
                bail!("the bundle was not applied and there are no earlier secrets to unseal");
            }
            if provisioned.is_err() {
                eprintln!("sealed-firstboot: the secrets already in the store were unsealed");
            }
            Ok(exit_for(&outcome, provisioned.is_err()))
        }
        "apply" => do_apply(args, &config, update.as_deref().unwrap_or_default()),
        "pubkey" => {
            let device =
                identity::load_or_create(root, &config).context("loading the device identity")?;
            if let Some(note) = &device.note {
                eprintln!("sealed-firstboot: {note}");
            }
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "recipient": device.recipient().to_string(),
                        "source": device.source.map(|s| s.as_str()),
                        "binding": device.binding,
                        "created": device.created,
                    })
                );
            } else {
                println!("{}", device.recipient());
                eprintln!(
                    "sealed-firstboot: the identity is {}{}",
                    device.binding.describe(),
                    if device.created { " (created now)" } else { "" }
                );
            }
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
        "identity" => do_identity(root, &config, args),
        "status" => do_status(root, &config, args.json),
        other => bail!("unknown command {other}"),
    }
}

fn exit_for(outcome: &UnsealOutcome, refused: bool) -> ExitCode {
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

/// The update bundle from a file or standard input, bounded.
fn read_update(file: &str) -> Result<Vec<u8>> {
    let limit = bundle::limits::MAX_BUNDLE_BYTES;
    if file == "-" {
        return match sealed_bundle::io::read_limited(std::io::stdin().lock(), limit) {
            Ok(bytes) => Ok(bytes),
            Err(sealed_bundle::io::ReadError::TooLarge { .. }) => {
                bail!("the bundle on standard input is larger than {limit} bytes")
            }
            Err(e) => Err(e).context("reading the bundle from standard input"),
        };
    }
    bundle::read_bundle_file(Path::new(file)).with_context(|| format!("bundle {file}"))
}

fn do_provision(args: &Args, config: &Config) -> Result<()> {
    let boot = provision::boot_dir_with(&args.root, args.boot_dir.as_deref(), config);
    match provision::provision_with(&args.root, &boot, now(), config).context("provisioning")? {
        Outcome::NoBundle => eprintln!("sealed-firstboot: no bundle in {}", boot.display()),
        Outcome::Applied {
            bundle_id,
            secrets,
            notes,
        } => {
            for note in notes {
                eprintln!("sealed-firstboot: {note}");
            }
            eprintln!(
                "sealed-firstboot: applied bundle {bundle_id} ({secrets} secrets); bundle and key wiped"
            )
        }
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

fn do_apply(args: &Args, config: &Config, bytes: &[u8]) -> Result<ExitCode> {
    let key = match &args.key {
        Some(path) => Some(
            ImageKey::from_file(path).with_context(|| format!("image key {}", path.display()))?,
        ),
        None => None,
    };
    match provision::apply(&args.root, bytes, key.as_ref(), now(), config)
        .context("applying the update bundle")?
    {
        // An earlier apply of it may have been cut short after the store
        // switched: unsealing again finishes it (and restarts the units of
        // what is not live yet); if it was live already, nothing changes.
        Applied::AlreadyApplied { bundle_id } => eprintln!(
            "sealed-firstboot: bundle {bundle_id} is already applied; unsealing it (which changes nothing if it is live)"
        ),
        Applied::Applied {
            bundle_id,
            secrets,
            partial,
            notes,
        } => {
            for note in notes {
                eprintln!("sealed-firstboot: {note}");
            }
            eprintln!(
                "sealed-firstboot: applied {} bundle {bundle_id} ({secrets} secrets)",
                if partial { "partial" } else { "full" }
            )
        }
    }
    let outcome = do_unseal(&args.root, config, true)?;
    let mut code = exit_for(&outcome, false);
    if outcome.changed.is_empty() {
        eprintln!("sealed-firstboot: no secret changed");
    } else {
        eprintln!("sealed-firstboot: changed: {}", outcome.changed.join(", "));
    }
    if args.no_restart {
        if !outcome.pending.is_empty() {
            eprintln!("sealed-firstboot: --no-restart: not restarting or reloading any unit (they stay due: the next apply or unseal runs them)");
        }
        return Ok(code);
    }
    if !run_pending_restarts(&args.root, &outcome.pending)? {
        code = ExitCode::from(EXIT_PARTIAL);
    }
    Ok(code)
}

/// Run the restarts that are due (`plan`, recorded before the secrets went
/// live), then record what is left: the units whose `systemctl` failed.
/// False when one failed.
fn run_pending_restarts(root: &Path, plan: &restart::Plan) -> Result<bool> {
    sealed_firstboot::fsutil::failpoint("apply-before-restarts");
    let mut ok = true;
    let mut left = restart::Plan::default();
    for action in restart::run(plan, root) {
        match &action.error {
            None if !action.ran => eprintln!(
                "sealed-firstboot: --root {}: not running systemctl on this machine; on the device it would run: systemctl {} -- {}",
                root.display(),
                action.verb,
                action.units.join(" ")
            ),
            None => eprintln!(
                "sealed-firstboot: systemctl {} {}",
                action.verb,
                action.units.join(" ")
            ),
            Some(e) => {
                eprintln!("sealed-firstboot: error: {e}");
                ok = false;
                let units = action.units.iter().cloned();
                match action.verb {
                    "try-restart" => left.restart.extend(units),
                    _ => left.reload.extend(units),
                }
            }
        }
    }
    if !plan.is_empty() || !left.is_empty() {
        sealed_firstboot::runtime::set_pending_restarts(root, &left, &unseal_options(root))
            .context("recording the restarts still due")?;
    }
    Ok(ok)
}

fn unseal_options(root: &Path) -> UnsealOptions {
    let is_root = rustix::process::geteuid().is_root();
    UnsealOptions {
        mount_ramfs: is_root && sealed_firstboot::fsutil::is_host_root(root),
        apply_ownership: is_root,
    }
}

/// Unseal; `restarts`: on a running system (`apply`, `unseal`, not the
/// boot-time `run`), record the restarts what changes makes due.
fn do_unseal(root: &Path, config: &Config, restarts: bool) -> Result<UnsealOutcome> {
    let opts = unseal_options(root);
    let outcome =
        unseal::unseal_store_restarting(root, &opts, config, restarts).context("unsealing")?;
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
    if !outcome.credentials.is_empty() {
        eprintln!(
            "sealed-firstboot: credentials in /run/credstore: {}",
            outcome.credentials.join(", ")
        );
    }
    if !outcome.encrypted_credentials.is_empty() {
        eprintln!(
            "sealed-firstboot: encrypted credentials written to /etc/credstore.encrypted: {}",
            outcome.encrypted_credentials.join(", ")
        );
    }
    if !outcome.removed_credentials.is_empty() {
        eprintln!(
            "sealed-firstboot: credentials removed (their secrets left the store): {}",
            outcome.removed_credentials.join(", ")
        );
    }
    for (name, why) in &outcome.failed {
        eprintln!("sealed-firstboot: error: secret {name} was not unsealed: {why}");
    }
    Ok(outcome)
}

fn print_binding(binding: Option<&identity::Binding>, config: &Config) {
    let wanted = config.identity.as_str();
    match binding {
        None => {
            println!("identity: none yet (created at the first provision: identity = {wanted})")
        }
        Some(b) => {
            println!("identity binding: {} ({})", b.as_str(), b.describe());
            let differs = match (b, config.identity) {
                (identity::Binding::File, sealed_bundle::config::IdentityMode::Tpm2) => {
                    Some(" (move it with: sealed-firstboot identity migrate --to tpm2)")
                }
                (identity::Binding::File, sealed_bundle::config::IdentityMode::RpiOtp) => Some(
                    " (the binding is chosen at the first provision and never switches by itself)",
                ),
                (identity::Binding::Tpm2 { .. }, m)
                    if m != sealed_bundle::config::IdentityMode::Tpm2 =>
                {
                    Some("")
                }
                (identity::Binding::RpiOtp, m)
                    if m != sealed_bundle::config::IdentityMode::RpiOtp =>
                {
                    Some("")
                }
                _ => None,
            };
            if let Some(how) = differs {
                println!("  note: the configuration says identity = {wanted}{how}");
            }
        }
    }
}

fn print_signers(signers: &status::SignerStatus) {
    if signers.pinned.is_empty() {
        println!("signers: none pinned; unsigned bundles are accepted (pin one with a signer = line in /etc/sealed-firstboot.conf)");
        return;
    }
    println!(
        "signers ({}; unsigned bundles are refused):",
        signers.source
    );
    for s in &signers.pinned {
        println!("  {s}");
    }
}

/// `identity migrate --to tpm2`.
fn do_identity(root: &Path, config: &Config, args: &Args) -> Result<ExitCode> {
    let _ = args;
    match identity::migrate_to_tpm2(root, config).context("moving the identity into the TPM2")? {
        identity::Migrated::Sealed {
            recipient,
            pcrs,
            note,
        } => {
            if let Some(note) = note {
                eprintln!("sealed-firstboot: {note}");
            }
            eprintln!(
                "sealed-firstboot: the identity {recipient} is now sealed by this machine's TPM2 (/{}, PCRs: {pcrs}); the plain file was overwritten and removed",
                identity::SEALED_FILE
            );
            eprintln!("sealed-firstboot: note: overwriting is no secure erase on flash (SD cards, eMMC, SSDs remap blocks) or a journaling or copy-on-write file system, and a copy of the disk made before now still holds the plain key: where that matters, re-provision the device with a new identity (see the README)");
            if config.identity != sealed_bundle::config::IdentityMode::Tpm2 {
                eprintln!("sealed-firstboot: note: /etc/sealed-firstboot.conf does not say identity = tpm2; the sealed identity is used all the same (set it, so that a new identity would be sealed too)");
            }
        }
        identity::Migrated::AlreadySealed { recipient } => eprintln!(
            "sealed-firstboot: the identity {recipient} already is sealed by this machine's TPM2; nothing to do"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn do_status(root: &Path, config: &Config, json: bool) -> Result<ExitCode> {
    let binding = identity::stored_binding(root).context("reading the device identity")?;
    let signers = status::signers(root, config).context("reading the store")?;
    let Some(st) = status::status(root).context("reading the store")? else {
        if json {
            println!(
                "{}",
                serde_json::json!({ "provisioned": false, "ok": false, "signers": signers, "identity_binding": binding })
            );
        } else {
            println!(
                "no secrets provisioned (store {} is empty)",
                store::STORE_DIR
            );
            print_signers(&signers);
            print_binding(binding.as_ref(), config);
        }
        return Ok(ExitCode::from(EXIT_STATUS_NOT_OK));
    };
    if json {
        let mut v = serde_json::to_value(&st)?;
        v["provisioned"] = true.into();
        v["signers"] = serde_json::to_value(&signers)?;
        v["identity_binding"] = serde_json::to_value(&binding)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_signers(&signers);
        let state = &st.state;
        println!(
            "bundle {} (sealed {}.{:09}{}, applied {})",
            state.bundle_id,
            state.created_at,
            state.created_nanos,
            if state.sequence != 0 {
                format!(", sequence {}", state.sequence)
            } else {
                String::new()
            },
            state.applied_at
        );
        if let Some(r) = &state.recipient {
            println!(
                "identity {r} ({})",
                state.identity.as_deref().unwrap_or("origin not recorded")
            );
        }
        print_binding(binding.as_ref(), config);
        for s in &st.secrets {
            println!(
                "{} {:<24} {:<11} {:<32} {}:{} {}{}",
                if s.ok { "✓" } else { "✗" },
                s.name,
                s.kind,
                s.path,
                s.owner,
                s.group,
                s.mode,
                if !s.sealed {
                    "  (missing from store)"
                } else if !s.live {
                    "  (not unsealed)"
                } else {
                    ""
                }
            );
            for (c, what) in [
                (&s.credential, "credential /run/credstore/"),
                (
                    &s.credential_encrypted,
                    "encrypted credential /etc/credstore.encrypted/",
                ),
            ] {
                if let Some(c) = c {
                    println!(
                        "    {what}{}{}",
                        c.name,
                        if c.present { "" } else { "  (missing)" }
                    );
                }
            }
        }
    }
    Ok(if st.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_STATUS_NOT_OK)
    })
}
