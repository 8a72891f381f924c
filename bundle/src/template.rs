//! Templates: text files with `${SECRET:NAME}` placeholders, rendered on
//! the device at unseal time (e.g. a NetworkManager keyfile, a container's
//! `.env`). A placeholder must name a secret of the same bundle.
//!
//! `${SECRET:NAME|ESCAPE}` escapes the value for the file format it lands
//! in, so that quotes, backslashes, `;`, `$` or line breaks in a value
//! cannot change the file's structure:
//!
//! * `keyfile`: a value of a GLib key file (NetworkManager `.nmconnection`,
//!   systemd-style `key=value` files read by GKeyFile): `\` → `\\`, line
//!   break → `\n`, CR → `\r`, tab → `\t`, leading and trailing spaces →
//!   `\s`. The value must be UTF-8.
//! * `shell`: one POSIX shell word in single quotes (`'…'`, a `'` becomes
//!   `'\''`), for scripts that are sourced or run.
//! * `env`: a double-quoted value for systemd `EnvironmentFile=` and POSIX
//!   shells (`"…"` with `\`, `"`, `` ` `` and `$` backslash-escaped). The
//!   value must be UTF-8 and a single line.
//!
//! A value an escape cannot hold (a NUL byte, a line break for `env`,
//! invalid UTF-8) is an error when the bundle is built, never on the device.

use std::collections::BTreeMap;
use zeroize::Zeroizing;

const OPEN: &[u8] = b"${SECRET:";

/// How a value is written into a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As it is.
    Raw,
    Keyfile,
    Shell,
    Env,
}

impl Escape {
    fn parse(s: &str) -> Option<Escape> {
        Some(match s {
            "keyfile" => Escape::Keyfile,
            "shell" => Escape::Shell,
            "env" => Escape::Env,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Escape::Raw => "raw",
            Escape::Keyfile => "keyfile",
            Escape::Shell => "shell",
            Escape::Env => "env",
        }
    }

    /// How many bytes `value` becomes, exactly as [`Escape::write`] writes
    /// it (counted without writing: no copy of the value is made).
    fn escaped_len(self, value: &[u8]) -> u64 {
        let n = value.len() as u64;
        let count = |f: fn(u8) -> bool| value.iter().filter(|&&b| f(b)).count() as u64;
        match self {
            Escape::Raw => n,
            Escape::Keyfile => {
                // Leading and trailing spaces become `\s`.
                let (lead, trail) = edge_spaces(value);
                let escaped = count(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'));
                n + (lead + trail) as u64 + escaped
            }
            Escape::Shell => n + 2 + 3 * count(|b| b == b'\''),
            Escape::Env => n + 2 + count(|b| matches!(b, b'\\' | b'"' | b'`' | b'$')),
        }
    }

    /// Whether this escape can hold `value`. Errors never show the value.
    fn check(self, value: &[u8]) -> Result<(), &'static str> {
        if self != Escape::Raw && value.contains(&0) {
            return Err("the value holds a NUL byte");
        }
        if matches!(self, Escape::Keyfile | Escape::Env) && std::str::from_utf8(value).is_err() {
            return Err("the value is not UTF-8");
        }
        if self == Escape::Env && value.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err("the value holds a line break, which an env file cannot");
        }
        Ok(())
    }

    /// Append `value`, escaped, to `out`. Errors never show the value.
    fn write(self, value: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.check(value)?;
        match self {
            Escape::Raw => out.extend_from_slice(value),
            Escape::Keyfile => {
                let (lead, trail) = edge_spaces(value);
                for (i, &b) in value.iter().enumerate() {
                    match b {
                        b' ' if i < lead || i >= value.len() - trail => {
                            out.extend_from_slice(b"\\s")
                        }
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        _ => out.push(b),
                    }
                }
            }
            Escape::Shell => {
                quote_into(out, value, b'\'', |b| (b == b'\'').then_some(b"'\\''"));
            }
            Escape::Env => {
                quote_into(out, value, b'"', |b| match b {
                    b'\\' => Some(b"\\\\"),
                    b'"' => Some(b"\\\""),
                    b'`' => Some(b"\\`"),
                    b'$' => Some(b"\\$"),
                    _ => None,
                });
            }
        }
        Ok(())
    }
}

