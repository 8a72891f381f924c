//! Device trust, attacked: only the team's signed bundles reach a device,
//! and no bundle reaches what the system executes. Each test plays one
//! attack through the real binaries (`sealed-firstboot --root`, and
//! `build-image` where the builder must refuse too) and checks that the
//! store is left byte for byte as it was.

use sealed_bundle::{
    self as bundle, Contents, ImageKey, PathPolicy, SealTo, Sealing, SigningKey, Stamp, FORBIDDEN,
};
use sealed_image_tests::device::{assert_no_marker, contents, map, DeviceTree as Device};
use sealed_image_tests::*;
use std::collections::BTreeMap;
use std::path::Path;

const OLD: &[(&str, &str)] = &[("wifi", "MARKER-old-wifi"), ("token", "MARKER-old-token")];
const NEW: &[(&str, &str)] = &[("wifi", "MARKER-new-wifi"), ("api", "MARKER-new-api")];

/// The team's signing key (the tests' committed key).
fn team() -> SigningKey {
    SigningKey::from_file_text(&std::fs::read(test_signing_key()).unwrap()).unwrap()
}

/// Pin `signers` in the device's configuration (nothing else set).
fn pin(d: &Device, signers: &[&SigningKey]) {
    let lines: String = signers
        .iter()
        .map(|k| format!("signer = {}\n", k.signer()))
        .collect();
    std::fs::write(d.root.join("etc/sealed-firstboot.conf"), lines).unwrap();
}

/// Seal `c` under a fresh image key, signed by `by` (unsigned: `None`),
/// with the files allowed anywhere the default rule refuses `allow` (what
/// a hostile or patched builder would do).
fn seal(
    c: &Contents,
    by: Option<&SigningKey>,
    stamp: Stamp,
    allow: &[&str],
) -> (ImageKey, Vec<u8>) {
    let key = ImageKey::generate();
    let paths = PathPolicy::allowing(allow.iter().map(|s| s.to_string()).collect()).unwrap();
    let b = bundle::seal_bundle(
        c,
        &Sealing {
            to: SealTo::ImageKey(&key),
            stamp,
            signing: by,
            paths: &paths,
        },
    )
    .unwrap();
    (key, b)
}

/// Every file and link under the device's store directory, byte for byte
/// (the lock file aside).
fn store_snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if ft.is_dir() {
                out.insert(rel.clone() + "/", Vec::new());
                walk(base, &p, out);
            } else if rel != ".lock" {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let base = root.join("var/lib/sealed-secrets");
    let mut out = BTreeMap::new();
    walk(&base, &base, &mut out);
    out
}

/// A device that pins the team's signer and holds OLD, applied from a
/// signed bundle at time 1000.
fn provisioned() -> Device {
    let d = Device::new();
    pin(&d, &[&team()]);
    let (k, b) = seal(&contents(OLD), Some(&team()), Stamp::at(1000), &[]);
    d.place(&b, Some(&k));
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    d
}

/// What an attacker with the FAT partition drops there: a bundle and key
/// of their own making, a udev rule that runs a program, the highest
/// sequence number there is (so no later bundle would ever be newer).
fn attacker_contents() -> Contents {
    let mut c = contents(&[("rule", "RUN+=\"/bin/sh -c 'id > /tmp/owned'\"")]);
    c.manifest.secrets[0].path = "/run/udev/rules.d/00-owned.rules".into();
    c.manifest.secrets[0].mode = 0o644;
    c
}

#[test]
fn a_bundle_and_key_crafted_by_a_non_signer_on_the_boot_partition_are_refused_at_boot() {
    let mallory = SigningKey::generate();
    let top = Stamp::at(1).with_sequence(u64::MAX);
    for (what, by) in [
        ("unsigned", None),
        ("signed by another key", Some(&mallory)),
    ] {
        let d = provisioned();
        let before = store_snapshot(&d.root);
        let (k, b) = seal(&attacker_contents(), by, top, &["/run/udev"]);
        d.place(&b, Some(&k));
        // Refused, the secrets already there unsealed: exit 3.
        let err = d.fails("run", 3);
        let why = if by.is_none() {
            "unsigned".to_string()
        } else {
            format!(
                "signed by {}, which this device does not pin",
                mallory.signer()
            )
        };
        assert!(err.contains(&why), "{what}: {err}");
        assert!(err.contains("the store is unchanged"), "{what}: {err}");
        assert_eq!(store_snapshot(&d.root), before, "{what}: the store changed");
        assert_eq!(d.live(), map(OLD), "{what}");
        assert!(
            !d.root.join("run/udev").exists(),
            "{what}: the rule was written"
        );
        // Wiped with its key: it can never be applied here, and it must
        // not block the next bundle or stay on the partition.
        assert!(!d.boot().join("bundle").exists(), "{what}: bundle kept");
        assert!(!d.boot().join("image.key").exists(), "{what}: key kept");
        // The team's next bundle (no sequence, so "older" than the
        // attacker's u64::MAX) is applied: nothing was recorded.
        let (k, b) = seal(&contents(NEW), Some(&team()), Stamp::at(2000), &[]);
        d.place(&b, Some(&k));
        d.ok("run");
        assert_eq!(d.live(), map(NEW), "{what}");
    }
}

