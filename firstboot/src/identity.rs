//! The device identity: one persisted age X25519 key pair per device.
//!
//! Created once, at the first provision (or the first `pubkey`), and kept
//! at `/var/lib/sealed-secrets/identity` (0400, `age-keygen` format, so
//! `age -d -i` can use it). How it is created follows
//! `/etc/sealed-firstboot.conf`: generated (the default), or derived from
//! `/etc/ssh/ssh_host_ed25519_key` exactly as `ssh-to-age` does (the first
//! 32 bytes of SHA-512 of the Ed25519 seed) and then persisted. After that
//! only the persisted file counts: an SSH host key that appears, changes or
//! disappears later (Raspberry Pi OS and cloud-init create host keys on
//! first boot) changes nothing. The file is created exclusively and never
//! renamed over an existing one.

use crate::config::IdentityMode;
use crate::fsutil;
use age::secrecy::ExposeSecret;
use base64::Engine;
use sha2::{Digest, Sha512};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;
use zeroize::Zeroizing;

/// Where the SSH host key lives, relative to the root.
pub const SSH_HOST_KEY: &str = "etc/ssh/ssh_host_ed25519_key";
/// Where the persisted identity lives, relative to the root.
pub const IDENTITY_FILE: &str = "var/lib/sealed-secrets/identity";
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
        source: fsutil::ReadError,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("identity = ssh-host-key in the configuration, but {path} does not exist (yet): the identity is created from it at the first provision; create the host key before sealed-firstboot runs, or use identity = generated")]
    NoHostKey { path: PathBuf },
    #[error("the store exists but the device identity {path} is missing{hint}")]
    Missing { path: PathBuf, hint: String },
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
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Generated => "generated",
            IdentitySource::SshHostKey => "ssh-host-key",
            IdentitySource::MigratedSshHostKey => "ssh-host-key (migrated)",
        }
    }

    fn parse(s: &str) -> Option<IdentitySource> {
        [
            IdentitySource::Generated,
            IdentitySource::SshHostKey,
            IdentitySource::MigratedSshHostKey,
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

pub struct DeviceIdentity {
    pub identity: age::x25519::Identity,
    /// Where it came from (`None`: the file has no origin line).
    pub source: Option<IdentitySource>,
    /// Whether this call created the file.
    pub created: bool,
}

impl DeviceIdentity {
    /// The `age1…` recipient of this device.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identity.to_public()
    }
}

/// The persisted identity, if there is one. Never creates one.
pub fn load(root: &Path) -> Result<Option<DeviceIdentity>, IdentityError> {
    let file = fsutil::in_root(root, IDENTITY_FILE)
        .map_err(io_err("reading the device identity".into()))?;
    let bytes = match fsutil::read_regular_bounded(&file, MAX_KEY_FILE_BYTES) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.is_not_found() => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path: file, source }),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| IdentityError::Invalid {
        path: file.clone(),
        reason: "not text".into(),
    })?;
    let identity = parse_identity_file(text).map_err(|reason| IdentityError::Invalid {
        path: file.clone(),
        reason,
    })?;
    let source = text
        .lines()
        .find_map(|l| l.strip_prefix(ORIGIN_PREFIX))
        .and_then(|o| IdentitySource::parse(o.trim()));
    Ok(Some(DeviceIdentity {
        identity,
        source,
        created: false,
    }))
}

/// The identity the SSH host key derives now (as `ssh-to-age`), if the host
/// key exists. Used to open bundles sealed to `ssh-keyscan` output and to
/// tell when the host key no longer matches the persisted identity.
pub fn ssh_derived(root: &Path) -> Result<Option<age::x25519::Identity>, IdentityError> {
    let ssh =
        fsutil::in_root(root, SSH_HOST_KEY).map_err(io_err("reading the SSH host key".into()))?;
    let bytes = match fsutil::read_regular_bounded(&ssh, MAX_KEY_FILE_BYTES) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.is_not_found() => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path: ssh, source }),
    };
    let text = String::from_utf8_lossy(&bytes);
    identity_from_openssh_ed25519(&text)
        .map(Some)
        .map_err(|reason| IdentityError::Invalid { path: ssh, reason })
}

/// The persisted identity, creating it as `mode` says when there is none.
pub fn load_or_create(root: &Path, mode: IdentityMode) -> Result<DeviceIdentity, IdentityError> {
    if let Some(id) = load(root)? {
        return Ok(id);
    }
    let (identity, source) = match mode {
        IdentityMode::Generated => (age::x25519::Identity::generate(), IdentitySource::Generated),
        IdentityMode::SshHostKey => match ssh_derived(root)? {
            Some(id) => (id, IdentitySource::SshHostKey),
            None => {
                return Err(IdentityError::NoHostKey {
                    path: root.join(SSH_HOST_KEY),
                })
            }
        },
    };
    persist(root, identity, source)
}

