//! Request bodies: JSON only (`Content-Type: application/json`, else 415),
//! at most the server's bound (413, checked on `Content-Length` first and
//! while reading; 4 KiB for the login, which anyone may send), within
//! [`BODY_TIMEOUT`] (408), parsed strictly (unknown fields refused): malformed
//! JSON gets 400 with where it broke, never what it held. Values arrive as
//! [`SecretText`], zeroized on drop and never shown by `Debug`. (The HTTP
//! stack's own buffers are not zeroized.)

use super::error::ApiError;
use super::App;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A JSON body.
pub struct Json<T>(pub T);

/// A JSON body that may be empty (then `T::default()`).
pub struct OptionalJson<T>(pub T);

/// A secret value in a request.
#[derive(Clone)]
pub struct SecretText(pub Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretText({} bytes)", self.0.len())
    }
}

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}

/// How long a request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest body of `POST /api/login` (a token is at most 512 bytes):
/// what anyone who can connect may make the server buffer.
pub const LOGIN_MAX_BODY: usize = 4096;

async fn read(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {limit} bytes (larger values: `build-image store set NAME --from-file FILE`)"
            ),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    let Ok(collected) = tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

/// A serde_json error as a message that never quotes the input.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    let msg = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!("malformed JSON at {at}: send one JSON object")
        }
        Category::Data => format!(
            "the JSON does not fit this request at {at}: {}",
            unquote(&e.to_string())
        ),
    };
    ApiError::bad_request(msg)
}

/// serde's data errors quote strings of the input (`invalid type: string
/// "…"`): those are dropped; field names in backquotes stay.
pub(crate) fn unquote(msg: &str) -> String {
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    // `unknown field `NAME`, expected …`: the name typed is not repeated.
    let owned;
    let msg = match msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
    {
        Some((_, rest)) => {
            owned = format!("unknown field{rest}");
            owned.as_str()
        }
        None => msg,
    };
    let mut out = String::new();
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '"' {
            if !in_quote {
                out.push_str("\"…\"");
            }
            in_quote = !in_quote;
            continue;
        }
        if !in_quote {
            out.push(c);
        }
    }
    out
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| json_error(&e))
}

/// A JSON body of at most `limit` bytes.
pub async fn json_body<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    if !is_json(&req) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let bytes = Zeroizing::new(read(req, limit).await?);
    parse(&bytes)
}

impl<T: DeserializeOwned> FromRequest<Arc<App>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        Ok(Json(json_body(req, app.max_body).await?))
    }
}

impl<T: DeserializeOwned + Default> FromRequest<Arc<App>> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        let bytes = Zeroizing::new(read(req, app.max_body).await?);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                if typed {
                    "send the body as JSON with Content-Type: application/json"
                } else {
                    "a body without Content-Type: send it as JSON with Content-Type: application/json"
                },
            ));
        }
        Ok(OptionalJson(parse(&bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        version: Option<u32>,
        value: Option<SecretText>,
    }

    #[test]
    fn json_errors_never_quote_the_input() {
        for body in [
            r#"{"version": "M4RKER"}"#,
            r#"{"value": 1, "x": "M4RKER"}"#,
            r#"{"value": "M4RKER""#,
            r#"{"M4RKER": 1}"#,
        ] {
            let e = parse::<T>(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(!e.message.contains("M4RKER"), "{body}: {}", e.message);
        }
        let t: T = parse(br#"{"value": "M4RKER"}"#).unwrap();
        assert!(!format!("{t:?}").contains("M4RKER"));
    }
}
