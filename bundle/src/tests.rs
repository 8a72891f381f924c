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
        credential: None,
        credential_encrypted: None,
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
                // Version 3 expects a signer and a signature: the lengths
                // no longer add up.
                8..=9 => matches!(
                    err,
                    BundleError::UnsupportedVersion { .. }
                        | BundleError::TruncatedCiphertext { .. }
                ),
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
        let ok = if len < HEADER_LEN_V2 {
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
    bundle[8..10].copy_from_slice(&4u16.to_le_bytes());
    let err = open(&bundle, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported bundle format version 4"),
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
            header: HEADER_LEN_V2,
        }
        .to_string(),
        BundleError::TruncatedCiphertext {
            declared: 2,
            actual: 1,
        }
        .to_string(),
        BundleError::UnsupportedVersion { found: 4 }.to_string(),
        BundleError::TruncatedSignature { found: 3 }.to_string(),
        BundleError::Unsigned { pinned: "x".into() }.to_string(),
        BundleError::UnknownSigner {
            signer: "x".into(),
            pinned: "y".into(),
        }
        .to_string(),
        BundleError::BadSignature { signer: "x".into() }.to_string(),
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
        let bundle = seal::seal_plaintext(
            &SealTo::ImageKey(&key),
            &plaintext,
            super::Stamp::at(1),
            None,
        )
        .unwrap();
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
    let bundle = seal::seal_plaintext(
        &SealTo::ImageKey(&key),
        &hostile(&refs),
        super::Stamp::at(1),
        None,
    )
    .unwrap();
    let err = open(&bundle, &key).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

#[test]
fn recipient_mode_round_trip_and_header_binding() {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let bundle = seal_with(SealTo::Recipient(&recipient), &sample(), 7).unwrap();
    let opened = open_with(&bundle, OpenWith::Identity(&identity), &Policy::default()).unwrap();
    assert_eq!(&opened.contents.values["wifi_psk"][..], b"MARKER-psk");
    // Bumping the clear created_at (a replay trick) is caught.
    let mut bumped = bundle.clone();
    bumped[28] ^= 1;
    assert!(matches!(
        open_with(&bumped, OpenWith::Identity(&identity), &Policy::default()),
        Err(BundleError::Tampered)
    ));
    // So is a raised sequence number.
    let mut raised = bundle.clone();
    raised[40] ^= 1;
    assert!(matches!(
        open_with(&raised, OpenWith::Identity(&identity), &Policy::default()),
        Err(BundleError::Tampered)
    ));
    // Another device's identity is refused as a wrong key.
    let other = age::x25519::Identity::generate();
    assert!(matches!(
        open_with(&bundle, OpenWith::Identity(&other), &Policy::default()),
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
    use crate::boot::*;
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
    with_template("x=${SECRET:big|shell}\n")
        .validate(&PathPolicy::strict())
        .unwrap();
    // Four copies: past the limit, refused naming the exact size.
    let four = "${SECRET:big}".repeat(4);
    let e = with_template(&four)
        .validate(&PathPolicy::strict())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("renders to {} bytes", 4 * big)), "{e}");
    assert!(!e.contains("aaaa"), "{e}");
}

// ------------------------------------------------------------ format 3

fn pinned(signers: &[&SigningKey]) -> Policy {
    Policy {
        signers: signers.iter().map(|k| k.signer()).collect(),
        paths: PathPolicy::strict(),
    }
}

#[test]
fn signed_round_trip_names_the_signer() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let bundle = seal_signed(&key, &sample(), 42, &team).unwrap();
    assert_eq!(&bundle[8..10], &FORMAT_VERSION.to_le_bytes());
    let opened = open_with(&bundle, OpenWith::ImageKey(&key), &pinned(&[&team])).unwrap();
    assert_eq!(opened.header.signer, Some(team.signer()));
    assert_eq!(&opened.contents.values["wifi_psk"][..], b"MARKER-psk");
    // Several signers pinned: any one of them.
    let other = SigningKey::generate();
    open_with(&bundle, OpenWith::ImageKey(&key), &pinned(&[&other, &team])).unwrap();
    // Nothing pinned: the signature must still verify.
    assert_eq!(
        open(&bundle, &key).unwrap().header.signer,
        Some(team.signer())
    );
    // In recipient mode too.
    let identity = age::x25519::Identity::generate();
    let sealed = seal_bundle(
        &sample(),
        &Sealing {
            to: SealTo::Recipient(&identity.to_public()),
            stamp: Stamp::at(1),
            signing: Some(&team),
            paths: &PathPolicy::strict(),
        },
    )
    .unwrap();
    let opened = open_with(&sealed, OpenWith::Identity(&identity), &pinned(&[&team])).unwrap();
    assert_eq!(opened.header.signer, Some(team.signer()));
}

