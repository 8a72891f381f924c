//! The hardware tools for the identity and credential tests:
//!
//! - [`StandIns`]: `tests/data/stand-ins/` (`systemd-creds`, `rpi-fw-crypto`),
//!   which keep the command contract of the real tools (arguments, output
//!   formats, messages, exit codes; see each script), with a directory as
//!   the TPM and an environment variable as the OTP key. For the tests
//!   that need only the contract.
//! - [`Swtpm`]: the real `systemd-creds` against a TPM emulated by `swtpm`,
//!   for the tests that need a TPM.
//!
//! Either is handed to `sealed-firstboot --root` through
//! `SEALED_FIRSTBOOT_TOOL_DIR` (without it, `--root` refuses to use this
//! machine's TPM or OTP).

use crate::device::DeviceTree;
use crate::workspace;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const TOOL_DIR_ENV: &str = sealed_firstboot::identity::tool::TOOL_DIR_ENV;

/// Where the stand-ins are.
pub fn stand_in_dir() -> PathBuf {
    workspace().join("tests/data/stand-ins")
}

/// The stand-ins run with python3 (Debian's); a test fails without it (the
/// tests that use the stand-ins are `#[ignore]`d for it).
pub fn require_stand_ins() {
    crate::require_tool_from("python3", "python3");
}

/// A stand-in TPM (a directory) and OTP key for one test.
pub struct StandIns {
    _tmp: tempfile::TempDir,
    pub tpm: PathBuf,
    pub otp_log: PathBuf,
    otp_key: Option<String>,
    no_vcio: bool,
    empty_pcrs_work: bool,
}

impl Default for StandIns {
    fn default() -> Self {
        Self::new()
    }
}

impl StandIns {
    pub fn new() -> StandIns {
        let tmp = tempfile::tempdir().unwrap();
        let tpm = tmp.path().join("tpm");
        std::fs::create_dir_all(&tpm).unwrap();
        let otp_log = tmp.path().join("otp.log");
        StandIns {
            _tmp: tmp,
            tpm,
            otp_log,
            otp_key: None,
            no_vcio: false,
            empty_pcrs_work: false,
        }
    }

    /// The OTP device key (64 hex digits), or none provisioned.
    pub fn set_otp_key(&mut self, hex: Option<&str>) {
        self.otp_key = hex.map(str::to_owned);
    }

    /// No `/dev/vcio`: not a Raspberry Pi.
    pub fn set_no_vcio(&mut self) {
        self.no_vcio = true;
    }

    /// Behave like a systemd later than 252, which decrypts a credential
    /// bound to no PCR.
    pub fn set_empty_pcrs_work(&mut self) {
        self.empty_pcrs_work = true;
    }

    /// `sealed-firstboot ARGS` on the device tree `d`, with these stand-ins.
    pub fn run(&self, d: &DeviceTree, args: &[&str]) -> Output {
        let mut c = d.cmd(args[0]);
        c.args(&args[1..]);
        self.apply(&mut c);
        c.output().unwrap()
    }

    /// [`StandIns::run`]: it must succeed and print no marker value.
    pub fn ok(&self, d: &DeviceTree, args: &[&str]) -> Output {
        let out = self.run(d, args);
        crate::assert_success(&out, args.join(" "));
        crate::device::assert_no_marker(&out);
        out
    }

