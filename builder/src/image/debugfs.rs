//! Every use of `debugfs`, in one place: the quoting of its command
//! lines, `debugfs -w` scripts, one-request reads, `cat`, and [`lookup`]:
//! an inode's type, mode, owner, size and (fast) link target from its
//! machine-readable forms (`ls -p` of the parent directory, `idump -b` of a
//! link), parsed by [`find_entry`] and [`parse_idump`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ext4::{require_e2fs_tool, run, set_time_env};
use super::ImageError;

/// Quote a path for debugfs's command parser (double quotes, `""` for `"`).
pub(crate) fn quote(path: &[u8]) -> Result<Vec<u8>, ImageError> {
    if path.iter().any(|&b| b == b'\n' || b == b'\r' || b == 0) {
        return Err(ImageError::Tarball {
            path: PathBuf::from(OsStr::from_bytes(path)),
            reason: "file names with newlines cannot be passed to debugfs".into(),
        });
    }
    let mut q = Vec::new();
    sealed_bundle::quote_into(&mut q, path, b'"', |b| (b == b'"').then_some(b"\"\""));
    Ok(q)
}

/// Run a `debugfs -w` command script against the ext filesystem at
/// `offset` in `image`. debugfs exits 0 even when a command fails, so any
/// line on stderr after its version banner is an error.
pub(crate) fn debugfs_write(
    image: &Path,
    offset: u64,
    script: &[u8],
    scratch_dir: &Path,
    epoch: Option<u64>,
) -> Result<(), ImageError> {
    let debugfs = require_e2fs_tool("debugfs")?;
    let mut script_file = tempfile::Builder::new()
        .prefix(".build-image-debugfs-")
        .tempfile_in(scratch_dir)
        .map_err(|e| ImageError::io("cannot create the debugfs script", e))?;
    io::Write::write_all(&mut script_file, script)
        .and_then(|_| io::Write::flush(&mut script_file))
        .map_err(|e| ImageError::io("cannot write the debugfs script", e))?;
    let mut device = image.as_os_str().to_owned();
    device.push(format!("?offset={offset}"));
    let mut cmd = Command::new(debugfs);
    cmd.arg("-w").arg("-f").arg(script_file.path()).arg(&device);
    cmd.stdout(Stdio::null());
    set_time_env(&mut cmd, epoch);
    crate::child_env::scrub(&mut cmd);
    let stderr = run(cmd, "debugfs")?;
    let errors: Vec<String> = String::from_utf8_lossy(&stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(ImageError::ToolFailed {
            tool: "debugfs",
            status: "commands failed".into(),
            stderr: errors.join("\n"),
        });
    }
    Ok(())
}

/// A path quoted for a debugfs request line.
pub(crate) fn quoted(path: &str) -> Result<String, ImageError> {
    Ok(String::from_utf8_lossy(&quote(path.as_bytes())?).into_owned())
}

/// Run one read-only `debugfs -R REQUEST` against the ext filesystem at
/// byte `offset` of `image`; the caller judges its output.
pub(crate) fn debugfs_read(
    image: &Path,
    offset: u64,
    request: &str,
) -> Result<std::process::Output, ImageError> {
    let debugfs = require_e2fs_tool("debugfs")?;
    let mut device = image.as_os_str().to_owned();
    device.push(format!("?offset={offset}"));
    crate::child_env::scrub(&mut Command::new(debugfs))
        .arg("-R")
        .arg(request)
        .arg(&device)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ImageError::io("cannot run debugfs", e))
}

/// Read a regular file's contents from an ext4 partition with `debugfs`
/// (used by tests and by `inspect`). `Ok(None)` when it does not exist.
pub fn debugfs_cat(image: &Path, offset: u64, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
    judged(
        image,
        offset,
        &format!("cat {}", quoted(path)?),
        &["File not found"],
    )
}

