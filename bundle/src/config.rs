//! `/etc/sealed-firstboot.conf`: `key = value` lines, `#` comments.
//!
//! ```text
//! boot_dir = /boot/firmware   # the boot partition's mount point
//! identity = generated        # or ssh-host-key, tpm2, rpi-otp
//! tpm2_pcrs = 7+14            # identity = tpm2: PCRs to bind to (default none)
//! credential_key = host       # credential-encrypted: host, tpm2 or host+tpm2
//! signer = sealed-signer1…    # a pinned signer (repeat for several)
//! allow_path = /run/…         # a /run prefix bundles may write to after all
//! ```
//! Unknown keys and malformed lines are errors naming the line.
//!
//! The format lives here because both sides use it: the builder writes
//! and reads an image's configuration, the device agent loads it
//! (`sealed_firstboot::config::load`).

use crate::paths::PathPolicy;
use crate::sign::Signer;
use std::path::PathBuf;

/// The configuration file, relative to the root.
pub const CONFIG_FILE: &str = "etc/sealed-firstboot.conf";
/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// How the device identity is created at the first provision. Once created
/// it never changes by itself (see `identity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdentityMode {
    /// A fresh X25519 key, kept in a file (the default).
    #[default]
    Generated,
    /// Derived from `/etc/ssh/ssh_host_ed25519_key` as `ssh-to-age` does,
    /// so a controller can compute the recipient from `ssh-keyscan`.
    SshHostKey,
    /// A fresh X25519 key, stored only sealed by the device's TPM2
    /// (`systemd-creds encrypt --with-key=tpm2`).
    Tpm2,
    /// Derived at every boot from the Raspberry Pi's OTP device key
    /// (`rpi-fw-crypto hmac`); never stored.
    RpiOtp,
}

impl IdentityMode {
    pub const ALL: [IdentityMode; 4] = [
        IdentityMode::Generated,
        IdentityMode::SshHostKey,
        IdentityMode::Tpm2,
        IdentityMode::RpiOtp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Generated => "generated",
            IdentityMode::SshHostKey => "ssh-host-key",
            IdentityMode::Tpm2 => "tpm2",
            IdentityMode::RpiOtp => "rpi-otp",
        }
    }

    pub fn parse(s: &str) -> Option<IdentityMode> {
        IdentityMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The TPM2 PCRs a sealed identity or encrypted credential is bound to
/// (`tpm2_pcrs = 7+14`): indexes 0 to 23, `+`-separated as systemd-creds
/// takes them. Empty (the default, also `tpm2_pcrs = none`): bound to no
/// PCR, so firmware, boot loader and kernel updates never lock the device
/// out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pcrs(Vec<u8>);

impl Pcrs {
    /// No PCR.
    pub fn none() -> Pcrs {
        Pcrs(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn indexes(&self) -> &[u8] {
        &self.0
    }

    /// `7+14`, sorted, each once; `none` for the empty list.
    pub fn parse(s: &str) -> Result<Pcrs, String> {
        let s = s.trim();
        if s.is_empty() || s == "none" {
            return Ok(Pcrs::none());
        }
        let mut out = Vec::new();
        for part in s.split('+') {
            let n: u8 = part
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= 23)
                .ok_or_else(|| {
                    format!("tpm2_pcrs: {part:?} is not a PCR index (0 to 23, joined by +, e.g. 7+14; or none)")
                })?;
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(Pcrs(out))
    }

    /// The form `--tpm2-pcrs=` takes (empty for none).
    pub fn arg(&self) -> String {
        self.0
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("+")
    }

    pub fn from_indexes(mut v: Vec<u8>) -> Pcrs {
        v.sort_unstable();
        v.dedup();
        Pcrs(v)
    }
}

impl std::fmt::Display for Pcrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.arg())
        }
    }
}

/// Which keys `systemd-creds encrypt` binds a `credential-encrypted`
/// secret to (`credential_key = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKey {
    /// `/var/lib/systemd/credential.secret` (on the same disk).
    Host,
    /// The TPM2 only.
    Tpm2,
    /// Both: the disk and this machine's TPM2.
    HostTpm2,
}

