//! The fuzzers' seed corpora (fuzz/seeds/TARGET) and regressions
//! (fuzz/regressions/TARGET) replayed through the same entry points the
//! fuzz targets call, in the normal test run: none may panic, the valid
//! seeds must be accepted (so the seeds stay meaningful), and a regression
//! named `refused-*` (an edge case the parser must reject: a truncated
//! header, a range past the image's end, an unknown field) must be refused
//! with the error named for it here. Both folders must exist and hold at
//! least one input for every target in fuzz/fuzz_targets/; a crash input
//! that scripts/fuzz finds is kept in fuzz/regressions/TARGET/.

#![forbid(unsafe_code)]

use sealed_bundle::{self as bundle, BundleError, Contents, ImageKey};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};

/// The inputs of one folder (`fuzz/seeds` or `fuzz/regressions`) for
/// `target`: the folder must exist and hold at least one file.
fn folder(dir: &str, target: &str) -> Vec<PathBuf> {
    let d = workspace().join(dir).join(target);
    let rd = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e} (every fuzz target has one)", d.display()));
    let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    v.sort();
    assert!(!v.is_empty(), "{} holds no input", d.display());
    v
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut v = folder("fuzz/seeds", target);
    v.extend(folder("fuzz/regressions", target));
    v
}

fn is_seed(p: &Path) -> bool {
    p.to_string_lossy().contains("/fuzz/seeds/")
}

/// The file name of a regression that must be refused (`refused-*`).
fn refused(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_string_lossy().into_owned();
    (!is_seed(p) && name.starts_with("refused-")).then_some(name)
}

#[test]
fn every_fuzz_target_has_seeds_and_regressions() {
    let dir = workspace().join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "bmap_parse",
            "bundle_open",
            "bundle_payload",
            "device_config",
            "devices_parse",
            "image_read",
            "recipe_parse"
        ],
        "a new fuzz target needs its replay here"
    );
    for t in &targets {
        let regressions = folder("fuzz/regressions", t);
        folder("fuzz/seeds", t);
        assert!(
            regressions.iter().any(|p| refused(p).is_some()),
            "fuzz/regressions/{t} has no refused-* case"
        );
    }
}

#[test]
fn bundle_inputs() {
    let key = ImageKey::from_bytes(&[7u8; 32]);
    let signing = bundle::SigningKey::from_file_text(
        format!("SEALED-SIGNING-KEY-1:{}", "09".repeat(32)).as_bytes(),
    )
    .unwrap();
    let pinned = bundle::Policy {
        signers: vec![signing.signer()],
        paths: bundle::PathPolicy::strict(),
    };
    let (mut opened, mut signed) = (0, 0);
    for p in inputs("bundle_open") {
        let data = std::fs::read(&p).unwrap();
        let _ = bundle::Header::parse(&data);
        let r = bundle::open(&data, &key);
        if let Some(name) = refused(&p) {
            let err = r.as_ref().err();
            let want = match name.as_str() {
                "refused-truncated-header.bundle" => {
                    matches!(err, Some(BundleError::TruncatedHeader { .. }))
                }
                "refused-cut-ciphertext.bundle" => {
                    matches!(err, Some(BundleError::TruncatedCiphertext { .. }))
                }
                other => panic!("{other}: name the error this regression must give"),
            };
            assert!(want, "{}: {err:?}", p.display());
        }
        if r.is_ok() {
            opened += 1;
        }
        if bundle::open_with(&data, bundle::OpenWith::ImageKey(&key), &pinned).is_ok() {
            signed += 1;
        }
        let _ = ImageKey::from_file_text(&data);
        let _ = bundle::SigningKey::from_file_text(&data);
    }
    assert!(
        opened >= 2,
        "the sealed seed bundles must open with the seed key"
    );
    assert_eq!(
        signed, 1,
        "the signed seed bundle must open with its signer pinned"
    );
    for p in inputs("device_config") {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let r = sealed_bundle::config::parse(&text);
        if is_seed(&p) {
            assert!(r.is_ok(), "{}: {:?}", p.display(), r.err());
        }
        if let Some(name) = refused(&p) {
            let (line, reason) = r.err().unwrap_or_else(|| panic!("{name} was accepted"));
            let (want_line, want) = match name.as_str() {
                "refused-unknown-key.conf" => (2, "no_such_key"),
                "refused-relative-allow-path.conf" => (1, "absolute"),
                other => panic!("{other}: name the error this regression must give"),
            };
            assert_eq!(line, want_line, "{name}: {reason}");
            assert!(reason.contains(want), "{name}: {reason}");
        }
    }
    for p in inputs("bundle_payload") {
        let data = std::fs::read(&p).unwrap();
        let r = Contents::decode(&data, &bundle::PathPolicy::strict());
        if is_seed(&p) {
            assert!(r.is_ok(), "{}: {:?}", p.display(), r.err());
        }
        if let Some(name) = refused(&p) {
            let err = r.err();
            let want = match name.as_str() {
                "refused-truncated.tar.zst" => matches!(err, Some(BundleError::Payload(_))),
                other => panic!("{other}: name the error this regression must give"),
            };
            assert!(want, "{name}: {err:?}");
        }
    }
}

