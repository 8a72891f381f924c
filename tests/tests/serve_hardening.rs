//! `build-image serve` against an attacker: a page of another site or of
//! another port of the same host (cookies are not bound to a port: the
//! cookie alone opens nothing), a local user without the token (slow or
//! idle clients, many connections, wrong tokens in parallel from another
//! address, a port squatted before the start), a recipe whose command
//! sources would run at every refresh, strange URL segments and racing
//! creates, and a careless admin (a certificate that is a pipe, key and
//! token files that other users can read).

#![forbid(unsafe_code)]

use sealed_image_tests::http::{self, Response};
use sealed_image_tests::serve::{secret_status, Server, Site};
use sealed_image_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn assert_error(r: &Response, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let j = r.json();
    assert_eq!(j["status"], status, "{what}: {j}");
    j["error"].as_str().unwrap_or_default().to_string()
}

const COMMAND_RECIPE: &str = r#"
[secrets.vault_token]
type = "single-line"
description = "Token from the vault"
source = { command = ["sh", "-c", "echo ran >> command-ran; echo from-the-vault"] }
"#;

/// The setup view runs no command source (as `check` without `--deep`)
/// (a recipe in the served directory would otherwise run its commands at
/// every refresh of every open page); their cells say so and the recipe is
/// not called ready. `serve --deep` runs them.
#[test]
fn the_setup_view_runs_no_command_source_unless_deep() {
    let site = Site::new();
    let recipe = std::fs::read_to_string(&site.recipe).unwrap() + COMMAND_RECIPE;
    std::fs::write(&site.recipe, recipe).unwrap();
    let ran = site.dir.join("command-ran");
    let out = site
        .store_cmd(&["set", "WIFI_PSK", "--generate", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "set WIFI_PSK");
    let out = site
        .store_cmd(&["set", "API_TOKEN", "--generate", "-q"])
        .output()
        .unwrap();
    assert_success(&out, "set API_TOKEN");

    let srv = Server::start(site.serve_cmd());
    let st = srv.get("/api/recipes/kiosk/status");
    assert_eq!(st.status, 200, "{}", st.text());
    let m = srv.get("/api/recipes/kiosk/matrix");
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(
        !ran.exists(),
        "the setup view ran a command source: {}",
        st.text()
    );
    let st = st.json();
    let vault = secret_status(&st, "vault_token");
    assert_eq!(vault["complete"], false, "{vault}");
    assert_eq!(vault["unchecked"], true, "{vault}");
    for cell in vault["devices"].as_array().unwrap() {
        assert_eq!(cell["present"], false, "{cell}");
        assert_eq!(cell["unchecked"], true, "{cell}");
        assert!(
            cell["how"].as_str().unwrap_or("").contains("--deep"),
            "{cell}"
        );
    }
    assert_eq!(st["ready"], false, "{st}");
    assert_eq!(st["unchecked_required"], 1, "{st}");
    assert_eq!(st["missing_required"], 0, "{st}");
    drop(srv);

    // With --deep the command runs, its value found and dropped.
    let mut c = site.serve_cmd();
    c.arg("--deep");
    let srv = Server::start(c);
    let st = srv.get("/api/recipes/kiosk/status");
    assert_eq!(st.status, 200, "{}", st.text());
    assert!(ran.exists(), "--deep runs command sources");
    assert!(!st.text().contains("from-the-vault"), "{}", st.text());
    let st = st.json();
    assert_eq!(st["ready"], true, "{st}");
    assert_eq!(st["unchecked_required"], 0, "{st}");
}

/// Read from `s` until the server closes the connection; what it sent.
/// `None` if it still held the connection open after `limit`.
fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Some(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline {
                    return None;
                }
            }
            Err(_) => return Some(buf),
        }
    }
}

