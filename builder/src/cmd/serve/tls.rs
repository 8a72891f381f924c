//! `--tls-cert FILE --tls-key FILE`: a PEM certificate chain and its
//! private key for rustls (the ring provider, TLS 1.2 and 1.3, HTTP/1.1).

use super::config::TlsFiles;
use super::ServeError;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

const MAX_PEM: u64 = 1 << 20;

/// A PEM file (the user's path: links followed; never a pipe or a
/// device); a private one (see [`super::config::check_private`]) when
/// `private`.
fn read(path: &Path, what: &str, private: bool) -> Result<zeroize::Zeroizing<Vec<u8>>, ServeError> {
    let bad = |why: String| ServeError::Usage(format!("{what} {}: {why}", path.display()));
    // O_NONBLOCK: opening a pipe would otherwise wait for a writer (the
    // server hung at start); it changes nothing for a regular file.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
            .map_err(|e| bad(e.to_string()))?
    };
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if private {
        super::config::check_private(&meta, "private key").map_err(bad)?;
    }
    crate::io::limit::read_bounded(&mut f, MAX_PEM, meta.len()).map_err(|e| bad(e.to_string()))
}

/// The rustls configuration of `files` (usage errors: exit 2).
pub fn load(files: &TlsFiles) -> Result<RustlsConfig, ServeError> {
    let cert_pem = read(&files.cert, "--tls-cert", false)?;
    let key_pem = read(&files.key, "--tls-key", true)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Usage(format!("--tls-cert {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Usage(format!(
            "--tls-cert {}: no CERTIFICATE in it (PEM expected)",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServeError::Usage(format!(
            "--tls-key {}: no private key in it (PEM: PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Usage(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ServeError::Usage(format!(
                "--tls-cert {} and --tls-key {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
