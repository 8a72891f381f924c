//! The recipe: a TOML file describing the image and the secrets it carries.
//! Unknown fields are errors; every error names the file, line and column.

pub mod devices;
pub mod plan;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RecipeError {
    #[error("reading recipe {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    pub image: ImageSection,
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionSection>,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSection>,
    /// Template files rendered on the device with `${SECRET:NAME}` filled in.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSection>,
    /// The team secrets store (`source = { store = "NAME" }`).
    pub store: Option<StoreSection>,
    /// `[agent]`: install sealed-firstboot into the image's root filesystem.
    #[serde(default)]
    pub agent: AgentSection,
    /// `[signing]`: the default signing key and further signers to pin.
    #[serde(default)]
    pub signing: SigningSection,
    /// `[policy]`: where bundles may put files besides the default rule.
    #[serde(default)]
    pub policy: PolicySection,
    /// Directory of the recipe file: relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[agent]`: install the device agent (`sealed-firstboot`, its unit and
/// `/etc/sealed-firstboot.conf`) into the ext4 root filesystem, as
/// `--install-agent` does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentSection {
    #[serde(default)]
    pub install: bool,
    /// The binary to install (relative to the recipe); default the shipped
    /// `sealed-firstboot-ARCH` for the root filesystem's architecture.
    pub binary: Option<PathBuf>,
    /// The boot partition's mount point on the device; default from the
    /// image's `/etc/fstab`.
    pub boot_dir: Option<String>,
    /// The root partition (number or name); default the only ext one.
    pub root_partition: Option<String>,
}

/// `[signing]`: how bundles are signed and which signers images pin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SigningSection {
    /// The signing key file (relative to the recipe), used when neither
    /// `--signing-key` nor the environment names one.
    pub key: Option<PathBuf>,
    /// More signers (`sealed-signer1…`) an image pins besides the signing
    /// key's own: another team member's or CI's key.
    #[serde(default)]
    pub trust: Vec<String>,
}

/// `[policy]`: where bundles may put files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PolicySection {
    /// `/run` prefixes bundles may write to although the default rule
    /// refuses them (written into the image's configuration as
    /// `allow_path` lines; the devices must allow them too).
    #[serde(default)]
    pub allow_paths: Vec<String>,
}

/// `[store]`: where the secrets store is (default `secrets-store/` beside
/// the recipe).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreSection {
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageSection {
    /// Output file stem: `NAME.img`, `NAME.key`.
    pub name: String,
    #[serde(default)]
    pub table: TableKind,
    /// Total size; default: the partitions plus alignment and GPT backup.
    pub size: Option<Size>,
    /// GPT disk GUID (fix it for reproducible images).
    pub disk_guid: Option<uuid::Uuid>,
    /// MBR disk signature, e.g. "0x1234abcd".
    pub disk_signature: Option<Id32>,
}

