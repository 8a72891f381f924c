//! `${SECRET:NAME|keyfile|env|shell}`: values with quotes, backslashes,
//! `;`, `$`, tabs and line breaks go through build-image and the real
//! sealed-firstboot, and the rendered files are read back by the parsers
//! the formats belong to: GLib's key-file parser (what NetworkManager
//! uses), bash and dash.

#![forbid(unsafe_code)]

use sealed_image_tests::device::DeviceTree;
use sealed_image_tests::*;
use std::path::Path;
use std::process::Command;

const HOSTILE: &str = "  MARKER-esc a\"b'c\\d;e$f`g\th#i=[j] ";
const MULTI: &str = "MARKER-esc first 'line'\n  second \\ line;\n";

fn write_recipe(dir: &Path, templates: &str) {
    std::fs::write(
        dir.join("recipe.toml"),
        format!(
            r#"
[image]
name = "esc"

[secrets.psk]
type = "single-line"
source = {{ env = "ESC_PSK" }}

[secrets.multi]
type = "multi-line"
source = {{ env = "ESC_MULTI" }}
{templates}"#
        ),
    )
    .unwrap();
}

fn bundle(dir: &Path) -> std::process::Output {
    build_image_cmd()
        .args(["bundle", "recipe.toml", "--out", "out"])
        .current_dir(dir)
        .env("ESC_PSK", HOSTILE)
        .env("ESC_MULTI", MULTI)
        .output()
        .unwrap()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A python that has GLib's bindings (Debian's python3-gi installs them for
/// /usr/bin/python3, which a pyenv or venv python3 on PATH may hide); the
/// test fails without one (it is `#[ignore]`d for it).
fn require_python_with_glib() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| {
            Command::new(py)
                .args([
                    "-c",
                    "import gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib",
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            missing(
                "python3 with GLib (python3-gi)",
                "install the Debian packages python3-gi and gir1.2-glib-2.0",
            )
        })
}

#[test]
#[ignore = "needs python3-gi (GLib's key-file parser), dash, bash; scripts/test runs it"]
fn rendered_files_parse_back_to_the_values() {
    let python = require_python_with_glib();
    require_tool_from("dash", "dash");
    require_tool_from("bash", "bash");
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("wifi.nmconnection"),
        "[wifi-security]\nkey-mgmt=wpa-psk\npsk=${SECRET:psk|keyfile}\nnote=${SECRET:multi|keyfile}\n",
    )
    .unwrap();
    std::fs::write(
        t.path().join("app.env"),
        "TOKEN=${SECRET:psk|env}\nOTHER=x\n",
    )
    .unwrap();
    std::fs::write(
        t.path().join("app.sh"),
        "TOKEN=${SECRET:psk|shell}\nNOTE=${SECRET:multi|shell}\n",
    )
    .unwrap();
    write_recipe(
        t.path(),
        r#"
[templates.wifi]
source = "wifi.nmconnection"
path = "/run/NetworkManager/system-connections/wifi.nmconnection"
mode = "0600"

[templates.env]
source = "app.env"
path = "/run/secrets/app.env"

[templates.sh]
source = "app.sh"
path = "/run/secrets/app.sh"
"#,
    );
    let out = bundle(t.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = DeviceTree::new();
    std::fs::create_dir_all(d.boot()).unwrap();
    std::fs::copy(t.path().join("out/esc.bundle"), d.boot().join("bundle")).unwrap();
    std::fs::copy(t.path().join("out/esc.key"), d.boot().join("image.key")).unwrap();
    d.ok("run");

    // Outside /run/secrets the device puts a symlink whose target is
    // absolute (/run/secrets.d/…): resolve it inside the device tree.
    let link = d
        .root
        .join("run/NetworkManager/system-connections/wifi.nmconnection");
    let target = std::fs::read_link(&link).unwrap();
    let keyfile = d.root.join(target.strip_prefix("/").unwrap());
    let parsed = run(
        python,
        &[
            "-c",
            "import sys, gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib\n\
             k = GLib.KeyFile(); k.load_from_file(sys.argv[1], GLib.KeyFileFlags.NONE)\n\
             sys.stdout.write(k.get_string('wifi-security', 'psk') + '\\0' + k.get_string('wifi-security', 'note'))",
            keyfile.to_str().unwrap(),
        ],
    );
    assert_eq!(parsed, format!("{HOSTILE}\0{MULTI}"));

    // The env file read as systemd's EnvironmentFile= semantics allow (set -a;
    // .), the shell file sourced: both by bash and by dash.
    let cases = [
        (
            "run/secrets/app.env",
            "set -a; . \"$1\"; printf %s \"$TOKEN|$OTHER\"",
            format!("{HOSTILE}|x"),
        ),
        (
            "run/secrets/app.sh",
            ". \"$1\"; printf '%s\\0%s' \"$TOKEN\" \"$NOTE\"",
            format!("{HOSTILE}\0{MULTI}"),
        ),
    ];
    for (file, script, want) in &cases {
        let path = d.root.join(file);
        for shell in ["bash", "dash"] {
            let got = run(shell, &["-c", script, "sh", path.to_str().unwrap()]);
            assert_eq!(&got, want, "{shell} reading {file}");
        }
    }
}

#[test]
fn a_value_the_format_cannot_hold_fails_the_build_without_showing_it() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("app.env"), "NOTE=${SECRET:multi|env}\n").unwrap();
    write_recipe(
        t.path(),
        "\n[templates.env]\nsource = \"app.env\"\npath = \"/run/secrets/app.env\"\n",
    );
    let out = bundle(t.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("template env") && err.contains("multi|env") && err.contains("line break"),
        "{err}"
    );
    assert!(!contains(&out.stderr, b"MARKER-") && !contains(&out.stdout, b"MARKER-"));
    assert!(!t.path().join("out/esc.bundle").exists());

    // An unknown escape is a recipe error naming the byte, not the text.
    std::fs::write(t.path().join("app.env"), "NOTE=${SECRET:multi|json}\n").unwrap();
    let out = bundle(t.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown escape"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
