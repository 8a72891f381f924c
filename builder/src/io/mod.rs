//! The I/O room: byte streams shared by the commands. Compressed images
//! (detected by their magic, decoded one way), sparse files (where the data
//! is, copies that keep the holes), the one zero-skipping writer, the
//! worker thread count.

pub mod compressed;
pub mod sparse;
pub mod sparse_write;

/// Fill `buf` from `r` as far as it goes: fewer bytes only at the end of
/// the stream (short reads happen on pipes, decoders and some filesystems).
pub fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// How many worker threads hashing, compressing and fleet builds use: the
/// cores available to this process (decided here only).
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
