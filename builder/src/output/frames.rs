//! Per-device images of a fleet at the cost of their differences.
//!
//! The base image is compressed once as independent zstd frames of
//! [`FRAME_BYTES`] of image each (concatenated frames are one valid `.zst`:
//! `zstd -d`, `zstd -t`, `bmaptool copy` and `flash` read them). A device's
//! image is the base plus an [`Overlay`] of the 4 KiB blocks its bundle
//! changed on the boot partition; its `.img.zst` copies the base's
//! compressed bytes for every frame the overlay does not touch and
//! recompresses only the others, and its `.bmap` keeps the base's range
//! hashes except for ranges that hold changed blocks.

use crate::io::sparse::{data_segments, read_exact_at};
use crate::output::bmap::{BmapRange, BLOCK_SIZE};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Image bytes per zstd frame.
pub const FRAME_BYTES: u64 = 4 << 20;

/// The base image compressed frame by frame.
pub struct BaseFrames {
    /// The concatenated frames (a valid `.zst` of the base image).
    pub path: PathBuf,
    /// Offset and length of each frame in `path`.
    frames: Vec<(u64, u64)>,
    /// Size of the uncompressed image.
    pub image_size: u64,
    level: i32,
}

/// Blocks of a device's image that differ from the base: absolute offset
/// (a multiple of [`BLOCK_SIZE`]) → the block's bytes.
#[derive(Default)]
pub struct Overlay {
    pub blocks: BTreeMap<u64, Vec<u8>>,
}

impl Drop for Overlay {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for b in self.blocks.values_mut() {
            b.zeroize();
        }
    }
}

impl Overlay {
    fn touches(&self, start: u64, end: u64) -> bool {
        self.blocks.range(start..end).next().is_some()
            || self
                .blocks
                .range(..start)
                .next_back()
                .is_some_and(|(o, b)| o + b.len() as u64 > start)
    }

    /// Copy the overlay's bytes that fall in `[start, start + buf.len())`.
    fn apply(&self, start: u64, buf: &mut [u8]) {
        let end = start + buf.len() as u64;
        let first = start - start % BLOCK_SIZE;
        for (&o, b) in self.blocks.range(first..end) {
            let lo = o.max(start);
            let hi = (o + b.len() as u64).min(end);
            if lo < hi {
                buf[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&b[(lo - o) as usize..(hi - o) as usize]);
            }
        }
    }
}

/// The bytes of `[start, end)` of `img` (holes as zeros, not read).
fn read_region(
    img: &File,
    segs: &[(u64, u64)],
    start: u64,
    end: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.clear();
    buf.resize((end - start) as usize, 0);
    let i = segs.partition_point(|&(_, e)| e <= start);
    for &(s, e) in &segs[i..] {
        if s >= end {
            break;
        }
        let lo = s.max(start);
        let hi = e.min(end);
        read_exact_at(
            img,
            &mut buf[(lo - start) as usize..(hi - start) as usize],
            lo,
        )?;
    }
    Ok(())
}

fn compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    c.include_contentsize(true)?;
    Ok(c)
}

/// Compress `img` frame by frame into `out`, frames spread over `threads`
/// workers (0: the cores available). Frames that are all holes are
/// compressed once.
pub fn compress_base(img: &Path, out: &Path, level: i32, threads: u32) -> io::Result<BaseFrames> {
    let file = File::open(img)?;
    let size = file.metadata()?.len();
    let segs = data_segments(&file, size)?;
    let count = size.div_ceil(FRAME_BYTES) as usize;
    let threads = if threads == 0 {
        super::zst::default_threads() as usize
    } else {
        threads as usize
    }
    .max(1);
    let mut dest = File::create(out)?;
    let mut frames = Vec::with_capacity(count);
    let mut pos = 0u64;
    let mut hole_frames: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    // Batches of `threads` frames compressed in parallel, written in order:
    // memory stays at a few frames whatever the image size.
    let mut next = 0usize;
    while next < count {
        let batch: Vec<usize> = (next..count.min(next + threads)).collect();
        next += batch.len();
        let results: Vec<io::Result<Vec<u8>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let (file, segs) = (&file, &segs);
                    let start = i as u64 * FRAME_BYTES;
                    let end = (start + FRAME_BYTES).min(size);
                    let hole = !segs.iter().any(|&(s, e)| s < end && e > start);
                    let cached = hole
                        .then(|| hole_frames.get(&(end - start)).cloned())
                        .flatten();
                    scope.spawn(move || -> io::Result<Vec<u8>> {
                        if let Some(c) = cached {
                            return Ok(c);
                        }
                        let mut buf = Vec::new();
                        read_region(file, segs, start, end, &mut buf)?;
                        compressor(level)?.compress(&buf)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a compression thread panicked")))
                })
                .collect()
        });
        for (&i, r) in batch.iter().zip(results) {
            let bytes = r?;
            let start = i as u64 * FRAME_BYTES;
            let end = (start + FRAME_BYTES).min(size);
            if !segs.iter().any(|&(s, e)| s < end && e > start) {
                hole_frames
                    .entry(end - start)
                    .or_insert_with(|| bytes.clone());
            }
            dest.write_all(&bytes)?;
            frames.push((pos, bytes.len() as u64));
            pos += bytes.len() as u64;
        }
    }
    dest.flush()?;
    Ok(BaseFrames {
        path: out.to_path_buf(),
        frames,
        image_size: size,
        level,
    })
}

