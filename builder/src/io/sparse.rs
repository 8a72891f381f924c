//! Sparse files: where the data is (`SEEK_DATA`/`SEEK_HOLE`) and a copy
//! that keeps the holes.
//!
//! Images are mostly holes (free space between and inside partitions), so
//! every output that reads a whole image ([`crate::output::zst`], [`crate::output::bmap`])
//! asks the kernel where the data is instead of reading gigabytes of zeros,
//! and [`sparse_copy`] (used by flash and fleet builds) copies only the data.

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The data segments of `file` as `[start, end)` byte ranges, in order,
/// disjoint and not adjacent, clamped to `size` (the file's length).
///
/// Holes are whatever `lseek(SEEK_DATA/SEEK_HOLE)` reports; a filesystem
/// without hole support reports one segment for the whole file, which is
/// still correct (only slower for the callers).
pub fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut segs: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => break,
            // SEEK_DATA unsupported: treat the rest as data.
            Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                segs.push((pos, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            // Cannot happen with a sane kernel; never loop forever.
            return Err(io::Error::other(format!(
                "lseek(SEEK_HOLE, {start}) returned {end}"
            )));
        }
        match segs.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => segs.push((start, end)),
        }
        pos = end;
    }
    Ok(segs)
}

/// Read exactly `buf.len()` bytes at `offset`; a file that ends early is an
/// error (it changed while we read it).
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ended before byte {}: did it change while being read?",
                    offset + buf.len() as u64
                ),
            )
        } else {
            e
        }
    })
}

/// Copy the regular file `src` to `dst` (created or truncated), keeping its
/// holes: the destination gets the same length, and only the source's data
/// segments are copied (with `copy_file_range`, which lets the kernel copy
/// in place or share extents on filesystems that can; plain reads and
/// writes otherwise). Zeros that the source stores as data are copied as
/// data. The destination's permission bits are the source's (minus the
/// umask). Nothing is fsynced.
///
/// Returns the number of data bytes copied (the rest are holes). `dst` must
/// be a regular file path, not a block device, and not `src` itself.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let input = File::open(src)?;
    let meta = input.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", src.display()),
        ));
    }
    if let Ok(d) = std::fs::metadata(dst) {
        if d.dev() == meta.dev() && d.ino() == meta.ino() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} and {} are the same file", src.display(), dst.display()),
            ));
        }
        if !d.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} exists and is not a regular file", dst.display()),
            ));
        }
    }
    let size = meta.len();
    let segs = data_segments(&input, size)?;
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.permissions().mode() & 0o777)
        .open(dst)?;
    out.set_len(size)?;
    let mut kernel_copy = true;
    let mut copied = 0u64;
    for (start, end) in segs {
        copy_range(&input, &out, start, end, &mut kernel_copy)?;
        copied += end - start;
    }
    Ok(copied)
}

/// Copy bytes `[start, end)` of `input` to the same offsets of `out`.
fn copy_range(
    input: &File,
    out: &File,
    start: u64,
    end: u64,
    kernel_copy: &mut bool,
) -> io::Result<()> {
    let mut pos = start;
    while *kernel_copy && pos < end {
        let (mut off_in, mut off_out) = (pos, pos);
        let len = (end - pos).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(input, Some(&mut off_in), out, Some(&mut off_out), len) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the source ended before byte {end}: did it change while being copied?"
                    ),
                ))
            }
            Ok(n) => pos += n as u64,
            Err(Errno::INTR) => {}
            // Not possible between these files or on this kernel: copy by hand.
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL | Errno::PERM) => {
                *kernel_copy = false
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut buf = vec![0u8; (end - pos).min(1 << 20) as usize];
    while pos < end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        read_exact_at(input, &mut buf[..n], pos)?;
        out.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use testkit::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn data_segments_find_the_written_blocks() {
        let (_dir, p) = testkit::scratch("f");
        sparse_file(
            &p,
            16 * MIB,
            &[(4096, vec![1; 4096]), (8 * MIB, vec![2; 10])],
        );
        let f = File::open(&p).unwrap();
        let segs = data_segments(&f, 16 * MIB).unwrap();
        // Filesystem blocks are at most 64 KiB: each segment covers its write
        // and stays within a block of it.
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert!(
            segs[0].0 <= 4096 && segs[0].1 >= 8192 && segs[0].1 <= 8192 + 65536,
            "{segs:?}"
        );
        assert!(
            segs[1].0 <= 8 * MIB && segs[1].0 + 65536 > 8 * MIB && segs[1].1 >= 8 * MIB + 10,
            "{segs:?}"
        );
    }

    #[test]
    fn data_segments_of_empty_and_all_hole_files() {
        let (_dir, p) = testkit::scratch("f");
        sparse_file(&p, 0, &[]);
        assert!(data_segments(&File::open(&p).unwrap(), 0)
            .unwrap()
            .is_empty());
        sparse_file(&p, 8 * MIB, &[]);
        assert!(data_segments(&File::open(&p).unwrap(), 8 * MIB)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn sparse_copy_is_identical_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
        let size = image_like(&src);
        // An existing, longer destination is truncated.
        std::fs::write(&dst, vec![7u8; (size + 12345) as usize]).unwrap();
        let copied = sparse_copy(&src, &dst).unwrap();
        assert!(same_contents(&src, &dst));
        let (sm, dm) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&dst).unwrap(),
        );
        assert_eq!(dm.len(), size);
        let src_segs = data_segments(&File::open(&src).unwrap(), size).unwrap();
        let dst_segs = data_segments(&File::open(&dst).unwrap(), size).unwrap();
        assert_eq!(copied, src_segs.iter().map(|(a, b)| b - a).sum::<u64>());
        assert_eq!(src_segs, dst_segs, "the copy has the source's holes");
        assert!(
            dm.blocks() <= sm.blocks() + 8,
            "copy allocates {} blocks, source {}",
            dm.blocks(),
            sm.blocks()
        );
        assert!(dm.blocks() * 512 < size / 4, "the copy is sparse");
        assert_eq!(
            dm.mode() & 0o777 & !sm.mode(),
            0,
            "no permission beyond the source's"
        );
    }

    #[test]
    fn sparse_copy_refuses_itself_and_non_files() {
        let (dir, src) = testkit::scratch("src.img");
        sparse_file(&src, MIB, &[(0, vec![1; 10])]);
        assert!(sparse_copy(&src, &src).is_err());
        assert_eq!(
            std::fs::read(&src).unwrap()[..10],
            [1; 10],
            "source untouched"
        );
        assert!(sparse_copy(dir.path(), &dir.path().join("x")).is_err());
        assert!(sparse_copy(&src, dir.path()).is_err());
    }

    #[test]
    fn sparse_copy_matches_cp() {
        let Some(cp) = tool("cp") else { return };
        let dir = tempfile::tempdir().unwrap();
        let (src, ours, theirs) = (
            dir.path().join("s"),
            dir.path().join("o"),
            dir.path().join("t"),
        );
        image_like(&src);
        sparse_copy(&src, &ours).unwrap();
        run_ok(&cp, &["--sparse=always", s(&src), s(&theirs)]);
        assert!(same_contents(&ours, &theirs));
    }
}