/// A `refused-*` regression run through build-image: the exit code and a
/// piece of the message its file name stands for.
fn assert_refused_as(p: &Path, out: &std::process::Output, cases: &[(&str, i32, &str)]) {
    let Some(name) = refused(p) else { return };
    let (_, code, want) = cases
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("{name}: name the error this regression must give"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(*code), "{name}: {err}");
    assert!(err.contains(want), "{name}: {err}");
}

#[test]
fn recipe_and_devices_inputs() {
    for p in inputs("recipe_parse") {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let out = build_image_check(&text);
        if is_seed(&p) {
            // Parsed: any exit but 3 (invalid recipe) means the recipe
            // itself is fine.
            assert_ne!(
                out.status.code(),
                Some(3),
                "{}: the seed recipe must parse",
                p.display()
            );
        }
        assert_refused_as(
            &p,
            &out,
            &[
                ("refused-unknown-field.toml", 3, "unknown field `colour`"),
                ("refused-partition-without-size.toml", 3, "missing field"),
            ],
        );
    }
    for p in inputs("devices_parse") {
        let data = std::fs::read(&p).unwrap();
        let Some((&kind, rest)) = data.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(rest);
        let out = devices_build(kind, &text);
        if is_seed(&p) {
            // 2 is a devices-file (usage) error.
            assert_ne!(
                out.status.code(),
                Some(2),
                "{}: the seed devices file must parse",
                p.display()
            );
        }
        assert_refused_as(
            &p,
            &out,
            &[
                (
                    "refused-duplicate-name.csv",
                    2,
                    "already used by an earlier device",
                ),
                ("refused-unknown-field.toml", 2, "unknown field `colour`"),
            ],
        );
    }
}

#[test]
fn image_and_bmap_inputs() {
    // build-image with `args`: whatever `p` holds, it exits, never killed
    // by a signal.
    let run = |p: &Path, args: &[&std::ffi::OsStr]| {
        let out = build_image_cmd().args(args).output().unwrap();
        assert!(
            out.status.code().is_some(),
            "{}: killed by a signal",
            p.display()
        );
        out
    };
    for p in inputs("image_read") {
        // Through the real binary: inspect reads the table and the FAT.
        let out = run(&p, &["inspect".as_ref(), p.as_os_str()]);
        if is_seed(&p) {
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_refused_as(
            &p,
            &out,
            &[(
                "refused-gpt-header-without-entries.img",
                1,
                "unreadable GPT",
            )],
        );
    }
    for p in inputs("bmap_parse") {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::write(&img, b"").unwrap();
        // flash reads the bmap before anything else: a malformed one is a
        // clear refusal, never a crash.
        let target = dir.path().join("t.img");
        let out = run(
            &p,
            &[
                "flash".as_ref(),
                img.as_os_str(),
                target.as_os_str(),
                "--bmap".as_ref(),
                p.as_os_str(),
            ],
        );
        if is_seed(&p) {
            // Parsed: refused only because it is not the empty image's map.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("not the bmap of this image"),
                "{}: {err}",
                p.display()
            );
        }
        assert_refused_as(
            &p,
            &out,
            &[
                (
                    "refused-range-past-the-end.bmap",
                    7,
                    "lies past the image's last block",
                ),
                ("refused-truncated.bmap", 7, "malformed bmap"),
            ],
        );
        assert!(!target.exists(), "{}: flash wrote the target", p.display());
    }
}

fn build_image_check(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("recipe.toml");
    std::fs::write(&p, text).unwrap();
    let out = build_image_cmd()
        .arg("check")
        .arg(&p)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "check was killed by a signal");
    out
}

fn devices_build(kind: u8, text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let name = if kind & 1 == 0 {
        "devices.csv"
    } else {
        "devices.toml"
    };
    std::fs::write(dir.path().join(name), text).unwrap();
    std::fs::write(
        dir.path().join("recipe.toml"),
        "[image]\nname = \"r\"\n\n[[partition]]\nlabel = \"b\"\ntype = \"fat\"\nsize = \"8MiB\"\nsecrets = true\n\n[secrets.api_token]\ntype = \"single-line\"\nrequired = false\n\n[secrets.wifi_psk]\ntype = \"single-line\"\nrequired = false\n",
    )
    .unwrap();
    let out = build_image_cmd()
        .args([
            "build",
            "recipe.toml",
            "--bundles-only",
            "--out",
            "o",
            "--devices",
            name,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "killed by a signal");
    out
}
