//! Fixtures for `build-image serve`: a store with a member identity, a
//! recipe that reads it (with a devices file), and a running server whose
//! start line gives its address and token; the server is killed on drop.

use crate::http::{self, Response};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory with `secrets-store/` (one member: `member.key`), `recipe.toml`
/// reading `WIFI_PSK` and `API_TOKEN` from it (and `motd` from `$MOTD_TEXT`,
/// optional), and `devices.toml` (kiosk-1 tagged lobby, kiosk-2).
pub struct Site {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub store: PathBuf,
    pub key: PathBuf,
    pub recipe: PathBuf,
    pub devices: PathBuf,
}

pub const RECIPE: &str = r#"[image]
name = "kiosk"

[[partition]]
label = "ESP"
type = "esp"
size = "64MiB"
secrets = true

[store]
path = "secrets-store"

[secrets.wifi_psk]
type = "single-line"
description = "WPA2 passphrase of the site Wi-Fi"
source = { store = "WIFI_PSK" }

[secrets.api_token]
type = "single-line"
description = "Token the device uses to reach the fleet API"
source = { store = "API_TOKEN" }

[secrets.motd]
type = "multi-line"
description = "Message of the day"
required = false
source = { env = "MOTD_TEXT" }
"#;

pub const DEVICES: &str = r#"[[device]]
name = "kiosk-1"
tags = ["lobby"]

[[device]]
name = "kiosk-2"
"#;

fn secret_string(id: &age::x25519::Identity) -> String {
    use age::secrecy::ExposeSecret;
    id.to_string().expose_secret().to_string()
}

impl Site {
    pub fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let id = age::x25519::Identity::generate();
        let key = dir.join("member.key");
        std::fs::write(&key, format!("{}\n", secret_string(&id))).unwrap();
        let store = dir.join("secrets-store");
        let recipe = dir.join("recipe.toml");
        let devices = dir.join("devices.toml");
        std::fs::write(&recipe, RECIPE).unwrap();
        std::fs::write(&devices, DEVICES).unwrap();
        let site = Site {
            _tmp: tmp,
            dir,
            store,
            key,
            recipe,
            devices,
        };
        let out = site
            .store_cmd(&["init", "--recipient", &id.to_public().to_string(), "-q"])
            .output()
            .unwrap();
        crate::assert_success(&out, "store init");
        site
    }

    /// `build-image store --store DIR ARGS…` as the member.
    pub fn store_cmd(&self, args: &[&str]) -> Command {
        let mut c = crate::build_image_cmd();
        c.arg("store")
            .arg("--store")
            .arg(&self.store)
            .args(args)
            .env("SEALED_IMAGE_STORE_IDENTITY_FILE", &self.key)
            .env_remove("SEALED_IMAGE_STORE_IDENTITY")
            .env_remove("SEALED_IMAGE_STORE_ID")
            .env("USER", "alice")
            .stdin(Stdio::null());
        c
    }

    /// `build-image serve` on an ephemeral loopback port with the recipe,
    /// its devices and the member's identity, not started yet.
    pub fn serve_cmd(&self) -> Command {
        self.serve_cmd_on("127.0.0.1:0")
    }

    /// [`Site::serve_cmd`] listening on `listen`.
    pub fn serve_cmd_on(&self, listen: &str) -> Command {
        let mut c = crate::build_image_cmd();
        c.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--recipe")
            .arg(&self.recipe)
            .arg("--devices")
            .arg(&self.devices)
            .arg("--identity")
            .arg(&self.key)
            .env_remove("SEALED_IMAGE_STORE_IDENTITY")
            .env_remove("SEALED_IMAGE_STORE_IDENTITY_FILE")
            .env_remove("SEALED_IMAGE_SERVE_TOKEN")
            .env_remove("MOTD_TEXT")
            .env("USER", "alice")
            .current_dir(&self.dir);
        c
    }
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

/// A running server.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub https: bool,
    /// The token from the start line (when it printed one).
    pub token: String,
    /// Everything it printed on stderr so far.
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Start `cmd` and wait for its start line.
    pub fn start(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting build-image serve");
        let stderr = child.stderr.take().unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if !sent && line.starts_with("build-image serve: http") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let line = loop {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                break l;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "build-image serve exited ({status}) before its start line:\n{}",
                    text.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "no start line");
        };
        let listening = line
            .split("(listening on ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let addr: SocketAddr = listening.parse().unwrap();
        let token = line
            .split("access token: ")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        Server {
            child,
            addr,
            https: line.starts_with("build-image serve: https"),
            token,
            stderr: text,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the server holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A request with the Bearer token.
    pub fn get(&self, path: &str) -> Response {
        http::request(
            self.addr,
            "GET",
            path,
            &[("Authorization", &self.bearer())],
            None,
        )
    }

    /// A JSON request with the Bearer token.
    pub fn send(&self, method: &str, path: &str, body: &serde_json::Value) -> Response {
        http::json(
            self.addr,
            method,
            path,
            &[("Authorization", &self.bearer())],
            body,
        )
    }

    /// `POST /api/secrets` of `name` with `value`; it must be created (201).
    pub fn create_secret(&self, name: &str, value: &str) {
        let r = self.send(
            "POST",
            "/api/secrets",
            &serde_json::json!({"name": name, "value": value}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stop it with SIGTERM; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir` with its bytes (lock and staging left out).
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let n = e.file_name();
            if n == ".lock" || n == ".tmp" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The entry of `secret` in a recipe's status (`GET
/// /api/recipes/ID/status`); fails when the status does not list it.
pub fn secret_status(status: &serde_json::Value, secret: &str) -> serde_json::Value {
    status["secrets"]
        .as_array()
        .unwrap_or_else(|| panic!("no secrets in {status}"))
        .iter()
        .find(|s| s["secret"] == secret)
        .unwrap_or_else(|| panic!("{secret} is not in {status}"))
        .clone()
}
