//! `identity = rpi-otp` through the real `sealed-firstboot` binary and the
//! stand-in `rpi-fw-crypto` (tests/data/stand-ins: main.c's arguments,
//! output, messages and exit codes, the firmware simulated with a key from
//! the environment).

#![forbid(unsafe_code)]

use sealed_image_tests::device::{map, DeviceTree as Device};
use sealed_image_tests::hardware::{require_stand_ins, StandIns};
use sealed_image_tests::*;

const SECRETS: &[(&str, &str)] = &[("wifi", "MARKER-wifi"), ("token", "MARKER-token")];
const KEY: &str = "4f1c2a9e6b7d3e5f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5";
const OTHER_KEY: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
const MARKER: &str = "var/lib/sealed-secrets/identity.rpi-otp";

fn otp_device() -> (Device, StandIns) {
    require_stand_ins();
    require_tool_from("age-keygen", "age");
    let d = Device::new();
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        "identity = rpi-otp\n",
    )
    .unwrap();
    let mut hw = StandIns::new();
    hw.set_otp_key(Some(KEY));
    (d, hw)
}

/// The recipient the derivation must give, computed apart from the agent:
/// HMAC-SHA256(key, label) and HKDF-SHA256 by Python's hmac module, the
/// X25519 public key by `age-keygen -y`.
fn expected_recipient(key_hex: &str) -> String {
    let py = r#"
import hashlib, hmac, sys
key = bytes.fromhex(sys.argv[1])
mac = hmac.new(key, b"sealed-image device identity v1", hashlib.sha256).digest()
prk = hmac.new(b"sealed-image rpi-otp", mac, hashlib.sha256).digest()
okm = hmac.new(prk, b"age X25519 identity" + b"\x01", hashlib.sha256).digest()
print(okm.hex())
"#;
    let out = command("python3")
        .args(["-c", py, key_hex])
        .output()
        .unwrap();
    assert_success(&out, "python3 derivation");
    let scalar: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&stdout(&out).trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let hrp = bech32::Hrp::parse("age-secret-key-").unwrap();
    let secret = bech32::encode::<bech32::Bech32>(hrp, &scalar)
        .unwrap()
        .to_uppercase();
    let mut keygen = command("age-keygen");
    keygen.arg("-y");
    let out = output_with_stdin(&mut keygen, format!("{secret}\n").as_bytes());
    assert_success(&out, "age-keygen -y");
    stdout(&out).trim().to_string()
}

#[test]
#[ignore = "needs python3 (the stand-ins), age-keygen (age); scripts/test runs it"]
fn the_identity_is_derived_from_the_otp_key_at_every_boot_and_never_stored() {
    let (d, hw) = otp_device();
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    let pubkey = stdout(&hw.ok(&d, &["pubkey"])).trim().to_string();
    assert_eq!(pubkey, expected_recipient(KEY));
    assert_eq!(d.state().recipient.as_deref(), Some(pubkey.as_str()));
    // Nothing secret on disk: no identity file, no sealed form; the marker
    // says what the identity is and holds its public key only.
    assert!(!d.identity_file().exists());
    assert!(!d.root.join("var/lib/sealed-secrets/identity.tpm2").exists());
    let marker = std::fs::read_to_string(d.root.join(MARKER)).unwrap();
    assert!(
        marker.contains(&format!("# public key: {pubkey}")),
        "{marker}"
    );
    assert!(
        marker.contains("sealed-image device identity v1"),
        "{marker}"
    );
    assert!(files_containing(&d.root, b"AGE-SECRET-KEY-1").is_empty());
    // rpi-fw-crypto was asked exactly as its main.c parses it; the label
    // went to its standard input (no file), the HMAC came back in hex.
    let calls = hw.otp_calls();
    assert!(!calls.is_empty());
    for c in &calls {
        assert_eq!(
            c,
            &[
                "hmac",
                "--in",
                "/proc/self/fd/0",
                "--key-id",
                "1",
                "--outform",
                "hex"
            ]
        );
    }
    // Every boot derives it again.
    let before = calls.len();
    hw.ok(&d, &["run"]);
    assert!(hw.otp_calls().len() > before);
    assert_eq!(d.live(), map(SECRETS));
    let st: serde_json::Value =
        serde_json::from_slice(&hw.ok(&d, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["identity_binding"]["kind"], "rpi-otp");
    let err = stderr(&hw.ok(&d, &["pubkey"]));
    assert!(
        err.contains("derived at every boot from the Raspberry Pi OTP device key"),
        "{err}"
    );
}

#[test]
#[ignore = "needs python3 (the stand-ins), age-keygen (age); scripts/test runs it"]
fn another_pi_or_a_changed_otp_key_is_named_and_nothing_is_replaced() {
    let (d, mut hw) = otp_device();
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    let marker = std::fs::read(d.root.join(MARKER)).unwrap();
    hw.set_otp_key(Some(OTHER_KEY));
    let out = hw.run(&d, &["unseal"]);
    assert_exit(&out, 1, "unseal on another Pi");
    let err = stderr(&out);
    assert!(err.contains("provisioned on another Raspberry Pi"), "{err}");
    assert!(err.contains(&expected_recipient(OTHER_KEY)), "{err}");
    assert_eq!(std::fs::read(d.root.join(MARKER)).unwrap(), marker);
}

#[test]
#[ignore = "needs python3 (the stand-ins), age-keygen (age); scripts/test runs it"]
fn an_unprovisioned_key_or_no_firmware_service_fails_clearly_and_keeps_the_bundle() {
    for case in ["no key", "no vcio"] {
        let (d, mut hw) = otp_device();
        match case {
            "no key" => hw.set_otp_key(None),
            _ => hw.set_no_vcio(),
        }
        d.place_sealed(SECRETS, 1000);
        let out = hw.run(&d, &["run"]);
        assert_exit(&out, 1, case);
        let err = stderr(&out);
        // What rpi-fw-crypto says, and its exit code (the negated firmware
        // error; 1 when the mailbox cannot even be opened).
        let (said, code) = match case {
            "no key" => ("Key not set (all zeros)", "exit 250"),
            _ => ("Failed to open /dev/vcio_crypto", "exit 1"),
        };
        assert!(err.contains(said), "{case}: {err}");
        assert!(err.contains(code), "{case}: {err}");
        assert!(
            err.contains("the bundle and its key are kept"),
            "{case}: {err}"
        );
        if case == "no key" {
            assert!(err.contains("rpi-otp-private-key"), "{err}");
        }
        assert!(d.boot().join("bundle").exists() && d.boot().join("image.key").exists());
        assert!(!d.root.join(MARKER).exists() && !d.identity_file().exists());
    }
}

#[test]
#[ignore = "needs python3 (the stand-ins), age-keygen (age); scripts/test runs it"]
fn with_root_and_no_tool_directory_the_hosts_otp_is_never_used() {
    let (d, _hw) = otp_device();
    let mut c = d.cmd("pubkey");
    c.env_remove(sealed_image_tests::hardware::TOOL_DIR_ENV);
    let out = c.output().unwrap();
    assert_exit(&out, 1, "pubkey --root without a tool directory");
    assert!(stderr(&out).contains("does not use this machine's Raspberry Pi OTP key"));
    assert!(!d.root.join(MARKER).exists());
}
