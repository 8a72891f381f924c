//! The clear header of a bundle: no names, no paths, nothing secret.

use super::error::BundleError;
use super::key::KeyId;

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"SEALIMG\x1a";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Flag: the ciphertext is an age file for a device recipient instead of
/// XChaCha20-Poly1305 under an image key.
pub const FLAG_AGE_RECIPIENT: u16 = 0x0001;
const KNOWN_FLAGS: u16 = FLAG_AGE_RECIPIENT;

/// Header length in bytes.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 16 + 8 + 8 + 24 + 8;

/// The parsed clear header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub flags: u16,
    /// Random per bundle; used with `created_at` to refuse replays.
    pub bundle_id: [u8; 16],
    /// Unix seconds at sealing.
    pub created_at: u64,
    /// Short hash of the image key (or of the recipient) the bundle is sealed to.
    pub key_id: KeyId,
    pub nonce: [u8; 24],
    pub ciphertext_len: u64,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer {
            buf: &mut out,
            pos: 0,
        };
        w.put(&MAGIC);
        w.put(&self.version.to_le_bytes());
        w.put(&self.flags.to_le_bytes());
        w.put(&self.bundle_id);
        w.put(&self.created_at.to_le_bytes());
        w.put(&self.key_id.0);
        w.put(&self.nonce);
        w.put(&self.ciphertext_len.to_le_bytes());
        out
    }

    /// Parse and check the header of a complete bundle file of `file_len` bytes.
    pub fn parse(bytes: &[u8]) -> Result<Header, BundleError> {
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::TruncatedHeader {
                len: bytes.len() as u64,
                header: HEADER_LEN,
            });
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take::<8>() != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_le_bytes(r.take());
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let flags = u16::from_le_bytes(r.take());
        if flags & !KNOWN_FLAGS != 0 {
            return Err(BundleError::UnsupportedFlags { found: flags });
        }
        let header = Header {
            version,
            flags,
            bundle_id: r.take(),
            created_at: u64::from_le_bytes(r.take()),
            key_id: KeyId(r.take()),
            nonce: r.take(),
            ciphertext_len: u64::from_le_bytes(r.take()),
        };
        let actual = (bytes.len() - HEADER_LEN) as u64;
        if header.ciphertext_len > actual {
            return Err(BundleError::TruncatedCiphertext {
                declared: header.ciphertext_len,
                actual,
            });
        }
        if header.ciphertext_len < actual {
            return Err(BundleError::TrailingData {
                extra: actual - header.ciphertext_len,
            });
        }
        Ok(header)
    }

    pub fn is_age_recipient(&self) -> bool {
        self.flags & FLAG_AGE_RECIPIENT != 0
    }

    pub fn bundle_id_hex(&self) -> String {
        super::key::hex(&self.bundle_id)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Only called after the length check against HEADER_LEN.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
}