/// Write a device's `.img.zst`: the base's frames, recompressed where the
/// overlay touches them. Returns the SHA-256 (hex) of what was written.
pub fn write_device_zst(
    base_img: &Path,
    base: &BaseFrames,
    overlay: &Overlay,
    out: &Path,
) -> io::Result<String> {
    let img = File::open(base_img)?;
    let segs = data_segments(&img, base.image_size)?;
    let frames = File::open(&base.path)?;
    let mut dest = std::io::BufWriter::with_capacity(1 << 20, File::create(out)?);
    let mut hash = Sha256::new();
    let mut buf = Vec::new();
    let mut copy = vec![0u8; 1 << 20];
    let mut c = compressor(base.level)?;
    for (i, &(off, len)) in base.frames.iter().enumerate() {
        let start = i as u64 * FRAME_BYTES;
        let end = (start + FRAME_BYTES).min(base.image_size);
        if overlay.touches(start, end) {
            read_region(&img, &segs, start, end, &mut buf)?;
            overlay.apply(start, &mut buf);
            let bytes = c.compress(&buf)?;
            hash.update(&bytes);
            dest.write_all(&bytes)?;
        } else {
            let mut at = off;
            while at < off + len {
                let k = (off + len - at).min(copy.len() as u64) as usize;
                frames.read_exact_at(&mut copy[..k], at)?;
                hash.update(&copy[..k]);
                dest.write_all(&copy[..k])?;
                at += k as u64;
            }
        }
    }
    use zeroize::Zeroize;
    buf.zeroize();
    dest.into_inner().map_err(|e| e.into_error())?.flush()?;
    Ok(format!("{:x}", hash.finalize()))
}

/// A device's bmap ranges: the base's, plus the overlay's blocks, merged;
/// hashes are reused for ranges that are unchanged.
pub fn device_ranges(
    base_img: &Path,
    size: u64,
    base_ranges: &[BmapRange],
    overlay: &Overlay,
) -> io::Result<Vec<BmapRange>> {
    let blocks = size.div_ceil(BLOCK_SIZE);
    let mut spans: Vec<(u64, u64, Option<[u8; 32]>)> = base_ranges
        .iter()
        .map(|r| (r.first, r.last, r.sha256))
        .collect();
    for (&o, b) in &overlay.blocks {
        let first = o / BLOCK_SIZE;
        let last = ((o + b.len() as u64).div_ceil(BLOCK_SIZE)).min(blocks) - 1;
        spans.push((first, last, None));
    }
    spans.sort_by_key(|s| (s.0, s.1));
    let mut merged: Vec<(u64, u64, Option<[u8; 32]>)> = Vec::new();
    for (f, l, h) in spans {
        match merged.last_mut() {
            Some(m) if m.1 + 1 >= f => {
                m.1 = m.1.max(l);
                m.2 = None;
            }
            _ => merged.push((f, l, h)),
        }
    }
    // A merged span equal to a base range with no overlay block keeps its
    // hash (the merge above cleared it only when two spans joined).
    let img = File::open(base_img)?;
    let segs = data_segments(&img, size)?;
    let mut buf = Vec::new();
    merged
        .into_iter()
        .map(|(first, last, known)| {
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(size);
            let sha256 = match known {
                Some(h) if !overlay.touches(start, end) => h,
                _ => {
                    let mut h = Sha256::new();
                    let mut at = start;
                    while at < end {
                        let e = (at + (8 << 20)).min(end);
                        read_region(&img, &segs, at, e, &mut buf)?;
                        overlay.apply(at, &mut buf);
                        h.update(&buf);
                        at = e;
                    }
                    h.finalize().into()
                }
            };
            Ok(BmapRange {
                first,
                last,
                sha256: Some(sha256),
            })
        })
        .collect()
}

