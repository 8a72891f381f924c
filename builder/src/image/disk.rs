//! The disk a partition table is read from: any `Read + Seek` handle (an
//! image file, a block device, whose file length reads as 0) seen as its
//! first `len` bytes, read at offsets and never written.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The first `len` bytes of a `Read + Seek` handle. It is also the device
/// handed to the `gpt` crate (which wants `Write`: writes are refused).
pub struct DiskView<D> {
    inner: D,
    len: u64,
    pos: u64,
}

impl<D: Read + Seek> DiskView<D> {
    /// The first `len` bytes of `inner` (a device larger than the image
    /// written onto it is read as the image).
    pub fn new(inner: D, len: u64) -> Self {
        DiskView { inner, len, pos: 0 }
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fill `buf` from byte `at`; an error if that runs past the end.
    pub fn read_exact_at(&mut self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.seek(SeekFrom::Start(at))?;
        self.read_exact(buf)
    }
}

impl<D: Read + Seek> Read for DiskView<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Read + Seek> Seek for DiskView<D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the disk",
            )
        })?;
        Ok(self.pos)
    }
}

impl<D> Write for DiskView<D> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the disk is read, not written, here",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D> fmt::Debug for DiskView<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskView({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn a_view_ends_at_its_length() {
        let mut v = DiskView::new(Cursor::new((0u8..100).collect::<Vec<u8>>()), 10);
        assert_eq!(v.seek(SeekFrom::End(-2)).unwrap(), 8);
        let mut all = Vec::new();
        v.read_to_end(&mut all).unwrap();
        assert_eq!(all, [8, 9]);
        let mut b = [0u8; 3];
        v.read_exact_at(&mut b, 2).unwrap();
        assert_eq!(b, [2, 3, 4]);
        assert!(
            matches!(v.read_exact_at(&mut b, 8), Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        );
        assert!(
            matches!(v.seek(SeekFrom::Current(-100)), Err(e) if e.kind() == std::io::ErrorKind::InvalidInput)
        );
        assert!(
            matches!(v.write(b"x"), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
        );
    }
}
