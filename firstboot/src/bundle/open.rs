//! Opening: bundle bytes → contents, refusing anything not sealed by us.

use super::error::BundleError;
use super::header::{Header, HEADER_LEN};
use super::key::ImageKey;
use super::limits;
use super::payload::Contents;
use super::seal::recipient_key_id;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;
use zeroize::Zeroizing;

/// What a bundle is opened with.
pub enum OpenWith<'a> {
    ImageKey(&'a ImageKey),
    Identity(&'a age::x25519::Identity),
}

/// An opened bundle.
#[derive(Debug)]
pub struct Opened {
    pub header: Header,
    pub contents: Contents,
}

/// Open bundle bytes with an image key.
pub fn open(bytes: &[u8], key: &ImageKey) -> Result<Opened, BundleError> {
    open_with(bytes, OpenWith::ImageKey(key))
}

/// Open bundle bytes with an image key or a device identity.
pub fn open_with(bytes: &[u8], with: OpenWith<'_>) -> Result<Opened, BundleError> {
    if bytes.len() as u64 > limits::MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: bytes.len() as u64,
            limit: limits::MAX_BUNDLE_BYTES,
        });
    }
    let header = Header::parse(bytes)?;
    let ciphertext = &bytes[HEADER_LEN..];
    let plaintext = match (header.is_age_recipient(), with) {
        (false, OpenWith::ImageKey(key)) => {
            if key.id() != header.key_id {
                return Err(BundleError::WrongKey {
                    expected: header.key_id.to_string(),
                    actual: key.id().to_string(),
                });
            }
            let cipher = XChaCha20Poly1305::new(key.bytes().into());
            let aad = header.to_bytes();
            Zeroizing::new(
                cipher
                    .decrypt(
                        XNonce::from_slice(&header.nonce),
                        Payload {
                            msg: ciphertext,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| BundleError::Tampered)?,
            )
        }
        (true, OpenWith::Identity(identity)) => {
            let expected = recipient_key_id(&identity.to_public());
            if expected != header.key_id {
                return Err(BundleError::WrongKey {
                    expected: header.key_id.to_string(),
                    actual: expected.to_string(),
                });
            }
            let mut inner =
                Zeroizing::new(age::decrypt(identity, ciphertext).map_err(|e| match e {
                    age::DecryptError::NoMatchingKeys => BundleError::WrongKey {
                        expected: header.key_id.to_string(),
                        actual: expected.to_string(),
                    },
                    _ => BundleError::Tampered,
                })?);
            // age does not cover the clear header: the sealed copy must match.
            let mut bound = header.clone();
            bound.ciphertext_len = 0;
            if inner.len() < HEADER_LEN || inner[..HEADER_LEN] != bound.to_bytes() {
                return Err(BundleError::Tampered);
            }
            inner.drain(..HEADER_LEN);
            inner
        }
        (true, OpenWith::ImageKey(_)) => return Err(BundleError::NeedsIdentity),
        (false, OpenWith::Identity(_)) => return Err(BundleError::NeedsImageKey),
    };
    let contents = Contents::decode(&plaintext)?;
    Ok(Opened { header, contents })
}

/// Read and open a bundle file, checking its size before reading it.
pub fn open_file(path: &Path, with: OpenWith<'_>) -> Result<Opened, BundleError> {
    let bytes = read_bundle_file(path)?;
    open_with(&bytes, with)
}

/// Read a bundle file: a regular file (a FIFO, device, directory or
/// symbolic link is refused at once), checked against the size limit
/// before anything is allocated.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    read_boot_file(path, limits::MAX_BUNDLE_BYTES, "bundle")
}

/// The one bounded reader for files found on the boot partition.
pub(crate) fn read_boot_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, BundleError> {
    use crate::fsutil::{read_regular_bounded, ReadError};
    read_regular_bounded(path, limit).map_err(|e| match e {
        ReadError::TooLarge { size, limit } if what == "bundle" => {
            BundleError::TooLarge { size, limit }
        }
        ReadError::Io(source) => {
            BundleError::io(format!("reading {what} {}", path.display()), source)
        }
        other => BundleError::NotReadable {
            path: path.display().to_string(),
            reason: other.to_string(),
        },
    })
}
