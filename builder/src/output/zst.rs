//! `NAME.img.zst`: the image compressed with multithreaded zstd.
//!
//! The output is one standard zstd frame (content size and content checksum
//! included), so `zstd -d`, `zstd -t`, `unzstd`, `bmaptool copy` and the
//! `zstd` crate's decoder all read it. The image is streamed: data segments
//! are read from disk, holes are fed to the compressor as zeros without
//! touching the disk (see [`crate::io::sparse::data_segments`]).

use crate::io::sparse::{data_segments, read_exact_at};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// zstd's default level; what `zstd` uses without `-#`.
pub const DEFAULT_LEVEL: i32 = 3;

/// Read size: big enough to keep zstd's worker jobs fed.
const CHUNK: usize = 4 << 20;

/// Worker threads used when `threads` is 0: the cores available to us.
pub fn default_threads() -> u32 {
    u32::try_from(crate::io::worker_threads()).unwrap_or(1)
}

/// Compress the image `img` into `out` (created or truncated) at zstd
/// `level` (1..=19, or 20..=22 and negative levels as zstd allows) with
/// `threads` zstd worker threads (0 = [`default_threads`]).
///
/// Returns the size of the compressed file in bytes. On error the partial
/// `out` is removed. Nothing is fsynced.
pub fn compress_image(img: &Path, out: &Path, level: i32, threads: u32) -> io::Result<u64> {
    let result = compress(img, out, level, threads);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn compress(img: &Path, out: &Path, level: i32, threads: u32) -> io::Result<u64> {
    let input = File::open(img)?;
    let size = input.metadata()?.len();
    let segs = data_segments(&input, size)?;
    let threads = if threads == 0 {
        default_threads()
    } else {
        threads
    };

    let mut enc = zstd::stream::write::Encoder::new(File::create(out)?, level)?;
    enc.multithread(threads)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(size))?;

    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for (start, end) in segs {
        write_zeros(&mut enc, start - pos, &mut buf)?;
        pos = start;
        while pos < end {
            let n = (end - pos).min(CHUNK as u64) as usize;
            read_exact_at(&input, &mut buf[..n], pos)?;
            enc.write_all(&buf[..n])?;
            pos += n as u64;
        }
    }
    write_zeros(&mut enc, size - pos, &mut buf)?;
    let file = enc.finish()?;
    Ok(file.metadata()?.len())
}

/// Feed `n` zero bytes (a hole) to `w`, reusing `buf` as the zero source.
fn write_zeros(w: &mut impl Write, mut n: u64, buf: &mut [u8]) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    buf.fill(0);
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        w.write_all(&buf[..k])?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use testkit::*;

    /// Decompress a whole `.zst` file (for tests here and in `frames`).
    pub(crate) fn decode(zst: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        zstd::stream::copy_decode(File::open(zst).unwrap(), &mut v).unwrap();
        v
    }

    #[test]
    fn rust_decoder_round_trip_any_thread_count() {
        let (dir, img) = testkit::scratch("a.img");
        image_like(&img);
        let original = std::fs::read(&img).unwrap();
        for (level, threads) in [(1, 1), (DEFAULT_LEVEL, 0), (DEFAULT_LEVEL, 2), (9, 3)] {
            let zst = dir.path().join(format!("a-{level}-{threads}.img.zst"));
            let n = compress_image(&img, &zst, level, threads).unwrap();
            assert_eq!(n, std::fs::metadata(&zst).unwrap().len());
            assert!(
                n < original.len() as u64 / 4,
                "holes and text compress: {n}"
            );
            assert!(decode(&zst) == original, "level {level}, {threads} threads");
        }
    }

    #[test]
    #[ignore = "needs the zstd CLI (zstd); scripts/test runs it"]
    fn zstd_cli_tests_and_decompresses_identically() {
        let zstd = require_tool("zstd");
        let (dir, img) = testkit::scratch("a.img");
        image_like(&img);
        let zst = dir.path().join("a.img.zst");
        compress_image(&img, &zst, DEFAULT_LEVEL, 0).unwrap();
        run_ok(&zstd, &["-q", "-t", s(&zst)]);
        let back = dir.path().join("back.img");
        run_ok(&zstd, &["-q", "-d", s(&zst), "-o", s(&back)]);
        assert!(same_contents(&img, &back));
        // The frame records the content size and a checksum.
        let list = run_ok(&zstd, &["-lv", s(&zst)]);
        let text = String::from_utf8_lossy(&list.stdout);
        let size = std::fs::metadata(&img).unwrap().len();
        assert!(text.contains(&format!("({size} B)")), "{text}");
        assert!(text.contains("XXH64"), "{text}");
        // A flipped byte in the compressed data is caught.
        let mut bytes = std::fs::read(&zst).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&zst, bytes).unwrap();
        assert!(!run(&zstd, &["-q", "-t", s(&zst)]).status.success());
    }

    #[test]
    #[ignore = "needs the zstd CLI (zstd); scripts/test runs it"]
    fn empty_all_hole_and_dense_files() {
        let zstd = require_tool("zstd");
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, u64, Chunks); 3] = [
            ("empty", 0, vec![]),
            ("holes", 9 << 20, vec![]),
            ("dense", 3 << 20, vec![(0, noise(3 << 20, 9))]),
        ];
        for (name, size, chunks) in cases {
            let img = dir.path().join(name);
            sparse_file(&img, size, &chunks);
            let zst = dir.path().join(format!("{name}.zst"));
            compress_image(&img, &zst, DEFAULT_LEVEL, 2).unwrap();
            run_ok(&zstd, &["-q", "-t", s(&zst)]);
            assert!(decode(&zst) == std::fs::read(&img).unwrap(), "{name}");
        }
    }

    #[test]
    fn failure_leaves_no_output() {
        let (dir, out) = testkit::scratch("x.zst");
        assert!(
            matches!(compress_image(&dir.path().join("missing.img"), &out, 3, 1), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(!out.exists());
    }
}
