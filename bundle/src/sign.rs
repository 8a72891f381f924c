//! Bundle signatures (format v3): Ed25519 by a signing key the team keeps
//! like an image key; the device pins the public keys it accepts.
//!
//! Text forms, both self-describing and one line:
//!
//! * public key (a *signer*): `sealed-signer1…` (Bech32 of the 32-byte
//!   Ed25519 public key), what `build-image keygen --signing` prints and
//!   what `signer = …` lines of `/etc/sealed-firstboot.conf` hold;
//! * private key file: `SEALED-SIGNING-KEY-1:<64 hex digits>` (the Ed25519
//!   seed), after `#` comment lines naming the public key.
//!
//! What is signed: SHA-512 of the whole bundle before the signature (clear
//! header, which names the signer, and ciphertext), after a domain tag. The
//! header is also the ciphertext's associated data, so a signature cannot be
//! swapped for another signer's without breaking decryption.

use crate::error::BundleError;
use ed25519_dalek::{Signature, Signer as _, SigningKey as DalekSigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha512};
use std::str::FromStr;
use zeroize::Zeroizing;

/// Bytes of a signature at the end of a format 3 bundle.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a signer's public key in a format 3 header.
pub const SIGNER_LEN: usize = 32;
/// The Bech32 human-readable part of a signer's text form.
const SIGNER_HRP: &str = "sealed-signer";
/// The private key line's prefix.
const KEY_PREFIX: &str = "SEALED-SIGNING-KEY-1:";
/// Domain separation of the signed message.
const DOMAIN: &[u8] = b"sealed-image bundle signature v3\0";

/// A signer: the Ed25519 public key that verifies bundles. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signer([u8; SIGNER_LEN]);

impl Signer {
    /// A signer from the 32 bytes of a format 3 header. Any bytes are
    /// accepted here (so that a message can name an unknown signer);
    /// verification refuses keys that are not valid or are weak.
    pub fn from_bytes(bytes: [u8; SIGNER_LEN]) -> Signer {
        Signer(bytes)
    }

    pub fn to_bytes(self) -> [u8; SIGNER_LEN] {
        self.0
    }

    /// The verifying key, if these bytes are a valid, not weak (small
    /// order) Ed25519 public key.
    fn key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .filter(|k| !k.is_weak())
    }
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hrp = bech32::Hrp::parse(SIGNER_HRP).map_err(|_| std::fmt::Error)?;
        let text = bech32::encode::<bech32::Bech32>(hrp, &self.0).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({self})")
    }
}

impl FromStr for Signer {
    type Err = String;

    /// Parse `sealed-signer1…`: Bech32 with its checksum, the right part,
    /// 32 bytes, a valid Ed25519 point that is not of small order.
    fn from_str(s: &str) -> Result<Signer, String> {
        let s = s.trim();
        let bad = || {
            format!("not a signer: expected {SIGNER_HRP}1… (what `build-image keygen --signing` prints)")
        };
        let (hrp, data) = bech32::decode(s).map_err(|_| bad())?;
        if hrp.as_str() != SIGNER_HRP || s.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err(bad());
        }
        let bytes: [u8; SIGNER_LEN] = data.try_into().map_err(|_| bad())?;
        let signer = Signer(bytes);
        if signer.key().is_none() {
            return Err(
                "not a usable signer: the key is not a valid Ed25519 public key, or a weak one"
                    .into(),
            );
        }
        Ok(signer)
    }
}

/// A private signing key. Zeroized on drop; its `Debug` shows only the
/// public key.
pub struct SigningKey(DalekSigningKey);

