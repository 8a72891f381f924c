//! The team secrets store through the real `build-image store`: age files
//! opened by the real `age` CLI, exit codes, atomic failure, audit log,
//! rekey, export/import, recipes and fleet scopes. Marker values are planted
//! and searched for in every file of the store and everything printed.

use sealed_image_tests::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MARKER: &str = "st0re-MARKER-6c1f0a";
const MARKER2: &str = "st0re-MARKER-second-93b2";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    key: PathBuf,
    recipient: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let id = age::x25519::Identity::generate();
    let key = dir.join("alice.key");
    std::fs::write(
        &key,
        format!("# alice (test key)\n{}\n", secret_string(&id)),
    )
    .unwrap();
    Fixture {
        store: dir.join("secrets-store"),
        recipient: id.to_public().to_string(),
        key,
        dir,
        _tmp: tmp,
    }
}

fn secret_string(id: &age::x25519::Identity) -> String {
    use age::secrecy::ExposeSecret;
    id.to_string().expose_secret().to_string()
}

/// `build-image store --store DIR ARGS…` as alice (a member: her identity
/// file in `SEALED_IMAGE_STORE_IDENTITY_FILE`), environment otherwise clean.
fn cmd(f: &Fixture, args: &[&str]) -> Command {
    let mut c = anon(f, args);
    c.env("SEALED_IMAGE_STORE_IDENTITY_FILE", &f.key);
    c
}

/// [`cmd`] without any identity.
fn anon(f: &Fixture, args: &[&str]) -> Command {
    let mut c = build_image_cmd();
    c.arg("store")
        .arg("--store")
        .arg(&f.store)
        .args(args)
        .env("USER", "alice")
        .env_remove("SEALED_IMAGE_STORE_IDENTITY")
        .env_remove("SEALED_IMAGE_STORE_IDENTITY_FILE")
        .env_remove("SEALED_IMAGE_STORE_ID")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITLAB_CI")
        .env_remove("CI_JOB_ID")
        .env_remove("BUILD_ID")
        .stdin(Stdio::null());
    c
}

/// Run with `input` on standard input.
fn with_stdin(t: &mut Transcript, mut c: Command, input: &[u8]) -> Output {
    let out = output_with_stdin(&mut c, input);
    t.text.extend_from_slice(&out.stdout);
    t.text.extend_from_slice(&out.stderr);
    out
}

/// A fixture with an initialised store, and the transcript of that.
fn initialised() -> (Fixture, Transcript) {
    let f = fixture();
    let mut t = Transcript::default();
    init(&f, &mut t);
    (f, t)
}

