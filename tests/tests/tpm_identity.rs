//! `identity = tpm2` and `identity migrate --to tpm2` through the real
//! `sealed-firstboot` binary and the stand-in `systemd-creds`
//! (tests/data/stand-ins: the command contract of systemd 252, a directory
//! as the TPM). The real systemd-creds against an emulated TPM is
//! tests/tests/tpm_swtpm.rs; a booted image with swtpm, scripts/e2e-qemu.

#![forbid(unsafe_code)]

use sealed_image_tests::device::{map, DeviceTree as Device};
use sealed_image_tests::hardware::{require_stand_ins, StandIns};
use sealed_image_tests::*;
use std::path::Path;

const SECRETS: &[(&str, &str)] = &[("wifi", "MARKER-wifi"), ("token", "MARKER-token")];
const SEALED: &str = "var/lib/sealed-secrets/identity.tpm2";

fn tpm_device(conf: &str) -> (Device, StandIns) {
    require_stand_ins();
    let d = Device::new();
    std::fs::write(d.root.join("etc/sealed-firstboot.conf"), conf).unwrap();
    (d, StandIns::new())
}

/// No identity key in clear anywhere in the tree.
fn assert_no_plain_key(root: &Path) {
    let found = files_containing(root, b"AGE-SECRET-KEY-1");
    assert!(found.is_empty(), "an identity in clear: {found:?}");
}

