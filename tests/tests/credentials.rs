//! Secrets handed to systemd as credentials: `credential = "NAME"` and
//! `credential-encrypted = "NAME"` from the recipe, through `build-image
//! bundle` and the real `sealed-firstboot` on a device tree: written at
//! every unseal, updated by `apply` (with the units restarted as for any
//! changed secret), removed when their secret leaves the store; the names
//! checked by the shared rules on both sides; nothing followed. Encrypted
//! credentials use the stand-in `systemd-creds` (tests/data/stand-ins).

use sealed_image_tests::device::assert_no_marker;
use sealed_image_tests::hardware::{stand_in_dir, stand_ins_available, StandIns};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const RECIPE: &str = r#"[image]
name = "kiosk"

[secrets.db_password]
type = "single-line"
source = { file = "db.txt" }
credential = "app-db-password"
restart-units = ["app.service"]

[secrets.api_token]
type = "single-line"
source = { file = "token.txt" }
owner = "app"
mode = "0440"
credential-encrypted = "app-api-token"

[templates.app_conf]
source = "app.conf.in"
path = "/run/app/app.conf"
credential = "app.conf"
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
    hw: StandIns,
    n: std::cell::Cell<u32>,
}

impl Setup {
    fn new(recipe: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("recipe");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
        std::fs::write(dir.join("db.txt"), "MARKER-db-1").unwrap();
        std::fs::write(dir.join("token.txt"), "MARKER-token-1").unwrap();
        std::fs::write(dir.join("app.conf.in"), "password=${SECRET:db_password}\n").unwrap();
        let root = tmp.path().join("device");
        device_tree(&root, &[("app", 1200)]);
        Setup {
            _tmp: tmp,
            dir,
            root,
            hw: StandIns::new(),
            n: Default::default(),
        }
    }

