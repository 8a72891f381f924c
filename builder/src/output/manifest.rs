//! `build.json`: what a build made, for machines (CI artifacts, fleet
//! inventories, audits).
//!
//! It holds names, types, paths, owners, sizes and hashes. It never holds a
//! secret value, the image key, or where a value came from (a command line
//! or a file path may itself be sensitive): none of the types below has a
//! field that could carry one.
//!
//! Filling it from a build: [`BuildManifest::new`] with the scalar facts,
//! then [`partitions_from`] (layout + where the partitions were placed),
//! [`secrets_from`] and [`templates_from`] (the recipe + the bundle manifest,
//! which tells which optional secrets were included), and
//! [`OutputFile::from_file`] / [`OutputFile::with_sha256`] for each output
//! file; then [`write_build_json`].

use crate::image::{Layout, PartitionKind, Placement, TableKind};
use crate::recipe::{self, Recipe};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

/// The `format_version` written; bumped on incompatible changes (readers
/// must ignore unknown fields, so adding fields is compatible).
pub const BUILD_JSON_FORMAT_VERSION: u32 = 1;
/// File name beside the image.
pub const BUILD_JSON_NAME: &str = "build.json";

/// The whole `build.json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildManifest {
    /// [`BUILD_JSON_FORMAT_VERSION`].
    pub format_version: u32,
    /// The program that wrote it.
    pub tool: ToolInfo,
    /// The recipe the image was built from.
    pub recipe: RecipeInfo,
    /// The disk image.
    pub image: ImageInfo,
    /// Partitions in table order.
    pub partitions: Vec<PartitionInfo>,
    /// Every secret the recipe declares (names and metadata only).
    pub secrets: Vec<SecretInfo>,
    /// Every template the recipe declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateInfo>,
    /// Bundle id (hex) from the bundle header; the device records it and
    /// refuses this bundle once applied or when older.
    pub bundle_id: String,
    /// Short key id from the bundle header (identifies the image key without
    /// revealing it).
    pub key_id: String,
    /// `separate`, `embedded` or `recipient` (see the README's threat model).
    pub key_mode: String,
    /// Separate mode: the key file's name beside the image (e.g. `demo.key`).
    /// It is never hashed here nor listed in [`BuildManifest::outputs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Recipient mode: the device's `age1…` recipient (a public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Who signed the bundle (`sealed-signer1…`); absent: unsigned (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signers the image pins in its `/etc/sealed-firstboot.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_signers: Vec<String>,
    /// When the bundle was sealed, unix seconds (the real clock: never
    /// `SOURCE_DATE_EPOCH`, since the device orders bundles by it).
    pub created_at: u64,
    /// [`BuildManifest::created_at`] as RFC 3339 UTC (`2024-05-01T12:00:00Z`).
    pub created_at_utc: String,
    /// Output files beside `build.json` (not `build.json` itself, and not
    /// the key), with sizes and SHA-256.
    pub outputs: Vec<OutputFile>,
    /// Warnings about the image (SSH host keys shipped in the root, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The program that wrote the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// `build-image`.
    pub name: String,
    /// Its version (`CARGO_PKG_VERSION`).
    pub version: String,
}

