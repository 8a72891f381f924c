//! The device side against temp roots, through the real `sealed-firstboot`
//! binary: crash safety by fault injection at every step, rotation,
//! replay refusal, wrong keys and tampered bundles.

use sealed_bundle::{self as bundle, ImageKey, SealTo};
use sealed_image_tests::device::{
    contents, host_key_identity, map, test_host_key, DeviceTree as Device,
};
use sealed_image_tests::*;

const OLD: &[(&str, &str)] = &[("wifi", "old-wifi"), ("token", "old-token")];
const NEW: &[(&str, &str)] = &[("wifi", "new-wifi"), ("api", "new-api")];

/// A device provisioned with OLD, then NEW placed on its boot partition.
fn device_with_old_store_and_new_bundle() -> Device {
    let d = Device::new();
    d.place_sealed(OLD, 1000);
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    d.place_sealed(NEW, 2000);
    d
}

#[test]
fn interrupted_provisioning_always_recovers_without_losing_a_secret() {
    let failpoints = [
        "store-secret-written",
        "store-before-rename",
        "store-before-swap",
        "store-after-swap",
        "provision-before-wipe",
        "provision-wipe-renamed",
        "shred-partial",
        "provision-between-wipes",
    ];
    for fp in failpoints {
        let d = device_with_old_store_and_new_bundle();
        let out = d.firstboot("provision", Some(fp));
        assert_exit(&out, 86, format!("{fp}: failpoint not reached"));

        // After the crash: the store is the complete old or the complete new one.
        let store = d.store();
        assert!(
            store == map(OLD) || store == map(NEW),
            "{fp}: store is {store:?}"
        );
        // Bundle and key are only gone once the new store is durable.
        if store == map(OLD) {
            assert!(
                d.boot().join("bundle").exists(),
                "{fp}: bundle wiped before the store was replaced"
            );
            assert!(
                d.boot().join("image.key").exists(),
                "{fp}: key wiped before the store was replaced"
            );
        }
        // The running system still unseals a complete set.
        d.ok("unseal");
        let live = d.live();
        assert!(
            live == map(OLD) || live == map(NEW),
            "{fp}: live is {live:?}"
        );

        // A rerun finishes the job.
        d.ok("run");
        assert_eq!(d.store(), map(NEW), "{fp}");
        assert_eq!(
            d.live(),
            map(NEW),
            "{fp}: rotated secrets not live (removed one still there?)"
        );
        assert!(
            !d.boot().exists(),
            "{fp}: something of the bundle or key left"
        );
        // No leftovers in the store directory.
        let names = d.state_dir_names();
        assert_eq!(
            names.iter().filter(|n| n.starts_with("store-")).count(),
            1,
            "{fp}: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.starts_with('.') && n != ".lock"),
            "{fp}: leftovers {names:?}"
        );
    }
}

