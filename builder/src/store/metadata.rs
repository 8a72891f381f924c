//! `secrets/NAME/meta.toml`: everything about a secret except its value, in
//! a stable, diff-friendly form (keys in alphabetical order, one version a
//! table). Each version records its file's SHA-256; the file's own
//! SHA-256 is in the authenticated index (`store.toml`).

use super::names::Scope;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SecretMeta {
    #[serde(default)]
    pub description: String,
    pub name: String,
    /// Keyed by scope: `global`, `tag:NAME`, `device:NAME`.
    #[serde(default)]
    pub scopes: BTreeMap<String, ScopeMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScopeMeta {
    pub created_at: String,
    pub created_by: String,
    /// The version `get` and builds use.
    pub current: u32,
    /// How `--generate` made the value, so that `rotate` can do it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
    pub updated_at: String,
    pub updated_by: String,
    pub versions: Vec<VersionMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Generator {
    pub charset: String,
    pub length: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VersionMeta {
    pub created_at: String,
    pub created_by: String,
    /// set, update, rotate or import.
    pub operation: String,
    /// Fingerprint of the recipient set the file is encrypted to.
    pub recipients: String,
    /// SHA-256 of the version file (format 1 stores have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    pub version: u32,
}

impl SecretMeta {
    pub fn parse(text: &str) -> Result<SecretMeta, String> {
        let meta: SecretMeta = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if meta.scopes.is_empty() {
            return Err("it has no scopes".into());
        }
        super::validate_name(&meta.name).map_err(|e| e.to_string())?;
        for (scope, s) in &meta.scopes {
            Scope::parse(scope).map_err(|e| e.to_string())?;
            if let Some(g) = &s.generator {
                // What `rotate` would generate again: a known charset, a
                // sane length (never an allocation of any size).
                super::input::generator(&g.charset, g.length)
                    .map_err(|e| format!("scope {scope}: generator: {e}"))?;
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(v) = s
                .versions
                .iter()
                .find(|v| !seen.insert(v.version) || v.version == 0)
            {
                return Err(format!(
                    "scope {scope}: version {} is listed twice or is 0",
                    v.version
                ));
            }
            if !s.versions.iter().any(|v| v.version == s.current) {
                return Err(format!(
                    "scope {scope}: current version {} is not listed",
                    s.current
                ));
            }
        }
        Ok(meta)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# build-image store metadata: no values here. Written by build-image and\n\
             # authenticated by the store key: a change made by hand is refused.\n{body}"
        )
    }

    pub fn scope(&self, scope: &Scope) -> Option<&ScopeMeta> {
        self.scopes.get(&scope.to_string())
    }

    /// The scopes, parsed.
    pub fn scope_list(&self) -> Vec<Scope> {
        self.scopes
            .keys()
            .filter_map(|s| Scope::parse(s).ok())
            .collect()
    }
}

impl ScopeMeta {
    pub fn latest(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0)
    }
}

/// The current time as RFC 3339 UTC (`2026-11-25T03:04:05Z`). The real
/// clock: audit times are never pinned by SOURCE_DATE_EPOCH.
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian; the one implementation, shared with build.json).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_575_845), "2026-11-25T03:04:05Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn metadata_round_trips_with_sorted_keys() {
        let mut m = SecretMeta {
            description: "Wi-Fi".into(),
            name: "WIFI_PSK".into(),
            scopes: BTreeMap::new(),
        };
        for scope in ["tag:lobby", "global"] {
            m.scopes.insert(
                scope.into(),
                ScopeMeta {
                    created_at: rfc3339(0),
                    created_by: "alice".into(),
                    current: 1,
                    generator: None,
                    updated_at: rfc3339(0),
                    updated_by: "alice".into(),
                    versions: vec![VersionMeta {
                        created_at: rfc3339(0),
                        created_by: "alice".into(),
                        operation: "set".into(),
                        recipients: "abcd".into(),
                        sha256: "00".repeat(32),
                        version: 1,
                    }],
                },
            );
        }
        let text = m.to_toml();
        assert_eq!(SecretMeta::parse(&text).unwrap(), m);
        assert!(
            text.find("[scopes.global]").unwrap() < text.find("[scopes.\"tag:lobby\"]").unwrap()
        );
        assert!(text.find("description").unwrap() < text.find("name =").unwrap());
        assert!(SecretMeta::parse(&text.replace("current = 1", "current = 7")).is_err());
        // A generator rotate could not run: refused when read.
        for (charset, length) in [("alnum", 1usize << 40), ("alnum", 0), ("emoji", 16)] {
            let mut bad = m.clone();
            if let Some(s) = bad.scopes.get_mut("global") {
                s.generator = Some(Generator {
                    charset: charset.into(),
                    length,
                });
            }
            assert!(
                SecretMeta::parse(&bad.to_toml()).is_err(),
                "{charset} {length}"
            );
        }
    }
}