impl ToolInfo {
    /// This build of `build-image`.
    pub fn current() -> ToolInfo {
        ToolInfo {
            name: "build-image".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The recipe file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeInfo {
    /// The path as given on the command line.
    pub path: String,
    /// SHA-256 of the recipe file's bytes (hex).
    pub sha256: String,
}

impl RecipeInfo {
    /// Hash the recipe file at `path`.
    pub fn from_file(path: &Path) -> io::Result<RecipeInfo> {
        Ok(RecipeInfo {
            path: path.to_string_lossy().into_owned(),
            sha256: super::sums::sha256_file(path)?,
        })
    }
}

/// The disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `image.name` of the recipe (the output stem).
    pub name: String,
    /// The image file's name in the output directory (`NAME.img`).
    pub file: String,
    /// Size in bytes (the uncompressed, apparent size).
    pub size: u64,
    /// Partition table: `gpt` or `mbr`.
    pub table: String,
    /// GPT disk GUID (uppercase) or MBR disk signature (`0x1234abcd`).
    pub disk_id: String,
}

impl ImageInfo {
    /// From the recipe name and what `image::assemble_with` returned.
    pub fn from_assembled(
        name: &str,
        file: &str,
        layout: &Layout,
        assembled: &Placement,
    ) -> ImageInfo {
        ImageInfo {
            name: name.into(),
            file: file.into(),
            size: assembled.size,
            table: layout.table.to_string(),
            disk_id: assembled.disk_id.clone(),
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// 1-based partition number (as in `/dev/sda1`).
    pub index: u32,
    /// GPT partition name (the recipe's `label`).
    pub label: String,
    /// `esp`, `fat`, `linux` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// GPT partition type GUID (uppercase) or MBR type byte (`0x83`).
    pub type_id: String,
    /// Byte offset in the image.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT partition GUID (uppercase) or MBR PARTUUID (`1234abcd-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Filesystem UUID (ext4) or volume id (FAT, `ABCD-1234`) when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    /// MBR active flag / GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
}

/// Partitions of an assembled image: `layout` says what each is,
/// `assembled` where it went (matched by position, as `assemble` keeps the
/// order).
pub fn partitions_from(layout: &Layout, assembled: &Placement) -> Vec<PartitionInfo> {
    assembled
        .partitions
        .iter()
        .zip(&layout.partitions)
        .map(|(placed, spec)| PartitionInfo {
            index: placed.index,
            label: placed.label.clone(),
            kind: match spec.kind {
                PartitionKind::Esp => "esp",
                PartitionKind::Fat => "fat",
                PartitionKind::LinuxFs => "linux",
                PartitionKind::Other { .. } => "other",
            }
            .into(),
            type_id: match layout.table {
                TableKind::Gpt => spec.kind.gpt_type().hyphenated().to_string().to_uppercase(),
                TableKind::Mbr => format!("0x{:02x}", spec.kind.mbr_type()),
            },
            start: placed.start,
            size: placed.size,
            uuid: placed.part_uuid.clone(),
            fs_uuid: placed.fs_uuid.clone(),
            bootable: spec.bootable,
        })
        .collect()
}

/// One secret's metadata. There is deliberately no value field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    /// `single-line`, `multi-line`, `env` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it appears on the device (under `/run`).
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Octal permission bits, e.g. `0400`.
    pub mode: String,
    /// Whether the build fails without it.
    pub required: bool,
    /// Whether it is in the bundle (an optional secret may be absent).
    pub included: bool,
    /// Build-time processing: `none` or `mkpasswd-yescrypt`.
    pub process: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One template's metadata (rendered on the device with secrets filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    /// Where the rendered file appears on the device (under `/run`).
    pub path: String,
    pub owner: String,
    pub group: String,
    /// Octal permission bits, e.g. `0600`.
    pub mode: String,
    /// Whether it is in the bundle.
    pub included: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Every secret of `recipe`; `bundled` is the bundle's manifest
/// (`contents.manifest` before the contents are dropped; it holds no
/// values), which says which ones were included.
pub fn secrets_from(recipe: &Recipe, bundled: &sealed_bundle::Manifest) -> Vec<SecretInfo> {
    recipe
        .secrets
        .iter()
        .map(|(name, s)| SecretInfo {
            name: name.clone(),
            kind: s.kind.as_str().into(),
            path: recipe.device_path(name, s),
            owner: s.owner.clone(),
            group: s.group.clone(),
            mode: s.mode.to_string(),
            required: s.required,
            included: bundled.secrets.iter().any(|e| &e.name == name),
            process: match s.process {
                recipe::Process::None => "none",
                recipe::Process::MkpasswdYescrypt => "mkpasswd-yescrypt",
            }
            .into(),
            description: s.description.clone(),
        })
        .collect()
}

/// Every template of `recipe` (see [`secrets_from`] for `bundled`).
pub fn templates_from(recipe: &Recipe, bundled: &sealed_bundle::Manifest) -> Vec<TemplateInfo> {
    recipe
        .templates
        .iter()
        .map(|(name, t)| TemplateInfo {
            name: name.clone(),
            path: t.path.clone(),
            owner: t.owner.clone(),
            group: t.group.clone(),
            mode: t.mode.to_string(),
            included: bundled.templates.iter().any(|e| &e.name == name),
            description: t.description.clone(),
        })
        .collect()
}

/// An output file beside `build.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// File name in the output directory.
    pub name: String,
    /// Size in bytes (apparent size; a sparse image may use less disk).
    pub size: u64,
    /// SHA-256 of the contents (hex), as in `SHA256SUMS`.
    pub sha256: String,
}

impl OutputFile {
    /// Stat and hash `dir/name`.
    pub fn from_file(dir: &Path, name: &str) -> io::Result<OutputFile> {
        let path = dir.join(name);
        Ok(OutputFile {
            name: name.into(),
            size: std::fs::metadata(&path)?.len(),
            sha256: super::sums::sha256_file(&path)?,
        })
    }

    /// Stat `dir/name` when its hash is already known (from `write_sums`),
    /// so a large image is not hashed twice.
    pub fn with_sha256(dir: &Path, name: &str, sha256: &str) -> io::Result<OutputFile> {
        Ok(OutputFile {
            name: name.into(),
            size: std::fs::metadata(dir.join(name))?.len(),
            sha256: sha256.into(),
        })
    }
}

impl BuildManifest {
    /// A manifest with the scalar facts filled in and empty lists; set
    /// `partitions`, `secrets`, `templates`, `key_file`, `recipient` and
    /// `outputs` afterwards.
    pub fn new(
        recipe: RecipeInfo,
        image: ImageInfo,
        bundle_id: &str,
        key_id: &str,
        key_mode: &str,
        created_at: u64,
    ) -> BuildManifest {
        BuildManifest {
            format_version: BUILD_JSON_FORMAT_VERSION,
            tool: ToolInfo::current(),
            recipe,
            image,
            partitions: Vec::new(),
            secrets: Vec::new(),
            templates: Vec::new(),
            bundle_id: bundle_id.into(),
            key_id: key_id.into(),
            key_mode: key_mode.into(),
            key_file: None,
            recipient: None,
            signer: None,
            pinned_signers: Vec::new(),
            created_at,
            created_at_utc: crate::store::metadata::rfc3339(created_at),
            outputs: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Write `m` as pretty JSON (with a final newline) to `path`.
pub fn write_build_json(path: &Path, m: &BuildManifest) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    text.push(b'\n');
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{PartitionContent, PartitionSpec, Placed};
    use std::path::PathBuf;

    fn demo_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../image-recipes/demo")
    }

    fn sample(recipe: &Recipe, dir: &Path) -> BuildManifest {
        let part = |label, kind| PartitionSpec::new(label, 64 << 20, kind, PartitionContent::Empty);
        let layout = Layout::new(
            TableKind::Gpt,
            vec![
                part("ESP", PartitionKind::Esp),
                part("root", PartitionKind::LinuxFs),
            ],
        );
        let placed = |index: u32, label: &str, start: u64, fs: &str| Placed {
            index,
            label: label.into(),
            start,
            size: 64 << 20,
            part_uuid: Some(format!("C0FFEE00-0000-4000-8000-00000000000{index}")),
            fs_uuid: Some(fs.into()),
        };
        let assembled = Placement {
            size: 129 << 20,
            disk_id: "5B4E0A6C-1F55-4C36-9A1E-2D8C3F0E7A11".into(),
            partitions: vec![
                placed(1, "ESP", 1 << 20, "5EA1-ED00"),
                placed(2, "root", 65 << 20, "9d3c8a1e-5b7f-4e2a-8c61-3f0b9e4d2a77"),
            ],
        };
        // The bundle holds the required secrets but not the optional `motd`.
        let bundled = sealed_bundle::Manifest {
            secrets: recipe
                .secrets
                .iter()
                .filter(|(_, s)| s.required)
                .map(|(n, s)| sealed_bundle::SecretEntry {
                    name: n.clone(),
                    kind: s.kind,
                    path: recipe.device_path(n, s),
                    owner: s.owner.clone(),
                    group: s.group.clone(),
                    mode: s.mode.bits(),
                    description: None,
                    restart_units: Vec::new(),
                    reload_units: Vec::new(),
                    credential: None,
                    credential_encrypted: None,
                })
                .collect(),
            templates: Vec::new(),
            partial: false,
            signers: None,
        };
        std::fs::write(dir.join("demo.img"), b"image bytes").unwrap();
        let mut m = BuildManifest::new(
            RecipeInfo::from_file(&recipe.path).unwrap(),
            ImageInfo::from_assembled("demo", "demo.img", &layout, &assembled),
            "00112233445566778899aabbccddeeff",
            "k1",
            "separate",
            1_700_000_000,
        );
        m.partitions = partitions_from(&layout, &assembled);
        m.secrets = secrets_from(recipe, &bundled);
        m.templates = templates_from(recipe, &bundled);
        m.key_file = Some("demo.key".into());
        m.outputs = vec![OutputFile::from_file(dir, "demo.img").unwrap()];
        m
    }

    #[test]
    fn round_trip_and_fields() {
        let recipe = Recipe::load(&demo_dir().join("recipe.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = sample(&recipe, dir.path());
        let path = dir.path().join(BUILD_JSON_NAME);
        write_build_json(&path, &m).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        let back: BuildManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);

        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["tool"]["name"], "build-image");
        assert_eq!(v["recipe"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(v["image"]["table"], "gpt");
        assert_eq!(v["partitions"][0]["type"], "esp");
        assert_eq!(
            v["partitions"][0]["type_id"],
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(v["partitions"][1]["type"], "linux");
        assert_eq!(v["partitions"][1]["start"], 65 << 20);
        assert_eq!(v["created_at_utc"], "2023-11-14T22:13:20Z");
        let image_sum = crate::output::sums::sha256_file(&dir.path().join("demo.img")).unwrap();
        assert_eq!(v["outputs"][0]["sha256"], image_sum.as_str());
        assert_eq!(v["outputs"][0]["size"], 11);
        let secrets = v["secrets"].as_array().unwrap();
        assert_eq!(secrets.len(), recipe.secrets.len());
        let wifi = secrets.iter().find(|s| s["name"] == "wifi_psk").unwrap();
        assert_eq!(wifi["type"], "single-line");
        assert_eq!(wifi["path"], "/run/secrets/wifi_psk");
        assert_eq!(wifi["mode"], "0400");
        assert_eq!(wifi["owner"], "root");
        assert_eq!(wifi["required"], true);
        assert_eq!(wifi["included"], true);
        let motd = secrets.iter().find(|s| s["name"] == "motd").unwrap();
        assert_eq!(
            (motd["required"].clone(), motd["included"].clone()),
            (false.into(), false.into())
        );
        let app = secrets.iter().find(|s| s["name"] == "app_env").unwrap();
        assert_eq!(app["path"], "/run/secrets/app/app.env");
        assert_eq!(
            v["templates"][0]["path"],
            "/run/wpa_supplicant/wpa_supplicant.conf"
        );
        assert_eq!(v["templates"][0]["mode"], "0600");
        for s in secrets {
            for key in s.as_object().unwrap().keys() {
                assert!(
                    [
                        "name",
                        "type",
                        "path",
                        "owner",
                        "group",
                        "mode",
                        "required",
                        "included",
                        "process",
                        "description"
                    ]
                    .contains(&key.as_str()),
                    "unexpected secret field {key}"
                );
            }
        }
    }

    /// No value of the demo's secret files or dotenv file appears anywhere.
    #[test]
    fn never_holds_a_secret_value() {
        let recipe = Recipe::load(&demo_dir().join("recipe.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = serde_json::to_string_pretty(&sample(&recipe, dir.path())).unwrap();
        let mut values = Vec::new();
        for e in std::fs::read_dir(demo_dir().join("secrets")).unwrap() {
            let data = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            values.extend(data.lines().map(str::to_string));
        }
        let env = std::fs::read_to_string(demo_dir().join("demo.env")).unwrap();
        values.extend(
            env.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
        let values: Vec<_> = values
            .into_iter()
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| v.len() >= 8 && !v.starts_with('#') && !v.starts_with("-----"))
            .collect();
        assert!(!values.is_empty());
        for v in values {
            assert!(
                !text.contains(&v),
                "build.json contains the secret value {v:?}"
            );
        }
    }
}