#[test]
fn unsigned_and_foreign_bundles_are_refused_when_a_signer_is_pinned() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let mallory = SigningKey::generate();
    let policy = pinned(&[&team]);
    let unsigned = seal(&key, &sample(), 42).unwrap();
    let e = open_with(&unsigned, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(&team.signer().to_string()), "{e}");
    let foreign = seal_signed(&key, &sample(), 42, &mallory).unwrap();
    let e = open_with(&foreign, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::UnknownSigner { .. }), "{e}");
    assert!(e.to_string().contains(&mallory.signer().to_string()), "{e}");
    assert!(e.is_signature_refusal());
    // Without a pin, both open (images built before signatures).
    open(&unsigned, &key).unwrap();
    open(&foreign, &key).unwrap();
}

/// With a signer pinned, every flipped bit of a signed bundle is refused,
/// and one in the signed part is refused for its signature before anything
/// is decrypted (never "tampered", which would mean decryption was tried).
#[test]
fn every_bit_flip_of_a_signed_bundle_is_refused_before_decryption() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let policy = pinned(&[&team]);
    let bundle = seal_signed(&key, &sample(), 42, &team).unwrap();
    let sig_at = bundle.len() - SIGNATURE_LEN;
    for byte in 0..bundle.len() {
        for bit in 0..8 {
            let mut damaged = bundle.clone();
            damaged[byte] ^= 1 << bit;
            let err = open_with(&damaged, OpenWith::ImageKey(&key), &policy)
                .expect_err("a flipped bit was accepted");
            let ok = match byte {
                0..=7 => matches!(err, BundleError::BadMagic),
                8..=9 => matches!(
                    err,
                    BundleError::UnsupportedVersion { .. } | BundleError::TrailingData { .. }
                ),
                10..=11 => matches!(
                    err,
                    BundleError::UnsupportedFlags { .. } | BundleError::BadSignature { .. }
                ),
                36..=39 => matches!(
                    err,
                    BundleError::BadSignature { .. } | BundleError::BadStamp
                ),
                80..=87 => matches!(
                    err,
                    BundleError::TruncatedCiphertext { .. }
                        | BundleError::TruncatedSignature { .. }
                        | BundleError::TrailingData { .. }
                ),
                88..=119 => matches!(err, BundleError::UnknownSigner { .. }),
                _ if byte >= sig_at => matches!(err, BundleError::BadSignature { .. }),
                _ => matches!(err, BundleError::BadSignature { .. }),
            };
            assert!(ok, "byte {byte} bit {bit}: unexpected error {err}");
        }
    }
}

#[test]
fn every_truncation_of_a_signed_bundle_is_refused() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let bundle = seal_signed(&key, &sample(), 42, &team).unwrap();
    let ct_end = bundle.len() - SIGNATURE_LEN;
    for len in 0..bundle.len() {
        let err = open(&bundle[..len], &key).expect_err("truncated bundle accepted");
        let ok = if len < HEADER_LEN_V3 {
            matches!(err, BundleError::TruncatedHeader { .. })
        } else if len < ct_end {
            matches!(err, BundleError::TruncatedCiphertext { .. })
        } else {
            matches!(err, BundleError::TruncatedSignature { .. })
        };
        assert!(ok, "length {len}: unexpected error {err}");
    }
}

