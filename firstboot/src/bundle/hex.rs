//! Lower-case hex for public bytes (ids, hashes) and strict decoding, also
//! into a caller's (zeroizing) buffer for key material.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the lower-case hex of `bytes` to `out` (which may be a
/// zeroizing buffer: nothing else is allocated).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

/// Lower-case hex of public bytes (ids, hashes).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// The value of one hex digit (either case).
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode exactly `2 * out.len()` hex digits (either case) into `out`.
/// `false` when the length is wrong or a character is not a hex digit;
/// `out` may then be partly written (zeroize it if it holds key material).
pub fn decode_hex_into(digits: &[u8], out: &mut [u8]) -> bool {
    if digits.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

/// A SHA-256 digest from 64 hex digits (either case).
pub fn decode_sha256(digits: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    decode_hex_into(digits.as_bytes(), &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_strict() {
        let bytes: Vec<u8> = (0..=255).collect();
        let h = hex(&bytes);
        assert_eq!(&h[..8], "00010203");
        let mut back = vec![0u8; 256];
        assert!(decode_hex_into(h.as_bytes(), &mut back));
        assert_eq!(back, bytes);
        assert!(decode_hex_into(b"AbCd", &mut [0u8; 2]));
        let sum = "b15056c9a8db77ab5708d19b7f330fe13d88eeae3d0ab271081d3438c0f46264";
        assert_eq!(decode_sha256(sum).map(|d| hex(&d)).as_deref(), Some(sum));
        assert_eq!(decode_sha256(&sum[1..]), None);
        assert_eq!(decode_sha256(&sum.replace('b', "+")), None);
        assert_eq!(decode_sha256(&sum.replace('b', "g")), None);
        assert!(!decode_hex_into(b"0", &mut [0u8; 1]));
    }
}