fn status_json(d: &Device, hw: &StandIns) -> serde_json::Value {
    let out = hw.run(d, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs python3 (the stand-ins), age; scripts/test runs it"]
fn a_new_identity_is_stored_only_sealed_and_unsealed_at_every_boot() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    let out = hw.ok(&d, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    // Only the sealed form, 0400, which is no age key.
    assert!(!d.identity_file().exists());
    let sealed = d.root.join(SEALED);
    assert_eq!(perm_bits(&sealed), 0o400);
    assert_no_plain_key(&d.root);
    hardware::assert_sealed_is_no_age_key(&d, &sealed);
    // What systemd-creds was asked: the TPM alone, the name bound in, PCRs
    // explicit (systemd's default would be PCR 7), secrets through pipes.
    let calls = hw.creds_calls();
    let first = &calls[0];
    for arg in [
        "encrypt",
        "--with-key=tpm2",
        "--name=sealed-firstboot.identity",
        "--tpm2-pcrs=",
    ] {
        assert!(first.contains(&arg.to_string()), "{first:?} lacks {arg}");
    }
    assert_eq!(&first[first.len() - 2..], ["-", "-"]);
    assert!(calls
        .iter()
        .all(|c| c.iter().all(|a| !a.contains("AGE-SECRET"))));
    // systemd 252 cannot decrypt a credential bound to no PCR: the sealing
    // was checked, and PCR 17 used instead (and said so).
    let err = stderr(&out);
    assert!(err.contains("sealed to PCR 17 instead"), "{err}");
    assert!(err.contains("sealed by this machine's TPM2"), "{err}");
    assert!(calls
        .iter()
        .any(|c| c.contains(&"--tpm2-pcrs=17".to_string())));
    let st = status_json(&d, &hw);
    assert_eq!(st["identity_binding"]["kind"], "tpm2");
    assert_eq!(st["identity_binding"]["pcrs"], serde_json::json!([17]));
    // The next boot unseals it again (decrypt), the same identity.
    let before = hw.creds_calls().len();
    let pubkey = stdout(&hw.ok(&d, &["pubkey"]));
    hw.ok(&d, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    let after = hw.creds_calls();
    assert!(after[before..].iter().any(|c| c[0] == "decrypt"));
    assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey);
    assert_eq!(d.state().recipient.as_deref(), Some(pubkey.trim()));
    let out = hw.ok(&d, &["pubkey"]);
    assert!(stderr(&out).contains("sealed by this machine's TPM2"));
    let human = stdout(&hw.ok(&d, &["status"]));
    assert!(human.contains("identity binding: tpm2"), "{human}");
    assert!(human.contains("PCRs: 17"), "{human}");
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn where_systemd_decrypts_an_unbound_credential_no_pcr_is_bound() {
    let (d, mut hw) = tpm_device("identity = tpm2\n");
    hw.set_empty_pcrs_work();
    d.place_sealed(SECRETS, 1000);
    let out = hw.ok(&d, &["run"]);
    assert!(!stderr(&out).contains("PCR 17"), "{}", stderr(&out));
    assert_eq!(
        status_json(&d, &hw)["identity_binding"]["pcrs"],
        serde_json::json!([])
    );
    // No PCR: a firmware update (PCR 7 changes) changes nothing.
    hw.set_pcr(7, &"12".repeat(32));
    hw.ok(&d, &["unseal"]);
    assert_eq!(d.live(), map(SECRETS));
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn tpm2_pcrs_binds_to_those_pcrs_and_a_changed_one_locks_the_identity() {
    let (d, hw) = tpm_device("identity = tpm2\ntpm2_pcrs = 7+14\n");
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    let calls = hw.creds_calls();
    assert!(
        calls[0].contains(&"--tpm2-pcrs=7+14".to_string()),
        "{:?}",
        calls[0]
    );
    assert_eq!(
        status_json(&d, &hw)["identity_binding"]["pcrs"],
        serde_json::json!([7, 14])
    );
    let sealed = std::fs::read(d.root.join(SEALED)).unwrap();
    hw.set_pcr(7, &"12".repeat(32));
    let out = hw.run(&d, &["unseal"]);
    assert_exit(&out, 1, "unseal with PCR 7 changed");
    let err = stderr(&out);
    assert!(err.contains("does not unseal it"), "{err}");
    // Nothing replaced, nothing created: the identity is only locked.
    assert_eq!(std::fs::read(d.root.join(SEALED)).unwrap(), sealed);
    assert!(!d.identity_file().exists());
    // The default binding (PCR 17 on systemd 252) survives the same change.
    let (d2, hw2) = tpm_device("identity = tpm2\n");
    d2.place_sealed(SECRETS, 1000);
    hw2.ok(&d2, &["run"]);
    hw2.set_pcr(7, &"12".repeat(32));
    hw2.ok(&d2, &["unseal"]);
    assert_eq!(d2.live(), map(SECRETS));
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn without_a_usable_tpm_provisioning_fails_clearly_and_keeps_the_bundle() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    hw.remove_tpm();
    d.place_sealed(SECRETS, 1000);
    let out = hw.run(&d, &["run"]);
    assert_exit(&out, 1, "run without a TPM");
    device::assert_no_marker(&out);
    let err = stderr(&out);
    assert!(err.contains("No TPM2 device found"), "{err}");
    assert!(err.contains("the bundle and its key are kept"), "{err}");
    assert!(err.contains("systemd-creds has-tpm2"), "{err}");
    assert!(d.boot().join("bundle").exists() && d.boot().join("image.key").exists());
    assert!(!d.identity_file().exists() && !d.root.join(SEALED).exists());
    assert!(!d.root.join("var/lib/sealed-secrets/current").exists());
    // Nor does pubkey create a file identity instead.
    assert_exit(&hw.run(&d, &["pubkey"]), 1, "pubkey without a TPM");
    assert!(!d.identity_file().exists());
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn a_cleared_tpm_cannot_unseal_and_says_why_and_nothing_is_replaced() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    let sealed = std::fs::read(d.root.join(SEALED)).unwrap();
    hw.clear_tpm();
    for cmd in ["run", "unseal", "pubkey"] {
        let out = hw.run(&d, &[cmd]);
        assert_exit(&out, 1, format!("{cmd} with a cleared TPM"));
        device::assert_no_marker(&out);
        let err = stderr(&out);
        assert!(
            err.contains("this machine's TPM2 does not unseal it"),
            "{cmd}: {err}"
        );
        assert!(err.contains("Was the TPM cleared"), "{cmd}: {err}");
        assert!(
            err.contains("A device whose TPM was cleared"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(std::fs::read(d.root.join(SEALED)).unwrap(), sealed);
    assert!(!d.identity_file().exists());
    // Recovery as the README says: the unusable identity moved away, a
    // full bundle under an image key; a new identity is sealed.
    std::fs::rename(d.root.join(SEALED), d.root.join("identity.tpm2.old")).unwrap();
    let fresh: &[(&str, &str)] = &[("wifi", "MARKER-new-wifi")];
    d.place_sealed(fresh, 2000);
    hw.ok(&d, &["run"]);
    assert_eq!(d.live(), map(fresh));
    assert!(d.root.join(SEALED).exists());
}

/// The sealed identity replaced by a valid identity of someone else's
/// choosing, encrypted by the stand-in `systemd-creds encrypt` with `how`
/// (name and key options); its public key.
fn replace_sealed_identity(d: &Device, hw: &StandIns, how: &[&str]) -> age::x25519::Recipient {
    let mut enc = command(stand_in("systemd-creds"));
    enc.arg("encrypt").args(how).args(["-", "-"]);
    hw.apply(&mut enc);
    let theirs = age::x25519::Identity::generate();
    use age::secrecy::ExposeSecret;
    let text = format!("{}\n", theirs.to_string().expose_secret());
    let forged = output_with_stdin(&mut enc, text.as_bytes());
    assert_success(&forged, format!("stand-in encrypt {}", how.join(" ")));
    std::fs::remove_file(d.root.join(SEALED)).unwrap();
    std::fs::write(d.root.join(SEALED), &forged.stdout).unwrap();
    theirs.to_public()
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn a_credential_of_another_name_is_not_taken_for_the_identity() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    // Sealed by the same TPM, under another name (as any encrypted
    // credential of this machine is).
    replace_sealed_identity(
        &d,
        &hw,
        &["--name=app-token", "--with-key=tpm2", "--tpm2-pcrs=17"],
    );
    let out = hw.run(&d, &["unseal"]);
    assert_exit(&out, 1, "unseal with a swapped credential");
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
}

fn stand_in(name: &str) -> std::path::PathBuf {
    sealed_image_tests::hardware::stand_in_dir().join(name)
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn with_root_and_no_tool_directory_the_hosts_tpm_is_never_used() {
    let (d, _hw) = tpm_device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    let mut c = d.cmd("run");
    c.env_remove(sealed_image_tests::hardware::TOOL_DIR_ENV);
    let out = c.output().unwrap();
    assert_exit(&out, 1, "run --root without a tool directory");
    let err = stderr(&out);
    assert!(err.contains("does not use this machine's TPM2"), "{err}");
    assert!(d.boot().join("bundle").exists());
    assert!(!d.root.join(SEALED).exists() && !d.identity_file().exists());
}

/// A device provisioned with a file identity, then configured for tpm2.
fn file_device() -> (Device, StandIns, String) {
    let (d, hw) = tpm_device("");
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    assert!(d.identity_file().exists());
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        "identity = tpm2\n",
    )
    .unwrap();
    let human = stdout(&hw.ok(&d, &["status"]));
    assert!(human.contains("identity migrate --to tpm2"), "{human}");
    let pubkey = stdout(&hw.ok(&d, &["pubkey"]));
    (d, hw, pubkey)
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn migrate_moves_a_file_identity_into_the_tpm_keeping_the_key() {
    let (d, hw, pubkey) = file_device();
    let out = hw.ok(&d, &["identity", "migrate", "--to", "tpm2"]);
    let err = stderr(&out);
    assert!(
        err.contains("is now sealed by this machine's TPM2"),
        "{err}"
    );
    assert!(!d.identity_file().exists());
    assert!(!d.root.join("var/lib/sealed-secrets/identity.wipe").exists());
    assert_no_plain_key(&d.root);
    assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey);
    hw.ok(&d, &["unseal"]);
    assert_eq!(d.live(), map(SECRETS));
    assert_eq!(status_json(&d, &hw)["identity_binding"]["kind"], "tpm2");
    let again = hw.ok(&d, &["identity", "migrate", "--to", "tpm2"]);
    assert!(
        stderr(&again).contains("already is sealed"),
        "{}",
        stderr(&again)
    );
    // Other targets are refused as usage errors.
    let out = hw.run(&d, &["identity", "migrate", "--to", "rpi-otp"]);
    assert_exit(&out, 2, "migrate --to rpi-otp");
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn migrate_is_crash_safe_with_a_usable_identity_at_every_moment() {
    for fp in [
        "migrate-sealed-written",
        "migrate-file-renamed",
        "shred-partial",
    ] {
        let (d, hw, pubkey) = file_device();
        let mut c = d.cmd("identity");
        c.args(["migrate", "--to", "tpm2"])
            .env("SEALED_FIRSTBOOT_FAILPOINT", fp);
        hw.apply(&mut c);
        assert_exit(
            &c.output().unwrap(),
            86,
            format!("{fp}: failpoint not reached"),
        );
        // Right after the crash: the same identity opens the store.
        assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey, "{fp}");
        hw.ok(&d, &["unseal"]);
        assert_eq!(d.live(), map(SECRETS), "{fp}");
        // The rerun finishes the job.
        hw.ok(&d, &["identity", "migrate", "--to", "tpm2"]);
        assert!(!d.identity_file().exists(), "{fp}");
        assert_no_plain_key(&d.root);
        assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey, "{fp}");
        hw.ok(&d, &["unseal"]);
        assert_eq!(d.live(), map(SECRETS), "{fp}");
    }
}

#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn migrate_without_a_tpm_keeps_the_file_identity() {
    let (d, hw, pubkey) = file_device();
    hw.remove_tpm();
    let out = hw.run(&d, &["identity", "migrate", "--to", "tpm2"]);
    assert_exit(&out, 1, "migrate without a TPM");
    assert!(
        stderr(&out).contains("No TPM2 device found"),
        "{}",
        stderr(&out)
    );
    assert!(d.identity_file().exists());
    assert!(!d.root.join(SEALED).exists());
    assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey);
}

/// An identity derived from the SSH host key: that key stays on the disk in
/// clear, so sealing its identity would protect nothing. Refused, the file
/// kept; once the host key is replaced the migration goes ahead.
#[test]
#[ignore = "needs python3 (the stand-ins), ssh-keygen (openssh-client); scripts/test runs it"]
fn migrate_refuses_an_identity_the_ssh_host_key_on_the_disk_still_derives() {
    require_tools_from(&[("ssh-keygen", "openssh-client")]);
    let (d, hw) = tpm_device("identity = ssh-host-key\n");
    let key = d.root.join("etc/ssh/ssh_host_ed25519_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let gen = command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success());
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    assert!(d.identity_file().exists());
    let pubkey = stdout(&hw.ok(&d, &["pubkey"]));
    let out = hw.run(&d, &["identity", "migrate", "--to", "tpm2"]);
    assert_exit(&out, 1, "migrate of an SSH-derived identity");
    let err = stderr(&out);
    assert!(err.contains("derived from the SSH host key"), "{err}");
    assert!(d.identity_file().exists());
    assert!(!d.root.join(SEALED).exists());
    // The host key replaced: the old identity no longer has a clear copy.
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(key.with_extension("pub")).unwrap();
    let out = hw.ok(&d, &["identity", "migrate", "--to", "tpm2"]);
    assert!(stderr(&out).contains("no secure erase"), "{}", stderr(&out));
    assert!(!d.identity_file().exists());
    assert_eq!(stdout(&hw.ok(&d, &["pubkey"])), pubkey);
}

/// A machine that did a dynamic launch (Intel TXT/tboot): PCR 17 holds the
/// launch's measurement, not its reset value, so the systemd 252 fallback
/// would bind the identity to that launch (an SINIT or tboot update would
/// lock it out). Refused, the bundle kept; named explicitly, it is sealed.
#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn the_pcr_17_fallback_is_refused_where_a_dynamic_launch_measured_it() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    hw.set_pcr(17, &"5a".repeat(32));
    d.place_sealed(SECRETS, 1000);
    let out = hw.run(&d, &["run"]);
    assert_exit(&out, 1, "run on a TXT machine with no PCR asked for");
    device::assert_no_marker(&out);
    let err = stderr(&out);
    assert!(err.contains("dynamic launch"), "{err}");
    assert!(err.contains("tpm2_pcrs = 17"), "{err}");
    assert!(d.boot().join("bundle").exists() && d.boot().join("image.key").exists());
    assert!(!d.identity_file().exists() && !d.root.join(SEALED).exists());
    // Asked for explicitly, the binding to the launch is the user's choice.
    std::fs::write(
        d.root.join("etc/sealed-firstboot.conf"),
        "identity = tpm2\ntpm2_pcrs = 17\n",
    )
    .unwrap();
    hw.ok(&d, &["run"]);
    assert_eq!(d.live(), map(SECRETS));
    assert_eq!(
        status_json(&d, &hw)["identity_binding"]["pcrs"],
        serde_json::json!([17])
    );
}

/// Whoever can write the disk can encrypt an identity of their choosing
/// with the host key (/var/lib/systemd/credential.secret, on the same disk)
/// under the identity's name: systemd-creds decrypts any key kind, so the
/// kind in the authenticated header is checked: only a TPM2 one is used.
#[test]
#[ignore = "needs python3 (the stand-ins); scripts/test runs it"]
fn a_sealed_identity_under_the_host_key_alone_is_refused() {
    let (d, hw) = tpm_device("identity = tpm2\n");
    d.place_sealed(SECRETS, 1000);
    hw.ok(&d, &["run"]);
    let theirs = replace_sealed_identity(
        &d,
        &hw,
        &["--name=sealed-firstboot.identity", "--with-key=host"],
    );
    for cmd in ["unseal", "pubkey"] {
        let out = hw.run(&d, &[cmd]);
        assert_exit(&out, 1, format!("{cmd} with a host-key identity"));
        let err = stderr(&out);
        assert!(err.contains("not sealed by a TPM2"), "{err}");
        assert!(!stdout(&out).contains(&theirs.to_string()));
    }
}
