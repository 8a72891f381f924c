//! The device identity: one age X25519 key pair per device.
//!
//! Created once, at the first provision (or the first `pubkey`), as
//! `/etc/sealed-firstboot.conf` says, and bound in one of three ways:
//!
//! - **a file**, `/var/lib/sealed-secrets/identity` (0400, `age-keygen`
//!   format, so `age -d -i` can use it): generated (the default), or derived
//!   from `/etc/ssh/ssh_host_ed25519_key` exactly as `ssh-to-age` does (the
//!   first 32 bytes of SHA-512 of the Ed25519 seed) and then persisted;
//! - **sealed by the TPM2** (`identity = tpm2`):
//!   `/var/lib/sealed-secrets/identity.tpm2` is a systemd credential (named
//!   [`CREDENTIAL_NAME`], see [`tpm2`]) holding that same file's text; only
//!   this TPM decrypts it, into memory, at every unseal. It is no age key.
//! - **derived from the Raspberry Pi OTP key** at every boot
//!   (`identity = rpi-otp`, see [`rpi_otp`]): nothing secret is stored.
//!
//! After that only what is on disk counts: the binding never switches by
//! itself (a changed configuration, an SSH host key that appears, changes
//! or disappears later), and nothing is created over an existing identity.
//! `sealed-firstboot identity migrate --to tpm2` moves a file identity into
//! the TPM ([`migrate_to_tpm2`]).

pub mod rpi_otp;
pub mod tool;
pub mod tpm2;

use crate::config::{Config, IdentityMode, Pcrs};
use crate::fsutil::{self, failpoint};
use age::secrecy::ExposeSecret;
use sealed_bundle::ssh::{identity_from_openssh_ed25519, identity_from_scalar};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;
use zeroize::Zeroizing;

/// Where the SSH host key lives, relative to the root.
pub const SSH_HOST_KEY: &str = "etc/ssh/ssh_host_ed25519_key";
/// Where the persisted identity lives, relative to the root.
pub const IDENTITY_FILE: &str = "var/lib/sealed-secrets/identity";
/// Where the TPM-sealed identity lives, relative to the root.
pub const SEALED_FILE: &str = "var/lib/sealed-secrets/identity.tpm2";
pub use rpi_otp::MARKER_FILE;
/// The credential name bound into the sealed identity: systemd-creds
/// refuses to decrypt a credential made under another name.
pub const CREDENTIAL_NAME: &str = "sealed-firstboot.identity";
/// The plain identity during the last step of a migration (renamed, then
/// overwritten and removed).
const WIPE_SUFFIX: &str = ".wipe";
/// Largest identity or host key file read.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;
/// The comment line that records where a persisted identity came from.
const ORIGIN_PREFIX: &str = "# origin: ";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: sealed_bundle::io::ReadError,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("identity = ssh-host-key in the configuration, but {path} does not exist (yet): the identity is created from it at the first provision; create the host key before sealed-firstboot runs, or use identity = generated")]
    NoHostKey { path: PathBuf },
    #[error("the store exists but the device identity {path} is missing{hint}")]
    Missing { path: PathBuf, hint: String },
    #[error(transparent)]
    Tool(#[from] tool::ToolError),
    #[error(
        "sealing the device identity with the TPM2 (identity = tpm2): {0}; nothing was stored"
    )]
    Tpm2Seal(tpm2::Tpm2Error),
    #[error("the device identity {path} is sealed by a TPM2, and this machine's TPM2 does not unseal it ({why}). Was the TPM cleared or replaced, or is this disk in another machine? The secrets sealed to this identity cannot be opened without it: see \"A device whose TPM was cleared\" in the README")]
    Tpm2Unseal { path: PathBuf, why: String },
    #[error(
        "deriving the device identity from the Raspberry Pi OTP key (identity = rpi-otp): {0}"
    )]
    RpiOtp(rpi_otp::RpiOtpError),
    #[error("the Raspberry Pi OTP key derives {derived}, but {path} records {recorded}: this disk was provisioned on another Raspberry Pi, or its OTP key changed; the secrets sealed to {recorded} cannot be opened here")]
    RpiOtpMismatch {
        path: PathBuf,
        derived: String,
        recorded: String,
    },
    #[error("identity migrate --to tpm2: {0}")]
    Migrate(String),
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> IdentityError {
    move |source| IdentityError::Io { context, source }
}

