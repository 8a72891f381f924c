//! `SHA256SUMS` in the format `sha256sum -c` reads.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// SHA-256 of a file, streamed, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Lines `HASH  NAME` for each file of `dir` named in `names`, in order.
pub fn write_sums(dir: &Path, names: &[String]) -> std::io::Result<Vec<(String, String)>> {
    let mut lines = String::new();
    let mut out = Vec::new();
    for name in names {
        let hash = sha256_file(&dir.join(name))?;
        lines.push_str(&format!("{hash}  {name}\n"));
        out.push((name.clone(), hash));
    }
    std::fs::write(dir.join("SHA256SUMS"), lines)?;
    Ok(out)
}
