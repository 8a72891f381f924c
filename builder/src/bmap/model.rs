//! The block map model, shared by the parser and the writer.

/// Block size of the maps written (what bmaptool uses on ext4, xfs, btrfs,
/// tmpfs). Maps read may declare another.
pub const BLOCK_SIZE: u64 = 4096;
/// The format version written.
pub const BMAP_VERSION: &str = "2.0";

/// A block map: read and checked by [`Bmap::parse`], or built from hashed
/// ranges by [`Bmap::from_ranges`] for writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    /// The `version` attribute, e.g. `2.0`.
    pub version: String,
    /// Size of the (uncompressed) image in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks in the image: `ceil(image_size / block_size)` (the last one
    /// may be partial).
    pub blocks_count: u64,
    /// Mapped ranges, sorted, not overlapping.
    pub ranges: Vec<BmapRange>,
}

/// One `<Range>`: mapped blocks `first..=last` and the SHA-256 of their
/// bytes (up to the end of the image for a partial last block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// Always present in the maps written; optional in the maps read.
    pub sha256: Option<[u8; 32]>,
}

impl Bmap {
    /// The map of an image of `image_size` bytes in [`BLOCK_SIZE`] blocks,
    /// format [`BMAP_VERSION`], with these ranges (sorted, not overlapping).
    pub fn from_ranges(image_size: u64, ranges: Vec<BmapRange>) -> Bmap {
        Bmap {
            version: BMAP_VERSION.to_string(),
            image_size,
            block_size: BLOCK_SIZE,
            blocks_count: image_size.div_ceil(BLOCK_SIZE),
            ranges,
        }
    }

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
}
