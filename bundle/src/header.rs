//! The clear header of a bundle: no names, no paths, nothing secret.

use crate::error::BundleError;
use crate::key::KeyId;
use crate::sign::{Signer, SIGNATURE_LEN, SIGNER_LEN};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"SEALIMG\x1a";
/// The format version this build writes: version 3, signed (the header
/// names the signer, an Ed25519 signature follows the ciphertext).
pub const FORMAT_VERSION: u16 = 3;
/// The unsigned format before it (sub-second sealing time and sequence
/// number), still read while a device pins no signer, and written by
/// `--unsigned` for devices whose agent reads nothing newer.
pub const UNSIGNED_VERSION: u16 = 2;
/// Flag: the ciphertext is an age file for a device recipient instead of
/// XChaCha20-Poly1305 under an image key.
pub const FLAG_AGE_RECIPIENT: u16 = 0x0001;
const KNOWN_FLAGS: u16 = FLAG_AGE_RECIPIENT;

/// Header length of format 2 in bytes.
pub const HEADER_LEN_V2: usize = 8 + 2 + 2 + 16 + 8 + 4 + 8 + 8 + 24 + 8;
/// Header length of format 3: format 2's fields, then the signer's key.
pub const HEADER_LEN_V3: usize = HEADER_LEN_V2 + SIGNER_LEN;

/// When and in which order a bundle was sealed. Bundles are ordered by
/// `(sequence, seconds, nanos)`: the real clock at sealing (never
/// `SOURCE_DATE_EPOCH`), or a sequence number the user sets, which wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// User-chosen sequence number (0 when not set).
    pub sequence: u64,
    /// Unix seconds at sealing.
    pub seconds: u64,
    /// Nanoseconds within the second (0..1e9).
    pub nanos: u32,
}

impl Stamp {
    /// The real clock now, sequence 0.
    pub fn now() -> Stamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Stamp {
            sequence: 0,
            seconds: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// A stamp at whole seconds (tests, and stores written before version 2).
    pub fn at(seconds: u64) -> Stamp {
        Stamp {
            sequence: 0,
            seconds,
            nanos: 0,
        }
    }

    pub fn with_sequence(self, sequence: u64) -> Stamp {
        Stamp { sequence, ..self }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:09}", self.seconds, self.nanos)?;
        if self.sequence != 0 {
            write!(f, " (sequence {})", self.sequence)?;
        }
        Ok(())
    }
}

/// The parsed clear header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// [`UNSIGNED_VERSION`] or [`FORMAT_VERSION`] (then `signer` is set).
    pub version: u16,
    pub flags: u16,
    /// Random per bundle; used with `created_at` to refuse replays.
    pub bundle_id: [u8; 16],
    /// Unix seconds at sealing (the real clock, never `SOURCE_DATE_EPOCH`).
    pub created_at: u64,
    /// Nanoseconds within `created_at`.
    pub created_nanos: u32,
    /// User-chosen sequence number; 0 when not set.
    pub sequence: u64,
    /// Short hash of the image key (or of the recipient) the bundle is sealed to.
    pub key_id: KeyId,
    pub nonce: [u8; 24],
    pub ciphertext_len: u64,
    /// Who signed it (format 3): the signature after the ciphertext must
    /// verify with this key, and a device accepts it only if it pins it.
    pub signer: Option<Signer>,
}

impl Header {
    /// This header's length in bytes (88 for format 2, 120 for format 3).
    pub fn header_len(&self) -> usize {
        if self.version == FORMAT_VERSION {
            HEADER_LEN_V3
        } else {
            HEADER_LEN_V2
        }
    }

    /// Whether the bundle is signed (format 3).
    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.header_len()];
        let mut w = Writer {
            buf: &mut out,
            pos: 0,
        };
        w.put(&MAGIC);
        w.put(&self.version.to_le_bytes());
        w.put(&self.flags.to_le_bytes());
        w.put(&self.bundle_id);
        w.put(&self.created_at.to_le_bytes());
        w.put(&self.created_nanos.to_le_bytes());
        w.put(&self.sequence.to_le_bytes());
        w.put(&self.key_id.0);
        w.put(&self.nonce);
        w.put(&self.ciphertext_len.to_le_bytes());
        if self.version == FORMAT_VERSION {
            w.put(&self.signer.map(Signer::to_bytes).unwrap_or_default());
        }
        out
    }

    /// Parse and check the header of a complete bundle file: its lengths
    /// (header, declared ciphertext, and for format 3 the signature) must
    /// add up to the file's.
    pub fn parse(bytes: &[u8]) -> Result<Header, BundleError> {
        let truncated = |header| BundleError::TruncatedHeader {
            len: bytes.len() as u64,
            header,
        };
        if bytes.len() < HEADER_LEN_V2 {
            return Err(truncated(HEADER_LEN_V2));
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take::<8>() != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_le_bytes(r.take());
        if version != FORMAT_VERSION && version != UNSIGNED_VERSION {
            return Err(BundleError::UnsupportedVersion { found: version });
        }
        let header_len = if version == FORMAT_VERSION {
            HEADER_LEN_V3
        } else {
            HEADER_LEN_V2
        };
        if bytes.len() < header_len {
            return Err(truncated(header_len));
        }
        let flags = u16::from_le_bytes(r.take());
        if flags & !KNOWN_FLAGS != 0 {
            return Err(BundleError::UnsupportedFlags { found: flags });
        }
        let mut header = Header {
            version,
            flags,
            bundle_id: r.take(),
            created_at: u64::from_le_bytes(r.take()),
            created_nanos: u32::from_le_bytes(r.take()),
            sequence: u64::from_le_bytes(r.take()),
            key_id: KeyId(r.take()),
            nonce: r.take(),
            ciphertext_len: u64::from_le_bytes(r.take()),
            signer: None,
        };
        let signature_len = if version == FORMAT_VERSION {
            header.signer = Some(Signer::from_bytes(r.take()));
            SIGNATURE_LEN as u64
        } else {
            0
        };
        if header.created_nanos >= 1_000_000_000 {
            return Err(BundleError::BadStamp);
        }
        let actual = (bytes.len() - header_len) as u64;
        let declared = header.ciphertext_len;
        if declared > actual {
            return Err(BundleError::TruncatedCiphertext { declared, actual });
        }
        let rest = actual - declared;
        if rest < signature_len {
            return Err(BundleError::TruncatedSignature { found: rest });
        }
        if rest > signature_len {
            return Err(BundleError::TrailingData {
                extra: rest - signature_len,
            });
        }
        Ok(header)
    }

    /// The ciphertext of the complete bundle `bytes` this header was parsed from.
    pub fn ciphertext<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let start = self.header_len().min(bytes.len());
        let end = start
            .saturating_add(usize::try_from(self.ciphertext_len).unwrap_or(usize::MAX))
            .min(bytes.len());
        &bytes[start..end]
    }

    /// The bundle's place in the order of bundles.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            sequence: self.sequence,
            seconds: self.created_at,
            nanos: self.created_nanos,
        }
    }

    pub fn is_age_recipient(&self) -> bool {
        self.flags & FLAG_AGE_RECIPIENT != 0
    }

    pub fn bundle_id_hex(&self) -> String {
        hex::encode(self.bundle_id)
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
    /// Only called after the length check against the header's length.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
}
