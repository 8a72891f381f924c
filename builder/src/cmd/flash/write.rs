//! Streaming an image (plain, zstd or xz) onto a target, and reading it back.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use crate::io::compressed::{self, Format};
use crate::io::sparse_write::write_nonzero_at;
use crate::output::bmap::Bmap;

/// Read and write granularity.
const CHUNK: usize = 1 << 20;

/// The image as a forward-only byte stream.
pub(crate) enum Source {
    Plain {
        file: File,
        len: u64,
        pos: u64,
    },
    /// A compressed image, decoded on the fly.
    Stream {
        dec: Box<dyn Read + Send>,
        pos: u64,
    },
}

impl Source {
    pub(crate) fn open(path: &Path, format: Format) -> io::Result<Source> {
        let file = File::open(path)?;
        if format.is_compressed() {
            Ok(Source::Stream {
                dec: compressed::decoder(file, format)?,
                pos: 0,
            })
        } else {
            let len = file.metadata()?.len();
            Ok(Source::Plain { file, len, pos: 0 })
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        match self {
            Source::Plain { pos, .. } | Source::Stream { pos, .. } => *pos,
        }
    }

    /// Fill `buf`; fewer bytes only at the end of the image.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (filled, pos) = match self {
            Source::Plain { file, pos, .. } => (crate::io::read_full(file, buf)?, pos),
            Source::Stream { dec, pos } => (crate::io::read_full(dec.as_mut(), buf)?, pos),
        };
        *pos += filled as u64;
        Ok(filled)
    }

    /// Move forward `n` bytes (seeking a plain file, decompressing and
    /// discarding a zstd stream). Returns how far it got (less than `n` only
    /// at the end of the image).
    fn skip(&mut self, n: u64, scratch: &mut [u8]) -> io::Result<u64> {
        match self {
            Source::Plain { file, len, pos } => {
                let to = pos.saturating_add(n).min(*len).max(*pos);
                file.seek(SeekFrom::Start(to))?;
                let moved = to - *pos;
                *pos = to;
                Ok(moved)
            }
            Source::Stream { .. } => {
                let mut left = n;
                while left > 0 {
                    let want = left.min(scratch.len() as u64) as usize;
                    let got = self.read_full(&mut scratch[..want])?;
                    left -= got as u64;
                    if got < want {
                        break;
                    }
                }
                Ok(n - left)
            }
        }
    }
}

/// Decompress a compressed image once to learn its size.
pub(crate) fn measure_stream(path: &Path, format: Format, bar: &ProgressBar) -> io::Result<u64> {
    let mut src = Source::open(path, format)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = src.read_full(&mut buf)?;
        bar.inc(n as u64);
        if n < buf.len() {
            return Ok(src.pos());
        }
    }
}

/// Content size declared by the first zstd frame header, when present.
pub(crate) fn zstd_declared_size(path: &Path) -> Option<u64> {
    let mut head = [0u8; 18];
    let mut f = File::open(path).ok()?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    zstd::zstd_safe::get_frame_content_size(&head[..got])
        .ok()
        .flatten()
}

/// What was written.
#[derive(Debug, Clone)]
pub(crate) struct Copied {
    /// Size of the image (the whole stream).
    pub image_size: u64,
    /// Bytes actually written to the target.
    pub bytes_written: u64,
    /// Bytes covered by the map (the whole image without a bmap).
    pub mapped_bytes: u64,
    /// SHA-256 over the mapped bytes in order (the whole image without a bmap).
    pub sha256_mapped: [u8; 32],
    /// The byte ranges `[start, end)` that must read back as written, each
    /// with the SHA-256 of its bytes.
    pub ranges: Vec<(u64, u64, [u8; 32])>,
}

/// Names for error messages.
pub(crate) struct Names<'a> {
    pub image: &'a Path,
    pub target: &'a Path,
}

impl Names<'_> {
    fn image_err(&self, offset: u64, e: io::Error) -> FlashError {
        FlashError::ImageRead {
            image: self.image.to_path_buf(),
            offset,
            cause: e,
        }
    }

    fn write_err(&self, offset: u64, e: io::Error) -> FlashError {
        FlashError::TargetIo {
            target: self.target.to_path_buf(),
            what: format!("cannot write at byte {offset}"),
            cause: e,
        }
    }

    fn length_err(&self, expected: u64, actual: String, written: bool) -> FlashError {
        FlashError::ImageLength {
            image: self.image.to_path_buf(),
            expected,
            actual,
            partially_written: written.then(|| self.target.to_path_buf()),
        }
    }
}

