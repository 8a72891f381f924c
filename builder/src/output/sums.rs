//! `SHA256SUMS` in the format `sha256sum -c` reads.
//!
//! Images are mostly holes: the hash of a sparse file feeds its holes to
//! SHA-256 as zeros from memory, without reading them (reading a hole makes
//! the kernel allocate and zero page-cache pages for it).

use crate::io::sparse::{data_segments, read_exact_at};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Read and zero-feed size.
const CHUNK: usize = 1 << 20;

/// SHA-256 of a file, streamed (data read, holes fed as zeros), as
/// lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut h = Sha256::new();
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let feed_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    for (start, end) in data_segments(&f, size)? {
        feed_zeros(&mut h, start - pos);
        let mut at = start;
        while at < end {
            let k = (end - at).min(CHUNK as u64) as usize;
            read_exact_at(&f, &mut buf[..k], at)?;
            h.update(&buf[..k]);
            at += k as u64;
        }
        pos = end;
    }
    feed_zeros(&mut h, size - pos);
    Ok(format!("{:x}", h.finalize()))
}

/// Lines `HASH  NAME` for each file of `dir` named in `names`, in order.
pub fn write_sums(dir: &Path, names: &[String]) -> std::io::Result<Vec<(String, String)>> {
    let known: Vec<(String, Option<String>)> = names.iter().map(|n| (n.clone(), None)).collect();
    write_sums_known(dir, &known)
}

/// [`write_sums`] with some hashes already computed (`Some`), e.g. the
/// image's, hashed on another thread while the other outputs were written.
pub fn write_sums_known(
    dir: &Path,
    names: &[(String, Option<String>)],
) -> std::io::Result<Vec<(String, String)>> {
    let mut lines = String::new();
    let mut out = Vec::new();
    for (name, known) in names {
        let hash = match known {
            Some(h) => h.clone(),
            None => sha256_file(&dir.join(name))?,
        };
        lines.push_str(&format!("{hash}  {name}\n"));
        out.push((name.clone(), hash));
    }
    std::fs::write(dir.join("SHA256SUMS"), lines)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file hashes like its bytes: holes count as zeros.
    #[test]
    fn sparse_files_hash_like_their_bytes() {
        let (dir, sparse) = testkit::scratch("sparse");
        let empty = dir.path().join("empty");
        // Data, holes, written zeros and data up to an unaligned end.
        testkit::image_like(&sparse);
        std::fs::write(&empty, b"").unwrap();
        for path in [&sparse, &empty] {
            let bytes = std::fs::read(path).unwrap();
            let want = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(sha256_file(path).unwrap(), want, "{}", path.display());
        }
    }
}
