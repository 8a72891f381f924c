//! The builder accepts only what the device can apply: every rule the
//! device applies to a manifest lives once in the firstboot library, and
//! `build-image` runs it before sealing (exit 3 for recipe problems).

#![forbid(unsafe_code)]

use sealed_image_tests::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

const HEAD: &str = "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"boot\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\n\n";

/// Build `recipe` (TOML after the fixed head) for one device with
/// `--bundles-only`, in `dir`; values come from files `NAME.txt` in `dir`.
fn build(dir: &Path, recipe: &str) -> Output {
    std::fs::write(dir.join("recipe.toml"), format!("{HEAD}{recipe}")).unwrap();
    std::fs::write(dir.join("devices.toml"), "[[device]]\nname = \"dev1\"\n").unwrap();
    let _ = std::fs::remove_dir_all(dir.join("out"));
    build_image_cmd()
        .arg("build")
        .arg(dir.join("recipe.toml"))
        .arg("--devices")
        .arg(dir.join("devices.toml"))
        .arg("--bundles-only")
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap()
}

/// `build-image check` of the recipe [`build`] wrote in `dir`.
fn check(dir: &Path) -> Output {
    build_image_cmd()
        .arg("check")
        .arg(dir.join("recipe.toml"))
        .output()
        .unwrap()
}

fn secret(name: &str, path: &str, owner: &str, mode: &str) -> String {
    format!(
        "[secrets.{name}]\ntype = \"single-line\"\npath = \"{path}\"\nowner = \"{owner}\"\nmode = \"{mode}\"\nsource = {{ file = \"{name}.txt\" }}\n\n"
    )
}

/// The cases the device used to accept from the builder and then fail on
/// at every boot: each is now a recipe error, exit 3, and nothing is built.
#[test]
fn recipes_the_device_cannot_apply_are_refused_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for n in ["a", "b"] {
        std::fs::write(dir.join(format!("{n}.txt")), "MARKER-value").unwrap();
    }
    let long = format!("/run/secrets/{}", "x".repeat(300));
    // The secret `a` (mode 0400) alone: (path, owner, what the error says).
    let one = [
        ("/run/secrets/.outside/x", "root", "reserved"),
        ("/run/secrets.tmp-5", "root", "reserved"),
        ("/run/secrets.d/1/a", "root", "reserved"),
        (long.as_str(), "root", "component of 300 bytes"),
        ("/run/secrets/a", "99999999999", "out of range"),
        ("/run/secrets/a", "4294967295", "out of range"),
        ("/run/secrets/a", "has space", "not a valid user"),
    ];
    // The secrets `a` and `b` (root, 0400): (path of a, path of b, error).
    let two = [
        ("/run/secrets/x", "/run/secrets/x", "also used by secret"),
        (
            "/run/secrets/x",
            "/run/secrets/x/y",
            "needs it as a directory",
        ),
    ];
    let cases = one
        .iter()
        .map(|(path, owner, expect)| (secret("a", path, owner, "0400"), *expect))
        .chain(two.iter().map(|(a, b, expect)| {
            let recipe = secret("a", a, "root", "0400") + &secret("b", b, "root", "0400");
            (recipe, *expect)
        }));
    for (recipe, expect) in cases {
        let out = build(dir, &recipe);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{expect}: {err}");
        assert!(err.contains(expect), "expected {expect:?}: {err}");
        assert!(!contains(&out.stderr, b"MARKER-value"));
        assert!(!dir.join("out").exists(), "{expect}: output left behind");
        // `check` refuses it the same way.
        let checked = check(dir);
        assert_eq!(checked.status.code(), Some(3), "check, {expect}");
    }
}

