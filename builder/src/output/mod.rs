//! Build outputs beside the image: `NAME.img.zst` (and per-device frames),
//! `SHA256SUMS`, `build.json`, sparse copies, and the staging directory that
//! commits them as a set. The block map is in `crate::output::bmap`.

pub mod bmap;
pub mod frames;
pub mod manifest;
pub mod staging;
pub mod sums;
pub mod zst;
