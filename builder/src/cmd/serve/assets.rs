//! The page, embedded in the binary: one HTML file, one script, one style
//! sheet; no framework, no external fonts or scripts (it works offline),
//! nothing inline (the CSP allows only 'self').

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub const INDEX: &str = include_str!("assets/index.html");
pub const SCRIPT: &str = include_str!("assets/app.js");
pub const STYLE: &str = include_str!("assets/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_nothing_inline_and_nothing_external() {
        assert!(INDEX.contains("<script src=\"/app.js\" defer></script>"));
        assert!(INDEX.contains("href=\"/app.css\""));
        // One script tag, with a src; no inline handlers or styles.
        assert_eq!(INDEX.matches("<script").count(), 1);
        for bad in [
            " onclick=",
            " onload=",
            " style=",
            "<style",
            "http://",
            "https://",
            "javascript:",
        ] {
            assert!(!INDEX.contains(bad), "{bad}");
        }
        for bad in ["http://", "https://", "eval(", "innerHTML", "new Function"] {
            assert!(!SCRIPT.contains(bad), "app.js: {bad}");
        }
        assert!(!STYLE.contains("@import") && !STYLE.contains("url("));
    }
}
