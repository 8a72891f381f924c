//! Limits enforced while opening, before any allocation they bound.

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
