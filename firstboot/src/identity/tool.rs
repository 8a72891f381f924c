//! The hardware tools a bound identity and encrypted credentials run:
//! `systemd-creds` (TPM2) and `rpi-fw-crypto` (Raspberry Pi OTP).
//!
//! Which program runs: on the device (`--root /`, the default), the system's
//! own, by absolute path from [`SYSTEM_DIRS`] (never from `PATH`), in a
//! clean environment (only [`CLEAN_PATH`]): a caller's `PATH`,
//! `SYSTEMD_CREDENTIAL_SECRET`, `LD_PRELOAD` or `SYSTEMD_*` variables never
//! reach it, and [`TOOL_DIR_ENV`] is refused there (a deploy user running
//! `sudo sealed-firstboot apply` with it kept must not choose the program
//! root runs). With `--root DIR` nothing of this machine is used: its TPM
//! or OTP would hand the tree a key of the host's, so every hardware
//! operation is refused unless [`TOOL_DIR_ENV`] names a directory holding
//! the tools to run instead (the tests' stand-ins, or a wrapper around the
//! real `systemd-creds` talking to an emulated TPM); that directory and the
//! tool must belong to the user running sealed-firstboot (or root) and be
//! writable by no one else. Secret input goes to the tool's standard input
//! and secret output is read from its standard output into a zeroized
//! buffer: never a file, never an argument.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;
use zeroize::Zeroizing;