/// The overlay a device's boot files make: the boot partition of the base
/// (`part_start`, `part_size`) is copied (data only) into a scratch file in
/// `scratch_dir`, `write` writes the device's files into it there, and every
/// 4 KiB block that then differs from the base is the overlay.
pub fn overlay_of(
    base_img: &Path,
    part_start: u64,
    part_size: u64,
    scratch_dir: &Path,
    write: impl FnOnce(&Path) -> Result<(), crate::image::ImageError>,
) -> Result<Overlay, crate::image::ImageError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e| crate::image::ImageError::io(what, e)
    };
    let img = File::open(base_img).map_err(io("cannot open the base image"))?;
    let size = img
        .metadata()
        .map_err(io("cannot open the base image"))?
        .len();
    let segs = data_segments(&img, size).map_err(io("cannot map the base image"))?;
    let scratch = tempfile::Builder::new()
        .prefix(".device-boot-")
        .tempfile_in(scratch_dir)
        .map_err(io("cannot create a scratch file"))?;
    let end = part_start + part_size;
    {
        let f = scratch.as_file();
        f.set_len(part_size)
            .map_err(io("cannot size the scratch file"))?;
        let mut buf = Vec::new();
        for &(s, e) in &segs {
            let (lo, hi) = (s.max(part_start), e.min(end));
            let mut at = lo;
            while at < hi {
                let k = (hi - at).min(8 << 20);
                read_region(&img, &segs, at, at + k, &mut buf)
                    .map_err(io("cannot read the base image"))?;
                f.write_all_at(&buf, at - part_start)
                    .map_err(io("cannot write the scratch file"))?;
                at += k;
            }
        }
    }
    write(scratch.path())?;
    let f = scratch.as_file();
    let changed_segs = data_segments(f, part_size).map_err(io("cannot map the scratch file"))?;
    let mut overlay = Overlay::default();
    let mut ours = vec![0u8; BLOCK_SIZE as usize];
    let mut theirs = Vec::new();
    // Blocks the write touched lie in the scratch file's data; a block of
    // the base that became a hole cannot happen (FAT writes never punch).
    for (s, e) in changed_segs {
        let mut at = s - s % BLOCK_SIZE;
        while at < e {
            let n = BLOCK_SIZE.min(part_size - at) as usize;
            read_exact_at(f, &mut ours[..n], at).map_err(io("cannot read the scratch file"))?;
            read_region(
                &img,
                &segs,
                part_start + at,
                part_start + at + n as u64,
                &mut theirs,
            )
            .map_err(io("cannot read the base image"))?;
            if ours[..n] != theirs[..] {
                overlay.blocks.insert(part_start + at, ours[..n].to_vec());
            }
            at += BLOCK_SIZE;
        }
    }
    use zeroize::Zeroize;
    ours.zeroize();
    theirs.zeroize();
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use super::super::zst::tests::decode;
    use super::*;
    use testkit::*;

    /// A device's .zst and .bmap built from the base and an overlay equal
    /// what compressing and mapping the device's full image would give.
    #[test]
    fn device_outputs_equal_those_of_the_full_image() {
        let (dir, base) = testkit::scratch("base.img");
        let size = 3 * FRAME_BYTES + 12345;
        sparse_file(
            &base,
            size,
            &[
                (0, noise(70_000, 1)),
                (FRAME_BYTES + 8192, noise(9000, 2)),
                (3 * FRAME_BYTES, noise(5000, 3)),
            ],
        );
        let frames = compress_base(&base, &dir.path().join("base.frames"), 3, 2).unwrap();
        assert!(decode(&frames.path) == std::fs::read(&base).unwrap());
        // The device changes a block inside data, one in a hole, and one
        // that straddles nothing else.
        let mut overlay = Overlay::default();
        overlay.blocks.insert(4096, vec![0xAB; 4096]);
        overlay
            .blocks
            .insert(2 * FRAME_BYTES + 40960, vec![0xCD; 4096]);
        let mut full = std::fs::read(&base).unwrap();
        for (&o, b) in &overlay.blocks {
            full[o as usize..o as usize + b.len()].copy_from_slice(b);
        }
        let zst = dir.path().join("dev.img.zst");
        let sha = write_device_zst(&base, &frames, &overlay, &zst).unwrap();
        assert!(
            decode(&zst) == full,
            "device zst decodes to the device image"
        );
        assert_eq!(
            sha,
            format!("{:x}", Sha256::digest(std::fs::read(&zst).unwrap()))
        );
        // Untouched frames were copied: frame 1 (no overlay) is byte-identical.
        let base_bytes = std::fs::read(&frames.path).unwrap();
        let dev_bytes = std::fs::read(&zst).unwrap();
        let (o1, l1) = frames.frames[1];
        assert!(dev_bytes
            .windows(l1 as usize)
            .any(|w| w == &base_bytes[o1 as usize..(o1 + l1) as usize]));
        // bmap ranges equal those of the full device image.
        let full_img = dir.path().join("full.img");
        let chunks: Vec<(u64, Vec<u8>)> = {
            let f = File::open(&base).unwrap();
            let mut v: Vec<(u64, Vec<u8>)> = data_segments(&f, size)
                .unwrap()
                .into_iter()
                .map(|(s, e)| (s, full[s as usize..e as usize].to_vec()))
                .collect();
            for (&o, b) in &overlay.blocks {
                v.push((o, b.clone()));
            }
            v
        };
        sparse_file(&full_img, size, &chunks);
        let (_, base_ranges) = crate::output::bmap::ranges_of(&base).unwrap();
        let (_, want) = crate::output::bmap::ranges_of(&full_img).unwrap();
        let got = device_ranges(&base, size, &base_ranges, &overlay).unwrap();
        assert_eq!(got, want);
    }
}
