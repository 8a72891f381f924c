use thiserror::Error;

/// Why a bundle could not be sealed or opened. Messages never contain
/// secret values or key material.
#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle is truncated: {len} bytes, but the header alone is {header} bytes")]
    TruncatedHeader { len: u64, header: usize },
    #[error("not a sealed-image bundle (bad magic bytes)")]
    BadMagic,
    #[error("unsupported bundle format version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("unsupported bundle flags {found:#06x}")]
    UnsupportedFlags { found: u16 },
    #[error("bundle is truncated: the header declares {declared} ciphertext bytes, the file holds {actual}")]
    TruncatedCiphertext { declared: u64, actual: u64 },
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
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BundleError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BundleError::Io {
            context: context.into(),
            source,
        }
    }
}
