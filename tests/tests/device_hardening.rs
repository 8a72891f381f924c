//! The device never loses a secret: a stable persisted identity (host keys
//! that appear later change nothing), one runner at a time, crash safety
//! through the wipe under random SIGKILLs, rollback protection that works
//! with reproducible builds, bounded reads, partial failures that stay
//! partial. Everything through the real `sealed-firstboot` binary.

use sealed_bundle::{self as bundle, ImageKey};
use sealed_firstboot::store::{State, Store};
use sealed_image_tests::device::{
    assert_no_marker, contents, contents_owned, map, test_host_key, DeviceTree as Device,
};
use sealed_image_tests::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const OLD: &[(&str, &str)] = &[("wifi", "MARKER-old-wifi"), ("token", "MARKER-old-token")];
const NEW: &[(&str, &str)] = &[("wifi", "MARKER-new-wifi"), ("api", "MARKER-new-api")];

/// Raspberry Pi OS, pi-gen images and cloud-init create SSH host keys on
/// first boot, after sealed-firstboot ran: the next boot must still have
/// every secret, with the same identity.
#[test]
fn host_keys_created_after_first_boot_change_nothing() {
    if !require_tools_from(&[("ssh-keygen", "openssh-client"), ("age", "age")]) {
        return;
    }
    let d = Device::new();
    d.place_sealed(OLD, 1000);
    d.ok("run");
    let before = d.ok("pubkey");
    assert_eq!(d.state().recipient.as_deref(), Some(before.as_str()));
    assert_eq!(d.state().identity.as_deref(), Some("generated"));

    // As regenerate_ssh_host_keys does.
    let key = d.root.join("etc/ssh/ssh_host_ed25519_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let out = command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    for mode in ["generated", "ssh-host-key"] {
        std::fs::write(
            d.root.join("etc/sealed-firstboot.conf"),
            format!("identity = {mode}\n"),
        )
        .unwrap();
        d.ok("run");
        assert_eq!(d.live(), map(OLD), "identity = {mode}");
        let out = d.firstboot("pubkey", None);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), before);
        // pubkey says that the host key now derives another recipient.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SSH host key now derives another"), "{err}");
    }
    // The host key changes again, or goes away: nothing changes.
    std::fs::remove_file(&key).unwrap();
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    assert_eq!(d.ok("pubkey"), before);
    // The identity file works with the age CLI.
    assert_eq!(d.store_with_age_cli(), map(OLD));
}

