//! `identity = tpm2` with the real `systemd-creds` against a TPM 2.0
//! emulated by `swtpm` (the tests that need a TPM; the command contract
//! alone is tests/tests/tpm_identity.rs, a booted image scripts/e2e-qemu).
//! The device is a tree (`--root`), handed the emulated TPM through
//! `SEALED_FIRSTBOOT_TOOL_DIR`.

#![forbid(unsafe_code)]

use sealed_image_tests::device::{map, DeviceTree as Device};
use sealed_image_tests::hardware::{require_swtpm, Swtpm};
use sealed_image_tests::*;
use std::process::Output;

const SECRETS: &[(&str, &str)] = &[("wifi", "MARKER-wifi"), ("token", "MARKER-token")];
const SEALED: &str = "var/lib/sealed-secrets/identity.tpm2";

fn run(d: &Device, tpm: &Swtpm, args: &[&str]) -> Output {
    let mut c = d.cmd(args[0]);
    c.args(&args[1..]);
    tpm.apply(&mut c);
    let out = c.output().unwrap();
    device::assert_no_marker(&out);
    out
}

fn ok(d: &Device, tpm: &Swtpm, args: &[&str]) -> Output {
    let out = run(d, tpm, args);
    assert_success(&out, args.join(" "));
    out
}

fn device(conf: &str) -> Device {
    let d = Device::new();
    std::fs::write(d.root.join("etc/sealed-firstboot.conf"), conf).unwrap();
    d
}

#[test]
#[ignore = "needs swtpm, systemd-creds (systemd), tpm2-tools, age; scripts/test runs it"]
fn the_tpm_seals_the_identity_and_only_that_tpm_unseals_it() {
    require_swtpm();
    let tpm = Swtpm::start();
    let d = device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    let out = ok(&d, &tpm, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    let err = stderr(&out);
    // systemd 252 (bookworm) cannot decrypt a credential bound to no PCR:
    // the check after sealing catches it and PCR 17 is used.
    let version = stdout(&run_ok("systemd-creds", &["--version"]));
    if version.starts_with("systemd 252") {
        assert!(err.contains("sealed to PCR 17 instead"), "{err}");
    }
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&d, &tpm, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["identity_binding"]["kind"], "tpm2");
    if version.starts_with("systemd 252") {
        // Read from systemd's own credential header.
        assert_eq!(st["identity_binding"]["pcrs"], serde_json::json!([17]));
    }
    assert!(!d.identity_file().exists());
    assert!(files_containing(&d.root, b"AGE-SECRET-KEY-1").is_empty());
    // A real systemd credential, named, which is no age key.
    let sealed = d.root.join(SEALED);
    sealed_image_tests::hardware::assert_sealed_is_no_age_key(&d, &sealed);
    // Unsealed again at the next boot; a firmware update (PCR 7 extended)
    // changes nothing.
    std::fs::remove_dir_all(d.root.join("run")).unwrap();
    tpm.extend_pcr(7);
    ok(&d, &tpm, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    let pubkey = stdout(&ok(&d, &tpm, &["pubkey"]));

    // The same disk with another (or a cleared) TPM cannot unseal, says
    // why, and changes nothing.
    let before = std::fs::read(&sealed).unwrap();
    let other = Swtpm::start();
    let out = run(&d, &other, &["unseal"]);
    assert_exit(&out, 1, "unseal with another TPM");
    let err = stderr(&out);
    assert!(
        err.contains("this machine's TPM2 does not unseal it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&sealed).unwrap(), before);
    assert!(!d.identity_file().exists());
    // Back on its own TPM, all is well.
    assert_eq!(stdout(&ok(&d, &tpm, &["pubkey"])), pubkey);
}

#[test]
#[ignore = "needs swtpm, systemd-creds (systemd), tpm2-tools; scripts/test runs it"]
fn tpm2_pcrs_binds_to_the_pcrs_named_and_an_extend_locks_it() {
    require_swtpm();
    let tpm = Swtpm::start();
    let d = device("identity = tpm2\ntpm2_pcrs = 7\n");
    d.place_sealed(SECRETS, 1000);
    ok(&d, &tpm, &["run"]);
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&d, &tpm, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["identity_binding"]["pcrs"], serde_json::json!([7]));
    tpm.extend_pcr(7);
    let out = run(&d, &tpm, &["unseal"]);
    assert_exit(&out, 1, "unseal after PCR 7 changed");
    assert!(
        stderr(&out).contains("does not unseal it"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs swtpm, systemd-creds (systemd), tpm2-tools; scripts/test runs it"]
fn migrate_moves_a_file_identity_into_the_emulated_tpm() {
    require_swtpm();
    let tpm = Swtpm::start();
    let d = device("");
    d.place_sealed(SECRETS, 1000);
    ok(&d, &tpm, &["run"]);
    let pubkey = stdout(&ok(&d, &tpm, &["pubkey"]));
    ok(&d, &tpm, &["identity", "migrate", "--to", "tpm2"]);
    assert!(!d.identity_file().exists());
    assert_eq!(stdout(&ok(&d, &tpm, &["pubkey"])), pubkey);
    ok(&d, &tpm, &["unseal"]);
    assert_eq!(d.live(), map(SECRETS));
}
