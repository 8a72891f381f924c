//! The sealed bundle, format v3 ([`FORMAT_VERSION`]; v2 still read).
//!
//! A bundle is `header ‖ ciphertext ‖ signature`. The header is in clear
//! and carries no names or paths, but names the signer (format 3); the
//! ciphertext is XChaCha20-Poly1305 under a fresh 256-bit image key, with
//! the whole header as associated data, over
//! `zstd(tar(manifest.json + secrets/NAME…))` (or an age file for a device
//! recipient); the Ed25519 signature covers header and ciphertext and is
//! verified before anything is decrypted ([`sign`]). Format 2 is the same
//! without signer and signature; a device accepts it only while it pins no
//! signer.
//!
//! The device defines what it accepts, so the format, its limits and the
//! manifest rules all live here; the builder only calls [`seal`].

mod error;
mod header;
mod key;
mod manifest;
mod open;
mod paths;
mod payload;
mod seal;
pub mod sign;
mod template;

pub use error::BundleError;
pub use header::{
    Header, Stamp, FLAG_AGE_RECIPIENT, FORMAT_VERSION, HEADER_LEN_V2, HEADER_LEN_V3, MAGIC,
    UNSIGNED_VERSION,
};
pub use key::{hex, ImageKey, KeyId};
pub use manifest::{
    check_clashes, check_policy, check_signers, check_units, is_plain_name, validate_account,
    validate_credential_name, validate_device_path, validate_entry, validate_name, validate_unit,
    EntryError, Manifest, SecretEntry, SecretType, MAX_ACCOUNT_ID, MAX_SIGNERS,
};
pub use open::{open, open_file, open_with, read_bundle_file, verify, OpenWith, Opened, Policy};
pub use paths::{
    credstore_path, forbidden_dir, system_credential, PathPolicy, ALLOWED_WITHIN, CREDENTIAL_DIRS,
    FORBIDDEN, SYSTEM_CREDENTIALS,
};
pub use payload::Contents;
pub use seal::{seal, seal_bundle, seal_signed, seal_stamped, seal_with, SealTo, Sealing};
pub use sign::{Signer, SigningKey, SIGNATURE_LEN};
pub use template::{check_escapes, placeholders, quote_into, render, rendered_len, Escape};

/// The boot-partition contract between the builder (seal, inject, flash,
/// inspect) and the device: where the bundle and an image key are.
pub mod boot {
    /// Directory on the boot partition that holds the bundle and the key.
    pub const SUBDIR: &str = "sealed-secrets";
    pub const BUNDLE_FILE: &str = "bundle";
    pub const KEY_FILE: &str = "image.key";
    /// The bundle's path relative to the boot partition's root.
    pub const BUNDLE_PATH: &str = "sealed-secrets/bundle";
    /// The image key's path (embedded mode, or put there by `flash`).
    pub const KEY_PATH: &str = "sealed-secrets/image.key";
    /// Largest key file accepted, everywhere it is read.
    pub const MAX_KEY_FILE_BYTES: u64 = 1024;
}

/// Limits enforced while opening, before any allocation they bound.
pub mod limits {
    /// Largest bundle file accepted (header + ciphertext).
    pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;
    /// Most secrets in one bundle.
    pub const MAX_SECRETS: usize = 1024;
    /// Largest single secret value, decompressed.
    pub const MAX_SECRET_BYTES: u64 = 16 * 1024 * 1024;
    /// Largest manifest, decompressed.
    pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
    /// Largest decompressed archive (all members and tar overhead).
    pub const MAX_TOTAL_BYTES: u64 = 128 * 1024 * 1024;
    /// Most bytes one unseal writes into the ramfs: every secret and every
    /// rendered template together (a template renders at every boot, so
    /// many of one large secret would fill the device's memory).
    pub const MAX_UNSEALED_BYTES: u64 = 128 * 1024 * 1024;
}

#[cfg(test)]
mod tests;
