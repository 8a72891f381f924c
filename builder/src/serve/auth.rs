//! Who may call the API: a client that sends `Authorization: Bearer TOKEN`,
//! or the page after it logged in with the token (`POST /api/login`), which
//! gets a session cookie (HttpOnly, SameSite=Strict, Path=/, Secure over
//! TLS or behind a proxy) and a CSRF token that every state-changing
//! request repeats in `X-CSRF-Token`.
//!
//! Failed attempts (a wrong token at login or in a Bearer header) slow
//! every later one down: after the n-th failure in a row no token is even
//! checked for 250 ms × 2ⁿ⁻¹ (at most 30 s), and such requests get 429 with
//! `Retry-After`. Global, not per address: behind a proxy every client has
//! the proxy's address, and on a trusted machine locking out for a while is
//! the lesser harm. Sessions live in memory only: a restart logs out.

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

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

pub struct Auth {
    token: AccessToken,
    secure: bool,
    sessions: Mutex<HashMap<[u8; 32], PageSession>>,
    backoff: Mutex<Backoff>,
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
            backoff: Mutex::new(Backoff::default()),
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

    /// 429 while failed attempts slow things down.
    fn gate(&self) -> Result<(), ApiError> {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match b.until {
            Some(t) if t > Instant::now() => {
                let wait = t - Instant::now();
                Err(ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!(
                        "{} failed attempt(s) with a wrong token: try again in {} ms",
                        b.failures,
                        wait.as_millis()
                    ),
                    retry_after: Some(wait.as_secs() + 1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Check a presented token; a wrong one counts as a failure.
    fn check_token(&self, presented: &str) -> Result<(), ApiError> {
        self.gate()?;
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if self.token.matches(presented) {
            *b = Backoff::default();
            return Ok(());
        }
        b.failures = b.failures.saturating_add(1);
        let delay = BACKOFF_FIRST
            .saturating_mul(1u32 << b.failures.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        b.until = Some(Instant::now() + delay);
        Err(ApiError::unauthorized("wrong access token"))
    }

    /// `POST /api/login`: a new session; the Set-Cookie header and its
    /// CSRF token.
    pub fn login(&self, presented: &str) -> Result<(HeaderValue, String), ApiError> {
        self.check_token(presented)?;
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

    /// Who sends `headers` (Bearer first, then the session cookie).
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
            self.check_token(token.trim())?;
            return Ok(Principal::Bearer);
        }
        self.session(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "not logged in: log in on the page, or send `Authorization: Bearer TOKEN`",
            )
        })
    }
}

/// Whether a request's method changes anything.
pub fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

/// The middleware in front of every API route but login: authenticate,
/// then, for a page session, require the CSRF token on every change.
pub async fn require(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let p = match app.auth.principal(req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Principal::Session { csrf, .. } = &p {
        if changes_state(req.method()) {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or(b"");
            if !bool::from(sent.ct_eq(csrf.as_bytes())) {
                return ApiError::forbidden(
                    "missing or wrong CSRF token: a change from the page sends the X-CSRF-Token it got at login (reload the page)",
                )
                .into_response();
            }
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_slow_every_later_attempt() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, false);
        assert_eq!(
            auth.login("wrong").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        // Even the right token waits its turn.
        assert_eq!(
            auth.login(&text).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        std::thread::sleep(BACKOFF_FIRST + Duration::from_millis(50));
        let (cookie, csrf) = auth.login(&text).unwrap();
        let c = cookie.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        let id = c.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(id).unwrap());
        match auth.principal(&h).unwrap() {
            Principal::Session { csrf: c, .. } => assert_eq!(c, csrf),
            p => panic!("{p:?}"),
        }
        let p = auth.principal(&h).unwrap();
        auth.logout(&p);
        assert!(auth.principal(&h).is_err());
    }

    #[test]
    fn secure_cookies_use_the_host_prefix() {
        let (token, text) = AccessToken::generate();
        let auth = Auth::new(token, true);
        let (cookie, _) = auth.login(&text).unwrap();
        let c = cookie.to_str().unwrap();
        assert!(
            c.starts_with("__Host-sealed-session=") && c.ends_with("; Secure"),
            "{c}"
        );
    }
}
