//! Signing keys as a team and its CI handle them: `keygen --signing`
//! writes a private key file once (0600, never replaced) and prints the
//! public key; builds find the key on the command line, in the
//! environment or in the recipe, refuse to run without one, and say so
//! loudly when `--unsigned` or a DEMO-ONLY key is used. Keys never appear
//! in any output.

use sealed_image_tests::*;
use std::path::Path;
use std::process::{Command, Output};

fn build_image(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin("build-image"));
    c.args(args)
        .current_dir(dir)
        .env_remove("SEALED_IMAGE_SIGNING_KEY")
        .env_remove("SEALED_IMAGE_SIGNING_KEY_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

const RECIPE: &str =
    "[image]\nname = \"r\"\n\n[secrets.a]\ntype = \"single-line\"\nsource = { file = \"a.txt\" }\n";

fn project() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a.txt"), "MARKER-a").unwrap();
    std::fs::write(t.path().join("recipe.toml"), RECIPE).unwrap();
    t
}

/// The header of a sealed bundle file: its version and its signer.
fn header(path: &Path) -> sealed_bundle::Header {
    sealed_bundle::Header::parse(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn keygen_writes_a_private_file_once_and_prints_the_public_key() {
    let t = project();
    let d = t.path();
    let out = build_image(d, &["keygen", "--signing", "-o", "team.key"], &[]);
    assert_success(&out, "keygen");
    let public = stdout(&out).trim().to_string();
    assert!(public.starts_with("sealed-signer1") && !public.contains(char::is_whitespace));
    assert_eq!(stdout(&out).lines().count(), 1, "one line");
    assert_eq!(perm_bits(d.join("team.key")), 0o600);
    let text = std::fs::read_to_string(d.join("team.key")).unwrap();
    let secret = text.lines().last().unwrap().to_string();
    assert!(secret.starts_with("SEALED-SIGNING-KEY-1:"));
    assert_not_printed(&out, secret.as_bytes(), "the private key");
    // Never replaced.
    let again = build_image(d, &["keygen", "--signing", "-o", "team.key"], &[]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("refusing to replace it"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(d.join("team.key")).unwrap(), text);
    // The public key again, from the file.
    let p = build_image(d, &["pubkey", "--signing-key", "team.key"], &[]);
    assert_eq!(stdout(&p).trim(), public);
    assert_not_printed(&p, secret.as_bytes(), "the private key");
    // keygen says what kind.
    let out = build_image(d, &["keygen", "-o", "x.key"], &[]);
    assert_exit(&out, 2, "keygen without --signing");
    assert!(!d.join("x.key").exists());
}

#[test]
fn a_build_finds_its_key_or_refuses_to_run() {
    let t = project();
    let d = t.path();
    build_image(d, &["keygen", "--signing", "-o", "team.key"], &[]);
    let public = stdout(&build_image(
        d,
        &["pubkey", "--signing-key", "team.key"],
        &[],
    ))
    .trim()
    .to_string();
    let text = std::fs::read_to_string(d.join("team.key")).unwrap();
    let secret = text.lines().last().unwrap().to_string();

    // No key anywhere: refused (usage, exit 2) with how to get one, nothing written.
    let out = build_image(d, &["bundle", "recipe.toml", "--out", "o0"], &[]);
    assert_exit(&out, 2, "no key");
    assert!(
        stderr(&out).contains("keygen --signing"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("o0").exists());

    // Each source, and each signs with the key.
    let key_file = d.join("team.key").to_string_lossy().into_owned();
    for (out_dir, args, env) in [
        ("o1", vec!["--signing-key", "team.key"], vec![]),
        (
            "o2",
            vec![],
            vec![("SEALED_IMAGE_SIGNING_KEY", text.as_str())],
        ),
        (
            "o3",
            vec![],
            vec![("SEALED_IMAGE_SIGNING_KEY", secret.as_str())],
        ),
        (
            "o4",
            vec![],
            vec![("SEALED_IMAGE_SIGNING_KEY_FILE", key_file.as_str())],
        ),
    ] {
        let mut a = vec!["bundle", "recipe.toml", "--out", out_dir];
        a.extend(args);
        let out = build_image(d, &a, &env);
        assert_success(&out, out_dir);
        assert_not_printed(&out, secret.as_bytes(), "the signing key");
        assert_not_printed(&out, b"MARKER-", "a value");
        let h = header(&d.join(out_dir).join("r.bundle"));
        assert_eq!(h.version, 3);
        assert_eq!(h.signer.unwrap().to_string(), public, "{out_dir}");
    }
    // The recipe's [signing] key, relative to the recipe.
    std::fs::write(
        d.join("recipe.toml"),
        format!("[signing]\nkey = \"team.key\"\n\n{RECIPE}"),
    )
    .unwrap();
    let out = build_image(d, &["bundle", "recipe.toml", "--out", "o5"], &[]);
    assert_success(&out, "recipe key");
    assert_eq!(
        header(&d.join("o5/r.bundle")).signer.unwrap().to_string(),
        public
    );

    // --unsigned: a format 2 bundle, never silently.
    let out = build_image(
        d,
        &["bundle", "recipe.toml", "--out", "o6", "--unsigned"],
        &[],
    );
    assert_success(&out, "--unsigned");
    assert!(
        stderr(&out).contains("--unsigned: the bundle is not signed"),
        "{}",
        stderr(&out)
    );
    let h = header(&d.join("o6/r.bundle"));
    assert_eq!((h.version, h.signer), (2, None));
    let out = build_image(
        d,
        &[
            "bundle",
            "recipe.toml",
            "--out",
            "o7",
            "--unsigned",
            "--signing-key",
            "team.key",
        ],
        &[],
    );
    assert_exit(&out, 2, "--unsigned with --signing-key");
    // A key that is no key is named, never shown.
    std::fs::write(d.join("bad.key"), "MARKER-not-a-key\n").unwrap();
    let out = build_image(
        d,
        &[
            "bundle",
            "recipe.toml",
            "--out",
            "o8",
            "--signing-key",
            "bad.key",
        ],
        &[],
    );
    assert_exit(&out, 2, "a bad key");
    assert!(stderr(&out).contains("bad.key"), "{}", stderr(&out));
    assert_not_printed(&out, b"MARKER-", "the bad key's text");
}

/// The README's first command works with nothing set up: the demo recipe
/// signs with its committed DEMO-ONLY key, says so, and the image pins it.
#[test]
fn the_demo_builds_with_nothing_set_up_and_pins_its_demo_key() {
    if !require_tools_from(&[("debugfs", "e2fsprogs"), ("mcopy", "mtools")]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let recipe = workspace().join("image-recipes/demo/recipe.toml");
    let out = build_image(
        t.path(),
        &[
            "build",
            recipe.to_str().unwrap(),
            "--out",
            "out",
            "--no-zst",
            "--json",
        ],
        &[],
    );
    assert_success(&out, "the demo build");
    assert!(stderr(&out).contains("DEMO-ONLY"), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let demo_key = workspace().join("image-recipes/demo/DEMO-ONLY-signing.key");
    let public = stdout(&build_image(
        t.path(),
        &["pubkey", "--signing-key", demo_key.to_str().unwrap()],
        &[],
    ))
    .trim()
    .to_string();
    assert_eq!(report["signer"], public.as_str());
    assert_eq!(report["pinned_signers"], serde_json::json!([public]));
    assert!(report["warnings"].to_string().contains("DEMO-ONLY"));
    // The root filesystem's configuration pins it; the recipe's source
    // tree is left as it was.
    let img = t.path().join("out/demo.img");
    let root_off = sfdisk_partitions(&img)[1]["start"].as_u64().unwrap() * 512;
    let conf = run_ok(
        "debugfs",
        &[
            "-R",
            "cat /etc/sealed-firstboot.conf",
            &format!("{}?offset={root_off}", img.display()),
        ],
    );
    let conf = stdout(&conf);
    assert!(conf.contains(&format!("signer = {public}")), "{conf}");
    assert!(conf.contains("boot_dir=/boot/efi"), "{conf}");
    let source = std::fs::read_to_string(
        workspace().join("image-recipes/demo/rootfs/etc/sealed-firstboot.conf"),
    )
    .unwrap();
    assert!(!source.contains("signer"), "the source tree was modified");
}

/// The signing key in `$SEALED_IMAGE_SIGNING_KEY` (a CI secret) never
/// reaches a child process: a command source that writes its environment
/// to a file shows neither the variable nor the key (a `set -x` wrapper or
/// one that logs its environment would print it into the CI log).
#[test]
fn child_processes_never_see_the_signing_key() {
    let t = project();
    let dump = t.path().join("command.env");
    std::fs::write(
        t.path().join("recipe.toml"),
        format!(
            "[image]\nname = \"r\"\n\n[secrets.a]\ntype = \"single-line\"\nsource = {{ command = [\"sh\", \"-c\", \"env > '{}'; printf MARKER-cmd\"] }}\n",
            dump.display()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(test_signing_key()).unwrap();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("SEALED-SIGNING-KEY-1:"))
        .unwrap()
        .to_owned();
    for (var, value) in [
        ("SEALED_IMAGE_SIGNING_KEY", text.as_str()),
        (
            "SEALED_IMAGE_SIGNING_KEY_FILE",
            test_signing_key().to_str().unwrap(),
        ),
    ] {
        let out = build_image(
            t.path(),
            &["bundle", "recipe.toml", "--out", "o", "--force"],
            &[(var, value), ("PLAIN_VAR", "plain-visible")],
        );
        assert_success(&out, format!("bundle with {var}"));
        let env = std::fs::read_to_string(&dump).unwrap();
        assert!(env.contains("PLAIN_VAR=plain-visible"), "the dump works");
        for hidden in ["SEALED_IMAGE_SIGNING_KEY", "SEALED-SIGNING-KEY", &hex] {
            assert!(!env.contains(hidden), "{var}: the command saw {hidden}");
        }
        std::fs::remove_file(&dump).unwrap();
    }
}
