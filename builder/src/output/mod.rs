//! Build outputs beside the image: checksums (and later .img.zst, .bmap,
//! build.json).

pub mod frames;
pub mod manifest;
pub mod sparse;
pub mod staging;
pub mod sums;
pub mod zst;