impl CredentialKey {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKey::Host => "host",
            CredentialKey::Tpm2 => "tpm2",
            CredentialKey::HostTpm2 => "host+tpm2",
        }
    }

    /// Whether the TPM2 takes part (then the PCRs apply).
    pub fn uses_tpm2(self) -> bool {
        self != CredentialKey::Host
    }
}

/// The parsed configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Absolute device path of the boot partition's mount point.
    pub boot_dir: Option<PathBuf>,
    pub identity: IdentityMode,
    /// `identity = tpm2` (and TPM-bound encrypted credentials): the PCRs
    /// the sealed form is bound to.
    pub tpm2_pcrs: Pcrs,
    /// `credential_key = …`; unset: `host+tpm2` with `identity = tpm2`,
    /// else `host`.
    pub credential_key: Option<CredentialKey>,
    /// The signers pinned here (`signer = …` lines): with any, only
    /// bundles signed by one of them are applied. A signed bundle may
    /// replace them with a list of its own (kept in the store).
    pub signers: Vec<Signer>,
    /// `/run` prefixes bundles may write to although the default rule
    /// refuses them (`allow_path = …` lines).
    pub allow_paths: Vec<String>,
}

impl Config {
    /// The keys `credential-encrypted` secrets are bound to.
    pub fn credential_key(&self) -> CredentialKey {
        self.credential_key
            .unwrap_or(if self.identity == IdentityMode::Tpm2 {
                CredentialKey::HostTpm2
            } else {
                CredentialKey::Host
            })
    }

    /// Where bundles may put files on this device.
    pub fn path_policy(&self) -> PathPolicy {
        // Each prefix was checked when the file was parsed.
        PathPolicy::allowing(self.allow_paths.clone()).unwrap_or_default()
    }
}

/// The keys that take one value (`signer` and `allow_path` may repeat).
const ONE_VALUE_KEYS: [&str; 4] = ["boot_dir", "identity", "tpm2_pcrs", "credential_key"];

