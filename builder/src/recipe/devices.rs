//! The devices file of a fleet build: one entry per device with its name,
//! optional known age recipient, and per-device secret values or sources.
//!
//! TOML:
//! ```toml
//! [[device]]
//! name = "kiosk-001"
//! recipient = "age1…"                       # optional: seal straight to it
//! tags = ["lobby"]                          # optional: store values scoped tag:NAME
//! secrets.api_token = { env = "KIOSK_001_TOKEN" }
//! secrets.wifi_psk = { value = "…" }
//! secrets.tls_key = { file = "certs/kiosk-001.pem" }
//! ```
//! CSV (header row; columns `name`, optional `recipient`, then one column
//! per secret holding literal values; an empty cell keeps the recipe's source):
//! ```text
//! name,recipient,api_token
//! kiosk-001,,tok-1
//! ```

use crate::recipe::SourceSpec;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// A per-device value or source that replaces the recipe's source of a
/// secret (fleet builds).
#[derive(Clone)]
pub enum Override {
    Value(Zeroizing<Vec<u8>>),
    Source(SourceSpec),
}

#[derive(Debug, Error)]
pub enum DevicesError {
    #[error("reading devices file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesToml {
    device: Vec<DeviceToml>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceToml {
    name: String,
    recipient: Option<String>,
    /// Groups for store scopes (`tag:NAME`).
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    secrets: BTreeMap<String, DeviceSecret>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum DeviceSecret {
    Value(String),
    Env(String),
    File(PathBuf),
    Command(Vec<String>),
    Dotenv { file: PathBuf, key: Option<String> },
}

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

/// One device of the fleet.
pub struct Device {
    pub name: String,
    pub recipient: Option<age::x25519::Recipient>,
    pub overrides: BTreeMap<String, Override>,
    /// Tags, for store values scoped `tag:NAME` (device > tag > global).
    pub tags: Vec<String>,
}

/// Read a devices file (`.csv` by extension, TOML otherwise). `secrets` are
/// the recipe's secret names: a device may only set those.
pub fn load(path: &Path, secrets: &BTreeSet<String>) -> Result<Vec<Device>, DevicesError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| DevicesError::Read {
                path: path.to_path_buf(),
                cause: source,
            })?,
        );
    parse_text(&text, path, secrets)
}

/// Parse the text of a devices file named `path` (CSV when it ends in
/// `.csv`, TOML otherwise); relative paths in it resolve beside `path`.
pub fn parse_text(
    text: &str,
    path: &Path,
    secrets: &BTreeSet<String>,
) -> Result<Vec<Device>, DevicesError> {
    let invalid = |message: String| DevicesError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let devices = if path.extension().is_some_and(|e| e == "csv") {
        parse_csv(text).map_err(invalid)?
    } else {
        // Errors name the line, column and key, never the offending value.
        let parsed: DevicesToml = toml::from_str(text)
            .map_err(|e| invalid(crate::recipe::describe_toml_error(text, &e)))?;
        parsed
            .device
            .into_iter()
            .map(|d| {
                let overrides = d
                    .secrets
                    .into_iter()
                    .map(|(k, v)| {
                        let o = match v {
                            DeviceSecret::Value(s) => {
                                Override::Value(Zeroizing::new(s.into_bytes()))
                            }
                            DeviceSecret::Env(v) => {
                                // No child process of the build sees it.
                                crate::child_env::hide(&v);
                                Override::Source(SourceSpec::Env(v))
                            }
                            DeviceSecret::File(p) => {
                                Override::Source(SourceSpec::File(base.join(p)))
                            }
                            DeviceSecret::Command(c) => Override::Source(SourceSpec::Command(c)),
                            DeviceSecret::Dotenv { file, key } => {
                                Override::Source(SourceSpec::Dotenv {
                                    file: base.join(file),
                                    key,
                                })
                            }
                        };
                        (k, o)
                    })
                    .collect();
                (d.name, d.recipient, overrides, d.tags)
            })
            .collect()
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (name, recipient, overrides, tags) in devices {
        if !sealed_bundle::is_plain_name(&name, 64, &['.']) {
            // The cell is not echoed: with columns out of place it may hold a value.
            return Err(invalid(format!(
                "device #{}: its name is not a valid device name: use 1 to 64 letters, digits, '_', '-' or '.' (it names a directory)",
                out.len() + 1
            )));
        }
        if !seen.insert(name.clone()) {
            // Named by position: with columns out of place the name may be a value.
            return Err(invalid(format!(
                "device #{}: its name is already used by an earlier device",
                out.len() + 1
            )));
        }
        if overrides.keys().any(|k| !secrets.contains(k)) {
            // The key is not echoed: it may be a value in the wrong place.
            let known: Vec<&str> = secrets.iter().map(String::as_str).collect();
            return Err(invalid(format!(
                "device #{}: sets a secret the recipe does not have (the recipe has: {})",
                out.len() + 1,
                known.join(", ")
            )));
        }
        let recipient = match recipient
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            None => None,
            Some(r) => Some(
                crate::recipient::parse(r)
                    .map_err(|e| invalid(format!("device #{}: recipient: {e}", out.len() + 1)))?,
            ),
        };
        for t in &tags {
            // The tag is not echoed: with columns out of place it may hold a value.
            crate::store::Scope::parse(&format!("tag:{t}")).map_err(|_| {
                invalid(format!(
                    "device #{}: a tag is not a valid name: use letters, digits, '_', '-' or '.'",
                    out.len() + 1
                ))
            })?;
        }
        out.push(Device {
            name,
            recipient,
            overrides,
            tags,
        });
    }
    if out.is_empty() {
        return Err(invalid("no devices listed".into()));
    }
    Ok(out)
}

