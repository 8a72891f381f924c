//! Opening: bundle bytes → contents, refusing anything not sealed by us.

use crate::error::BundleError;
use crate::header::Header;
use crate::key::ImageKey;
use crate::limits;
use crate::paths::PathPolicy;
use crate::payload::Contents;
use crate::sign::{self, Signer, SIGNATURE_LEN};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;
use zeroize::Zeroizing;

/// What a bundle is opened with.
pub enum OpenWith<'a> {
    ImageKey(&'a ImageKey),
    Identity(&'a age::x25519::Identity),
}

/// What a device accepts: the signers it pins (none: any signed bundle
/// whose signature verifies with the signer its header names, and unsigned
/// format 2 bundles) and where files may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub signers: Vec<Signer>,
    pub paths: PathPolicy,
}

impl Policy {
    /// The pinned signers, for messages.
    fn pinned(&self) -> String {
        self.signers
            .iter()
            .map(Signer::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An opened bundle.
#[derive(Debug)]
pub struct Opened {
    /// The header; its `signer` is who signed the bundle (format 3).
    pub header: Header,
    pub contents: Contents,
}

/// Open bundle bytes with an image key, pinning no signer (a signature,
/// when there is one, must still verify with the signer the header names).
pub fn open(bytes: &[u8], key: &ImageKey) -> Result<Opened, BundleError> {
    open_with(bytes, OpenWith::ImageKey(key), &Policy::default())
}

/// Check who signed a bundle before anything is decrypted: its size and
/// header, then, with signers pinned, that it is signed by one of them;
/// a signature is verified whenever there is one. Returns the header.
pub fn verify(bytes: &[u8], policy: &Policy) -> Result<Header, BundleError> {
    if bytes.len() as u64 > limits::MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: bytes.len() as u64,
            limit: limits::MAX_BUNDLE_BYTES,
        });
    }
    let header = Header::parse(bytes)?;
    let Some(signer) = header.signer else {
        if policy.signers.is_empty() {
            return Ok(header);
        }
        return Err(BundleError::Unsigned {
            pinned: policy.pinned(),
        });
    };
    if !policy.signers.is_empty() && !policy.signers.contains(&signer) {
        return Err(BundleError::UnknownSigner {
            signer: signer.to_string(),
            pinned: policy.pinned(),
        });
    }
    // Header::parse checked that the signature is exactly the last bytes.
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let signature: &[u8; SIGNATURE_LEN] =
        signature
            .try_into()
            .map_err(|_| BundleError::TruncatedSignature {
                found: signature.len() as u64,
            })?;
    if !sign::verifies(&signer, signed, signature) {
        return Err(BundleError::BadSignature {
            signer: signer.to_string(),
        });
    }
    Ok(header)
}

/// Open bundle bytes with an image key or a device identity, as `policy`
/// accepts: the signature is checked first, then the ciphertext decrypted
/// and the contents validated as a whole.
pub fn open_with(bytes: &[u8], with: OpenWith<'_>, policy: &Policy) -> Result<Opened, BundleError> {
    let header = verify(bytes, policy)?;
    let ciphertext = header.ciphertext(bytes);
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
            let expected = crate::key::KeyId::of_recipient(&identity.to_public());
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
            let bound = bound.to_bytes();
            if inner.len() < bound.len() || inner[..bound.len()] != bound[..] {
                return Err(BundleError::Tampered);
            }
            inner.drain(..bound.len());
            inner
        }
        (true, OpenWith::ImageKey(_)) => return Err(BundleError::NeedsIdentity),
        (false, OpenWith::Identity(_)) => return Err(BundleError::NeedsImageKey),
    };
    let contents = Contents::decode(&plaintext, &policy.paths)?;
    if contents.manifest.signers.is_some() && !header.is_signed() {
        return Err(BundleError::Manifest(
            "an unsigned bundle carries a signer list; only a signed bundle may change the pinned signers".into(),
        ));
    }
    Ok(Opened { header, contents })
}

/// Read and open a bundle file, checking its size before reading it.
pub fn open_file(path: &Path, with: OpenWith<'_>, policy: &Policy) -> Result<Opened, BundleError> {
    let bytes = read_bundle_file(path)?;
    open_with(&bytes, with, policy)
}

/// Read a bundle file: a regular file (a FIFO, device, directory or
/// symbolic link is refused at once), checked against the size limit
/// before anything is allocated.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    crate::io::read_regular_bounded(path, limits::MAX_BUNDLE_BYTES)
        .map_err(|e| BundleError::reading("bundle", path, e))
}
