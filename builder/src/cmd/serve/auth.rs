//! Who may call the API: a client that sends `Authorization: Bearer TOKEN`,
//! or the page after it logged in with the token (`POST /api/login`), which
//! gets a session cookie (HttpOnly, SameSite=Strict, Path=/, Secure over
//! TLS or behind a proxy) and a CSRF token that every request of the
//! session repeats in `X-CSRF-Token`, reads included (see [`require`]).
//!
//! Failed attempts (a wrong token at login or in a Bearer header) slow
//! down the source that made them: after its n-th failure in a row no
//! token from that source is even checked for 250 ms × 2ⁿ⁻¹ (at most
//! 30 s), and such requests get 429 with `Retry-After`; the wait and the
//! check are one step under one lock, so parallel requests get no more
//! tries than sequential ones (one per wait). A source is the client's IP
//! address (an IPv6 /64); a source quiet for [`FORGET_AFTER`] starts again
//! from nothing. A wrong token from one address never slows another
//! address's login (a flood from a remote host cannot lock the admin out);
//! at most [`MAX_SOURCES`] are tracked, and sources beyond share one
//! overflow slot (an attacker with many addresses slows only that slot).
//! Limits: behind a proxy every client has the proxy's address, and every
//! local user has 127.0.0.1, so one of them can slow the others' logins
//! there (not their open sessions). Sessions live in memory only: a
//! restart logs out.

use super::error::ApiError;
use super::token::AccessToken;
use super::App;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a page session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 64;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A source that failed no attempt for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);
/// Sources whose failures are counted apart; the rest share one slot.
pub const MAX_SOURCES: usize = 4096;

/// Who a request comes from, for the handlers.
#[derive(Clone, Debug)]
pub enum Principal {
    Bearer,
    Session { id_hash: [u8; 32], csrf: String },
}

struct PageSession {
    csrf: String,
    expires: Instant,
}

#[derive(Clone, Copy)]
struct Backoff {
    failures: u32,
    /// No token from the source is checked before this.
    until: Instant,
}

/// Where failed attempts are counted: an IPv4 address, an IPv6 /64, or
/// the shared slot of sources beyond [`MAX_SOURCES`] (and of requests
/// whose address is not known).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    Overflow,
}

impl Source {
    fn of(ip: Option<IpAddr>) -> Source {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(a)) => Source::V4(a.octets()),
            Some(IpAddr::V6(a)) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&a.octets()[..8]);
                Source::V6Prefix(p)
            }
            None => Source::Overflow,
        }
    }
}

pub struct Auth {
    token: AccessToken,
    secure: bool,
    sessions: Mutex<HashMap<[u8; 32], PageSession>>,
    backoff: Mutex<HashMap<Source, Backoff>>,
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Auth {
    pub fn new(token: AccessToken, secure: bool) -> Auth {
        Auth {
            token,
            secure,
            sessions: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// The cookie's name: `__Host-` (bound to this origin, Secure, Path=/)
    /// when it is Secure.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-sealed-session"
        } else {
            "sealed-session"
        }
    }

    /// Check a token `presented` from `peer`: 429 while that source's
    /// failed attempts slow it down (the token is not even checked), 401
    /// when it is wrong (a failure of that source). One step under one
    /// lock, so requests in parallel cannot slip between wait and check.
    fn check_token(&self, presented: &str, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut table = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let mut source = Source::of(peer);
        if !table.contains_key(&source) && table.len() >= MAX_SOURCES {
            table.retain(|_, b| b.until + FORGET_AFTER > now);
            if table.len() >= MAX_SOURCES {
                source = Source::Overflow;
            }
        }
        if let Some(b) = table.get(&source) {
            if b.until > now {
                let wait = b.until - now;
                return Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "{} failed attempt(s) with a wrong token from this address: try again in {} ms",
                        b.failures,
                        wait.as_millis()
                    ),
                    retry_after: Some(wait.as_secs() + 1),
                });
            }
        }
        if self.token.matches(presented) {
            table.remove(&source);
            return Ok(());
        }
        let failures = match table.get(&source) {
            Some(b) if b.until + FORGET_AFTER > now => b.failures.saturating_add(1),
            _ => 1,
        };
        let delay = BACKOFF_FIRST
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        table.insert(
            source,
            Backoff {
                failures,
                until: now + delay,
            },
        );
        Err(ApiError::unauthorized("wrong access token"))
    }

    /// `POST /api/login`: a new session; the Set-Cookie header and its
    /// CSRF token.
    pub fn login(
        &self,
        presented: &str,
        peer: Option<IpAddr>,
    ) -> Result<(HeaderValue, String), ApiError> {
        self.check_token(presented, peer)?;
        let id = random_token();
        let csrf = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            hash(&id),
            PageSession {
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        let cookie = format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.cookie_name(),
            SESSION_LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        );
        let value = HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::internal("could not make the session cookie"))?;
        Ok((value, csrf))
    }

    /// `POST /api/logout`: the session goes; the cookie is cleared.
    pub fn logout(&self, p: &Principal) -> HeaderValue {
        if let Principal::Session { id_hash, .. } = p {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id_hash);
        }
        HeaderValue::from_str(&format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn session(&self, headers: &HeaderMap) -> Option<Principal> {
        let name = self.cookie_name();
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())?;
        let id_hash = hash(&id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&id_hash) {
            Some(s) if s.expires > Instant::now() => Some(Principal::Session {
                id_hash,
                csrf: s.csrf.clone(),
            }),
            Some(_) => {
                sessions.remove(&id_hash);
                None
            }
            None => None,
        }
    }

    /// Who sends `headers` from `peer` (Bearer first, then the session
    /// cookie).
    pub fn principal(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = v.to_str().unwrap_or("");
            let Some(token) = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            else {
                return Err(ApiError::unauthorized(
                    "the Authorization header must be `Bearer TOKEN` (the access token build-image serve printed)",
                ));
            };
            self.check_token(token.trim(), peer)?;
            return Ok(Principal::Bearer);
        }
        self.session(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "not logged in: log in on the page, or send `Authorization: Bearer TOKEN`",
            )
        })
    }
}