/// Write the mapped ranges of `bmap`, checking each range's checksum, and
/// check that the image is exactly `bmap.image_size` bytes long.
pub(crate) fn copy_mapped(
    src: &mut Source,
    dst: &File,
    bmap: &Bmap,
    names: &Names<'_>,
    bar: &ProgressBar,
) -> Result<Copied, FlashError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = Sha256::new();
    let mut ranges = Vec::with_capacity(bmap.ranges.len());
    let mut written = 0u64;
    for r in &bmap.ranges {
        let (start, end) = bmap.byte_range(r);
        let gap = start - src.pos();
        let moved = src
            .skip(gap, &mut buf)
            .map_err(|e| names.image_err(src.pos(), e))?;
        if moved < gap {
            return Err(names.length_err(
                bmap.image_size,
                format!("{} bytes", src.pos()),
                written > 0,
            ));
        }
        let mut h = Sha256::new();
        let mut at = start;
        while at < end {
            let want = (end - at).min(CHUNK as u64) as usize;
            let n = src
                .read_full(&mut buf[..want])
                .map_err(|e| names.image_err(at, e))?;
            if n == 0 {
                return Err(names.length_err(bmap.image_size, format!("{at} bytes"), written > 0));
            }
            let data = &buf[..n];
            dst.write_all_at(data, at)
                .map_err(|e| names.write_err(at, e))?;
            h.update(data);
            total.update(data);
            at += n as u64;
            written += n as u64;
            bar.inc(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        if let Some(expected) = r.sha256 {
            if expected != got {
                return Err(FlashError::ChecksumMismatch {
                    image: names.image.to_path_buf(),
                    blocks: if r.first == r.last {
                        format!("block {} (bytes {start}..{end})", r.first)
                    } else {
                        format!("blocks {}-{} (bytes {start}..{end})", r.first, r.last)
                    },
                    expected: hex::encode(expected),
                    actual: hex::encode(got),
                    target: names.target.to_path_buf(),
                });
            }
        }
        ranges.push((start, end, got));
    }
    // The image must be exactly as long as the bmap says.
    let rest = bmap.image_size - src.pos();
    let moved = src
        .skip(rest, &mut buf)
        .map_err(|e| names.image_err(src.pos(), e))?;
    if moved < rest {
        return Err(names.length_err(bmap.image_size, format!("{} bytes", src.pos()), written > 0));
    }
    let extra = src
        .read_full(&mut buf[..1])
        .map_err(|e| names.image_err(src.pos(), e))?;
    if extra > 0 {
        return Err(names.length_err(bmap.image_size, "longer".into(), written > 0));
    }
    Ok(Copied {
        image_size: bmap.image_size,
        bytes_written: written,
        mapped_bytes: bmap.mapped_bytes(),
        sha256_mapped: total.finalize().into(),
        ranges,
    })
}

/// Write the whole image. With `skip_zeros` (a fresh sparse file), all-zero
/// 4 KiB blocks are left as holes. With `expected_size`, refuses to write
/// past it (the image changed since it was measured).
pub(crate) fn copy_all(
    src: &mut Source,
    dst: &File,
    skip_zeros: bool,
    expected_size: Option<u64>,
    names: &Names<'_>,
    bar: &ProgressBar,
) -> Result<Copied, FlashError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = Sha256::new();
    let mut written = 0u64;
    loop {
        let pos = src.pos();
        let n = src
            .read_full(&mut buf)
            .map_err(|e| names.image_err(pos, e))?;
        if n == 0 {
            break;
        }
        if let Some(limit) = expected_size {
            if pos + n as u64 > limit {
                return Err(names.length_err(limit, "longer".into(), written > 0));
            }
        }
        let data = &buf[..n];
        total.update(data);
        if skip_zeros {
            written +=
                write_nonzero_at(dst, data, pos).map_err(|(at, e)| names.write_err(at, e))?;
        } else {
            dst.write_all_at(data, pos)
                .map_err(|e| names.write_err(pos, e))?;
            written += n as u64;
        }
        bar.inc(n as u64);
        if n < buf.len() {
            break;
        }
    }
    let size = src.pos();
    if let Some(limit) = expected_size {
        if size != limit {
            return Err(names.length_err(limit, format!("{size} bytes"), written > 0));
        }
    }
    let sum: [u8; 32] = total.finalize().into();
    Ok(Copied {
        image_size: size,
        bytes_written: written,
        mapped_bytes: size,
        sha256_mapped: sum,
        ranges: vec![(0, size, sum)],
    })
}

/// Ask the kernel to forget cached pages of `file`, so that what is read
/// next comes from the medium (best effort).
pub(crate) fn drop_cache(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Read every written range back from the target and compare checksums.
pub(crate) fn verify(
    dst: &File,
    copied: &Copied,
    target: &Path,
    bar: &ProgressBar,
) -> Result<(), FlashError> {
    drop_cache(dst);
    let mut buf = vec![0u8; CHUNK];
    let mut total = Sha256::new();
    for &(start, end, expected) in &copied.ranges {
        let mut h = Sha256::new();
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK as u64) as usize;
            dst.read_exact_at(&mut buf[..n], at)
                .map_err(|e| FlashError::TargetIo {
                    target: target.to_path_buf(),
                    what: format!("cannot read back byte {at}"),
                    cause: e,
                })?;
            h.update(&buf[..n]);
            total.update(&buf[..n]);
            at += n as u64;
            bar.inc(n as u64);
        }
        let got: [u8; 32] = h.finalize().into();
        if got != expected {
            return Err(FlashError::VerifyFailed {
                target: target.to_path_buf(),
                what: format!("bytes {start}..{end}"),
                expected: hex::encode(expected),
                actual: hex::encode(got),
            });
        }
    }
    let got: [u8; 32] = total.finalize().into();
    if got != copied.sha256_mapped {
        return Err(FlashError::VerifyFailed {
            target: target.to_path_buf(),
            what: "the mapped data as a whole".into(),
            expected: hex::encode(copied.sha256_mapped),
            actual: hex::encode(got),
        });
    }
    Ok(())
}

/// `path` shown with the path it was given as, when they differ.
pub(crate) fn shown(given: &Path, real: &Path) -> PathBuf {
    if given == real {
        real.to_path_buf()
    } else {
        PathBuf::from(format!("{} (given as {})", real.display(), given.display()))
    }
}
