//! Recipients (`recipients.txt`), identities (`--identity FILE` or the
//! environment) and age encryption of values.
//!
//! `ssh-ed25519` keys are converted to X25519 the way `ssh-to-age` does
//! (the conversion `sealed-firstboot` already owns), so the store needs no
//! second key stack: a version file is a standard age file with X25519
//! stanzas only. `age -d -i` opens it with an `AGE-SECRET-KEY-1…` identity,
//! or with `ssh-to-age -private-key` of the SSH key; `build-image store`
//! takes the OpenSSH private key itself.

use super::{io, StoreError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

/// The environment variable holding an identity (for CI), like sops'
/// `SOPS_AGE_KEY`.
pub const IDENTITY_ENV: &str = "SEALED_IMAGE_STORE_IDENTITY";
/// The environment variable naming an identity file.
pub const IDENTITY_FILE_ENV: &str = "SEALED_IMAGE_STORE_IDENTITY_FILE";

/// The store's recipients.
pub struct Recipients {
    pub keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    pub fn load(path: &Path) -> Result<Recipients, StoreError> {
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        Recipients::parse(&text, path)
    }

    /// One key a line: `age1…` or an `ssh-ed25519 AAAA… comment` line;
    /// blank lines and `#` comments are ignored.
    pub fn parse(text: &str, path: &Path) -> Result<Recipients, StoreError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| StoreError::Recipients {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let key = if line.starts_with("age1") {
                let first = line.split_whitespace().next().unwrap_or("");
                age::x25519::Recipient::from_str(first)
                    .map_err(|e| err(format!("not an age X25519 recipient: {e}")))?
            } else if line.split_whitespace().any(|t| t == "ssh-ed25519") {
                sealed_firstboot::identity::recipient_from_ssh_public_key(line).map_err(err)?
            } else {
                return Err(err(
                    "expected an age1… recipient or an ssh-ed25519 public key (other SSH key types are not supported)".into(),
                ));
            };
            if !keys
                .iter()
                .any(|k: &age::x25519::Recipient| k.to_string() == key.to_string())
            {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(StoreError::Recipients {
                path: path.to_path_buf(),
                line: 0,
                reason: "no recipients: add at least one age1… or ssh-ed25519 key".into(),
            });
        }
        Ok(Recipients { keys })
    }

    /// A short fingerprint of the set (order-independent), recorded per
    /// version so that `audit` can tell which files need `rekey`.
    pub fn fingerprint(&self) -> String {
        let mut keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        let digest = Sha256::digest(keys.join("\n").as_bytes());
        sealed_firstboot::bundle::hex(&digest[..8])
    }

    /// Encrypt a value to every recipient (a standard binary age file).
    pub fn encrypt(&self, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| StoreError::Value(format!("age encryption: {e}")))?;
        let mut out = Vec::with_capacity(value.len() + 256);
        let mut w = encryptor
            .wrap_output(&mut out)
            .map_err(io("age encryption"))?;
        w.write_all(value)
            .and_then(|_| w.finish().map(|_| ()))
            .map_err(io("age encryption"))?;
        Ok(out)
    }
}

/// Where the identity comes from.
pub enum IdentitySource {
    File(PathBuf),
    Env,
}

/// The keys that can decrypt (zeroized on drop by the age crate).
pub struct Identity {
    keys: Vec<age::x25519::Identity>,
}

impl Identity {
    /// `--identity FILE`, else `SEALED_IMAGE_STORE_IDENTITY`, else
    /// `SEALED_IMAGE_STORE_IDENTITY_FILE`.
    pub fn load(file: Option<&Path>) -> Result<Identity, StoreError> {
        if let Some(f) = file {
            return Identity::from_file(f);
        }
        if let Ok(text) = std::env::var(IDENTITY_ENV) {
            let text = Zeroizing::new(text);
            if !text.trim().is_empty() {
                return Identity::parse(&text, &format!("from ${IDENTITY_ENV}"));
            }
        }
        if let Some(f) = std::env::var_os(IDENTITY_FILE_ENV).filter(|f| !f.is_empty()) {
            return Identity::from_file(Path::new(&f));
        }
        Err(StoreError::NoIdentity)
    }

