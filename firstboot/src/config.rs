//! `/etc/sealed-firstboot.conf`: `key = value` lines, `#` comments.
//!
//! ```text
//! boot_dir = /boot/firmware   # the boot partition's mount point
//! identity = generated        # or ssh-host-key
//! ```
//! Unknown keys and malformed lines are errors naming the line.

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
            other => {
                return Err(err(format!(
                    "unknown key {other:?} (known: boot_dir, identity)"
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
