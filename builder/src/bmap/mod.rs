//! bmaptool block maps (`NAME.bmap`, format 2.x, SHA-256 checksums): one
//! model ([`Bmap`], [`BmapRange`]), its [`parse`]r (what `flash` reads) and
//! its [`write`]r (what `build` writes).
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

mod error;
mod model;
pub mod parse;
pub mod write;

pub use error::BmapError;
pub use model::{Bmap, BmapRange, BLOCK_SIZE, BMAP_VERSION};
pub use parse::{read_bmap, MAX_BMAP_BYTES};
pub use write::{ranges_of, write_bmap, write_ranges, BmapSummary};
