//! Files: sparse fixtures, byte ranges, and searches for planted markers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;

const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
/// Make a FIFO (mode 0600) at `path`: the file that would block a reader
/// with no writer forever.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Data to write: `(offset, bytes)` pairs.
pub type Chunks = Vec<(u64, Vec<u8>)>;

/// A sparse file of `size` bytes with `chunks` written at their offsets;
/// the rest are holes.
pub fn sparse_file(path: &Path, size: u64, chunks: &[(u64, Vec<u8>)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in chunks {
        f.write_all_at(data, *off).unwrap();
    }
    f.sync_all().unwrap();
}

/// An image-like sparse file: a first data block, data at unaligned
/// offsets and lengths, compressible text, a block of written zeros (data,
/// not a hole), large holes, and data up to an end that is not a
/// multiple of 4096. Returns its size.
pub fn image_like(path: &Path) -> u64 {
    let size = 40 * MIB + 1536;
    let text: Vec<u8> = b"sealed-image test pattern, compressible text\n"
        .iter()
        .copied()
        .cycle()
        .take(300_000)
        .collect();
    sparse_file(
        path,
        size,
        &[
            (0, noise(4096, 1)),
            (3 * MIB + 100, noise(70_000, 2)),
            (5 * MIB, text),
            (9 * MIB, vec![0u8; 8192]),
            (17 * MIB - 10, noise(2 * MIB as usize, 3)),
            (size - 5000, noise(5000, 4)),
        ],
    );
    size
}

/// Write `contents` to the file `name` in `dir` and return its path.
pub fn write_file(dir: impl AsRef<Path>, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.as_ref().join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Bytes the filesystem allocated for `p` (less than its length when it
/// has holes).
pub fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// The permission bits (`mode & 0o777`) of `p`, following symlinks.
pub fn perm_bits(p: impl AsRef<Path>) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

/// Whether two files have the same contents.
pub fn same_contents(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Assert two byte strings are equal, reporting the first difference
/// (not the bytes: they are whole images).
pub fn assert_same(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Byte range [start, start+len) of a file.
pub fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    let mut f = File::open(path).expect("open");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).expect("read range");
    v
}

/// Copy `len` bytes at `offset` of `image` into a new file `dest`.
pub fn extract(image: &Path, offset: u64, len: u64, dest: &Path) {
    let mut f = File::open(image).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = File::create(dest).unwrap();
    std::io::copy(&mut f.take(len), &mut out).unwrap();
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails when `marker` is in what `out` printed (stdout or stderr).
pub fn assert_not_printed(out: &Output, marker: &[u8], what: &str) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !contains(stream, marker),
            "{what}: the planted value was printed:\n{}",
            String::from_utf8_lossy(stream)
        );
    }
}

/// Whether a file contains `needle` (streamed, overlap-safe, so large
/// sparse images are fine).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut buf = vec![0u8; 4 << 20];
    let keep = needle.len().saturating_sub(1);
    let mut filled = 0;
    loop {
        let n = match f.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let end = filled + n;
        if contains(&buf[..end], needle) {
            return true;
        }
        let tail = end.min(keep);
        buf.copy_within(end - tail..end, 0);
        filled = tail;
    }
}

/// Every regular file under `dir` (not following symlinks) that contains
/// `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && file_contains(&e.path(), needle) {
                hits.push(e.path());
            }
        }
    }
    hits
}

/// A small deterministic generator (xorshift) for randomised tests; the
/// tests name its seed in their failure messages.
pub struct Rng(pub u64);

impl Rng {
    /// A seed from the clock (odd, so never zero).
    pub fn time_seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_needs_a_non_empty_needle() {
        assert!(contains(b"abcMARKdef", b"MARK"));
        assert!(!contains(b"abcMARdef", b"MARK"));
        assert!(!contains(b"abc", b""));
    }

    #[test]
    fn file_contains_finds_a_needle_across_read_chunks() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        // The needle straddles the 4 MiB read buffer's end.
        let at = (4 << 20) - 3;
        sparse_file(&p, 8 << 20, &[(at, b"NEEDLE".to_vec())]);
        assert!(file_contains(&p, b"NEEDLE"));
        assert!(!file_contains(&p, b"NEEDLES"));
        assert_eq!(files_containing(&dir, b"NEEDLE"), vec![p.clone()]);
        assert_eq!(read_range(&p, at, 6), b"NEEDLE");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