    /// Set the environment of `c` to use these stand-ins.
    pub fn apply<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env(TOOL_DIR_ENV, stand_in_dir())
            .env("STANDIN_TPM_DIR", &self.tpm)
            .env("STANDIN_OTP_LOG", &self.otp_log);
        match &self.otp_key {
            Some(k) => c.env("STANDIN_OTP_KEY", k),
            None => c.env_remove("STANDIN_OTP_KEY"),
        };
        if self.no_vcio {
            c.env("STANDIN_NO_VCIO", "1");
        } else {
            c.env_remove("STANDIN_NO_VCIO");
        }
        if self.empty_pcrs_work {
            c.env("STANDIN_EMPTY_PCRS_WORK", "1");
        } else {
            c.env_remove("STANDIN_EMPTY_PCRS_WORK");
        }
        c
    }

    /// The TPM is cleared (or the disk is in another machine): its seed
    /// is new.
    pub fn clear_tpm(&self) {
        for f in ["seed", "seed-host"] {
            let _ = std::fs::remove_file(self.tpm.join(f));
        }
    }

    /// There is no TPM.
    pub fn remove_tpm(&self) {
        std::fs::write(self.tpm.join("absent"), "").unwrap();
    }

    /// Set PCR `n` to `hex` (as an extend would change it).
    pub fn set_pcr(&self, n: u8, hex: &str) {
        let path = self.tpm.join("pcrs");
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with(&format!("{n}=")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{n}={hex}"));
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    /// The arguments of every systemd-creds call so far.
    pub fn creds_calls(&self) -> Vec<Vec<String>> {
        calls(&self.tpm.join("calls.log"))
    }

    /// The arguments of every rpi-fw-crypto call so far.
    pub fn otp_calls(&self) -> Vec<Vec<String>> {
        calls(&self.otp_log)
    }
}

fn calls(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A TPM 2.0 emulated by `swtpm` (TCP on loopback), and a tool directory
/// whose `systemd-creds` is the real one talking to it. Dropping it stops
/// the emulator.
pub struct Swtpm {
    _tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub tools: PathBuf,
    pub tcti: String,
    child: Child,
}

/// What the swtpm tests need: swtpm, the real systemd-creds, tpm2-tools
/// (PCR extends, flushing) and the TPM2 libraries systemd loads.
/// A test fails without them (the swtpm tests are `#[ignore]`d for them).
pub fn require_swtpm() {
    crate::require_tools_from(&[
        ("swtpm", "swtpm"),
        ("systemd-creds", "systemd"),
        ("tpm2_pcrextend", "tpm2-tools"),
        ("tpm2_flushcontext", "tpm2-tools"),
    ]);
}

/// Two free loopback ports, `p` and `p + 1` (the swtpm TCTI finds the
/// control channel at the port after the command port).
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

impl Swtpm {
    /// A new emulated TPM with empty state (a new or cleared TPM).
    pub fn start() -> Swtpm {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        Swtpm::start_on(tmp, state)
    }

    fn start_on(tmp: tempfile::TempDir, state: PathBuf) -> Swtpm {
        let port = free_port_pair();
        let ctrl = port + 1;
        let child = Command::new(crate::require_tool("swtpm"))
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        // Up once it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let tools = tmp.path().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let secret = tmp.path().join("credential.secret");
        let creds = crate::require_tool("systemd-creds");
        let flush = crate::require_tool("tpm2_flushcontext");
        // The real systemd-creds on the emulated TPM; afterwards, what the
        // kernel's resource manager (/dev/tpmrm0) does when a process
        // closes the device: flush its sessions and objects. The host key
        // is the test's own, never this machine's.
        let script = format!(
            "#!/bin/sh\nSYSTEMD_CREDENTIAL_SECRET='{}' '{}' --tpm2-device='{tcti}' \"$@\"\nrc=$?\nfor t in -t -l -s; do TPM2TOOLS_TCTI='{tcti}' '{}' $t >/dev/null 2>&1; done\nexit $rc\n",
            secret.display(),
            creds.display(),
            flush.display()
        );
        let wrapper = tools.join("systemd-creds");
        std::fs::write(&wrapper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Swtpm {
            _tmp: tmp,
            state,
            tools,
            tcti,
            child,
        }
    }

    /// Set the environment of `c` to use this TPM.
    pub fn apply<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        c.env(TOOL_DIR_ENV, &self.tools)
    }

    /// `tpm2_pcrextend N:sha256=…` on this TPM (as a firmware update or a
    /// changed boot would).
    pub fn extend_pcr(&self, n: u8) {
        let out = crate::command("tpm2_pcrextend")
            .arg(format!("{n}:sha256={}", "ab".repeat(32)))
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .output()
            .unwrap();
        crate::assert_success(&out, format!("tpm2_pcrextend {n}"));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sealed` (a sealed identity on device `d`) is no age identity: `age -d`
/// with it cannot open a secret of the store.
pub fn assert_sealed_is_no_age_key(d: &DeviceTree, sealed: &Path) {
    crate::require_tool_from("age", "age");
    let age = crate::command("age")
        .arg("-d")
        .arg("-i")
        .arg(sealed)
        .arg(
            d.root
                .join("var/lib/sealed-secrets/current/secrets/wifi.age"),
        )
        .output()
        .unwrap();
    assert!(
        !age.status.success(),
        "age -d opened the store with the sealed identity"
    );
}
