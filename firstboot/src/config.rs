//! `/etc/sealed-firstboot.conf`: `key = value` lines, `#` comments.
//!
//! ```text
//! boot_dir = /boot/firmware   # the boot partition's mount point
//! identity = generated        # or ssh-host-key
//! signer = sealed-signer1…    # a pinned signer (repeat for several)
//! allow_path = /run/…         # a /run prefix bundles may write to after all
//! ```
//! Unknown keys and malformed lines are errors naming the line.

use crate::bundle::{PathPolicy, Signer};
use crate::fsutil;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The configuration file, relative to the root.
pub const CONFIG_FILE: &str = "etc/sealed-firstboot.conf";
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// How the device identity is created at the first provision. Once created
/// it is persisted and never changes by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdentityMode {
    /// A fresh X25519 key (the default).
    #[default]
    Generated,
    /// Derived from `/etc/ssh/ssh_host_ed25519_key` as `ssh-to-age` does,
    /// so a controller can compute the recipient from `ssh-keyscan`.
    SshHostKey,
}

impl IdentityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityMode::Generated => "generated",
            IdentityMode::SshHostKey => "ssh-host-key",
        }
    }
}

/// The parsed configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Absolute device path of the boot partition's mount point.
    pub boot_dir: Option<PathBuf>,
    pub identity: IdentityMode,
    /// The signers pinned here (`signer = …` lines): with any, only
    /// bundles signed by one of them are applied. A signed bundle may
    /// replace them with a list of its own (kept in the store).
    pub signers: Vec<Signer>,
    /// `/run` prefixes bundles may write to although the default rule
    /// refuses them (`allow_path = …` lines).
    pub allow_paths: Vec<String>,
}

impl Config {
    /// Where bundles may put files on this device.
    pub fn path_policy(&self) -> PathPolicy {
        // Each prefix was checked when the file was parsed.
        PathPolicy::allowing(self.allow_paths.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: fsutil::ReadError,
    },
}

/// Read `ROOT/etc/sealed-firstboot.conf`; a missing file is the default.
pub fn load(root: &Path) -> Result<Config, ConfigError> {
    let path = root.join(CONFIG_FILE);
    fsutil::in_root(root, CONFIG_FILE).map_err(|e| ConfigError::Read {
        path: path.clone(),
        source: fsutil::ReadError::Io(e),
    })?;
    let bytes = match fsutil::read_regular_bounded(&path, MAX_CONFIG_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(Config::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse(&String::from_utf8_lossy(&bytes)).map_err(|(line, reason)| ConfigError::Line {
        path,
        line,
        reason,
    })
}

/// Parse the text of the configuration file; errors carry the line number.
pub fn parse(text: &str) -> Result<Config, (usize, String)> {
    let mut config = Config::default();
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
                config.identity = match value {
                    "generated" => IdentityMode::Generated,
                    "ssh-host-key" => IdentityMode::SshHostKey,
                    other => {
                        return Err(err(format!(
                            "identity must be generated or ssh-host-key, found {other:?}"
                        )))
                    }
                }
            }
            "signer" => {
                let signer: Signer = value.parse().map_err(|e: String| err(e))?;
                if config.signers.contains(&signer) {
                    return Err(err(format!("signer {signer} is pinned twice")));
                }
                if config.signers.len() >= crate::bundle::MAX_SIGNERS {
                    return Err(err(format!(
                        "more than {} signers",
                        crate::bundle::MAX_SIGNERS
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
                    "unknown key {other:?} (known: boot_dir, identity, signer, allow_path)"
                )))
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = crate::bundle::SigningKey::generate().signer();
        let b = crate::bundle::SigningKey::generate().signer();
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
    fn errors_name_the_line() {
        assert_eq!(parse("\nboot_dir=relative").unwrap_err().0, 2);
        assert!(parse("identity = both")
            .unwrap_err()
            .1
            .contains("generated or ssh-host-key"));
        assert!(parse("colour = blue")
            .unwrap_err()
            .1
            .contains("unknown key"));
        assert!(parse("just words").unwrap_err().1.contains("key = value"));
    }
}