    fn firstboot(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = Command::new(bin("sealed-firstboot"));
        c.arg("--root").arg(&self.root).args(args);
        self.hw.apply(&mut c);
        let out = match stdin {
            Some(data) => output_with_stdin(&mut c, data),
            None => c.stdin(Stdio::null()).output().unwrap(),
        };
        assert_no_marker(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.firstboot(args, None);
        assert_success(&out, format!("{args:?}"));
        stderr(&out)
    }

    /// A full bundle of the recipe as it is now, sealed to the device, applied.
    fn apply_recipe(&self) -> String {
        let out = self.apply_recipe_output();
        assert_success(&out, "apply");
        stderr(&out)
    }

    /// [`Setup::apply_recipe`], however it ends.
    fn apply_recipe_output(&self) -> Output {
        let recipient = stdout(&self.firstboot(&["pubkey"], None))
            .trim()
            .to_string();
        self.n.set(self.n.get() + 1);
        let out_dir = self
            .dir
            .parent()
            .unwrap()
            .join(format!("out{}", self.n.get()));
        let out = build_image_cmd()
            .arg("bundle")
            .arg(self.dir.join("recipe.toml"))
            .args([
                "--out",
                out_dir.to_str().unwrap(),
                "--recipient",
                &recipient,
            ])
            .output()
            .unwrap();
        assert_no_marker(&out);
        assert_success(&out, "build-image bundle");
        let bundle = std::fs::read(out_dir.join("kiosk.bundle")).unwrap();
        self.firstboot(&["apply", "-"], Some(&bundle))
    }

    fn credstore(&self) -> PathBuf {
        self.root.join("run/credstore")
    }

    fn encrypted(&self) -> PathBuf {
        self.root.join("etc/credstore.encrypted")
    }

    /// Decrypt an encrypted credential with the stand-in, by its name.
    fn decrypt(&self, name: &str) -> Vec<u8> {
        let mut c = command(stand_in_dir().join("systemd-creds"));
        c.arg("decrypt")
            .arg(format!("--name={name}"))
            .arg(self.encrypted().join(name))
            .arg("-");
        self.hw.apply(&mut c);
        let out = c.output().unwrap();
        assert_success(&out, format!("decrypt {name}"));
        out.stdout
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn am_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn credentials_are_written_at_every_unseal_updated_by_apply_and_removed_with_their_secret() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    let err = s.apply_recipe();
    assert!(
        err.contains("credentials in /run/credstore: app-db-password, app.conf"),
        "{err}"
    );
    assert!(
        err.contains("encrypted credentials written to /etc/credstore.encrypted: app-api-token"),
        "{err}"
    );
    // /run/credstore: the value and the rendered template, 0400, the
    // directory 0700, root (the tests run as root in CI).
    assert_eq!(read(&s.credstore().join("app-db-password")), "MARKER-db-1");
    assert_eq!(
        read(&s.credstore().join("app.conf")),
        "password=MARKER-db-1\n"
    );
    assert_eq!(perm_bits(s.credstore().join("app-db-password")), 0o400);
    assert_eq!(perm_bits(s.credstore()), 0o700);
    if am_root() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(s.credstore().join("app-db-password")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    // The secret itself is still where its path says, owned as it says.
    assert_eq!(read(&s.root.join("run/secrets/db_password")), "MARKER-db-1");
    // /etc/credstore.encrypted: ciphertext only, which systemd-creds
    // decrypts under its name; host key by default (no TPM identity).
    let enc = s.encrypted().join("app-api-token");
    assert_eq!(perm_bits(&enc), 0o400);
    assert!(files_containing(&s.encrypted(), b"MARKER-").is_empty());
    assert_eq!(s.decrypt("app-api-token"), b"MARKER-token-1");
    let encrypts: Vec<Vec<String>> =
        s.hw.creds_calls()
            .into_iter()
            .filter(|c| c[0] == "encrypt")
            .collect();
    assert_eq!(encrypts.len(), 1, "{encrypts:?}");
    for arg in ["--name=app-api-token", "--with-key=host", "-"] {
        assert!(
            encrypts[0].contains(&arg.to_string()),
            "{:?} lacks {arg}",
            encrypts[0]
        );
    }
    // status names the credentials and sees them present.
    let st: serde_json::Value =
        serde_json::from_slice(&s.firstboot(&["status", "--json"], None).stdout).unwrap();
    let db = st["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "db_password")
        .unwrap();
    assert_eq!(
        db["credential"],
        serde_json::json!({"name": "app-db-password", "present": true})
    );
    assert_eq!(st["ok"], true);

    // Every boot writes /run/credstore again (it is a ramfs: gone at reboot).
    std::fs::remove_dir_all(s.credstore()).unwrap();
    s.ok(&["run"]);
    assert_eq!(read(&s.credstore().join("app-db-password")), "MARKER-db-1");
    // The encrypted credential is not rewritten when nothing changed.
    let before = std::fs::read(&enc).unwrap();
    assert!(
        s.hw.creds_calls()
            .iter()
            .filter(|c| c[0] == "encrypt")
            .count()
            == 1
    );
    assert_eq!(std::fs::read(&enc).unwrap(), before);

    // Rotation: the credential follows the secret, the units are restarted
    // as for any changed secret.
    std::fs::write(s.dir.join("db.txt"), "MARKER-db-2").unwrap();
    std::fs::write(s.dir.join("token.txt"), "MARKER-token-2").unwrap();
    let err = s.apply_recipe();
    assert!(err.contains("changed: "), "{err}");
    assert!(
        err.contains("systemctl try-restart -- app.service"),
        "{err}"
    );
    assert_eq!(read(&s.credstore().join("app-db-password")), "MARKER-db-2");
    assert_eq!(
        read(&s.credstore().join("app.conf")),
        "password=MARKER-db-2\n"
    );
    assert_eq!(s.decrypt("app-api-token"), b"MARKER-token-2");
    assert!(files_containing(&s.root.join("run"), b"MARKER-db-1").is_empty());

    // A file sealed-firstboot did not write is never touched; the
    // credentials of secrets that left the store are removed.
    std::fs::write(s.credstore().join("someone-else"), "theirs").unwrap();
    std::fs::write(
        s.dir.join("recipe.toml"),
        "[image]\nname = \"kiosk\"\n\n[secrets.other]\ntype = \"single-line\"\nsource = { file = \"db.txt\" }\n",
    )
    .unwrap();
    let err = s.apply_recipe();
    assert!(err.contains("credentials removed"), "{err}");
    for gone in ["app-db-password", "app.conf"] {
        assert!(!s.credstore().join(gone).exists(), "{gone} stayed");
    }
    assert!(!enc.exists(), "the encrypted credential stayed");
    assert_eq!(read(&s.credstore().join("someone-else")), "theirs");
}

#[test]
fn a_planted_link_is_never_followed() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    s.apply_recipe();
    // A link in place of a credential is replaced, its target untouched.
    let target = s.root.join("etc/victim");
    std::fs::write(&target, "victim").unwrap();
    let cred = s.credstore().join("app-db-password");
    std::fs::remove_file(&cred).unwrap();
    std::os::unix::fs::symlink(&target, &cred).unwrap();
    s.ok(&["unseal"]);
    assert!(!std::fs::symlink_metadata(&cred)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(read(&cred), "MARKER-db-1");
    assert_eq!(read(&target), "victim");
    // /run/credstore itself a link: refused, nothing written through it.
    std::fs::remove_dir_all(s.credstore()).unwrap();
    let elsewhere = s.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.credstore()).unwrap();
    let out = s.firstboot(&["unseal"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("run/credstore"), "{}", stderr(&out));
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
}

fn check(recipe: &str) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("recipe.toml"), recipe).unwrap();
    std::fs::write(tmp.path().join("v.txt"), "MARKER-v").unwrap();
    let out = build_image_cmd()
        .arg("bundle")
        .arg(tmp.path().join("recipe.toml"))
        .args(["--out", tmp.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    assert_no_marker(&out);
    out
}

fn secret(extra: &str) -> String {
    format!("[image]\nname = \"x\"\n\n[secrets.v]\ntype = \"single-line\"\nsource = {{ file = \"v.txt\" }}\n{extra}\n")
}

#[test]
fn the_builder_checks_credential_names_with_the_shared_rules() {
    for (extra, said) in [
        ("credential = \"tmpfiles.extra\"", "tmpfiles.* namespace"),
        (
            "credential-encrypted = \"passwd.hashed-password.root\"",
            "passwd.* namespace",
        ),
        (
            "credential = \"SYSTEMD.extra-unit.x\"",
            "systemd.* namespace",
        ),
        ("credential = \"../x\"", "not a credential name"),
        ("credential = \".hidden\"", "not a credential name"),
        ("credential = \"\"", "not a credential name"),
        ("credential = \"a/b\"", "not a credential name"),
        ("credential = \".\"", "not a credential name"),
        ("credential-encrypted = \"..\"", "not a credential name"),
        ("credential = \"a\\u0000b\"", "not a credential name"),
        ("credential = \"a\\nb\"", "not a credential name"),
        ("credential = \"a b\"", "not a credential name"),
        ("path = \"/run/credstore/v\"", "set credential = \"NAME\""),
        (
            "path = \"/run/credstore.encrypted/v\"",
            "credstore.encrypted",
        ),
    ] {
        let out = check(&secret(extra));
        assert!(!out.status.success(), "{extra} accepted");
        let err = stderr(&out);
        assert!(err.contains(said), "{extra}: {err}");
    }
    // 250 characters: a valid file name, but not beside its temporary
    // name (.NAME.tmp-PID) on the device, which would fail to write it.
    let long = check(&secret(&format!("credential = \"{}\"", "x".repeat(250))));
    assert!(
        !long.status.success(),
        "a 250-character credential name accepted"
    );
    assert!(stderr(&long).contains("1 to 128"), "{}", stderr(&long));
    // Two secrets, one credential name.
    let two = format!(
        "{}\n[secrets.w]\ntype = \"single-line\"\nsource = {{ file = \"v.txt\" }}\ncredential = \"same\"\n",
        secret("credential = \"same\"")
    );
    assert!(stderr(&check(&two)).contains("is also set by secret"));
    // One name as a plain credential of one secret and an encrypted one of
    // another: LoadCredentialEncrypted= finds the plain one too.
    let crossed = format!(
        "{}\n[secrets.w]\ntype = \"single-line\"\nsource = {{ file = \"v.txt\" }}\ncredential-encrypted = \"same\"\n",
        secret("credential = \"same\"")
    );
    let err = stderr(&check(&crossed));
    assert!(err.contains("is also set by secret"), "{err}");
    // One secret as both kinds under one name: one value, fine.
    assert_success(
        &check(&secret(
            "credential = \"both\"\ncredential-encrypted = \"both\"",
        )),
        "one secret, both kinds, one name",
    );
    // A system credential the recipe allows explicitly.
    let allowed = format!(
        "[policy]\nallow-paths = [\"/run/credstore/tmpfiles.extra\"]\n\n{}",
        secret("credential = \"tmpfiles.extra\"")
    );
    assert_success(&check(&allowed), "an allowed system credential");
    assert_success(
        &check(&secret("credential = \"my.app.token\"")),
        "a plain name",
    );
}

#[test]
fn a_device_that_does_not_allow_a_system_credential_refuses_that_secret_alone() {
    if !stand_ins_available() {
        return;
    }
    let recipe = format!(
        "[policy]\nallow-paths = [\"/run/credstore/tmpfiles.extra\"]\n\n{}\n[secrets.w]\ntype = \"single-line\"\nsource = {{ file = \"db.txt\" }}\ncredential = \"fine\"\n",
        secret("credential = \"tmpfiles.extra\"").replace("v.txt", "db.txt")
    );
    let s = Setup::new(&recipe);
    let recipient = stdout(&s.firstboot(&["pubkey"], None)).trim().to_string();
    let out_dir = s.dir.parent().unwrap().join("o");
    let out = build_image_cmd()
        .arg("bundle")
        .arg(s.dir.join("recipe.toml"))
        .args([
            "--out",
            out_dir.to_str().unwrap(),
            "--recipient",
            &recipient,
        ])
        .output()
        .unwrap();
    assert_success(&out, "bundle");
    let bundle = std::fs::read(out_dir.join("x.bundle")).unwrap();
    // The device allows nothing: the whole bundle is refused as invalid.
    let out = s.firstboot(&["apply", "-"], Some(&bundle));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tmpfiles.* namespace"),
        "{}",
        stderr(&out)
    );
    assert!(!s.credstore().join("tmpfiles.extra").exists());
    // Allowed on the device too, it is written.
    std::fs::write(
        s.root.join("etc/sealed-firstboot.conf"),
        "allow_path = /run/credstore/tmpfiles.extra\n",
    )
    .unwrap();
    let out = s.firstboot(&["apply", "-"], Some(&bundle));
    assert_success(&out, "apply once allowed");
    assert_eq!(read(&s.credstore().join("tmpfiles.extra")), "MARKER-db-1");
    // Allowed no more: at the next unseal that credential (and its secret)
    // fails alone, the other one is written.
    std::fs::write(s.root.join("etc/sealed-firstboot.conf"), "").unwrap();
    std::fs::remove_dir_all(s.credstore()).unwrap();
    let out = s.firstboot(&["unseal"], None);
    assert_exit(&out, 4, "unseal with the credential no longer allowed");
    assert!(
        stderr(&out).contains("secret v was not unsealed"),
        "{}",
        stderr(&out)
    );
    assert!(!s.credstore().join("tmpfiles.extra").exists());
    assert_eq!(read(&s.credstore().join("fine")), "MARKER-db-1");
}

#[test]
fn with_identity_tpm2_encrypted_credentials_are_bound_to_the_tpm_too() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    std::fs::write(
        s.root.join("etc/sealed-firstboot.conf"),
        "identity = tpm2\n",
    )
    .unwrap();
    s.apply_recipe();
    let encrypts: Vec<Vec<String>> =
        s.hw.creds_calls()
            .into_iter()
            .filter(|c| c[0] == "encrypt" && c.contains(&"--name=app-api-token".to_string()))
            .collect();
    let last = encrypts.last().unwrap();
    assert!(
        last.contains(&"--with-key=host+tpm2".to_string()),
        "{last:?}"
    );
    assert!(last.contains(&"--tpm2-pcrs=17".to_string()), "{last:?}");
    assert_eq!(s.decrypt("app-api-token"), b"MARKER-token-1");
    // A cleared TPM: the encrypted credential no longer decrypts (systemd
    // would fail the unit); the plain credential is unaffected by design.
    let _ = std::fs::remove_file(s.hw.tpm.join("seed"));
    let mut c = command(stand_in_dir().join("systemd-creds"));
    c.arg("decrypt")
        .arg("--name=app-api-token")
        .arg(s.encrypted().join("app-api-token"))
        .arg("-");
    s.hw.apply(&mut c);
    assert!(!c.output().unwrap().status.success());
}

/// The README's table of the refused credential namespaces is the code's
/// list: each namespace with its reason.
#[test]
fn the_readme_lists_every_system_credential_namespace_with_its_reason() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    for (ns, why) in sealed_bundle::SYSTEM_CREDENTIALS {
        assert!(
            readme.contains(&format!("| `{ns}.*` | {why} |")),
            "README.md does not list {ns}.* with its reason"
        );
    }
}

#[test]
fn an_encrypted_credential_that_cannot_be_written_now_is_kept_and_written_next_time() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    std::fs::write(
        s.root.join("etc/sealed-firstboot.conf"),
        "credential_key = tpm2\n",
    )
    .unwrap();
    s.apply_recipe();
    let enc = s.encrypted().join("app-api-token");
    assert_eq!(s.decrypt("app-api-token"), b"MARKER-token-1");
    // The TPM is gone while a rotation arrives: that credential fails
    // alone (exit 4), the file stays (it is not "removed"), the rest is new.
    std::fs::write(s.dir.join("token.txt"), "MARKER-token-2").unwrap();
    s.hw.remove_tpm();
    let recipient = stdout(&s.firstboot(&["pubkey"], None)).trim().to_string();
    let out_dir = s.dir.parent().unwrap().join("later");
    let out = build_image_cmd()
        .arg("bundle")
        .arg(s.dir.join("recipe.toml"))
        .args([
            "--out",
            out_dir.to_str().unwrap(),
            "--recipient",
            &recipient,
        ])
        .output()
        .unwrap();
    assert_success(&out, "bundle");
    let bundle = std::fs::read(out_dir.join("kiosk.bundle")).unwrap();
    let out = s.firstboot(&["apply", "-"], Some(&bundle));
    assert_exit(&out, 4, "apply without the TPM");
    let err = stderr(&out);
    assert!(
        err.contains("secret api_token was not unsealed: cannot write the encrypted credential"),
        "{err}"
    );
    assert!(!err.contains("credentials removed"), "{err}");
    assert!(enc.exists());
    assert_eq!(
        read(&s.root.join("run/secrets/api_token")),
        "MARKER-token-2"
    );
    // The TPM is back: the next boot writes it, with the new value.
    std::fs::remove_file(s.hw.tpm.join("absent")).unwrap();
    s.ok(&["run"]);
    assert_eq!(s.decrypt("app-api-token"), b"MARKER-token-2");
}

