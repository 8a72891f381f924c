//! Byte streams shared by the commands: compressed images (detected by
//! their magic, decoded one way) and sparse writing (all-zero blocks become
//! holes).

pub mod compressed;
pub mod sparse_write;