/// The signature cannot be stripped (a v3 bundle turned into a v2 one),
/// moved onto another header, or replaced by someone else's.
#[test]
fn signatures_cannot_be_stripped_moved_or_replaced() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let mallory = SigningKey::generate();
    let policy = pinned(&[&team]);
    let bundle = seal_signed(&key, &sample(), 42, &team).unwrap();
    let header = Header::parse(&bundle).unwrap();

    // Stripped: version 2, no signer, no signature.
    let mut stripped = header.clone();
    stripped.version = UNSIGNED_VERSION;
    stripped.signer = None;
    let mut v2 = stripped.to_bytes();
    v2.extend_from_slice(header.ciphertext(&bundle));
    let e = open_with(&v2, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::Unsigned { .. }), "{e}");
    // Unpinned, the header no longer matches what was encrypted.
    assert!(matches!(open(&v2, &key), Err(BundleError::Tampered)));
    // Only the version changed: the lengths give it away.
    let mut relabelled = bundle.clone();
    relabelled[8..10].copy_from_slice(&UNSIGNED_VERSION.to_le_bytes());
    assert!(open_with(&relabelled, OpenWith::ImageKey(&key), &policy).is_err());

    // A signature over a different header (another bundle of the same signer).
    let other = seal_signed(&key, &sample(), 43, &team).unwrap();
    let mut spliced = bundle[..bundle.len() - SIGNATURE_LEN].to_vec();
    spliced.extend_from_slice(&other[other.len() - SIGNATURE_LEN..]);
    let e = open_with(&spliced, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");

    // Re-signed by someone else, naming themselves: not pinned; and with
    // nothing pinned, the header is no longer what was encrypted.
    let mut resigned = header.clone();
    resigned.signer = Some(mallory.signer());
    let mut forged = resigned.to_bytes();
    forged.extend_from_slice(header.ciphertext(&bundle));
    let signature = mallory.sign_bundle(&forged);
    forged.extend_from_slice(&signature);
    let e = open_with(&forged, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::UnknownSigner { .. }), "{e}");
    assert!(matches!(open(&forged, &key), Err(BundleError::Tampered)));
    // Re-signed by someone else, still naming the team: bad signature.
    let mut claimed = bundle[..bundle.len() - SIGNATURE_LEN].to_vec();
    let signature = mallory.sign_bundle(&claimed);
    claimed.extend_from_slice(&signature);
    let e = open_with(&claimed, OpenWith::ImageKey(&key), &policy).unwrap_err();
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
}

#[test]
fn only_a_signed_bundle_may_carry_a_signer_list() {
    let key = ImageKey::generate();
    let team = SigningKey::generate();
    let next = SigningKey::generate();
    let mut c = sample();
    c.manifest.signers = Some(vec![next.signer().to_string()]);
    let signed = seal_signed(&key, &c, 42, &team).unwrap();
    let opened = open_with(&signed, OpenWith::ImageKey(&key), &pinned(&[&team])).unwrap();
    assert_eq!(
        opened.contents.manifest.signers,
        Some(vec![next.signer().to_string()])
    );
    let unsigned = seal(&key, &c, 42).unwrap();
    let e = open(&unsigned, &key).unwrap_err().to_string();
    assert!(
        e.contains("only a signed bundle may change the pinned signers"),
        "{e}"
    );
    for bad in [
        vec![],
        vec!["age1xyz".to_string()],
        vec![next.signer().to_string(); 2],
    ] {
        c.manifest.signers = Some(bad.clone());
        assert!(seal_signed(&key, &c, 42, &team).is_err(), "{bad:?}");
    }
}