impl SigningKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> SigningKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        SigningKey(DalekSigningKey::from_bytes(&seed))
    }

    /// The signer that verifies this key's signatures.
    pub fn signer(&self) -> Signer {
        Signer(self.0.verifying_key().to_bytes())
    }

    /// The key file text: comments naming the public key, then
    /// `SEALED-SIGNING-KEY-1:<64 hex digits>`.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes());
        let mut s = Zeroizing::new(String::with_capacity(400));
        s.push_str("# sealed-image signing key (Ed25519). Whoever holds it can sign bundles\n");
        s.push_str(
            "# that every device pinning its public key applies: keep it like an image key.\n",
        );
        s.push_str(&format!("# public key: {}\n", self.signer()));
        s.push_str(KEY_PREFIX);
        // Straight into the zeroized string: a hex String of its own
        // would be freed with the seed still in it.
        crate::key::hex_into(&mut s, &seed);
        s.push('\n');
        s
    }

    /// Parse a key file (or just its key line). Errors never echo the text.
    pub fn from_file_text(text: &[u8]) -> Result<SigningKey, BundleError> {
        let bad = |why: &str| BundleError::InvalidSigningKey(why.to_string());
        let text = std::str::from_utf8(text).map_err(|_| bad("the key file is not text"))?;
        let mut found = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(body) = line.strip_prefix(KEY_PREFIX) else {
                return Err(bad(&format!(
                    "expected # comments and one {KEY_PREFIX} line (a file from `build-image keygen --signing`)"
                )));
            };
            if found.replace(body).is_some() {
                return Err(bad(&format!("more than one {KEY_PREFIX} line")));
            }
        }
        let body = found.ok_or_else(|| bad(&format!("no {KEY_PREFIX} line")))?;
        let seed = crate::key::unhex32(body)
            .ok_or_else(|| bad(&format!("expected 64 hex digits after {KEY_PREFIX}")))?;
        Ok(SigningKey(DalekSigningKey::from_bytes(&seed)))
    }

    /// Sign a bundle whose header and ciphertext are `signed` (everything
    /// before the signature).
    pub(crate) fn sign_bundle(&self, signed: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&message(signed)).to_bytes()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.signer())
    }
}

/// The message that is signed: the domain tag and SHA-512 of the bundle's
/// header and ciphertext (hashed, so a 64 MiB bundle is not copied).
fn message(signed: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut m = Zeroizing::new(Vec::with_capacity(DOMAIN.len() + 64));
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&Sha512::digest(signed));
    m
}

/// Whether `signature` is `signer`'s signature over `signed` (strict
/// Ed25519: no weak keys, no malleable signatures).
pub(crate) fn verifies(signer: &Signer, signed: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Some(key) = signer.key() else {
        return false;
    };
    key.verify_strict(&message(signed), &Signature::from_bytes(signature))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_hide_the_key() {
        let k = SigningKey::generate();
        let text = k.to_file_text();
        let back = SigningKey::from_file_text(text.as_bytes()).unwrap();
        assert_eq!(back.signer(), k.signer());
        let public = k.signer().to_string();
        assert!(public.starts_with("sealed-signer1") && !public.contains(char::is_whitespace));
        assert_eq!(public.parse::<Signer>().unwrap(), k.signer());
        assert!(text.contains(&public));
        let seed_hex = text.lines().last().unwrap()[KEY_PREFIX.len()..].to_string();
        assert!(!format!("{k:?}").contains(&seed_hex));
        // Just the key line works too (an environment variable).
        let line = format!("{KEY_PREFIX}{seed_hex}");
        assert_eq!(
            SigningKey::from_file_text(line.as_bytes())
                .unwrap()
                .signer(),
            k.signer()
        );
    }

    #[test]
    fn bad_key_files_and_signers_are_refused_without_echo() {
        for bad in [
            &b"hunter2"[..],
            b"SEALED-SIGNING-KEY-1:zz",
            b"# c\nSEALED-SIGNING-KEY-1:00\n",
            b"",
            b"\xff\xfe",
        ] {
            let e = SigningKey::from_file_text(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("zz"), "{e}");
        }
        let k = SigningKey::generate();
        let two = format!("{}{}", &*k.to_file_text(), &*k.to_file_text());
        assert!(SigningKey::from_file_text(two.as_bytes()).is_err());
        let public = k.signer().to_string();
        let mut flipped = public.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'q' { b'p' } else { b'q' };
        for bad in [
            String::from_utf8(flipped).unwrap(),
            public.to_uppercase(),
            public.replace("sealed-signer", "age"),
            "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq".into(),
        ] {
            assert!(bad.parse::<Signer>().is_err(), "{bad} accepted");
        }
        // The identity point (small order) is no signer.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let text = Signer::from_bytes(identity).to_string();
        assert!(text.parse::<Signer>().is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_signer_and_bytes() {
        let k = SigningKey::generate();
        let other = SigningKey::generate();
        let sig = k.sign_bundle(b"header and ciphertext");
        assert!(verifies(&k.signer(), b"header and ciphertext", &sig));
        assert!(!verifies(&other.signer(), b"header and ciphertext", &sig));
        assert!(!verifies(&k.signer(), b"header and ciphertexT", &sig));
        let mut bent = sig;
        bent[63] ^= 0x10;
        assert!(!verifies(&k.signer(), b"header and ciphertext", &bent));
    }
}
