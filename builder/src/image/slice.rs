//! A `Read + Write + Seek` window over part of a file, for `fatfs`.
//!
//! Writes of all-zero blocks over a region that already reads as zeros are
//! skipped, so formatting a FAT filesystem into a fresh sparse image (which
//! zeroes whole FATs) allocates no disk space for those zeros, and writing
//! into an existing image changes nothing it does not have to.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Block size for the zero-skipping logic (aligned to absolute file offsets).
const BLOCK: u64 = 4096;

/// A window `[start, start + len)` of a file.
#[derive(Debug)]
pub struct PartitionSlice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl PartitionSlice {
    /// A window of `len` bytes at byte `start` of `file`. The file must be
    /// open for reading (writes read back all-zero blocks first) and, to be
    /// written to, for writing.
    pub fn new(file: File, start: u64, len: u64) -> io::Result<Self> {
        if start.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "partition window overflows",
            ));
        }
        Ok(PartitionSlice {
            file,
            start,
            len,
            pos: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Give the file back.
    pub fn into_inner(self) -> File {
        self.file
    }

    /// Write `data` at absolute file offset `abs`, skipping all-zero blocks
    /// whose current contents are already zero.
    fn write_skipping_zeros(&self, abs: u64, data: &[u8]) -> io::Result<()> {
        let mut pending: Option<(u64, usize)> = None; // (abs offset, start index in data)
        let mut i = 0usize;
        let mut scratch = [0u8; BLOCK as usize];
        while i < data.len() {
            let off = abs + i as u64;
            let room = (BLOCK - off % BLOCK) as usize;
            let n = room.min(data.len() - i);
            let chunk = &data[i..i + n];
            let skip = if is_zero(chunk) {
                let existing = &mut scratch[..n];
                let got = read_at_most(&self.file, existing, off)?;
                is_zero(&existing[..got])
            } else {
                false
            };
            match (skip, pending) {
                (true, Some((p_abs, p_i))) => {
                    self.file.write_all_at(&data[p_i..i], p_abs)?;
                    pending = None;
                }
                (false, None) => pending = Some((off, i)),
                _ => {}
            }
            i += n;
        }
        if let Some((p_abs, p_i)) = pending {
            self.file.write_all_at(&data[p_i..], p_abs)?;
        }
        Ok(())
    }
}

/// Read up to `buf.len()` bytes at `off`, stopping early only at end of file.
fn read_at_most(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

impl Read for PartitionSlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartitionSlice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        self.write_skipping_zeros(self.start + self.pos, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionSlice {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn window_reads_writes_and_seeks_within_bounds() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 100]).unwrap();
        let mut s = PartitionSlice::new(f.try_clone().unwrap(), 10, 20).unwrap();
        assert_eq!(s.seek(SeekFrom::End(0)).unwrap(), 20);
        assert_eq!(s.seek(SeekFrom::Start(0)).unwrap(), 0);
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, vec![7u8; 20]);
        s.seek(SeekFrom::Start(18)).unwrap();
        assert_eq!(s.write(&[1, 2, 3, 4]).unwrap(), 2);
        assert!(s.write(&[5]).is_err());
        assert!(s.seek(SeekFrom::Current(-100)).is_err());
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[28..31], &[1, 2, 7]);
        // Zero writes over non-zero data do happen.
        s.seek(SeekFrom::Start(0)).unwrap();
        s.write_all(&[0u8; 20]).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        all.clear();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[9..31], &[&[7u8][..], &[0u8; 20], &[7u8]].concat()[..]);
    }

    #[test]
    fn zero_writes_into_holes_allocate_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        let mut s = PartitionSlice::new(f, 1 << 20, 32 << 20).unwrap();
        // 16 MiB of zeros in odd-sized pieces, then one non-zero byte.
        let zeros = vec![0u8; 777];
        let mut written = 0;
        while written < 16 << 20 {
            s.write_all(&zeros).unwrap();
            written += zeros.len();
        }
        s.write_all(&[1]).unwrap();
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(
            blocks * 512 <= 64 * 1024,
            "{} bytes allocated",
            blocks * 512
        );
        let f = s.into_inner();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, (1 << 20) + written as u64).unwrap();
        assert_eq!(b, [1]);
    }
}