/// A credential of the same name that sealed-firstboot did not write (an
/// administrator's own, in /run/credstore or /etc/credstore.encrypted) is
/// neither replaced nor removed when the secret leaves; the other
/// credentials are written.
#[test]
fn a_credential_sealed_firstboot_did_not_write_is_left_alone() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    std::fs::create_dir_all(s.credstore()).unwrap();
    std::fs::create_dir_all(s.encrypted()).unwrap();
    let plain = s.credstore().join("app-db-password");
    let enc = s.encrypted().join("app-api-token");
    std::fs::write(&plain, "the admin's").unwrap();
    std::fs::write(&enc, "the admin's encrypted").unwrap();
    let out = s.apply_recipe_output();
    assert!(!out.status.success(), "applied over foreign credentials");
    let err = stderr(&out);
    assert!(err.contains("was not written by sealed-firstboot"), "{err}");
    assert_eq!(read(&plain), "the admin's");
    assert_eq!(read(&enc), "the admin's encrypted");
    assert_eq!(
        read(&s.credstore().join("app.conf")),
        "password=MARKER-db-1\n"
    );
    // A later unseal still leaves them, and never records them as ours.
    let out = s.firstboot(&["unseal"], None);
    assert!(!out.status.success());
    assert_eq!(read(&plain), "the admin's");
    assert_eq!(read(&enc), "the admin's encrypted");
    // The secrets leave the store: the admin's files stay.
    std::fs::write(s.dir.join("recipe.toml"), "[image]\nname = \"kiosk\"\n\n[secrets.other]\ntype = \"single-line\"\nsource = { file = \"db.txt\" }\n").unwrap();
    s.apply_recipe();
    assert_eq!(read(&plain), "the admin's");
    assert_eq!(read(&enc), "the admin's encrypted");
    assert!(!s.credstore().join("app.conf").exists());
}