/// Run one read-only request and judge what debugfs said on stderr (it
/// exits 0 even when a request fails): `Ok(None)` when it holds one of
/// `missing`, an error when it holds any other line after the banner, else
/// what the request printed.
fn judged(
    image: &Path,
    offset: u64,
    req: &str,
    missing: &[&str],
) -> Result<Option<Vec<u8>>, ImageError> {
    let out = debugfs_read(image, offset, req)?;
    let err = String::from_utf8_lossy(&out.stderr);
    if missing.iter().any(|m| err.contains(m)) {
        return Ok(None);
    }
    if !out.status.success()
        || err
            .lines()
            .any(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
    {
        return Err(ImageError::ToolFailed {
            tool: "debugfs",
            status: out.status.to_string(),
            stderr: err.trim().to_string(),
        });
    }
    Ok(Some(out.stdout))
}

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// An inode, as [`lookup`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inode {
    pub kind: Kind,
    /// The permission bits (`i_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The size in bytes (0 for a directory: `ls -p` gives none).
    pub size: u64,
    /// A fast symbolic link's target (shorter than 60 bytes, held in the
    /// inode); `None` for anything else.
    pub link: Option<String>,
}

/// One line of `ls -p`: `/INODE/MODE/UID/GID/NAME/SIZE/` (`SIZE` empty for
/// a directory). File names hold no `/`, so no name can forge a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub inode: u64,
    /// The whole `i_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
}

/// The entry called `name` in `ls -p` output; `Ok(None)` when there is
/// none, `Err` when its line lacks a field or holds a malformed one.
pub(crate) fn find_entry(listing: &str, name: &str) -> Result<Option<Entry>, String> {
    for line in listing.lines() {
        let Some(inner) = line.strip_prefix('/').and_then(|l| l.strip_suffix('/')) else {
            continue;
        };
        let fields: Vec<&str> = inner.split('/').collect();
        if fields.len() != 6 || fields[4] != name {
            continue;
        }
        let num = |i: usize, what: &str, radix: u32| {
            u64::from_str_radix(fields[i], radix)
                .map_err(|_| format!("{what} {:?} of {name:?} in {line:?}", fields[i]))
        };
        let small = |i: usize, what: &str, radix: u32| {
            num(i, what, radix).and_then(|v| {
                u32::try_from(v).map_err(|_| format!("{what} {v} of {name:?} is out of range"))
            })
        };
        let mode = small(1, "mode", 8)?;
        let size = if fields[5].is_empty() && mode & 0o170000 == 0o040000 {
            None
        } else {
            Some(num(5, "size", 10)?)
        };
        return Ok(Some(Entry {
            inode: num(0, "inode number", 10)?,
            mode,
            uid: small(2, "owner", 10)?,
            gid: small(3, "group", 10)?,
            size,
        }));
    }
    Ok(None)
}

/// The bytes of an `idump` hex dump (`OFFSET  HHHH HHHH …  ASCII` lines,
/// octal offsets, `*` for lines repeating the one before), `len` bytes in
/// all (what a trailing `*` runs up to).
pub(crate) fn parse_idump(dump: &str, len: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut repeating = false;
    let fill = |out: &mut Vec<u8>, last: &[u8], to: usize| {
        while out.len() < to && !last.is_empty() {
            let n = last.len().min(to - out.len());
            out.extend_from_slice(&last[..n]);
        }
    };
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        if line.trim() == "*" {
            repeating = true;
            continue;
        }
        let offset = line
            .get(..4)
            .and_then(|o| usize::from_str_radix(o, 8).ok())
            .ok_or_else(|| format!("no offset in {line:?}"))?;
        if repeating {
            fill(&mut out, &last, offset);
            repeating = false;
        }
        if offset != out.len() {
            return Err(format!(
                "offset {offset:o} where {:o} was expected",
                out.len()
            ));
        }
        // The hex columns: 8 groups of 4 digits after the offset and two
        // spaces; the ASCII column follows.
        let hex_cols = line.get(6..).unwrap_or("");
        let hex_cols = hex_cols.get(..39).unwrap_or(hex_cols);
        let mut bytes = Vec::with_capacity(16);
        for group in hex_cols.split_whitespace() {
            let mut pair = [0u8; 2];
            hex::decode_to_slice(group, &mut pair)
                .map_err(|_| format!("{group:?} is not a hex group in {line:?}"))?;
            bytes.extend_from_slice(&pair);
        }
        out.extend_from_slice(&bytes);
        last = bytes;
    }
    if repeating {
        fill(&mut out, &last, len);
    }
    if out.len() < len {
        return Err(format!("{} bytes where {len} were expected", out.len()));
    }
    out.truncate(len);
    Ok(out)
}

/// A read-only request's text: `Ok(None)` when debugfs reports the path
/// missing (or a parent not a directory).
fn request(image: &Path, offset: u64, req: &str) -> Result<Option<String>, ImageError> {
    let out = judged(image, offset, req, &["File not found", "not a directory"])?;
    Ok(out.map(|o| String::from_utf8_lossy(&o).into_owned()))
}

