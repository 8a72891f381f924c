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
//! manifest rules all live here, in a crate of their own that both sides
//! link: the builder (`build-image`) seals with [`seal_bundle`], the device
//! agent (`sealed-firstboot`) opens with [`open_with`]. Also shared: the
//! boot-partition contract ([`boot`]), the agent's configuration format
//! ([`config`]), the ssh-to-age conversion ([`ssh`]), bounded reads
//! ([`io`]) and how the binaries print an error ([`report`]).
//!
//! Modules import one way only (`tests/modules.rs` checks it): `io`,
//! `limits`, `boot` → `error` → `paths` → `key` → `sign` → `manifest` →
//! `header` → `template` → `payload` → `seal`, `open`; `config` (paths,
//! signers), `ssh` and `report` beside them.

#![forbid(unsafe_code)]

pub mod boot;
pub mod config;
mod error;
mod header;
pub mod io;
mod key;
pub mod limits;
mod manifest;
mod open;
mod paths;
mod payload;
pub mod report;
mod seal;
pub mod sign;
pub mod ssh;
mod template;

pub use error::BundleError;
pub use header::{
    Header, Stamp, FLAG_AGE_RECIPIENT, FORMAT_VERSION, HEADER_LEN_V2, HEADER_LEN_V3, MAGIC,
    UNSIGNED_VERSION,
};
pub use key::{ImageKey, KeyId};
pub use manifest::{
    check_clashes, check_policy, check_signers, check_units, is_plain_name, validate_account,
    validate_credential_name, validate_entry, validate_name, validate_unit, EntryError, Manifest,
    SecretEntry, SecretType, MAX_ACCOUNT_ID, MAX_SIGNERS,
};
pub use open::{open, open_file, open_with, read_bundle_file, verify, OpenWith, Opened, Policy};
pub use paths::{
    credstore_path, forbidden_dir, system_credential, validate_device_path, PathPolicy,
    ALLOWED_WITHIN, CREDENTIAL_DIRS, FORBIDDEN, SYSTEM_CREDENTIALS,
};
pub use payload::Contents;
#[cfg(any(test, feature = "test-support"))]
pub use seal::{seal, seal_signed, seal_stamped, seal_with};
pub use seal::{seal_bundle, SealTo, Sealing};
pub use sign::{Signer, SigningKey, SIGNATURE_LEN};
pub use template::{check_escapes, placeholders, quote_into, render, rendered_len, Escape};

#[cfg(test)]
mod tests;
