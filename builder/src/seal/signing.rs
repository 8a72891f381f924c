//! The signing key that signs every bundle, and the signers an image pins.
//!
//! Where the key comes from, first found wins: `--signing-key FILE`, the
//! key itself in `$SEALED_IMAGE_SIGNING_KEY` (a CI secret), a file named by
//! `$SEALED_IMAGE_SIGNING_KEY_FILE`, the recipe's `[signing] key`. Without
//! one, `build`, `inject` and `bundle` refuse to run: a bundle is signed, or
//! (`--unsigned`, said on the command line) it is a format 2 bundle for
//! devices that pin no signer, with a warning.
//!
//! An image pins the signing key's public key and the recipe's `[signing]
//! trust` list in `/etc/sealed-firstboot.conf`.

use crate::recipe::Recipe;
use sealed_bundle::{Signer, SigningKey};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// The key itself (for CI secrets).
pub const ENV_KEY: &str = crate::child_env::SIGNING_KEY;
/// A file holding the key.
pub const ENV_KEY_FILE: &str = crate::child_env::SIGNING_KEY_FILE;
/// Marks a key committed for demos and tests only (in its comments).
const DEMO_MARKER: &str = "DEMO-ONLY";
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 4096;

#[derive(Debug, Error)]
pub enum SigningError {
    #[error(
        "no signing key: every bundle is signed, and devices built with this tool refuse unsigned ones. \
         Create a key once with `build-image keygen --signing -o signing.key` (keep it like an image key), \
         then pass --signing-key FILE, set {ENV_KEY} (the key itself, e.g. a CI secret) or {ENV_KEY_FILE}, \
         or name it in the recipe ([signing] key = \"…\"). --unsigned seals an unsigned format 2 bundle \
         for devices that pin no signer"
    )]
    Missing,
    #[error("signing key {from}: {reason}")]
    Invalid { from: String, reason: String },
    #[error("{0}")]
    Conflict(String),
}

/// What the command line asked for.
#[derive(Debug, Clone, Default)]
pub struct SigningRequest {
    /// `--signing-key FILE`.
    pub key_file: Option<PathBuf>,
    /// `--unsigned`.
    pub unsigned: bool,
}

/// How bundles of this run are signed.
#[derive(Debug)]
pub enum Signing {
    Key {
        key: Box<SigningKey>,
        /// Where it came from, for messages (never the key).
        from: String,
        /// A key committed for demos only (its file says DEMO-ONLY).
        demo: bool,
    },
    /// `--unsigned`: format 2, for devices that pin no signer.
    Unsigned,
}

impl Signing {
    /// The key, unless unsigned.
    pub fn key(&self) -> Option<&SigningKey> {
        match self {
            Signing::Key { key, .. } => Some(key),
            Signing::Unsigned => None,
        }
    }

    /// The signers an image built with this key pins: its own and the
    /// recipe's `[signing] trust` list (no duplicates). Empty when unsigned.
    pub fn pins(&self, recipe: &Recipe) -> Vec<Signer> {
        let Some(key) = self.key() else {
            return Vec::new();
        };
        let mut pins = vec![key.signer()];
        for s in recipe.trusted_signers() {
            if !pins.contains(&s) {
                pins.push(s);
            }
        }
        pins
    }

    /// What to warn about on stderr (no key material).
    pub fn warning(&self) -> Option<String> {
        match self {
            Signing::Unsigned => Some(
                "--unsigned: the bundle is not signed (format 2); a device that pins a signer refuses it, and one that pins none cannot tell who sealed it".into(),
            ),
            Signing::Key { from, demo: true, key } => Some(format!(
                "signing with {from}, a DEMO-ONLY key committed for demos: anyone can sign bundles that devices pinning {} accept; use your own key (build-image keygen --signing) for real devices",
                key.signer()
            )),
            Signing::Key { .. } => None,
        }
    }
}

/// The signing key for this run, as the request, the environment and the
/// recipe say (in that order).
pub fn resolve(req: &SigningRequest, recipe: Option<&Recipe>) -> Result<Signing, SigningError> {
    if req.unsigned {
        if req.key_file.is_some() {
            return Err(SigningError::Conflict(
                "--unsigned and --signing-key contradict each other".into(),
            ));
        }
        if let Some(r) = recipe.filter(|r| !r.trusted_signers().is_empty()) {
            return Err(SigningError::Conflict(format!(
                "--unsigned, but {} pins signers ([signing] trust): its devices would refuse the unsigned bundle",
                r.path.display()
            )));
        }
        return Ok(Signing::Unsigned);
    }
    if let Some(path) = &req.key_file {
        return from_file(path, &format!("--signing-key {}", path.display()));
    }
    if let Some(text) = std::env::var_os(ENV_KEY).filter(|v| !v.is_empty()) {
        let text = Zeroizing::new(text.into_encoded_bytes());
        return from_text(&text, &format!("${ENV_KEY}"));
    }
    if let Some(path) = std::env::var_os(ENV_KEY_FILE).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return from_file(&path, &format!("${ENV_KEY_FILE} ({})", path.display()));
    }
    if let Some((recipe, key)) = recipe.and_then(|r| r.signing.key.as_ref().map(|k| (r, k))) {
        let path = recipe.resolve(key);
        return from_file(&path, &path.display().to_string());
    }
    Err(SigningError::Missing)
}

/// Read a signing key file (bounded, a regular file).
pub fn from_file(path: &Path, from: &str) -> Result<Signing, SigningError> {
    let text = crate::io::limit::read_file(path, MAX_KEY_FILE_BYTES).map_err(|e| {
        SigningError::Invalid {
            from: from.to_string(),
            reason: e.to_string(),
        }
    })?;
    from_text(&text, from)
}

fn from_text(text: &[u8], from: &str) -> Result<Signing, SigningError> {
    let key = SigningKey::from_file_text(text).map_err(|e| SigningError::Invalid {
        from: from.to_string(),
        reason: e.to_string(),
    })?;
    let demo = text
        .windows(DEMO_MARKER.len())
        .any(|w| w == DEMO_MARKER.as_bytes());
    Ok(Signing::Key {
        key: Box::new(key),
        from: from.to_string(),
        demo,
    })
}

/// `build-image keygen --signing`: a new key written to `path` (0600,
/// created exclusively: an existing file is never replaced). Returns the
/// public key.
pub fn keygen(path: &Path) -> Result<Signer, std::io::Error> {
    let key = SigningKey::generate();
    let text = key.to_file_text();
    if !create_exclusive(path, text.as_bytes())? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; refusing to replace it (it may be the only copy of a signing key)",
                path.display()
            ),
        ));
    }
    Ok(key.signer())
}

/// Create `path` (0600) with `data` only if it does not exist yet: written
/// and fsynced under a private temporary name beside it, then moved into
/// place without replacing anything, so nobody sees a partial file. False
/// (the existing file left alone) when `path` exists.
fn create_exclusive(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    let dir = crate::io::parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".keygen-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            std::fs::File::open(dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}