/// Append `value` to `out` between two `quote` bytes, each byte for which
/// `escape` gives a replacement written as that replacement.
pub fn quote_into(
    out: &mut Vec<u8>,
    value: &[u8],
    quote: u8,
    escape: impl Fn(u8) -> Option<&'static [u8]>,
) {
    out.reserve(value.len() + 2);
    out.push(quote);
    for &b in value {
        match escape(b) {
            Some(replacement) => out.extend_from_slice(replacement),
            None => out.push(b),
        }
    }
    out.push(quote);
}

/// One placeholder: where it is, how long, what it names and how.
struct Placeholder<'a> {
    at: usize,
    len: usize,
    name: &'a str,
    escape: Escape,
}

impl Placeholder<'_> {
    /// The error for a value this placeholder cannot hold (never the value).
    fn error(&self, reason: &str) -> String {
        format!(
            "${{SECRET:{}|{}}} at byte {}: {reason}",
            self.name,
            self.escape.name(),
            self.at
        )
    }
}

/// Every placeholder of `text`, in order. Errors name the byte offset,
/// never template text.
fn parse(text: &[u8]) -> Result<Vec<Placeholder<'_>>, String> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(i) = find(&text[offset..], OPEN) {
        let at = offset + i;
        let after = &text[at + OPEN.len()..];
        let end = after
            .iter()
            .position(|&c| c == b'}')
            .ok_or_else(|| format!("unterminated ${{SECRET:…}} at byte {at}"))?;
        let inner = std::str::from_utf8(&after[..end])
            .map_err(|_| format!("invalid secret name in placeholder at byte {at}"))?;
        let (name, escape) = match inner.split_once('|') {
            None => (inner, Escape::Raw),
            Some((name, esc)) => (
                name,
                Escape::parse(esc).ok_or_else(|| {
                    format!(
                        "unknown escape in placeholder at byte {at} (known: keyfile, shell, env)"
                    )
                })?,
            ),
        };
        if crate::manifest::validate_name(name).is_err() {
            return Err(format!("invalid secret name in placeholder at byte {at}"));
        }
        let len = OPEN.len() + end + 1;
        found.push(Placeholder {
            at,
            len,
            name,
            escape,
        });
        offset = at + len;
    }
    Ok(found)
}

/// The secret names a template refers to, in order of appearance.
pub fn placeholders(text: &[u8]) -> Result<Vec<String>, String> {
    Ok(parse(text)?
        .into_iter()
        .map(|p| p.name.to_string())
        .collect())
}

