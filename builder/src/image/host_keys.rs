//! SSH host keys baked into a root filesystem source. Every device made
//! from such an image gets the same host key: anyone holding the image can
//! impersonate every device, and a device identity derived from the host
//! key (`identity = ssh-host-key`) would be shared too. Images should
//! create host keys on first boot (Raspberry Pi OS's
//! `regenerate_ssh_host_keys`, cloud-init, `ssh-keygen -A` in a unit).
//! Found at build time (`crate::recipe::plan::host_key_warnings`) and
//! reported as a warning.

use std::io;
use std::path::Path;

/// Whether a path inside a root filesystem is an SSH host private key.
fn is_host_key(rel: &str) -> bool {
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    rel.strip_prefix("etc/ssh/ssh_host_")
        .is_some_and(|rest| rest.ends_with("_key") && !rest.contains('/'))
}

/// Host private keys in a root source (a directory or a plain tarball), as
/// device paths (`/etc/ssh/ssh_host_ed25519_key`), sorted.
pub fn in_source(source: &Path) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    let meta = std::fs::metadata(source)?;
    if meta.is_dir() {
        match std::fs::read_dir(source.join("etc/ssh")) {
            Ok(entries) => {
                for e in entries {
                    let name = e?.file_name().to_string_lossy().into_owned();
                    let rel = format!("etc/ssh/{name}");
                    if is_host_key(&rel) {
                        found.push(format!("/{rel}"));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    } else {
        let file = std::fs::File::open(source)?;
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        for entry in archive.entries()? {
            let entry = entry?;
            let path = entry.path()?;
            let rel = path.to_string_lossy();
            if is_host_key(&rel) {
                found.push(format!(
                    "/{}",
                    rel.trim_start_matches("./").trim_start_matches('/')
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_host_keys_in_directories_and_tarballs() {
        assert!(is_host_key("etc/ssh/ssh_host_ed25519_key"));
        assert!(is_host_key("./etc/ssh/ssh_host_rsa_key"));
        assert!(!is_host_key("etc/ssh/ssh_host_ed25519_key.pub"));
        assert!(!is_host_key("etc/ssh/sshd_config"));
        let (dir, root) = testkit::scratch("root");
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        assert!(in_source(&root).unwrap().is_empty());
        for f in [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "sshd_config",
        ] {
            std::fs::write(root.join("etc/ssh").join(f), "x").unwrap();
        }
        assert_eq!(in_source(&root).unwrap(), ["/etc/ssh/ssh_host_ed25519_key"]);
        let tarball = dir.path().join("root.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
        b.append_dir_all(".", &root).unwrap();
        b.finish().unwrap();
        drop(b);
        assert_eq!(
            in_source(&tarball).unwrap(),
            ["/etc/ssh/ssh_host_ed25519_key"]
        );
    }
}
