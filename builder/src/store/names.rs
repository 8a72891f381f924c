//! Secret names and scopes.

use super::StoreError;

/// Longest secret name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Check a secret name: SCREAMING_SNAKE_CASE, `^[A-Z][A-Z0-9_]*$`, at most
/// 255 characters. The message gives an example of a valid name.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let why = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "is {} characters long (at most {MAX_NAME_LEN})",
            name.len()
        ))
    } else if !name.as_bytes()[0].is_ascii_uppercase() {
        Some("must start with a capital letter A-Z".to_string())
    } else if !name
        .bytes()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    {
        Some("may contain only A-Z, 0-9 and _".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => {
            // Never echo more than a short, printable prefix of what was typed.
            let shown: String = name
                .chars()
                .take(40)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            Err(StoreError::InvalidName(format!(
                "invalid secret name {shown:?}: it {why}; names are SCREAMING_SNAKE_CASE \
                 (^[A-Z][A-Z0-9_]*$), for example WIFI_PSK or API_TOKEN_2"
            )))
        }
    }
}

/// Where a value applies: every device, the devices with a tag, or one device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Global,
    Tag(String),
    Device(String),
}

impl Scope {
    /// Parse `global`, `tag:NAME` or `device:NAME`.
    pub fn parse(s: &str) -> Result<Scope, StoreError> {
        let bad = |why: &str| {
            StoreError::InvalidScope(format!(
                "invalid scope {s:?}: {why}; use global, tag:NAME or device:NAME \
                 (for example tag:lobby or device:kiosk-001)"
            ))
        };
        if s == "global" {
            return Ok(Scope::Global);
        }
        let (kind, name) = s.split_once(':').ok_or_else(|| bad("unknown form"))?;
        if !sealed_bundle::is_plain_name(name, 64, &['.']) {
            return Err(bad("names use letters, digits, '_', '-' or '.'"));
        }
        match kind {
            "tag" => Ok(Scope::Tag(name.into())),
            "device" => Ok(Scope::Device(name.into())),
            _ => Err(bad("unknown kind")),
        }
    }

    /// The directory holding this scope's version files.
    pub fn dir_name(&self) -> String {
        match self {
            Scope::Global => "global".into(),
            Scope::Tag(t) => format!("tag.{t}"),
            Scope::Device(d) => format!("device.{d}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Tag(t) => write!(f, "tag:{t}"),
            Scope::Device(d) => write!(f, "device:{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_screaming_snake_case() {
        for ok in ["A", "WIFI_PSK", "API_TOKEN_2", &"X".repeat(255)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "wifi_psk",
            "1ABC",
            "_A",
            "A-B",
            "A B",
            "ÄB",
            &"X".repeat(256),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("for example WIFI_PSK"), "{bad}: {e}");
        }
    }

    #[test]
    fn scopes_parse_and_print() {
        for s in ["global", "tag:lobby", "device:kiosk-001"] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Scope::parse("tag:lobby").unwrap().dir_name(), "tag.lobby");
        for bad in ["", "tag:", "tag:../x", "host:a", "Global", "device:a/b"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }
}