#[test]
fn older_or_replayed_bundles_are_refused() {
    let d = Device::new();
    let (k1, b1) = d.place_sealed(OLD, 1000);
    d.ok("run");
    d.place_sealed(NEW, 2000);
    d.ok("run");
    assert_eq!(d.live(), map(NEW));

    // Replaying the first image's bundle is refused, and the replayed
    // bundle and its key are wiped (they must not stay in clear on the
    // boot partition); secrets stay NEW.
    d.place(&b1, Some(&k1));
    let err = d.fails("provision", 1);
    assert!(
        err.contains("refused bundle")
            && err.contains("roll secrets back")
            && err.contains("wiped"),
        "{err}"
    );
    assert_eq!(d.store(), map(NEW));
    assert!(!d.boot().exists(), "replayed bundle or key left in clear");
    // `run` reports it (exit 3) but still unseals the current store.
    d.place(&b1, Some(&k1));
    let out = d.firstboot("run", None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(d.live(), map(NEW));
    assert!(!d.boot().exists());
    // Same stamp as the applied one is refused too.
    d.place_sealed(OLD, 2000);
    assert_eq!(d.firstboot("provision", None).status.code(), Some(1));
    assert_eq!(d.store(), map(NEW));
    // A sequence number orders bundles before the time: a bundle sealed
    // earlier but with a higher sequence is newer.
    let k4 = ImageKey::generate();
    let stamp = bundle::Stamp::at(1500).with_sequence(1);
    let b4 = bundle::seal_stamped(SealTo::ImageKey(&k4), &contents(OLD), stamp).unwrap();
    d.place(&b4, Some(&k4));
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    // ... and a bundle without a sequence is now older, whatever its time.
    d.place_sealed(NEW, 9000);
    assert_eq!(d.firstboot("provision", None).status.code(), Some(1));
    assert_eq!(d.store(), map(OLD));
}

#[test]
fn wrong_key_tampered_or_truncated_bundles_change_nothing() {
    let d = device_with_old_store_and_new_bundle();
    let good = std::fs::read(d.boot().join("bundle")).unwrap();
    let key = std::fs::read(d.boot().join("image.key")).unwrap();

    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (
            good.clone(),
            ImageKey::generate().to_file_text().as_bytes().to_vec(),
            "wrong image key",
        ),
        (
            {
                let mut b = good.clone();
                let n = b.len();
                b[n - 1] ^= 1;
                b
            },
            key.clone(),
            "modified or corrupted",
        ),
        (good[..good.len() - 7].to_vec(), key.clone(), "truncated"),
        (good.clone(), b"not a key".to_vec(), "image key"),
    ];
    for (bundle_bytes, key_bytes, expect) in cases {
        std::fs::write(d.boot().join("bundle"), &bundle_bytes).unwrap();
        std::fs::write(d.boot().join("image.key"), &key_bytes).unwrap();
        let out = d.firstboot("provision", None);
        assert_eq!(out.status.code(), Some(1), "{expect}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "expected {expect:?}: {err}");
        assert_eq!(d.store(), map(OLD), "{expect}: store changed");
        // The refused bundle stays for inspection; nothing was wiped.
        assert!(d.boot().join("bundle").exists());
        assert!(!contains(&out.stderr, b"new-wifi") && !contains(&out.stderr, b"old-wifi"));
    }
    // A bundle without its key names the key file to provide.
    std::fs::write(d.boot().join("bundle"), &good).unwrap();
    std::fs::remove_file(d.boot().join("image.key")).unwrap();
    let out = d.firstboot("provision", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image key is not at"), "{err}");
}

#[test]
fn bundle_sealed_to_the_device_recipient_needs_no_key() {
    let d = Device::new();
    let out = d.firstboot("pubkey", None);
    let recipient: age::x25519::Recipient =
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    d.run_sealed_to(&recipient, NEW, 5);
    assert!(!d.boot().join("bundle").exists());
}

#[test]
fn build_side_recipient_from_ssh_pubkey_matches_the_device() {
    let d = Device::new();
    // identity = ssh-host-key: derived from the host key, then persisted.
    host_key_identity(&d.root);
    let device_side = d.firstboot("pubkey", None);
    assert!(device_side.status.success());
    // As a controller would get it: `ssh-keyscan` format on standard input.
    let publine = std::fs::read_to_string(test_host_key().with_extension("pub")).unwrap();
    let keyscan = format!(
        "device.local {}",
        publine
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let build_side = output_with_stdin(
        build_image_cmd().args(["pubkey", "--ssh-pubkey", "-"]),
        keyscan.as_bytes(),
    );
    assert!(build_side.status.success());
    assert_eq!(build_side.stdout, device_side.stdout);
    // The derived identity is persisted, and says where it came from.
    let persisted =
        std::fs::read_to_string(d.root.join("var/lib/sealed-secrets/identity")).unwrap();
    assert!(persisted.contains("# origin: ssh-host-key"), "{persisted}");

    // A bundle sealed to that recipient provisions on the device.
    let recipient: age::x25519::Recipient = String::from_utf8_lossy(&build_side.stdout)
        .trim()
        .parse()
        .unwrap();
    d.run_sealed_to(&recipient, NEW, 9);
}

#[test]
fn boot_dir_comes_from_the_config_file() {
    let d = Device::new();
    std::fs::create_dir_all(d.root.join("boot/firmware/sealed-secrets")).unwrap();
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        "# where the FAT is\nboot_dir=/boot/firmware\n",
    )
    .unwrap();
    let k = ImageKey::generate();
    std::fs::write(
        d.root.join("boot/firmware/sealed-secrets/bundle"),
        bundle::seal(&k, &contents(OLD), 1).unwrap(),
    )
    .unwrap();
    std::fs::write(
        d.root.join("boot/firmware/sealed-secrets/image.key"),
        k.to_file_text().as_bytes(),
    )
    .unwrap();
    d.ok("run");
    assert_eq!(d.live(), map(OLD));
    assert!(!d.root.join("boot/firmware/sealed-secrets/bundle").exists());
    // A malformed config file is a precise error.
    std::fs::write(d.root.join("etc/sealed-firstboot.conf"), "bootdir /boot\n").unwrap();
    let err = d.fails("provision", 1);
    assert!(
        err.contains("sealed-firstboot.conf") && err.contains("line 1"),
        "{err}"
    );
}