/// Write `identity` as the persisted identity unless one exists already
/// (then that one is returned: the first writer wins, nothing is replaced).
pub fn persist(
    root: &Path,
    identity: age::x25519::Identity,
    source: IdentitySource,
) -> Result<DeviceIdentity, IdentityError> {
    let file = fsutil::in_root(root, IDENTITY_FILE)
        .map_err(io_err("writing the device identity".into()))?;
    let dir = file.parent().unwrap_or(root);
    fsutil::create_dir_all_mode(dir, 0o700)
        .map_err(io_err(format!("creating {}", dir.display())))?;
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
    })
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

/// Derive the age identity from an unencrypted OpenSSH Ed25519 private key,
/// as `ssh-to-age` does.
pub fn identity_from_openssh_ed25519(pem: &str) -> Result<age::x25519::Identity, String> {
    // Room for all of it up front: a String grown by `collect` would free
    // copies holding part of the key.
    let mut body = Zeroizing::new(String::with_capacity(pem.len()));
    pem.lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN OPENSSH PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END OPENSSH PRIVATE KEY-----")
        .for_each(|l| body.push_str(l));
    if body.is_empty() {
        return Err("not an OpenSSH private key (no BEGIN OPENSSH PRIVATE KEY block)".into());
    }
    let blob = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| "OpenSSH private key is not valid base64".to_string())?,
    );
    let mut r = SshReader { buf: &blob, pos: 0 };
    if r.bytes(15)? != b"openssh-key-v1\0" {
        return Err("not an openssh-key-v1 key".into());
    }
    let cipher = r.string()?;
    let _kdf = r.string()?;
    let _kdf_opts = r.string()?;
    if cipher != b"none" {
        return Err("the SSH host key is passphrase-protected; a host key must not be".into());
    }
    if r.u32()? != 1 {
        return Err("expected exactly one key".into());
    }
    let _public = r.string()?;
    let private = r.string()?;
    let mut p = SshReader {
        buf: private,
        pos: 0,
    };
    if p.u32()? != p.u32()? {
        return Err("check integers differ (corrupt key)".into());
    }
    if p.string()? != b"ssh-ed25519" {
        return Err("the SSH host key is not ssh-ed25519".into());
    }
    let _pk = p.string()?;
    let sk = p.string()?;
    if sk.len() != 64 {
        return Err("ed25519 private key has the wrong length".into());
    }
    let hash = Zeroizing::new(Sha512::digest(&sk[..32]));
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&hash[..32]);
    identity_from_scalar(&scalar)
}

/// The age recipient of an SSH Ed25519 public key, as `ssh-to-age` computes
/// it: the Montgomery form of the Edwards point. Accepts an
/// `authorized_keys` line (`ssh-ed25519 AAAA… comment`) or an `ssh-keyscan` /
/// `known_hosts` line (`host ssh-ed25519 AAAA…`).
pub fn recipient_from_ssh_public_key(line: &str) -> Result<age::x25519::Recipient, String> {
    let mut tokens = line.split_whitespace();
    tokens
        .by_ref()
        .find(|t| *t == "ssh-ed25519")
        .ok_or("not an ssh-ed25519 public key line")?;
    let b64 = tokens.next().ok_or("missing key data after ssh-ed25519")?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "ssh-ed25519 key data is not valid base64".to_string())?;
    let mut r = SshReader { buf: &blob, pos: 0 };
    if r.string()? != b"ssh-ed25519" {
        return Err("key blob is not ssh-ed25519".into());
    }
    let pk: [u8; 32] = r
        .string()?
        .try_into()
        .map_err(|_| "ed25519 public key has the wrong length".to_string())?;
    let point = curve25519_dalek::edwards::CompressedEdwardsY(pk)
        .decompress()
        .ok_or("ed25519 public key is not a valid curve point")?;
    let hrp = bech32::Hrp::parse("age").map_err(|e| e.to_string())?;
    let encoded = bech32::encode::<bech32::Bech32>(hrp, point.to_montgomery().as_bytes())
        .map_err(|e| e.to_string())?;
    age::x25519::Recipient::from_str(&encoded).map_err(|e| e.to_string())
}

/// Every ssh-ed25519 key of a public key file (`.pub`, `authorized_keys`,
/// `known_hosts`, `ssh-keyscan` output) as an age recipient. Blank lines,
/// `#` comments and other key types are skipped; an ssh-ed25519 line that
/// does not parse is an error with its 1-based line number.
pub fn recipients_from_ssh_public_keys(
    text: &str,
) -> Result<Vec<age::x25519::Recipient>, (usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.contains("ssh-ed25519") {
            continue;
        }
        found.push(recipient_from_ssh_public_key(line).map_err(|e| (n + 1, e))?);
    }
    Ok(found)
}

