//! Recipients (`recipients.txt`), identities (`--identity FILE` or the
//! environment) and age encryption of values.
//!
//! `ssh-ed25519` keys are converted to X25519 the way `ssh-to-age` does
//! (the conversion `sealed-firstboot` already owns), so the store needs no
//! second key stack: a version file is a standard age file with X25519
//! stanzas only. `age -d -i` opens it with an `AGE-SECRET-KEY-1…` identity,
//! or with `ssh-to-age -private-key` of the SSH key; `build-image store`
//! takes the OpenSSH private key itself.

use super::StoreError;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use zeroize::Zeroizing;

/// The environment variable holding an identity (for CI), like sops'
/// `SOPS_AGE_KEY`.
pub const IDENTITY_ENV: &str = "SEALED_IMAGE_STORE_IDENTITY";
/// The environment variable naming an identity file.
pub const IDENTITY_FILE_ENV: &str = "SEALED_IMAGE_STORE_IDENTITY_FILE";

/// Largest identity file read.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// A set of recipients (age X25519, ssh-ed25519 ones converted).
#[derive(Clone)]
pub struct Recipients {
    pub keys: Vec<age::x25519::Recipient>,
}

/// One key line of `recipients.txt`.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based.
    pub number: usize,
    /// The line as written (trimmed; control characters shown as `?`):
    /// key and comment.
    pub text: String,
    /// The age1… recipient it stands for.
    pub key: String,
}

/// `recipients.txt` as written: one key a line: `age1…` or an
/// `ssh-ed25519 AAAA… comment` line; blank lines and `#` comments are
/// ignored. Every key is checked ([`crate::recipient::parse`]).
pub struct RecipientsFile {
    pub lines: Vec<Line>,
}

impl RecipientsFile {
    pub fn parse(text: &str, path: &Path) -> Result<RecipientsFile, StoreError> {
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = crate::recipient::parse(line).map_err(|reason| StoreError::Recipients {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })?;
            lines.push(Line {
                number: i + 1,
                // Shown to members deciding on it: no control characters
                // (an escape sequence could erase the line from the screen).
                text: sealed_bundle::report::printable(line),
                key: key.to_string(),
            });
        }
        if lines.is_empty() {
            return Err(StoreError::Recipients {
                path: path.to_path_buf(),
                line: 0,
                reason: "no recipients: add at least one age1… or ssh-ed25519 key".into(),
            });
        }
        Ok(RecipientsFile { lines })
    }

    /// The distinct keys, sorted (what the index records).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lines.iter().map(|l| l.key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The first line naming `key`, for messages.
    pub fn line_of(&self, key: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.key == key)
    }
}

impl Recipients {
    /// Recipients from `recipients.txt` text (each checked).
    pub fn parse(text: &str, path: &Path) -> Result<Recipients, StoreError> {
        Recipients::from_keys(&RecipientsFile::parse(text, path)?.keys(), path)
    }

    /// Recipients from age1… strings (each checked), e.g. the index's.
    pub fn from_keys(keys: &[String], from: &Path) -> Result<Recipients, StoreError> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let key = crate::recipient::parse(k).map_err(|reason| StoreError::Recipients {
                path: from.to_path_buf(),
                line: i + 1,
                reason,
            })?;
            if !out.contains(&key) {
                out.push(key);
            }
        }
        if out.is_empty() {
            return Err(StoreError::Recipients {
                path: from.to_path_buf(),
                line: 0,
                reason: "no recipients".into(),
            });
        }
        Ok(Recipients { keys: out })
    }

    /// The age1… strings, sorted.
    pub fn strings(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    /// A short fingerprint of the set (order-independent), recorded per
    /// version.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.strings().join("\n").as_bytes());
        ::hex::encode(&digest[..8])
    }

    /// Encrypt a value to every recipient (a standard binary age file).
    pub fn encrypt(&self, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| StoreError::Value(format!("age encryption: {e}")))?;
        let mut out = Vec::with_capacity(value.len() + 64 + 128 * self.keys.len());
        let mut w = encryptor
            .wrap_output(&mut out)
            .map_err(super::io("age encryption"))?;
        w.write_all(value)
            .and_then(|_| w.finish().map(|_| ()))
            .map_err(super::io("age encryption"))?;
        Ok(out)
    }
}