/// Where the persisted identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// Generated on the device.
    Generated,
    /// Derived from the SSH host key at creation, then persisted.
    SshHostKey,
    /// A store written before identities were persisted was sealed to the
    /// host-key identity; it was persisted on the next run.
    MigratedSshHostKey,
    /// Derived from the Raspberry Pi OTP key at every boot.
    RpiOtp,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Generated => "generated",
            IdentitySource::SshHostKey => "ssh-host-key",
            IdentitySource::MigratedSshHostKey => "ssh-host-key (migrated)",
            IdentitySource::RpiOtp => "rpi-otp",
        }
    }

    fn parse(s: &str) -> Option<IdentitySource> {
        [
            IdentitySource::Generated,
            IdentitySource::SshHostKey,
            IdentitySource::MigratedSshHostKey,
            IdentitySource::RpiOtp,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the identity is kept on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Binding {
    /// `identity`: a plain age key file (a copy of the disk has it).
    File,
    /// `identity.tpm2`: sealed by this machine's TPM2, bound to `pcrs`
    /// (`None`: the credential's header does not say).
    Tpm2 {
        #[serde(serialize_with = "pcr_list")]
        pcrs: Option<Pcrs>,
    },
    /// Derived from the Raspberry Pi OTP key at every boot; stored nowhere.
    RpiOtp,
}

fn pcr_list<S: serde::Serializer>(p: &Option<Pcrs>, s: S) -> Result<S::Ok, S::Error> {
    p.as_ref().map(Pcrs::indexes).serialize(s)
}

impl Binding {
    pub fn as_str(&self) -> &'static str {
        match self {
            Binding::File => "file",
            Binding::Tpm2 { .. } => "tpm2",
            Binding::RpiOtp => "rpi-otp",
        }
    }

    /// For people: where it is and what it is bound to.
    pub fn describe(&self) -> String {
        match self {
            Binding::File => format!("a file, /{IDENTITY_FILE}"),
            Binding::Tpm2 { pcrs } => format!(
                "sealed by this machine's TPM2, /{SEALED_FILE}, PCRs: {}",
                pcrs.as_ref().map_or(
                    "not readable from the credential".to_string(),
                    Pcrs::to_string
                )
            ),
            Binding::RpiOtp => {
                "derived at every boot from the Raspberry Pi OTP device key, stored nowhere".into()
            }
        }
    }
}

pub struct DeviceIdentity {
    pub identity: age::x25519::Identity,
    /// Where it came from (`None`: the file has no origin line).
    pub source: Option<IdentitySource>,
    /// Whether this call created it.
    pub created: bool,
    pub binding: Binding,
    /// Something the journal should say (a PCR fallback, an interrupted
    /// migration).
    pub note: Option<String>,
}

impl DeviceIdentity {
    /// The `age1…` recipient of this device.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identity.to_public()
    }
}

