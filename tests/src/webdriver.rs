//! A small WebDriver client (the W3C protocol is HTTP and JSON) for
//! Debian's `chromium` driven by `chromedriver`, headless, with a fresh
//! profile and nothing that reaches the network.

use crate::http;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    child: Child,
    addr: SocketAddr,
    profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// Start chromedriver and wait until it answers.
    pub fn start() -> Driver {
        let port = free_port();
        let child =
            Command::new(crate::find_tool("chromedriver").unwrap_or_else(|| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                let r = http::request(addr, "GET", "/status", &[], None);
                if r.status == 200 && r.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            addr,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// A headless browser session.
    pub fn session(&self) -> Session {
        let binary = crate::find_tool("chromium").unwrap_or_else(|| "/usr/bin/chromium".into());
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let r = http::json(self.addr, "POST", "/session", &[], &caps);
        assert_eq!(r.status, 200, "new session: {}", r.text());
        let id = r.json()["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Session {
            addr: self.addr,
            id,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{path}", self.id);
        let r = match body {
            Some(b) => http::json(self.addr, method, &p, &[], &b),
            None => http::request(self.addr, method, &p, &[], None),
        };
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        r.json()["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching `css` (it must exist).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Click the first element matching `css`. The page re-renders its
    /// tables when data arrives, so an element found a moment ago may be
    /// gone ("stale element reference"): it is found again, for up to 20 s.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let e = self.find(css);
            let p = format!("/session/{}/element/{e}/click", self.id);
            let r = http::json(self.addr, "POST", &p, &[], &json!({}));
            if r.status == 200 {
                return;
            }
            let stale = r.json()["value"]["error"] == "stale element reference";
            assert!(
                stale && Instant::now() < deadline,
                "POST /element/{e}/click ({css}): {}",
                r.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Type `text` into the element (WebDriver keys: "\u{E007}" is Enter).
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn clear(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
    }

    /// Run `script` (a function body; `arguments` holds `args`).
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The page's DOM as HTML (`document.documentElement.outerHTML`).
    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Poll until `condition` (a JS expression) is true; panics with
    /// `what` after 20 s.
    pub fn wait(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.js(&format!("return !!({condition});"), json!([])) == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {what} ({condition}); the page:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Save a PNG screenshot of the window.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("base64 screenshot");
        std::fs::write(path, png).unwrap();
    }

    /// The browser console's lines so far (chromedriver's log endpoint).
    pub fn console(&self) -> Option<Vec<String>> {
        let p = format!("/session/{}/se/log", self.id);
        let r = http::json(self.addr, "POST", &p, &[], &json!({"type": "browser"}));
        (r.status == 200).then(|| {
            r.json()["value"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| e["message"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = http::request(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.id),
            &[],
            None,
        );
    }
}

/// `target/NAME/` (test artifacts), created.
pub fn artifact_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target"));
    let d = target.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}