#[test]
fn apply_of_an_unsigned_or_foreign_signed_bundle_is_refused() {
    let mallory = SigningKey::generate();
    let d = provisioned();
    let before = store_snapshot(&d.root);
    for by in [None, Some(&mallory)] {
        let (k, b) = seal(&contents(NEW), by, Stamp::at(5000), &[]);
        let key_file = d.root.join("update.key");
        std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
        let mut c = d.cmd("apply");
        c.arg("-").arg("--key").arg(&key_file);
        let out = output_with_stdin(&mut c, &b);
        assert_exit(&out, 1, "apply");
        let err = stderr(&out);
        assert!(
            err.contains("unsigned") || err.contains("does not pin"),
            "{err}"
        );
        assert!(err.contains("the store is unchanged"), "{err}");
        assert_eq!(store_snapshot(&d.root), before);
        assert_eq!(d.live(), map(OLD));
    }
    // Its own, signed: applied.
    let (k, b) = seal(&contents(NEW), Some(&team()), Stamp::at(5000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let mut c = d.cmd("apply");
    c.arg("-").arg("--key").arg(&key_file);
    assert_success(&output_with_stdin(&mut c, &b), "apply of the team's bundle");
    assert_eq!(d.live(), map(NEW));
}

/// A v2 bundle (no signature) and a v3 one with its signature cut off or
/// bent are refused by a device that pins a signer; a device that pins
/// none still reads v2 (images built before signatures).
#[test]
fn stripped_truncated_and_bent_signatures_are_refused() {
    let d = provisioned();
    let before = store_snapshot(&d.root);
    let (k, good) = seal(&contents(NEW), Some(&team()), Stamp::at(3000), &[]);
    let cut = good[..good.len() - 10].to_vec();
    let mut bent = good.clone();
    let last = bent.len() - 1;
    bent[last] ^= 1;
    let mut stripped = good[..good.len() - 64].to_vec();
    stripped[8] = 2;
    for (what, b, expect) in [
        (
            "truncated signature",
            cut,
            "signature after the ciphertext has",
        ),
        ("bent signature", bent, "does not verify"),
        ("version set to 2", stripped, "unexpected bytes"),
    ] {
        d.place(&b, Some(&k));
        let err = d.fails("run", 3);
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(store_snapshot(&d.root), before, "{what}");
        std::fs::remove_dir_all(d.boot()).ok();
    }
    // Nothing pinned: an unsigned bundle is still applied.
    let legacy = Device::new();
    let (k, b) = seal(&contents(OLD), None, Stamp::at(1), &[]);
    legacy.place(&b, Some(&k));
    legacy.ok("run");
    assert_eq!(legacy.live(), map(OLD));
}

/// Every directory of the list: the builder refuses a secret or template
/// there, and the device refuses a bundle (signed by its own signer) that
/// puts one there, leaving its store as it was.
#[test]
fn the_builder_and_the_device_refuse_every_listed_directory() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "MARKER-a").unwrap();
    std::fs::write(tmp.path().join("t.in"), "x=${SECRET:a}\n").unwrap();
    let head = "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"boot\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\n\n[secrets.a]\ntype = \"single-line\"\nsource = { file = \"a.txt\" }\n";
    let d = provisioned();
    let before = store_snapshot(&d.root);
    let mut stamp = 2000;
    for (dir, _) in FORBIDDEN {
        let upper = format!("/run{}/y", dir["/run".len()..].to_uppercase());
        for recipe in [
            head.replace(
                "type = \"single-line\"\n",
                &format!("type = \"single-line\"\npath = \"{dir}/x.conf\"\n"),
            ),
            format!("{head}\n[templates.t]\nsource = \"t.in\"\npath = \"{upper}\"\n"),
        ] {
            std::fs::write(tmp.path().join("recipe.toml"), &recipe).unwrap();
            let out = build_image_cmd()
                .args(["bundle", "recipe.toml", "--out", "o"])
                .current_dir(tmp.path())
                .output()
                .unwrap();
            assert_exit(&out, 3, format!("build-image bundle with a file in {dir}"));
            assert!(
                stderr(&out).contains("reads as code or configuration"),
                "{}",
                stderr(&out)
            );
        }
        for path in [format!("{dir}/x.conf"), dir.to_string()] {
            stamp += 1;
            let mut c = contents(&[("x", "MARKER-x")]);
            c.manifest.secrets[0].path = path.clone();
            let (k, b) = seal(&c, Some(&team()), Stamp::at(stamp), &[dir]);
            let key_file = d.root.join("update.key");
            std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
            let mut cmd = d.cmd("apply");
            cmd.arg("-").arg("--key").arg(&key_file);
            let out = output_with_stdin(&mut cmd, &b);
            assert_exit(&out, 1, format!("apply with {path}"));
            assert!(
                stderr(&out).contains("reads as code or configuration"),
                "{}",
                stderr(&out)
            );
            assert_eq!(store_snapshot(&d.root), before, "{path}");
        }
    }
    assert!(!tmp.path().join("o").exists());
    // The device's own configuration may allow a prefix.
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        format!(
            "signer = {}\nallow_path = /run/systemd/network\n",
            team().signer()
        ),
    )
    .unwrap();
    let mut c = contents(&[("net", "MARKER-net")]);
    c.manifest.secrets[0].path = "/run/systemd/network/10-wifi.network".into();
    let (k, b) = seal(
        &c,
        Some(&team()),
        Stamp::at(9000),
        &["/run/systemd/network"],
    );
    d.place(&b, Some(&k));
    d.ok("run");
    let link = d.root.join("run/systemd/network/10-wifi.network");
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "{}",
        link.display()
    );
    // Allowed no more: at the next unseal that secret fails alone (exit 4),
    // and the link made for it goes.
    pin(&d, &[&team()]);
    let err = d.fails("run", 4);
    assert!(err.contains("reads as code or configuration"), "{err}");
    assert!(std::fs::symlink_metadata(&link).is_err(), "the link stayed");
}