pub use crate::image::TableKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionType {
    /// EFI system partition (GPT C12A7328…, MBR 0xef).
    Esp,
    /// FAT data partition (GPT basic data, MBR 0x0c).
    Fat,
    /// Linux filesystem (GPT 0FC63DAF…, MBR 0x83).
    Linux,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PartitionSection {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: PartitionType,
    pub size: Size,
    /// Override the partition type GUID (GPT), e.g. the root partition type
    /// of the Discoverable Partitions Specification.
    pub type_guid: Option<uuid::Uuid>,
    /// Override the partition type byte (MBR), e.g. "0x0e".
    pub mbr_type: Option<Id8>,
    /// Partition UUID (GPT), fixed for reproducible images.
    pub uuid: Option<uuid::Uuid>,
    /// MBR bootable flag.
    #[serde(default)]
    pub bootable: bool,
    /// This FAT partition receives `sealed-secrets/` (exactly one must).
    #[serde(default)]
    pub secrets: bool,
    /// FAT: files to copy in, `"path/in/fat" = "source/path"`; a source
    /// directory is copied recursively.
    #[serde(default)]
    pub files: BTreeMap<String, PathBuf>,
    /// FAT volume id, e.g. "0x1234abcd".
    pub volume_id: Option<Id32>,
    /// ext4 from a directory or tarball (`mke2fs -d`).
    pub source: Option<PathBuf>,
    /// ext4 filesystem UUID.
    pub fs_uuid: Option<uuid::Uuid>,
    /// An existing partition image copied in as is.
    pub image: Option<PathBuf>,
}

/// Secret types, as in the bundle.
pub use sealed_bundle::SecretType;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretSection {
    #[serde(rename = "type")]
    pub kind: SecretType,
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub required: bool,
    /// Where it goes on the device; default `/run/secrets/NAME`.
    pub path: Option<String>,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    /// Octal, default "0400"; checked when the recipe is read.
    #[serde(default = "mode_0400")]
    pub mode: Mode,
    /// Where the value comes from; default: the environment variable NAME.
    pub source: Option<SourceSpec>,
    /// Processing at build time.
    #[serde(default)]
    pub process: Process,
    /// Seconds a `command` source may run before it is killed (default 60).
    pub timeout: Option<f64>,
    /// Units to `systemctl try-restart` when this secret changes on a
    /// running device (`sealed-firstboot apply`).
    #[serde(default)]
    pub restart_units: Vec<String>,
    /// Units to `systemctl try-reload-or-restart` when it changes.
    #[serde(default)]
    pub reload_units: Vec<String>,
    /// Also hand it to systemd as this credential: written to
    /// `/run/credstore/NAME` at every unseal (`LoadCredential=NAME`).
    pub credential: Option<String>,
    /// Also encrypt it on the device with `systemd-creds` into
    /// `/etc/credstore.encrypted/NAME` (`LoadCredentialEncrypted=NAME`).
    pub credential_encrypted: Option<String>,
}

/// A template file: its text travels inside the bundle and is rendered into
/// `path` at unseal, each `${SECRET:NAME}` replaced by that secret's value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TemplateSection {
    /// The template file on the build host, relative to the recipe.
    pub source: PathBuf,
    /// Where the rendered file goes on the device (under /run).
    pub path: String,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "mode_0400")]
    pub mode: Mode,
    pub description: Option<String>,
    /// Units to restart when the rendered file changes (see secrets).
    #[serde(default)]
    pub restart_units: Vec<String>,
    /// Units to reload when the rendered file changes.
    #[serde(default)]
    pub reload_units: Vec<String>,
    /// The rendered file as a systemd credential (see secrets).
    pub credential: Option<String>,
    /// The rendered file as an encrypted systemd credential (see secrets).
    pub credential_encrypted: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum SourceSpec {
    /// `{ env = "VAR" }`
    Env(String),
    /// `{ file = "path" }`, relative to the recipe.
    File(PathBuf),
    /// `{ command = ["pass", "show", "wifi"] }`: its stdout.
    Command(Vec<String>),
    /// `{ dotenv = { file = ".env", key = "WIFI_PSK" } }`
    Dotenv { file: PathBuf, key: Option<String> },
    /// `{ store = "WIFI_PSK" }`: the team secrets store.
    Store(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Process {
    #[default]
    None,
    /// Hash the password with yescrypt at build time.
    MkpasswdYescrypt,
}

fn yes() -> bool {
    true
}
fn root() -> String {
    "root".into()
}
fn mode_0400() -> Mode {
    Mode(0o400)
}

/// `Deserialize` for a newtype from a string, through its parse function:
/// a bad value is a recipe error naming the line and key.
macro_rules! parsed_from_string {
    ($ty:ident, $parse:path) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map($ty).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A size from the recipe (`"64MiB"`, `"2G"`, `"4096"`), parsed when the
/// recipe is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

parsed_from_string!(Size, crate::image::parse_size);

/// A 32-bit id from the recipe (`"0x1234abcd"` or decimal): a disk
/// signature or a FAT volume id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id32(pub u32);

parsed_from_string!(Id32, parse_u32_id);

/// An MBR partition type byte from the recipe (`"0x83"` or decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id8(pub u8);

parsed_from_string!(Id8, parse_u8_id);

/// A permission mode from the recipe (`"0400"`, `"640"`, `"0o600"`), parsed
/// once when the recipe is read: a bad one is a recipe error naming its
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(u32);

impl Mode {
    /// The permission bits (at most 0o777).
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

parsed_from_string!(Mode, parse_mode);

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Recipe::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        recipe.path = path.to_path_buf();
        recipe.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        recipe.validate()?;
        Ok(recipe)
    }

    fn invalid(&self, message: String) -> RecipeError {
        RecipeError::Invalid {
            path: self.path.clone(),
            message,
        }
    }

    /// The signers of `[signing] trust` (checked when the recipe is read).
    pub fn trusted_signers(&self) -> Vec<sealed_bundle::Signer> {
        self.signing
            .trust
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Where this recipe's bundles may put files (checked when the recipe
    /// is read).
    pub fn path_policy(&self) -> sealed_bundle::PathPolicy {
        sealed_bundle::PathPolicy::allowing(self.policy.allow_paths.clone()).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), RecipeError> {
        for (i, s) in self.signing.trust.iter().enumerate() {
            s.parse::<sealed_bundle::Signer>()
                .map_err(|e| self.invalid(format!("signing.trust[{i}]: {e}")))?;
        }
        if self.signing.trust.len() >= sealed_bundle::MAX_SIGNERS {
            return Err(self.invalid(format!(
                "signing.trust: at most {} signers besides the signing key",
                sealed_bundle::MAX_SIGNERS - 1
            )));
        }
        sealed_bundle::PathPolicy::allowing(self.policy.allow_paths.clone())
            .map_err(|e| self.invalid(format!("policy.allow-paths: {e}")))?;
        if !sealed_bundle::is_plain_name(&self.image.name, usize::MAX, &['.']) {
            return Err(self.invalid(
                "image.name: use letters, digits, '_', '-' or '.', not starting with '.'"
                    .to_string(),
            ));
        }
        for (name, s) in &self.secrets {
            sealed_bundle::validate_name(name).map_err(|e| self.invalid(e))?;
            if s.timeout.is_some_and(|t| !(t > 0.0 && t <= 86_400.0)) {
                return Err(self.invalid(format!(
                    "secret {name}: timeout must be a number of seconds from 0 to 86400"
                )));
            }
            if let Some(SourceSpec::Store(n)) = &s.source {
                crate::store::validate_name(n)
                    .map_err(|e| self.invalid(format!("secret {name}: source store: {e}")))?;
            }
            let path = self.device_path(name, s);
            sealed_bundle::validate_device_path(&path)
                .map_err(|e| self.invalid(format!("secret {name}: {e}")))?;
            if s.process == Process::MkpasswdYescrypt && s.kind != SecretType::SingleLine {
                return Err(self.invalid(format!(
                    "secret {name}: process = \"mkpasswd-yescrypt\" needs type = \"single-line\""
                )));
            }
        }
        for (name, t) in &self.templates {
            sealed_bundle::validate_name(name).map_err(|e| self.invalid(e))?;
            if self.secrets.contains_key(name) {
                return Err(self.invalid(format!(
                    "template {name}: a secret has the same name; names are shared"
                )));
            }
            sealed_bundle::validate_device_path(&t.path)
                .map_err(|e| self.invalid(format!("template {name}: {e}")))?;
        }
        // Every rule the device applies to a manifest (owners and groups,
        // reserved paths, lengths, duplicate paths, file/directory clashes)
        // lives once, in the firstboot library: what builds also applies.
        let mut entries = Vec::new();
        for (name, s) in &self.secrets {
            entries.push(self.secret_entry(name, s).map_err(|e| self.invalid(e))?);
        }
        for (name, t) in &self.templates {
            entries.push(self.template_entry(name, t).map_err(|e| self.invalid(e))?);
        }
        // Messages name the secret and the field, never a value.
        let described =
            |e: sealed_bundle::EntryError| self.invalid(format!("secret {}: {}", e.name, e.reason));
        let paths = self.path_policy();
        for e in &entries {
            sealed_bundle::validate_entry(e).map_err(described)?;
            sealed_bundle::check_policy(e, &paths).map_err(described)?;
            sealed_bundle::check_units(e).map_err(described)?;
        }
        sealed_bundle::check_clashes(&entries).map_err(described)?;
        Ok(())
    }

    /// The manifest entry of a secret (what the device is told; no value).
    pub fn secret_entry(
        &self,
        name: &str,
        s: &SecretSection,
    ) -> Result<sealed_bundle::SecretEntry, String> {
        Ok(sealed_bundle::SecretEntry {
            name: name.to_owned(),
            kind: s.kind,
            path: self.device_path(name, s),
            owner: s.owner.clone(),
            group: s.group.clone(),
            mode: s.mode.bits(),
            description: s.description.clone(),
            restart_units: s.restart_units.clone(),
            reload_units: s.reload_units.clone(),
            credential: s.credential.clone(),
            credential_encrypted: s.credential_encrypted.clone(),
        })
    }

    /// The manifest entry of a template (its text travels as the value).
    pub fn template_entry(
        &self,
        name: &str,
        t: &TemplateSection,
    ) -> Result<sealed_bundle::SecretEntry, String> {
        Ok(sealed_bundle::SecretEntry {
            name: name.to_owned(),
            kind: SecretType::MultiLine,
            path: t.path.clone(),
            owner: t.owner.clone(),
            group: t.group.clone(),
            mode: t.mode.bits(),
            description: t.description.clone(),
            restart_units: t.restart_units.clone(),
            reload_units: t.reload_units.clone(),
            credential: t.credential.clone(),
            credential_encrypted: t.credential_encrypted.clone(),
        })
    }

    /// The partition rules `build` needs (`inject` uses only the secrets).
    pub fn validate_layout(&self) -> Result<(), RecipeError> {
        if self.partitions.is_empty() {
            return Err(self.invalid("the recipe has no [[partition]]: `build` assembles an image from them (use `inject` to seal into an existing image)".into()));
        }
        let holders: Vec<_> = self.partitions.iter().filter(|p| p.secrets).collect();
        if holders.len() != 1 {
            return Err(self.invalid(format!(
                "exactly one partition must have `secrets = true` (the FAT boot partition that receives sealed-secrets/), found {}",
                holders.len()
            )));
        }
        for p in &self.partitions {
            let fat = matches!(p.kind, PartitionType::Esp | PartitionType::Fat);
            let what = format!("partition {:?}", p.label);
            if p.secrets && !fat {
                return Err(self.invalid(format!(
                    "{what}: `secrets = true` needs a FAT partition (type esp or fat)"
                )));
            }
            if fat && (p.source.is_some() || p.fs_uuid.is_some()) {
                return Err(self.invalid(format!(
                    "{what}: `source`/`fs-uuid` build ext4; a FAT partition takes `files`"
                )));
            }
            if !fat && (!p.files.is_empty() || p.volume_id.is_some()) {
                return Err(self.invalid(format!(
                    "{what}: `files`/`volume-id` are for FAT partitions"
                )));
            }
            if p.image.is_some() && (p.source.is_some() || !p.files.is_empty()) {
                return Err(self.invalid(format!("{what}: `image` copies a partition image as is; it excludes `source` and `files`")));
            }
            if p.secrets && p.image.is_some() {
                return Err(self.invalid(format!(
                    "{what}: the secrets partition is built by build-image; drop `image`"
                )));
            }
        }
        Ok(())
    }

    /// The device path of a secret.
    pub fn device_path(&self, name: &str, s: &SecretSection) -> String {
        s.path
            .clone()
            .unwrap_or_else(|| format!("/run/secrets/{name}"))
    }

    /// A recipe-relative path made usable.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Parse an octal mode such as "0400" or "640".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| "mode is not an octal number such as 0400 or 0640".to_string())?;
    if m > 0o777 {
        return Err("mode has bits outside 0777".to_string());
    }
    Ok(m)
}

/// Parse a partition type byte such as "0x83".
pub fn parse_u8_id(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| "not a byte such as 0x83".to_string())
}

/// Parse a hex or decimal 32-bit id such as "0x1234abcd".
pub fn parse_u32_id(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| "not a 32-bit number such as 0x1234abcd".to_string())
}

/// toml's messages carry the line and column; make sure they do, and keep
/// them on one readable block.
/// A TOML error as "line L, column C (key K): what", without the offending
/// value: serde's messages quote it (`unknown variant \`…\``, `invalid
/// type: string "…"`), and it may be a secret put in the wrong place.
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut msg = redact_quoted(e.message());
    // An unknown key is named when it looks like a field name (a typo such
    // as `colour`, `sourec`), never when it could be a value in the wrong
    // place (upper case, digits, long).
    if let Some(key) = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        .filter(|k| {
            (1..=32).contains(&k.len())
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'-' || c == b'_')
        })
    {
        msg = msg.replacen(
            "unknown field (value not shown)",
            &format!("unknown field `{key}`"),
            1,
        );
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            // The key is named only when the schema knows it (a bad value
            // of a known field): an unknown key may be a misplaced value.
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.len() <= 128 && !k.contains(['"', '\'']))
                .filter(|_| !e.message().starts_with("unknown field"));
            match key {
                Some(k) => format!("line {line}, column {col} (key {k}): {msg}"),
                None => format!("line {line}, column {col}: {msg}"),
            }
        }
        None => msg,
    }
}

