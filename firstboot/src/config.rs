//! Loading `/etc/sealed-firstboot.conf` on the device. The format itself
//! (its keys, [`Config`], [`parse`]) lives in `sealed_bundle::config`,
//! since the builder writes and reads it too.

use crate::fsutil;
pub use sealed_bundle::config::{
    parse, Config, CredentialKey, IdentityMode, Pcrs, CONFIG_FILE, MAX_CONFIG_BYTES,
};
use sealed_bundle::io::ReadError;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: ReadError },
}

/// Read `ROOT/etc/sealed-firstboot.conf`; a missing file is the default.
pub fn load(root: &Path) -> Result<Config, ConfigError> {
    let path = root.join(CONFIG_FILE);
    fsutil::in_root(root, CONFIG_FILE).map_err(|e| ConfigError::Read {
        path: path.clone(),
        source: ReadError::Io(e),
    })?;
    let bytes = match sealed_bundle::io::read_regular_bounded(&path, MAX_CONFIG_BYTES) {
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
