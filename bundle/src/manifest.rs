//! The manifest inside the ciphertext: what each secret is and where it goes
//! on the device. Never contains values.

use crate::error::BundleError;
use crate::limits;
use crate::paths::{validate_device_path, PathPolicy};
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
    /// systemd units to `try-restart` when this secret changes on a running
    /// device (`sealed-firstboot apply`); never during boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_units: Vec<String>,
    /// systemd units to `try-reload-or-restart` when this secret changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload_units: Vec<String>,
    /// A systemd credential name: at every unseal the value is also
    /// written to `/run/credstore/NAME` (ramfs, root, 0400), where
    /// `LoadCredential=NAME` finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// A systemd credential name: the value is encrypted on the device by
    /// `systemd-creds encrypt` into `/etc/credstore.encrypted/NAME`
    /// (`LoadCredentialEncrypted=NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_encrypted: Option<String>,
}

impl SecretEntry {
    /// The credential names it asks for: `(encrypted, name)`.
    pub fn credentials(&self) -> impl Iterator<Item = (bool, &str)> {
        self.credential
            .as_deref()
            .map(|n| (false, n))
            .into_iter()
            .chain(self.credential_encrypted.as_deref().map(|n| (true, n)))
    }
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
    /// A partial (update) bundle: the listed secrets and templates replace
    /// those of the device's store, the others are kept. A full bundle
    /// replaces the whole store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// A signed bundle may replace the signers the device pins (so that a
    /// leaked signing key can be retired fleet-wide): `sealed-signer1…`
    /// public keys. Never part of the device store's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<Vec<String>>,
}

/// Most signers a bundle may pin.
pub const MAX_SIGNERS: usize = 16;

impl Manifest {
    /// Secrets, then templates.
    pub fn entries(&self) -> impl Iterator<Item = &SecretEntry> {
        self.secrets.iter().chain(self.templates.iter())
    }

    /// Check every rule the device relies on: names, paths, modes, owners,
    /// uniqueness, path clashes, count, a signer list, and where files may
    /// go (`paths`). This is the one home of these rules: the builder runs
    /// it before sealing (through `Contents::encode`), the device when
    /// opening a bundle and when merging a partial one into its store.
    pub fn validate(&self, paths: &PathPolicy) -> Result<(), BundleError> {
        self.validate_shape()?;
        for s in self.entries() {
            check_policy(s, paths).map_err(|e| BundleError::Manifest(e.to_string()))?;
            check_units(s).map_err(|e| BundleError::Manifest(e.to_string()))?;
        }
        if let Some(signers) = &self.signers {
            check_signers(signers).map_err(BundleError::Manifest)?;
        }
        Ok(())
    }

    /// The rules on the manifest's form alone (what a store written by an
    /// older version must still pass): count, names, path syntax, modes
    /// within 0777, owners, units, clashes. Where files may go and which
    /// modes are safe are checked by [`Manifest::validate`] and, for a
    /// store, per secret at every unseal.
    pub fn validate_shape(&self) -> Result<(), BundleError> {
        let count = self.secrets.len() + self.templates.len();
        if count > limits::MAX_SECRETS {
            return Err(BundleError::Limit(format!(
                "{count} secrets and templates (limit {})",
                limits::MAX_SECRETS
            )));
        }
        for s in self.entries() {
            validate_entry(s).map_err(|e| BundleError::Manifest(e.to_string()))?;
            if s.restart_units.len() + s.reload_units.len() > MAX_UNITS_PER_SECRET {
                return Err(BundleError::Manifest(format!(
                    "secret {}: more than {MAX_UNITS_PER_SECRET} units to restart or reload",
                    s.name
                )));
            }
        }
        check_clashes(self.entries()).map_err(|e| BundleError::Manifest(e.to_string()))
    }
}

/// A signer list of a bundle: 1 to [`MAX_SIGNERS`] distinct signers.
pub fn check_signers(signers: &[String]) -> Result<Vec<crate::sign::Signer>, String> {
    if signers.is_empty() {
        return Err("the signer list is empty: a device would then accept unsigned bundles again; name at least one signer".into());
    }
    if signers.len() > MAX_SIGNERS {
        return Err(format!("{} signers (limit {MAX_SIGNERS})", signers.len()));
    }
    let mut parsed = Vec::with_capacity(signers.len());
    for s in signers {
        let signer: crate::sign::Signer = s.parse().map_err(|e| format!("signer list: {e}"))?;
        if parsed.contains(&signer) {
            return Err(format!("signer list: {signer} is listed twice"));
        }
        parsed.push(signer);
    }
    Ok(parsed)
}

