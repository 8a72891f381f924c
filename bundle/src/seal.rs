//! Sealing: contents → bundle bytes.

use crate::error::BundleError;
use crate::header::{Header, Stamp, FLAG_AGE_RECIPIENT, FORMAT_VERSION, UNSIGNED_VERSION};
use crate::key::{ImageKey, KeyId};
use crate::paths::PathPolicy;
use crate::payload::Contents;
use crate::sign::{SigningKey, SIGNATURE_LEN};
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

/// How a bundle is sealed.
pub struct Sealing<'a> {
    pub to: SealTo<'a>,
    /// The bundle's place in the order of bundles.
    pub stamp: Stamp,
    /// Sign with this key: format 3. `None`: unsigned format 2, for
    /// devices that pin no signer (or run an agent that reads only v2).
    pub signing: Option<&'a SigningKey>,
    /// Where the contents may put files: the default rule, or what the
    /// recipe allows (the devices must allow it too).
    pub paths: &'a PathPolicy,
}

/// Seal `contents`: validated as a whole first (the device's own rules).
pub fn seal_bundle(contents: &Contents, how: &Sealing<'_>) -> Result<Vec<u8>, BundleError> {
    let plaintext = contents.encode(how.paths)?;
    seal_plaintext(&how.to, &plaintext, how.stamp, how.signing)
}

#[cfg(any(test, feature = "test-support"))]
/// Seal `contents` under `key`, unsigned (format 2), at whole unix seconds:
/// for tests and devices that pin no signer.
pub fn seal(key: &ImageKey, contents: &Contents, created_at: u64) -> Result<Vec<u8>, BundleError> {
    seal_stamped(SealTo::ImageKey(key), contents, Stamp::at(created_at))
}

#[cfg(any(test, feature = "test-support"))]
/// Seal `contents` under `key` and sign it with `signing` (format 3), at
/// whole unix seconds.
pub fn seal_signed(
    key: &ImageKey,
    contents: &Contents,
    created_at: u64,
    signing: &SigningKey,
) -> Result<Vec<u8>, BundleError> {
    seal_bundle(
        contents,
        &Sealing {
            to: SealTo::ImageKey(key),
            stamp: Stamp::at(created_at),
            signing: Some(signing),
            paths: &PathPolicy::strict(),
        },
    )
}

#[cfg(any(test, feature = "test-support"))]
/// Seal `contents` to an image key or a device recipient, unsigned, at
/// whole seconds.
pub fn seal_with(
    to: SealTo<'_>,
    contents: &Contents,
    created_at: u64,
) -> Result<Vec<u8>, BundleError> {
    seal_stamped(to, contents, Stamp::at(created_at))
}

#[cfg(any(test, feature = "test-support"))]
/// Seal `contents` unsigned (format 2) with a full [`Stamp`].
pub fn seal_stamped(
    to: SealTo<'_>,
    contents: &Contents,
    stamp: Stamp,
) -> Result<Vec<u8>, BundleError> {
    seal_bundle(
        contents,
        &Sealing {
            to,
            stamp,
            signing: None,
            paths: &PathPolicy::strict(),
        },
    )
}

/// Seal an already encoded plaintext (also used by tests to build hostile
/// bundles), signed when `signing` is given.
pub(crate) fn seal_plaintext(
    to: &SealTo<'_>,
    plaintext: &[u8],
    stamp: Stamp,
    signing: Option<&SigningKey>,
) -> Result<Vec<u8>, BundleError> {
    let mut bundle_id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bundle_id);
    let mut header = Header {
        version: if signing.is_some() {
            FORMAT_VERSION
        } else {
            UNSIGNED_VERSION
        },
        flags: 0,
        bundle_id,
        created_at: stamp.seconds,
        created_nanos: stamp.nanos,
        sequence: stamp.sequence,
        key_id: KeyId([0; 8]),
        nonce: [0; 24],
        ciphertext_len: 0,
        signer: signing.map(SigningKey::signer),
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
            header.key_id = KeyId::of_recipient(recipient);
            // age does not authenticate our clear header, so a copy of it
            // travels inside the age payload and must match on open.
            let bound = header.to_bytes();
            let mut inner =
                zeroize::Zeroizing::new(Vec::with_capacity(bound.len() + plaintext.len()));
            inner.extend_from_slice(&bound);
            inner.extend_from_slice(plaintext);
            age::encrypt(*recipient, &inner).map_err(|e| BundleError::Age(e.to_string()))?
        }
    };
    header.ciphertext_len = ciphertext.len() as u64;
    let head = header.to_bytes();
    let mut out = Vec::with_capacity(head.len() + ciphertext.len() + SIGNATURE_LEN);
    out.extend_from_slice(&head);
    out.extend_from_slice(&ciphertext);
    if let Some(k) = signing {
        let signature = k.sign_bundle(&out);
        out.extend_from_slice(&signature);
    }
    Ok(out)
}
