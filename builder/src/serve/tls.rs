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

fn read(path: &Path, what: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, ServeError> {
    let bad = |why: String| ServeError::Usage(format!("{what} {}: {why}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    crate::io::secret::read_bounded(&mut f, MAX_PEM, meta.len()).map_err(|e| bad(e.to_string()))
}

/// The rustls configuration of `files` (usage errors: exit 2).
pub fn load(files: &TlsFiles) -> Result<RustlsConfig, ServeError> {
    let cert_pem = read(&files.cert, "--tls-cert")?;
    let key_pem = read(&files.key, "--tls-key")?;
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
