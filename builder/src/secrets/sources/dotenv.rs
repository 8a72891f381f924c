//! Dotenv source: `KEY=VALUE` lines, `export` prefixes, `#` comments,
//! single or double quotes.

use super::{Fetched, SourceError};
use std::path::Path;
use zeroize::Zeroizing;

pub fn fetch(name: &str, path: &Path, key: &str) -> Result<Fetched, SourceError> {
    let text: Zeroizing<Vec<u8>> =
        match crate::io::limit::read_file(path, crate::io::bounded::MAX_VALUE_BYTES) {
            Ok(t) => t,
            Err(crate::io::limit::BoundedError::NotFound) => {
                return Ok(Fetched::Missing {
                    how: format!("create {} with a line {key}=…", path.display()),
                })
            }
            Err(crate::io::limit::BoundedError::Io(source)) => {
                return Err(SourceError::Read {
                    name: name.into(),
                    path: path.to_path_buf(),
                    cause: source,
                })
            }
            Err(e) => {
                return Err(SourceError::Invalid {
                    name: name.into(),
                    reason: format!("{}: {e}", path.display()),
                })
            }
        };
    let err = |line: usize, reason: &str| SourceError::Dotenv {
        name: name.into(),
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    };
    let text = std::str::from_utf8(&text).map_err(|_| err(0, "file is not UTF-8"))?;
    let mut found = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err(i + 1, "expected KEY=VALUE"))?;
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let value = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        found = Some(Zeroizing::new(value.as_bytes().to_vec()));
    }
    Ok(match found {
        Some(v) => Fetched::Found(v),
        None => Fetched::Missing {
            how: format!("add a line {key}=… to {}", path.display()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_export_and_comments() {
        let (_dir, p) = testkit::scratch(".env");
        std::fs::write(&p, "# c\nexport A=\"x y\"\nB='z'\nC=plain\n").unwrap();
        let get = |k| match fetch("s", &p, k).unwrap() {
            Fetched::Found(v) => Some(String::from_utf8(v.to_vec()).unwrap()),
            Fetched::Missing { .. } => None,
        };
        assert_eq!(get("A").as_deref(), Some("x y"));
        assert_eq!(get("B").as_deref(), Some("z"));
        assert_eq!(get("C").as_deref(), Some("plain"));
        assert_eq!(get("D"), None);
    }

    #[test]
    fn malformed_line_names_line_not_value() {
        let (_dir, p) = testkit::scratch(".env");
        std::fs::write(&p, "A=1\nsupersecretvalue\n").unwrap();
        let e = fetch("s", &p, "A").err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains("supersecretvalue"), "{e}");
    }
}
