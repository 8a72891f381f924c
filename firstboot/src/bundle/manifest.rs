//! The manifest inside the ciphertext: what each secret is and where it goes
//! on the device. Never contains values.

use super::error::BundleError;
use super::limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How a secret's bytes are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretType {
    /// One line, no newline allowed.
    SingleLine,
    /// Text with newlines.
    MultiLine,
    /// KEY=VALUE lines, usable as a systemd `EnvironmentFile=`.
    Env,
    /// Arbitrary bytes.
    File,
}

impl SecretType {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::SingleLine => "single-line",
            SecretType::MultiLine => "multi-line",
            SecretType::Env => "env",
            SecretType::File => "file",
        }
    }
}

impl std::fmt::Display for SecretType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SecretType,
    /// Absolute path on the device, under `/run`.
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Permission bits (e.g. 0o400).
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The manifest of a bundle (and of the device store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub secrets: Vec<SecretEntry>,
    /// Template files with `${SECRET:NAME}` placeholders, rendered at unseal.
    /// Their names share the namespace of the secrets; `kind` is `multi-line`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<SecretEntry>,
}

impl Manifest {
    /// Check every rule the device relies on: names, paths, modes, owners,
    /// uniqueness and count.
    /// Secrets, then templates.
    pub fn entries(&self) -> impl Iterator<Item = &SecretEntry> {
        self.secrets.iter().chain(self.templates.iter())
    }

    pub fn validate(&self) -> Result<(), BundleError> {
        let count = self.secrets.len() + self.templates.len();
        if count > limits::MAX_SECRETS {
            return Err(BundleError::Limit(format!(
                "{count} secrets and templates (limit {})",
                limits::MAX_SECRETS
            )));
        }
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for s in self.entries() {
            validate_name(&s.name).map_err(BundleError::Manifest)?;
            validate_device_path(&s.path)
                .map_err(|e| BundleError::Manifest(format!("secret {}: {e}", s.name)))?;
            if s.mode & !0o777 != 0 {
                return Err(BundleError::Manifest(format!(
                    "secret {}: mode {:o} has bits outside 0777",
                    s.name, s.mode
                )));
            }
            validate_account(&s.owner)
                .map_err(|e| BundleError::Manifest(format!("secret {}: owner {e}", s.name)))?;
            validate_account(&s.group)
                .map_err(|e| BundleError::Manifest(format!("secret {}: group {e}", s.name)))?;
            if !names.insert(s.name.as_str()) {
                return Err(BundleError::Manifest(format!(
                    "duplicate secret name {}",
                    s.name
                )));
            }
            if !paths.insert(s.path.as_str()) {
                return Err(BundleError::Manifest(format!(
                    "secret {}: path {} is used twice",
                    s.name, s.path
                )));
            }
        }
        // A path must not be a parent directory of another path.
        for p in &paths {
            let prefix = format!("{p}/");
            if let Some(other) = paths.iter().find(|o| o.starts_with(&prefix)) {
                return Err(BundleError::Manifest(format!(
                    "path {p} is a file but {other} needs it as a directory"
                )));
            }
        }
        Ok(())
    }
}

/// Secret names: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if name.is_empty() || name.len() > 128 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "invalid secret name {name:?}: use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// Device paths: absolute, normalised, strictly under `/run`, each component
/// a plain name (no `.`, `..`, empty components or control characters), and
/// not `/run/secrets` or `/run/secrets.d` themselves or anything inside
/// `/run/secrets.d` (owned by the runtime).
pub fn validate_device_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix("/run/")
        .ok_or_else(|| format!("path {path:?} must be absolute and under /run/"))?;
    if path.len() > 1024 {
        return Err("path is longer than 1024 bytes".into());
    }
    for comp in rest.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(format!(
                "path {path:?} must be normalised (no empty, '.' or '..' components)"
            ));
        }
        if comp.bytes().any(|c| c.is_ascii_control()) {
            return Err(format!("path {path:?} contains a control character"));
        }
    }
    if rest == "secrets" || rest == "secrets.d" || rest.starts_with("secrets.d/") {
        return Err(format!(
            "path {path:?} is reserved for the runtime; use a file under /run/secrets/"
        ));
    }
    Ok(())
}

/// User and group names (or numeric ids) as on Linux.
fn validate_account(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid user or group name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_device_path("/run/secrets/wifi").is_ok());
        assert!(validate_device_path("/run/wpa/psk").is_ok());
        for bad in [
            "/etc/shadow",
            "run/secrets/x",
            "/run/secrets/../../etc/x",
            "/run/secrets/./x",
            "/run//x",
            "/run/secrets",
            "/run/secrets.d/1/x",
            "/run/",
            "/run/x/",
        ] {
            assert!(validate_device_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("wifi_psk").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad} accepted");
        }
    }
}
