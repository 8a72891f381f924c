//! The boot-partition contract between the builder (seal, inject, flash,
//! inspect) and the device: where the bundle and an image key are.

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
