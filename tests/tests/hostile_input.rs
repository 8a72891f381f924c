//! build-image under hostile and careless input: a marker value planted in
//! every wrong position of every input file never appears in anything
//! printed (human or --json), and each error names where, not what.

#![forbid(unsafe_code)]

use sealed_image_tests::*;
use std::path::Path;
use std::process::{Command, Output};

const MARK: &str = "MRKhostile7731";

const HEAD: &str = "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"boot\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\n\n";

/// The secret `a`, read from `a.txt`.
const SECRET_A: &str = "[secrets.a]\ntype = \"single-line\"\nsource = { file = \"a.txt\" }\n";

/// A temp project: `recipe.toml` is HEAD and `secrets`, beside `files`
/// (path, contents; their directories are made).
fn project(secrets: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = tmp.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(tmp.path().join("recipe.toml"), format!("{HEAD}{secrets}")).unwrap();
    tmp
}

fn build_image(dir: &Path, args: &[&str]) -> Output {
    build_image_cmd()
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn assert_clean(what: &str, out: &Output) {
    assert_not_printed(out, MARK.as_bytes(), what);
}

/// Recipes with the marker where a value does not belong: as an enum
/// variant, a number, a table, a path, an owner, a mode, a source kind, an
/// image name, a partition field, a key.
#[test]
fn recipe_errors_never_print_the_offending_value() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("a.txt"), "x").unwrap();
    let secret = |body: &str| format!("{HEAD}[secrets.a]\n{body}\n");
    let cases: Vec<(&str, String)> = vec![
        ("type variant", secret(&format!("type = \"{MARK}\"\nsource = {{ file = \"a.txt\" }}"))),
        ("type as number", secret("type = 482913\nsource = { file = \"a.txt\" }").replace("482913", &format!("\"{MARK}\"").replace('"', ""))),
        ("string where a table goes", format!("{HEAD}[secrets]\na = \"{MARK}\"\n")),
        ("value as a source", secret(&format!("type = \"single-line\"\nsource = \"{MARK}\""))),
        ("unknown source kind", secret(&format!("type = \"single-line\"\nsource = {{ {MARK} = \"x\" }}"))),
        ("value in path", secret(&format!("type = \"single-line\"\npath = \"{MARK}\"\nsource = {{ file = \"a.txt\" }}"))),
        ("value as owner", secret(&format!("type = \"single-line\"\nowner = \"{MARK} x\"\nsource = {{ file = \"a.txt\" }}"))),
        ("value as mode", secret(&format!("type = \"single-line\"\nmode = \"{MARK}\"\nsource = {{ file = \"a.txt\" }}"))),
        ("value as required", secret(&format!("type = \"single-line\"\nrequired = \"{MARK}\"\nsource = {{ file = \"a.txt\" }}"))),
        ("value as process", secret(&format!("type = \"single-line\"\nprocess = \"{MARK}\"\nsource = {{ file = \"a.txt\" }}"))),
        ("value as image name", format!("[image]\nname = \"{MARK}/x\"\n")),
        ("value as a table size", format!("[image]\nname = \"r\"\nsize = \"{MARK}\"\n")),
        ("value as a partition type", format!("[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"b\"\ntype = \"{MARK}\"\nsize = \"8MiB\"\n")),
        ("value as a key", format!("{HEAD}{MARK} = 1\n")),
        ("value as a unit", secret(&format!("type = \"single-line\"\nsource = {{ file = \"a.txt\" }}\nrestart-units = [\"{MARK} x\"]"))),
    ];
    for (what, recipe) in cases {
        assert!(
            recipe.contains(MARK),
            "{what}: the case must plant the marker"
        );
        std::fs::write(d.join("recipe.toml"), &recipe).unwrap();
        for args in [
            &["check", "recipe.toml"][..],
            &["check", "recipe.toml", "--json"][..],
            &["build", "recipe.toml", "--out", "out", "--json"][..],
        ] {
            let out = build_image(d, args);
            assert_clean(&format!("{what} {args:?}"), &out);
            // `check` looks at the secrets only, not at the layout.
            if args[0] == "check" && out.status.success() {
                continue;
            }
            assert_exit(&out, 3, format!("{what} {args:?}"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("recipe.toml"),
                "{what}: the file is named: {err}"
            );
        }
        assert!(!d.join("out").exists(), "{what}: output left behind");
    }
}

