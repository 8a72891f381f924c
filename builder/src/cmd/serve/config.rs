//! What the command line decides, and the rules between its parts: a
//! non-loopback address needs TLS or `--insecure-behind-proxy`.

use super::status::RecipeFile;
use super::token::TokenSource;
use super::ServeError;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A file that holds a secret the server reads (`--tls-key`,
/// `--token-file`) must not be open to other users: refused (exit 2) when
/// others may read or write it, or its group may write it (a group that
/// may read it, such as Debian's `ssl-cert` for keys, is allowed). A pipe
/// (`<(pass show …)`) has no such mode and is not checked.
pub fn check_private(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o026 != 0 {
        let who = if mode & 0o006 != 0 {
            "other users"
        } else {
            "its group"
        };
        return Err(format!(
            "{who} may {} it (mode {mode:03o}): the {what} must be private, e.g. `chmod 600` it (or 640 for a group that may read it)",
            if mode & 0o004 != 0 { "read" } else { "write" }
        ));
    }
    Ok(())
}

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8750";
/// The largest request body (values larger go through the CLI).
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Plain HTTP on a non-loopback address, for a TLS-terminating proxy
    /// in front: the session cookie is marked Secure (the proxy serves
    /// https).
    pub insecure_behind_proxy: bool,
    /// Host names the browser may use besides IP literals and localhost
    /// (`NAME` any port, `NAME:PORT` that one).
    pub allow_hosts: Vec<String>,
    pub token: TokenSource,
    pub store: PathBuf,
    /// `--identity FILE`; else the store's environment variables.
    pub identity: Option<PathBuf>,
    pub recipes: Vec<RecipeFile>,
    /// The setup view runs command sources (as `check --deep`).
    pub deep: bool,
    pub max_body: usize,
}

impl Config {
    pub fn check(&self) -> Result<(), ServeError> {
        if !self.listen.ip().is_loopback() && self.tls.is_none() && !self.insecure_behind_proxy {
            return Err(ServeError::Usage(format!(
                "--listen {}: not a loopback address, so the page and its token would cross the network in clear: give --tls-cert FILE --tls-key FILE, or --insecure-behind-proxy when a TLS-terminating proxy is in front (default: {DEFAULT_LISTEN})",
                self.listen
            )));
        }
        if self.tls.is_some() && self.insecure_behind_proxy {
            return Err(ServeError::Usage(
                "--insecure-behind-proxy is for plain HTTP behind a proxy: not with --tls-cert"
                    .into(),
            ));
        }
        for h in &self.allow_hosts {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                return Err(ServeError::Usage(format!(
                    "--allow-host {h:?}: a host name, optionally with :PORT (e.g. secrets.example.internal:8443)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listen: &str) -> Config {
        Config {
            listen: listen.parse().unwrap(),
            tls: None,
            insecure_behind_proxy: false,
            allow_hosts: Vec::new(),
            token: TokenSource::Generate,
            store: PathBuf::from("s"),
            identity: None,
            recipes: Vec::new(),
            deep: false,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    #[test]
    fn non_loopback_needs_tls_or_the_proxy_flag() {
        config("127.0.0.1:1").check().unwrap();
        config("[::1]:1").check().unwrap();
        let e = config("0.0.0.0:1").check().unwrap_err().to_string();
        assert!(
            e.contains("--tls-cert") && e.contains("--insecure-behind-proxy"),
            "{e}"
        );
        let mut c = config("0.0.0.0:1");
        c.insecure_behind_proxy = true;
        c.check().unwrap();
        c.tls = Some(TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        });
        assert!(c.check().is_err());
        c.insecure_behind_proxy = false;
        c.check().unwrap();
        c.allow_hosts = vec!["a b".into()];
        assert!(c.check().is_err());
    }
}