fn init(f: &Fixture, t: &mut Transcript) {
    t.ok(&mut cmd(f, &["init", "--recipient", &f.recipient]));
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of the store but the lock and staging, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == ".lock" || name == ".tmp" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn assert_no_marker(f: &Fixture, t: &Transcript, markers: &[&str]) {
    for m in markers {
        assert!(
            !contains(&t.text, m.as_bytes()),
            "marker {m} printed:\n{}",
            String::from_utf8_lossy(&t.text)
        );
        let leaks = files_containing(&f.store, m.as_bytes());
        assert!(leaks.is_empty(), "marker {m} in {leaks:?}");
    }
}

fn age_decrypt(key: &Path, file: &Path) -> Vec<u8> {
    let out = command("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d {}: {}",
        file.display(),
        text(&out)
    );
    out.stdout
}

#[test]
fn set_get_update_rotate_rm_with_exit_codes_and_the_age_cli() {
    if !require_tool_from("age", "age") {
        return;
    }
    let f = fixture();
    let mut t = Transcript::default();
    // An ssh-ed25519 teammate too: its private key decrypts through build-image.
    let ssh_pub =
        std::fs::read_to_string(workspace().join("firstboot/tests/data/ssh_host_ed25519_key.pub"))
            .unwrap();
    t.ok(&mut cmd(
        &f,
        &[
            "init",
            "--recipient",
            &f.recipient,
            "--recipient",
            ssh_pub.trim(),
        ],
    ));
    let recipients = std::fs::read_to_string(f.store.join("recipients.txt")).unwrap();
    assert!(recipients.contains(&f.recipient) && recipients.contains("ssh-ed25519"));
    assert_eq!(
        std::fs::read_to_string(f.store.join(".gitattributes")).unwrap(),
        "*.age binary\n"
    );
    assert!(std::fs::read_to_string(f.store.join(".gitignore"))
        .unwrap()
        .contains(".lock"));
    // init again: refused, exit 8
    let o = t.run(&mut cmd(&f, &["init", "--recipient", &f.recipient]));
    assert_eq!(code(&o), Some(8), "{}", text(&o));

    let o = with_stdin(
        &mut t,
        cmd(
            &f,
            &["set", "WIFI_PSK", "--description", "Site Wi-Fi passphrase"],
        ),
        MARKER.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let v1 = f.store.join("secrets/WIFI_PSK/global/v1.age");
    assert_eq!(age_decrypt(&f.key, &v1), MARKER.as_bytes());

    // Duplicate: its own exit code; nothing read, nothing changed.
    let before = snapshot(&f.store);
    let o = with_stdin(&mut t, cmd(&f, &["set", "WIFI_PSK"]), MARKER2.as_bytes());
    assert_eq!(code(&o), Some(8), "{}", text(&o));
    assert!(text(&o).contains("--update"), "{}", text(&o));
    assert_eq!(snapshot(&f.store), before);

    // --update: a new version, new description; version 1 still readable.
    let o = with_stdin(
        &mut t,
        cmd(
            &f,
            &[
                "set",
                "WIFI_PSK",
                "--update",
                "--description",
                "Lobby Wi-Fi",
            ],
        ),
        MARKER2.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let meta = std::fs::read_to_string(f.store.join("secrets/WIFI_PSK/meta.toml")).unwrap();
    assert!(
        meta.contains("description = \"Lobby Wi-Fi\"") && meta.contains("current = 2"),
        "{meta}"
    );
    assert_eq!(
        age_decrypt(&f.key, &f.store.join("secrets/WIFI_PSK/global/v2.age")),
        MARKER2.as_bytes()
    );
    let key = f.key.to_str().unwrap();
    let got = cmd(&f, &["get", "WIFI_PSK", "--identity", key])
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(got.stdout, MARKER2.as_bytes());
    let got = cmd(&f, &["get", "WIFI_PSK", "--version", "1"])
        .env(
            "SEALED_IMAGE_STORE_IDENTITY",
            std::fs::read_to_string(&f.key).unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(got.stdout, MARKER.as_bytes(), "{}", text(&got));
    // The SSH private key of the ssh-ed25519 recipient opens it as well.
    let ssh_key = workspace().join("firstboot/tests/data/ssh_host_ed25519_key");
    let got = cmd(
        &f,
        &["get", "WIFI_PSK", "--identity", ssh_key.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(got.stdout, MARKER2.as_bytes(), "{}", text(&got));
    // --json never prints a value: get needs --output with it.
    let o = t.run(&mut cmd(
        &f,
        &["get", "WIFI_PSK", "--json", "--identity", key],
    ));
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    let out_file = f.dir.join("psk.out");
    let o = t.ok(&mut cmd(
        &f,
        &[
            "get",
            "WIFI_PSK",
            "--json",
            "--identity",
            key,
            "-o",
            out_file.to_str().unwrap(),
        ],
    ));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["version"], 2);
    assert_eq!(std::fs::read(&out_file).unwrap(), MARKER2.as_bytes());
    assert_eq!(perm_bits(&out_file), 0o600);
    // A key that is not a recipient: exit 10.
    let other = f.dir.join("other.key");
    std::fs::write(&other, secret_string(&age::x25519::Identity::generate())).unwrap();
    let o = t.run(&mut cmd(
        &f,
        &["get", "WIFI_PSK", "--identity", other.to_str().unwrap()],
    ));
    assert_eq!(code(&o), Some(10), "{}", text(&o));
    let o = t.run(&mut anon(&f, &["get", "WIFI_PSK"]));
    assert_eq!(code(&o), Some(10), "{}", text(&o));
    assert!(
        text(&o).contains("SEALED_IMAGE_STORE_IDENTITY"),
        "{}",
        text(&o)
    );
    let o = t.run(&mut cmd(
        &f,
        &["get", "WIFI_PSK", "--version", "9", "--identity", key],
    ));
    assert_eq!(code(&o), Some(9), "{}", text(&o));

    // Missing names: 9 for get, rm, rotate; invalid names: 2 with an example.
    for args in [
        vec!["get", "NOPE", "--identity", key],
        vec!["rm", "NOPE"],
        vec!["rotate", "NOPE", "--generate"],
        vec!["history", "NOPE"],
    ] {
        let o = t.run(&mut cmd(&f, &args));
        assert_eq!(code(&o), Some(9), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("no secret NOPE"), "{}", text(&o));
    }
    for bad in ["wifi_psk", "1X", "A-B"] {
        let o = t.run(&mut cmd(&f, &["set", bad, "--generate"]));
        assert_eq!(code(&o), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("for example WIFI_PSK"), "{}", text(&o));
    }
    let long = "A".repeat(256);
    assert_eq!(
        code(&t.run(&mut cmd(&f, &["set", &long, "--generate"]))),
        Some(2)
    );
    // The value never comes from argv: there is no such argument.
    let o = t.run(&mut cmd(&f, &["set", "X_TOKEN", "--value", "abc"]));
    assert_eq!(code(&o), Some(2));

    // Rotate: a new value from the file, version 3.
    let file = f.dir.join("new.txt");
    std::fs::write(&file, "rotated-value-1").unwrap();
    t.ok(&mut cmd(
        &f,
        &["rotate", "WIFI_PSK", "--from-file", file.to_str().unwrap()],
    ));
    assert_eq!(
        age_decrypt(&f.key, &f.store.join("secrets/WIFI_PSK/global/v3.age")),
        b"rotated-value-1"
    );

    // list / history / --json: metadata only.
    let o = t.ok(&mut cmd(&f, &["list", "--json"]));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["name"], "WIFI_PSK");
    assert_eq!(rows[0]["description"], "Lobby Wi-Fi");
    assert_eq!(rows[0]["scopes"][0]["current"], 3);
    let o = t.ok(&mut cmd(&f, &["history", "WIFI_PSK"]));
    let h = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        h.contains("v1") && h.contains("update") && h.contains("rotate") && h.contains("by alice"),
        "{h}"
    );
    t.ok(&mut cmd(&f, &["list"]));

    // rm: gone, and get says so.
    t.ok(&mut cmd(&f, &["rm", "WIFI_PSK"]));
    assert!(!f.store.join("secrets/WIFI_PSK").exists());
    assert_eq!(
        code(&t.run(&mut cmd(&f, &["get", "WIFI_PSK", "--identity", key]))),
        Some(9)
    );

    // The audit log: JSON lines with who/what/version, never a value.
    let o = t.ok(&mut cmd(&f, &["audit", "--json"]));
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ops = field_strs(&a["log"], "op");
    assert_eq!(
        ops,
        ["init", "set", "update", "get", "get", "get", "get", "rotate", "rm"],
        "{a}"
    );
    let get = &a["log"][4];
    assert_eq!(
        (
            get["by"].as_str(),
            get["name"].as_str(),
            get["version"].as_u64()
        ),
        (Some("alice"), Some("WIFI_PSK"), Some(1))
    );
    for line in std::fs::read_to_string(f.store.join("audit.jsonl"))
        .unwrap()
        .lines()
    {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert_no_marker(&f, &t, &[MARKER, MARKER2, "rotated-value-1"]);
}

#[test]
fn generated_values_rotate_with_the_same_charset_and_ci_is_the_actor() {
    if !require_tool_from("age", "age") {
        return;
    }
    let (f, mut t) = initialised();
    t.ok(&mut cmd(
        &f,
        &[
            "set",
            "API_TOKEN",
            "--generate",
            "--length",
            "40",
            "--charset",
            "hex",
        ],
    ));
    let v1 = age_decrypt(&f.key, &f.store.join("secrets/API_TOKEN/global/v1.age"));
    assert_eq!(v1.len(), 40);
    assert!(v1.iter().all(|c| b"0123456789abcdef".contains(c)));
    let mut c = cmd(&f, &["rotate", "API_TOKEN"]);
    c.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_ACTOR", "ci-bot")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_REPOSITORY", "team/site");
    t.ok(&mut c);
    let v2 = age_decrypt(&f.key, &f.store.join("secrets/API_TOKEN/global/v2.age"));
    assert_eq!(v2.len(), 40);
    assert!(v2.iter().all(|c| b"0123456789abcdef".contains(c)));
    assert_ne!(v1, v2);
    let log = std::fs::read_to_string(f.store.join("audit.jsonl")).unwrap();
    assert!(log.contains("github:ci-bot run 4242"), "{log}");
    let meta = std::fs::read_to_string(f.store.join("secrets/API_TOKEN/meta.toml")).unwrap();
    assert!(
        meta.contains("updated-by = \"github:ci-bot run 4242 (team/site)\""),
        "{meta}"
    );
    // Bad generator options are usage errors.
    assert_eq!(
        code(&t.run(&mut cmd(
            &f,
            &["set", "B", "--generate", "--charset", "emoji"]
        ))),
        Some(2)
    );
    assert_no_marker(
        &f,
        &t,
        &[
            std::str::from_utf8(&v1).unwrap(),
            std::str::from_utf8(&v2).unwrap(),
        ],
    );
}

#[test]
fn failed_commands_leave_the_store_as_it_was() {
    if !require_tool_from("age", "age") {
        return;
    }
    let (f, mut t) = initialised();
    for name in ["A_ONE", "B_TWO"] {
        let o = with_stdin(&mut t, cmd(&f, &["set", name]), MARKER.as_bytes());
        assert!(o.status.success(), "{}", text(&o));
    }
    let before = snapshot(&f.store);
    let key = f.key.to_str().unwrap();
    let stranger = f.dir.join("stranger.key");
    std::fs::write(&stranger, secret_string(&age::x25519::Identity::generate())).unwrap();
    let failures: Vec<(Vec<&str>, &[u8], i32)> = vec![
        (
            vec!["rekey", "--yes", "--identity", stranger.to_str().unwrap()],
            b"",
            10,
        ),
        (vec!["set", "A_ONE"], MARKER2.as_bytes(), 8),
        (vec!["set", "C_NEW"], b"", 2),
        (vec!["set", "C_NEW", "--update"], MARKER2.as_bytes(), 9),
        (
            vec!["set", "C_NEW", "--from-file", "/nonexistent/x"],
            b"",
            2,
        ),
        (
            vec!["set", "C_NEW", "--scope", "rack:1", "--generate"],
            b"",
            2,
        ),
        (vec!["rm", "A_ONE", "--scope", "tag:lobby"], b"", 9),
        (
            vec!["import", "/nonexistent/backup.age", "--identity", key],
            b"",
            1,
        ),
    ];
    for (args, input, want) in failures {
        let o = with_stdin(&mut t, cmd(&f, &args), input);
        assert_eq!(code(&o), Some(want), "{args:?}: {}", text(&o));
        assert_eq!(snapshot(&f.store), before, "{args:?} changed the store");
    }
    // A broken recipients file: refused before anything is read or written.
    std::fs::write(f.store.join("recipients.txt"), "ssh-rsa AAAA nope\n").unwrap();
    let before = snapshot(&f.store);
    let o = with_stdin(&mut t, cmd(&f, &["set", "C_NEW"]), MARKER2.as_bytes());
    assert_eq!(code(&o), Some(11), "{}", text(&o));
    assert!(text(&o).contains("recipients.txt: line 1"), "{}", text(&o));
    assert_eq!(snapshot(&f.store), before);
    assert_no_marker(&f, &t, &[MARKER, MARKER2]);
}

#[test]
fn audit_rekey_export_and_import() {
    if !require_tools_from(&[("age", "age"), ("tar", "tar")]) {
        return;
    }
    let (f, mut t) = initialised();
    let o = with_stdin(
        &mut t,
        cmd(&f, &["set", "WIFI_PSK", "--description", "Wi-Fi"]),
        MARKER.as_bytes(),
    );
    assert!(o.status.success());
    let o = with_stdin(
        &mut t,
        cmd(&f, &["set", "WIFI_PSK", "--scope", "tag:lobby"]),
        MARKER2.as_bytes(),
    );
    assert!(o.status.success(), "{}", text(&o));
    t.ok(&mut cmd(&f, &["audit"]));

    // A new recipient: audit flags every version until rekey.
    let bob = age::x25519::Identity::generate();
    let bob_key = f.dir.join("bob.key");
    std::fs::write(&bob_key, secret_string(&bob)).unwrap();
    let mut r = std::fs::OpenOptions::new()
        .append(true)
        .open(f.store.join("recipients.txt"))
        .unwrap();
    writeln!(r, "{} # bob", bob.to_public()).unwrap();
    let o = t.run(&mut cmd(&f, &["audit"]));
    assert_eq!(code(&o), Some(11), "{}", text(&o));
    assert!(text(&o).contains("store rekey"), "{}", text(&o));
    let key = f.key.to_str().unwrap();
    // A member accepts it: rekey shows the new line, and asks (--yes here).
    let o = t.run(&mut cmd(&f, &["rekey", "--identity", key]));
    assert_eq!(code(&o), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("+ {}", bob.to_public())) && text(&o).contains("--yes"),
        "{}",
        text(&o)
    );
    t.ok(&mut cmd(&f, &["rekey", "--yes", "--identity", key]));
    t.ok(&mut cmd(&f, &["audit", "--verify"]));
    assert_eq!(
        age_decrypt(&bob_key, &f.store.join("secrets/WIFI_PSK/tag.lobby/v1.age")),
        MARKER2.as_bytes()
    );

    // Export: an age file the age CLI opens into a tar of metadata and values.
    let backup = f.dir.join("backup.age");
    t.ok(&mut cmd(
        &f,
        &["export", backup.to_str().unwrap(), "--identity", key],
    ));
    assert_eq!(perm_bits(&backup), 0o600);
    assert!(!file_contains(&backup, MARKER.as_bytes()));
    let tarball = f.dir.join("backup.tar");
    std::fs::write(&tarball, age_decrypt(&bob_key, &backup)).unwrap();
    let list = command("tar").arg("tf").arg(&tarball).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    for entry in [
        "FORMAT",
        "SOURCE",
        "MAC",
        "WIFI_PSK/meta.toml",
        "WIFI_PSK/global/v1.value",
        "WIFI_PSK/tag.lobby/v1.value",
    ] {
        assert!(list.lines().any(|l| l == entry), "{entry} not in {list}");
    }
    std::fs::remove_file(&tarball).unwrap();

    // Import into a new store with another recipient (carol): the identity
    // holds alice's key (to open the archive and its source store) and
    // carol's (a member of the new store).
    let carol = age::x25519::Identity::generate();
    let carol_key = f.dir.join("carol.key");
    std::fs::write(&carol_key, secret_string(&carol)).unwrap();
    let both = f.dir.join("alice-and-carol.key");
    std::fs::write(
        &both,
        format!(
            "{}\n{}\n",
            std::fs::read_to_string(&f.key).unwrap(),
            secret_string(&carol)
        ),
    )
    .unwrap();
    let both = both.to_str().unwrap();
    let other = f.dir.join("other-store");
    let store2 = |args: &[&str]| {
        let mut c = cmd(&f, args);
        c.arg("--store").arg(&other);
        c
    };
    t.ok(&mut store2(&[
        "init",
        "--recipient",
        &carol.to_public().to_string(),
    ]));
    // Not from a store key the new store trusts: refused, nothing written.
    let before = snapshot(&other);
    let o = t.run(&mut store2(&[
        "import",
        backup.to_str().unwrap(),
        "--yes",
        "--identity",
        both,
    ]));
    assert_eq!(code(&o), Some(11), "{}", text(&o));
    assert!(
        text(&o).contains("--from") && text(&o).contains("--fingerprint"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&other), before);
    let o = t.ok(&mut store2(&[
        "import",
        backup.to_str().unwrap(),
        "--from",
        f.store.to_str().unwrap(),
        "--yes",
        "--identity",
        both,
    ]));
    // Where it came from was shown before anything was written.
    assert!(
        text(&o).contains("exported") && text(&o).contains("2 version(s)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        age_decrypt(&carol_key, &other.join("secrets/WIFI_PSK/global/v1.age")),
        MARKER.as_bytes()
    );
    let meta = std::fs::read_to_string(other.join("secrets/WIFI_PSK/meta.toml")).unwrap();
    assert!(
        meta.contains("description = \"Wi-Fi\"") && meta.contains("tag:lobby"),
        "{meta}"
    );
    // Again: the names exist, refused with exit 8, nothing changed.
    let before = snapshot(&other);
    let o = t.run(&mut store2(&[
        "import",
        backup.to_str().unwrap(),
        "--from",
        f.store.to_str().unwrap(),
        "--yes",
        "--identity",
        both,
    ]));
    assert_eq!(code(&o), Some(8), "{}", text(&o));
    assert!(text(&o).contains("WIFI_PSK"));
    assert_eq!(snapshot(&other), before);
    let log = std::fs::read_to_string(f.store.join("audit.jsonl")).unwrap();
    assert!(
        log.contains("\"op\":\"rekey\"") && log.contains("\"op\":\"export\""),
        "{log}"
    );
    let log2 = std::fs::read_to_string(other.join("audit.jsonl")).unwrap();
    assert!(log2.contains("\"op\":\"import\""), "{log2}");
    assert!(files_containing(&other, MARKER.as_bytes()).is_empty());
    assert_no_marker(&f, &t, &[MARKER, MARKER2]);
}

/// The secret of the recipe (after [`ESP_ONLY`]): from the store.
const WIFI_FROM_STORE: &str = r#"
[secrets.wifi_psk]
type = "single-line"
description = "WPA2 passphrase of the site Wi-Fi"
source = { store = "WIFI_PSK" }
"#;

fn open_bundle(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let key = sealed_bundle::ImageKey::from_file(&dir.join("t.key")).unwrap();
    let bytes = std::fs::read(dir.join("sealed-secrets/bundle")).unwrap();
    let opened = sealed_bundle::open(&bytes, &key).unwrap();
    opened
        .contents
        .values
        .iter()
        .map(|(k, v)| (k.clone(), v.to_vec()))
        .collect()
}

#[test]
fn recipes_read_the_store_and_fleets_resolve_device_tag_global() {
    let f = fixture();
    let mut t = Transcript::default();
    let recipe = f.dir.join("recipe.toml");
    std::fs::write(&recipe, format!("{ESP_ONLY}{WIFI_FROM_STORE}")).unwrap();
    let check = |t: &mut Transcript, extra: &[&str]| {
        let mut c = build_image_cmd();
        c.arg("check").arg(&recipe).args(extra);
        t.run(&mut c)
    };
    // No store yet: check says exactly how to create the secret.
    let o = check(&mut t, &[]);
    assert_eq!(code(&o), Some(4), "{}", text(&o));
    let want = format!(
        "build-image store set WIFI_PSK --store {} --description 'WPA2 passphrase of the site Wi-Fi'",
        f.store.display()
    );
    assert!(text(&o).contains(&want), "{}", text(&o));
    init(&f, &mut t);
    let o = check(&mut t, &[]);
    assert!(text(&o).contains(&want), "{}", text(&o));

    // Global, tag and device values.
    for (scope, value) in [
        ("global", "psk-global-A1"),
        ("tag:lobby", "psk-lobby-B2"),
        ("device:kiosk-003", "psk-dev3-C3"),
    ] {
        let o = with_stdin(
            &mut t,
            cmd(&f, &["set", "WIFI_PSK", "--scope", scope]),
            value.as_bytes(),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let identity = std::fs::read_to_string(&f.key).unwrap();
    let build = |t: &mut Transcript, extra: &[&str], out: &Path, id: Option<&str>| {
        let mut c = build_image_cmd();
        c.arg("build")
            .arg(&recipe)
            .arg("--out")
            .arg(out)
            .args(extra)
            .env("USER", "ci");
        c.env_remove("SEALED_IMAGE_STORE_IDENTITY");
        if let Some(id) = id {
            c.env("SEALED_IMAGE_STORE_IDENTITY", id);
        }
        t.run(&mut c)
    };
    // Without an identity the build fails and says where to put one.
    let o = build(&mut t, &["--no-zst"], &f.dir.join("out0"), None);
    assert_eq!(code(&o), Some(10), "{}", text(&o));
    assert!(
        text(&o).contains("SEALED_IMAGE_STORE_IDENTITY"),
        "{}",
        text(&o)
    );

    // Fleet: device > tag > global.
    let devices = f.dir.join("devices.toml");
    std::fs::write(
        &devices,
        "[[device]]\nname = \"kiosk-001\"\ntags = [\"lobby\"]\n\n[[device]]\nname = \"kiosk-002\"\n\n[[device]]\nname = \"kiosk-003\"\ntags = [\"lobby\"]\n",
    )
    .unwrap();
    let o = check(&mut t, &["--devices", devices.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let m = text(&o);
    for (device, from) in [
        ("kiosk-001", "store WIFI_PSK tag:lobby v1"),
        ("kiosk-002", "store WIFI_PSK global v1"),
        ("kiosk-003", "store WIFI_PSK device:kiosk-003 v1"),
    ] {
        let section = &m[m.find(device).unwrap()..];
        let line = section.lines().nth(1).unwrap();
        assert!(line.contains('✓') && line.contains(from), "{device}: {m}");
    }
    let o = check(&mut t, &["--devices", devices.to_str().unwrap(), "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["secrets"][0]["from"], "store WIFI_PSK tag:lobby v1");
    let csv = f.dir.join("devices.csv");
    std::fs::write(&csv, "name,tags\nkiosk-009,north lobby\n").unwrap();
    let o = check(&mut t, &["--devices", csv.to_str().unwrap()]);
    assert!(
        text(&o).contains("store WIFI_PSK tag:lobby v1"),
        "{}",
        text(&o)
    );

    let out = f.dir.join("fleet");
    let o = build(
        &mut t,
        &["--devices", devices.to_str().unwrap(), "--bundles-only"],
        &out,
        Some(&identity),
    );
    assert!(o.status.success(), "{}", text(&o));
    for (device, value) in [
        ("kiosk-001", "psk-lobby-B2"),
        ("kiosk-002", "psk-global-A1"),
        ("kiosk-003", "psk-dev3-C3"),
    ] {
        let values = open_bundle(&out.join(device));
        assert_eq!(values["wifi_psk"], value.as_bytes(), "{device}");
    }
    // Update bundles for deployed devices resolve the same way.
    let upd = f.dir.join("upd");
    let mut c = build_image_cmd();
    c.arg("bundle")
        .arg(&recipe)
        .arg("--devices")
        .arg(&devices)
        .arg("--out")
        .arg(&upd)
        .env("USER", "ci")
        .env("SEALED_IMAGE_STORE_IDENTITY", &identity);
    t.ok(&mut c);
    for (device, value) in [("kiosk-001", "psk-lobby-B2"), ("kiosk-003", "psk-dev3-C3")] {
        let key = sealed_bundle::ImageKey::from_file(&upd.join(format!("{device}.key"))).unwrap();
        let bytes = std::fs::read(upd.join(format!("{device}.bundle"))).unwrap();
        let opened = sealed_bundle::open(&bytes, &key).unwrap();
        assert_eq!(
            &opened.contents.values["wifi_psk"][..],
            value.as_bytes(),
            "{device}"
        );
    }
    // A plain build takes the global value, and every read is audited.
    let o = build(
        &mut t,
        &["--no-zst", "--embed-key"],
        &f.dir.join("out1"),
        Some(&identity),
    );
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(f.store.join("audit.jsonl")).unwrap();
    let reads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"op\":\"read\""))
        .collect();
    assert_eq!(reads.len(), 7, "{log}");
    assert!(reads
        .iter()
        .any(|l| l.contains("device kiosk-003") && l.contains("device:kiosk-003")));
    assert!(reads.iter().all(|l| l.contains("\"by\":\"ci\"")), "{log}");
    assert_no_marker(&f, &t, &["psk-global-A1", "psk-lobby-B2", "psk-dev3-C3"]);
    for out in ["fleet", "out1", "upd"] {
        for m in ["psk-global-A1", "psk-lobby-B2", "psk-dev3-C3"] {
            let leaks = files_containing(&f.dir.join(out), m.as_bytes());
            assert!(leaks.is_empty(), "{m} in {leaks:?}");
        }
    }
}

/// The committed demo store: its files open with the demo identity and the
/// `age` CLI, and the README's demo flow works (on a copy: builds append to
/// the audit log).
#[test]
fn the_demo_store_flow_from_the_readme() {
    let Some(tmp) = scratch_if(require_tool_from("age", "age")) else {
        return;
    };
    let demo = tmp.path().join("store-demo");
    copy_tree(&workspace().join("image-recipes/store-demo"), &demo);
    let key = demo.join("DEMO-ONLY-identity.txt");
    assert!(std::fs::read_to_string(&key).unwrap().contains("DEMO ONLY"));
    assert_eq!(
        age_decrypt(
            &key,
            &demo.join("secrets-store/secrets/WIFI_PSK/global/v1.age")
        ),
        b"demo-wifi-global-NOT-A-SECRET"
    );
    let mut t = Transcript::default();
    let run = |t: &mut Transcript, args: &[&str]| {
        let mut c = build_image_cmd();
        c.args(args)
            .env("SEALED_IMAGE_STORE_IDENTITY_FILE", &key)
            .env_remove("SEALED_IMAGE_STORE_IDENTITY")
            .current_dir(tmp.path());
        t.run(&mut c)
    };
    let o = run(
        &mut t,
        &[
            "check",
            "store-demo/recipe.toml",
            "--devices",
            "store-demo/devices.toml",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("store WIFI_PSK device:kiosk-003 v1"),
        "{}",
        text(&o)
    );
    let o = run(
        &mut t,
        &["store", "--recipe", "store-demo/recipe.toml", "list"],
    );
    assert!(
        text(&o).contains("API_TOKEN") && text(&o).contains("tag:lobby"),
        "{}",
        text(&o)
    );
    let o = run(
        &mut t,
        &[
            "build",
            "store-demo/recipe.toml",
            "--devices",
            "store-demo/devices.toml",
            "--bundles-only",
            "--out",
            "out",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let key1 = sealed_bundle::ImageKey::from_file(&tmp.path().join("out/kiosk-001/store-demo.key"))
        .unwrap();
    let bytes = std::fs::read(tmp.path().join("out/kiosk-001/sealed-secrets/bundle")).unwrap();
    let opened = sealed_bundle::open(&bytes, &key1).unwrap();
    assert_eq!(
        &opened.contents.values["wifi_psk"][..],
        b"demo-wifi-lobby-NOT-A-SECRET"
    );
    assert_eq!(opened.contents.values["api_token"].len(), 40);
    assert!(!contains(&t.text, b"NOT-A-SECRET"));
}

/// Typed on a terminal (a real pty from `script`): asked twice, never echoed.
#[test]
fn a_value_typed_on_a_terminal_is_not_echoed() {
    if !require_tools_from(&[("script", "bsdutils"), ("age", "age")]) {
        return;
    }
    use std::io::Read;
    let (f, mut t) = initialised();
    let command = format!(
        "{} store --store {} set TYPED_SECRET",
        bin("build-image").display(),
        f.store.display()
    );
    let mut child = sealed_image_tests::command("script")
        .args(["-qec", &command, "/dev/null"])
        .env("USER", "alice")
        .env("SEALED_IMAGE_STORE_IDENTITY_FILE", &f.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    // Answer each prompt once it is shown (echo is off by then).
    for prompt in ["(not shown): ", "to confirm TYPED_SECRET: "] {
        let mut buf = [0u8; 256];
        while !contains(&seen, prompt.as_bytes()) {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        stdin.write_all(format!("{MARKER}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        seen.clear();
    }
    stdout.read_to_end(&mut seen).unwrap();
    drop(stdin);
    assert!(
        child.wait().unwrap().success(),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    t.text.extend_from_slice(&seen);
    assert!(
        contains(&seen, b"stored TYPED_SECRET"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(
        age_decrypt(&f.key, &f.store.join("secrets/TYPED_SECRET/global/v1.age")),
        MARKER.as_bytes()
    );
    assert_no_marker(&f, &t, &[MARKER]);
}
