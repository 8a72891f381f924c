//! Build outputs beside the image: the block map ([`bmap`], read back by
//! `flash`), `NAME.img.zst` ([`zst`], and per-device frames, [`frames`]),
//! `SHA256SUMS` ([`sums`]), `build.json` ([`manifest`]), and the staging
//! directory that commits them as a set ([`staging`]).

pub mod bmap;
pub mod frames;
pub mod manifest;
pub mod staging;
pub mod sums;
pub mod zst;