/// Property: whatever `build-image` accepts provisions and unseals on a
/// device tree, every secret at its path with its mode. Recipes are
/// generated from pieces that hit every rule (reserved names, long
/// components, clashes, owners and ids at and past the limits, modes).
#[test]
fn whatever_build_image_accepts_the_device_applies() {
    let seed = Rng::time_seed();
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c255 = "c".repeat(255);
    let c256 = "c".repeat(256);
    let dirs = [
        "/run/secrets",
        "/run/secrets/app",
        "/run/secrets/app/x",
        "/run",
        "/run/app",
        "/run/secrets/.outside",
        "/run/secrets.d",
        "/run/secrets.tmp-1",
        "/run/secrets.tmp",
        "/run/NetworkManager/system-connections",
        "/run/secrets",
        "/run/secrets/app",
        "/run/wpa",
    ];
    let leaves = [
        "a",
        "b",
        "psk",
        ".hidden",
        "x",
        "secrets",
        "secrets.d",
        c255.as_str(),
        c256.as_str(),
        "a b",
        "sub/leaf",
    ];
    let owners = [
        "root",
        "root",
        "svc",
        "svc",
        "0",
        "4242",
        "4294967294",
        "4294967295",
        "99999999999",
        "-x",
        "svc.d",
        "u_u",
    ];
    let modes = [
        "0400", "0400", "0600", "0644", "0777", "0440", "4755", "1777", "0888", "400",
    ];
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..400 {
        let count = 1 + rng.next_u64() % 4;
        let mut recipe = String::new();
        let mut expect = BTreeMap::new();
        for i in 0..count {
            let name = format!("s{i}");
            let path = format!("{}/{}", rng.pick(&dirs), rng.pick(&leaves));
            let owner = rng.pick(&owners);
            let mode = rng.pick(&modes);
            let value = format!("MARKER-{case}-{i}");
            std::fs::write(dir.join(format!("{name}.txt")), &value).unwrap();
            recipe.push_str(&secret(&name, &path, owner, mode));
            expect.insert(path, (value, u32::from_str_radix(mode, 8).unwrap_or(0)));
        }
        let out = build(dir, &recipe);
        assert!(!contains(&out.stderr, b"MARKER-"), "a value was printed");
        match out.status.code() {
            Some(0) => accepted += 1,
            Some(3) => {
                refused += 1;
                continue;
            }
            other => panic!(
                "seed {seed} case {case}: exit {other:?}: {}\n{recipe}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        // Apply on a device tree that has the user "svc".
        let dev = tempfile::tempdir().unwrap();
        let root = dev.path();
        device_tree(root, &[("svc", 1100), ("svc.d", 1101), ("u_u", 1102)]);
        let boot = root.join("boot/efi/sealed-secrets");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::copy(
            dir.join("out/dev1/sealed-secrets/bundle"),
            boot.join("bundle"),
        )
        .unwrap();
        std::fs::copy(dir.join("out/dev1/r.key"), boot.join("image.key")).unwrap();
        let run = firstboot(root, "run");
        assert!(
            run.status.success(),
            "seed {seed} case {case}: the builder accepted what the device cannot apply ({:?}): {}\n{recipe}",
            run.status.code(),
            String::from_utf8_lossy(&run.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        for (path, (value, mode)) in &expect {
            let host = in_root(root, path);
            assert_eq!(
                std::fs::read_to_string(&host).unwrap_or_default(),
                *value,
                "seed {seed} case {case}: {path}"
            );
            let meta = std::fs::metadata(&host).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                *mode,
                "seed {seed} case {case}: {path}"
            );
        }
    }
    eprintln!("seed {seed}: {accepted} recipes accepted and applied, {refused} refused");
    assert!(
        accepted > 10 && refused > 10,
        "the generator must hit both sides: {accepted}/{refused}"
    );
}

/// A device path inside `root`, following the absolute links the runtime
/// makes for paths outside /run/secrets (`/run/x -> /run/secrets/...`)
/// inside the root, not on the host.
fn in_root(root: &Path, device_path: &str) -> std::path::PathBuf {
    let mut path = root.join(device_path.trim_start_matches('/'));
    for _ in 0..8 {
        match std::fs::read_link(&path) {
            Ok(t) if t.is_absolute() => {
                path = root.join(t.strip_prefix("/").unwrap());
            }
            _ => break,
        }
    }
    path
}

/// A root filesystem that ships SSH host keys gives every device the same
/// host key: `build`, `check` and `build.json` say so.
#[test]
#[ignore = "needs mke2fs (e2fsprogs); scripts/test runs it"]
fn shared_ssh_host_keys_are_flagged_at_build_time() {
    require_tool_from("mke2fs", "e2fsprogs");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "not a real key").unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key.pub"), "pub").unwrap();
    std::fs::write(dir.join("a.txt"), "MARKER-value").unwrap();
    let recipe = format!(
        "{HEAD}[[partition]]\nlabel = \"root\"\ntype = \"linux\"\nsize = \"16MiB\"\nsource = \"rootfs\"\n\n{}",
        secret("a", "/run/secrets/a", "root", "0400")
    );
    std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
    let expect = "ships SSH host keys (/etc/ssh/ssh_host_ed25519_key)";
    let checked = check(dir);
    assert!(String::from_utf8_lossy(&checked.stderr).contains(expect));
    let out = build_cmd(&dir.join("recipe.toml"), &dir.join("out"))
        .args(["--no-zst", "--json"])
        .output()
        .unwrap();
    assert_success(&out, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains(expect));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["warnings"][0].as_str().unwrap().contains(expect));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/build.json")).unwrap()).unwrap();
    assert!(manifest["warnings"][0].as_str().unwrap().contains(expect));
    // Without the private key, no warning.
    std::fs::remove_file(root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    let checked = check(dir);
    assert!(!String::from_utf8_lossy(&checked.stderr).contains("host keys"));
}