/// A store written by the earlier code (identity derived from the host key
/// on every run, no identity file, no recipient in the state) keeps
/// working and is migrated: the derived identity is persisted.
#[test]
fn stores_from_the_earlier_code_are_migrated() {
    let d = Device::new();
    d.install_host_key(&test_host_key());
    let derived = sealed_firstboot::identity::ssh_derived(&d.root)
        .unwrap()
        .unwrap();
    let c = contents(OLD);
    let state = State {
        bundle_id: "00112233445566778899aabbccddeeff".into(),
        created_at: 1000,
        created_nanos: 0,
        sequence: 0,
        applied_at: 1001,
        recipient: None,
        identity: None,
    };
    Store::new(&d.root)
        .replace(&derived.to_public(), &c.manifest, &c.values, &state, None)
        .unwrap();
    // The earlier state.json had exactly these fields.
    let state_file = d.root.join("var/lib/sealed-secrets/current/state.json");
    let text = std::fs::read_to_string(&state_file).unwrap();
    assert!(!text.contains("recipient"), "{text}");
    assert!(!d.identity_file().exists());

    let out = d.firstboot("run", None);
    assert_success(&out, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("persisted the identity"));
    assert_eq!(d.live(), map(OLD));
    let persisted = std::fs::read_to_string(d.identity_file()).unwrap();
    assert!(persisted.contains("ssh-host-key (migrated)"), "{persisted}");
    // From now on the host key does not matter.
    std::fs::remove_file(d.root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    assert_eq!(d.ok("pubkey"), derived.to_public().to_string());
}

/// The SSH host key's public half is anyone's (`ssh-keyscan`): in the
/// default `generated` mode, a bundle sealed to the identity it derives is
/// not opened (whoever may run `apply` would otherwise be root). Only in
/// `identity = ssh-host-key` mode is that identity a candidate, after the
/// persisted one.
#[test]
fn recipient_bundles_sealed_to_the_host_key_open_only_in_ssh_host_key_mode() {
    let d = Device::new();
    d.install_host_key(&test_host_key());
    let generated = d.ok("pubkey");
    let derived = sealed_firstboot::identity::ssh_derived(&d.root)
        .unwrap()
        .unwrap()
        .to_public();
    assert_ne!(generated, derived.to_string());
    let seal_to = |r: &age::x25519::Recipient, secrets, version| {
        sealed_bundle::seal_with(
            sealed_bundle::SealTo::Recipient(r),
            &contents(secrets),
            version,
        )
        .unwrap()
    };
    d.place(&seal_to(&derived, NEW, 5), None);
    let e = d.fails("run", 1);
    assert!(e.contains("wrong image key"), "{e}");
    assert!(d.boot().join("bundle").exists(), "a refused bundle is kept");
    assert!(Store::new(&d.root).current().unwrap().is_none());
    // Sealed to the persisted identity, it opens.
    let persisted: age::x25519::Recipient = generated.parse().unwrap();
    d.run_sealed_to(&persisted, OLD, 6);

    // In ssh-host-key mode the derived identity is tried after the
    // persisted one; the store stays sealed to the persisted one.
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        "identity = ssh-host-key\n",
    )
    .unwrap();
    d.run_sealed_to(&derived, NEW, 7);
    assert_eq!(d.state().recipient.as_deref(), Some(generated.as_str()));
}

/// A host key that cannot be read (a link, a directory) is no candidate,
/// not an error: bundles sealed to the persisted identity still open, in
/// either mode, and the store still unseals.
#[test]
fn an_unreadable_host_key_blocks_nothing() {
    for conf in ["", "identity = ssh-host-key\n"] {
        let d = Device::new();
        d.install_host_key(&test_host_key());
        let generated: age::x25519::Recipient = d.ok("pubkey").parse().unwrap();
        std::fs::write(d.root.join("etc/sealed-firstboot.conf"), conf).unwrap();
        let key = d.root.join("etc/ssh/ssh_host_ed25519_key");
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(test_host_key(), &key).unwrap();
        d.run_sealed_to(&generated, OLD, 5);
        std::fs::remove_file(&key).unwrap();
        std::fs::create_dir(&key).unwrap();
        d.run_sealed_to(&generated, NEW, 6);
        d.ok("unseal");
        assert_eq!(d.live(), map(NEW), "{conf}");
    }
}