/// Devices files, TOML and CSV, with the marker in every wrong position;
/// `--json` never uses a value as a device directory.
#[test]
fn devices_file_errors_never_print_the_offending_value() {
    let tmp = project(
        "[secrets.api_token]\ntype = \"single-line\"\nsource = { file = \"a.txt\" }\n",
        &[("a.txt", "x")],
    );
    let d = tmp.path();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "toml variant",
            "devices.toml",
            format!("[[device]]\nname = \"k1\"\nsecrets.api_token = \"{MARK}\"\n"),
        ),
        (
            "toml number",
            "devices.toml",
            "[[device]]\nname = \"k1\"\nsecrets.api_token = { value = 4829137731 }\n"
                .replace("4829137731", &MARK.replace("MRKhostile", "")),
        ),
        (
            "toml value as name",
            "devices.toml",
            format!("[[device]]\nname = \"{MARK}/\"\n"),
        ),
        (
            "toml value as recipient",
            "devices.toml",
            format!("[[device]]\nname = \"k1\"\nrecipient = \"{MARK}\"\n"),
        ),
        (
            "toml unknown secret",
            "devices.toml",
            format!("[[device]]\nname = \"k1\"\nsecrets.{MARK} = {{ value = \"x\" }}\n"),
        ),
        (
            "toml value as a key",
            "devices.toml",
            format!("[[device]]\nname = \"k1\"\n{MARK} = \"x\"\n"),
        ),
        (
            "csv value as name",
            "devices.csv",
            format!("name,api_token\n{MARK} x,k1\n"),
        ),
        (
            "csv value as recipient",
            "devices.csv",
            format!("name,recipient\nk1,{MARK}\n"),
        ),
        (
            "csv bad quote",
            "devices.csv",
            format!("name,api_token\nk1,\"{MARK}\"x\n"),
        ),
        (
            "csv short row",
            "devices.csv",
            format!("name,api_token\n{MARK}\n"),
        ),
        (
            "csv swapped columns (a value as the name, a name as the recipient)",
            "devices.csv",
            format!("name,recipient,api_token\n{MARK},k1,age1qqq\n"),
        ),
        (
            "csv value as a repeated name",
            "devices.csv",
            format!("name,api_token\n{MARK},x\n{MARK},y\n"),
        ),
        (
            "csv value as tags",
            "devices.csv",
            format!("name,tags\nk1,{MARK}/x\n"),
        ),
        (
            "toml value as a tag",
            "devices.toml",
            format!("[[device]]\nname = \"k1\"\ntags = [\"{MARK} x\"]\n"),
        ),
        (
            "toml valid-looking value as the name, bad recipient",
            "devices.toml",
            format!("[[device]]\nname = \"{MARK}\"\nrecipient = \"k1\"\n"),
        ),
    ];
    // A fleet build of the devices file `file`, with --json or not.
    let fleet = |file: &str, json: bool| {
        let mut args = vec![
            "build",
            "recipe.toml",
            "--devices",
            file,
            "--bundles-only",
            "--out",
            "out",
        ];
        if json {
            args.push("--json");
        }
        build_image(d, &args)
    };
    for (what, file, text) in cases {
        std::fs::write(d.join(file), &text).unwrap();
        for json in [false, true] {
            let out = fleet(file, json);
            assert!(!out.status.success(), "{what}: accepted");
            assert_clean(what, &out);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(file), "{what}: the file is named: {err}");
        }
        assert!(!d.join("out").exists(), "{what}: output left behind");
        std::fs::remove_file(d.join(file)).unwrap();
    }
    // The number case really planted a number.
    let text = "[[device]]\nname = \"k1\"\nsecrets.api_token = { value = 7731 }\n";
    std::fs::write(d.join("devices.toml"), text).unwrap();
    let out = fleet("devices.toml", false);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("7731"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"));
}

