//! Format tests: round trip and every way a bundle can be damaged.

use super::*;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

fn entry(name: &str, kind: SecretType) -> SecretEntry {
    SecretEntry {
        name: name.into(),
        kind,
        path: format!("/run/secrets/{name}"),
        owner: "root".into(),
        group: "root".into(),
        mode: 0o400,
        description: None,
        restart_units: Vec::new(),
        reload_units: Vec::new(),
    }
}

fn sample() -> Contents {
    let mut values = BTreeMap::new();
    values.insert(
        "wifi_psk".to_string(),
        Zeroizing::new(b"MARKER-psk".to_vec()),
    );
    values.insert("cert".to_string(), Zeroizing::new(vec![0u8, 1, 2, 255]));
    Contents {
        manifest: Manifest {
            secrets: vec![
                entry("wifi_psk", SecretType::SingleLine),
                entry("cert", SecretType::File),
            ],
            ..Default::default()
        },
        values,
    }
}

#[test]
fn round_trip() {
    let key = ImageKey::generate();
    let bundle = seal(&key, &sample(), 1_700_000_000).unwrap();
    let opened = open(&bundle, &key).unwrap();
    assert_eq!(opened.header.created_at, 1_700_000_000);
    assert_eq!(opened.header.key_id, key.id());
    assert_eq!(opened.contents.manifest, sample().manifest);
    assert_eq!(&opened.contents.values["wifi_psk"][..], b"MARKER-psk");
    assert_eq!(&opened.contents.values["cert"][..], &[0u8, 1, 2, 255]);
}