/// A secret still in the store that fails at one unseal (its owner is
/// gone) has not left the store: its credentials, plain and encrypted,
/// stay as they were (neither removed nor rewritten), and come back to
/// date once it unseals again.
#[test]
fn a_secret_that_fails_at_one_unseal_keeps_its_credentials() {
    if !stand_ins_available() {
        return;
    }
    const OWNED: &str = r#"[image]
name = "kiosk"

[secrets.api_token]
type = "single-line"
source = { file = "token.txt" }
owner = "app"
mode = "0440"
credential = "app-token"
credential-encrypted = "app-token-enc"
"#;
    let s = Setup::new(OWNED);
    s.apply_recipe();
    let plain = s.credstore().join("app-token");
    let enc = s.encrypted().join("app-token-enc");
    assert_eq!(read(&plain), "MARKER-token-1");
    let sealed_before = std::fs::read(&enc).unwrap();
    // The owner is gone: the secret fails at this unseal.
    let passwd = s.root.join("etc/passwd");
    let text = read(&passwd);
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("app:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&passwd, without).unwrap();
    let out = s.firstboot(&["unseal"], None);
    assert!(!out.status.success(), "the secret did not fail");
    assert!(stderr(&out).contains("api_token"), "{}", stderr(&out));
    assert_eq!(read(&plain), "MARKER-token-1", "the credential was removed");
    assert_eq!(std::fs::read(&enc).unwrap(), sealed_before);
    // Back: written as before.
    std::fs::write(&passwd, text).unwrap();
    s.ok(&["unseal"]);
    assert_eq!(read(&plain), "MARKER-token-1");
    assert_eq!(s.decrypt("app-token-enc"), b"MARKER-token-1");
}

/// With --root, /etc/credstore.encrypted (or /etc) a link out of the tree:
/// nothing is written through it, the credential fails and says so, the
/// other credentials are written.
#[test]
fn with_root_a_linked_encrypted_credential_directory_is_refused() {
    if !stand_ins_available() {
        return;
    }
    let s = Setup::new(RECIPE);
    let elsewhere = s.root.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, s.encrypted()).unwrap();
    let out = s.apply_recipe_output();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("credstore.encrypted"), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    assert_eq!(read(&s.credstore().join("app-db-password")), "MARKER-db-1");
}