/// The inode at the absolute `path` of the ext filesystem at byte `offset`
/// of `image`; `Ok(None)` when it does not exist. Output debugfs should
/// not give (a field missing or malformed) is an error.
pub(crate) fn lookup(image: &Path, offset: u64, path: &str) -> Result<Option<Inode>, ImageError> {
    let bad = |reason: String| ImageError::DebugfsOutput {
        path: path.to_string(),
        reason,
    };
    let (parent, name) = match path.trim_end_matches('/').rsplit_once('/') {
        None | Some(("", "")) => ("/", "."),
        Some(("", name)) => ("/", name),
        Some((parent, name)) => (parent, name),
    };
    let Some(listing) = request(image, offset, &format!("ls -p {}", quoted(parent)?))? else {
        return Ok(None);
    };
    let Some(entry) = find_entry(&listing, name).map_err(bad)? else {
        return Ok(None);
    };
    let kind = match entry.mode & 0o170000 {
        0o100000 => Kind::File,
        0o040000 => Kind::Dir,
        0o120000 => Kind::Link,
        _ => Kind::Other,
    };
    let size = entry.size.unwrap_or(0);
    let link = match kind {
        Kind::Link if size < 60 => {
            let dump = request(image, offset, &format!("idump -b {}", quoted(path)?))?
                .ok_or_else(|| bad("the link vanished between two requests".into()))?;
            let bytes = parse_idump(&dump, 60).map_err(bad)?;
            String::from_utf8(bytes[..size as usize].to_vec()).ok()
        }
        _ => None,
    };
    Ok(Some(Inode {
        kind,
        mode: entry.mode & 0o7777,
        uid: entry.uid,
        gid: entry.gid,
        size,
        link,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "/12/040755/0/0/.//\n/2/040755/0/0/..//\n\
                           /13/100644/1000/100/f/3/\n/14/120777/0/0/l/10/\n\n";

    #[test]
    fn ls_lines_give_each_field() {
        assert_eq!(
            find_entry(LISTING, "f").unwrap(),
            Some(Entry {
                inode: 13,
                mode: 0o100644,
                uid: 1000,
                gid: 100,
                size: Some(3)
            })
        );
        let dot = find_entry(LISTING, ".").unwrap().unwrap();
        assert_eq!((dot.mode, dot.size), (0o040755, None));
        assert_eq!(find_entry(LISTING, "missing").unwrap(), None);
        // A name is matched whole, never as a prefix.
        assert_eq!(find_entry(LISTING, "l/10").unwrap(), None);
    }

    #[test]
    fn a_missing_or_malformed_field_is_an_error() {
        for bad in [
            "/13/100644/x/0/f/3/",
            "/13/100644/0/0/f//",
            "/13/1006448/0/0/f/3/",
            "/13/100644/0/99999999999/f/3/",
            "//100644/0/0/f/3/",
        ] {
            let e = find_entry(bad, "f").expect_err(bad);
            assert!(e.contains("of \"f\""), "{bad}: {e}");
        }
    }

    #[test]
    fn idump_bytes_with_repeats_and_a_partial_line() {
        let dump = "0000  2f75 7372 2f6c 6962 2f61 2062 2061 6263  /usr/lib/a b abc\n\
                    0020  0000 0000 0000 0000 0000 0000 0000 0000  ................\n\
                    *\n\
                    0060  3031 3233 3435 3600 0000 0000            0123456.....\n\n";
        let bytes = parse_idump(dump, 60).unwrap();
        assert_eq!(&bytes[..16], b"/usr/lib/a b abc");
        assert!(bytes[16..48].iter().all(|&b| b == 0));
        assert_eq!(&bytes[48..55], b"0123456");
        let tail = "0000  0af3 0100 0400 0000 0000 0000 0000 0000  ................\n*\n";
        assert_eq!(parse_idump(tail, 60).unwrap().len(), 60);
        let err = |dump, len| parse_idump(dump, len).unwrap_err();
        assert!(err("0000  zz\n", 2).contains("not a hex group"));
        assert!(err("0020  0000\n", 2).contains("where 0 was expected"));
        assert!(err("0000  0a0b\n", 60).contains("2 bytes where 60"));
    }
}
