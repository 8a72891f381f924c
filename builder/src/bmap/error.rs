//! Why a block map cannot be read. Messages name the line where one is
//! known; they hold no image data (a bmap holds none either).

use sealed_firstboot::bundle::hex::hex;
use std::io;

/// A block map that cannot be read or is not a sound bmap.
#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    /// The file cannot be read.
    #[error("{0}")]
    Io(io::Error),
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Malformed XML, or an element, attribute or value out of place.
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("<{element}> opened on line {line} is never closed (truncated file?)")]
    Unclosed { element: String, line: usize },
    #[error("no <bmap> element (empty or not a bmap file)")]
    NoRoot,
    #[error("<bmap> has no version attribute")]
    NoVersion,
    #[error(
        "bmap format version {0} is not supported (this reader handles 2.x, with SHA-256 \
         checksums; recreate it with a current bmaptool)"
    )]
    UnsupportedVersion(String),
    #[error("the bmap has no <{0}>")]
    Missing(&'static str),
    #[error("checksum type {0:?} is not supported (only sha256)")]
    UnsupportedChecksumType(String),
    #[error("<BlockSize> is 0")]
    ZeroBlockSize,
    #[error(
        "<BlocksCount> is {declared}, but an image of {image_size} bytes has {expected} blocks \
         of {block_size} bytes"
    )]
    BlocksCount {
        declared: u64,
        image_size: u64,
        expected: u64,
        block_size: u64,
    },
    #[error("<MappedBlocksCount> is {declared}, but the ranges map {actual} blocks")]
    MappedBlocksCount { declared: u64, actual: u64 },
    #[error(
        "the bmap file's checksum does not match its content (expected {}, computed {}): \
         the file was modified or damaged",
        hex(expected),
        hex(actual)
    )]
    FileChecksum {
        expected: [u8; 32],
        actual: [u8; 32],
    },
}