/// Many sealed-firstboot processes at once on one root: provision, pubkey,
/// unseal and run. The lock lets one work at a time: the store always ends
/// complete and sealed to the one persisted identity.
#[test]
fn concurrent_runners_never_lose_a_secret() {
    let commands = [
        "run",
        "pubkey",
        "provision",
        "unseal",
        "run",
        "pubkey",
        "run",
        "status",
    ];
    for round in 0..12 {
        let d = Device::new();
        d.place_sealed(NEW, 1000);
        let children: Vec<_> = commands
            .iter()
            .cycle()
            .skip(round)
            .take(commands.len())
            .map(|c| {
                d.cmd(c)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut pubkeys = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert_no_marker(&out);
            let cmd = commands[(i + round) % commands.len()];
            if cmd == "pubkey" {
                assert!(out.status.success());
                pubkeys.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            if cmd == "provision" {
                assert_success(&out, format!("round {round}"));
            }
        }
        d.ok("run");
        let recipient = d.ok("pubkey");
        assert!(
            pubkeys.iter().all(|p| *p == recipient),
            "round {round}: identity switched"
        );
        assert_eq!(d.state().recipient.as_deref(), Some(recipient.as_str()));
        assert_eq!(d.store(), map(NEW), "round {round}");
        assert_eq!(d.live(), map(NEW), "round {round}");
        assert!(!d.boot().exists(), "round {round}: bundle or key left");
        let names = d.state_dir_names();
        assert_eq!(
            names.iter().filter(|n| n.starts_with("store-")).count(),
            1,
            "round {round}: {names:?}"
        );
    }
}

/// SIGKILL `provision` at random moments, hundreds of times. After each
/// kill the store is the complete old or the complete new one (and while
/// it is the old one, bundle and key are intact); a rerun always ends with
/// the new secrets, nothing of the bundle or key left, no leftovers.
#[test]
fn provision_killed_at_random_moments_never_loses_a_secret() {
    let seed = Rng::time_seed();
    let mut rng = Rng(seed);
    // How long an undisturbed provision takes here.
    let timing = {
        let d = Device::new();
        d.place_sealed(OLD, 1000);
        d.ok("run");
        d.place_sealed(NEW, 2000);
        let t = Instant::now();
        d.ok("provision");
        t.elapsed()
    };
    let window = (timing.as_micros() as u64 * 3 / 2).max(1);
    let iterations = 200;
    let mut outcomes = [0u32; 2];
    for i in 0..iterations {
        let d = Device::new();
        d.place_sealed(OLD, 1000);
        d.ok("run");
        let (k2, new_bundle) = d.place_sealed(NEW, 2000);
        let mut child = d.cmd("provision").stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.next_u64() % window));
        let _ = child.kill();
        let _ = child.wait();

        let ctx = format!("seed {seed} iteration {i}");
        let store = d.store();
        if store == map(OLD) {
            outcomes[0] += 1;
            // The wipe starts only after the new store is durable.
            assert_eq!(
                std::fs::read(d.boot().join("bundle")).unwrap(),
                new_bundle,
                "{ctx}"
            );
            assert_eq!(
                std::fs::read(d.boot().join("image.key")).unwrap(),
                k2.to_file_text().as_bytes(),
                "{ctx}"
            );
        } else {
            outcomes[1] += 1;
            assert_eq!(store, map(NEW), "{ctx}");
        }
        d.ok("run");
        assert_eq!(d.store(), map(NEW), "{ctx}");
        assert_eq!(d.live(), map(NEW), "{ctx}");
        assert!(!d.boot().exists(), "{ctx}: bundle or key left");
        let names: Vec<String> = d
            .state_dir_names()
            .into_iter()
            .filter(|n| n != ".lock" && n != "identity" && n != "current")
            .collect();
        assert_eq!(names.len(), 1, "{ctx}: leftovers {names:?}");
    }
    eprintln!(
        "killed provision {iterations} times (window {window} µs): store old {} times, new {} times",
        outcomes[0], outcomes[1]
    );
}