/// Where a secret's file goes and with which mode: not where the system
/// reads code or configuration ([`PathPolicy`]), and never writable by
/// group or others (the mode is also within 0777, so no setuid, setgid or
/// sticky bit).
pub fn check_policy(s: &SecretEntry, paths: &PathPolicy) -> Result<(), EntryError> {
    let err = |reason: String| EntryError {
        name: s.name.clone(),
        path: s.path.clone(),
        reason,
    };
    if s.mode & 0o022 != 0 {
        return Err(err(format!(
            "mode {:04o} lets group or others write it; a secret is written only by sealed-firstboot",
            s.mode
        )));
    }
    for (_, name) in s.credentials() {
        paths.check_credential(name).map_err(err)?;
    }
    paths.check(&s.path).map_err(err)
}

/// A rule a manifest entry breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub name: String,
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "secret {} ({:?}): {}", self.name, self.path, self.reason)
    }
}

/// Check one entry on its own: name, device path, mode, owner and group.
pub fn validate_entry(s: &SecretEntry) -> Result<(), EntryError> {
    let err = |reason: String| EntryError {
        name: s.name.clone(),
        path: s.path.clone(),
        reason,
    };
    validate_name(&s.name).map_err(err)?;
    validate_device_path(&s.path).map_err(err)?;
    if s.mode & !0o777 != 0 {
        return Err(err(format!("mode {:o} has bits outside 0777", s.mode)));
    }
    validate_account(&s.owner).map_err(|e| err(format!("owner {e}")))?;
    validate_account(&s.group).map_err(|e| err(format!("group {e}")))?;
    for unit in s.restart_units.iter().chain(&s.reload_units) {
        validate_unit(unit).map_err(err)?;
    }
    for (encrypted, name) in s.credentials() {
        validate_credential_name(name).map_err(|e| {
            err(format!(
                "{}: {e}",
                if encrypted {
                    "credential-encrypted"
                } else {
                    "credential"
                }
            ))
        })?;
    }
    Ok(())
}

/// Longest credential name: a file name in `/run/credstore`, with room
/// for the temporary name it is written under first (`.NAME.tmp-PID`,
/// within the 255 bytes a file name may have).
pub const MAX_CREDENTIAL_NAME: usize = 128;

/// A systemd credential name as this tool writes it: 1 to 128 of
/// `[A-Za-z0-9_.-]`, not starting with `.` or `-` (a file name in
/// `/run/credstore`; systemd takes any valid file name).
pub fn validate_credential_name(name: &str) -> Result<(), String> {
    if is_plain_name(name, MAX_CREDENTIAL_NAME, &['.', '-']) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a credential name: use 1 to {MAX_CREDENTIAL_NAME} letters, digits, '_', '-' or '.', not starting with '.' or '-'"
        ))
    }
}

/// Most units a secret may name (restart and reload together).
pub const MAX_UNITS_PER_SECRET: usize = 32;

/// A systemd unit name: `NAME.TYPE` of at most 255 bytes, from
/// `[A-Za-z0-9:_.\\@-]`, with a known unit type.
pub fn validate_unit(unit: &str) -> Result<(), String> {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "device",
        "mount",
        "automount",
        "swap",
        "target",
        "path",
        "timer",
        "slice",
        "scope",
    ];
    let ok = !unit.is_empty()
        && unit.len() <= 255
        && !unit.starts_with(['-', '.'])
        && unit.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'.' | b'\\' | b'@' | b'-')
        })
        && unit
            .rsplit_once('.')
            .is_some_and(|(name, ty)| !name.is_empty() && TYPES.contains(&ty));
    if ok {
        Ok(())
    } else {
        Err("a unit is not a systemd unit name (NAME.service, NAME.socket, …)".to_string())
    }
}

/// The units a secret names can be restarted or reloaded: none is a
/// template (`getty@.service`, no instance: systemctl refuses it, and the
/// units named with it in one call) or starts with `@`. Checked for
/// bundles and recipes, not for stores an older version wrote (their
/// units fail at the next restart, and nothing else does).
pub fn check_units(s: &SecretEntry) -> Result<(), EntryError> {
    for unit in s.restart_units.iter().chain(&s.reload_units) {
        let prefix = unit.rsplit_once('.').map_or(unit.as_str(), |(p, _)| p);
        if prefix.starts_with('@') || prefix.ends_with('@') {
            return Err(EntryError {
                name: s.name.clone(),
                path: s.path.clone(),
                reason: format!(
                    "unit {unit} is a template, which cannot be restarted or reloaded: name an instance (NAME@INSTANCE.TYPE)"
                ),
            });
        }
    }
    Ok(())
}