/// A dotenv file with the marker in malformed lines: never echoed.
#[test]
fn dotenv_errors_never_print_lines() {
    let tmp = project("[secrets.api_token]\ntype = \"single-line\"\nsource = { dotenv = { file = \".env\", key = \"API_TOKEN\" } }\n", &[]);
    let d = tmp.path();
    for text in [
        format!("{MARK}\n"),
        format!("API_TOKEN=\"{MARK}\n"),
        format!("export {MARK}\nAPI_TOKEN=x\nAPI_TOKEN={MARK}\n"),
        format!("API_TOKEN={MARK}\nAPI_TOKEN=y\n"),
        format!("API_TOKEN={MARK}\nline two\n").replace("API_TOKEN", "API_TOKEN "),
    ] {
        std::fs::write(d.join(".env"), &text).unwrap();
        for args in [
            &["check", "recipe.toml"][..],
            &["build", "recipe.toml", "--out", "out"][..],
        ] {
            let out = build_image(d, args);
            assert_clean(&format!("{text:?} {args:?}"), &out);
        }
        let _ = std::fs::remove_dir_all(d.join("out"));
    }
}

/// Sources are bounded: a command that hangs or floods is killed (exit 5,
/// a clear message, quickly and without reading it all), a file source
/// that is a FIFO, a device or a directory is refused at once, and `check`
/// reports a failing command as failed, not missing.
#[test]
fn sources_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let recipe = |source: &str, extra: &str| {
        format!("{HEAD}[secrets.a]\ntype = \"file\"\nsource = {source}\n{extra}\n")
    };
    let run = |text: &str, args: &[&str]| {
        std::fs::write(d.join("recipe.toml"), text).unwrap();
        let t = std::time::Instant::now();
        let out = build_image(d, args);
        (out, t.elapsed())
    };
    // A command that never ends: killed after its timeout.
    let (out, took) = run(
        &recipe("{ command = [\"sleep\", \"1000\"] }", "timeout = 0.5"),
        &["build", "recipe.toml", "--out", "out"],
    );
    assert_exit(&out, 5, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not finish within 0.5 s and was killed"),
        "{err}"
    );
    // Not a timing test: a generous bound that only a hang would break.
    assert!(took < std::time::Duration::from_secs(60));
    assert!(!d.join("out").exists());
    // A command that floods its stdout: killed at the secret size limit;
    // its process group (here: `yes` under sh) goes too.
    let (out, _) = run(
        &recipe("{ command = [\"sh\", \"-c\", \"yes MRKhostile7731\"] }", ""),
        &["build", "recipe.toml", "--out", "out"],
    );
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("printed more than") && err.contains("was killed"),
        "{err}"
    );
    assert_clean("flood", &out);
    let leftover = command("pgrep").args(["-f", "yes MRKhostile7731"]).output();
    if let Ok(l) = leftover {
        assert!(
            !l.status.success(),
            "the command's children were left running"
        );
    }
    // check: a failing command is "failed" (exit 5), not missing (4).
    let (out, _) = run(
        &recipe(
            "{ command = [\"sh\", \"-c\", \"echo oops >&2; exit 3\"] }",
            "",
        ),
        &["check", "recipe.toml"],
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stdout).contains("└ failed:"));
    // File sources: a FIFO (would block forever), a device, a directory.
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    std::fs::create_dir(d.join("adir")).unwrap();
    for (path, what) in [
        ("fifo", "a FIFO"),
        ("/dev/zero", "a character device"),
        ("adir", "a directory"),
    ] {
        let (out, _) = run(
            &recipe(&format!("{{ file = \"{path}\" }}"), ""),
            &["build", "recipe.toml", "--out", "out"],
        );
        assert_eq!(out.status.code(), Some(5), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(what) && err.contains("not a regular file"),
            "{path}: {err}"
        );
    }
    // A file larger than a secret may be is refused without reading it all.
    let big = d.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(17 << 20).unwrap();
    let (out, _) = run(
        &recipe("{ file = \"big\" }", ""),
        &["build", "recipe.toml", "--out", "out"],
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the limit of a secret"));
}

