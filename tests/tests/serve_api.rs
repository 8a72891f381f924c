//! `build-image serve` over HTTP: every endpoint and status code (400, 401,
//! 403, 404, 405, 409, 413, 415, 421, 429, 503), login, cookie flags, CSRF,
//! the security headers on every response, no CORS, the Host check, TLS,
//! the token's sources, and a marker value that appears in no response but
//! the reveal's, nowhere on stderr and in no store file.

#![forbid(unsafe_code)]

use sealed_image_tests::http::{self, Response};
use sealed_image_tests::serve::{secret_status, snapshot, Server, Site};
use sealed_image_tests::*;
use serde_json::json;

const MARKER: &str = "serve-MARKER-5f2e91";
const MARKER2: &str = "serve-MARKER-rotated-77a1";

/// The headers every response carries.
fn assert_secure_headers(r: &Response, what: &str) {
    let csp = r.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline")
            && !csp.contains("unsafe-eval"),
        "{what}: CSP {csp:?}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-")),
        "{what}: a CORS header in {:?}",
        r.headers
    );
}

/// An error response: the status, a JSON body `{"status", "error"}`.
fn assert_error(r: &Response, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let j = r.json();
    assert_eq!(j["status"], status, "{what}: {j}");
    let msg = j["error"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "{what}: {j}");
    assert_secure_headers(r, what);
    msg
}

/// Every response of a test, for the marker search at the end.
#[derive(Default)]
struct Seen {
    responses: Vec<(String, Response)>,
}

impl Seen {
    fn add(&mut self, what: &str, r: Response) -> Response {
        assert_secure_headers(&r, what);
        self.responses.push((what.to_string(), r.clone()));
        r
    }
}