/// A directory holding the `systemd-creds` and `rpi-fw-crypto` to run
/// instead of the ones on `PATH`; required with `--root`.
pub const TOOL_DIR_ENV: &str = "SEALED_FIRSTBOOT_TOOL_DIR";
/// Where the device's own tools are looked for, in this order.
pub const SYSTEM_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];
/// The only environment a device tool runs with.
pub const CLEAN_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// How long one tool run may take (a TPM under load is slow, a hung one
/// must not hold the boot).
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of standard error kept for a message.
const MAX_STDERR: usize = 4096;

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("{tool} is not installed (not found in /usr/bin, /usr/sbin, /bin or /sbin){hint}")]
    NotInstalled { tool: &'static str, hint: String },
    #[error("{tool}: {dir} (from ${TOOL_DIR_ENV}) holds no executable {tool}")]
    NotInToolDir { tool: &'static str, dir: PathBuf },
    #[error("${TOOL_DIR_ENV} is set, but it is only for --root trees (tests, emulated TPMs): on the device sealed-firstboot runs the system's own {tool}; unset it")]
    ToolDirOnDevice { tool: &'static str },
    #[error("{tool}: {path} (from ${TOOL_DIR_ENV}) {why}: refused, it could run something of another user's")]
    UntrustedToolDir {
        tool: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("with --root, sealed-firstboot does not use this machine's {what} ({tool} would run against the host, not the tree): run it on the device, or set ${TOOL_DIR_ENV} to a directory holding the {tool} to use")]
    RootRefused {
        tool: &'static str,
        what: &'static str,
    },
    #[error("running {tool}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} did not finish within {seconds} seconds (killed)")]
    Timeout { tool: &'static str, seconds: u64 },
    #[error("{tool} wrote more than {limit} bytes")]
    TooMuchOutput { tool: &'static str, limit: usize },
}

/// A tool resolved to the program to run.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub program: PathBuf,
    /// The device's own tool: run in a clean environment. `false` only for
    /// a tool of [`TOOL_DIR_ENV`] with `--root` (the stand-ins read their
    /// settings from the environment).
    pub system: bool,
}

/// What a run printed and how it ended. The standard output may be secret:
/// it is zeroized when dropped.
pub struct Output {
    pub stdout: Zeroizing<Vec<u8>>,
    /// The standard error (bounded, lossy UTF-8, trimmed).
    pub stderr: String,
    pub success: bool,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
}

impl Output {
    /// `exit N: last line of stderr`, for an error message.
    pub fn failure(&self) -> String {
        let status = match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_string(),
        };
        let said: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if said.is_empty() {
            status
        } else {
            format!("{status}: {}", said.join("; "))
        }
    }
}

impl Tool {
    /// The program `name` for `root` (see the module documentation);
    /// `what` names the hardware for the `--root` refusal, `hint` what to
    /// install when it is missing.
    pub fn find(
        root: &Path,
        name: &'static str,
        what: &'static str,
        hint: &str,
    ) -> Result<Tool, ToolError> {
        let tool_dir = std::env::var_os(TOOL_DIR_ENV).filter(|d| !d.is_empty());
        Self::find_with(root, name, what, hint, tool_dir.map(PathBuf::from))
    }

    /// [`Tool::find`] with the value of [`TOOL_DIR_ENV`] given.
    pub fn find_with(
        root: &Path,
        name: &'static str,
        what: &'static str,
        hint: &str,
        tool_dir: Option<PathBuf>,
    ) -> Result<Tool, ToolError> {
        if crate::fsutil::is_host_root(root) {
            if tool_dir.is_some() {
                return Err(ToolError::ToolDirOnDevice { tool: name });
            }
            return system_program(name)
                .map(|program| Tool {
                    name,
                    program,
                    system: true,
                })
                .ok_or_else(|| ToolError::NotInstalled {
                    tool: name,
                    hint: hint.to_string(),
                });
        }
        let Some(dir) = tool_dir else {
            return Err(ToolError::RootRefused { tool: name, what });
        };
        let program = dir.join(name);
        if !is_executable(&program) {
            return Err(ToolError::NotInToolDir { tool: name, dir });
        }
        for path in [&dir, &program] {
            if let Err(why) = trusted(path) {
                return Err(ToolError::UntrustedToolDir {
                    tool: name,
                    path: path.clone(),
                    why,
                });
            }
        }
        Ok(Tool {
            name,
            program,
            system: false,
        })
    }

    /// Run with `args`, `input` on standard input, at most `max_out` bytes
    /// of standard output kept (more is an error), within [`TIMEOUT`].
    pub fn run<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
        max_out: usize,
    ) -> Result<Output, ToolError> {
        self.run_within(args, input, max_out, TIMEOUT)
    }

    /// [`Tool::run`] within `timeout`.
    fn run_within<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
        max_out: usize,
        timeout: Duration,
    ) -> Result<Output, ToolError> {
        let spawn_err = |source| ToolError::Spawn {
            tool: self.name,
            source,
        };
        let mut command = Command::new(&self.program);
        if self.system {
            command.env_clear().env("PATH", CLEAN_PATH);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let mut stdout_pipe = child.stdout.take();
        let mut stderr_pipe = child.stderr.take();
        let out_reader = std::thread::spawn(move || {
            // Sized once: the buffer never moves, so no copy of a secret
            // is left behind in freed memory.
            let mut buf = Zeroizing::new(vec![0u8; max_out + 1]);
            let mut n = 0;
            if let Some(p) = stdout_pipe.as_mut() {
                while n < buf.len() {
                    match p.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                // Drain the rest so the child never blocks on a full pipe.
                let mut sink = [0u8; 512];
                while matches!(p.read(&mut sink), Ok(k) if k > 0) {
                    n = buf.len();
                }
                sink.iter_mut().for_each(|b| *b = 0);
            }
            buf.truncate(n);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(p) = stderr_pipe.as_mut() {
                let _ = p.take(MAX_STDERR as u64).read_to_end(&mut text);
                let _ = std::io::copy(p, &mut std::io::sink());
            }
            String::from_utf8_lossy(&text).trim().to_string()
        });
        // Written by a thread of its own: a tool that does not read its
        // input (hung, or a large value) cannot hold this process past the
        // timeout; closing the pipe ends the tool's read, killing the tool
        // ends the write.
        let stdin_pipe = child.stdin.take();
        let data = Zeroizing::new(input.to_vec());
        let in_writer = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin_pipe {
                let _ = stdin.write_all(&data);
            }
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait().map_err(spawn_err)? {
                Some(status) => break status,
                None if started.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = in_writer.join();
                    let _ = out_reader.join();
                    let _ = err_reader.join();
                    return Err(ToolError::Timeout {
                        tool: self.name,
                        seconds: timeout.as_secs(),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let _ = in_writer.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if stdout.len() > max_out {
            return Err(ToolError::TooMuchOutput {
                tool: self.name,
                limit: max_out,
            });
        }
        Ok(Output {
            stdout,
            stderr,
            success: status.success(),
            code: status.code(),
        })
    }
}

/// The first executable `name` in [`SYSTEM_DIRS`].
pub fn system_program(name: &str) -> Option<PathBuf> {
    SYSTEM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

/// `path` (links followed) belongs to this process's user or to root and
/// is writable by no one else.
fn trusted(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("cannot be inspected ({e})"))?;
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Err(format!(
            "belongs to uid {}, not to this user (uid {me}) or root",
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "is writable by its group or others (mode {:o})",
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(body: &str) -> (tempfile::TempDir, Tool) {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tool");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        (
            dir,
            Tool {
                name: "tool",
                program,
                system: false,
            },
        )
    }

    #[test]
    fn input_goes_to_stdin_and_output_is_read_bounded() {
        let (_d, t) = sh("tr a-z A-Z; echo oops >&2");
        let out = t.run::<&str>(&[], b"secret", 64).unwrap();
        assert!(out.success);
        assert_eq!(out.stdout.as_slice(), b"SECRET");
        assert_eq!(out.stderr, "oops");
        let err = t.run::<&str>(&[], &[b'x'; 100], 10).err().unwrap();
        assert!(
            matches!(err, ToolError::TooMuchOutput { limit: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn failures_say_the_exit_code_and_stderr() {
        let (_d, t) = sh("echo 'No TPM2 device found' >&2; exit 3");
        let out = t.run(&["encrypt"], b"", 64).unwrap();
        assert!(!out.success);
        assert_eq!(out.failure(), "exit 3: No TPM2 device found");
    }

    #[test]
    fn with_root_the_hosts_tools_are_refused() {
        let tree = tempfile::tempdir().unwrap();
        // (The variable is not set in the test process.)
        if std::env::var_os(TOOL_DIR_ENV).is_none() {
            let err = Tool::find(tree.path(), "systemd-creds", "TPM2", "").unwrap_err();
            assert!(matches!(err, ToolError::RootRefused { .. }), "{err}");
            assert!(err.to_string().contains(TOOL_DIR_ENV), "{err}");
        }
    }

    #[test]
    fn on_the_device_the_tool_dir_is_refused_and_the_system_tool_runs_clean() {
        let stand_ins = tempfile::tempdir().unwrap();
        let err = Tool::find_with(
            Path::new("/"),
            "systemd-creds",
            "TPM2",
            "",
            Some(stand_ins.path().to_path_buf()),
        )
        .unwrap_err();
        assert!(matches!(err, ToolError::ToolDirOnDevice { .. }), "{err}");
        assert!(err.to_string().contains(TOOL_DIR_ENV), "{err}");
        // Found by absolute path in the system directories, whatever PATH
        // says (sh is on every system).
        let sh = Tool::find_with(Path::new("/"), "sh", "", "", None).unwrap();
        assert!(sh.system);
        assert!(
            SYSTEM_DIRS.iter().any(|d| sh.program.starts_with(d)),
            "{}",
            sh.program.display()
        );
        let err = Tool::find_with(Path::new("/"), "no-such-tool-here", "", "", None).unwrap_err();
        assert!(matches!(err, ToolError::NotInstalled { .. }), "{err}");
    }

    #[test]
    fn a_system_tool_gets_no_environment_but_path() {
        let (_d, mut t) = sh("env");
        t.system = true;
        let out = t.run::<&str>(&[], b"", 4096).unwrap();
        let env = String::from_utf8_lossy(&out.stdout).to_string();
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_")
            .collect();
        assert_eq!(names, ["PATH"], "{env}");
        assert!(env.contains(&format!("PATH={CLEAN_PATH}")), "{env}");
    }

    #[test]
    fn a_tool_dir_of_another_user_or_writable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tree = tempfile::tempdir().unwrap();
        let (dir, _t) = sh("true");
        std::fs::rename(dir.path().join("tool"), dir.path().join("systemd-creds")).unwrap();
        let find = || {
            Tool::find_with(
                tree.path(),
                "systemd-creds",
                "TPM2",
                "",
                Some(dir.path().to_path_buf()),
            )
        };
        assert!(!find().unwrap().system);
        let program = dir.path().join("systemd-creds");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = find().unwrap_err();
        assert!(matches!(err, ToolError::UntrustedToolDir { .. }), "{err}");
        assert!(err.to_string().contains("writable"), "{err}");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            find().unwrap_err(),
            ToolError::UntrustedToolDir { .. }
        ));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        if rustix::process::geteuid().is_root() {
            // Another user's program (as a deploy user's, run through sudo).
            rustix::fs::chown(&program, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
            let err = find().unwrap_err();
            assert!(err.to_string().contains("uid 65534"), "{err}");
        }
    }

    #[test]
    fn a_tool_that_never_reads_its_input_is_killed_at_the_timeout() {
        // More than a pipe holds, to a tool that never reads it.
        let (_d, t) = sh("exec sleep 600");
        let err = t
            .run_within::<&str>(&[], &vec![b'x'; 4 << 20], 64, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(err, ToolError::Timeout { .. }), "{err}");
    }
}
