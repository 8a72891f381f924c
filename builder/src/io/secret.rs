//! Buffers for plaintext that never leave a copy behind: a vector that
//! grows by copying into a new zeroizing allocation (a plain `Vec` frees
//! its old allocation as it is, bytes and all), a bounded read into one,
//! and a `Write` over one (for archives built in memory).

use std::io::{self, Read, Write};
use zeroize::{Zeroize, Zeroizing};

/// A byte vector for secrets: every allocation it leaves is zeroed first.
#[derive(Default)]
pub struct SecretVec {
    buf: Zeroizing<Vec<u8>>,
}

impl SecretVec {
    /// An empty vector with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> SecretVec {
        SecretVec {
            buf: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    /// Make room for `more` bytes, moving into a larger zeroizing
    /// allocation (the old one is zeroed when dropped).
    fn reserve(&mut self, more: usize) {
        let need = self.buf.len().saturating_add(more);
        if need <= self.buf.capacity() {
            return;
        }
        let capacity = need.max(self.buf.capacity().saturating_mul(2)).max(64);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
        grown.extend_from_slice(&self.buf);
        self.buf = grown;
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes, still zeroized on drop.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

impl std::ops::Deref for SecretVec {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl Write for SecretVec {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why [`read_bounded`] failed.
#[derive(Debug)]
pub enum BoundedReadError {
    /// More than the limit: nothing is returned (what was read is zeroed).
    TooLarge {
        limit: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for BoundedReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundedReadError::TooLarge { limit } => write!(f, "more than {limit} bytes"),
            BoundedReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Read `r` to its end, at most `limit` bytes, into a zeroizing buffer
/// (`size_hint`: the expected size, to allocate once). One byte more than
/// the limit is a [`BoundedReadError::TooLarge`].
pub fn read_bounded(
    r: &mut dyn Read,
    limit: u64,
    size_hint: u64,
) -> Result<Zeroizing<Vec<u8>>, BoundedReadError> {
    let mut out = SecretVec::with_capacity(size_hint.min(limit).saturating_add(1) as usize);
    let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BoundedReadError::Io(e)),
        };
        if out.len() as u64 + n as u64 > limit {
            chunk.zeroize();
            return Err(BoundedReadError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_to_the_end_within_the_limit_and_refuses_beyond() {
        let data = vec![7u8; 100_000];
        let got = read_bounded(&mut &data[..], 100_000, 10).unwrap();
        assert_eq!(&got[..], &data[..]);
        assert!(matches!(
            read_bounded(&mut &data[..], 99_999, 0),
            Err(BoundedReadError::TooLarge { limit: 99_999 })
        ));
        let mut v = SecretVec::default();
        for _ in 0..1000 {
            v.write_all(b"abc").unwrap();
        }
        assert_eq!(v.len(), 3000);
        assert!(v.iter().all(|b| b"abc".contains(b)));
    }
}