#[test]
fn nothing_in_clear() {
    let key = ImageKey::generate();
    let bundle = seal(&key, &sample(), 1).unwrap();
    for needle in [&b"MARKER"[..], b"wifi_psk", b"/run/secrets", b"manifest"] {
        assert!(
            !bundle.windows(needle.len()).any(|w| w == needle),
            "{} visible in the bundle",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn two_seals_differ() {
    let key = ImageKey::generate();
    let a = seal(&key, &sample(), 1).unwrap();
    let b = seal(&key, &sample(), 1).unwrap();
    assert_ne!(a, b, "bundle id and nonce must be fresh per seal");
}

#[test]
fn every_bit_flip_is_refused_with_the_expected_error() {
    let key = ImageKey::generate();
    let bundle = seal(&key, &sample(), 42).unwrap();
    for byte in 0..bundle.len() {
        for bit in 0..8 {
            let mut damaged = bundle.clone();
            damaged[byte] ^= 1 << bit;
            let err = open(&damaged, &key).expect_err("a flipped bit was accepted");
            let ok = match byte {
                0..=7 => matches!(err, BundleError::BadMagic),
                8..=9 => matches!(err, BundleError::UnsupportedVersion { .. }),
                10..=11 => matches!(
                    err,
                    BundleError::UnsupportedFlags { .. } | BundleError::NeedsIdentity
                ),
                // Nanoseconds: a value of 1e9 or more is refused before opening.
                36..=39 => matches!(err, BundleError::Tampered | BundleError::BadStamp),
                48..=55 => matches!(err, BundleError::WrongKey { .. }),
                80..=87 => matches!(
                    err,
                    BundleError::TruncatedCiphertext { .. } | BundleError::TrailingData { .. }
                ),
                _ => matches!(err, BundleError::Tampered),
            };
            assert!(ok, "byte {byte} bit {bit}: unexpected error {err}");
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let key = ImageKey::generate();
    let bundle = seal(&key, &sample(), 42).unwrap();
    for len in 0..bundle.len() {
        let err = open(&bundle[..len], &key).expect_err("truncated bundle accepted");
        let ok = if len < HEADER_LEN {
            matches!(err, BundleError::TruncatedHeader { .. })
        } else {
            matches!(err, BundleError::TruncatedCiphertext { .. })
        };
        assert!(ok, "length {len}: unexpected error {err}");
    }
    let mut longer = bundle.clone();
    longer.push(0);
    assert!(matches!(
        open(&longer, &key),
        Err(BundleError::TrailingData { extra: 1 })
    ));
}

#[test]
fn wrong_key_is_named() {
    let bundle = seal(&ImageKey::generate(), &sample(), 42).unwrap();
    let err = open(&bundle, &ImageKey::generate()).unwrap_err();
    assert!(matches!(err, BundleError::WrongKey { .. }));
    assert!(err.to_string().contains("wrong image key"));
}

#[test]
fn unknown_version_is_named() {
    let key = ImageKey::generate();
    let mut bundle = seal(&key, &sample(), 42).unwrap();
    bundle[8..10].copy_from_slice(&3u16.to_le_bytes());
    let err = open(&bundle, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported bundle format version 3"),
        "{err}"
    );
}

#[test]
fn errors_are_distinct() {
    let msgs = [
        BundleError::BadMagic.to_string(),
        BundleError::Tampered.to_string(),
        BundleError::TruncatedHeader {
            len: 1,
            header: HEADER_LEN,
        }
        .to_string(),
        BundleError::TruncatedCiphertext {
            declared: 2,
            actual: 1,
        }
        .to_string(),
        BundleError::UnsupportedVersion {
            found: 2,
            supported: 1,
        }
        .to_string(),
        BundleError::WrongKey {
            expected: "a".into(),
            actual: "b".into(),
        }
        .to_string(),
    ];
    let unique: std::collections::BTreeSet<_> = msgs.iter().collect();
    assert_eq!(unique.len(), msgs.len());
}

#[test]
fn oversized_bundle_refused_before_parsing() {
    let big = vec![0u8; limits::MAX_BUNDLE_BYTES as usize + 1];
    assert!(matches!(
        open(&big, &ImageKey::generate()),
        Err(BundleError::TooLarge { .. })
    ));
}

/// A bundle whose authenticated plaintext decompresses past the limit.
#[test]
fn decompression_bomb_is_refused() {
    let key = ImageKey::generate();
    let mut values = BTreeMap::new();
    let name = "big".to_string();
    values.insert(
        name.clone(),
        Zeroizing::new(vec![0u8; limits::MAX_SECRET_BYTES as usize]),
    );
    let mut contents = Contents {
        manifest: Manifest {
            secrets: vec![entry("big", SecretType::File)],
            ..Default::default()
        },
        values,
    };
    // One secret at the limit seals and opens.
    let ok = seal(&key, &contents, 1).unwrap();
    assert!(ok.len() < 1024 * 1024, "zeros compress well");
    assert!(open(&ok, &key).is_ok());
    // One byte more is refused at sealing, and a hand-made bundle with it
    // is refused at opening from the tar header, before allocation.
    contents.values.get_mut(&name).unwrap().push(0);
    assert!(matches!(
        seal(&key, &contents, 1),
        Err(BundleError::Limit(_))
    ));
}

fn hostile(members: &[(&str, u64)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, size) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(*size);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, path, std::io::repeat(0).take(*size))
            .unwrap();
    }
    let tar = tar.into_inner().unwrap();
    ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest)
}

use std::io::Read;

#[test]
fn hostile_payloads_are_refused() {
    let key = ImageKey::generate();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            hostile(&[("secrets/big", limits::MAX_SECRET_BYTES + 1)]),
            "limit",
        ),
        (
            hostile(&[("manifest.json", limits::MAX_MANIFEST_BYTES + 1)]),
            "limit",
        ),
        (hostile(&[("etc/passwd", 4)]), "unexpected member"),
        (hostile(&[("secrets/a", 4)]), "no manifest"),
        (b"not zstd".to_vec(), "payload"),
    ];
    for (plaintext, expect) in cases {
        let bundle =
            seal::seal_plaintext(SealTo::ImageKey(&key), &plaintext, super::Stamp::at(1)).unwrap();
        let err = open(&bundle, &key).expect_err("hostile payload accepted");
        assert!(
            err.to_string().contains(expect),
            "expected {expect:?}, got {err}"
        );
    }
    // Many small members past the count limit.
    let many: Vec<(String, u64)> = (0..=limits::MAX_SECRETS)
        .map(|i| (format!("secrets/s{i}"), 1))
        .collect();
    let refs: Vec<(&str, u64)> = many.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let bundle =
        seal::seal_plaintext(SealTo::ImageKey(&key), &hostile(&refs), super::Stamp::at(1)).unwrap();
    let err = open(&bundle, &key).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

#[test]
fn recipient_mode_round_trip_and_header_binding() {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let bundle = seal_with(SealTo::Recipient(&recipient), &sample(), 7).unwrap();
    let opened = open_with(&bundle, OpenWith::Identity(&identity)).unwrap();
    assert_eq!(&opened.contents.values["wifi_psk"][..], b"MARKER-psk");
    // Bumping the clear created_at (a replay trick) is caught.
    let mut bumped = bundle.clone();
    bumped[28] ^= 1;
    assert!(matches!(
        open_with(&bumped, OpenWith::Identity(&identity)),
        Err(BundleError::Tampered)
    ));
    // So is a raised sequence number.
    let mut raised = bundle.clone();
    raised[40] ^= 1;
    assert!(matches!(
        open_with(&raised, OpenWith::Identity(&identity)),
        Err(BundleError::Tampered)
    ));
    // Another device's identity is refused as a wrong key.
    let other = age::x25519::Identity::generate();
    assert!(matches!(
        open_with(&bundle, OpenWith::Identity(&other)),
        Err(BundleError::WrongKey { .. })
    ));
    // An image key cannot open a recipient bundle.
    assert!(matches!(
        open(&bundle, &ImageKey::generate()),
        Err(BundleError::NeedsIdentity)
    ));
}

/// The boot-partition paths are the directory and file names joined: the
/// builder writes by path, the device reads by directory and name.
#[test]
fn boot_paths_are_the_names_joined() {
    use super::boot::*;
    assert_eq!(BUNDLE_PATH, format!("{SUBDIR}/{BUNDLE_FILE}"));
    assert_eq!(KEY_PATH, format!("{SUBDIR}/{KEY_FILE}"));
}

/// A template is judged by its exact rendered size: a large value behind a
/// `|shell` escape fits when its rendering fits (the escape grows only the
/// quotes), and a template whose rendering passes the limit is refused
/// with that size, before anything is rendered.
#[test]
fn templates_are_limited_by_their_exact_rendered_size() {
    let big = limits::MAX_SECRET_BYTES as usize / 3;
    let with_template = |text: &str| {
        let mut c = sample();
        c.values
            .insert("big".into(), Zeroizing::new(vec![b'a'; big]));
        c.manifest.secrets.push(entry("big", SecretType::File));
        c.values
            .insert("conf".into(), Zeroizing::new(text.as_bytes().to_vec()));
        c.manifest.templates.push(entry("conf", SecretType::File));
        c
    };
    // 1/3 of the limit, shell-quoted: fits (it used to be refused by a
    // four-times-the-value bound).
    with_template("x=${SECRET:big|shell}\n").validate().unwrap();
    // Four copies: past the limit, refused naming the exact size.
    let four = "${SECRET:big}".repeat(4);
    let e = with_template(&four).validate().unwrap_err().to_string();
    assert!(e.contains(&format!("renders to {} bytes", 4 * big)), "{e}");
    assert!(!e.contains("aaaa"), "{e}");
}
