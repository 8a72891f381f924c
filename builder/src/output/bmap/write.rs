//! `NAME.bmap`: bmaptool's block map, format version 2.0.
//!
//! The file is what `bmaptool create` (bmap-tools 3.x, `BmapCreate.py`)
//! writes for the same image, byte for byte when the image sits on a
//! filesystem with 4 KiB blocks: the same comments and spacing, mapped
//! ranges from `SEEK_DATA`/`SEEK_HOLE` (bmaptool uses FIEMAP, which reports
//! the same extents for a file written normally), a SHA-256 per range and
//! the `BmapFileChecksum` rule of `BmapCopy.py`: SHA-256 of the whole file
//! with the 64 checksum characters set to ASCII `0`.
//!
//! `bmaptool copy --bmap NAME.bmap NAME.img /dev/sdX` then writes only the
//! mapped blocks and checks every range's checksum.

use super::{BmapRange, BLOCK_SIZE, BMAP_VERSION};
use crate::io::sparse::{data_segments, read_exact_at};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What [`write_bmap`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BmapSummary {
    /// Image size in bytes.
    pub image_size: u64,
    /// Always [`BLOCK_SIZE`].
    pub block_size: u64,
    /// Blocks in the image (the last one may be partial).
    pub blocks_count: u64,
    /// Blocks that hold data and are written by `bmaptool copy`.
    pub mapped_blocks_count: u64,
    /// Number of `<Range>` elements.
    pub ranges: usize,
    /// The `BmapFileChecksum` (SHA-256, hex).
    pub bmap_checksum: String,
}

/// Mapped block ranges `(first, last)` (inclusive, in [`BLOCK_SIZE`] blocks)
/// of an image of `size` bytes: each data segment rounded out to whole
/// blocks, merged when they touch.
pub fn mapped_blocks(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let blocks = size.div_ceil(BLOCK_SIZE);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, end) in data_segments(file, size)? {
        let first = start / BLOCK_SIZE;
        let last = (end.div_ceil(BLOCK_SIZE)).min(blocks) - 1;
        match out.last_mut() {
            Some(prev) if prev.1 + 1 >= first => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    Ok(out)
}

/// Write the block map of the image `img` to `out` (created or truncated).
pub fn write_bmap(img: &Path, out: &Path) -> io::Result<BmapSummary> {
    let file = File::open(img)?;
    let size = file.metadata()?.len();
    if size == 0 {
        // bmaptool refuses too: a map of nothing is useless.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot make a bmap of the empty file {}", img.display()),
        ));
    }
    let ranges = hash_ranges(&file, size, &mapped_blocks(&file, size)?)?;
    let (text, summary) = render(size, &ranges);
    std::fs::write(out, text)?;
    Ok(summary)
}

/// The mapped ranges of an image with their SHA-256 (what a `.bmap` lists).
pub fn ranges_of(img: &Path) -> io::Result<(u64, Vec<BmapRange>)> {
    let file = File::open(img)?;
    let size = file.metadata()?.len();
    let ranges = hash_ranges(&file, size, &mapped_blocks(&file, size)?)?;
    Ok((size, ranges))
}

/// Write a `.bmap` for an image of `size` bytes from ranges already hashed
/// (fleet builds reuse the base image's hashes for unchanged ranges).
pub fn write_ranges(out: &Path, size: u64, ranges: &[BmapRange]) -> io::Result<BmapSummary> {
    let (text, summary) = render(size, ranges);
    std::fs::write(out, text)?;
    Ok(summary)
}