/// Group- or other-writable modes (and anything beyond 0777) are refused
/// by the builder and the device.
#[test]
fn writable_modes_are_refused() {
    let d = provisioned();
    let before = store_snapshot(&d.root);
    for mode in [0o664, 0o602, 0o666, 0o4755, 0o1600] {
        let mut c = contents(&[("x", "MARKER-x")]);
        c.manifest.secrets[0].mode = mode;
        let key = ImageKey::generate();
        assert!(
            bundle::seal_signed(&key, &c, 5000, &team()).is_err(),
            "{mode:o}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "MARKER-a").unwrap();
    std::fs::write(
        tmp.path().join("recipe.toml"),
        "[image]\nname = \"r\"\n\n[secrets.a]\ntype = \"single-line\"\nmode = \"0664\"\nsource = { file = \"a.txt\" }\n",
    )
    .unwrap();
    let out = build_image_cmd()
        .args(["bundle", "recipe.toml", "--out", "o"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_exit(&out, 3, "a 0664 secret");
    assert!(
        stderr(&out).contains("lets group or others write it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(store_snapshot(&d.root), before);
}

/// The two partial bundles of the issue. The builder refuses `--only` of
/// a template whose `|env` escape cannot hold a value with a newline,
/// exactly as the full build does; the device refuses a hand-sealed
/// partial bundle whose template names a secret neither it nor the
/// (empty) store has, and stays empty.
#[test]
fn partial_bundles_are_validated_as_a_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("nl.txt"), "MARKER-line-one\nMARKER-line-two\n").unwrap();
    std::fs::write(d.join("conf.in"), "TOKEN=${SECRET:nl|env}\n").unwrap();
    std::fs::write(
        d.join("recipe.toml"),
        "[image]\nname = \"r\"\n\n[secrets.nl]\ntype = \"multi-line\"\nsource = { file = \"nl.txt\" }\n\n[templates.conf_nl]\nsource = \"conf.in\"\npath = \"/run/app/app.env\"\n",
    )
    .unwrap();
    let bundle = |args: &[&str]| {
        build_image_cmd()
            .arg("bundle")
            .arg("recipe.toml")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let full = bundle(&["--out", "full"]);
    assert_exit(&full, 5, "the full bundle");
    for args in [
        &["--out", "p1", "--only", "conf_nl"][..],
        &["--out", "p2", "--only", "nl"],
    ] {
        let out = bundle(args);
        assert_exit(&out, 5, format!("bundle {args:?}"));
        assert!(stderr(&out).contains("line break"), "{}", stderr(&out));
        assert_not_printed(&out, b"MARKER-", "a value");
    }
    assert!(!d.join("p1").exists() && !d.join("p2").exists());

    // The device: a partial bundle with a template naming ${SECRET:ghost},
    // on an empty store.
    let dev = Device::new();
    pin(&dev, &[&team()]);
    let mut c = contents(&[("real", "MARKER-real")]);
    c.manifest.partial = true;
    let mut t = c.manifest.secrets[0].clone();
    t.name = "conf".into();
    t.path = "/run/app/conf".into();
    c.manifest.templates.push(t);
    c.values.insert(
        "conf".into(),
        zeroize::Zeroizing::new(b"x=${SECRET:ghost}\n".to_vec()),
    );
    let (k, b) = seal(&c, Some(&team()), Stamp::at(10), &[]);
    dev.place(&b, Some(&k));
    let err = dev.fails("run", 1);
    assert!(err.contains("names no secret"), "{err}");
    assert!(sealed_firstboot::store::Store::new(&dev.root)
        .current()
        .unwrap()
        .is_none());
    // status has nothing to be wrong about: there is no store.
    let out = dev.firstboot("status", None);
    assert!(
        stdout(&out).contains("no secrets provisioned"),
        "{}",
        stdout(&out)
    );
}

/// `apply --root` on a tree never restarts this machine's units: a
/// stand-in `systemctl` on PATH records any call, and none comes; the
/// output says what would run on the device.
#[test]
fn apply_with_root_runs_no_systemctl() {
    let d = provisioned();
    let stand_in = tempfile::tempdir().unwrap();
    let bin_dir = stand_in.path();
    let log = bin_dir.join("calls");
    let script = bin_dir.join("systemctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = contents(NEW);
    c.manifest.secrets[0].restart_units = vec!["wifi.service".into()];
    c.manifest.secrets[0].reload_units = vec!["nginx.service".into()];
    let (k, b) = seal(&c, Some(&team()), Stamp::at(4000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file).env("PATH", path);
    let out = output_with_stdin(&mut cmd, &b);
    assert_success(&out, "apply");
    assert!(
        !log.exists(),
        "systemctl ran on this machine: {:?}",
        std::fs::read_to_string(&log)
    );
    let err = stderr(&out);
    assert!(
        err.contains("would run: systemctl try-restart -- wifi.service"),
        "{err}"
    );
    assert!(
        err.contains("would run: systemctl try-reload-or-restart -- nginx.service"),
        "{err}"
    );
}

/// A leaked key is retired fleet-wide: a bundle signed by a pinned key
/// names the next signers; from then on the old key's bundles are refused
/// (a replay of the list bundle too), the list survives later bundles and
/// `status` says where it comes from. A crash before the store switch
/// leaves the old list.
#[test]
fn a_signed_bundle_replaces_the_pinned_signers_atomically() {
    let old = team();
    let next = SigningKey::generate();
    let d = provisioned();
    let mut c = contents(&[]);
    c.manifest.partial = true;
    c.manifest.signers = Some(vec![next.signer().to_string()]);
    let (k, list_bundle) = seal(&c, Some(&old), Stamp::at(2000), &[]);
    d.place(&list_bundle, Some(&k));
    // Power cut before the store switch: the old list is in force.
    let out = d.firstboot("run", Some("store-before-swap"));
    assert_exit(&out, 86, "failpoint");
    let st = status_json(&d);
    assert_eq!(st["signers"]["from"], "config");
    assert_eq!(st["signers"]["pinned"][0], old.signer().to_string());
    d.ok("run");
    let st = status_json(&d);
    assert_eq!(st["signers"]["from"], "bundle", "{st}");
    assert_eq!(
        st["signers"]["pinned"],
        serde_json::json!([next.signer().to_string()])
    );
    assert_eq!(st["signers"]["unsigned_accepted"], false);
    assert_eq!(
        d.live(),
        map(OLD),
        "a signers-only bundle keeps the secrets"
    );

    // The retired key's next bundle is refused.
    let before = store_snapshot(&d.root);
    let (k2, by_old) = seal(&contents(NEW), Some(&old), Stamp::at(3000), &[]);
    d.place(&by_old, Some(&k2));
    let err = d.fails("run", 3);
    assert!(err.contains("does not pin"), "{err}");
    assert_eq!(store_snapshot(&d.root), before);
    // The new key's bundle is applied, and the list is carried over.
    let (k3, by_next) = seal(&contents(NEW), Some(&next), Stamp::at(3000), &[]);
    d.place(&by_next, Some(&k3));
    d.ok("run");
    assert_eq!(d.live(), map(NEW));
    let st = status_json(&d);
    assert_eq!(
        st["signers"]["pinned"],
        serde_json::json!([next.signer().to_string()])
    );
    // A replay of the list bundle (signed by the retired key) is refused.
    let before = store_snapshot(&d.root);
    d.place(&list_bundle, Some(&k));
    let err = d.fails("run", 3);
    assert!(err.contains("does not pin"), "{err}");
    assert_eq!(store_snapshot(&d.root), before);
    // An empty list would accept unsigned bundles again: refused.
    let mut empty = contents(&[]);
    empty.manifest.partial = true;
    empty.manifest.signers = Some(Vec::new());
    assert!(bundle::seal_signed(&ImageKey::generate(), &empty, 4000, &next).is_err());
}

fn status_json(d: &Device) -> serde_json::Value {
    let out = d.cmd("status").arg("--json").output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// With `--root`, a tree whose directories lead out of it (absolute links
/// to the host's /etc, /var) is refused, and nothing is read or written
/// outside the tree.
#[test]
fn root_trees_with_links_out_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("host");
    std::fs::create_dir_all(outside.join("lib")).unwrap();
    for (link, target) in [("var", outside.clone()), ("etc", outside.clone())] {
        let d = Device::new();
        let at = d.root.join(link);
        std::fs::remove_dir_all(&at).ok();
        std::os::unix::fs::symlink(&target, &at).unwrap();
        for cmd in ["pubkey", "run", "status", "unseal"] {
            let out = d.firstboot(cmd, None);
            assert!(!out.status.success(), "{link} -> outside: {cmd} succeeded");
            assert!(
                stderr(&out).contains("is a symbolic link"),
                "{cmd}: {}",
                stderr(&out)
            );
        }
        let left: Vec<_> = walk_names(&outside);
        assert_eq!(
            left,
            ["lib"],
            "{link}: something was written outside the tree"
        );
    }
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The README's table of the path rule is the code's list: each directory
/// with its reason.
#[test]
fn the_readme_lists_every_refused_directory_with_its_reason() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    for (dir, why) in FORBIDDEN {
        assert!(
            readme.contains(&format!("| `{dir}` | {why} |")),
            "README.md does not list {dir} with its reason"
        );
    }
}

/// A deploy user allowed `sudo sealed-firstboot apply …` also controls
/// `--root`. As root, a tree another user can change (its own directory,
/// one above it, or one in it) is refused before anything is read or
/// written: they could otherwise swap a directory for a link to the
/// device's own between a check and its use. And a root given through a
/// link is resolved once: the link flipping between an unpinned tree and
/// a pinned one while `apply` works never lands an unsigned bundle in the
/// pinned one.
#[test]
fn as_root_a_tree_another_user_can_change_or_redirect_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("a tree owned by another user") {
        return;
    }
    let (k, unsigned) = seal(&contents(NEW), None, Stamp::at(5000), &[]);
    let apply = |root: &Path| {
        let key_file = root.parent().unwrap().join("update.key");
        std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
        let mut c = std::process::Command::new(bin("sealed-firstboot"));
        c.arg("--root")
            .arg(root)
            .args(["apply", "-", "--no-restart", "--key"])
            .arg(&key_file);
        output_with_stdin(&mut c, &unsigned)
    };
    let nobody = |p: &Path| std::os::unix::fs::chown(p, Some(65534), None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The deploy user's own directory holds the tree.
    let theirs = tmp.path().join("deploy");
    std::fs::create_dir(&theirs).unwrap();
    nobody(&theirs);
    let tree = theirs.join("tree");
    std::fs::create_dir(&tree).unwrap();
    sealed_image_tests::device_tree(&tree, &[]);
    // A root-owned tree with a directory in it the deploy user owns, or
    // that anyone may write.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    sealed_image_tests::device_tree(&mixed, &[]);
    std::fs::create_dir_all(mixed.join("var/lib")).unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    sealed_image_tests::device_tree(&open, &[]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (what, root, setup) in [
        ("in a directory of another user", tree.clone(), None),
        (
            "var/lib owned by another user",
            mixed.clone(),
            Some(mixed.join("var/lib")),
        ),
        ("world-writable itself", open.clone(), None),
    ] {
        if let Some(dir) = setup {
            nobody(&dir);
        }
        let out = apply(&root);
        assert_exit(&out, 1, what);
        assert!(
            stderr(&out).contains("may be changed by other users than root"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(
            !root.join("var/lib/sealed-secrets").exists() && !root.join("run").exists(),
            "{what}: something was written"
        );
    }

    // A link flipping between an unpinned tree and a pinned one.
    let unpinned = Device::new();
    let pinned = provisioned();
    let before = store_snapshot(&pinned.root);
    let link = tmp.path().join("r");
    std::os::unix::fs::symlink(&unpinned.root, &link).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, link) = (stop.clone(), link.clone());
        let targets = [pinned.root.clone(), unpinned.root.clone()];
        std::thread::spawn(move || {
            let tmp_link = link.with_file_name("r.new");
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp_link);
                std::os::unix::fs::symlink(&targets[i % 2], &tmp_link).unwrap();
                std::fs::rename(&tmp_link, &link).unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    // Large enough that opening it takes a while.
    let big = "MARKER-big".repeat(200_000);
    let key_file = tmp.path().join("flip.key");
    for n in 0..30 {
        let (k, b) = seal(&contents(&[("big", &big)]), None, Stamp::at(6000 + n), &[]);
        std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
        let mut c = std::process::Command::new(bin("sealed-firstboot"));
        c.arg("--root")
            .arg(&link)
            .args(["apply", "-", "--no-restart", "--key"])
            .arg(&key_file);
        let out = output_with_stdin(&mut c, &b);
        assert_no_marker(&out);
        if store_snapshot(&pinned.root) != before {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            flipper.join().unwrap();
            panic!("attempt {n}: the pinned tree took an unsigned bundle through the flipped link");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert_eq!(pinned.live(), map(OLD));
}

/// A partial bundle merges with a store that is damaged: it may replace
/// a secret whose store file is gone (that is how it is repaired), and is
/// refused, naming the file, when a secret it keeps cannot be read (the
/// merge would lose it); the store is then as it was.
#[test]
fn a_partial_bundle_repairs_a_damaged_secret_and_never_drops_one_it_keeps() {
    let d = provisioned();
    let secrets = d.root.join("var/lib/sealed-secrets/current/secrets");
    std::fs::remove_file(secrets.join("token.age")).unwrap();
    let mut c = contents(&[("token", "MARKER-repaired-token")]);
    c.manifest.partial = true;
    let (k, b) = seal(&c, Some(&team()), Stamp::at(2000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file).arg("--no-restart");
    let out = output_with_stdin(&mut cmd, &b);
    assert_success(&out, "a partial bundle replacing the damaged secret");
    assert_no_marker(&out);
    assert_eq!(
        d.store(),
        map(&[
            ("wifi", "MARKER-old-wifi"),
            ("token", "MARKER-repaired-token")
        ])
    );
    // Now a secret it keeps is damaged: refused, naming it.
    std::fs::write(secrets.join("wifi.age"), b"not an age file").unwrap();
    let before = store_snapshot(&d.root);
    let mut c = contents(&[("api", "MARKER-new-api")]);
    c.manifest.partial = true;
    let (k, b) = seal(&c, Some(&team()), Stamp::at(3000), &[]);
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file).arg("--no-restart");
    let out = output_with_stdin(&mut cmd, &b);
    assert_exit(&out, 1, "a partial bundle keeping a damaged secret");
    assert!(stderr(&out).contains("wifi"), "{}", stderr(&out));
    assert_eq!(store_snapshot(&d.root), before);
}

/// `restart-units` and `reload-units` name units systemctl can act on:
/// options (`--help`), `/`, specifiers (`%i`) and a template without an
/// instance (`getty@.service`, which systemctl refuses along with every
/// other unit of the call) are refused by the builder (exit 3) and by the
/// library when sealing, so no device is sent one.
#[test]
fn units_that_cannot_be_restarted_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "MARKER-a").unwrap();
    for unit in [
        "getty@.service",
        "--help",
        "a/b.service",
        "app@%i.service",
        "@x.service",
    ] {
        std::fs::write(
            tmp.path().join("recipe.toml"),
            format!("[image]\nname = \"r\"\n\n[secrets.a]\ntype = \"single-line\"\nsource = {{ file = \"a.txt\" }}\nrestart-units = [\"{unit}\"]\n"),
        )
        .unwrap();
        let out = build_image_cmd()
            .args(["bundle", "recipe.toml", "--out", "o"])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_exit(&out, 3, format!("restart-units = [{unit:?}]"));
        let mut c = contents(&[("a", "MARKER-a")]);
        c.manifest.secrets[0].reload_units = vec![unit.into()];
        assert!(
            bundle::seal_signed(&ImageKey::generate(), &c, 1, &team()).is_err(),
            "{unit} sealed"
        );
    }
    assert!(!tmp.path().join("o").exists());
}

/// The directory right under `/run` is spelled in ASCII and the runtime's
/// names exactly: the builder refuses a look-alike of a directory the
/// system reads as code (`/run/ſystemd`, long s) and a case variant of
/// `/run/secrets` (exit 3), as the device does when it opens a bundle.
#[test]
fn look_alike_paths_are_refused_by_the_builder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "MARKER-a").unwrap();
    for path in [
        "/run/\u{17f}ystemd/system/x.service",
        "/run/ud\u{435}v/rules.d/00-x.rules",
        "/run/Secrets/x",
    ] {
        std::fs::write(
            tmp.path().join("recipe.toml"),
            format!("[image]\nname = \"r\"\n\n[secrets.a]\ntype = \"single-line\"\npath = \"{path}\"\nsource = {{ file = \"a.txt\" }}\n"),
        )
        .unwrap();
        let out = build_image_cmd()
            .args(["bundle", "recipe.toml", "--out", "o"])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_exit(&out, 3, format!("a secret at {path}"));
        assert_not_printed(&out, b"MARKER-", "a value");
    }
    assert!(!tmp.path().join("o").exists());
}

/// `apply` cut short after the store switched (a power cut, kill -9)
/// before it unsealed and restarted: running the same `apply` again
/// finishes the job (the new secrets go live, the units of what changed
/// are restarted) instead of saying "nothing to do" over stale secrets.
#[test]
fn apply_cut_short_after_the_store_switch_is_finished_by_the_rerun() {
    let d = provisioned();
    let mut c = contents(NEW);
    c.manifest.secrets[0].restart_units = vec!["wifi.service".into()];
    let (k, b) = seal(&c, Some(&team()), Stamp::at(4000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let apply = |failpoint: Option<&str>| {
        let mut cmd = d.cmd("apply");
        cmd.arg("-").arg("--key").arg(&key_file);
        if let Some(f) = failpoint {
            cmd.env("SEALED_FIRSTBOOT_FAILPOINT", f);
        }
        output_with_stdin(&mut cmd, &b)
    };
    let out = apply(Some("store-after-swap"));
    assert_exit(&out, 86, "apply cut short after the store switch");
    assert_eq!(d.store(), map(NEW));
    assert_eq!(d.live(), map(OLD), "nothing was unsealed yet");
    let out = apply(None);
    assert_success(&out, "the rerun");
    assert_no_marker(&out);
    assert_eq!(d.live(), map(NEW), "the rerun left the old secrets live");
    let err = stderr(&out);
    assert!(err.contains("already applied"), "{err}");
    assert!(
        err.contains("would run: systemctl try-restart -- wifi.service"),
        "{err}"
    );
    // Once live, another run changes and restarts nothing.
    let out = apply(None);
    assert_success(&out, "a third run");
    assert!(!stderr(&out).contains("would run"), "{}", stderr(&out));
}

/// A restart that was due survives a crash: `apply` killed after the new
/// secrets went live but before `systemctl` ran leaves the restart
/// recorded, and the rerun runs it (the unseal then changes nothing, so
/// without the record the unit would keep the old secret for good).
#[test]
fn a_restart_due_when_apply_is_killed_before_it_is_run_by_the_rerun() {
    let d = provisioned();
    let mut c = contents(NEW);
    c.manifest.secrets[0].restart_units = vec!["wifi.service".into()];
    let (k, b) = seal(&c, Some(&team()), Stamp::at(4000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file);
    cmd.env("SEALED_FIRSTBOOT_FAILPOINT", "apply-before-restarts");
    let out = output_with_stdin(&mut cmd, &b);
    assert_exit(&out, 86, "apply killed before the restarts");
    assert_eq!(d.live(), map(NEW), "the new secrets are live");
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file);
    let out = output_with_stdin(&mut cmd, &b);
    assert_success(&out, "the rerun");
    let err = stderr(&out);
    assert!(
        err.contains("would run: systemctl try-restart -- wifi.service"),
        "the restart that was due is lost: {err}"
    );
    // Done once: the record is cleared.
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file);
    let out = output_with_stdin(&mut cmd, &b);
    assert_success(&out, "a third run");
    assert!(!stderr(&out).contains("would run"), "{}", stderr(&out));
}

/// `apply` cut short after the store switch, then a plain `unseal` (by
/// hand, or any later one) puts the new secrets live: the restarts they
/// need are run then, not lost.
#[test]
fn a_restart_due_after_a_cut_short_apply_is_run_by_the_next_unseal() {
    let d = provisioned();
    let mut c = contents(NEW);
    c.manifest.secrets[0].restart_units = vec!["wifi.service".into()];
    let (k, b) = seal(&c, Some(&team()), Stamp::at(4000), &[]);
    let key_file = d.root.join("update.key");
    std::fs::write(&key_file, k.to_file_text().as_bytes()).unwrap();
    let mut cmd = d.cmd("apply");
    cmd.arg("-").arg("--key").arg(&key_file);
    cmd.env("SEALED_FIRSTBOOT_FAILPOINT", "store-after-swap");
    let out = output_with_stdin(&mut cmd, &b);
    assert_exit(&out, 86, "apply cut short after the store switch");
    let out = d.cmd("unseal").output().unwrap();
    assert_success(&out, "the unseal");
    assert_eq!(d.live(), map(NEW));
    let err = stderr(&out);
    assert!(
        err.contains("would run: systemctl try-restart -- wifi.service"),
        "the restart that was due is lost: {err}"
    );
    let out = d.cmd("unseal").output().unwrap();
    assert_success(&out, "a second unseal");
    assert!(!stderr(&out).contains("would run"), "{}", stderr(&out));
}

/// A broken configuration at boot (a bad signer line, an unknown key, a
/// line without `=`, a one-value key set twice) never weakens trust: the
/// whole `run` fails clearly, naming the file and the line, and an
/// unsigned bundle on the boot partition is not applied (no pinned signer
/// is ever dropped because a line did not parse).
#[test]
fn a_broken_configuration_at_boot_fails_clearly_and_pins_stay() {
    let d = provisioned();
    let conf = d.root.join("etc/sealed-firstboot.conf");
    let pinned = std::fs::read_to_string(&conf).unwrap();
    let before = store_snapshot(&d.root);
    let (k, b) = seal(&attacker_contents(), None, Stamp::at(5000), &["/run/udev"]);
    for (broken, why) in [
        ("signer = sealed-signer1garbage", "not a signer"),
        ("signers = x", "unknown key \"signers\""),
        ("signer sealed-signer1", "expected key = value"),
        ("identity = generated\nidentity = tpm2", "set twice"),
    ] {
        std::fs::write(&conf, format!("{pinned}# broken below\n{broken}\n")).unwrap();
        d.place(&b, Some(&k));
        let err = d.fails("run", 1);
        let line = pinned.lines().count() + 1 + broken.lines().count();
        assert!(
            err.contains("sealed-firstboot.conf line ") && err.contains(why),
            "{broken}: {err}"
        );
        assert!(err.contains(&format!("line {line}")), "{broken}: {err}");
        assert_eq!(
            store_snapshot(&d.root),
            before,
            "{broken}: the store changed"
        );
        assert!(!d.root.join("run/udev").exists(), "{broken}: applied");
    }
}
