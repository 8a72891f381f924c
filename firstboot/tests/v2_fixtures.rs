//! Bundles of format v2, sealed by the last v2 builder and kept as
//! fixtures (`tests/fixtures/v2/`): the device reads them for ever.

use sealed_bundle::config::Config;
use sealed_bundle::{self as bundle, BundleError, ImageKey, OpenWith, Policy, SigningKey};
use sealed_firstboot::identity::parse_identity_file;
use sealed_firstboot::provision::{self, Applied, ProvisionError};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v2")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// What both fixtures hold (see `tests/fixtures/v2/src/`).
fn check_contents(opened: &bundle::Opened) {
    assert_eq!(opened.header.version, 2);
    assert_eq!(opened.header.sequence, 7);
    let m = &opened.contents.manifest;
    let names: Vec<&str> = m.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["app_env", "wifi_psk", "wifi"]);
    assert!(!m.partial);
    let app = &m.secrets[0];
    assert_eq!(
        (app.path.as_str(), app.mode, &app.restart_units[..]),
        ("/run/app/app.env", 0o440, &["app.service".to_string()][..])
    );
    let v = &opened.contents.values;
    assert_eq!(&v["wifi_psk"][..], b"fixture-v2-wifi-NOT-A-SECRET");
    assert_eq!(&v["app_env"][..], b"TOKEN=fixture-v2-token-NOT-A-SECRET\n");
    assert_eq!(
        &v["wifi"][..],
        b"[wifi-security]\npsk=${SECRET:wifi_psk|keyfile}\n"
    );
}

#[test]
fn an_image_key_bundle_of_format_2_opens() {
    let key = ImageKey::from_file_text(&read("image-key.key")).unwrap();
    let opened = bundle::open(&read("image-key.bundle"), &key).unwrap();
    check_contents(&opened);
}

#[test]
fn a_recipient_bundle_of_format_2_opens() {
    let text = String::from_utf8(read("identity.txt")).unwrap();
    let identity = parse_identity_file(&text).unwrap();
    let opened = bundle::open_with(
        &read("recipient.bundle"),
        OpenWith::Identity(&identity),
        &Policy::default(),
    )
    .unwrap();
    check_contents(&opened);
}

/// A device that pins no signer (an image built before signatures)
/// applies a v2 bundle and unseals it; one that pins a signer refuses it
/// as unsigned, before anything is decrypted, and keeps its store.
#[test]
fn a_device_applies_format_2_only_while_no_signer_is_pinned() {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let key = ImageKey::from_file_text(&read("image-key.key")).unwrap();
    let bytes = read("image-key.bundle");

    let pinning = Config {
        signers: vec![SigningKey::generate().signer()],
        ..Config::default()
    };
    let refused = provision::apply(root, &bytes, Some(&key), 1, &pinning).unwrap_err();
    assert!(
        matches!(
            &refused,
            ProvisionError::Untrusted {
                source: BundleError::Unsigned { .. },
                ..
            }
        ),
        "{refused}"
    );
    assert!(!root.join("var/lib/sealed-secrets/current").exists());

    let applied = provision::apply(root, &bytes, Some(&key), 1, &Config::default()).unwrap();
    assert!(
        matches!(applied, Applied::Applied { secrets: 3, .. }),
        "{applied:?}"
    );
    let opts = sealed_firstboot::runtime::UnsealOptions::default();
    let outcome = sealed_firstboot::unseal::unseal_store(root, &opts).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(
        std::fs::read(root.join("run/secrets/wifi_psk")).unwrap(),
        b"fixture-v2-wifi-NOT-A-SECRET"
    );
    let rendered = std::fs::read_to_string(root.join("run/secrets/.outside/wifi")).unwrap();
    assert_eq!(
        rendered,
        "[wifi-security]\npsk=fixture-v2-wifi-NOT-A-SECRET\n"
    );
}