/// Drop every quoted literal (backticks or double quotes) before the
/// `expected …` part of a serde message; what is expected names the
/// schema, never input, and stays.
pub fn redact_quoted(msg: &str) -> String {
    let (head, tail) = match msg.find(", expected") {
        Some(i) => msg.split_at(i),
        None => (msg, ""),
    };
    let mut out = String::with_capacity(msg.len());
    let mut quote = None;
    let mut hidden = false;
    for c in head.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                if !hidden {
                    out.push_str("(value not shown)");
                    hidden = true;
                }
            }
            Some(_) => {}
            None if c == '`' || c == '"' => {
                quote = Some(c);
                hidden = false;
            }
            None => out.push(c),
        }
    }
    if quote.is_some() && !hidden {
        out.push_str("(value not shown)");
    }
    out.push_str(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One ESP holding one secret.
    fn minimal() -> String {
        format!(
            "{}\n[secrets.wifi_psk]\ntype = \"single-line\"\ndescription = \"Wi-Fi passphrase\"\n",
            testkit::ESP_ONLY
        )
    }

    #[test]
    fn minimal_recipe_parses_with_defaults() {
        let r = Recipe::parse(&minimal(), Path::new("dir/r.toml")).unwrap();
        let s = &r.secrets["wifi_psk"];
        assert!(s.required);
        assert_eq!(s.owner, "root");
        assert_eq!(s.mode.bits(), 0o400);
        assert_eq!(r.device_path("wifi_psk", s), "/run/secrets/wifi_psk");
        assert_eq!(r.base_dir, PathBuf::from("dir"));
    }

    #[test]
    fn unknown_field_names_file_line_and_column() {
        let text = minimal().replace("description =", "colour = \"red\"\ndescription =");
        let err = Recipe::parse(&text, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.toml: line 13, column 1"), "{err}");
        // A key that looks like a field name (a typo) is named; one that
        // could be a value is not. What the table expects is listed.
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
        let text = minimal().replace("description =", "Tok3nValue9 = \"red\"\ndescription =");
        let err = Recipe::parse(&text, Path::new("r.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("Tok3nValue9") && err.contains("unknown field"),
            "{err}"
        );
    }

    #[test]
    fn bad_paths_and_names_are_refused() {
        for (from, to) in [
            ("[secrets.wifi_psk]", "[secrets.\"../x\"]"),
            ("description =", "path = \"/etc/shadow\"\ndescription ="),
            (
                "description =",
                "path = \"/run/secrets/../../etc/x\"\ndescription =",
            ),
            ("description =", "mode = \"999\"\ndescription ="),
            ("secrets = true", "secrets = false"),
        ] {
            let text = minimal().replace(from, to);
            let r = Recipe::parse(&text, Path::new("r.toml")).and_then(|r| r.validate_layout());
            assert!(r.is_err(), "{to} accepted");
        }
    }
}
