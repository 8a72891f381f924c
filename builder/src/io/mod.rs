//! The I/O layer under every stage, the store and the commands (it imports
//! none of them): compressed images ([`compressed`]: detected by their
//! magic, decoded one way), sparse files ([`sparse`]: where the data is,
//! copies that keep the holes), the one zero-skipping writer
//! ([`sparse_write`]), the worker thread count; bounded reads of streams
//! and files ([`limit`]) and of programs ([`bounded`]); files under a
//! directory descriptor that never follow links ([`at`]); zeroizing
//! buffers for plaintext ([`secret`]).

pub mod at;
pub mod bounded;
pub mod compressed;
pub mod limit;
pub mod secret;
pub mod sparse;
pub mod sparse_write;

/// The directory a path's file is in: `.` for a bare file name (whose
/// `parent()` is the empty path, which cannot be opened or synced).
pub fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    }
}

/// Write `data` to `path` atomically, as the user named it (a link to a
/// directory on the way is followed; a link at `path` itself is replaced,
/// not written through): a new temporary file beside it with `mode`,
/// fsync, rename, fsync of the directory. A failure leaves what was there.
/// A stream is written into as a shell redirection would (never replaced
/// by a file): a FIFO or a terminal (or a link to one), and whatever is
/// named in `/dev` or `/proc` (`/dev/stdout`, `/dev/fd/N`); a block device
/// is refused.
pub fn write_output(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
    let dir = parent_dir(path);
    if let Ok(target) = std::fs::metadata(path) {
        let kind = target.file_type();
        if kind.is_block_device() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is a block device: a value is not written onto a disk",
            ));
        }
        let stream_dir = std::fs::canonicalize(dir)
            .is_ok_and(|d| d == std::path::Path::new("/dev") || d.starts_with("/proc"));
        if kind.is_fifo() || kind.is_char_device() || (stream_dir && !kind.is_dir()) {
            // Ours or the system's: never another user's FIFO (in /tmp,
            // say), which would hand them the value.
            let uid = std::os::unix::fs::MetadataExt::uid(&target);
            if uid != 0 && uid != rustix::process::geteuid().as_raw() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "it is a FIFO or device of another user: nothing written into it",
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
                .open(path)?;
            return f.write_all(data).and_then(|_| f.flush());
        }
    }
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Open `path` (the user's: links followed) for reading without blocking
/// on the open itself (a FIFO nobody writes to, a device), then make its
/// reads blocking: a pipe with a writer (`<(command)`) is read to its end,
/// one without reads as empty at once.
pub fn open_for_reading(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())?;
    Ok(f)
}

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