/// Names, paths and credential names are unique, and no path is the
/// parent directory of another (a file cannot also be a directory).
pub fn check_clashes<'a>(
    entries: impl IntoIterator<Item = &'a SecretEntry>,
) -> Result<(), EntryError> {
    let mut names = BTreeSet::new();
    let mut paths: std::collections::BTreeMap<&str, &str> = Default::default();
    // One name, one secret, whichever kind: `LoadCredentialEncrypted=NAME`
    // also finds a plain `/run/credstore/NAME` (and systemd's search order
    // decides which), so a name used as `credential` by one secret and as
    // `credential-encrypted` by another would hand a unit the other value.
    let mut credentials: std::collections::BTreeMap<&str, (bool, &str)> = Default::default();
    for s in entries {
        let err = |reason: String| EntryError {
            name: s.name.clone(),
            path: s.path.clone(),
            reason,
        };
        if !names.insert(s.name.as_str()) {
            return Err(err("the name is used by two secrets or templates".into()));
        }
        if let Some(other) = paths.insert(s.path.as_str(), s.name.as_str()) {
            return Err(err(format!("the path is also used by secret {other}")));
        }
        let kind = |encrypted: bool| {
            if encrypted {
                "credential-encrypted"
            } else {
                "credential"
            }
        };
        for (encrypted, cred) in s.credentials() {
            // The same secret as both kinds is one value.
            if let Some((other_kind, other)) =
                credentials.insert(cred, (encrypted, s.name.as_str()))
            {
                if other != s.name {
                    return Err(err(format!(
                        "the {} {cred:?} is also set by secret {other} (as {}): a credential name belongs to one secret",
                        kind(encrypted),
                        kind(other_kind)
                    )));
                }
            }
        }
    }
    for (path, name) in &paths {
        let prefix = format!("{path}/");
        if let Some((other, _)) = paths
            .range(prefix.as_str()..)
            .next()
            .filter(|(o, _)| o.starts_with(&prefix))
        {
            return Err(EntryError {
                name: (*name).to_owned(),
                path: (*path).to_owned(),
                reason: format!("the path is a file but {other} needs it as a directory"),
            });
        }
    }
    Ok(())
}

/// Whether `name` is 1 to `max` of the portable characters `[A-Za-z0-9_.-]`
/// and does not start with any of `not_first`: the one rule for secret,
/// account, device, store-scope and image names.
pub fn is_plain_name(name: &str, max: usize, not_first: &[char]) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with(not_first)
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Secret names: 1 to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if !is_plain_name(name, 128, &['.', '-']) {
        return Err(
            "invalid secret name: use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.' or '-'".to_string(),
        );
    }
    Ok(())
}

/// Largest uid or gid (`(uid_t)-1` is not an id).
pub const MAX_ACCOUNT_ID: u32 = u32::MAX - 1;

/// User and group names as on Linux (1 to 32 of `[A-Za-z0-9_.-]`, not
/// starting with `-`), or numeric ids from 0 to 4294967294.
pub fn validate_account(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.bytes().all(|c| c.is_ascii_digit()) {
        return match name.parse::<u32>() {
            Ok(id) if id <= MAX_ACCOUNT_ID => Ok(()),
            _ => Err(format!("is an id out of range (0 to {MAX_ACCOUNT_ID})")),
        };
    }
    if is_plain_name(name, 32, &['-']) {
        Ok(())
    } else {
        Err(
            "is not a valid user or group name (1 to 32 letters, digits, '_', '-' or '.') or id"
                .to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_units_are_not_restartable() {
        let mut e = SecretEntry {
            name: "x".into(),
            kind: SecretType::SingleLine,
            path: "/run/secrets/x".into(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
            description: None,
            restart_units: vec!["getty@tty1.service".into(), "app.service".into()],
            reload_units: vec!["a@b@c.service".into()],
            credential: None,
            credential_encrypted: None,
        };
        assert!(check_units(&e).is_ok());
        for bad in ["getty@.service", "@x.service", "@.socket"] {
            e.reload_units = vec![bad.into()];
            assert!(validate_entry(&e).is_ok(), "{bad}: the shape stays valid");
            let why = check_units(&e).unwrap_err().reason;
            assert!(why.contains("template"), "{bad}: {why}");
        }
    }

    #[test]
    fn accounts() {
        for ok in ["root", "_apt", "systemd-network", "0", "4242", "4294967294"] {
            assert!(validate_account(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "-x",
            "a b",
            "4294967295",
            "99999999999",
            &"u".repeat(33),
        ] {
            assert!(validate_account(bad).is_err(), "{bad} accepted");
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
