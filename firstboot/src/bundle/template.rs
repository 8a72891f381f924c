//! Templates: text files with `${SECRET:NAME}` placeholders, rendered on
//! the device at unseal time (e.g. `wpa_supplicant.conf`, a container's
//! `.env`). A placeholder must name a secret of the same bundle.

use std::collections::BTreeMap;
use zeroize::Zeroizing;

const OPEN: &[u8] = b"${SECRET:";

/// The secret names a template refers to, in order of appearance.
/// Errors name the byte offset, never template text.
pub fn placeholders(text: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = find(rest, OPEN) {
        let after = &rest[i + OPEN.len()..];
        let end = after
            .iter()
            .position(|&c| c == b'}')
            .ok_or_else(|| format!("unterminated ${{SECRET:…}} at byte {}", offset + i))?;
        let name = std::str::from_utf8(&after[..end])
            .ok()
            .filter(|n| super::validate_name(n).is_ok())
            .ok_or_else(|| format!("invalid secret name in placeholder at byte {}", offset + i))?;
        names.push(name.to_string());
        let consumed = i + OPEN.len() + end + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    Ok(names)
}

/// Replace every placeholder by the named value.
pub fn render(
    text: &[u8],
    values: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() + 256));
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = find(rest, OPEN) {
        out.extend_from_slice(&rest[..i]);
        let after = &rest[i + OPEN.len()..];
        let end = after
            .iter()
            .position(|&c| c == b'}')
            .ok_or_else(|| format!("unterminated ${{SECRET:…}} at byte {}", offset + i))?;
        let name = std::str::from_utf8(&after[..end]).unwrap_or("");
        let value = values
            .get(name)
            .ok_or_else(|| format!("placeholder at byte {} names no secret", offset + i))?;
        if out.capacity() - out.len() < value.len() {
            // Grow into a fresh zeroizing buffer rather than let Vec
            // reallocate and leave an unzeroized copy behind.
            let mut bigger = Zeroizing::new(Vec::with_capacity((out.len() + value.len()) * 2));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(value);
        let consumed = i + OPEN.len() + end + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if out.capacity() - out.len() < rest.len() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(out.len() + rest.len()));
        bigger.extend_from_slice(&out);
        out = bigger;
    }
    out.extend_from_slice(rest);
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_lists_placeholders() {
        let mut v = BTreeMap::new();
        v.insert("psk".to_string(), Zeroizing::new(b"pa$$".to_vec()));
        v.insert("ssid".to_string(), Zeroizing::new(b"home".to_vec()));
        let t = b"network={\n ssid=\"${SECRET:ssid}\"\n psk=\"${SECRET:psk}\"\n}\n$HOME ${OTHER}";
        assert_eq!(placeholders(t).unwrap(), vec!["ssid", "psk"]);
        assert_eq!(
            &render(t, &v).unwrap()[..],
            &b"network={\n ssid=\"home\"\n psk=\"pa$$\"\n}\n$HOME ${OTHER}"[..]
        );
    }

    #[test]
    fn bad_placeholders_are_errors() {
        assert!(placeholders(b"x ${SECRET:open").is_err());
        assert!(placeholders(b"${SECRET:../x}").is_err());
        assert!(render(b"${SECRET:missing}", &BTreeMap::new()).is_err());
    }
}