    pub fn from_file(path: &Path) -> Result<Identity, StoreError> {
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| StoreError::BadIdentity {
                from: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Identity::parse(&text, &path.display().to_string())
    }

    /// Every `AGE-SECRET-KEY-1…` line, or an unencrypted OpenSSH ed25519
    /// private key. Messages never quote the key.
    pub fn parse(text: &str, from: &str) -> Result<Identity, StoreError> {
        let bad = |reason: String| StoreError::BadIdentity {
            from: from.to_string(),
            reason,
        };
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let key = sealed_firstboot::identity::identity_from_openssh_ed25519(text)
                .map_err(|e| bad(e.replace("the SSH host key", "the SSH key")))?;
            return Ok(Identity { keys: vec![key] });
        }
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with("AGE-SECRET-KEY-1") {
                keys.push(age::x25519::Identity::from_str(line).map_err(|_| {
                    bad(format!("line {}: malformed AGE-SECRET-KEY-1 line", i + 1))
                })?);
            }
        }
        if keys.is_empty() {
            return Err(bad(
                "no AGE-SECRET-KEY-1… line and no OpenSSH ed25519 private key".into(),
            ));
        }
        Ok(Identity { keys })
    }

    /// The recipients of these keys (to show who you are).
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// Decrypt an age file; `what` names it in errors.
    pub fn decrypt(&self, ciphertext: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: PathBuf::from(what),
            reason,
        };
        let decryptor = age::Decryptor::new(ciphertext)
            .map_err(|e| corrupt(format!("not an age file: {e}")))?;
        let mut reader = decryptor
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => StoreError::NotARecipient {
                    what: what.to_string(),
                },
                e => corrupt(format!("age: {e}")),
            })?;
        let mut out = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut out)
            .map_err(|e| corrupt(format!("age: {e}")))?;
        Ok(out)
    }

    /// Decrypt a version file.
    pub fn decrypt_file(&self, path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        self.decrypt(&bytes, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_file_takes_age_and_ssh_keys_with_comments() {
        let id = age::x25519::Identity::generate();
        let text = format!(
            "# the team\n{} # alice\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICYvKXGcG4a19tTT0Rycbn+D0r/YlKltLJ9dY2gR/Fjx bob@laptop\n",
            id.to_public()
        );
        let r = Recipients::parse(&text, Path::new("r")).unwrap();
        assert_eq!(r.keys.len(), 2);
        assert_eq!(
            r.keys[1].to_string(),
            "age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju"
        );
        let e = Recipients::parse("ssh-rsa AAAA x\n", Path::new("r"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("r line 1") && e.contains("ssh-ed25519"), "{e}");
        assert!(Recipients::parse("# nobody\n", Path::new("r")).is_err());
    }

    #[test]
    fn encrypt_to_all_and_decrypt_with_any() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let text = format!("{}\n{}\n", a.to_public(), b.to_public());
        let r = Recipients::parse(&text, Path::new("r")).unwrap();
        let ct = r.encrypt(b"v4lue").unwrap();
        for k in [a, b] {
            let id = Identity { keys: vec![k] };
            assert_eq!(&id.decrypt(&ct, "x").unwrap()[..], b"v4lue");
        }
        let other = Identity {
            keys: vec![age::x25519::Identity::generate()],
        };
        assert!(matches!(
            other.decrypt(&ct, "x"),
            Err(StoreError::NotARecipient { .. })
        ));
    }

    #[test]
    fn bad_identities_never_quote_the_key() {
        let e = Identity::parse("AGE-SECRET-KEY-1NOTAKEYATALLXYZ\n", "t")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("malformed") && !e.contains("NOTAKEY"), "{e}");
        assert!(Identity::parse("hello", "t").is_err());
    }
}
