//! The per-build symmetric image key and its public short id.

use crate::error::BundleError;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const KEY_FILE_PREFIX: &str = "SEALED-IMAGE-KEY-1:";

/// A 256-bit image key. Zeroized on drop; its `Debug` shows only the key id.
#[derive(Clone)]
pub struct ImageKey(Zeroizing<[u8; 32]>);

/// First 8 bytes of SHA-256 over a domain tag and the key: identifies a key
/// without revealing it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    /// The key id of a device's age recipient (in the header of a bundle
    /// sealed to it).
    pub fn of_recipient(recipient: &age::x25519::Recipient) -> KeyId {
        KeyId::of_public(
            "sealed-image recipient id v1\0",
            recipient.to_string().as_bytes(),
        )
    }

    /// Key id of arbitrary public material (an age recipient string).
    pub fn of_public(tag: &str, material: &[u8]) -> KeyId {
        let mut h = Sha256::new();
        h.update(tag.as_bytes());
        h.update(material);
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl ImageKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> ImageKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        ImageKey(key)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> ImageKey {
        ImageKey(Zeroizing::new(*bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn id(&self) -> KeyId {
        KeyId::of_public("sealed-image key id v1\0", self.0.as_ref())
    }

    /// The key file text: `SEALED-IMAGE-KEY-1:<64 hex digits>\n`.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(KEY_FILE_PREFIX.len() + 65));
        s.push_str(KEY_FILE_PREFIX);
        hex_into(&mut s, &self.0);
        s.push('\n');
        s
    }

    /// Parse a key file. Errors never echo the file's content.
    pub fn from_file_text(text: &[u8]) -> Result<ImageKey, BundleError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| BundleError::InvalidKey("key file is not text".into()))?;
        let body = text
            .trim_end_matches(['\n', '\r'])
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| {
                BundleError::InvalidKey(format!("key file does not start with {KEY_FILE_PREFIX}"))
            })?;
        if body.len() != 64 {
            return Err(BundleError::InvalidKey(format!(
                "expected 64 hex digits after the prefix, found {}",
                body.len()
            )));
        }
        let key = unhex32(body)
            .ok_or_else(|| BundleError::InvalidKey("non-hex character in key".into()))?;
        Ok(ImageKey(key))
    }

    /// Read a key file: a regular file of at most 1 KiB (FIFOs, devices,
    /// directories and symbolic links are refused at once).
    pub fn from_file(path: &std::path::Path) -> Result<ImageKey, BundleError> {
        let bytes = Zeroizing::new(
            crate::io::read_regular_bounded(path, crate::boot::MAX_KEY_FILE_BYTES)
                .map_err(|e| BundleError::reading("image key", path, e))?,
        );
        ImageKey::from_file_text(&bytes)
    }
}

impl std::fmt::Debug for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageKey(id {})", self.id())
    }
}

/// 64 hex digits as 32 bytes (zeroized on drop): key material.
pub(crate) fn unhex32(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, out.as_mut()).ok()?;
    Some(out)
}

/// Append the lower-case hex of `bytes` to `out` (for key material, a
/// zeroized string with room for it: nothing else holds the digits).
pub(crate) fn hex_into(out: &mut String, bytes: &[u8; 32]) {
    let mut digits = Zeroizing::new([0u8; 64]);
    // 32 bytes always fit 64 digits.
    if hex::encode_to_slice(bytes, digits.as_mut()).is_ok() {
        // Hex digits are ASCII.
        out.extend(digits.iter().map(|&d| d as char));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_debug_hides_key() {
        let key = ImageKey::generate();
        let text = key.to_file_text();
        let back = ImageKey::from_file_text(text.as_bytes()).unwrap();
        assert_eq!(key.bytes(), back.bytes());
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&text[KEY_FILE_PREFIX.len()..KEY_FILE_PREFIX.len() + 64]));
    }

    #[test]
    fn key_file_errors_do_not_echo_content() {
        let err = ImageKey::from_file_text(b"SEALED-IMAGE-KEY-1:zz").unwrap_err();
        assert!(!err.to_string().contains("zz"));
        let err = ImageKey::from_file_text(b"hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }
}