/// Encode 32 secret bytes as an `AGE-SECRET-KEY-1…` identity.
fn identity_from_scalar(scalar: &[u8; 32]) -> Result<age::x25519::Identity, String> {
    let hrp = bech32::Hrp::parse("age-secret-key-").map_err(|e| e.to_string())?;
    let encoded = Zeroizing::new(
        bech32::encode::<bech32::Bech32>(hrp, scalar)
            .map_err(|e| e.to_string())?
            .to_uppercase(),
    );
    age::x25519::Identity::from_str(&encoded).map_err(|e| e.to_string())
}

struct SshReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> SshReader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("OpenSSH key is truncated")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_kept_0400_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let a = load_or_create(root.path(), IdentityMode::Generated).unwrap();
        assert!(a.created);
        assert_eq!(a.source, Some(IdentitySource::Generated));
        let meta = std::fs::metadata(root.path().join(IDENTITY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        let b = load_or_create(root.path(), IdentityMode::SshHostKey).unwrap();
        assert!(!b.created);
        assert_eq!(b.source, Some(IdentitySource::Generated));
        assert_eq!(a.recipient().to_string(), b.recipient().to_string());
    }

    const TEST_KEY: &str = include_str!("../tests/data/ssh_host_ed25519_key");
    const TEST_PUB: &str = include_str!("../tests/data/ssh_host_ed25519_key.pub");

    /// A vector produced by the real `ssh-to-age` (published in the
    /// pgp2ssh README): public key line → recipient.
    #[test]
    fn public_conversion_matches_ssh_to_age() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICYvKXGcG4a19tTT0Rycbn+D0r/YlKltLJ9dY2gR/Fjx openpgp:0x47C9F3FF";
        assert_eq!(
            recipient_from_ssh_public_key(line).unwrap().to_string(),
            "age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju"
        );
        // The same key as ssh-keyscan prints it.
        let scan = format!("device.local {}", &line[..line.rfind(' ').unwrap()]);
        assert_eq!(
            recipient_from_ssh_public_key(&scan).unwrap().to_string(),
            "age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju"
        );
    }

    /// The identity derived from a host private key (ssh-keygen made the
    /// fixed test key) belongs to the recipient derived from its public key.
    #[test]
    fn private_derivation_matches_public_derivation() {
        let id = identity_from_openssh_ed25519(TEST_KEY).unwrap();
        let from_pub = recipient_from_ssh_public_key(TEST_PUB).unwrap();
        assert_eq!(id.to_public().to_string(), from_pub.to_string());
        assert_eq!(
            from_pub.to_string(),
            "age1eyvyvvcp4urxwj56mjyhvnkvt69ntmg096npkukl24msxvuwgs0smz7cun"
        );
    }

    #[test]
    fn ssh_host_key_mode_derives_once_and_persists() {
        let root = tempfile::tempdir().unwrap();
        let err = load_or_create(root.path(), IdentityMode::SshHostKey)
            .err()
            .unwrap();
        assert!(matches!(err, IdentityError::NoHostKey { .. }), "{err}");
        let ssh = root.path().join(SSH_HOST_KEY);
        std::fs::create_dir_all(ssh.parent().unwrap()).unwrap();
        std::fs::write(&ssh, TEST_KEY).unwrap();
        let a = load_or_create(root.path(), IdentityMode::SshHostKey).unwrap();
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
        let a = load_or_create(root.path(), IdentityMode::Generated).unwrap();
        let ssh = root.path().join(SSH_HOST_KEY);
        std::fs::create_dir_all(ssh.parent().unwrap()).unwrap();
        std::fs::write(&ssh, TEST_KEY).unwrap();
        for mode in [IdentityMode::Generated, IdentityMode::SshHostKey] {
            let b = load_or_create(root.path(), mode).unwrap();
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
    fn bad_ssh_inputs_are_clear_errors() {
        assert!(recipient_from_ssh_public_key("ssh-rsa AAAAB3NzaC1yc2E").is_err());
        assert!(recipient_from_ssh_public_key("ssh-ed25519 !!!").is_err());
        assert!(identity_from_openssh_ed25519(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
        )
        .is_err());
        assert!(identity_from_openssh_ed25519("hello")
            .err()
            .unwrap()
            .contains("not an OpenSSH private key"));
    }

    #[test]
    fn garbage_identity_file_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join(IDENTITY_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "hello").unwrap();
        let err = load_or_create(root.path(), IdentityMode::Generated)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no AGE-SECRET-KEY-1 line"), "{err}");
    }
}