fn path_of(root: &Path, rel: &str, why: &str) -> Result<PathBuf, IdentityError> {
    fsutil::in_root(root, rel).map_err(io_err(why.to_string()))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Read one of the identity files: `None` when it does not exist.
fn read_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, IdentityError> {
    match sealed_bundle::io::read_regular_bounded(path, MAX_KEY_FILE_BYTES) {
        Ok(b) => Ok(Some(Zeroizing::new(b))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(source) => Err(IdentityError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// How the identity is bound on disk, without unsealing or deriving it
/// (for `status`). `None`: there is no identity yet.
pub fn stored_binding(root: &Path) -> Result<Option<Binding>, IdentityError> {
    let why = "reading the device identity";
    if exists(&path_of(root, IDENTITY_FILE, why)?) {
        return Ok(Some(Binding::File));
    }
    let sealed = path_of(root, SEALED_FILE, why)?;
    if let Some(blob) = read_file(&sealed)? {
        let pcrs = tpm2::describe(&blob).and_then(|(_, p)| p);
        return Ok(Some(Binding::Tpm2 { pcrs }));
    }
    if exists(&path_of(root, MARKER_FILE, why)?) {
        return Ok(Some(Binding::RpiOtp));
    }
    Ok(None)
}

/// The device identity, if there is one: the file, else the sealed form
/// (unsealed by the TPM2), else the one the OTP key derives. Never creates
/// one. While the plain file exists it is the identity (a migration is
/// finished only once it is gone).
pub fn load(root: &Path) -> Result<Option<DeviceIdentity>, IdentityError> {
    let why = "reading the device identity";
    let file = path_of(root, IDENTITY_FILE, why)?;
    let sealed = path_of(root, SEALED_FILE, why)?;
    if let Some(bytes) = read_file(&file)? {
        let (identity, source) = parse_text(&file, &bytes)?;
        let note = exists(&sealed).then(|| {
            format!("both /{IDENTITY_FILE} and /{SEALED_FILE} exist (an interrupted migration): the plain file is used; rerun sealed-firstboot identity migrate --to tpm2 to finish")
        });
        return Ok(Some(DeviceIdentity {
            identity,
            source,
            created: false,
            binding: Binding::File,
            note,
        }));
    }
    if let Some(blob) = read_file(&sealed)? {
        let id = unseal_file(root, &sealed, &blob)?;
        // The plain file of a migration that stopped while wiping it.
        let leftover = wipe_name(&file);
        if exists(&leftover) {
            fsutil::shred_and_remove(&leftover)
                .map_err(io_err(format!("wiping {}", leftover.display())))?;
        }
        return Ok(Some(id));
    }
    let marker = path_of(root, MARKER_FILE, why)?;
    if let Some(text) = read_file(&marker)? {
        let recorded = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .map(|k| k.trim().to_string())
            .ok_or_else(|| IdentityError::Invalid {
                path: marker.clone(),
                reason: "no \"# public key:\" line".into(),
            })?;
        let identity = derive_rpi_otp(root)?;
        let derived = identity.to_public().to_string();
        if derived != recorded {
            return Err(IdentityError::RpiOtpMismatch {
                path: marker,
                derived,
                recorded,
            });
        }
        return Ok(Some(DeviceIdentity {
            identity,
            source: Some(IdentitySource::RpiOtp),
            created: false,
            binding: Binding::RpiOtp,
            note: None,
        }));
    }
    Ok(None)
}

fn unseal_file(root: &Path, path: &Path, blob: &[u8]) -> Result<DeviceIdentity, IdentityError> {
    // systemd-creds decrypts a credential of any key kind, and the host key
    // lives on the same disk: whoever can write the disk could put there an
    // identity of their choosing encrypted with it. The header names the
    // kind and is authenticated by the decryption (it is the AEAD's
    // associated data), so a TPM2 kind here means the TPM took part.
    match tpm2::describe(blob) {
        Some((kind, _)) if kind.contains("tpm2") && !kind.contains("absent") => {}
        found => {
            return Err(IdentityError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "it is not sealed by a TPM2 (its header says {}): refused, since a credential under the host key (on this same disk) or none could have been put there by anyone who could write the disk",
                    found.map_or("nothing systemd-creds writes", |(k, _)| k)
                ),
            })
        }
    }
    let tool = tpm2::tool_for_tpm(root)?;
    let text = tpm2::unseal(&tool, CREDENTIAL_NAME, blob).map_err(|e| match e {
        tpm2::Tpm2Error::Tool(t) => IdentityError::Tool(t),
        other => IdentityError::Tpm2Unseal {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    })?;
    let (identity, source) = parse_text(path, &text).map_err(|_| IdentityError::Invalid {
        path: path.to_path_buf(),
        reason: "the TPM2 unsealed something that is not a device identity".into(),
    })?;
    let pcrs = tpm2::describe(blob).and_then(|(_, p)| p);
    Ok(DeviceIdentity {
        identity,
        source,
        created: false,
        binding: Binding::Tpm2 { pcrs },
        note: None,
    })
}

fn derive_rpi_otp(root: &Path) -> Result<age::x25519::Identity, IdentityError> {
    let tool = rpi_otp::tool(root)?;
    let scalar = rpi_otp::derive(&tool).map_err(|e| match e {
        rpi_otp::RpiOtpError::Tool(t) => IdentityError::Tool(t),
        other => IdentityError::RpiOtp(other),
    })?;
    identity_from_scalar(&scalar).map_err(|reason| IdentityError::Invalid {
        path: root.join(MARKER_FILE),
        reason,
    })
}

/// The identity's text: what the file holds, and what the TPM seals.
fn identity_text(identity: &age::x25519::Identity, source: IdentitySource) -> Zeroizing<String> {
    // Sized first and filled by hand: `format!` grows its buffer as it
    // goes and would free copies holding part of the key.
    let head = format!(
        "# sealed-firstboot device identity (age X25519)\n# public key: {}\n{ORIGIN_PREFIX}{}\n",
        identity.to_public(),
        source.as_str(),
    );
    let key = identity.to_string();
    let mut text = Zeroizing::new(String::with_capacity(
        head.len() + key.expose_secret().len() + 1,
    ));
    text.push_str(&head);
    text.push_str(key.expose_secret());
    text.push('\n');
    text
}

fn parse_text(
    path: &Path,
    bytes: &[u8],
) -> Result<(age::x25519::Identity, Option<IdentitySource>), IdentityError> {
    let text = std::str::from_utf8(bytes).map_err(|_| IdentityError::Invalid {
        path: path.to_path_buf(),
        reason: "not text".into(),
    })?;
    let identity = parse_identity_file(text).map_err(|reason| IdentityError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    let source = text
        .lines()
        .find_map(|l| l.strip_prefix(ORIGIN_PREFIX))
        .and_then(|o| IdentitySource::parse(o.trim()));
    Ok((identity, source))
}

/// The identity the SSH host key derives now (as `ssh-to-age`), if the host
/// key exists. Used to open bundles sealed to `ssh-keyscan` output and to
/// tell when the host key no longer matches the persisted identity.
pub fn ssh_derived(root: &Path) -> Result<Option<age::x25519::Identity>, IdentityError> {
    let ssh =
        fsutil::in_root(root, SSH_HOST_KEY).map_err(io_err("reading the SSH host key".into()))?;
    let bytes = match sealed_bundle::io::read_regular_bounded(&ssh, MAX_KEY_FILE_BYTES) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.is_not_found() => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path: ssh, source }),
    };
    let text = String::from_utf8_lossy(&bytes);
    identity_from_openssh_ed25519(&text)
        .map(Some)
        .map_err(|reason| IdentityError::Invalid { path: ssh, reason })
}

/// The device identity, creating it as `config` says when there is none:
/// a file (generated or from the SSH host key), sealed by the TPM2, or
/// derived from the Raspberry Pi OTP key. A device without the hardware
/// its configuration names fails here, before anything is stored.
pub fn load_or_create(root: &Path, config: &Config) -> Result<DeviceIdentity, IdentityError> {
    if let Some(id) = load(root)? {
        return Ok(id);
    }
    let (identity, source) = match config.identity {
        IdentityMode::Generated | IdentityMode::Tpm2 => {
            (age::x25519::Identity::generate(), IdentitySource::Generated)
        }
        IdentityMode::SshHostKey => match ssh_derived(root)? {
            Some(id) => (id, IdentitySource::SshHostKey),
            None => {
                return Err(IdentityError::NoHostKey {
                    path: root.join(SSH_HOST_KEY),
                })
            }
        },
        IdentityMode::RpiOtp => return create_rpi_otp(root),
    };
    if config.identity == IdentityMode::Tpm2 {
        return create_sealed(root, identity, source, &config.tpm2_pcrs);
    }
    persist(root, identity, source)
}

/// Seal a new identity with the TPM2 and store only the sealed form
/// (exclusively: an existing one is kept and returned).
fn create_sealed(
    root: &Path,
    identity: age::x25519::Identity,
    source: IdentitySource,
    pcrs: &Pcrs,
) -> Result<DeviceIdentity, IdentityError> {
    let path = path_of(root, SEALED_FILE, "writing the device identity")?;
    let tool = tpm2::tool_for_tpm(root)?;
    let text = identity_text(&identity, source);
    let sealed =
        tpm2::seal(&tool, CREDENTIAL_NAME, "tpm2", pcrs, text.as_bytes()).map_err(|e| match e {
            tpm2::Tpm2Error::Tool(t) => IdentityError::Tool(t),
            other => IdentityError::Tpm2Seal(other),
        })?;
    let dir = path.parent().unwrap_or(root);
    fsutil::create_dir_all_mode(dir, 0o700)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    let created = fsutil::create_exclusive(&path, &sealed.blob, 0o400)
        .map_err(io_err(format!("writing {}", path.display())))?;
    if !created {
        return load(root)?.ok_or_else(|| IdentityError::Missing {
            path,
            hint: String::new(),
        });
    }
    Ok(DeviceIdentity {
        identity,
        source: Some(source),
        created: true,
        binding: Binding::Tpm2 {
            pcrs: Some(sealed.pcrs),
        },
        note: sealed.note,
    })
}

/// Derive the identity from the OTP key and record that it is derived
/// (and its public key) in the marker.
fn create_rpi_otp(root: &Path) -> Result<DeviceIdentity, IdentityError> {
    let path = path_of(root, MARKER_FILE, "writing the device identity")?;
    let identity = derive_rpi_otp(root)?;
    let text = format!(
        "# sealed-firstboot device identity: derived at every boot from the Raspberry Pi OTP device key\n# (rpi-fw-crypto hmac --key-id {} over the label below, then HKDF-SHA256); nothing secret is stored here.\n# label: {}\n# public key: {}\n",
        rpi_otp::KEY_ID,
        rpi_otp::LABEL,
        identity.to_public()
    );
    let dir = path.parent().unwrap_or(root);
    fsutil::create_dir_all_mode(dir, 0o700)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    let created = fsutil::create_exclusive(&path, text.as_bytes(), 0o444)
        .map_err(io_err(format!("writing {}", path.display())))?;
    if !created {
        return load(root)?.ok_or_else(|| IdentityError::Missing {
            path,
            hint: String::new(),
        });
    }
    Ok(DeviceIdentity {
        identity,
        source: Some(IdentitySource::RpiOtp),
        created: true,
        binding: Binding::RpiOtp,
        note: None,
    })
}

/// Write `identity` as the persisted identity file unless one exists
/// already (then that one is returned: the first writer wins, nothing is
/// replaced).
pub fn persist(
    root: &Path,
    identity: age::x25519::Identity,
    source: IdentitySource,
) -> Result<DeviceIdentity, IdentityError> {
    let file = path_of(root, IDENTITY_FILE, "writing the device identity")?;
    let dir = file.parent().unwrap_or(root);
    fsutil::create_dir_all_mode(dir, 0o700)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    let text = identity_text(&identity, source);
    let created = fsutil::create_exclusive(&file, text.as_bytes(), 0o400)
        .map_err(io_err(format!("writing {}", file.display())))?;
    if !created {
        return load(root)?.ok_or_else(|| IdentityError::Missing {
            path: file,
            hint: String::new(),
        });
    }
    Ok(DeviceIdentity {
        identity,
        source: Some(source),
        created: true,
        binding: Binding::File,
        note: None,
    })
}

/// What [`migrate_to_tpm2`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    /// The file identity is now sealed (same key) and the file is gone.
    Sealed {
        recipient: String,
        pcrs: Pcrs,
        note: Option<String>,
    },
    /// It already was.
    AlreadySealed { recipient: String },
}

/// Move the file identity into the TPM2, keeping the key (so the store and
/// every bundle sealed to this device stay valid). Crash-safe, with a
/// usable identity at every moment: the sealed form is written beside the
/// file and proven to decrypt (from disk) to the same key; only then is
/// the file renamed to `identity.wipe`, overwritten and removed. A rerun
/// after a crash at any point finishes the job. The caller holds the
/// device lock.
pub fn migrate_to_tpm2(root: &Path, config: &Config) -> Result<Migrated, IdentityError> {
    let why = "migrating the device identity";
    let file = path_of(root, IDENTITY_FILE, why)?;
    let sealed = path_of(root, SEALED_FILE, why)?;
    let Some(plain) = read_file(&file)? else {
        if exists(&sealed) {
            // Unsealing proves it works and wipes a leftover plain file.
            let id = load(root)?.ok_or_else(|| IdentityError::Missing {
                path: sealed.clone(),
                hint: String::new(),
            })?;
            return Ok(Migrated::AlreadySealed {
                recipient: id.recipient().to_string(),
            });
        }
        if exists(&path_of(root, MARKER_FILE, why)?) {
            return Err(IdentityError::Migrate(
                "this device's identity is derived from the Raspberry Pi OTP key: there is no file to move".into(),
            ));
        }
        return Err(IdentityError::Migrate(format!(
            "there is no device identity yet ({} is missing): with identity = tpm2 in /etc/sealed-firstboot.conf the first provision creates it sealed",
            file.display()
        )));
    };
    let (identity, source) = parse_text(&file, &plain)?;
    let recipient = identity.to_public().to_string();
    // The same key in clear elsewhere on the disk: sealing it would
    // protect nothing against a copied disk.
    if let Ok(Some(derived)) = ssh_derived(root) {
        if derived.to_public().to_string() == recipient {
            return Err(IdentityError::Migrate(format!(
                "the identity {recipient} is derived from the SSH host key /{SSH_HOST_KEY}, which stays on the disk in clear: \
                 sealing it would protect nothing against a copied disk, so {} is kept. \
                 Re-provision with a new identity instead (identity = tpm2 in /etc/sealed-firstboot.conf, the identity files moved aside, \
                 a bundle under an image key), or replace the SSH host key and migrate then",
                file.display()
            )));
        }
    }
    let tool = tpm2::tool_for_tpm(root)?;
    let seal_err = |e| match e {
        tpm2::Tpm2Error::Tool(t) => IdentityError::Tool(t),
        other => IdentityError::Tpm2Seal(other),
    };
    // A sealed form from an interrupted run is kept only if it is this
    // very identity.
    let mut note = None;
    let mut pcrs = config.tpm2_pcrs.clone();
    let reusable = match read_file(&sealed)? {
        Some(blob) => match unseal_file(root, &sealed, &blob) {
            Ok(id) if id.recipient().to_string() == recipient => {
                if let Binding::Tpm2 { pcrs: Some(p) } = id.binding {
                    pcrs = p;
                }
                true
            }
            _ => false,
        },
        None => false,
    };
    if !reusable {
        if exists(&sealed) {
            std::fs::remove_file(&sealed)
                .map_err(io_err(format!("removing {}", sealed.display())))?;
        }
        let text = identity_text(&identity, source.unwrap_or(IdentitySource::Generated));
        let s = tpm2::seal(
            &tool,
            CREDENTIAL_NAME,
            "tpm2",
            &config.tpm2_pcrs,
            text.as_bytes(),
        )
        .map_err(seal_err)?;
        fsutil::write_atomic(&sealed, &s.blob, 0o400)
            .map_err(io_err(format!("writing {}", sealed.display())))?;
        failpoint("migrate-sealed-written");
        pcrs = s.pcrs;
        note = s.note;
    }
    // Proven from disk, as the next boot will read it.
    let blob = read_file(&sealed)?.ok_or_else(|| IdentityError::Missing {
        path: sealed.clone(),
        hint: String::new(),
    })?;
    let back = unseal_file(root, &sealed, &blob)?;
    if back.recipient().to_string() != recipient {
        return Err(IdentityError::Migrate(format!(
            "{} does not unseal to the identity {recipient}; the file identity is kept",
            sealed.display()
        )));
    }
    let wiping = wipe_name(&file);
    std::fs::rename(&file, &wiping).map_err(io_err(format!("renaming {}", file.display())))?;
    if let Some(dir) = file.parent() {
        fsutil::sync_dir(dir).map_err(io_err(format!("syncing {}", dir.display())))?;
    }
    failpoint("migrate-file-renamed");
    fsutil::shred_and_remove(&wiping).map_err(io_err(format!(
        "the identity is sealed, but its plain copy {} could not be overwritten and removed (it still holds the key in clear: remove it, then rerun sealed-firstboot identity migrate --to tpm2)",
        wiping.display()
    )))?;
    Ok(Migrated::Sealed {
        recipient,
        pcrs,
        note,
    })
}

fn wipe_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(WIPE_SUFFIX);
    path.with_file_name(name)
}