// ------------------------------------------------------------ sizes

/// A payload as a hostile sealer writes it: the archive of `c` without
/// any of the checks `Contents::encode` makes first.
fn encode_unchecked(c: &Contents) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("manifest.json", &serde_json::to_vec(&c.manifest).unwrap());
    for (name, v) in &c.values {
        add(&format!("secrets/{name}"), v);
    }
    let tar = tar.into_inner().unwrap();
    ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest)
}

/// 1,000 templates of one 15 MiB secret each fit the per-template limit,
/// and would unseal 15 GB into the device's memory at every boot: the
/// builder refuses to seal it, and the device refuses it when it is
/// sealed by hand, both naming the bound for everything unsealed at once.
#[test]
fn what_unseals_together_is_bounded() {
    let big = 15 * 1024 * 1024;
    let mut c = sample();
    c.values
        .insert("big".into(), Zeroizing::new(vec![b'a'; big]));
    c.manifest.secrets.push(entry("big", SecretType::File));
    for i in 0..1000 {
        let name = format!("t{i}");
        c.values
            .insert(name.clone(), Zeroizing::new(b"${SECRET:big}".to_vec()));
        let mut t = entry(&name, SecretType::MultiLine);
        t.path = format!("/run/t/{i}");
        c.manifest.templates.push(t);
    }
    let key = ImageKey::generate();
    let e = seal(&key, &c, 1).unwrap_err().to_string();
    assert!(
        e.contains("more than the 134217728 a device unseals at once"),
        "{e}"
    );
    let bundle = seal::seal_plaintext(
        &SealTo::ImageKey(&key),
        &encode_unchecked(&c),
        Stamp::at(1),
        None,
    )
    .unwrap();
    let e = open(&bundle, &key).unwrap_err().to_string();
    assert!(e.contains("a device unseals at once"), "{e}");
    // Seven fit (105 MiB of renderings and the secret): a real bound, not
    // a refusal of templates.
    c.manifest.templates.truncate(7);
    c.values
        .retain(|n, _| !n.starts_with('t') || n[1..].parse::<usize>().is_ok_and(|i| i < 7));
    c.validate(&PathPolicy::strict()).unwrap();
}

/// `render` sizes the output from the template and the values before it
/// allocates: 100,000 placeholders of a 15 MiB secret (1.5 TB) are an
/// error, not an allocation that aborts the process.
#[test]
fn render_never_allocates_an_unchecked_size() {
    let mut values = BTreeMap::new();
    values.insert(
        "big".to_string(),
        Zeroizing::new(vec![b'a'; 15 * 1024 * 1024]),
    );
    let text = "${SECRET:big}".repeat(100_000);
    let e = render(text.as_bytes(), &values).unwrap_err();
    assert!(e.contains("renders to 1572864000000 bytes"), "{e}");
}

/// A hand-sealed bundle whose path under `/run` is a look-alike of a
/// directory the system reads as code (long s, Cyrillic e) or a case
/// variant of the runtime's own names is refused when opened: on a file
/// system that folds case it would be that directory.
#[test]
fn look_alike_paths_are_refused_when_opened() {
    let key = ImageKey::generate();
    for path in [
        "/run/\u{17f}ystemd/system/x.service",
        "/run/ud\u{435}v/rules.d/00-x.rules",
        "/run/Secrets/x",
    ] {
        let mut c = sample();
        c.manifest.secrets[0].path = path.into();
        assert!(seal(&key, &c, 1).is_err(), "{path} sealed");
        let bundle = seal::seal_plaintext(
            &SealTo::ImageKey(&key),
            &encode_unchecked(&c),
            Stamp::at(1),
            None,
        )
        .unwrap();
        let e = open(&bundle, &key).unwrap_err().to_string();
        assert!(e.contains("ASCII") || e.contains("in case"), "{path}: {e}");
    }
}
