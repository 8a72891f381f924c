//! The fuzzers' seed corpora and every crash input kept in
//! fuzz/regressions/TARGET/ replayed through the same entry points the
//! fuzz targets call, in the normal test run: none may panic, and the
//! valid seeds must be accepted (so the seeds stay meaningful).

use sealed_bundle::{self as bundle, Contents, ImageKey};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["fuzz/seeds", "fuzz/regressions"] {
        let d = workspace().join(dir).join(target);
        if let Ok(rd) = std::fs::read_dir(&d) {
            v.extend(rd.flatten().map(|e| e.path()));
        }
    }
    v.sort();
    v
}

fn is_seed(p: &Path) -> bool {
    p.to_string_lossy().contains("/fuzz/seeds/")
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
        if bundle::open(&data, &key).is_ok() {
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
    }
    for p in inputs("bundle_payload") {
        let data = std::fs::read(&p).unwrap();
        let r = Contents::decode(&data, &bundle::PathPolicy::strict());
        if is_seed(&p) {
            assert!(r.is_ok(), "{}: {:?}", p.display(), r.err());
        }
    }
}

#[test]
fn recipe_and_devices_inputs() {
    for p in inputs("recipe_parse") {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let r = build_image_parse_recipe(&text);
        if is_seed(&p) {
            assert!(r, "{}: the seed recipe must parse", p.display());
        }
    }
    for p in inputs("devices_parse") {
        let data = std::fs::read(&p).unwrap();
        let Some((&kind, rest)) = data.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(rest);
        let ok = devices_parse(kind, &text);
        if is_seed(&p) {
            assert!(ok, "{}: the seed devices file must parse", p.display());
        }
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
    }
    for p in inputs("bmap_parse") {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::write(&img, b"").unwrap();
        // flash reads the bmap before anything else: a malformed one is a
        // clear refusal, never a crash.
        let target = dir.path().join("t.img");
        run(
            &p,
            &[
                "flash".as_ref(),
                img.as_os_str(),
                target.as_os_str(),
                "--bmap".as_ref(),
                p.as_os_str(),
            ],
        );
        let _ = text;
    }
}

fn build_image_parse_recipe(text: &str) -> bool {
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
    // Parsed: any exit but 3 (invalid recipe) means the recipe itself is fine.
    out.status.code() != Some(3)
}

fn devices_parse(kind: u8, text: &str) -> bool {
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
    // 2 is a devices-file (usage) error.
    out.status.code() != Some(2)
}
