//! Writing a stream into a regular file sparsely: all-zero blocks are
//! skipped (left as holes), so a mostly empty disk image costs only its
//! data on the disk.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Granularity of the all-zero test (the usual filesystem block).
pub const ZERO_BLOCK: usize = 4096;

/// Whether every byte is zero.
pub fn is_zero(b: &[u8]) -> bool {
    // 16 bytes at a time: far faster than byte by byte.
    let mut chunks = b.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

/// Write `data` at byte `offset` of `dst` in maximal runs of non-zero
/// [`ZERO_BLOCK`] blocks; all-zero blocks are not written (in a fresh
/// sparse file they stay holes). Returns the bytes written; an error comes
/// with the offset of the write that failed.
pub fn write_nonzero_at(dst: &File, data: &[u8], offset: u64) -> Result<u64, (u64, io::Error)> {
    use std::os::unix::fs::FileExt;
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let mut flush = |from: usize, to: usize| {
        let at = offset + from as u64;
        dst.write_all_at(&data[from..to], at).map_err(|e| (at, e))?;
        written += (to - from) as u64;
        Ok::<(), (u64, io::Error)>(())
    };
    for (k, block) in data.chunks(ZERO_BLOCK).enumerate() {
        let at = k * ZERO_BLOCK;
        match (is_zero(block), run) {
            (false, None) => run = Some(at),
            (true, Some(s)) => {
                flush(s, at)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        flush(s, data.len())?;
    }
    Ok(written)
}

/// Why [`copy_nonzero`] stopped.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// The input holds more than the `limit` it was given.
    TooLong {
        limit: u64,
    },
}

/// Copy all of `src` into `dst` from byte `offset` on, at most `limit`
/// bytes, leaving all-zero blocks unwritten (holes in a fresh sparse file).
/// Returns the bytes copied.
pub fn copy_nonzero(
    src: &mut dyn Read,
    dst: &File,
    offset: u64,
    limit: u64,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let filled = super::read_full(src, &mut buf).map_err(CopyError::Read)?;
        if pos.saturating_add(filled as u64) > limit {
            return Err(CopyError::TooLong { limit });
        }
        write_nonzero_at(dst, &buf[..filled], offset + pos)
            .map_err(|(_, e)| CopyError::Write(e))?;
        pos += filled as u64;
        if filled < buf.len() {
            return Ok(pos);
        }
    }
}

/// Copy all of `src` into a new sparse file at `dst` (a trailing hole
/// counts in its length), synced; returns its length.
pub fn copy_to_sparse_file(src: &mut dyn Read, dst: &Path) -> io::Result<u64> {
    let file = File::create(dst)?;
    let len = copy_nonzero(src, &file, 0, u64::MAX).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => e,
        CopyError::TooLong { .. } => io::Error::from(io::ErrorKind::FileTooLarge),
    })?;
    file.set_len(len)?;
    file.sync_all()?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_bytes_survive() {
        let mut data = vec![0u8; 8 << 20];
        data[5] = 1;
        data[(3 << 20) + 17] = 2;
        let last = data.len() - 1;
        data[last - 5000] = 3;
        let (_dir, dst) = testkit::scratch("x.img");
        let n = copy_to_sparse_file(&mut &data[..], &dst).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        let blocks = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(blocks <= 4 * ZERO_BLOCK as u64, "{blocks} bytes allocated");
        // A wholly zero stream is one hole of the right length.
        let n = copy_to_sparse_file(&mut &vec![0u8; 3 << 20][..], &dst).unwrap();
        assert_eq!(
            (n, std::fs::metadata(&dst).unwrap().len()),
            (3 << 20, 3 << 20)
        );
        assert!(
            is_zero(&[0; 33]) && !is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
    }
}