/// Parse the text of the configuration file; errors carry the line number.
pub fn parse(text: &str) -> Result<Config, (usize, String)> {
    let mut config = Config::default();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: String| (n + 1, reason);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("expected key = value".into()))?;
        let (key, value) = (key.trim(), value.trim());
        // A key that holds one value is set once: a second line (appended
        // by a script, say) would silently override the first.
        if ONE_VALUE_KEYS.contains(&key) {
            if let Some(first) = seen.iter().find(|(k, _)| *k == key).map(|(_, l)| *l) {
                return Err(err(format!(
                    "{key} is set twice (first on line {first}); it takes one value"
                )));
            }
            seen.push((key, n + 1));
        }
        match key {
            "boot_dir" => {
                if !value.starts_with('/') {
                    return Err(err(format!(
                        "boot_dir must be an absolute path, found {value:?}"
                    )));
                }
                config.boot_dir = Some(PathBuf::from(value));
            }
            "identity" => {
                config.identity = IdentityMode::parse(value).ok_or_else(|| {
                    err(format!(
                        "identity must be generated, ssh-host-key, tpm2 or rpi-otp, found {value:?}"
                    ))
                })?
            }
            "tpm2_pcrs" => config.tpm2_pcrs = Pcrs::parse(value).map_err(err)?,
            "credential_key" => {
                config.credential_key = Some(match value {
                    "host" => CredentialKey::Host,
                    "tpm2" => CredentialKey::Tpm2,
                    "host+tpm2" => CredentialKey::HostTpm2,
                    other => {
                        return Err(err(format!(
                            "credential_key must be host, tpm2 or host+tpm2, found {other:?}"
                        )))
                    }
                })
            }
            "signer" => {
                let signer: Signer = value.parse().map_err(|e: String| err(e))?;
                if config.signers.contains(&signer) {
                    return Err(err(format!("signer {signer} is pinned twice")));
                }
                if config.signers.len() >= crate::manifest::MAX_SIGNERS {
                    return Err(err(format!(
                        "more than {} signers",
                        crate::manifest::MAX_SIGNERS
                    )));
                }
                config.signers.push(signer);
            }
            "allow_path" => {
                PathPolicy::allowing(vec![value.to_string()]).map_err(err)?;
                config.allow_paths.push(value.to_string());
            }
            other => {
                return Err(err(format!(
                    "unknown key {other:?} (known: boot_dir, identity, tpm2_pcrs, credential_key, signer, allow_path)"
                )))
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_keys_comments_and_spacing() {
        let c = parse("# comment\nboot_dir=/boot/firmware\n identity = ssh-host-key # why\n\n")
            .unwrap();
        assert_eq!(c.boot_dir.as_deref(), Some(Path::new("/boot/firmware")));
        assert_eq!(c.identity, IdentityMode::SshHostKey);
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn signers_and_allowed_paths_are_listed_and_checked() {
        let a = crate::sign::SigningKey::generate().signer();
        let b = crate::sign::SigningKey::generate().signer();
        let c = parse(&format!(
            "signer = {a}\nsigner={b} # the CI key\nallow_path = /run/systemd/network\n"
        ))
        .unwrap();
        assert_eq!(c.signers, [a, b]);
        assert!(c
            .path_policy()
            .check("/run/systemd/network/10-x.network")
            .is_ok());
        assert!(c.path_policy().check("/run/systemd/system/x").is_err());
        assert_eq!(
            parse(&format!("signer = {a}\nsigner = {a}")).unwrap_err().0,
            2
        );
        assert!(parse("signer = age1xyz")
            .unwrap_err()
            .1
            .contains("sealed-signer1"));
        assert!(parse("allow_path = /etc").is_err());
        assert!(parse("allow_path = /run/systemd/../x").is_err());
    }

    #[test]
    fn hardware_identities_pcrs_and_credential_keys() {
        let c = parse("identity = tpm2\ntpm2_pcrs = 14+7+7\n").unwrap();
        assert_eq!(c.identity, IdentityMode::Tpm2);
        assert_eq!(c.tpm2_pcrs.indexes(), [7, 14]);
        assert_eq!(c.tpm2_pcrs.arg(), "7+14");
        assert_eq!(c.credential_key(), CredentialKey::HostTpm2);
        let c = parse("identity = rpi-otp\ntpm2_pcrs = none\ncredential_key = tpm2").unwrap();
        assert_eq!(c.identity, IdentityMode::RpiOtp);
        assert!(c.tpm2_pcrs.is_empty());
        assert_eq!(c.tpm2_pcrs.to_string(), "none");
        assert_eq!(c.credential_key(), CredentialKey::Tpm2);
        assert_eq!(Config::default().credential_key(), CredentialKey::Host);
        assert!(Config::default().tpm2_pcrs.is_empty());
        for bad in [
            "tpm2_pcrs = 24",
            "tpm2_pcrs = 7,14",
            "tpm2_pcrs = 7+",
            "tpm2_pcrs = -1",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.1.contains("PCR index"), "{bad}: {}", e.1);
        }
        assert!(parse("credential_key = auto")
            .unwrap_err()
            .1
            .contains("host, tpm2 or host+tpm2"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("\nboot_dir=relative").unwrap_err().0, 2);
        assert!(parse("identity = both")
            .unwrap_err()
            .1
            .contains("generated, ssh-host-key, tpm2 or rpi-otp"));
        assert!(parse("colour = blue")
            .unwrap_err()
            .1
            .contains("unknown key"));
        assert!(parse("just words").unwrap_err().1.contains("key = value"));
    }

    /// A key that takes one value, set twice, is an error naming both
    /// lines (the later line used to win silently); signer and allow_path
    /// lines repeat.
    #[test]
    fn a_one_value_key_set_twice_is_refused() {
        for key in ONE_VALUE_KEYS {
            let value = match key {
                "boot_dir" => "/boot",
                "identity" => "tpm2",
                "tpm2_pcrs" => "7",
                _ => "host",
            };
            let text = format!("{key} = {value}\n# note\n{key} = {value}\n");
            let (line, reason) = parse(&text).unwrap_err();
            assert_eq!(line, 3, "{key}: {reason}");
            assert!(reason.contains("set twice (first on line 1)"), "{reason}");
        }
        let c = parse("allow_path = /run/a\nallow_path = /run/b\n").unwrap();
        assert_eq!(c.allow_paths.len(), 2);
    }
}
