//! The identity of a Raspberry Pi 4 or 5 derived from its OTP device key.
//!
//! At every boot: `rpi-fw-crypto hmac --in /proc/self/fd/0 --key-id 1
//! --outform hex` with [`LABEL`] on its standard input has the firmware
//! compute HMAC-SHA256 over the label with the device unique private key
//! (OTP key 1, provisioned with `rpi-otp-private-key`); the key never
//! leaves the firmware. HKDF-SHA256 turns those 32 bytes into the X25519
//! secret (salt [`SALT`], info [`INFO`]). Nothing secret is stored: only
//! [`MARKER_FILE`], which says the identity is derived and records its
//! public key, so a disk moved to another Pi (or a changed OTP key) is
//! named as such instead of failing secret by secret.
//!
//! The label is versioned: a future derivation gets a new label, and the
//! marker records which one this device uses.

use super::tool::{Tool, ToolError};
use hkdf::Hkdf;
use sha2::Sha256;
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

/// What the firmware's HMAC is computed over.
pub const LABEL: &str = "sealed-image device identity v1";
/// HKDF salt and info: this derivation and nothing else.
pub const SALT: &[u8] = b"sealed-image rpi-otp";
pub const INFO: &[u8] = b"age X25519 identity";
/// The OTP key: the device unique private key.
pub const KEY_ID: u8 = 1;
/// The marker, relative to the root.
pub const MARKER_FILE: &str = "var/lib/sealed-secrets/identity.rpi-otp";

#[derive(Debug, Error)]
pub enum RpiOtpError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("rpi-fw-crypto hmac --key-id {KEY_ID} failed ({why}): {hint}")]
    Hmac { why: String, hint: &'static str },
    #[error("rpi-fw-crypto hmac printed no HMAC-SHA256 (expected 64 hex digits, got {got} bytes)")]
    Output { got: usize },
}

/// The rpi-fw-crypto of `root`.
pub fn tool(root: &Path) -> Result<Tool, ToolError> {
    Tool::find(
        root,
        "rpi-fw-crypto",
        "Raspberry Pi OTP key",
        ": identity = rpi-otp needs rpi-fw-crypto from raspberrypi/utils (Raspberry Pi OS: the rpi-fw-crypto package) and firmware with the crypto service (Raspberry Pi 4 or 5)",
    )
}

/// The 32 secret bytes of this device's identity.
pub fn derive(tool: &Tool) -> Result<Zeroizing<[u8; 32]>, RpiOtpError> {
    let key_id = KEY_ID.to_string();
    let args = [
        "hmac",
        "--in",
        "/proc/self/fd/0",
        "--key-id",
        key_id.as_str(),
        "--outform",
        "hex",
    ];
    let out = tool.run(&args, LABEL.as_bytes(), 128)?;
    if !out.success {
        let why = out.failure();
        let hint = if why.contains("Key not set") {
            "the OTP device key is not provisioned: run rpi-otp-private-key once (see the README)"
        } else if why.contains("/dev/vcio") {
            "this is no Raspberry Pi with the firmware crypto service (no /dev/vcio_crypto or /dev/vcio)"
        } else if why.contains("locked") {
            "the key is locked for this operation"
        } else {
            "is this a Raspberry Pi 4 or 5 with current firmware and a provisioned OTP device key?"
        };
        return Err(RpiOtpError::Hmac { why, hint });
    }
    let text = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
    let mac = decode_hex32(text).ok_or(RpiOtpError::Output {
        got: out.stdout.len(),
    })?;
    Ok(expand(&mac))
}

/// HKDF-SHA256 from the firmware's HMAC to the X25519 secret.
pub fn expand(mac: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(SALT), mac);
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8160.
    let _ = hk.expand(INFO, okm.as_mut());
    okm
}

fn decode_hex32(text: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    if text.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_output_is_exactly_32_bytes() {
        let hex = "00ff".repeat(16);
        let got = decode_hex32(hex.as_bytes()).unwrap();
        assert_eq!(got[0], 0);
        assert_eq!(got[1], 255);
        assert!(decode_hex32(&hex.as_bytes()[..62]).is_none());
        assert!(decode_hex32(format!("{hex}00").as_bytes()).is_none());
        assert!(decode_hex32("zz".repeat(32).as_bytes()).is_none());
    }

    /// RFC 5869's HKDF-SHA256 over a fixed input, recomputed by hand with
    /// HMAC-SHA256 (two HMACs: extract, then the first expand block).
    #[test]
    fn expand_is_hkdf_sha256_with_our_salt_and_info() {
        use hmac::{Hmac, Mac};
        let mac = [7u8; 32];
        let mut ext = Hmac::<Sha256>::new_from_slice(SALT).unwrap();
        ext.update(&mac);
        let prk = ext.finalize().into_bytes();
        let mut exp = Hmac::<Sha256>::new_from_slice(&prk).unwrap();
        exp.update(INFO);
        exp.update(&[1]);
        let t1 = exp.finalize().into_bytes();
        assert_eq!(expand(&mac).as_slice(), t1.as_slice());
    }
}
