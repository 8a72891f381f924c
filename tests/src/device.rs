//! A device root for the device-side tests: a temp tree with passwd/group
//! and `/boot/efi`, driven through the real `sealed-firstboot` binary.

use crate::{assert_success, bin, device_tree};
use sealed_bundle::{Contents, ImageKey, Manifest, SecretEntry, SecretType};
use sealed_firstboot::store::{State, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use zeroize::Zeroizing;

/// Bundle contents of single-line secrets at `/run/secrets/NAME`, root-owned.
pub fn contents(secrets: &[(&str, &str)]) -> Contents {
    contents_owned(
        &secrets
            .iter()
            .map(|(n, v)| (*n, *v, "root"))
            .collect::<Vec<_>>(),
    )
}

/// [`contents`] with an owner per secret: `(name, value, owner)`.
pub fn contents_owned(secrets: &[(&str, &str, &str)]) -> Contents {
    let mut values = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, value, owner) in secrets {
        values.insert(name.to_string(), Zeroizing::new(value.as_bytes().to_vec()));
        entries.push(SecretEntry {
            name: name.to_string(),
            kind: SecretType::SingleLine,
            path: format!("/run/secrets/{name}"),
            owner: owner.to_string(),
            group: "root".into(),
            mode: 0o400,
            description: None,
            restart_units: Vec::new(),
            reload_units: Vec::new(),
            credential: None,
            credential_encrypted: None,
        });
    }
    Contents {
        manifest: Manifest {
            secrets: entries,
            ..Default::default()
        },
        values,
    }
}

/// `name → value` pairs as a map, to compare with [`DeviceTree::store`].
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Fails when `MARKER-` (the prefix of every test value) was printed.
pub fn assert_no_marker(out: &Output) {
    crate::assert_not_printed(out, b"MARKER-", "a secret value");
}

/// The test SSH host key (`firstboot/tests/data`); its public key is
/// beside it, with `.pub`.
pub fn test_host_key() -> PathBuf {
    crate::workspace().join("firstboot/tests/data/ssh_host_ed25519_key")
}

/// Install `key` as the SSH host key of the device at `root`.
pub fn install_host_key(root: &Path, key: &Path) {
    let dest = root.join("etc/ssh/ssh_host_ed25519_key");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(key, dest).unwrap();
}

/// The device at `root` derives its identity from its SSH host key, the
/// [`test_host_key`] (`identity = ssh-host-key`).
pub fn host_key_identity(root: &Path) {
    install_host_key(root, &test_host_key());
    let conf = root.join("etc/sealed-firstboot.conf");
    std::fs::write(conf, "identity = ssh-host-key\n").unwrap();
}

pub struct DeviceTree {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Default for DeviceTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceTree {
    pub fn new() -> DeviceTree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        device_tree(&root, &[]);
        std::fs::create_dir_all(root.join("boot/efi")).unwrap();
        DeviceTree { _tmp: tmp, root }
    }

    /// `sealed-secrets/` on the boot partition.
    pub fn boot(&self) -> PathBuf {
        self.root.join("boot/efi/sealed-secrets")
    }

    /// Put a bundle (and its key, if any) on the boot partition.
    pub fn place(&self, bundle: &[u8], key: Option<&ImageKey>) {
        std::fs::create_dir_all(self.boot()).unwrap();
        std::fs::write(self.boot().join("bundle"), bundle).unwrap();
        if let Some(k) = key {
            std::fs::write(self.boot().join("image.key"), k.to_file_text().as_bytes()).unwrap();
        }
    }

    /// Seal `secrets` (created at `time`) to a fresh image key, and place
    /// the bundle and the key; returns both.
    pub fn place_sealed(&self, secrets: &[(&str, &str)], time: u64) -> (ImageKey, Vec<u8>) {
        let key = ImageKey::generate();
        let bundle = sealed_bundle::seal(&key, &contents(secrets), time).unwrap();
        self.place(&bundle, Some(&key));
        (key, bundle)
    }

    /// Seal `secrets` (bundle version `version`) to `recipient`, place the
    /// bundle with no key, and `run`: the live secrets are then `secrets`.
    pub fn run_sealed_to(
        &self,
        recipient: &age::x25519::Recipient,
        secrets: &[(&str, &str)],
        version: u64,
    ) {
        let bundle = sealed_bundle::seal_with(
            sealed_bundle::SealTo::Recipient(recipient),
            &contents(secrets),
            version,
        )
        .unwrap();
        self.place(&bundle, None);
        self.ok("run");
        assert_eq!(self.live(), map(secrets));
    }

    /// `sealed-firstboot --root ROOT CMD`, not started yet.
    pub fn cmd(&self, cmd: &str) -> Command {
        let mut c = Command::new(bin("sealed-firstboot"));
        c.arg("--root").arg(&self.root).arg(cmd);
        c.env_remove("SEALED_FIRSTBOOT_FAILPOINT");
        c
    }

    /// Run CMD, with a fail point (`SEALED_FIRSTBOOT_FAILPOINT`) if given.
    pub fn firstboot(&self, cmd: &str, failpoint: Option<&str>) -> Output {
        let mut c = self.cmd(cmd);
        if let Some(f) = failpoint {
            c.env("SEALED_FIRSTBOOT_FAILPOINT", f);
        }
        c.output().unwrap()
    }

    /// Run CMD; it must succeed and print no value. Returns its stdout, trimmed.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.firstboot(cmd, None);
        assert_success(&out, cmd);
        assert_no_marker(&out);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Run CMD; it must exit with `code`. Returns its stderr.
    pub fn fails(&self, cmd: &str, code: i32) -> String {
        let out = self.firstboot(cmd, None);
        crate::assert_exit(&out, code, cmd);
        crate::stderr(&out)
    }

    /// The names in the state directory `/var/lib/sealed-secrets`.
    pub fn state_dir_names(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("var/lib/sealed-secrets"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    pub fn identity_file(&self) -> PathBuf {
        self.root.join("var/lib/sealed-secrets/identity")
    }

    /// The committed store, decrypted with the persisted identity.
    pub fn store(&self) -> BTreeMap<String, String> {
        let current = Store::new(&self.root)
            .current()
            .unwrap()
            .expect("a committed store");
        let id = sealed_firstboot::identity::load(&self.root)
            .unwrap()
            .expect("a persisted identity");
        current
            .decrypt_all(&id.identity)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.to_vec()).unwrap()))
            .collect()
    }

    /// The store decrypted with the `age` CLI and the identity file.
    pub fn store_with_age_cli(&self) -> BTreeMap<String, String> {
        let dir = self.root.join("var/lib/sealed-secrets/current/secrets");
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let out = crate::command("age")
                .arg("-d")
                .arg("-i")
                .arg(self.identity_file())
                .arg(e.path())
                .output()
                .unwrap();
            assert_success(&out, format!("age -d {name}"));
            m.insert(
                name.trim_end_matches(".age").to_owned(),
                String::from_utf8(out.stdout).unwrap(),
            );
        }
        m
    }

    pub fn state(&self) -> State {
        Store::new(&self.root).current().unwrap().unwrap().state
    }

    /// The regular files directly in `/run/secrets`, name → text.
    pub fn live(&self) -> BTreeMap<String, String> {
        let dir = self.root.join("run/secrets");
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                m.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                );
            }
        }
        m
    }

    /// Install `key` as the SSH host key `/etc/ssh/ssh_host_ed25519_key`.
    pub fn install_host_key(&self, key: &Path) {
        install_host_key(&self.root, key);
    }
}
