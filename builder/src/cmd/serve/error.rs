//! What `build-image serve` fails with at start ([`ServeError`]), and the
//! JSON body of every refused request ([`ApiError`]):
//! `{"status": 404, "error": "…"}`. Messages name secrets, scopes, paths
//! and what to do; never a value.

use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServeError {
    /// Arguments that do not go together (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen { addr: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
}

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // The operator sees why (a message never holds a value).
            eprintln!(
                "build-image serve: {} {}",
                self.status.as_u16(),
                self.message
            );
        }
        let body = serde_json::json!({
            "status": self.status.as_u16(),
            "error": self.message,
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"build-image serve\""),
            );
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::InvalidName(_) | StoreError::InvalidScope(_) | StoreError::Value(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::Exists { .. }
            | StoreError::Conflict(_)
            | StoreError::AlreadyInitialised { .. } => StatusCode::CONFLICT,
            StoreError::NotFound { .. } | StoreError::NoSuchVersion { .. } => StatusCode::NOT_FOUND,
            StoreError::NoIdentity { .. }
            | StoreError::BadIdentity { .. }
            | StoreError::NotARecipient { .. } => StatusCode::FORBIDDEN,
            // The store as it is on disk cannot be used: not the client's
            // doing, and nothing was changed.
            StoreError::Integrity { .. }
            | StoreError::OldFormat { .. }
            | StoreError::Untrusted(_)
            | StoreError::Corrupt { .. }
            | StoreError::Recipients { .. }
            | StoreError::NotAStore { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::NotConfirmed(_) | StoreError::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &e {
            StoreError::Exists { name, scope } => format!(
                "secret {name} already exists in scope {scope}: add a new version with PUT /api/secrets/{name} (or `build-image store set {name} --update`)"
            ),
            StoreError::NotFound { name, .. } => format!(
                "no secret {name} in the store: create it with POST /api/secrets (or `build-image store set {name}`)"
            ),
            e => e.to_string(),
        };
        ApiError::new(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_client_or_server_statuses() {
        let name = crate::store::validate_name("bad-name").unwrap_err();
        let e = ApiError::from(name);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("for example WIFI_PSK"), "{}", e.message);
        let e = ApiError::from(StoreError::Exists {
            name: "A".into(),
            scope: "global".into(),
        });
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e = ApiError::from(StoreError::no_identity("x"));
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = ApiError::from(StoreError::integrity(std::path::Path::new("s"), "a", "b"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
