//! bmaptool's block map (format 2.x, SHA-256 checksums): one model, its
//! parser (for `flash`) and its writer (for `build`, fleets), which
//! round-trip.
//!
//! The format is a small XML file:
//!
//! ```xml
//! <bmap version="2.0">
//!     <ImageSize> 821752 </ImageSize>
//!     <BlockSize> 4096 </BlockSize>
//!     <BlocksCount> 201 </BlocksCount>
//!     <MappedBlocksCount> 117 </MappedBlocksCount>
//!     <ChecksumType> sha256 </ChecksumType>
//!     <BmapFileChecksum> 64 hex digits </BmapFileChecksum>
//!     <BlockMap>
//!         <Range chksum="64 hex digits"> 0-1 </Range>
//!         <Range chksum="64 hex digits"> 3 </Range>
//!     </BlockMap>
//! </bmap>
//! ```
//!
//! It is read with quick-xml (declaration, comments, elements, attributes,
//! text, the five predefined entities and character references) into a
//! small tree, then walked strictly over the expected structure. Anything
//! else (DTDs, CDATA, misnested or unclosed tags, bad numbers, overlapping
//! or unsorted ranges, counts that disagree) is an error naming the line.

mod parse;
mod write;

pub use write::{mapped_blocks, ranges_of, write_bmap, write_ranges, BmapSummary};

/// Block size of the maps written (what bmaptool uses on ext4, xfs, btrfs,
/// tmpfs); maps read may use another.
pub const BLOCK_SIZE: u64 = 4096;
/// The format version written.
pub const BMAP_VERSION: &str = "2.0";

/// A block map that cannot be used: not a well-formed, consistent bmap
/// 2.x. Messages name the line where one is known; a bmap holds no image
/// data, so none is echoed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmapError {
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
        hex::encode(expected),
        hex::encode(actual)
    )]
    FileChecksum {
        expected: [u8; 32],
        actual: [u8; 32],
    },
}

/// Largest bmap file accepted (a multi-terabyte image with a fragmented map
/// stays far below this).
pub const MAX_BMAP_BYTES: u64 = 128 << 20;

/// A parsed and checked block map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    /// The `version` attribute, e.g. `2.0`.
    pub version: String,
    /// Size of the (uncompressed) image in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks in the image: `ceil(image_size / block_size)`.
    pub blocks_count: u64,
    /// Mapped ranges, sorted, not overlapping.
    pub ranges: Vec<BmapRange>,
}

/// A range of mapped blocks, inclusive at both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// SHA-256 of the range's bytes (the last range stops at the image end).
    pub sha256: Option<[u8; 32]>,
}

impl Bmap {
    /// Byte offsets `[start, end)` of a range (clipped to the image size).
    pub fn byte_range(&self, r: &BmapRange) -> (u64, u64) {
        let start = r.first * self.block_size;
        let end = ((r.last + 1) * self.block_size).min(self.image_size);
        (start, end)
    }

    /// Number of mapped bytes.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (s, e) = self.byte_range(r);
                e - s
            })
            .sum()
    }

    /// Number of mapped blocks.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Parse and check a bmap file's text. Errors say what is wrong and on
    /// which line.
    pub fn parse(text: &str) -> Result<Bmap, BmapError> {
        parse::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the writer writes, the parser reads back: sizes, counts and
    /// every range with its hash; and the parser's own check of the
    /// `BmapFileChecksum` passes.
    #[test]
    fn the_writer_round_trips_through_the_parser() {
        let (dir, img) = testkit::scratch("x.img");
        // Data at 0, a hole, data across a block boundary, a partial last block.
        let chunks = [
            (0, vec![1u8; 5000]),
            (40_000, vec![2u8; 9000]),
            (3 * 1024 * 1024 + 100, vec![3u8; 10]),
        ];
        testkit::sparse_file(&img, 3 * 1024 * 1024 + 123, &chunks);
        let out = dir.path().join("x.bmap");
        let summary = write_bmap(&img, &out).unwrap();
        let (size, ranges) = ranges_of(&img).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let parsed = Bmap::parse(&text).unwrap();
        assert_eq!(parsed.version, BMAP_VERSION);
        assert_eq!(parsed.image_size, size);
        assert_eq!(parsed.block_size, BLOCK_SIZE);
        assert_eq!(parsed.blocks_count, summary.blocks_count);
        assert_eq!(parsed.mapped_blocks(), summary.mapped_blocks_count);
        assert_eq!(parsed.ranges, ranges);
        assert_eq!(parsed.ranges.len(), summary.ranges);
        assert!(parsed.ranges.iter().all(|r| r.sha256.is_some()));
        // A flipped hash digit is caught by the file checksum.
        let flipped: String = {
            let at = text.find("chksum=\"").unwrap() + 8;
            let mut b = text.clone().into_bytes();
            b[at] = if b[at] == b'a' { b'b' } else { b'a' };
            String::from_utf8(b).unwrap()
        };
        assert!(matches!(
            Bmap::parse(&flipped),
            Err(BmapError::FileChecksum { .. })
        ));
    }
}
