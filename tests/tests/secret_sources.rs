//! Secret sources and processing through the real `build-image`: command
//! output (stderr shown on failure, stdout never), dotenv, files, env, and
//! `mkpasswd-yescrypt` hashes checked with the system's crypt (libxcrypt).

#![forbid(unsafe_code)]

use sealed_image_tests::*;
use std::path::{Path, PathBuf};

fn write_recipe(dir: &Path, secrets: &str) -> PathBuf {
    let p = dir.join("recipe.toml");
    std::fs::write(&p, format!("{ESP_ONLY}\n{secrets}")).unwrap();
    p
}

fn build(recipe: &Path, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = build_image_cmd();
    c.arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .arg("--embed-key");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Build `secrets` (after [`ESP_ONLY`], in a fresh temp dir) with `env`:
/// it must fail with exit 5 (a value could not be had) and write no image.
/// Returns its stderr.
fn refused(secrets: &str, env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), secrets);
    let out = tmp.path().join("out");
    let r = build(&recipe, &out, env);
    assert_exit(&r, 5, "the build");
    assert!(
        !out.join("t.img").exists(),
        "a refused build wrote the image"
    );
    stderr(&r)
}

/// Provision the built image's bundle on a device tree and return the root.
fn provision(out: &Path, root: &Path) {
    let image = out.join("t.img");
    let parts = sfdisk_partitions(&image);
    let start = parts[0]["start"].as_u64().unwrap() * 512;
    device_tree(root, &[]);
    copy_sealed_out(
        &image,
        start,
        &["bundle", "image.key"],
        &root.join("boot/efi/sealed-secrets"),
    );
    firstboot_ok(root, "run");
}

/// Build `secrets` in `dir` with `env` (it must succeed), then provision
/// its image on the device tree `dir/dev`: the build's output, the image
/// and the device root.
fn build_and_provision(
    dir: &Path,
    secrets: &str,
    env: &[(&str, &str)],
) -> (std::process::Output, PathBuf, PathBuf) {
    let recipe = write_recipe(dir, secrets);
    let out = dir.join("out");
    let r = build(&recipe, &out, env);
    assert_success(&r, "the build");
    let root = dir.join("dev");
    provision(&out, &root);
    (r, out.join("t.img"), root)
}

#[test]
#[ignore = "needs mcopy (mtools), sfdisk (fdisk); scripts/test runs it"]
fn command_and_dotenv_sources() {
    require_tools_from(FAT_TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let dotenv = "# comment\nexport TOKEN='tok-MARKER-dotenv'\n";
    write_file(&tmp, "site.env", dotenv);
    let (r, image, root) = build_and_provision(
        tmp.path(),
        r#"
[secrets.from_cmd]
type = "single-line"
source = { command = ["sh", "-c", "echo cmd-MARKER-value; echo harmless-note >&2"] }

[secrets.from_dotenv]
type = "single-line"
source = { dotenv = { file = "site.env", key = "TOKEN" } }

[secrets.from_env]
type = "multi-line"
"#,
        &[("from_env", "line1\nenv-MARKER\n")],
    );
    for m in ["cmd-MARKER-value", "tok-MARKER-dotenv", "env-MARKER"] {
        assert!(
            !contains(&r.stdout, m.as_bytes()) && !contains(&r.stderr, m.as_bytes()),
            "{m} printed"
        );
        assert!(
            !file_contains(&image, m.as_bytes()),
            "{m} in clear in the image"
        );
    }
    let read = |n: &str| std::fs::read_to_string(root.join("run/secrets").join(n)).unwrap();
    assert_eq!(read("from_cmd"), "cmd-MARKER-value");
    assert_eq!(read("from_dotenv"), "tok-MARKER-dotenv");
    assert_eq!(read("from_env"), "line1\nenv-MARKER\n");
}

#[test]
fn failing_command_shows_its_stderr_never_its_stdout() {
    let err = refused(
        r#"
[secrets.vault]
type = "single-line"
source = { command = ["sh", "-c", "echo half-MARKER-secret; echo 'vault: permission denied' >&2; exit 3"] }
"#,
        &[],
    );
    assert!(err.contains("vault: permission denied"), "{err}");
    assert!(err.contains("secret vault"), "{err}");
    assert!(
        !err.contains("half-MARKER-secret"),
        "stdout of a failed command shown: {err}"
    );
}

#[test]
fn type_violations_are_refused_without_echoing_the_value() {
    let secrets = "[secrets.one]\ntype = \"single-line\"\n\n[secrets.envf]\ntype = \"env\"\n";
    let err = refused(
        secrets,
        &[("one", "a-MARKER\nsecond-line"), ("envf", "A=1\n")],
    );
    assert!(
        err.contains("secret one (single-line)") && err.contains("line break"),
        "{err}"
    );
    assert!(!err.contains("a-MARKER"), "{err}");
    let env = [("one", "ok"), ("envf", "A=1\nnot an assignment-MARKER\n")];
    let err = refused(secrets, &env);
    assert!(err.contains("line 2 is not KEY=VALUE"), "{err}");
    assert!(!err.contains("MARKER"), "{err}");
}

#[test]
fn check_lists_every_secret_with_how_to_provide_it() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        r#"
[secrets.present]
type = "single-line"
description = "is there"

[secrets.absent_env]
type = "single-line"
description = "needs an env var"
source = { env = "SI_TEST_ABSENT" }

[secrets.absent_file]
type = "file"
source = { file = "nope.pem" }

[secrets.optional]
type = "single-line"
required = false
"#,
    );
    let out = build_image_cmd()
        .arg("check")
        .arg(&recipe)
        .env("present", "value-MARKER")
        .env_remove("SI_TEST_ABSENT")
        .env_remove("optional")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("value-MARKER"));
    assert!(
        table.contains("set the environment variable SI_TEST_ABSENT"),
        "{table}"
    );
    assert!(
        table.contains("create the file") && table.contains("nope.pem"),
        "{table}"
    );
    assert_eq!(table.matches('✓').count(), 1, "{table}");
    assert_eq!(table.matches('✗').count(), 3, "{table}");
    let json = build_image_cmd()
        .arg("check")
        .arg(&recipe)
        .arg("--json")
        .env("present", "value-MARKER")
        .env_remove("SI_TEST_ABSENT")
        .output()
        .unwrap();
    assert!(!contains(&json.stdout, b"value-MARKER"));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let absent = rows.iter().find(|r| r["name"] == "absent_env").unwrap();
    assert_eq!(absent["present"], false);
    assert_eq!(absent["required"], true);
    assert_eq!(absent["description"], "needs an env var");
}

