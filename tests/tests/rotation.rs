//! Rotation on deployed devices: `build-image bundle` seals update bundles
//! (to a recipient, an SSH host key, per device of a fleet, or under an
//! image key; full or partial), `sealed-firstboot apply FILE|-` applies them
//! with the provisioning rules, restarts what uses a changed secret, and
//! `status --json` reports back. Values never appear in any output. The
//! device is a tree (`--root`): its units are not this machine's, so
//! `apply` runs no `systemctl` (a stand-in on PATH records any call, and
//! none may come) and says what it would run on the device.

#![forbid(unsafe_code)]

use sealed_image_tests::device::{assert_no_marker, host_key_identity, test_host_key};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const RECIPE: &str = r#"[image]
name = "kiosk"

[[partition]]
label = "boot"
type = "fat"
size = "8MiB"
secrets = true

[secrets.wifi_psk]
type = "single-line"
source = { file = "wifi.txt" }
restart-units = ["wifi.service"]
reload-units = ["nginx.service"]

[secrets.api_token]
type = "single-line"
source = { file = "token.txt" }
owner = "app"
mode = "0440"
restart-units = ["app.service"]

[templates.app_env]
source = "app.env.in"
path = "/run/app/app.env"
restart-units = ["app-env.service"]
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
    log: PathBuf,
    fakebin: PathBuf,
    /// What sealed-firstboot printed since the last [`Setup::calls`].
    said: std::cell::RefCell<String>,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("recipe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("recipe.toml"), RECIPE).unwrap();
        std::fs::write(dir.join("wifi.txt"), "MARKER-wifi-1").unwrap();
        std::fs::write(dir.join("token.txt"), "MARKER-token-1").unwrap();
        std::fs::write(dir.join("app.env.in"), "TOKEN=${SECRET:api_token}\n").unwrap();
        let root = tmp.path().join("device");
        device_tree(&root, &[("app", 1200)]);
        // A fake systemctl that records its arguments.
        let fakebin = tmp.path().join("bin");
        std::fs::create_dir_all(&fakebin).unwrap();
        let log = tmp.path().join("systemctl.log");
        let script = fakebin.join("systemctl");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Setup {
            _tmp: tmp,
            dir,
            root,
            log,
            fakebin,
            said: Default::default(),
        }
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut p = self.fakebin.clone().into_os_string();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_default());
        p
    }

    fn bundle(&self, args: &[&str]) -> Output {
        let out = build_image_cmd()
            .arg("bundle")
            .arg(self.dir.join("recipe.toml"))
            .args(args)
            .output()
            .unwrap();
        assert_no_marker(&out);
        out
    }

    fn firstboot(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(bin("sealed-firstboot"));
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .env("PATH", self.path_env());
        let out = match stdin {
            Some(data) => output_with_stdin(&mut c, data),
            None => c.stdin(Stdio::null()).output().unwrap(),
        };
        assert_no_marker(&out);
        self.said
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.firstboot(args, stdin);
        assert_success(&out, format!("{args:?}"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn live(&self, device_path: &str) -> String {
        let mut path = self.root.join(device_path.trim_start_matches('/'));
        if let Ok(t) = std::fs::read_link(&path) {
            if t.is_absolute() {
                path = self.root.join(t.strip_prefix("/").unwrap());
            }
        }
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The systemctl calls `apply` would have made on the device since
    /// the last look (its arguments, as it prints them). The stand-in
    /// `systemctl` on PATH must never have been run: with `--root` the
    /// units are the tree's, and restarting this machine's is the bug.
    fn calls(&self) -> Vec<String> {
        let ran = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(ran.is_empty(), "systemctl ran on this machine: {ran}");
        let said = std::mem::take(&mut *self.said.borrow_mut());
        said.lines()
            .filter_map(|l| l.split_once("on the device it would run: systemctl "))
            .map(|(_, call)| call.to_owned())
            .collect()
    }

    fn pubkey(&self) -> String {
        String::from_utf8_lossy(&self.firstboot(&["pubkey"], None).stdout)
            .trim()
            .to_owned()
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn rotate_over_ssh_restarts_what_changed_and_refuses_replays() {
    let s = Setup::new();
    let recipient = s.pubkey();
    let out_dir = |d: &str| s.dir.parent().unwrap().join(d);
    let o = |d: &str| out_dir(d).to_string_lossy().into_owned();
    let out = s.bundle(&["--out", &o("o1"), "--recipient", &recipient, "--json"]);
    assert_success(&out, "");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["bundles"][0]["key_mode"], "recipient");
    assert_eq!(report["bundles"][0]["partial"], false);
    let b1 = out_dir("o1").join("kiosk.bundle");
    assert!(
        !out_dir("o1").join("kiosk.key").exists(),
        "no key in recipient mode"
    );

    // First apply, from standard input as over ssh: everything is new, but
    // units are only restarted when they are running (try-restart).
    s.ok(&["apply", "-"], Some(&read(&b1)));
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-1");
    assert_eq!(s.live("/run/app/app.env"), "TOKEN=MARKER-token-1\n");
    let calls = s.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("try-restart -- ")),
        "{calls:?}"
    );

    // The boot-time run never restarts units.
    s.ok(&["run"], None);
    assert!(s.calls().is_empty());

    // Rotate one secret: its new value into `file`, then a bundle of it
    // alone into the output directory `dir`.
    let rotate = |file: &str, value: &str, only: &str, dir: &str| {
        std::fs::write(s.dir.join(file), value).unwrap();
        s.bundle(&["--out", &o(dir), "--recipient", &recipient, "--only", only])
    };
    // Rotate the Wi-Fi passphrase only: a partial bundle.
    let out = rotate("wifi.txt", "MARKER-wifi-2", "wifi_psk", "o2");
    assert_success(&out, "");
    let b2 = out_dir("o2").join("kiosk.bundle");
    let err = s.ok(&["apply", b2.to_str().unwrap()], None);
    assert!(err.contains("partial bundle"), "{err}");
    assert!(
        err.contains("changed: wifi_psk") && !err.contains("api_token"),
        "{err}"
    );
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-2");
    assert_eq!(s.live("/run/secrets/api_token"), "MARKER-token-1", "kept");
    assert_eq!(
        s.calls(),
        [
            "try-restart -- wifi.service",
            "try-reload-or-restart -- nginx.service"
        ]
    );
    // No trace of the old value anywhere under /run.
    assert!(files_containing(&s.root.join("run"), b"MARKER-wifi-1").is_empty());

    // Rotate the token: the template that uses it changes too, so both
    // units restart; a mode change alone also counts as a change.
    let out = rotate("token.txt", "MARKER-token-2", "api_token", "o3");
    assert!(out.status.success());
    s.ok(
        &[
            "apply",
            out_dir("o3").join("kiosk.bundle").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(s.live("/run/app/app.env"), "TOKEN=MARKER-token-2\n");
    assert_eq!(s.calls(), ["try-restart -- app-env.service app.service"]);

    // Replaying an older bundle is refused and changes nothing.
    let out = s.firstboot(&["apply", "-"], Some(&read(&b2)));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("roll secrets back"), "{err}");
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-2");
    assert!(s.calls().is_empty());
    // The same bundle again is a no-op.
    let err = s.ok(
        &["apply", "-"],
        Some(&read(&out_dir("o3").join("kiosk.bundle"))),
    );
    assert!(err.contains("already applied"), "{err}");

    // status --json: bundle id, sequence, recipient, ✓ per secret; no values.
    let out = s.firstboot(&["status", "--json"], None);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["recipient"], recipient.as_str());
    assert_eq!(st["ok"], true);
    assert_eq!(st["sequence"], 0);
    assert!(st["bundle_id"].as_str().unwrap().len() == 32);
    let mut names = field_strs(&st["secrets"], "name");
    names.sort();
    assert_eq!(names, ["api_token", "app_env", "wifi_psk"]);
    assert!(st["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["ok"] == true));
    let token = st["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "api_token")
        .unwrap();
    assert_eq!(token["mode"], "0440");
    assert_eq!(token["owner"], "app");
    // Something not live: status says so (exit 5).
    std::fs::remove_file(s.root.join("run/secrets")).unwrap();
    let out = s.firstboot(&["status", "--json"], None);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn ssh_recipient_image_key_mode_and_fleets() {
    let s = Setup::new();
    // The device derives its identity from its SSH host key.
    host_key_identity(&s.root);
    let line = std::fs::read_to_string(test_host_key().with_extension("pub")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path();
    let out = s.bundle(&["--out", o.to_str().unwrap(), "--ssh-recipient", line.trim()]);
    assert_success(&out, "");
    s.ok(&["apply", o.join("kiosk.bundle").to_str().unwrap()], None);
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-1");
    assert!(!s.calls().is_empty());

    // Image-key mode: the key goes with the bundle (0600), apply needs it.
    std::fs::write(s.dir.join("wifi.txt"), "MARKER-wifi-3").unwrap();
    let k = tmp.path().join("k");
    let out = s.bundle(&["--out", k.to_str().unwrap()]);
    assert!(out.status.success());
    let key = k.join("kiosk.key");
    assert_eq!(perm_bits(&key), 0o600);
    let bundle = k.join("kiosk.bundle");
    let out = s.firstboot(&["apply", bundle.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key"));
    s.ok(
        &[
            "apply",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--no-restart",
        ],
        None,
    );
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-3");
    assert!(s.calls().is_empty(), "--no-restart");
    // An existing output is not replaced without --force.
    let out = s.bundle(&["--out", k.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    // A fleet: one bundle per device, sealed to each recipient.
    let other = age::x25519::Identity::generate();
    let me = s.pubkey();
    let devices = tmp.path().join("devices.toml");
    std::fs::write(
        &devices,
        format!(
            "[[device]]\nname = \"kiosk-001\"\nrecipient = \"{me}\"\n\n[[device]]\nname = \"kiosk-002\"\nrecipient = \"{}\"\n",
            other.to_public()
        ),
    )
    .unwrap();
    std::fs::write(s.dir.join("wifi.txt"), "MARKER-wifi-4").unwrap();
    let f = tmp.path().join("fleet");
    let out = s.bundle(&[
        "--out",
        f.to_str().unwrap(),
        "--devices",
        devices.to_str().unwrap(),
        "--json",
    ]);
    assert_success(&out, "");
    assert!(f.join("kiosk-001.bundle").is_file() && f.join("kiosk-002.bundle").is_file());
    // Another device's bundle is refused.
    let out = s.firstboot(
        &["apply", f.join("kiosk-002.bundle").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong"));
    s.ok(&["apply", "-"], Some(&read(&f.join("kiosk-001.bundle"))));
    assert_eq!(s.live("/run/secrets/wifi_psk"), "MARKER-wifi-4");
    // Unknown --only names are a recipe error naming what exists.
    let out = s.bundle(&["--out", f.to_str().unwrap(), "--only", "nope", "--force"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wifi_psk"));
}

/// A change of mode alone (same bytes) restarts the secret's units; an
/// unchanged secret restarts nothing.
#[test]
fn a_mode_change_alone_counts_as_a_change() {
    let s = Setup::new();
    let recipient = s.pubkey();
    let o = s.dir.parent().unwrap().join("out");
    // Bundle the recipe for kiosk (sealed to it) and apply it there.
    let bundle_and_apply = |extra: &[&str]| {
        let mut args = vec!["--out", o.to_str().unwrap(), "--recipient", &recipient];
        args.extend_from_slice(extra);
        let out = s.bundle(&args);
        assert!(out.status.success());
        s.ok(&["apply", o.join("kiosk.bundle").to_str().unwrap()], None)
    };
    bundle_and_apply(&[]);
    s.calls();
    // The same values again (a new bundle): nothing changed.
    let err = bundle_and_apply(&["--force"]);
    assert!(err.contains("no secret changed"), "{err}");
    assert!(s.calls().is_empty());
    // Only the mode of api_token changes.
    let recipe = RECIPE.replace("mode = \"0440\"", "mode = \"0400\"");
    std::fs::write(s.dir.join("recipe.toml"), recipe).unwrap();
    let err = bundle_and_apply(&["--force"]);
    assert!(err.contains("changed: api_token\n"), "{err}");
    assert_eq!(s.calls(), ["try-restart -- app.service"]);
}
