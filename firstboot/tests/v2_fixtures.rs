//! Bundles of format v2, sealed by the last v2 builder and kept as
//! fixtures (`tests/fixtures/v2/`): the device reads them for ever.

use sealed_firstboot::bundle::{self, ImageKey, OpenWith};
use sealed_firstboot::identity::parse_identity_file;
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
    let opened =
        bundle::open_with(&read("recipient.bundle"), OpenWith::Identity(&identity)).unwrap();
    check_contents(&opened);
}
