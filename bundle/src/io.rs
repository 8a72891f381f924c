//! Bounded reads: the one way this crate and the device agent read a
//! file or a stream of bounded size ([`read_limited`]), and regular files
//! found anywhere (the boot partition, a configuration file) that may be
//! FIFOs, devices or links ([`read_regular_bounded`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Why a file or stream could not be read by [`read_regular_bounded`] or
/// [`read_limited`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// `size` is the file's size, or for a stream the bytes read before
    /// the limit was found exceeded.
    #[error("it is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Read `r` to its end into `out`, at most `limit` bytes in all (what `out`
/// already holds does not count). More than `limit`: the bytes read are
/// overwritten with zeros, `out` is left as it was, and the error is
/// [`ReadError::TooLarge`]. Reserve room in `out` first when it must not
/// leave copies behind as it grows (key material, secrets).
pub fn read_limited_into(r: impl Read, limit: u64, out: &mut Vec<u8>) -> Result<(), ReadError> {
    let start = out.len();
    r.take(limit.saturating_add(1)).read_to_end(out)?;
    let read = (out.len() - start) as u64;
    if read > limit {
        out[start..].iter_mut().for_each(|b| *b = 0);
        out.truncate(start);
        return Err(ReadError::TooLarge { size: read, limit });
    }
    Ok(())
}

/// Read `r` to its end, at most `limit` bytes ([`read_limited_into`]).
pub fn read_limited(r: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    read_limited_into(r, limit, &mut out)?;
    Ok(out)
}

/// What a file of mode `st_mode` is, for a message, when it is not a
/// regular file (`None` for a regular file).
pub fn not_regular(st_mode: u32) -> Option<&'static str> {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Socket => Some("a socket"),
        FileType::Symlink => Some("a symbolic link"),
        FileType::Unknown => Some("of an unknown type"),
    }
}

/// Read a regular file of at most `limit` bytes. The file is opened
/// without following a final symbolic link and without blocking, so a
/// FIFO, a device, a directory or a link is refused at once; the type is
/// checked on the open descriptor and the read is bounded, so a file that
/// grows meanwhile is still refused.
pub fn read_regular_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use rustix::fs::{Mode, OFlags};
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(ReadError::NotRegular("a symbolic link")),
        Err(e) => return Err(ReadError::Io(e.into())),
    };
    let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
    if let Some(what) = not_regular(st.st_mode) {
        return Err(ReadError::NotRegular(what));
    }
    let size = st.st_size as u64;
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    let mut out = Vec::with_capacity(size as usize);
    read_limited_into(File::from(fd), limit, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_over_the_limit_is_refused_and_wiped() {
        assert_eq!(read_limited(&b"abc"[..], 3).unwrap(), b"abc");
        let mut out = b"kept".to_vec();
        let e = read_limited_into(&b"abcd"[..], 3, &mut out).unwrap_err();
        assert!(
            matches!(e, ReadError::TooLarge { size: 4, limit: 3 }),
            "{e}"
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn bounded_read_refuses_fifos_dirs_links_and_large_files() {
        let (dir, fifo) = testkit::scratch("fifo");
        testkit::mkfifo(&fifo);
        // A FIFO with no writer would block a plain read forever.
        assert!(matches!(
            read_regular_bounded(&fifo, 10),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_regular_bounded(dir.path(), 10),
            Err(ReadError::NotRegular("a directory"))
        ));
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            read_regular_bounded(&link, 10),
            Err(ReadError::NotRegular("a symbolic link"))
        ));
        assert!(matches!(
            read_regular_bounded(&file, 9),
            Err(ReadError::TooLarge { size: 10, limit: 9 })
        ));
        assert_eq!(read_regular_bounded(&file, 10).unwrap(), b"0123456789");
        assert!(read_regular_bounded(&dir.path().join("missing"), 1)
            .unwrap_err()
            .is_not_found());
        if std::path::Path::new("/dev/zero").exists() {
            assert!(matches!(
                read_regular_bounded(std::path::Path::new("/dev/zero"), 10),
                Err(ReadError::NotRegular("a character device"))
            ));
        }
    }
}