/// Parse an `age-keygen` style file: the first `AGE-SECRET-KEY-1…` line.
pub fn parse_identity_file(text: &str) -> Result<age::x25519::Identity, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or("no AGE-SECRET-KEY-1 line")?;
    age::x25519::Identity::from_str(line).map_err(|_| "malformed AGE-SECRET-KEY-1 line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(identity: IdentityMode) -> Config {
        Config {
            identity,
            ..Config::default()
        }
    }

    #[test]
    fn generated_identity_is_kept_0400_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let a = load_or_create(root.path(), &conf(IdentityMode::Generated)).unwrap();
        assert!(a.created);
        assert_eq!(a.source, Some(IdentitySource::Generated));
        let meta = std::fs::metadata(root.path().join(IDENTITY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let b = load_or_create(root.path(), &conf(IdentityMode::SshHostKey)).unwrap();
        assert!(!b.created);
        assert_eq!(b.source, Some(IdentitySource::Generated));
        assert_eq!(a.recipient().to_string(), b.recipient().to_string());
    }

    use sealed_bundle::ssh::recipient_from_ssh_public_key;

    const TEST_KEY: &str = include_str!("../../tests/data/ssh_host_ed25519_key");
    const TEST_PUB: &str = include_str!("../../tests/data/ssh_host_ed25519_key.pub");

    #[test]
    fn ssh_host_key_mode_derives_once_and_persists() {
        let root = tempfile::tempdir().unwrap();
        let err = load_or_create(root.path(), &conf(IdentityMode::SshHostKey))
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::NoHostKey { .. }), "{err}");
        let ssh = root.path().join(SSH_HOST_KEY);
        std::fs::create_dir_all(ssh.parent().unwrap()).unwrap();
        std::fs::write(&ssh, TEST_KEY).unwrap();
        let a = load_or_create(root.path(), &conf(IdentityMode::SshHostKey)).unwrap();
        assert_eq!(a.source, Some(IdentitySource::SshHostKey));
        assert_eq!(
            a.recipient().to_string(),
            recipient_from_ssh_public_key(TEST_PUB).unwrap().to_string()
        );
        // The host key goes away (or is regenerated): the identity stays.
        std::fs::remove_file(&ssh).unwrap();
        let b = load(root.path()).unwrap().unwrap();
        assert_eq!(a.recipient().to_string(), b.recipient().to_string());
        assert_eq!(b.source, Some(IdentitySource::SshHostKey));
    }

    #[test]
    fn a_host_key_appearing_later_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let a = load_or_create(root.path(), &conf(IdentityMode::Generated)).unwrap();
        let ssh = root.path().join(SSH_HOST_KEY);
        std::fs::create_dir_all(ssh.parent().unwrap()).unwrap();
        std::fs::write(&ssh, TEST_KEY).unwrap();
        for mode in [IdentityMode::Generated, IdentityMode::SshHostKey] {
            let b = load_or_create(root.path(), &conf(mode)).unwrap();
            assert_eq!(a.recipient().to_string(), b.recipient().to_string());
        }
        assert!(ssh_derived(root.path()).unwrap().is_some());
    }

    #[test]
    fn persist_never_replaces_an_existing_identity() {
        let root = tempfile::tempdir().unwrap();
        let first = age::x25519::Identity::generate();
        let first_pub = first.to_public().to_string();
        persist(root.path(), first, IdentitySource::Generated).unwrap();
        let second = persist(
            root.path(),
            age::x25519::Identity::generate(),
            IdentitySource::SshHostKey,
        )
        .unwrap();
        assert!(!second.created);
        assert_eq!(second.recipient().to_string(), first_pub);
    }

    #[test]
    fn garbage_identity_file_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join(IDENTITY_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "hello").unwrap();
        let err = load_or_create(root.path(), &conf(IdentityMode::Generated))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no AGE-SECRET-KEY-1 line"), "{err}");
    }
}
