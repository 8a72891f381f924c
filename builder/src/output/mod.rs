//! Build outputs beside the image: checksums (and later .img.zst, .bmap,
//! build.json).

pub mod staging;
pub mod sums;