/// The client's address (known when the server was made with connect
/// info, as `run` makes it).
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Whether a request's method changes anything.
pub fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

/// The middleware in front of every API route but login: authenticate,
/// then, for a page session, require the CSRF token on every request,
/// reads too: browsers send a `localhost` cookie to every port of the host
/// (cookies are not bound to a port), so another local user's server on
/// another port that the admin's browser visits gets the cookie; alone it
/// opens nothing. The page keeps the CSRF token in its tab's
/// `sessionStorage`, which is bound to the origin, port included.
pub async fn require(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let p = match app.auth.principal(req.headers(), peer_ip(&req)) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Principal::Session { csrf, .. } = &p {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !bool::from(sent.ct_eq(csrf.as_bytes())) {
            return ApiError::forbidden(if changes_state(req.method()) {
                "missing or wrong CSRF token: a change from the page sends the X-CSRF-Token it got at login (log in again)"
            } else {
                "missing or wrong CSRF token: every request of a page session sends the X-CSRF-Token it got at login, a cookie alone opens nothing (log in again)"
            })
            .into_response();
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// A wrong token from `from` is refused (401), and then the right one
    /// from `then` waits its turn (429).
    fn wrong_then_slowed(auth: &Auth, text: &str, from: Option<IpAddr>, then: Option<IpAddr>) {
        assert_eq!(
            auth.login("wrong", from).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth.login(text, then).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn a_source_with_wrong_tokens_slows_only_itself() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, false);
        let attacker = ip("192.0.2.7");
        wrong_then_slowed(&auth, &text, attacker, attacker);
        // The admin elsewhere logs in at once.
        auth.login(&text, LOCAL).unwrap();
        // One IPv6 /64 is one source; an IPv4-mapped address is its IPv4.
        wrong_then_slowed(&auth, &text, ip("2001:db8::1"), ip("2001:db8::ffff:2"));
        auth.login(&text, ip("2001:db8:0:1::1")).unwrap();
        assert_eq!(
            auth.login(&text, ip("::ffff:192.0.2.7"))
                .unwrap_err()
                .status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn parallel_wrong_tokens_get_one_try_per_wait() {
        let (token, _) = AccessToken::generate();
        let auth = Arc::new(Auth::new(token, false));
        let start = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (auth, start) = (auth.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    auth.login("wrong", LOCAL).unwrap_err().status
                })
            })
            .collect();
        let statuses: Vec<StatusCode> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let tried = statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count();
        assert_eq!(tried, 1, "{statuses:?}");
    }

    #[test]
    fn sources_beyond_the_table_share_one_slot() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, false);
        for i in 0..MAX_SOURCES as u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            auth.login("wrong", Some(IpAddr::V4(a))).unwrap_err();
        }
        assert_eq!(auth.backoff.lock().unwrap().len(), MAX_SOURCES);
        // A new source while the table is full counts in the overflow slot.
        assert_eq!(
            auth.login("wrong", ip("198.51.100.1")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth.login(&text, ip("198.51.100.2")).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        // A tracked source is still its own.
        std::thread::sleep(BACKOFF_FIRST + Duration::from_millis(50));
        auth.login(&text, ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn wrong_tokens_slow_every_later_attempt() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, false);
        // Even the right token waits its turn.
        wrong_then_slowed(&auth, &text, LOCAL, LOCAL);
        std::thread::sleep(BACKOFF_FIRST + Duration::from_millis(50));
        let (cookie, csrf) = auth.login(&text, LOCAL).unwrap();
        let c = cookie.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        let id = c.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(id).unwrap());
        match auth.principal(&h, LOCAL).unwrap() {
            Principal::Session { csrf: c, .. } => assert_eq!(c, csrf),
            p => panic!("{p:?}"),
        }
        let p = auth.principal(&h, LOCAL).unwrap();
        auth.logout(&p);
        assert!(auth.principal(&h, LOCAL).is_err());
    }

    #[test]
    fn secure_cookies_use_the_host_prefix() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, true);
        let (cookie, _) = auth.login(&text, LOCAL).unwrap();
        let c = cookie.to_str().unwrap();
        assert!(
            c.starts_with("__Host-sealed-session=") && c.ends_with("; Secure"),
            "{c}"
        );
    }
}
