//! Sealing: contents → bundle bytes.

use super::error::BundleError;
use super::header::{Header, Stamp, FLAG_AGE_RECIPIENT, FORMAT_VERSION, HEADER_LEN};
use super::key::{ImageKey, KeyId};
use super::payload::Contents;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// What a bundle is sealed to.
pub enum SealTo<'a> {
    /// A symmetric image key (separate or embedded key modes).
    ImageKey(&'a ImageKey),
    /// A known device's age X25519 recipient: no symmetric step.
    Recipient(&'a age::x25519::Recipient),
}

/// Seal `contents` under `key`, stamped with `created_at` (whole unix
/// seconds; the builder uses [`seal_stamped`] with the real clock).
pub fn seal(key: &ImageKey, contents: &Contents, created_at: u64) -> Result<Vec<u8>, BundleError> {
    seal_stamped(SealTo::ImageKey(key), contents, Stamp::at(created_at))
}

/// Seal `contents` to an image key or to a device recipient, at whole seconds.
pub fn seal_with(
    to: SealTo<'_>,
    contents: &Contents,
    created_at: u64,
) -> Result<Vec<u8>, BundleError> {
    seal_stamped(to, contents, Stamp::at(created_at))
}

/// Seal `contents` with a full [`Stamp`] (sub-second time and sequence).
pub fn seal_stamped(
    to: SealTo<'_>,
    contents: &Contents,
    stamp: Stamp,
) -> Result<Vec<u8>, BundleError> {
    let plaintext = contents.encode()?;
    seal_plaintext(to, &plaintext, stamp)
}

/// Seal an already encoded plaintext (also used by tests to build hostile bundles).
pub(crate) fn seal_plaintext(
    to: SealTo<'_>,
    plaintext: &[u8],
    stamp: Stamp,
) -> Result<Vec<u8>, BundleError> {
    let mut bundle_id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bundle_id);
    let mut header = Header {
        version: FORMAT_VERSION,
        flags: 0,
        bundle_id,
        created_at: stamp.seconds,
        created_nanos: stamp.nanos,
        sequence: stamp.sequence,
        key_id: KeyId([0; 8]),
        nonce: [0; 24],
        ciphertext_len: 0,
    };
    let ciphertext = match to {
        SealTo::ImageKey(key) => {
            header.key_id = key.id();
            rand::rngs::OsRng.fill_bytes(&mut header.nonce);
            header.ciphertext_len = (plaintext.len() + 16) as u64;
            let aad = header.to_bytes();
            let cipher = XChaCha20Poly1305::new(key.bytes().into());
            cipher
                .encrypt(
                    XNonce::from_slice(&header.nonce),
                    Payload {
                        msg: plaintext,
                        aad: &aad,
                    },
                )
                .map_err(|_| BundleError::Payload("encryption failed".into()))?
        }
        SealTo::Recipient(recipient) => {
            header.flags = FLAG_AGE_RECIPIENT;
            header.key_id = recipient_key_id(recipient);
            // age does not authenticate our clear header, so a copy of it
            // travels inside the age payload and must match on open.
            let mut inner =
                zeroize::Zeroizing::new(Vec::with_capacity(HEADER_LEN + plaintext.len()));
            inner.extend_from_slice(&header.to_bytes());
            inner.extend_from_slice(plaintext);
            age::encrypt(recipient, &inner).map_err(|e| BundleError::Age(e.to_string()))?
        }
    };
    header.ciphertext_len = ciphertext.len() as u64;
    let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

pub(crate) fn recipient_key_id(recipient: &age::x25519::Recipient) -> KeyId {
    KeyId::of_public(
        "sealed-image recipient id v1\0",
        recipient.to_string().as_bytes(),
    )
}