/// The remains of a wipe interrupted by the earlier code (a bundle whose
/// first bytes are zeros) are recognised and removed, not refused forever.
#[test]
fn a_half_zeroed_bundle_is_recognised_and_removed() {
    let d = Device::new();
    let (k, b) = d.place_sealed(OLD, 1000);
    d.ok("run");
    let mut half = b.clone();
    half[..b.len() / 2].fill(0);
    d.place(&half, None);
    let out = d.firstboot("run", None);
    assert_exit(&out, 0, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted wipe"));
    assert!(!d.boot().exists());
    assert_eq!(d.live(), map(OLD));
    // Leftover `.wipe` files are finished too.
    std::fs::create_dir_all(d.boot()).unwrap();
    std::fs::write(d.boot().join("image.key.wipe"), k.to_file_text().as_bytes()).unwrap();
    d.ok("run");
    assert!(!d.boot().exists());
}

/// A bundle or key that is a FIFO, a directory or a device is refused at
/// once (a plain read of a FIFO would hang the boot), and kept.
#[test]
fn bundle_or_key_that_is_not_a_regular_file_is_refused_at_once() {
    let d = Device::new();
    std::fs::create_dir_all(d.boot()).unwrap();
    let fifo = d.boot().join("bundle");
    mkfifo(&fifo);
    let err = d.fails("provision", 1);
    assert!(
        err.contains("FIFO") && err.contains("not a regular file"),
        "{err}"
    );
    std::fs::remove_file(&fifo).unwrap();

    let k = ImageKey::generate();
    d.place(&bundle::seal(&k, &contents(OLD), 1000).unwrap(), None);
    std::fs::create_dir(d.boot().join("image.key")).unwrap();
    let err = d.fails("provision", 1);
    assert!(err.contains("a directory"), "{err}");
    assert!(d.boot().join("bundle").exists(), "the bundle must be kept");
    std::fs::remove_dir(d.boot().join("image.key")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.boot().join("image.key")).unwrap();
    let out = d.firstboot("provision", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
}

/// An owner missing on the device fails that secret only (exit 4, named);
/// exit 3 means "refused, existing secrets unsealed" and needs existing
/// secrets: with an empty store a refused bundle is a failure (exit 1).
#[test]
fn partial_failures_stay_partial_and_exit_codes_tell_them_apart() {
    let d = Device::new();
    // Refused bundle (wrong key), empty store.
    let k = ImageKey::generate();
    d.place(
        &bundle::seal(&k, &contents(OLD), 1000).unwrap(),
        Some(&ImageKey::generate()),
    );
    let out = d.firstboot("run", None);
    assert_exit(&out, 1, "");

    let c = contents_owned(&[
        ("wifi", "MARKER-a", "root"),
        ("app", "MARKER-b", "appuser"),
        ("numeric", "MARKER-c", "4242"),
    ]);
    d.place(&bundle::seal(&k, &c, 1000).unwrap(), Some(&k));
    let out = d.firstboot("run", None);
    assert_no_marker(&out);
    assert_exit(&out, 4, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret app was not unsealed") && err.contains("appuser"),
        "{err}"
    );
    assert_eq!(
        d.live(),
        map(&[("wifi", "MARKER-a"), ("numeric", "MARKER-c")])
    );
    // The account appears (systemd-sysusers ran): the next boot has all.
    device_tree(&d.root, &[("appuser", 1200)]);
    d.ok("run");
    assert_eq!(d.live().len(), 3);
    // A refused bundle with existing secrets: exit 3.
    d.place(
        &bundle::seal(&k, &contents(NEW), 2000).unwrap(),
        Some(&ImageKey::generate()),
    );
    assert_eq!(d.firstboot("run", None).status.code(), Some(3));
    assert!(
        d.boot().join("bundle").exists(),
        "a bundle refused for a wrong key is kept"
    );
}

/// An image of one FAT partition with the secret `token` from `token.txt`.
const TOKEN_RECIPE: &str = "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"boot\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\n\n[secrets.token]\ntype = \"single-line\"\nsource = { file = \"token.txt\" }\n";

/// The README recommends pinning SOURCE_DATE_EPOCH: two builds with the
/// same pinned time and a changed secret must still rotate on the device.
#[test]
fn rotation_works_with_a_pinned_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_file(&tmp, "recipe.toml", TOKEN_RECIPE);
    let devices = write_file(&tmp, "devices.toml", "[[device]]\nname = \"dev1\"\n");
    let d = Device::new();
    for (i, value) in ["MARKER-first", "MARKER-second"].iter().enumerate() {
        std::fs::write(tmp.path().join("token.txt"), value).unwrap();
        let out_dir = tmp.path().join(format!("out{i}"));
        let out = build_image_cmd()
            .arg("build")
            .arg(&recipe)
            .arg("--devices")
            .arg(&devices)
            .arg("--bundles-only")
            .arg("--out")
            .arg(&out_dir)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert_success(&out, "");
        assert_no_marker(&out);
        std::fs::create_dir_all(d.boot()).unwrap();
        std::fs::copy(
            out_dir.join("dev1/sealed-secrets/bundle"),
            d.boot().join("bundle"),
        )
        .unwrap();
        std::fs::copy(out_dir.join("dev1/r.key"), d.boot().join("image.key")).unwrap();
        d.ok("run");
        assert_eq!(d.live(), map(&[("token", value)]), "build {i}");
        assert!(!d.boot().exists());
        // The bundle carries the real clock, not SOURCE_DATE_EPOCH.
        assert!(d.state().created_at > 1_700_000_000);
    }
}
