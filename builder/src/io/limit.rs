//! Bounded reads, in one place: a stream read to its end but never past a
//! limit (more is refused, never truncated; what was read is zeroized, so
//! secrets may pass through), and a regular file read so (symbolic links
//! followed, a FIFO or a device refused at once, never blocked on).

use std::io::{self, Read};
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use super::secret::SecretVec;

/// Why [`read_bounded`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    /// More than the limit: nothing is returned (what was read is zeroed).
    #[error("more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(io::Error),
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

/// Why [`read_file`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("no such file")]
    NotFound,
    /// A FIFO, a device, a directory, a socket.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than {limit} bytes, the limit of a secret")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(io::Error),
}

/// Read a regular file (symbolic links followed) of at most `limit` bytes,
/// refusing anything else at once (opened non-blocking, checked on the
/// open descriptor), reading at most `limit + 1` bytes.
pub fn read_file(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, BoundedError> {
    use rustix::fs::{Mode, OFlags};
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Err(BoundedError::NotFound),
        Err(e) => return Err(BoundedError::Io(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| BoundedError::Io(e.into()))?;
    if let Some(what) = sealed_bundle::io::not_regular(st.st_mode) {
        return Err(BoundedError::NotRegular(what));
    }
    if st.st_size as u64 > limit {
        return Err(BoundedError::TooLarge { limit });
    }
    read_bounded(&mut std::fs::File::from(fd), limit, st.st_size as u64).map_err(|e| match e {
        BoundedReadError::TooLarge { limit } => BoundedError::TooLarge { limit },
        BoundedReadError::Io(e) => BoundedError::Io(e),
    })
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
    }

    #[test]
    fn files_are_regular_and_within_the_limit() {
        let (dir, path) = testkit::scratch("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(&read_file(&path, 5).unwrap()[..], b"12345");
        assert!(matches!(
            read_file(&path, 4),
            Err(BoundedError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read_file(&dir.path().join("missing"), 4),
            Err(BoundedError::NotFound)
        ));
        assert!(matches!(
            read_file(dir.path(), 4),
            Err(BoundedError::NotRegular(_))
        ));
    }
}
