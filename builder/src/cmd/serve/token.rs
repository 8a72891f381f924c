//! The access token: generated at start (32 random bytes, base64url) and
//! printed once, or read from `--token-file` or `$SEALED_IMAGE_SERVE_TOKEN`.
//! Only its SHA-256 stays in memory; a presented token is hashed and
//! compared in constant time.

use super::ServeError;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The environment variable that may hold the token (hidden from every
/// child process, like the store identity).
pub const TOKEN_ENV: &str = "SEALED_IMAGE_SERVE_TOKEN";

/// Shortest token accepted from a file or the environment.
pub const MIN_LEN: usize = 20;
const MAX_LEN: usize = 512;

/// Where the token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A random one, printed on the start line.
    Generate,
    File(PathBuf),
    Env,
}

impl TokenSource {
    /// `--token-file FILE` when given, else `$SEALED_IMAGE_SERVE_TOKEN` when
    /// set, else a random one.
    pub fn choose(file: Option<PathBuf>) -> TokenSource {
        match file {
            Some(f) => TokenSource::File(f),
            None if std::env::var_os(TOKEN_ENV).is_some_and(|v| !v.is_empty()) => TokenSource::Env,
            None => TokenSource::Generate,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TokenSource::Generate => "a random token".into(),
            TokenSource::File(p) => format!("--token-file {}", p.display()),
            TokenSource::Env => format!("${TOKEN_ENV}"),
        }
    }
}

/// The SHA-256 of the token.
pub struct AccessToken {
    hash: [u8; 32],
}

impl AccessToken {
    /// The token of `source`, and its text when it was generated here (to
    /// print once).
    pub fn from_config(
        source: &TokenSource,
    ) -> Result<(AccessToken, Option<Zeroizing<String>>), ServeError> {
        match source {
            TokenSource::Generate => {
                let (t, text) = AccessToken::generate();
                Ok((t, Some(text)))
            }
            TokenSource::File(p) => Ok((AccessToken::from_file(p)?, None)),
            TokenSource::Env => {
                let v = Zeroizing::new(
                    std::env::var(TOKEN_ENV)
                        .map_err(|_| ServeError::Usage(format!("${TOKEN_ENV} is not UTF-8")))?,
                );
                Ok((AccessToken::parse(&v, &format!("${TOKEN_ENV}"))?, None))
            }
        }
    }

    pub fn generate() -> (AccessToken, Zeroizing<String>) {
        use rand::RngCore;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut bytes[..]);
        let text =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]));
        (AccessToken::of(&text), text)
    }

    fn of(text: &str) -> AccessToken {
        AccessToken {
            hash: Sha256::digest(text.as_bytes()).into(),
        }
    }

    /// A token file: its first line, trimmed (bounded read, never a
    /// device, never a file other users may read or write).
    pub fn from_file(path: &Path) -> Result<AccessToken, ServeError> {
        let bad =
            |why: String| ServeError::Usage(format!("--token-file {}: {why}", path.display()));
        let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
        {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if !(t.is_file() || t.is_fifo()) {
                return Err(bad("not a regular file (nor a pipe)".into()));
            }
        }
        super::config::check_private(&meta, "token file").map_err(bad)?;
        let bytes = crate::io::limit::read_bounded(&mut f, 4096, meta.len())
            .map_err(|e| bad(e.to_string()))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8".into()))?;
        AccessToken::parse(
            text.lines().next().unwrap_or(""),
            &format!("--token-file {}", path.display()),
        )
    }

    /// A token given by the operator: at least [`MIN_LEN`] printable ASCII
    /// characters without spaces. Messages never quote it.
    pub fn parse(text: &str, from: &str) -> Result<AccessToken, ServeError> {
        let t = text.trim();
        if t.len() < MIN_LEN || t.len() > MAX_LEN {
            return Err(ServeError::Usage(format!(
                "{from}: the token must be {MIN_LEN} to {MAX_LEN} characters long (it is {}); e.g. `head -c 32 /dev/urandom | base64 > token`",
                t.len()
            )));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServeError::Usage(format!(
                "{from}: the token must be printable ASCII without spaces"
            )));
        }
        Ok(AccessToken::of(t))
    }

    /// Whether `presented` is the token (constant time in its content).
    pub fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_match_only_themselves() {
        let (t, text) = AccessToken::generate();
        assert_eq!(text.len(), 43);
        assert!(t.matches(&text));
        assert!(!t.matches(&text[1..]));
        assert!(!t.matches(""));
        let (_, other) = AccessToken::generate();
        assert_ne!(*text, *other);
    }

    #[test]
    fn given_tokens_are_checked_and_never_quoted() {
        let e = AccessToken::parse("sh0rt-secret", "t")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("sh0rt") && e.contains("20 to 512"), "{e}");
        let e = AccessToken::parse("with space in the middle of it", "t")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("space in"), "{e}");
        let t = AccessToken::parse("  abcdefghijklmnopqrstuvwxyz\n", "t").unwrap();
        assert!(t.matches("abcdefghijklmnopqrstuvwxyz"));
    }
}