/// FAT `files` never leak the build host: a link out of the source tree is
/// refused naming the link, one inside it is copied, a FIFO is refused.
#[test]
#[ignore = "needs mcopy (mtools); scripts/test runs it"]
fn fat_files_never_follow_links_out_of_their_tree() {
    require_tool_from("mcopy", "mtools");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("host-secret"), "MRKhostile7731 host shadow").unwrap();
    let boot = d.join("boot");
    std::fs::create_dir_all(boot.join("sub")).unwrap();
    std::fs::write(boot.join("sub/real.txt"), "inside").unwrap();
    std::os::unix::fs::symlink("sub/real.txt", boot.join("inner-link")).unwrap();
    std::os::unix::fs::symlink(d.join("host-secret"), boot.join("x")).unwrap();
    let recipe = "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"boot\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\nfiles = { \"b\" = \"boot\" }\n\n[secrets.a]\ntype = \"single-line\"\nsource = { file = \"a.txt\" }\n";
    std::fs::write(d.join("recipe.toml"), recipe).unwrap();
    std::fs::write(d.join("a.txt"), "v").unwrap();
    let out = build_image(d, &["build", "recipe.toml", "--out", "out", "--no-zst"]);
    assert_exit(&out, 3, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boot/x") && err.contains("outside"), "{err}");
    assert_clean("link out", &out);
    assert!(!d.join("out").exists());
    // Without the outside link: the inside link is copied, as a file.
    std::fs::remove_file(boot.join("x")).unwrap();
    let out = build_image(d, &["build", "recipe.toml", "--out", "out", "--no-zst"]);
    assert_success(&out, "");
    let img = d.join("out/r.img");
    assert!(!file_contains(&img, b"MRKhostile7731"));
    let off = sfdisk_partitions(&img)[0]["start"].as_u64().unwrap() * 512;
    assert_eq!(fat_file(&img, off, "/b/inner-link"), "inside");
    // A FIFO in the tree is refused at once.
    std::fs::remove_dir_all(d.join("out")).unwrap();
    mkfifo(&boot.join("pipe"));
    let out = build_image(d, &["build", "recipe.toml", "--out", "out", "--no-zst"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a FIFO"));
}

fn hashes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Outputs are committed as a set: a failing build leaves the previous
/// set untouched; the staging directory of a killed build (an image and
/// its key) is removed by the next run; an existing key is not replaced
/// without --force; stale outputs of an earlier build do not stay beside a
/// new set.
#[test]
fn outputs_are_committed_as_a_set() {
    let tmp = project(SECRET_A, &[("a.txt", "v1")]);
    let d = tmp.path();
    let ok = |args: &[&str]| {
        let out = build_image(d, args);
        assert_success(&out, format!("{args:?}"));
    };
    ok(&["build", "recipe.toml", "--out", "out"]);
    let before = hashes(&d.join("out"));
    assert!(before.iter().any(|(n, _)| n == "r.img.zst"));
    // An existing key is not replaced silently.
    std::fs::write(d.join("a.txt"), "v2").unwrap();
    let out = build_image(d, &["build", "recipe.toml", "--out", "out", "--no-zst"]);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("r.key") && err.contains("--force"), "{err}");
    assert_eq!(hashes(&d.join("out")), before);
    // A failure after every new file was written: the old set stays whole.
    let forced = [
        "build",
        "recipe.toml",
        "--out",
        "out",
        "--no-zst",
        "--force",
    ];
    let out = build_image_cmd()
        .args(forced)
        .env("BUILD_IMAGE_FAILPOINT", "before-commit")
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        hashes(&d.join("out")),
        before,
        "a failed build changed the outputs"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind");
    // A killed build's staging directory is removed by the next run.
    let dead = d.join("out/.build-r.tmp-999999999");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("r.key"), "SEALED-IMAGE-KEY-1:00").unwrap();
    // With --force the new set replaces the old one, and the old .img.zst
    // (this build writes none) does not stay beside it.
    ok(&forced);
    assert!(!dead.exists(), "a killed build's image and key stayed");
    let after = hashes(&d.join("out"));
    assert!(
        !after.iter().any(|(n, _)| n == "r.img.zst"),
        "stale .img.zst kept"
    );
    assert_checksums(&d.join("out"), "the new set");
}

/// Fleet builds never delete what they did not create: a directory named
/// like a device that is not a fleet output is refused, untouched.
#[test]
fn fleet_builds_never_replace_a_users_directory() {
    let tmp = project(
        "[secrets.a]\ntype = \"single-line\"\nsource = { file = \"home/a.txt\" }\n",
        &[("home/a.txt", "v"), ("devices.csv", "name\nhome\nkiosk\n")],
    );
    let d = tmp.path();
    // A fleet build of devices.csv into the project directory itself.
    let fleet = |force: bool| {
        let mut args = vec![
            "build",
            "recipe.toml",
            "--devices",
            "devices.csv",
            "--bundles-only",
            "--out",
            ".",
        ];
        if force {
            args.push("--force");
        }
        build_image(d, &args)
    };
    let out = fleet(false);
    assert_exit(&out, 6, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not made by a fleet build"));
    assert_eq!(std::fs::read_to_string(d.join("home/a.txt")).unwrap(), "v");
    assert!(
        !d.join("kiosk").exists(),
        "nothing is written when one device is refused"
    );
    // A fleet's own directories are replaced by the next fleet build, but
    // a device's key (perhaps the only key of an image already flashed)
    // only with --force.
    std::fs::write(d.join("devices.csv"), "name\nkiosk\n").unwrap();
    let out = fleet(false);
    assert_success(&out, "");
    assert!(d.join("kiosk/.sealed-image-device").is_file());
    let key = d.join("kiosk/r.key");
    let first_key = std::fs::read(&key).unwrap();
    let out = fleet(false);
    assert_exit(&out, 6, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiosk/r.key") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), first_key, "key kept");
    let out = fleet(true);
    assert_success(&out, "");
    assert_ne!(std::fs::read(&key).unwrap(), first_key, "key replaced");
    assert!(d.join("kiosk/.sealed-image-device").is_file());
}

/// flash to a regular file: created 0600 (it holds the bundle and the
/// key), an existing file that is not an earlier flash output needs
/// --force, an earlier flash output can be flashed again.
#[test]
fn flash_to_a_file_is_private_and_never_clobbers() {
    let tmp = project(SECRET_A, &[("a.txt", "v")]);
    let d = tmp.path();
    let out = build_image(d, &["build", "recipe.toml", "--out", "out", "--no-zst"]);
    assert!(out.status.success());
    let flash = |target: &str, extra: &[&str]| {
        let mut args = vec!["flash", "out/r.img", target, "--key", "out/r.key"];
        args.extend_from_slice(extra);
        build_image(d, &args)
    };
    let out = flash("card.img", &[]);
    assert_success(&out, "");
    let mode = perm_bits(d.join("card.img"));
    assert_eq!(mode, 0o600);
    // Again onto the earlier flash output: fine.
    let again = flash("card.img", &[]);
    assert_success(&again, "");
    // A user's file is not clobbered without --force.
    std::fs::write(d.join("thesis.odt"), "years of work").unwrap();
    let out = flash("thesis.odt", &[]);
    assert_exit(&out, 7, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(d.join("thesis.odt")).unwrap(),
        "years of work"
    );
    let out = flash("thesis.odt", &["--force"]);
    assert!(out.status.success());
    let mode = perm_bits(d.join("thesis.odt"));
    assert_eq!(mode, 0o600);
}

/// No message repeats its own text ("X: X"): a context that already holds
/// its cause is not followed by the cause again.
#[test]
fn messages_never_repeat_themselves() {
    let tmp = project(
        "[secrets.a]\ntype = \"file\"\nsource = { file = \"adir\" }\n",
        &[],
    );
    let d = tmp.path();
    std::fs::create_dir(d.join("adir")).unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["build", "missing.toml", "--out", "o"],
        vec!["check", "missing.toml"],
        vec!["build", "recipe.toml", "--out", "o"],
        vec!["inspect", "nothing.img"],
        vec!["flash", "nothing.img", "t.img"],
        vec!["inject", "nothing.img", "--recipe", "recipe.toml"],
        vec![
            "build",
            "recipe.toml",
            "--devices",
            "nodevices.csv",
            "--out",
            "o",
        ],
    ];
    for args in cases {
        let out = build_image(d, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for line in err.lines() {
            let parts: Vec<&str> = line.split(": ").collect();
            for i in 0..parts.len() {
                for j in i + 1..parts.len() {
                    assert!(
                        parts[i].len() < 8 || parts[i] != parts[j],
                        "{args:?}: repeats itself: {line}"
                    );
                }
            }
        }
    }
    // The device side too.
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/sealed-firstboot.conf"), "nonsense\n").unwrap();
    let out = Command::new(bin("sealed-firstboot"))
        .arg("--root")
        .arg(&root)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        assert!(
            parts.windows(2).all(|w| w[0] != w[1] || w[0].len() < 8),
            "{line}"
        );
    }
}
