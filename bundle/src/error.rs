use thiserror::Error;

/// Why a bundle could not be sealed or opened. Messages never contain
/// secret values or key material.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle is truncated: {len} bytes, but the header alone is {header} bytes")]
    TruncatedHeader { len: u64, header: usize },
    #[error("not a sealed-image bundle (bad magic bytes)")]
    BadMagic,
    #[error("unsupported bundle format version {found} (this build reads versions 2 and 3)")]
    UnsupportedVersion { found: u16 },
    #[error("unsupported bundle flags {found:#06x}")]
    UnsupportedFlags { found: u16 },
    #[error("bundle is truncated: the header declares {declared} ciphertext bytes, the file holds {actual}")]
    TruncatedCiphertext { declared: u64, actual: u64 },
    #[error("bundle is truncated: the signature after the ciphertext has {found} of its 64 bytes")]
    TruncatedSignature { found: u64 },
    #[error("bundle has {extra} unexpected bytes after the declared ciphertext")]
    TrailingData { extra: u64 },
    #[error("bundle header has an invalid sealing time (nanoseconds out of range)")]
    BadStamp,
    #[error("{path}: refusing to read: {reason}")]
    NotReadable { path: String, reason: String },
    #[error("bundle is too large: {size} bytes (limit {limit})")]
    TooLarge { size: u64, limit: u64 },
    #[error(
        "wrong image key: the bundle was sealed under key id {expected}, this key has id {actual}"
    )]
    WrongKey { expected: String, actual: String },
    #[error("bundle failed authentication: it was modified or corrupted after sealing")]
    Tampered,
    #[error("the bundle is unsigned (format 2), and this device pins its signers ({pinned}): only a bundle signed by one of them is applied")]
    Unsigned { pinned: String },
    #[error("the bundle is signed by {signer}, which this device does not pin (it pins {pinned})")]
    UnknownSigner { signer: String, pinned: String },
    #[error("the bundle's signature does not verify with its signer {signer}: it was modified after signing, or signed with another key")]
    BadSignature { signer: String },
    #[error("bundle is sealed to an age recipient; open it with the device identity")]
    NeedsIdentity,
    #[error("bundle is sealed with an image key; open it with the image key")]
    NeedsImageKey,
    #[error("age decryption failed: {0}")]
    Age(String),
    #[error("bundle payload is invalid: {0}")]
    Payload(String),
    #[error("bundle exceeds a limit: {0}")]
    Limit(String),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("invalid image key: {0}")]
    InvalidKey(String),
    #[error("invalid signing key: {0}")]
    InvalidSigningKey(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BundleError {
    /// The bundle was refused for who signed it (unsigned while signers
    /// are pinned, an unknown signer, a signature that does not verify):
    /// nothing was decrypted.
    pub fn is_signature_refusal(&self) -> bool {
        matches!(
            self,
            BundleError::Unsigned { .. }
                | BundleError::UnknownSigner { .. }
                | BundleError::BadSignature { .. }
        )
    }

    /// A file of the boot partition (`what`: the bundle, the image key)
    /// that could not be read.
    pub(crate) fn reading(what: &str, path: &std::path::Path, e: crate::io::ReadError) -> Self {
        use crate::io::ReadError;
        match e {
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
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BundleError::Io {
            context: context.into(),
            source,
        }
    }
}
