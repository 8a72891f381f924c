//! A `Read + Write + Seek` window over part of a file, for `fatfs`, with a
//! write-back block cache.
//!
//! `fatfs` reads and writes in sectors and FAT entries (a few bytes at a
//! time): without a cache that is one `pread`/`pwrite` per entry. Here
//! every access goes through 4 KiB blocks (aligned to absolute file
//! offsets) kept in memory; dirty blocks are written back in runs of
//! consecutive blocks, in order, when the cache is full, on
//! [`SliceHandle::flush`] and (errors ignored) on drop. `fatfs` 0.3's
//! `unmount` does not flush its disk, so [`crate::image::fat`] keeps a
//! handle and flushes explicitly.
//!
//! All-zero blocks over a region that already reads as zeros are not
//! written, so formatting a FAT filesystem into a fresh sparse image (which
//! zeroes whole FATs) allocates no disk space for those zeros, and writing
//! into an existing image changes nothing it does not have to. Bytes
//! outside the window are never written.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use zeroize::Zeroize;

/// Block size of the cache and of the zero-skipping logic.
const BLOCK: u64 = 4096;
/// Dirty blocks held before writing back (16 MiB).
const MAX_CACHED_BLOCKS: usize = 4096;

struct Block {
    data: Box<[u8]>,
    dirty: bool,
    /// Whether the block reads as zeros on disk (`None`: not read yet).
    disk_zero: Option<bool>,
}

impl Drop for Block {
    fn drop(&mut self) {
        // Boot files may hold an embedded image key.
        self.data.zeroize();
    }
}

struct Shared {
    file: File,
    /// The window, absolute: nothing outside it is ever written.
    start: u64,
    end: u64,
    blocks: BTreeMap<u64, Block>,
    /// Why a write-back failed where it could not be reported (on drop).
    failed: Option<String>,
}

impl Shared {
    /// Read the part of block `idx` that lies in the window (the rest, and
    /// anything past the end of the file, reads as zeros).
    fn load(&self, idx: u64) -> io::Result<Block> {
        let mut data = vec![0u8; BLOCK as usize].into_boxed_slice();
        let (lo, hi) = self.clip(idx);
        let base = idx * BLOCK;
        let buf = &mut data[(lo - base) as usize..(hi - base) as usize];
        read_at_most(&self.file, buf, lo)?;
        let disk_zero = is_zero(&data);
        Ok(Block {
            data,
            dirty: false,
            disk_zero: Some(disk_zero),
        })
    }

    /// The absolute byte range of block `idx` inside the window.
    fn clip(&self, idx: u64) -> (u64, u64) {
        let lo = (idx * BLOCK).max(self.start);
        let hi = ((idx + 1) * BLOCK).min(self.end);
        (lo, hi.max(lo))
    }

    /// Keep the cache bounded: write it back and empty it when full.
    fn make_room(&mut self) -> io::Result<()> {
        if self.blocks.len() >= MAX_CACHED_BLOCKS {
            self.flush()?;
            self.blocks.clear();
        }
        Ok(())
    }

    fn block(&mut self, idx: u64) -> io::Result<&mut Block> {
        if !self.blocks.contains_key(&idx) {
            self.make_room()?;
            let b = self.load(idx)?;
            self.blocks.insert(idx, b);
        }
        self.blocks
            .get_mut(&idx)
            .ok_or_else(|| io::Error::other("block cache lost a block"))
    }

    fn read_at(&mut self, abs: u64, buf: &mut [u8]) -> io::Result<()> {
        for p in pieces(abs, buf.len()) {
            let b = self.block(p.idx)?;
            buf[p.buf].copy_from_slice(&b.data[p.block]);
        }
        Ok(())
    }

