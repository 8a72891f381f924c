//! What every request passes before a route sees it, and what every
//! response carries:
//!
//! - **Host** must name this server: an IP literal or `localhost` with the
//!   listening port, or a name given with `--allow-host` (a page of another
//!   site whose name was rebound to this address sends its own name: 421).
//! - **No CORS**: no `Access-Control-*` header is ever sent, and `OPTIONS`
//!   (a preflight) is refused (403).
//! - **Cross-site writes** are refused (403): a state-changing request
//!   whose `Origin` is not this server's, or that the browser marks
//!   `Sec-Fetch-Site: cross-site`/`same-site`.
//! - **Headers**: a CSP without inline scripts or styles and
//!   `frame-ancestors 'none'`, `X-Frame-Options: DENY`, `nosniff`,
//!   `Referrer-Policy: no-referrer`, `Cache-Control: no-store` (revealed
//!   values are never cached), COOP/CORP same-origin.

use super::error::ApiError;
use super::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub struct Guard {
    port: u16,
    allow: Vec<String>,
}

impl Guard {
    pub fn new(addr: SocketAddr, allow_hosts: &[String]) -> Guard {
        Guard {
            port: addr.port(),
            allow: allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a `Host` header value names this server.
    pub fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port) = split_host(&host);
        // A browser leaves out the scheme's default port.
        let port_ok = match port {
            Some(p) => p == self.port,
            None => self.port == 80 || self.port == 443,
        };
        if self.allow.iter().any(|a| {
            if (a.contains(':') && !a.starts_with('[')) || a.contains("]:") {
                *a == host
            } else {
                *a == name
            }
        }) {
            return true;
        }
        port_ok && (name == "localhost" || is_ip_literal(name))
    }

    /// Whether an `Origin` names this server (any scheme it may be reached by).
    fn origin_ok(&self, origin: &str) -> bool {
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false;
        };
        self.host_ok(rest)
    }
}

/// `name[:port]` or `[v6][:port]`.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (
                &host[..ip.len() + 2],
                tail.strip_prefix(':').and_then(|p| p.parse().ok()),
            ),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((n, p)) => (n, p.parse().ok()),
        None => (host, None),
    }
}

fn is_ip_literal(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn header_str(h: &HeaderMap, name: HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: refuse what must be refused, then add the headers.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut resp = match refuse(&app, &req) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    secure_headers(resp.headers_mut());
    resp
}

fn refuse(app: &App, req: &Request) -> Option<ApiError> {
    let h = req.headers();
    let host = header_str(h, header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if app.guard.host_ok(host) => {}
        Some(_) => {
            return Some(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "the Host header does not name this server (a defence against DNS rebinding): use the address build-image serve printed, or start it with --allow-host NAME",
            ))
        }
        None => return Some(ApiError::bad_request("no Host header")),
    }
    if req.method() == Method::OPTIONS {
        return Some(ApiError::forbidden(
            "cross-origin requests are not served (no CORS): use the page this server serves, or the API with a Bearer token",
        ));
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe {
        if let Some(origin) = header_str(h, header::ORIGIN) {
            if !app.guard.origin_ok(origin) {
                return Some(ApiError::forbidden(
                    "a request from another site's page is refused (its Origin is not this server)",
                ));
            }
        }
        if let Some(site) = header_str(h, HeaderName::from_static("sec-fetch-site")) {
            if site == "cross-site" || site == "same-site" {
                return Some(ApiError::forbidden(
                    "a request from another site's page is refused (Sec-Fetch-Site)",
                ));
            }
        }
    }
    None
}

/// The headers of every response (errors and the page included).
pub fn secure_headers(h: &mut HeaderMap) {
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let cors: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in cors {
        h.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_allowed_names_on_our_port() {
        let g = Guard::new(
            "127.0.0.1:8750".parse().unwrap(),
            &["secrets.lan".into(), "proxy.lan:443".into()],
        );
        for ok in [
            "127.0.0.1:8750",
            "localhost:8750",
            "LOCALHOST:8750",
            "[::1]:8750",
            "10.1.2.3:8750",
            "secrets.lan",
            "secrets.lan:9999",
            "proxy.lan:443",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:8750",
            "localhost:8751",
            "127.0.0.1",
            "localhost",
            "proxy.lan:444",
            "proxy.lan",
            "127.0.0.1.evil.example:8750",
            "[::1",
            "",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
        assert!(g.origin_ok("http://127.0.0.1:8750"));
        assert!(g.origin_ok("https://secrets.lan"));
        assert!(!g.origin_ok("http://evil.example:8750"));
        assert!(!g.origin_ok("null"));
    }
}