/// Slowloris and friends: a body that never comes, a second request whose
/// headers never end, an idle keep-alive connection are all cut off; a
/// flood of connections holds a bounded number of descriptors, and the
/// server serves again once it ends. Login bodies are small.
#[test]
fn slow_idle_and_many_clients_are_bounded() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;
    let host = format!("Host: {a}\r\n");
    // What the server may take at most (generous: it cuts off at 10 s).
    let limit = Duration::from_secs(60);

    // The three are connected in this order, and the last has its first
    // answer, before the flood starts: the server accepts in order, so all
    // three hold a connection (none is one too many).
    let mut body_conn = TcpStream::connect(a).unwrap();
    body_conn
        .write_all(
            format!("POST /api/login HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"tok").as_bytes(),
        )
        .unwrap();
    let mut idle_conn = TcpStream::connect(a).unwrap();
    idle_conn
        .write_all(format!("GET /app.css HTTP/1.1\r\n{host}\r\n").as_bytes())
        .unwrap();
    let mut head_conn = TcpStream::connect(a).unwrap();
    head_conn
        .write_all(format!("GET /app.css HTTP/1.1\r\n{host}\r\n").as_bytes())
        .unwrap();
    let mut first = [0u8; 1024];
    let _ = head_conn.read(&mut first).unwrap();
    head_conn.write_all(b"GET / HTTP/1.1\r\nHost: 127").unwrap();
    let slow_body = std::thread::spawn(move || until_closed(&mut body_conn, limit));
    let slow_second_head = std::thread::spawn(move || until_closed(&mut head_conn, limit));
    let idle = std::thread::spawn(move || until_closed(&mut idle_conn, limit));

    // A login body larger than any token: 413 without reading it all.
    let big = format!("{{\"token\": \"{}\"}}", "x".repeat(64 * 1024));
    let r = http::request(
        a,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        Some(big.as_bytes()),
    );
    assert_error(&r, 413, "a 64 KiB login body");

    // A flood of connections that send nothing.
    let before = srv.open_fds();
    let mut flood = Vec::new();
    for _ in 0..600 {
        match TcpStream::connect(a) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = srv.open_fds();
    assert!(
        during <= before + 300,
        "{} connections made the server hold {during} descriptors (it held {before})",
        flood.len()
    );
    drop(flood);
    // Served again once the flood ends.
    let deadline = Instant::now() + limit;
    loop {
        let ok = std::panic::catch_unwind(|| srv.get("/api/secrets").status == 200);
        if ok.unwrap_or(false) {
            break;
        }
        assert!(Instant::now() < deadline, "not served after the flood");
        std::thread::sleep(Duration::from_millis(200));
    }

    let body = slow_body.join().unwrap();
    assert!(
        body.is_some(),
        "a body that never comes holds the connection"
    );
    let body = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
    assert!(
        body.is_empty() || body.starts_with("HTTP/1.1 408"),
        "a body that never comes: {body}"
    );
    assert!(
        slow_second_head.join().unwrap().is_some(),
        "headers that never end hold the connection"
    );
    assert!(
        idle.join().unwrap().is_some(),
        "an idle keep-alive connection is held for ever"
    );
}

/// Wrong tokens slow down the address that sends them, not the admin's:
/// a flood of wrong logins and Bearer tokens from 127.0.0.2 (another
/// client) gets one try per wait, even in parallel, and the right token
/// from 127.0.0.1 logs in at once.
#[test]
fn wrong_tokens_slow_only_their_source_even_in_parallel() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let login = |from: std::net::IpAddr, token: &str| {
        let body = serde_json::json!({ "token": token }).to_string();
        http::request_from(
            from,
            a,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    let start = std::sync::Arc::new(std::sync::Barrier::new(12));
    let flood: Vec<_> = (0..12)
        .map(|i| {
            let start = start.clone();
            let bearer = format!("Bearer wrong-token-number-{i}");
            std::thread::spawn(move || {
                start.wait();
                if i % 2 == 0 {
                    let body = serde_json::json!({ "token": format!("wrong-{i}") }).to_string();
                    http::request_from(
                        attacker,
                        a,
                        "POST",
                        "/api/login",
                        &[("Content-Type", "application/json")],
                        Some(body.as_bytes()),
                    )
                    .status
                } else {
                    http::request_from(
                        attacker,
                        a,
                        "GET",
                        "/api/secrets",
                        &[("Authorization", &bearer)],
                        None,
                    )
                    .status
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        1,
        "parallel wrong tokens were each checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // The attacker's address waits, even with the right token...
    let r = login(attacker, &srv.token);
    let e = assert_error(&r, 429, "the right token from the slowed address");
    assert!(r.header("retry-after").is_some(), "{e}");
    // ...the admin's does not.
    let r = login("127.0.0.1".parse().unwrap(), &srv.token);
    assert_eq!(r.status, 200, "the admin was locked out: {}", r.text());
    let r = http::request(
        a,
        "GET",
        "/api/secrets",
        &[("Authorization", &srv.bearer())],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Browsers send a `localhost` cookie to every port of the host, so a
/// server another local user runs on another port gets the session cookie
/// when the admin's browser visits it. Alone, it opens nothing: every
/// request of a page session, reads too, needs the session's CSRF token
/// (which the page keeps in its origin's sessionStorage), and no response
/// to the cookie alone hands out that token.
#[test]
fn a_session_cookie_alone_opens_nothing() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;
    srv.create_secret("WIFI_PSK", "cookie-alone-marker");
    let r = http::json(
        a,
        "POST",
        "/api/login",
        &[],
        &serde_json::json!({"token": srv.token}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for path in [
        "/api/session",
        "/api/secrets",
        "/api/secrets/WIFI_PSK",
        "/api/secrets/WIFI_PSK/history",
        "/api/audit",
        "/api/recipes",
        "/api/recipes/kiosk/status",
    ] {
        for headers in [
            vec![("Cookie", cookie.as_str())],
            vec![("Cookie", cookie.as_str()), ("X-CSRF-Token", "forged")],
        ] {
            let r = http::request(a, "GET", path, &headers, None);
            let m = assert_error(&r, 403, &format!("GET {path} with the cookie alone"));
            assert!(m.contains("CSRF"), "{m}");
            assert!(
                !r.text().contains(&csrf),
                "{path} handed out the CSRF token"
            );
        }
        let r = http::request(
            a,
            "GET",
            path,
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            None,
        );
        assert_eq!(r.status, 200, "{path} with the token: {}", r.text());
    }
    let r = http::json(
        a,
        "POST",
        "/api/secrets/WIFI_PSK/value",
        &[("Cookie", &cookie)],
        &serde_json::json!({}),
    );
    assert_error(&r, 403, "reveal with the cookie alone");
    assert!(!r.text().contains("cookie-alone-marker"));
}

/// Run `cmd` (a server that should refuse to start): its exit code and
/// stderr; `None` when it was still running after 20 s (then killed).
fn refused_at_start(mut cmd: std::process::Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

/// A careless admin: a TLS key or a token file that other users may read
/// (or write) is refused at start (exit 2, naming the file and the fix,
/// never its content), as is a certificate or key that is a pipe or a
/// directory; a private one (600, or 640 for a group) serves.
#[test]
fn key_and_token_files_open_to_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let token = "a-token-from-a-file-0123456789";
    let token_file = site.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    for mode in [0o644, 0o604, 0o620, 0o602] {
        chmod(&token_file, mode);
        let mut cmd = site.serve_cmd();
        cmd.arg("--token-file").arg(&token_file);
        let (code, err) = refused_at_start(cmd);
        assert_eq!(code, Some(2), "token file {mode:o}: {err}");
        assert!(
            err.contains("--token-file") && err.contains("chmod 600"),
            "{mode:o}: {err}"
        );
        assert!(!err.contains(token), "{err}");
    }

    // The key: refused when open to others (the certificate is public).
    let key = site.dir.join("key.pem");
    let cert = site.dir.join("cert.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    chmod(&key, 0o644);
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        let mut cmd = site.serve_cmd();
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        refused_at_start(cmd)
    };
    let (code, err) = tls(&cert, &key);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("other users may read"),
        "{err}"
    );
    // A pipe or a directory as the certificate or the key.
    let fifo = site.dir.join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    chmod(&key, 0o600);
    for (c, k, what) in [
        (&fifo, &key, "--tls-cert"),
        (&cert, &fifo, "--tls-key"),
        (&site.dir, &key, "--tls-cert"),
    ] {
        let (code, err) = tls(c, k);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(what) && err.contains("not a regular file"),
            "{err}"
        );
    }
    // Private: 600 passes the mode check (and fails on the bogus PEM).
    let (code, err) = tls(&cert, &key);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("may read"), "{err}");
    chmod(&key, 0o640);
    let (_, err) = tls(&cert, &key);
    assert!(!err.contains("may read"), "a group may read it: {err}");

    // A private token file serves.
    chmod(&token_file, 0o600);
    let mut cmd = site.serve_cmd();
    cmd.arg("--token-file").arg(&token_file);
    let srv = Server::start(cmd);
    let r = http::request(
        srv.addr,
        "GET",
        "/api/secrets",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Names and scopes from the URL are the store's names, never paths:
/// `..`, encoded dots and slashes, NUL, look-alike letters and very long
/// segments get a JSON 400 or 404 (never 5xx) and touch nothing; creates
/// of one name racing each other give exactly one 201, the rest 409.
#[test]
fn url_segments_are_names_and_racing_creates_make_one() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    let a = srv.addr;
    srv.create_secret("WIFI_PSK", "segment-marker");
    let before = sealed_image_tests::serve::snapshot(&site.store);
    let long = "A".repeat(20_000);
    let paths = [
        "/api/secrets/..".to_string(),
        "/api/secrets/%2e%2e".to_string(),
        "/api/secrets/%2E%2E%2Fkey".to_string(),
        "/api/secrets/..%2F..%2Fsecrets".to_string(),
        "/api/secrets/WIFI_PSK%2F..".to_string(),
        "/api/secrets/WIFI_PSK%00".to_string(),
        "/api/secrets/WIFI_PS%D0%9A".to_string(),
        "/api/secrets/%EF%BC%A1".to_string(),
        "/api/secrets/%FF%FE".to_string(),
        format!("/api/secrets/{long}"),
        "/api/secrets/WIFI_PSK?scope=..%2F..%2Fetc".to_string(),
        "/api/secrets/WIFI_PSK?scope=device:..%2Fx".to_string(),
        "/api/secrets/WIFI_PSK?scope=device:%00".to_string(),
        "/api/recipes/..%2F..%2Fetc/status".to_string(),
        "/api/audit?name=..%2F..&limit=99999999999999999999".to_string(),
        // A query where none is read is refused, never ignored (a PUT
        // would change the global value).
        "/api/secrets/WIFI_PSK?scope=device:kiosk-1".to_string(),
        "/api/secrets/WIFI_PSK/history?x=1".to_string(),
    ];
    for p in &paths {
        for method in ["GET", "DELETE", "PUT"] {
            let r = if method == "PUT" {
                http::json(
                    a,
                    method,
                    p,
                    &[("Authorization", &srv.bearer())],
                    &serde_json::json!({"value": "x"}),
                )
            } else {
                http::request(a, method, p, &[("Authorization", &srv.bearer())], None)
            };
            let what = format!("{method} {}", &p[..p.len().min(80)]);
            {
                assert!(
                    r.status == 400 || r.status == 404 || r.status == 405,
                    "{what}: {} {}",
                    r.status,
                    r.text()
                );
            }
            let _ = r.json();
            assert!(!r.text().contains("segment-marker"), "{what}");
        }
    }
    assert_eq!(
        before,
        sealed_image_tests::serve::snapshot(&site.store),
        "a request with a strange segment changed the store"
    );

    let start = std::sync::Arc::new(std::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (start, bearer) = (start.clone(), srv.bearer());
            std::thread::spawn(move || {
                start.wait();
                http::json(
                    a,
                    "POST",
                    "/api/secrets",
                    &[("Authorization", &bearer)],
                    &serde_json::json!({"name": "RACED", "value": format!("racer-{i}")}),
                )
                .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let one = srv.get("/api/secrets/RACED").json();
    assert_eq!(one["scopes"].as_array().map(|v| v.len()), Some(1), "{one}");
    assert_eq!(
        one["scopes"][0]["versions"].as_array().map(|v| v.len()),
        Some(1),
        "{one}"
    );
}

/// A port someone else holds (another local user squatting it, on the
/// address or on every address): the server does not start (exit 1,
/// naming the address), rather than sharing the port.
#[test]
fn a_port_in_use_is_refused() {
    let site = Site::new();
    for squat in ["127.0.0.1:0", "0.0.0.0:0"] {
        let held = std::net::TcpListener::bind(squat).unwrap();
        let port = held.local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let (code, err) = refused_at_start(site.serve_cmd_on(&listen));
        assert_eq!(code, Some(1), "{squat}: {err}");
        assert!(
            err.contains(&format!("cannot listen on {listen}")),
            "{squat}: {err}"
        );
        drop(held);
    }
}

/// SIGTERM while writes are under way: the server stops (exit 0), every
/// write it acknowledged is in the store, nothing is half-written (the
/// CLI's `store audit` checks every file against the store key), and a
/// new server opens the store.
#[test]
fn stopping_during_writes_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    srv.create_secret("WIFI_PSK", "v0");
    let (a, bearer) = (srv.addr, srv.bearer());
    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (acked, bearer) = (acked.clone(), bearer.clone());
            std::thread::spawn(move || {
                for i in 0..500 {
                    let body = serde_json::json!({"value": format!("w{w}-{i}")});
                    let r = std::panic::catch_unwind(|| {
                        http::json(
                            a,
                            "PUT",
                            "/api/secrets/WIFI_PSK",
                            &[("Authorization", &bearer)],
                            &body,
                        )
                    });
                    match r {
                        Ok(r) if r.status == 200 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 6 {
        assert!(Instant::now() < deadline, "no writes acknowledged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = srv.stop();
    assert!(status.success(), "{status}");
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.load(Ordering::SeqCst);
    let out = site.store_cmd(&["audit"]).output().unwrap();
    assert_success(&out, "store audit after the stop");
    let srv = Server::start(site.serve_cmd());
    let one = srv.get("/api/secrets/WIFI_PSK").json();
    let current = one["scopes"][0]["current"].as_u64().unwrap() as usize;
    // Version 1 was the create; each acknowledged PUT made one more (one
    // more may have been committed as the stop cut its response off).
    assert!(
        current > acked && current <= acked + 4,
        "{acked} acknowledged writes, current version {current}"
    );
}

/// A CLI `store rekey` and `store set` racing the server's writes: the
/// server waits for the same lock, reads the new store key at its next
/// request, loses no write of either side, and reveals what was last set.
#[test]
fn cli_rekey_and_set_racing_the_server_lose_nothing() {
    let site = Site::new();
    let srv = Server::start(site.serve_cmd());
    srv.create_secret("WIFI_PSK", "v0");
    let (a, bearer) = (srv.addr, srv.bearer());
    let writer = std::thread::spawn(move || {
        let mut ok = 0;
        for i in 0..15 {
            let r = http::json(
                a,
                "PUT",
                "/api/secrets/WIFI_PSK",
                &[("Authorization", &bearer)],
                &serde_json::json!({"value": format!("server-{i}")}),
            );
            assert_eq!(r.status, 200, "PUT {i}: {}", r.text());
            ok += 1;
        }
        ok
    });
    for i in 0..3 {
        let out = site.store_cmd(&["rekey", "--yes", "-q"]).output().unwrap();
        assert_success(&out, "store rekey");
        let args: &[&str] = if i == 0 {
            &["set", "API_TOKEN", "--generate", "-q"]
        } else {
            &["rotate", "API_TOKEN", "-q"]
        };
        let out = site.store_cmd(args).output().unwrap();
        assert_success(&out, format!("store set {i}"));
    }
    let server_writes = writer.join().unwrap();
    let out = site.store_cmd(&["audit"]).output().unwrap();
    assert_success(&out, "store audit");
    let one = srv.get("/api/secrets/WIFI_PSK").json();
    assert_eq!(
        one["scopes"][0]["current"].as_u64(),
        Some(1 + server_writes),
        "{one}"
    );
    let api = srv.get("/api/secrets/API_TOKEN").json();
    assert_eq!(api["scopes"][0]["current"].as_u64(), Some(3), "{api}");
    let r = srv.send(
        "POST",
        "/api/secrets/WIFI_PSK/value",
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["value"], "server-14");
}