    fn write_at(&mut self, abs: u64, data: &[u8]) -> io::Result<()> {
        for p in pieces(abs, data.len()) {
            let src = &data[p.buf];
            if src.len() == BLOCK as usize && !self.blocks.contains_key(&p.idx) {
                // Fully overwritten: no need to read what was there.
                self.make_room()?;
                let block = Block {
                    data: src.to_vec().into_boxed_slice(),
                    dirty: true,
                    disk_zero: None,
                };
                self.blocks.insert(p.idx, block);
            } else {
                let b = self.block(p.idx)?;
                if b.data[p.block.clone()] != *src {
                    b.data[p.block].copy_from_slice(src);
                    b.dirty = true;
                }
            }
        }
        Ok(())
    }

    /// Write every dirty block back, in runs of consecutive blocks.
    fn flush(&mut self) -> io::Result<()> {
        let dirty: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(i, _)| *i)
            .collect();
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut run_end = 0u64;
        for idx in dirty {
            let (lo, hi) = self.clip(idx);
            let zero_over_zero = {
                let b = &self.blocks[&idx];
                is_zero(&b.data) && {
                    let known = b.disk_zero;
                    match known {
                        Some(z) => z,
                        None => {
                            let mut probe = vec![0u8; (hi - lo) as usize];
                            read_at_most(&self.file, &mut probe, lo)?;
                            is_zero(&probe)
                        }
                    }
                }
            };
            if let Some(b) = self.blocks.get_mut(&idx) {
                b.dirty = false;
            }
            if zero_over_zero || hi <= lo {
                continue;
            }
            let base = idx * BLOCK;
            let bytes = &self.blocks[&idx].data[(lo - base) as usize..(hi - base) as usize];
            if !run.is_empty() && lo != run_end {
                self.file.write_all_at(&run, run_start)?;
                run.zeroize();
                run.clear();
            }
            if run.is_empty() {
                run_start = lo;
            }
            run.extend_from_slice(bytes);
            run_end = hi;
            if run.len() >= 1 << 20 {
                self.file.write_all_at(&run, run_start)?;
                run.zeroize();
                run.clear();
            }
            if let Some(b) = self.blocks.get_mut(&idx) {
                b.disk_zero = Some(is_zero(&b.data));
            }
        }
        if !run.is_empty() {
            self.file.write_all_at(&run, run_start)?;
            run.zeroize();
        }
        Ok(())
    }
}

/// A window `[start, start + len)` of a file.
pub struct PartitionSlice {
    shared: Rc<RefCell<Shared>>,
    len: u64,
    pos: u64,
}

impl std::fmt::Debug for PartitionSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionSlice")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

/// Flushes the cache of a [`PartitionSlice`] that was moved into `fatfs`.
pub struct SliceHandle(Rc<RefCell<Shared>>);

impl SliceHandle {
    /// Write every dirty block back to the file.
    pub fn flush(&self) -> io::Result<()> {
        let mut shared = self.0.borrow_mut();
        if let Some(why) = &shared.failed {
            return Err(io::Error::other(format!(
                "writing back the FAT cache: {why}"
            )));
        }
        shared.flush()
    }
}