/// SHA-256 of each range, ranges spread over the available cores.
fn hash_ranges(file: &File, size: u64, blocks: &[(u64, u64)]) -> io::Result<Vec<BmapRange>> {
    let threads = crate::io::worker_threads().min(blocks.len()).max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<io::Result<[u8; 32]>>>> =
        Mutex::new((0..blocks.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(first, last)) = blocks.get(i) else {
                        break;
                    };
                    let r = hash_range(
                        file,
                        first * BLOCK_SIZE,
                        ((last + 1) * BLOCK_SIZE).min(size),
                        &mut buf,
                    );
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    blocks
        .iter()
        .zip(results)
        .map(|(&(first, last), r)| {
            Ok(BmapRange {
                first,
                last,
                sha256: Some(r.expect("every range hashed")?),
            })
        })
        .collect()
}

fn hash_range(file: &File, start: u64, end: u64, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        read_exact_at(file, &mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

/// bmaptool's `human_size`: `%.1f` of repeated divisions by 1024.0.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    // (sic: bmaptool says EiB after four divisions)
    format!("{s:.1} EiB")
}

const HEADER: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

/// The bmap text and its summary. Built the way `BmapCreate.py` builds it:
/// placeholders first, then the counts and the checksum written over them
/// (so the spacing is bmaptool's, quirks included).
fn render(size: u64, ranges: &[BmapRange]) -> (Vec<u8>, BmapSummary) {
    let blocks = size.div_ceil(BLOCK_SIZE);
    let mapped: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let image_human = human_size(size);

    let mut t = String::from(HEADER);
    t += &format!("<bmap version=\"{BMAP_VERSION}\">\n");
    t += &format!("    <!-- Image size in bytes: {image_human} -->\n");
    t += &format!("    <ImageSize> {size} </ImageSize>\n\n");
    t += "    <!-- Size of a block in bytes -->\n";
    t += &format!("    <BlockSize> {BLOCK_SIZE} </BlockSize>\n\n");
    t += "    <!-- Count of blocks in the image file -->\n";
    t += &format!("    <BlocksCount> {blocks} </BlocksCount>\n\n");
    t += "    <!-- Count of mapped blocks: ";
    let pos1 = t.len();
    t += &format!(
        "{} or {}   -->\n",
        " ".repeat(image_human.len()),
        " ".repeat("100.0%".len())
    );
    t += "    <MappedBlocksCount> ";
    let pos2 = t.len();
    t += &format!(
        "{} </MappedBlocksCount>\n\n",
        " ".repeat(blocks.to_string().len())
    );
    t += "    <!-- Type of checksum used in this file -->\n";
    t += "    <ChecksumType> sha256 </ChecksumType>\n\n";
    t += "    <!-- The checksum of this bmap file. When it is calculated, the value of\n";
    t += "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n";
    t += "    <BmapFileChecksum> ";
    let pos3 = t.len();
    t += &"0".repeat(64);
    t += " </BmapFileChecksum>\n\n";
    t += "    <!-- The block map which consists of elements which may either be a\n";
    t += "         range of blocks or a single block. The 'chksum' attribute\n";
    t += "         (if present) is the checksum of this blocks range. -->\n";
    t += "    <BlockMap>\n";
    for r in ranges {
        let chksum = r
            .sha256
            .map(|h| format!(" chksum=\"{}\"", hex::encode(h)))
            .unwrap_or_default();
        if r.first == r.last {
            t += &format!("        <Range{chksum}> {} </Range>\n", r.first);
        } else {
            t += &format!("        <Range{chksum}> {}-{} </Range>\n", r.first, r.last);
        }
    }
    t += "    </BlockMap>\n</bmap>\n";

    let mut b = t.into_bytes();
    let percent = (mapped as f64 * 100.0) / blocks as f64;
    overwrite(
        &mut b,
        pos1,
        &format!("{} or {percent:.1}%", human_size(mapped * BLOCK_SIZE)),
    );
    overwrite(&mut b, pos2, &mapped.to_string());
    let checksum = format!("{:x}", Sha256::digest(&b));
    overwrite(&mut b, pos3, &checksum);
    (
        b,
        BmapSummary {
            image_size: size,
            block_size: BLOCK_SIZE,
            blocks_count: blocks,
            mapped_blocks_count: mapped,
            ranges: ranges.len(),
            bmap_checksum: checksum,
        },
    )
}

/// Write `s` over `b` at `pos`, as a seek and write on the file would.
fn overwrite(b: &mut Vec<u8>, pos: usize, s: &str) {
    let end = pos + s.len();
    if end > b.len() {
        b.resize(end, b' ');
    }
    b[pos..end].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use testkit::*;

    /// (ImageSize, BlockSize, BlocksCount, MappedBlocksCount, ranges) of a
    /// bmap file, parsed loosely (whitespace-insensitive).
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        image_size: u64,
        block_size: u64,
        blocks: u64,
        mapped: u64,
        ranges: Vec<(u64, u64, String)>,
    }

    /// The text of element `name` (after the header comment, which mentions
    /// some element names).
    fn tag(text: &str, name: &str) -> String {
        let text = &text[text.find("<bmap ").unwrap()..];
        let open = format!("<{name}>");
        let i = text.find(&open).unwrap_or_else(|| panic!("no <{name}>")) + open.len();
        let j = text[i..].find("</").unwrap() + i;
        text[i..j].trim().to_string()
    }

    fn parse(path: &Path) -> Parsed {
        let text = std::fs::read_to_string(path).unwrap();
        let mut ranges = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<Range"))
        {
            let q = line.find("chksum=\"").unwrap() + 8;
            let sum = line[q..q + 64].to_string();
            let body = line[line.find('>').unwrap() + 1..line.rfind("</").unwrap()].trim();
            let (a, b) = body.split_once('-').unwrap_or((body, body));
            ranges.push((a.trim().parse().unwrap(), b.trim().parse().unwrap(), sum));
        }
        Parsed {
            image_size: tag(&text, "ImageSize").parse().unwrap(),
            block_size: tag(&text, "BlockSize").parse().unwrap(),
            blocks: tag(&text, "BlocksCount").parse().unwrap(),
            mapped: tag(&text, "MappedBlocksCount").parse().unwrap(),
            ranges,
        }
    }

    /// An image and the bmap written for it.
    fn written() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let (dir, img) = testkit::scratch("a.img");
        image_like(&img);
        let bmap = dir.path().join("a.bmap");
        write_bmap(&img, &bmap).unwrap();
        (dir, img, bmap)
    }

    /// [`written`] and bmaptool (the test fails without it: it is
    /// `#[ignore]`d for that).
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let bmaptool = require_tool("bmaptool");
        let (dir, img, bmap) = written();
        (dir, bmaptool, img, bmap)
    }

    fn copy(bmaptool: &Path, bmap: &Path, img: &Path, dest: &Path) -> std::process::Output {
        run(bmaptool, &["copy", "--bmap", s(bmap), s(img), s(dest)])
    }

    #[test]
    fn human_size_is_bmaptools() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(511), "511 bytes");
        assert_eq!(human_size(512), "0.5 KiB");
        assert_eq!(human_size(1280), "1.2 KiB"); // Python rounds the tie 1.25 to even
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(human_size(1023 << 20), "1023.0 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }

    #[test]
    #[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
    fn bmaptool_copy_reproduces_the_image() {
        let (dir, bmaptool, img, bmap) = setup();
        let dest = dir.path().join("copy.img");
        let out = copy(&bmaptool, &bmap, &img, &dest);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            same_contents(&img, &dest),
            "bmaptool copy differs from the image"
        );
    }

    #[test]
    fn summary_matches_the_file() {
        let (_dir, img, bmap) = written();
        let again = write_bmap(&img, &bmap).unwrap();
        let p = parse(&bmap);
        assert_eq!(p.image_size, again.image_size);
        assert_eq!(p.block_size, BLOCK_SIZE);
        assert_eq!(p.blocks, again.blocks_count);
        assert_eq!(p.mapped, again.mapped_blocks_count);
        assert_eq!(p.ranges.len(), again.ranges);
        assert!(p.mapped < p.blocks / 4, "holes are not mapped: {p:?}");
        let text = std::fs::read_to_string(&bmap).unwrap();
        assert!(text.contains(&format!(
            "<BmapFileChecksum> {} </BmapFileChecksum>",
            again.bmap_checksum
        )));
        assert!(text.contains("<bmap version=\"2.0\">"));
    }

    #[test]
    #[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
    fn bmaptool_checks_range_checksums() {
        let (dir, bmaptool, img, bmap) = setup();
        // Change one range checksum and fix up the file checksum, so that only
        // the range check can catch it.
        let text = std::fs::read_to_string(&bmap).unwrap();
        let file_sum = tag(&text, "BmapFileChecksum");
        let range_sum = parse(&bmap).ranges[1].2.clone();
        let bad_sum: String = range_sum
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    if c == '0' {
                        '1'
                    } else {
                        '0'
                    }
                } else {
                    c
                }
            })
            .collect();
        let zeroed = text
            .replace(&range_sum, &bad_sum)
            .replace(&file_sum, &"0".repeat(64));
        let new_sum = format!("{:x}", Sha256::digest(zeroed.as_bytes()));
        let forged = dir.path().join("forged.bmap");
        std::fs::write(&forged, zeroed.replace(&"0".repeat(64), &new_sum)).unwrap();
        let out = copy(&bmaptool, &forged, &img, &dir.path().join("x.img"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "bmaptool accepted a wrong range checksum"
        );
        assert!(err.contains("checksum mismatch for blocks range"), "{err}");
    }

    #[test]
    #[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
    fn bmaptool_checks_the_file_checksum() {
        let (dir, bmaptool, img, bmap) = setup();
        let text = std::fs::read_to_string(&bmap).unwrap();
        let range_sum = parse(&bmap).ranges[0].2.clone();
        let tampered = dir.path().join("tampered.bmap");
        std::fs::write(&tampered, text.replace(&range_sum, &"f".repeat(64))).unwrap();
        let out = copy(&bmaptool, &tampered, &img, &dir.path().join("x.img"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("checksum mismatch for bmap file"), "{err}");
    }

    #[test]
    #[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
    fn bmaptool_refuses_a_modified_image() {
        let (dir, bmaptool, img, bmap) = setup();
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"X", 100).unwrap();
        let out = copy(&bmaptool, &bmap, &img, &dir.path().join("x.img"));
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch for blocks range"));
    }

    #[test]
    #[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
    fn same_map_as_bmaptool_create() {
        let bmaptool = require_tool("bmaptool");
        let dir = tempfile::tempdir().unwrap();
        const MIB: u64 = 1 << 20;
        let images: [(&str, u64, Chunks); 3] = [
            ("like.img", 0, vec![]),
            // One data block at the very end, size a multiple of 4096.
            ("tail.img", 8 * MIB, vec![(8 * MIB - 4096, noise(4096, 7))]),
            // Size not a multiple of 512, data in the partial last block.
            (
                "odd.img",
                2 * MIB + 77,
                vec![(0, noise(600, 8)), (2 * MIB, noise(77, 9))],
            ),
        ];
        for (name, size, chunks) in images {
            let img = dir.path().join(name);
            if size == 0 {
                image_like(&img);
            } else {
                sparse_file(&img, size, &chunks);
            }
            let ours = dir.path().join(format!("{name}.ours.bmap"));
            let theirs = dir.path().join(format!("{name}.theirs.bmap"));
            write_bmap(&img, &ours).unwrap();
            run_ok(&bmaptool, &["create", "-o", s(&theirs), s(&img)]);
            let (p_ours, p_theirs) = (parse(&ours), parse(&theirs));
            if p_theirs.block_size != BLOCK_SIZE {
                eprintln!(
                    "bmaptool uses {}-byte blocks on this filesystem: comparing sizes only",
                    p_theirs.block_size
                );
                assert_eq!(p_ours.image_size, p_theirs.image_size);
                continue;
            }
            assert_eq!(p_ours, p_theirs, "{name}");
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "{name}: same map, but the files differ in formatting"
            );
            let dest = dir.path().join(format!("{name}.copy"));
            let out = copy(&bmaptool, &ours, &img, &dest);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(same_contents(&img, &dest), "{name}");
        }
    }

    #[test]
    fn empty_image_is_refused() {
        let (dir, img) = testkit::scratch("e.img");
        sparse_file(&img, 0, &[]);
        let e = write_bmap(&img, &dir.path().join("e.bmap")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
}