#[test]
#[ignore = "needs mcopy (mtools), sfdisk (fdisk), perl, mkpasswd (whois); scripts/test runs it"]
fn yescrypt_password_is_hashed_at_build_time_and_verifies_with_crypt() {
    let tools = [("perl", "perl"), ("mkpasswd", "whois")];
    require_tools_from(FAT_TOOLS);
    require_tools_from(&tools);
    let tmp = tempfile::tempdir().unwrap();
    let password = "correct-horse-MARKER-pw";
    let (_, image, root) = build_and_provision(
        tmp.path(),
        r#"
[secrets.admin_password]
type = "single-line"
process = "mkpasswd-yescrypt"
description = "hash for chpasswd -e / usermod -p"
"#,
        &[("admin_password", password)],
    );
    let hash = std::fs::read_to_string(root.join("run/secrets/admin_password")).unwrap();
    assert!(hash.starts_with("$y$"), "{hash}");
    // libxcrypt's crypt(3), through perl, accepts the hash for the password…
    let verify = |pw: &str| {
        let o = command("perl")
            .args([
                "-e",
                "print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? 'ok' : 'no'",
                pw,
                &hash,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(verify(password), "ok");
    // …and not for another one.
    assert_eq!(verify("wrong-password"), "no");
    // mkpasswd with the same setting (params and salt) computes the same hash.
    let setting = &hash[..hash.rfind('$').unwrap()];
    let salt = &setting[setting.rfind('$').unwrap() + 1..];
    let params = setting.split('$').nth(2).unwrap();
    let o = command("mkpasswd")
        .args([
            "-m",
            "yescrypt",
            "-R",
            &params_rounds(params),
            "-S",
            salt,
            password,
        ])
        .output()
        .unwrap();
    if o.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            hash,
            "mkpasswd disagrees"
        );
    }
    // The plaintext password reached neither the image nor the device.
    assert!(!file_contains(&image, password.as_bytes()));
    assert!(
        files_containing(&root, password.as_bytes()).is_empty(),
        "plaintext on the device"
    );
}

/// mkpasswd's -R for yescrypt is the cost factor encoded in `j9T`'s middle
/// character; the default setting is cost 5.
fn params_rounds(params: &str) -> String {
    match params {
        "j9T" => "5".into(),
        _ => "5".into(),
    }
}