impl PartitionSlice {
    /// A window of `len` bytes at byte `start` of `file`. The file must be
    /// open for reading and, to be written to, for writing.
    pub fn new(file: File, start: u64, len: u64) -> io::Result<Self> {
        let end = start.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "partition window overflows")
        })?;
        Ok(PartitionSlice {
            shared: Rc::new(RefCell::new(Shared {
                file,
                start,
                end,
                blocks: BTreeMap::new(),
                failed: None,
            })),
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

    /// A handle to flush the cache after the slice was handed to `fatfs`.
    pub fn handle(&self) -> SliceHandle {
        SliceHandle(Rc::clone(&self.shared))
    }

    /// Flush and give the file back.
    pub fn into_inner(self) -> io::Result<File> {
        self.shared.borrow_mut().flush()?;
        let file = self.shared.borrow().file.try_clone()?;
        Ok(file)
    }
}

impl Drop for PartitionSlice {
    fn drop(&mut self) {
        // The explicit flush reports errors; this one only keeps data when
        // a caller forgot it.
        let mut shared = self.shared.borrow_mut();
        if let Err(e) = shared.flush() {
            shared.failed = Some(e.to_string());
        }
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

pub(crate) use crate::io::sparse_write::is_zero;

impl Read for PartitionSlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        let mut shared = self.shared.borrow_mut();
        let abs = shared.start + self.pos;
        shared.read_at(abs, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
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
        let mut shared = self.shared.borrow_mut();
        let abs = shared.start + self.pos;
        shared.write_at(abs, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.shared.borrow_mut().flush()
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

/// The part of one cache block that a byte range touches.
struct Piece {
    /// The block's number.
    idx: u64,
    /// The bytes within the block.
    block: std::ops::Range<usize>,
    /// The same bytes within the caller's buffer.
    buf: std::ops::Range<usize>,
}

/// The blocks that `len` bytes at absolute offset `abs` span, in order.
fn pieces(abs: u64, len: usize) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let off = abs + done as u64;
        let in_block = (off % BLOCK) as usize;
        let n = (BLOCK as usize - in_block).min(len - done);
        let piece = Piece {
            idx: off / BLOCK,
            block: in_block..in_block + n,
            buf: done..done + n,
        };
        done += n;
        Some(piece)
    })
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
        assert!(matches!(s.write(&[5]), Err(e) if e.kind() == std::io::ErrorKind::WriteZero));
        assert!(
            matches!(s.seek(SeekFrom::Current(-100)), Err(e) if e.kind() == std::io::ErrorKind::InvalidInput)
        );
        s.flush().unwrap();
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[28..31], &[1, 2, 7]);
        // Zero writes over non-zero data do happen.
        s.seek(SeekFrom::Start(0)).unwrap();
        s.write_all(&[0u8; 20]).unwrap();
        drop(s);
        f.seek(SeekFrom::Start(0)).unwrap();
        all.clear();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(&all[9..31], &[&[7u8][..], &[0u8; 20], &[7u8]].concat()[..]);
        // Nothing outside the window changed, and the file did not grow.
        assert_eq!(all.len(), 100);
        assert!(all[..10].iter().chain(&all[30..]).all(|&b| b == 7));
    }

    #[test]
    fn zero_writes_into_holes_allocate_nothing() {
        let (_dir, path) = testkit::scratch("sparse");
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
        let f = s.into_inner().unwrap();
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        assert!(
            blocks * 512 <= 64 * 1024,
            "{} bytes allocated",
            blocks * 512
        );
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, (1 << 20) + written as u64).unwrap();
        assert_eq!(b, [1]);
    }

    /// The cache gives the same bytes as writing straight to the file, for
    /// random reads and writes across block edges, cache evictions and an
    /// unaligned window at the end of the file.
    #[test]
    fn cache_matches_direct_writes() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let size = 3 * (MAX_CACHED_BLOCKS as u64) * BLOCK / 2 + 1234;
        let start = 1000u64;
        let len = size - start - 77;
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        let mut model = vec![0u8; size as usize];
        let mut s = PartitionSlice::new(f.try_clone().unwrap(), start, len).unwrap();
        for _ in 0..20_000 {
            let pos = next() % len;
            let n = (next() % 9000).min(len - pos) as usize;
            s.seek(SeekFrom::Start(pos)).unwrap();
            if next() % 3 == 0 {
                let mut got = vec![0u8; n];
                s.read_exact(&mut got).unwrap();
                let m = (start + pos) as usize;
                assert_eq!(got, model[m..m + n]);
            } else {
                let byte = if next() % 4 == 0 { 0 } else { next() as u8 };
                let data = vec![byte; n];
                s.write_all(&data).unwrap();
                let m = (start + pos) as usize;
                model[m..m + n].copy_from_slice(&data);
            }
        }
        s.handle().flush().unwrap();
        let mut disk = vec![0u8; size as usize];
        f.read_exact_at(&mut disk, 0).unwrap();
        assert_eq!(disk, model);
        assert_eq!(f.metadata().unwrap().len(), size);
    }
}
