//! The hardware tools a bound identity and encrypted credentials run:
//! `systemd-creds` (TPM2) and `rpi-fw-crypto` (Raspberry Pi OTP).
//!
//! Which program runs: on the device (`--root /`, the default), the one on
//! `PATH`. With `--root DIR` nothing of this machine is used: its TPM or
//! OTP would hand the tree a key of the host's, so every hardware operation
//! is refused unless [`TOOL_DIR_ENV`] names a directory holding the tools
//! to run instead (the tests' stand-ins, or a wrapper around the real
//! `systemd-creds` talking to an emulated TPM). Secret input goes to the
//! tool's standard input and secret output is read from its standard output
//! into a zeroized buffer: never a file, never an argument.

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
/// How long one tool run may take (a TPM under load is slow, a hung one
/// must not hold the boot).
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of standard error kept for a message.
const MAX_STDERR: usize = 4096;

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("{tool} is not installed (not found on PATH){hint}")]
    NotInstalled { tool: &'static str, hint: String },
    #[error("{tool}: {dir} (from ${TOOL_DIR_ENV}) holds no executable {tool}")]
    NotInToolDir { tool: &'static str, dir: PathBuf },
    #[error("with --root, sealed-firstboot does not use this machine's {what} ({tool} would run against the host, not the tree): run it on the device, or set ${TOOL_DIR_ENV} to a directory holding the {tool} to use")]
    RootRefused {
        tool: &'static str,
        what: &'static str,
    },
    #[error("running {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} did not finish within {} seconds (killed)", TIMEOUT.as_secs())]
    Timeout { tool: &'static str },
    #[error("{tool} wrote more than {limit} bytes")]
    TooMuchOutput { tool: &'static str, limit: usize },
}

/// A tool resolved to the program to run.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub program: PathBuf,
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
        if let Some(dir) = std::env::var_os(TOOL_DIR_ENV).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            let program = dir.join(name);
            if !is_executable(&program) {
                return Err(ToolError::NotInToolDir { tool: name, dir });
            }
            return Ok(Tool { name, program });
        }
        if !crate::fsutil::is_host_root(root) {
            return Err(ToolError::RootRefused { tool: name, what });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
            .map(|program| Tool { name, program })
            .ok_or_else(|| ToolError::NotInstalled {
                tool: name,
                hint: hint.to_string(),
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
        let spawn_err = |source| ToolError::Spawn {
            tool: self.name,
            source,
        };
        let mut child = Command::new(&self.program)
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
        // The input is small (a key, a label): it fits the pipe, so writing
        // it before reading cannot deadlock; closing it ends the tool's read.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input);
        }
        let started = Instant::now();
        let status = loop {
            match child.try_wait().map_err(spawn_err)? {
                Some(status) => break status,
                None if started.elapsed() > TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = out_reader.join();
                    let _ = err_reader.join();
                    return Err(ToolError::Timeout { tool: self.name });
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
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
}
