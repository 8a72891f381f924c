//! The device binaries of `scripts/build-device-binaries`: `file` names the
//! right architecture, each is static, stripped and at most 3 MB, and each
//! runs (the foreign ones under qemu-user) and provisions a real bundle.

#![forbid(unsafe_code)]

use sealed_bundle::{self as bundle, ImageKey};
use sealed_image_tests::device::{contents, DeviceTree};
use sealed_image_tests::*;
use std::path::PathBuf;
use std::process::Command;

/// (name suffix, what `file -b` says, how to run it on this x86-64 host)
const ARCHES: [(&str, &str, Option<&str>); 3] = [
    (
        "aarch64",
        "ELF 64-bit LSB executable, ARM aarch64",
        Some("qemu-aarch64-static"),
    ),
    (
        "armv7",
        "ELF 32-bit LSB executable, ARM, EABI5",
        Some("qemu-arm-static"),
    ),
    ("x86_64", "ELF 64-bit LSB pie executable, x86-64", None),
];

fn device_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("device")
}

#[test]
#[ignore = "needs the device binaries (scripts/build-device-binaries), file, qemu-user-static; scripts/test runs it under CI=true or SEALED_DEVICE_BINARIES=1"]
fn every_architecture_is_static_small_and_runs() {
    let dir = device_dir();
    if !dir.join("SHA256SUMS").is_file() {
        missing(
            &format!("the device binaries in {}", dir.display()),
            "run scripts/build-device-binaries, or scripts/test with SEALED_DEVICE_BINARIES=1",
        );
    }
    require_tool_from("file", "file");
    require_tool_from("qemu-aarch64-static", "qemu-user-static");
    let absent: Vec<&str> = ARCHES
        .iter()
        .map(|(arch, ..)| *arch)
        .filter(|arch| !dir.join(format!("sealed-firstboot-{arch}")).is_file())
        .collect();
    if !absent.is_empty() {
        missing(
            &format!(
                "the device binaries for {} in {} (built for fewer architectures)",
                absent.join(", "),
                dir.display()
            ),
            "run scripts/build-device-binaries with no --arch",
        );
    }
    assert_checksums(&dir, "device binaries");

    for (arch, file_says, runner) in ARCHES {
        let bin = dir.join(format!("sealed-firstboot-{arch}"));
        let size = std::fs::metadata(&bin).unwrap().len();
        assert!(size <= 3_000_000, "{arch}: {size} bytes");
        let out = Command::new("file").arg("-b").arg(&bin).output().unwrap();
        let desc = String::from_utf8_lossy(&out.stdout);
        assert!(desc.starts_with(file_says), "{arch}: {desc}");
        assert!(
            desc.contains("statically linked") || desc.contains("static-pie linked"),
            "{arch}: {desc}"
        );
        assert!(
            desc.contains("stripped") && !desc.contains("not stripped"),
            "{arch}: {desc}"
        );

        // It runs and does its job: provision and unseal a bundle sealed by
        // the library the builder uses.
        let d = DeviceTree::new();
        let key = ImageKey::generate();
        d.place(
            &bundle::seal(
                &key,
                &contents(&[("token", "MARKER-devbin")]),
                1_700_000_000,
            )
            .unwrap(),
            Some(&key),
        );
        let mut cmd = match runner {
            Some(r) => {
                let mut c = Command::new(r);
                c.arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let out = cmd.arg("--root").arg(&d.root).arg("run").output().unwrap();
        assert!(
            out.status.success(),
            "{arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!contains(&out.stdout, b"MARKER-") && !contains(&out.stderr, b"MARKER-"));
        assert_eq!(
            d.live().get("token").map(String::as_str),
            Some("MARKER-devbin"),
            "{arch}"
        );
        assert!(
            !d.boot().join("bundle").exists(),
            "{arch}: bundle not wiped"
        );
    }
}