/// The stanza types of an age file's header (`X25519` for each recipient
/// of a file this store writes), read without decrypting anything. The
/// random "grease" stanzas age adds (types ending in `-grease`) are left
/// out.
pub fn stanzas(file: &[u8]) -> Result<Vec<String>, String> {
    let head = &file[..file.len().min(1 << 20)];
    let mut lines = head.split(|b| *b == b'\n');
    if lines.next() != Some(b"age-encryption.org/v1") {
        return Err("not a binary age file (no age-encryption.org/v1 header)".into());
    }
    let mut out = Vec::new();
    let mut in_body = false;
    for line in lines {
        if line.starts_with(b"---") {
            return Ok(out);
        }
        if let Some(rest) = line.strip_prefix(b"-> ") {
            let tag = rest.split(|b| *b == b' ').next().unwrap_or(b"");
            if !tag.ends_with(b"-grease") {
                out.push(String::from_utf8_lossy(tag).into_owned());
            }
            in_body = true;
        } else if !in_body {
            return Err("malformed age header".into());
        }
    }
    Err("the age header does not end".into())
}

/// Whether a file name is rather a private key (pasted where the name
/// goes): then it is never printed.
fn looks_like_a_key(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy().to_ascii_uppercase();
    text.contains("AGE-SECRET-KEY-") || text.contains("PRIVATE KEY")
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
    /// `SEALED_IMAGE_STORE_IDENTITY_FILE`; `None` when none is given.
    pub fn load_optional(file: Option<&Path>) -> Result<Option<Identity>, StoreError> {
        if let Some(f) = file {
            return Identity::from_file(f).map(Some);
        }
        if let Some(text) = std::env::var_os(IDENTITY_ENV) {
            use std::os::unix::ffi::OsStringExt;
            let bytes = Zeroizing::new(text.into_vec());
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                let text = std::str::from_utf8(&bytes).map_err(|_| StoreError::BadIdentity {
                    from: format!("${IDENTITY_ENV}"),
                    reason: "not UTF-8".into(),
                })?;
                return Identity::parse(text, &format!("from ${IDENTITY_ENV}")).map(Some);
            }
        }
        if let Some(f) = std::env::var_os(IDENTITY_FILE_ENV).filter(|f| !f.is_empty()) {
            return Identity::from_file(Path::new(&f)).map(Some);
        }
        Ok(None)
    }

    /// [`Identity::load_optional`], refusing none with `why` it is needed.
    pub fn load(file: Option<&Path>, why: &str) -> Result<Identity, StoreError> {
        Identity::load_optional(file)?.ok_or_else(|| StoreError::no_identity(why))
    }

    /// An identity file (the user's path: links followed), or a pipe such
    /// as `<(pass show store-key)`; a device or a directory is refused. Read
    /// with a bound into a zeroized buffer.
    pub fn from_file(path: &Path) -> Result<Identity, StoreError> {
        if looks_like_a_key(path) {
            // The key itself where a file name goes: never repeated.
            return Err(StoreError::BadIdentity {
                from: "(a key, not shown)".into(),
                reason: format!(
                    "--identity and ${IDENTITY_FILE_ENV} take the name of a file; the key itself goes in ${IDENTITY_ENV}"
                ),
            });
        }
        let bad = |reason: String| StoreError::BadIdentity {
            from: path.display().to_string(),
            reason,
        };
        // Never waiting on the open (a FIFO nobody writes to, a device).
        let mut f = crate::io::open_for_reading(path).map_err(|e| bad(e.to_string()))?;
        let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
        let kind = meta.file_type();
        {
            use std::os::unix::fs::FileTypeExt;
            if !(kind.is_file() || kind.is_fifo()) {
                return Err(bad("not a regular file (nor a pipe)".into()));
            }
        }
        let bytes = crate::io::limit::read_bounded(&mut f, MAX_IDENTITY_FILE, meta.len())
            .map_err(|e| bad(e.to_string()))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8".into()))?;
        Identity::parse(text, &path.display().to_string())
    }

    /// Every `AGE-SECRET-KEY-1…` line, or an unencrypted OpenSSH ed25519
    /// private key. Messages never quote the key.
    pub fn parse(text: &str, from: &str) -> Result<Identity, StoreError> {
        let bad = |reason: String| StoreError::BadIdentity {
            from: from.to_string(),
            reason,
        };
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let key = sealed_bundle::ssh::identity_from_openssh_ed25519(text)
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

    /// Decrypt an age file of at most `limit` plaintext bytes into a
    /// zeroized buffer; `what` names it in errors.
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        what: &str,
        limit: u64,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut reader = self.decrypt_stream(ciphertext, what)?;
        crate::io::limit::read_bounded(&mut reader, limit, ciphertext.len() as u64).map_err(|e| {
            StoreError::Corrupt {
                path: PathBuf::from(what),
                reason: format!("age: {e}"),
            }
        })
    }

    /// The plaintext of an age file as it is read (each chunk
    /// authenticated before it is returned); `what` names it in errors.
    pub fn decrypt_stream<R: std::io::Read>(
        &self,
        ciphertext: R,
        what: &str,
    ) -> Result<age::stream::StreamReader<R>, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: PathBuf::from(what),
            reason,
        };
        let decryptor = age::Decryptor::new(ciphertext)
            .map_err(|e| corrupt(format!("not an age file: {e}")))?;
        decryptor
            .decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => StoreError::NotARecipient {
                    what: what.to_string(),
                },
                e => corrupt(format!("age: {e}")),
            })
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
        assert!(r
            .strings()
            .contains(&"age18s8m9hvlrwvltgys4lafyyqe356ntc7e06t4kd2nccqm5amsaa2s878mju".into()));
        let e = Recipients::parse("ssh-rsa AAAA x\n", Path::new("r"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("r line 1") && e.contains("ssh-ed25519"), "{e}");
        assert!(matches!(
            Recipients::parse("# nobody\n", Path::new("r")),
            Err(crate::store::StoreError::Recipients { .. })
        ));
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
            assert_eq!(&id.decrypt(&ct, "x", 100).unwrap()[..], b"v4lue");
        }
        let other = Identity {
            keys: vec![age::x25519::Identity::generate()],
        };
        assert!(matches!(
            other.decrypt(&ct, "x", 100),
            Err(StoreError::NotARecipient { .. })
        ));
    }

    #[test]
    fn stanzas_are_read_from_the_header() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let r = Recipients::parse(
            &format!("{}\n{}\n", a.to_public(), b.to_public()),
            Path::new("r"),
        )
        .unwrap();
        let ct = r.encrypt(&[7u8; 100_000]).unwrap();
        assert_eq!(stanzas(&ct).unwrap(), ["X25519", "X25519"]);
        assert!(
            matches!(stanzas(b"hello"), Err(e) if e.contains("not a binary age file (no age-encryption.org/v1"))
        );
        let small = r.encrypt(b"v").unwrap();
        let id = Identity { keys: vec![a] };
        assert!(
            matches!(
                id.decrypt(&ct, "x", 99_999),
                Err(StoreError::Corrupt { .. })
            ),
            "the plaintext bound holds"
        );
        assert_eq!(&id.decrypt(&small, "x", 1).unwrap()[..], b"v");
    }

    #[test]
    fn small_order_recipients_are_refused_with_the_line() {
        let zero = "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5cu47z";
        let e = Recipients::parse(&format!("# x\n{zero}\n"), Path::new("r"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("r line 2") && e.contains("small-order"), "{e}");
    }

    #[test]
    fn bad_identities_never_quote_the_key() {
        let e = Identity::parse("AGE-SECRET-KEY-1NOTAKEYATALLXYZ\n", "t")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("malformed") && !e.contains("NOTAKEY"), "{e}");
        assert!(matches!(
            Identity::parse("hello", "t"),
            Err(crate::store::StoreError::BadIdentity { .. })
        ));
    }
}