#[test]
fn every_endpoint_and_its_status_codes() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let mut seen = Seen::default();
    assert_eq!(srv.token.len(), 43, "a random token on the start line");

    // The page and its two files.
    for (path, ct) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let r = seen.add(path, http::request(srv.addr, "GET", path, &[], None));
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(ct), "{path}");
    }

    // Status first: both store secrets missing everywhere, with the command.
    let st = seen.add("status", srv.get("/api/recipes/kiosk/status"));
    assert_eq!(st.status, 200, "{}", st.text());
    let st = st.json();
    assert_eq!(st["ready"], false);
    assert_eq!(st["missing_required"], 2);
    let wifi = secret_status(&st, "wifi_psk");
    assert_eq!(wifi["required"], true);
    assert_eq!(wifi["description"], "WPA2 passphrase of the site Wi-Fi");
    let devices: Vec<&str> = wifi["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["present"], false, "{c}");
            c["device"].as_str().unwrap()
        })
        .collect();
    assert_eq!(devices, ["kiosk-1", "kiosk-2"]);
    let command = wifi["command"].as_str().unwrap();
    assert!(
        command.starts_with("build-image store set WIFI_PSK --store ")
            && command.ends_with("--description 'WPA2 passphrase of the site Wi-Fi'"),
        "{command}"
    );
    // The command, run as printed (value on stdin), creates it.
    let motd = secret_status(&st, "motd");
    assert_eq!(motd["required"], false);
    assert_eq!(motd["source"], "env MOTD_TEXT");

    // Create: 415, 400 (malformed, unknown field, bad name, no value), 201, 409.
    let r = http::request(
        srv.addr,
        "POST",
        "/api/secrets",
        &[
            ("Authorization", &srv.bearer()),
            ("Content-Type", "text/plain"),
        ],
        Some(format!("{{\"name\":\"WIFI_PSK\",\"value\":\"{MARKER}\"}}").as_bytes()),
    );
    assert_error(&seen.add("415", r), 415, "text/plain body");
    let r = http::request(
        srv.addr,
        "POST",
        "/api/secrets",
        &[
            ("Authorization", &srv.bearer()),
            ("Content-Type", "application/json"),
        ],
        Some(format!("{{\"name\":\"WIFI_PSK\",\"value\":\"{MARKER}\"").as_bytes()),
    );
    let m = assert_error(&seen.add("malformed", r), 400, "malformed JSON");
    assert!(m.contains("malformed JSON"), "{m}");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "valeu": MARKER}),
    );
    assert_error(&seen.add("unknown field", r), 400, "unknown field");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "value": 12}),
    );
    assert_error(&seen.add("value not a string", r), 400, "a number as value");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "wifi-psk", "value": MARKER}),
    );
    let m = assert_error(&seen.add("bad name", r), 400, "bad name");
    assert!(m.contains("for example WIFI_PSK"), "an example: {m}");
    let r = srv.send("POST", "/api/secrets", &json!({"name": "WIFI_PSK"}));
    assert_error(&seen.add("no value", r), 400, "no value");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "value": ""}),
    );
    assert_error(&seen.add("empty value", r), 400, "an empty value");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "value": "a", "generate": {}}),
    );
    assert_error(&seen.add("two values", r), 400, "value and generate");
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "value": MARKER, "scope": "rack/1"}),
    );
    assert_error(&seen.add("bad scope", r), 400, "bad scope");
    let r = seen.add(
        "create",
        srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "WIFI_PSK", "description": "WPA2 passphrase of the site Wi-Fi", "value": MARKER}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/api/secrets/WIFI_PSK"));
    assert_eq!(r.json()["version"], 1);
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "WIFI_PSK", "value": "other"}),
    );
    let m = assert_error(&seen.add("409", r), 409, "duplicate");
    assert!(m.contains("already exists"), "{m}");
    let r = seen.add(
        "create tag scope",
        srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "WIFI_PSK", "scope": "tag:lobby", "value": "lobby-psk-value"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = seen.add(
        "create generated",
        srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "API_TOKEN", "description": "fleet API", "generate": {"length": 40, "charset": "hex"}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Bytes that are not UTF-8 travel as base64, both ways.
    let r = seen.add(
        "create binary",
        srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "BLOB", "value_base64": "AP8Q/g=="}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = srv.send("POST", "/api/secrets/BLOB/value", &json!({}));
    assert_eq!(
        (
            r.json()["encoding"].as_str(),
            r.json()["value_base64"].as_str()
        ),
        (Some("base64"), Some("AP8Q/g=="))
    );
    let r = srv.send(
        "POST",
        "/api/secrets",
        &json!({"name": "BLOB2", "value_base64": "not base64!"}),
    );
    assert_error(&seen.add("bad base64", r), 400, "not base64");
    let r = http::request(
        srv.addr,
        "DELETE",
        "/api/secrets/BLOB",
        &[("Authorization", &srv.bearer())],
        None,
    );
    assert_eq!(r.status, 200);

    // 413: announced by Content-Length (refused before the body is read),
    // and sent chunked (refused once the bound is passed).
    let head = format!(
        "POST /api/secrets HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        srv.addr,
        srv.bearer(),
        2 << 20
    );
    assert_error(
        &seen.add("413", http::raw(srv.addr, head.as_bytes())),
        413,
        "2 MiB announced",
    );
    let mut chunked = format!(
        "POST /api/secrets HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr,
        srv.bearer()
    )
    .into_bytes();
    for _ in 0..17 {
        let part = "y".repeat(64 * 1024);
        chunked.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_error(
        &seen.add("413 chunked", http::raw(srv.addr, &chunked)),
        413,
        "chunked 1.06 MiB",
    );

    // List: metadata only.
    let r = seen.add("list", srv.get("/api/secrets"));
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["verified"], true);
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["API_TOKEN", "WIFI_PSK"]);
    let wifi = &list["secrets"][1];
    assert_eq!(wifi["description"], "WPA2 passphrase of the site Wi-Fi");
    let g = &wifi["scopes"][0];
    assert_eq!(g["scope"], "global");
    assert_eq!(g["current"], 1);
    for k in ["created_at", "created_by", "updated_at", "updated_by"] {
        assert!(g[k].as_str().is_some_and(|v| !v.is_empty()), "{k}: {g}");
    }
    assert_eq!(g["created_by"], "alice via build-image serve");

    // Get one; 404; 400 for a bad name in the path.
    let r = seen.add("get", srv.get("/api/secrets/WIFI_PSK"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["scopes"][0]["versions"][0]["operation"], "set");
    assert_error(
        &seen.add("get 404", srv.get("/api/secrets/NOPE")),
        404,
        "get missing",
    );
    assert_error(
        &seen.add("get 400", srv.get("/api/secrets/lower")),
        400,
        "get bad name",
    );

    // Update: a value makes a new version; a description alone does not.
    let r = seen.add(
        "update value",
        srv.send("PUT", "/api/secrets/WIFI_PSK", &json!({"value": MARKER2})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = seen.add(
        "update description",
        srv.send(
            "PUT",
            "/api/secrets/WIFI_PSK",
            &json!({"description": "Site Wi-Fi passphrase"}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
    let got = srv.get("/api/secrets/WIFI_PSK").json();
    assert_eq!(got["description"], "Site Wi-Fi passphrase");
    assert_eq!(
        got["scopes"][0]["current"], 2,
        "the description made no version"
    );
    let r = srv.send("PUT", "/api/secrets/WIFI_PSK", &json!({}));
    assert_error(&seen.add("update nothing", r), 400, "nothing to change");
    let r = srv.send("PUT", "/api/secrets/NOPE", &json!({"value": "x"}));
    assert_error(&seen.add("update 404", r), 404, "update missing");
    let r = srv.send(
        "PUT",
        "/api/secrets/WIFI_PSK",
        &json!({"description": "two\nlines"}),
    );
    assert_error(
        &seen.add("update control char", r),
        400,
        "newline in description",
    );

    // Rotate: a generated secret regenerates; one typed needs a value.
    let r = seen.add(
        "rotate generated",
        http::request(
            srv.addr,
            "POST",
            "/api/secrets/API_TOKEN/rotate",
            &[("Authorization", &srv.bearer())],
            None,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = srv.send("POST", "/api/secrets/WIFI_PSK/rotate", &json!({}));
    let m = assert_error(&seen.add("rotate typed", r), 400, "rotate without value");
    assert!(m.contains("not generated"), "{m}");
    let r = srv.send("POST", "/api/secrets/NOPE/rotate", &json!({}));
    assert_error(&seen.add("rotate 404", r), 404, "rotate missing");

    // Reveal: the value, audited, not cacheable; each version; 404.
    let r = srv.send("POST", "/api/secrets/WIFI_PSK/value", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_secure_headers(&r, "reveal");
    let v = r.json();
    assert_eq!(
        (v["value"].as_str(), v["version"].as_u64()),
        (Some(MARKER2), Some(2))
    );
    let r1 = srv.send(
        "POST",
        "/api/secrets/WIFI_PSK/value",
        &json!({"version": 1}),
    );
    assert_eq!(r1.json()["value"], MARKER);
    let t1 = srv.send(
        "POST",
        "/api/secrets/API_TOKEN/value",
        &json!({"version": 1}),
    );
    let t2 = srv.send("POST", "/api/secrets/API_TOKEN/value", &json!({}));
    let (t1, t2) = (t1.json(), t2.json());
    assert_eq!(t1["value"].as_str().unwrap().len(), 40);
    assert_ne!(t1["value"], t2["value"], "rotation made a new random value");
    let r = srv.send(
        "POST",
        "/api/secrets/WIFI_PSK/value",
        &json!({"version": 9}),
    );
    assert_error(&seen.add("reveal 404 version", r), 404, "no version 9");
    let r = srv.send("POST", "/api/secrets/NOPE/value", &json!({}));
    assert_error(&seen.add("reveal 404", r), 404, "reveal missing");

    // History and audit (filtered).
    let r = seen.add("history", srv.get("/api/secrets/WIFI_PSK/history"));
    assert_eq!(r.status, 200);
    let h = r.json();
    let ops: Vec<&str> = h["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["get", "get", "describe", "update", "set", "set"],
        "{h}"
    );
    assert_error(
        &seen.add("history 404", srv.get("/api/secrets/NOPE/history")),
        404,
        "history missing",
    );
    let r = seen.add("audit", srv.get("/api/audit?name=WIFI_PSK&op=get"));
    assert_eq!(r.status, 200);
    let a = r.json();
    assert_eq!(a["matching"], 2, "{a}");
    assert!(a["entries"][0]["by"]
        .as_str()
        .unwrap()
        .ends_with("via build-image serve"));
    let r = seen.add("audit limit", srv.get("/api/audit?limit=1"));
    assert_eq!(r.json()["entries"].as_array().unwrap().len(), 1);
    let r = seen.add("audit by", srv.get("/api/audit?by=nobody"));
    assert_eq!(r.json()["matching"], 0);
    assert_error(
        &seen.add("audit bad query", srv.get("/api/audit?colour=red")),
        400,
        "unknown query key",
    );
    assert_error(
        &seen.add("audit bad limit", srv.get("/api/audit?limit=lots")),
        400,
        "limit not a number",
    );
    // The CLI sees the server's reads in the same, verified log.
    let out = site
        .store_cmd(&["audit", "--verify", "--json"])
        .output()
        .unwrap();
    assert_success(&out, "store audit --verify after the server's changes");

    // Status now: ✓ with where each value comes from; the matrix.
    let st = seen
        .add("status after", srv.get("/api/recipes/kiosk/status"))
        .json();
    assert_eq!(st["ready"], true, "{st}");
    let wifi = secret_status(&st, "wifi_psk");
    assert_eq!(wifi["devices"][0]["from"], "store WIFI_PSK tag:lobby v1");
    assert_eq!(wifi["devices"][1]["from"], "store WIFI_PSK global v2");
    assert!(wifi.get("command").is_none());
    let m = seen.add("matrix", srv.get("/api/recipes/kiosk/matrix"));
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["devices"][0]["device"], "kiosk-1");
    assert_eq!(m["devices"][0]["tags"][0], "lobby");
    assert_error(
        &seen.add("status 404", srv.get("/api/recipes/nope/status")),
        404,
        "no such recipe",
    );
    let r = seen.add("recipes", srv.get("/api/recipes"));
    assert_eq!(r.json()["recipes"][0]["id"], "kiosk");

    // Delete: one scope, then the rest; 404 after; 400 for a bad scope.
    let r = http::request(
        srv.addr,
        "DELETE",
        "/api/secrets/WIFI_PSK?scope=tag:lobby",
        &[("Authorization", &srv.bearer())],
        None,
    );
    assert_eq!(
        seen.add("delete scope", r.clone()).status,
        200,
        "{}",
        r.text()
    );
    assert_eq!(r.json()["removed"][0], "tag:lobby");
    let del = |path: &str| {
        http::request(
            srv.addr,
            "DELETE",
            path,
            &[("Authorization", &srv.bearer())],
            None,
        )
    };
    assert_error(
        &seen.add("delete bad scope", del("/api/secrets/WIFI_PSK?scope=x")),
        400,
        "bad scope",
    );
    let r = seen.add("delete", del("/api/secrets/WIFI_PSK"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(
        &seen.add("delete 404", del("/api/secrets/WIFI_PSK")),
        404,
        "delete again",
    );
    let st = seen
        .add("status after delete", srv.get("/api/recipes/kiosk/status"))
        .json();
    assert_eq!(st["missing_required"], 1);

    // 404 and 405 as JSON.
    assert_error(
        &seen.add("404 route", srv.get("/api/nothing")),
        404,
        "unknown route",
    );
    let r = http::request(
        srv.addr,
        "PATCH",
        "/api/secrets",
        &[("Authorization", &srv.bearer())],
        None,
    );
    assert_error(&seen.add("405", r), 405, "PATCH");

    // The marker: in no response above (the reveals were not added), not
    // on stderr, not in any store file.
    for (what, r) in &seen.responses {
        for m in [MARKER, MARKER2] {
            assert!(
                !r.dump().contains(m),
                "{what} holds the marker: {}",
                r.dump()
            );
        }
    }
    let err = srv.stderr_text();
    assert!(!err.contains(MARKER) && !err.contains(MARKER2), "{err}");
    for (path, bytes) in snapshot(&site.store) {
        assert!(
            !contains(&bytes, MARKER.as_bytes()) && !contains(&bytes, MARKER2.as_bytes()),
            "{} holds the marker",
            path.display()
        );
    }
    let status = srv.stop();
    assert!(status.success(), "SIGTERM stops it cleanly: {status}");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `sealed-session=…` pair of a Set-Cookie header.
fn cookie_pair(r: &Response) -> String {
    r.header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", r.headers))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn login_cookie_csrf_and_slowed_failures() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;

    // No credentials, a malformed header, a wrong Bearer token: 401.
    assert_error(
        &http::request(a, "GET", "/api/secrets", &[], None),
        401,
        "none",
    );
    assert_error(
        &http::request(
            a,
            "GET",
            "/api/secrets",
            &[("Authorization", "Basic eDp5")],
            None,
        ),
        401,
        "basic",
    );
    // Login: 415 and 400 before any token is checked.
    let r = http::request(
        a,
        "POST",
        "/api/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(format!("token={}", srv.token).as_bytes()),
    );
    assert_error(&r, 415, "a form post");
    let r = http::request(
        a,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        Some(b"{\"token\":"),
    );
    assert_error(&r, 400, "malformed");
    // A wrong token: 401; right after it even the right one waits (429).
    let r = http::json(
        a,
        "POST",
        "/api/login",
        &[],
        &json!({"token": "wrong-token-wrong-token"}),
    );
    assert_error(&r, 401, "wrong token");
    let r = http::json(a, "POST", "/api/login", &[], &json!({"token": srv.token}));
    let m = assert_error(&r, 429, "during the backoff");
    assert!(r.header("retry-after").is_some(), "{m}");
    let r = srv.get("/api/secrets");
    assert_error(&r, 429, "Bearer during the backoff");
    std::thread::sleep(std::time::Duration::from_millis(400));
    // Two failures in a row: a longer wait.
    let r = http::json(
        a,
        "POST",
        "/api/login",
        &[],
        &json!({"token": "wrong-token-wrong-token"}),
    );
    assert_error(&r, 401, "wrong again");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = http::json(a, "POST", "/api/login", &[], &json!({"token": srv.token}));
    assert_error(&r, 429, "the second wait is longer than the first");
    std::thread::sleep(std::time::Duration::from_millis(500));

    let r = http::json(a, "POST", "/api/login", &[], &json!({"token": srv.token}));
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag}: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: {set}");
    assert!(!set.contains(&srv.token), "{set}");
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    let cookie = cookie_pair(&r);
    let s = http::request(
        a,
        "GET",
        "/api/session",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["csrf"], csrf.as_str());
    assert_eq!(s.json()["authenticated_by"], "session");

    // A change with the cookie: 403 without the CSRF token or with a wrong one.
    let body = json!({"name": "WIFI_PSK", "value": "v"});
    let r = http::json(a, "POST", "/api/secrets", &[("Cookie", &cookie)], &body);
    let m = assert_error(&r, 403, "no CSRF token");
    assert!(m.contains("CSRF"), "{m}");
    let r = http::json(
        a,
        "POST",
        "/api/secrets",
        &[("Cookie", &cookie), ("X-CSRF-Token", "forged")],
        &body,
    );
    assert_error(&r, 403, "wrong CSRF token");
    let r = http::request(
        a,
        "DELETE",
        "/api/secrets/WIFI_PSK",
        &[("Cookie", &cookie)],
        None,
    );
    assert_error(&r, 403, "DELETE without CSRF");
    assert!(
        site.store
            .join("secrets")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "nothing was created"
    );
    let r = http::json(
        a,
        "POST",
        "/api/secrets",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Reads need the CSRF token too (see serve_hardening); a Bearer
    // client needs none.
    assert_eq!(
        http::request(
            a,
            "GET",
            "/api/secrets",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            None
        )
        .status,
        200
    );
    let r = srv.send("PUT", "/api/secrets/WIFI_PSK", &json!({"value": "v2"}));
    assert_eq!(r.status, 200, "{}", r.text());
    // A made-up session: 401.
    let r = http::request(
        a,
        "GET",
        "/api/secrets",
        &[("Cookie", "sealed-session=made-up")],
        None,
    );
    assert_error(&r, 401, "unknown session");

    // Logout ends the session and clears the cookie.
    let r = http::request(
        a,
        "POST",
        "/api/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = http::request(a, "GET", "/api/secrets", &[("Cookie", &cookie)], None);
    assert_error(&r, 401, "after logout");
}

#[test]
fn cross_site_requests_cors_and_foreign_hosts_are_refused() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;
    let bearer = srv.bearer();
    // A preflight: 403, no Access-Control-* header.
    let r = http::request(
        a,
        "OPTIONS",
        "/api/secrets",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    assert_error(&r, 403, "preflight");
    // A simple GET with an Origin gets no CORS header either.
    let r = http::request(
        a,
        "GET",
        "/api/secrets",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    assert_secure_headers(&r, "GET with an Origin");
    // A change from another site's page: 403, even with the token.
    let body = json!({"name": "EVIL", "value": "x"});
    let r = http::json(
        a,
        "POST",
        "/api/secrets",
        &[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
        &body,
    );
    assert_error(&r, 403, "foreign Origin");
    let r = http::json(
        a,
        "POST",
        "/api/secrets",
        &[("Sec-Fetch-Site", "cross-site"), ("Authorization", &bearer)],
        &body,
    );
    assert_error(&r, 403, "Sec-Fetch-Site: cross-site");
    let own = format!("http://{a}");
    let r = http::json(
        a,
        "POST",
        "/api/secrets",
        &[
            ("Origin", &own),
            ("Sec-Fetch-Site", "same-origin"),
            ("Authorization", &bearer),
        ],
        &json!({"name": "OWN", "value": "x"}),
    );
    assert_eq!(r.status, 201, "our own origin: {}", r.text());
    // DNS rebinding: a foreign Host name gets 421 before anything else.
    for host in ["evil.example", "evil.example:80", "localhost:1"] {
        let r = http::request(
            a,
            "GET",
            "/api/secrets",
            &[("Host", host), ("Authorization", &bearer)],
            None,
        );
        assert_error(&r, 421, host);
    }
    let r = http::request(
        a,
        "GET",
        "/",
        &[("Host", &format!("localhost:{}", a.port()))],
        None,
    );
    assert_eq!(r.status, 200, "localhost with our port");
    // HTTP/1.0 without a Host header.
    let r = http::raw(a, b"GET /api/secrets HTTP/1.0\r\n\r\n");
    assert_error(&r, 400, "no Host");
    assert_eq!(
        site.store
            .join("secrets/EVIL")
            .symlink_metadata()
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn without_an_identity_the_server_is_read_only_and_says_unverified() {
    let site = Site::new();
    let out = output_with_stdin(&mut site.store_cmd(&["set", "WIFI_PSK"]), MARKER.as_bytes());
    assert_success(&out, "store set");
    let mut cmd = site.serve_cmd();
    // No --identity: drop it from the arguments.
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let i = args.iter().position(|a| a == "--identity").unwrap();
    let mut c = build_image_cmd();
    c.args(&args[..i]).args(&args[i + 2..]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.current_dir(&site.dir);
    cmd = c;
    let srv = Server::start(cmd);
    assert!(srv.stderr_text().contains("UNVERIFIED and read-only"));
    let r = srv.get("/api/secrets");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["verified"], false);
    let m = assert_error(
        &srv.send("POST", "/api/secrets/WIFI_PSK/value", &json!({})),
        403,
        "reveal without identity",
    );
    assert!(m.contains("--identity"), "{m}");
    assert_error(
        &srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "NEW", "value": "x"}),
        ),
        403,
        "create without identity",
    );
    assert_error(
        &srv.send("PUT", "/api/secrets/WIFI_PSK", &json!({"value": "x"})),
        403,
        "update without identity",
    );
    let st = srv.get("/api/recipes/kiosk/status").json();
    assert_eq!(st["verified"], false);
    assert_eq!(srv.get("/api/session").json()["can_change"], false);
}

#[test]
fn a_tampered_store_is_refused_and_left_as_it_is() {
    let site = Site::new();
    let out = output_with_stdin(&mut site.store_cmd(&["set", "WIFI_PSK"]), b"v1");
    assert_success(&out, "store set");
    let srv = Server::start(site.serve_cmd());
    // A read before: what it verified is no licence for later reads.
    assert_eq!(srv.get("/api/secrets").status, 200);
    let meta = site.store.join("secrets/WIFI_PSK/meta.toml");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        text.replace("description = \"\"", "description = \"edited\""),
    )
    .unwrap();
    let before = snapshot(&site.store);
    let m = assert_error(&srv.get("/api/secrets"), 503, "tampered list");
    assert!(
        m.contains("meta.toml") && m.contains("without the store key"),
        "{m}"
    );
    assert_error(
        &srv.send(
            "POST",
            "/api/secrets",
            &json!({"name": "NEW", "value": "x"}),
        ),
        503,
        "tampered create",
    );
    assert_error(
        &srv.send("POST", "/api/secrets/WIFI_PSK/value", &json!({})),
        503,
        "tampered reveal",
    );
    assert_eq!(before, snapshot(&site.store), "nothing changed");
}

#[test]
fn non_loopback_needs_tls_or_the_proxy_flag() {
    let site = Site::new();
    let mut c = build_image_cmd();
    c.args(["serve", "--listen", "0.0.0.0:0", "--store"])
        .arg(&site.store)
        .current_dir(&site.dir);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let e = text(&out);
    assert!(
        e.contains("--tls-cert") && e.contains("--insecure-behind-proxy"),
        "{e}"
    );
    let mut c = build_image_cmd();
    c.args(["serve", "--recipe"])
        .arg(&site.recipe)
        .args(["--recipe"])
        .arg(&site.recipe)
        .arg("--devices")
        .arg(&site.devices);
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--devices with two recipes: {}",
        text(&out)
    );

    // Behind a proxy: it starts; the cookie is Secure (the proxy serves https).
    let mut c = site.serve_cmd_on("0.0.0.0:0");
    c.arg("--insecure-behind-proxy");
    let srv = Server::start(c);
    let local: std::net::SocketAddr = format!("127.0.0.1:{}", srv.addr.port()).parse().unwrap();
    let r = http::json(
        local,
        "POST",
        "/api/login",
        &[],
        &json!({"token": srv.token}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.starts_with("__Host-sealed-session=") && set.contains("; Secure"),
        "{set}"
    );
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[ignore = "needs openssl, curl; scripts/test runs it"]
fn tls_with_the_given_certificate() {
    require_tools_from(&[("openssl", "openssl"), ("curl", "curl")]);
    let site = Site::new();
    let cert = site.dir.join("cert.pem");
    let key = site.dir.join("key.pem");
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
        ],
    );
    let mut c = site.serve_cmd();
    c.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
    let srv = Server::start(c);
    assert!(srv.https, "the start line says https");
    let url = format!("https://127.0.0.1:{}/api/login", srv.addr.port());
    let out = command("curl")
        .args([
            "-sS",
            "-i",
            "--cacert",
            s(&cert),
            "-H",
            "Content-Type: application/json",
            "--data",
        ])
        .arg(json!({"token": srv.token}).to_string())
        .arg(&url)
        .output()
        .unwrap();
    assert_success(&out, "curl over TLS");
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.starts_with("HTTP/1.1 200"), "{t}");
    let set = t
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        set.contains("__Host-sealed-session=")
            && set.contains("Secure")
            && set.contains("HttpOnly"),
        "{set}"
    );
    // Plain HTTP to the TLS port gets no page.
    let plain = std::net::TcpStream::connect(srv.addr).map(|mut s| {
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    });
    assert!(!String::from_utf8_lossy(&plain.unwrap_or_default()).contains("<html"));
    // A certificate that is not PEM: usage error, exit 2.
    let mut c = site.serve_cmd();
    c.arg("--tls-cert")
        .arg(&site.recipe)
        .arg("--tls-key")
        .arg(&key);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_token_from_a_file_or_the_environment_is_never_printed_nor_passed_on() {
    let site = Site::new();
    // A recipe whose command source records the environment it gets.
    let env_file = site.dir.join("child-env.txt");
    let recipe = site.dir.join("envcheck.toml");
    std::fs::write(
        &recipe,
        format!(
            "[image]\nname = \"envcheck\"\n[[partition]]\nlabel = \"ESP\"\ntype = \"esp\"\nsize = \"64MiB\"\nsecrets = true\n\
             [secrets.probe]\ntype = \"single-line\"\nsource = {{ command = [\"sh\", \"-c\", \"env > {}; echo x\"] }}\n",
            env_file.display()
        ),
    )
    .unwrap();
    let token = "file-token-0123456789-abcdef";
    let token_file = site.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut c2 = build_image_cmd();
    // --deep: the setup view runs command sources (the probe).
    c2.args(["serve", "--deep", "--listen", "127.0.0.1:0", "--store"])
        .arg(&site.store)
        .arg("--recipe")
        .arg(&recipe)
        .arg("--identity")
        .arg(&site.key)
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("SEALED_IMAGE_SERVE_TOKEN")
        .current_dir(&site.dir);
    let srv = Server::start(c2);
    assert!(!srv.stderr_text().contains(token), "{}", srv.stderr_text());
    let r = http::request(
        srv.addr,
        "GET",
        "/api/recipes/envcheck/status",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["secrets"][0]["devices"][0]["present"], true);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("PATH="), "the command ran: {env}");
    assert!(!env.contains("SEALED_IMAGE_STORE_IDENTITY"), "{env}");
    drop(srv);

    // From the environment: it works, and no child sees it.
    std::fs::remove_file(&env_file).unwrap();
    let env_token = "env-token-0123456789-abcdef-xyz";
    let mut c = build_image_cmd();
    c.args(["serve", "--deep", "--listen", "127.0.0.1:0", "--store"])
        .arg(&site.store)
        .arg("--recipe")
        .arg(&recipe)
        .env("SEALED_IMAGE_SERVE_TOKEN", env_token)
        .env("SEALED_IMAGE_STORE_IDENTITY_FILE", &site.key)
        .current_dir(&site.dir);
    let srv = Server::start(c);
    assert!(!srv.stderr_text().contains(env_token));
    let r = http::request(
        srv.addr,
        "GET",
        "/api/recipes/envcheck/status",
        &[("Authorization", &format!("Bearer {env_token}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains(env_token) && !env.contains("SEALED_IMAGE_SERVE_TOKEN"),
        "{env}"
    );
    assert!(!env.contains("SEALED_IMAGE_STORE_IDENTITY"), "{env}");
    // A token too short: exit 2, not quoted.
    let mut c = build_image_cmd();
    c.args(["serve", "--store"])
        .arg(&site.store)
        .env("SEALED_IMAGE_SERVE_TOKEN", "short-tok")
        .current_dir(&site.dir);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("short-tok"));
}

#[test]
fn recipes_found_in_a_directory_and_an_identity_that_is_no_member() {
    // The store demo, copied: found with its devices file beside it; a
    // broken recipe beside it is skipped with a note.
    let tmp = tempfile::tempdir().unwrap();
    let recipes = tmp.path().join("recipes");
    std::fs::create_dir_all(recipes.join("broken")).unwrap();
    std::fs::write(recipes.join("broken/recipe.toml"), "[image\n").unwrap();
    sh(
        &format!(
            "cp -r {} {}",
            workspace().join("image-recipes/store-demo").display(),
            recipes.display()
        ),
        tmp.path(),
    );
    let demo = recipes.join("store-demo");
    let mut c = build_image_cmd();
    c.args(["serve", "--listen", "127.0.0.1:0", "--recipes"])
        .arg(&recipes)
        .arg("--identity")
        .arg(demo.join("DEMO-ONLY-identity.txt"))
        .env_remove("SEALED_IMAGE_STORE_IDENTITY")
        .env_remove("SEALED_IMAGE_STORE_IDENTITY_FILE")
        .env_remove("SEALED_IMAGE_STORE_ID")
        .current_dir(tmp.path());
    let srv = Server::start(c);
    assert!(
        srv.stderr_text().contains("skipping") && srv.stderr_text().contains("broken"),
        "{}",
        srv.stderr_text()
    );
    let list = srv.get("/api/recipes").json();
    let ids: Vec<&str> = list["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["store-demo"], "{list}");
    let st = srv.get("/api/recipes/store-demo/status").json();
    assert_eq!(st["ready"], true, "{st}");
    let wifi = secret_status(&st, "wifi_psk");
    let from: Vec<&str> = wifi["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["from"].as_str().unwrap())
        .collect();
    assert_eq!(
        from,
        [
            "store WIFI_PSK tag:lobby v1",
            "store WIFI_PSK global v1",
            "store WIFI_PSK device:kiosk-003 v1"
        ]
    );
    drop(srv);

    // An identity that is not a member cannot open the store: exit 10.
    let site = Site::new();
    let stranger = tmp.path().join("stranger.key");
    std::fs::write(
        &stranger,
        format!("{}\n", {
            use age::secrecy::ExposeSecret;
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .to_string()
        }),
    )
    .unwrap();
    let mut c = build_image_cmd();
    c.args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(&site.store)
        .arg("--identity")
        .arg(&stranger)
        .current_dir(&site.dir);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    // A recipe that reads another store than the one served: exit 2.
    let mut c = build_image_cmd();
    c.args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(demo.join("secrets-store"))
        .arg("--recipe")
        .arg(&site.recipe)
        .current_dir(&site.dir);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("serve one store at a time"),
        "{}",
        text(&out)
    );
}