/// The rendered size, computed without rendering (so a template of many
/// placeholders of a large secret is refused before anything is
/// allocated). A placeholder naming no value counts as empty: rendering
/// then fails.
pub fn rendered_len(
    text: &[u8],
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<u64, String> {
    Ok(sized(&parse(text)?, text, values))
}

fn sized(
    found: &[Placeholder<'_>],
    text: &[u8],
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> u64 {
    found.iter().fold(text.len() as u64, |n, p| {
        let v = values.get(p.name).map_or(0, |v| p.escape.escaped_len(v));
        (n - p.len as u64).saturating_add(v)
    })
}

/// Replace every placeholder by the named value, escaped as it asks. The
/// rendering is sized first and refused beyond the per-secret limit before
/// anything is allocated: the size comes from the template and the values,
/// which may be hostile.
pub fn render(
    text: &[u8],
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let found = parse(text)?;
    let capacity = sized(&found, text, values);
    let limit = crate::limits::MAX_SECRET_BYTES;
    if capacity > limit {
        return Err(format!(
            "renders to {capacity} bytes, more than a secret may hold ({limit})"
        ));
    }
    // Sized once: the buffer never reallocates and leaves no unzeroized
    // copy of a value behind.
    let mut out = Zeroizing::new(Vec::with_capacity(usize::try_from(capacity).unwrap_or(0)));
    let mut pos = 0;
    for p in &found {
        out.extend_from_slice(&text[pos..p.at]);
        let value = values
            .get(p.name)
            .ok_or_else(|| format!("placeholder at byte {} names no secret", p.at))?;
        p.escape
            .write(value, &mut out)
            .map_err(|reason| p.error(reason))?;
        pos = p.at + p.len;
    }
    out.extend_from_slice(&text[pos..]);
    Ok(out)
}

/// Check that each value `values` holds fits the escape of every
/// placeholder naming it (placeholders of other names are skipped): what
/// a partial bundle can check of a template whose other secrets are on
/// the device. Nothing is rendered.
pub fn check_escapes(
    text: &[u8],
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<(), String> {
    for p in parse(text)? {
        if let Some(value) = values.get(p.name) {
            p.escape.check(value).map_err(|reason| p.error(reason))?;
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How many spaces open and close `value` (a value of spaces only counts
/// as leading): the keyfile escape writes exactly those as `\s`.
fn edge_spaces(value: &[u8]) -> (usize, usize) {
    let lead = value.iter().take_while(|&&b| b == b' ').count();
    let trail = value[lead..]
        .iter()
        .rev()
        .take_while(|&&b| b == b' ')
        .count();
    (lead, trail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.to_vec())))
            .collect()
    }

    #[test]
    fn renders_and_lists_placeholders() {
        let v = values(&[("psk", b"pa$$"), ("ssid", b"home")]);
        let t = b"network={\n ssid=\"${SECRET:ssid}\"\n psk=\"${SECRET:psk}\"\n}\n$HOME ${OTHER}";
        assert_eq!(placeholders(t).unwrap(), vec!["ssid", "psk"]);
        assert_eq!(
            &render(t, &v).unwrap()[..],
            &b"network={\n ssid=\"home\"\n psk=\"pa$$\"\n}\n$HOME ${OTHER}"[..]
        );
    }

    #[test]
    fn bad_placeholders_are_errors() {
        assert!(
            matches!(placeholders(b"x ${SECRET:open"), Err(e) if e.contains("unterminated ${SECRET:…} at byte 2"))
        );
        assert!(
            matches!(placeholders(b"${SECRET:../x}"), Err(e) if e.contains("invalid secret name in placeholder at byte 0"))
        );
        assert!(placeholders(b"${SECRET:x|json}")
            .unwrap_err()
            .contains("unknown escape"));
        assert!(
            matches!(placeholders(b"${SECRET:x|}"), Err(e) if e.contains("unknown escape in placeholder at byte 0 (known"))
        );
        assert!(
            matches!(render(b"${SECRET:missing}", &BTreeMap::new()), Err(e) if e.contains("placeholder at byte 0 names no secret"))
        );
    }

    #[test]
    fn escapes_fit_their_formats() {
        let hostile: &[u8] = b" a\"b'c\\d;e$f`g\th ";
        let v = values(&[("v", hostile), ("nl", b"one\ntwo"), ("nul", b"a\0b")]);
        let r = |t: &str| String::from_utf8(render(t.as_bytes(), &v).unwrap().to_vec()).unwrap();
        assert_eq!(
            r("psk=${SECRET:v|keyfile}"),
            "psk=\\sa\"b'c\\\\d;e$f`g\\th\\s"
        );
        assert_eq!(r("${SECRET:nl|keyfile}"), "one\\ntwo");
        assert_eq!(r("X=${SECRET:v|shell}"), "X=' a\"b'\\''c\\d;e$f`g\th '");
        assert_eq!(r("X=${SECRET:v|env}"), "X=\" a\\\"b'c\\\\d;e\\$f\\`g\th \"");
        assert_eq!(r("${SECRET:nl|shell}"), "'one\ntwo'");
        for bad in [
            "${SECRET:nl|env}",
            "${SECRET:nul|keyfile}",
            "${SECRET:nul|shell}",
        ] {
            let e = render(bad.as_bytes(), &v).unwrap_err();
            assert!(e.contains("at byte 0"), "{e}");
        }
        let e = render(b"${SECRET:nul|env}", &v).unwrap_err();
        assert!(!e.contains("a\0b"));
        let latin1 = values(&[("v", b"\xff")]);
        assert!(
            matches!(render(b"${SECRET:v|keyfile}", &latin1), Err(e) if e.contains("${SECRET:v|keyfile} at byte 0: the value is not"))
        );
        assert_eq!(
            &render(b"${SECRET:v|shell}", &latin1).unwrap()[..],
            b"'\xff'"
        );
    }

    #[test]
    fn the_length_is_exact() {
        let v = values(&[
            ("q", b"''''"),
            ("b", b"\\\\"),
            ("s", b"  a b  "),
            ("sp", b"   "),
            ("mix", b"\t$`\"\\x'y\r\n z "),
            ("e", b""),
        ]);
        for name in ["q", "b", "s", "sp", "mix", "e"] {
            for esc in ["", "|shell", "|keyfile", "|env"] {
                let t = format!("a ${{SECRET:{name}{esc}}} b ${{SECRET:q{esc}}}\n");
                let Ok(out) = render(t.as_bytes(), &v) else {
                    continue; // an env file cannot hold a line break
                };
                let len = rendered_len(t.as_bytes(), &v).unwrap();
                assert_eq!(out.len() as u64, len, "{t}");
            }
        }
    }
}