type Parsed = (
    String,
    Option<String>,
    BTreeMap<String, Override>,
    Vec<String>,
);

fn parse_csv(text: &str) -> Result<Vec<Parsed>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or("the CSV file is empty")?;
    let header = split_csv(header).map_err(|e| format!("line 1: {e}"))?;
    if header.first().map(String::as_str) != Some("name") {
        return Err("line 1: the first column must be `name`".into());
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let cells = split_csv(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if cells.len() != header.len() {
            return Err(format!(
                "line {}: {} cells, the header has {}",
                i + 1,
                cells.len(),
                header.len()
            ));
        }
        let mut name = String::new();
        let mut recipient = None;
        let mut overrides = BTreeMap::new();
        let mut tags = Vec::new();
        for (col, cell) in header.iter().zip(cells) {
            match col.as_str() {
                "name" => name = cell,
                "recipient" => recipient = Some(cell),
                // Space-separated, e.g. "lobby north".
                "tags" => tags = cell.split_whitespace().map(String::from).collect(),
                secret if !cell.is_empty() => {
                    overrides.insert(
                        secret.to_string(),
                        Override::Value(Zeroizing::new(cell.into_bytes())),
                    );
                }
                _ => {}
            }
        }
        out.push((name, recipient, overrides, tags));
    }
    Ok(out)
}

/// Split one CSV line: commas, double-quoted cells with `""` escapes.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    return Err("text after a closing quote".into());
                }
            }
            (',', false) => cells.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    cells.push(cur);
    Ok(cells)
}

/// The devices of shard `i` of `n`: every n-th device starting at i-1, so
/// shards stay balanced and stable when devices are appended.
pub fn shard<T>(devices: Vec<T>, shard: Option<(usize, usize)>) -> Vec<T> {
    match shard {
        None => devices,
        Some((i, n)) => devices
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i - 1)
            .map(|(_, d)| d)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> BTreeSet<String> {
        ["wifi", "token"].iter().map(|s| s.to_string()).collect()
    }

    /// Load `text` as the devices file `name` (its ending picks the format).
    fn load_text(name: &str, text: &str) -> Result<Vec<Device>, DevicesError> {
        let dir = tempfile::tempdir().unwrap();
        load(&testkit::write_file(&dir, name, text), &names())
    }

    #[test]
    fn toml_and_csv() {
        let d = load_text(
            "d.toml",
            "[[device]]\nname = \"a\"\nsecrets.token = { value = \"t-a\" }\n\n[[device]]\nname = \"b\"\nsecrets.wifi = { env = \"B_WIFI\" }\n",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert!(matches!(d[0].overrides["token"], Override::Value(ref v) if &v[..] == b"t-a"));
        assert!(
            matches!(d[1].overrides["wifi"], Override::Source(SourceSpec::Env(ref v)) if v == "B_WIFI")
        );
        let d = load_text("d.csv", "name,token,wifi\na,\"t,1\",\nb,t2,w2\n").unwrap();
        assert!(matches!(d[0].overrides["token"], Override::Value(ref v) if &v[..] == b"t,1"));
        assert!(!d[0].overrides.contains_key("wifi"));
        assert_eq!(d[1].overrides.len(), 2);
    }

    #[test]
    fn errors_never_quote_values() {
        let load_error = |text: &str| load_text("d.toml", text).err().unwrap().to_string();
        let e = load_error("[[device]]\nname = \"a\"\nsecrets.nope = { value = \"s3cr3t-x\" }\n");
        assert!(
            e.contains("sets a secret the recipe does not have") && !e.contains("s3cr3t"),
            "{e}"
        );
        let e = load_error("[[device]]\nname = \"a\"\nsecrets.token = { valu = \"s3cr3t-y\" }\n");
        assert!(e.contains("line 3") && !e.contains("s3cr3t"), "{e}");
        assert!(load_text("d.toml", "[[device]]\nname = \"../x\"\n").is_err());
    }

    #[test]
    fn shards_partition_the_fleet() {
        let all: Vec<usize> = (0..10).collect();
        let mut seen = Vec::new();
        for i in 1..=3 {
            seen.extend(shard(all.clone(), Some((i, 3))));
        }
        seen.sort();
        assert_eq!(seen, all);
        assert_eq!(shard(all.clone(), Some((2, 3))), vec![1, 4, 7]);
    }
}
