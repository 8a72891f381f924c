//! Bounded command sources: a command that hangs or floods is killed, and
//! never gives more than a secret may hold. (Files are read through
//! [`crate::io::limit`].)

use sealed_bundle::limits::MAX_SECRET_BYTES;
use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Largest value a source may give (the bundle's per-secret limit).
pub const MAX_VALUE_BYTES: u64 = MAX_SECRET_BYTES;
/// How long a `command` source may run unless its secret sets `timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a failing command's stderr is shown.
const MAX_STDERR_BYTES: usize = 16 * 1024;

/// How a command source ended.
pub enum CommandOutcome {
    /// It exited; its stdout (bounded) and the tail of its stderr.
    Exited {
        status: ExitStatus,
        stdout: Zeroizing<Vec<u8>>,
        stderr: String,
    },
    /// Killed (with its process group) after `timeout`.
    TimedOut,
    /// Killed (with its process group) when its stdout passed `limit`.
    TooLarge { limit: u64 },
}

/// Run `cmd` (stdin closed, without the store identity or the variables
/// secrets are read from: [`crate::child_env`]) in its own process group,
/// reading at most `limit` bytes of stdout, for at most `timeout`.
pub fn run_command(cmd: &mut Command, timeout: Duration, limit: u64) -> io::Result<CommandOutcome> {
    use std::os::unix::process::CommandExt;
    crate::child_env::scrub(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let mut out_pipe = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout pipe"))?;
    let mut err_pipe = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no stderr pipe"))?;
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over_flag = std::sync::Arc::clone(&over);
    // The reader reports through a channel so that waiting for it is bounded
    // by the deadline too: a grandchild that left the process group (setsid)
    // may hold the pipe open long after the command itself exited.
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Into a zeroizing buffer that leaves no copy as it grows.
        let read = match crate::io::limit::read_bounded(&mut out_pipe, limit, 0) {
            Ok(buf) => Ok(buf),
            Err(crate::io::limit::BoundedReadError::TooLarge { .. }) => {
                over_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(Zeroizing::new(Vec::new()))
            }
            Err(crate::io::limit::BoundedReadError::Io(e)) => Err(e),
        };
        let _ = out_tx.send(read);
    });
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = err_tx.send(read_stderr_tail(&mut err_pipe));
    });
    fn read_stderr_tail(err_pipe: &mut impl Read) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Keep the tail; drain everything so the child never blocks on it.
        while let Ok(n) = err_pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 2 * MAX_STDERR_BYTES {
                buf.drain(..buf.len() - MAX_STDERR_BYTES);
            }
        }
        if buf.len() > MAX_STDERR_BYTES {
            buf.drain(..buf.len() - MAX_STDERR_BYTES);
        }
        String::from_utf8_lossy(&buf).trim_end().to_string()
    }
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if over.load(std::sync::atomic::Ordering::SeqCst) {
            kill_group(&mut child);
            break None;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let status = match status {
        Some(s) => s,
        None => child.wait()?,
    };
    // The group is killed too when the command exits while children still
    // hold its pipes open: the readers must end.
    kill_group(&mut child);
    if timed_out {
        return Ok(CommandOutcome::TimedOut);
    }
    // A command that exited just before the deadline still gets its output:
    // the readers need a moment to drain the pipes after the group is gone.
    let grace = Duration::from_millis(200);
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(grace);
    let out = match out_rx.recv_timeout(remaining) {
        Ok(read) => read?,
        // Its output is still held open by something outside its group.
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Ok(CommandOutcome::TimedOut),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(io::Error::other("stdout reader panicked"))
        }
    };
    // stderr is only a diagnostic: never wait past the deadline (and the
    // grace) for it.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(grace);
    let stderr = err_rx.recv_timeout(remaining).unwrap_or_default();
    if over.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(CommandOutcome::TooLarge { limit });
    }
    Ok(CommandOutcome::Exited {
        status,
        stdout: out,
        stderr,
    })
}

fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that exits at once but leaves a grandchild in its own
    /// session holding stdout open: the wait for its output is bounded by
    /// the timeout too (before, the build hung until the grandchild ended).
    #[test]
    fn a_grandchild_outside_the_group_cannot_hold_the_build() {
        let mut cmd = Command::new("sh");
        // The pause lets the grandchild leave the group before the command
        // exits (else the group kill at exit may still reach it).
        cmd.arg("-c").arg("setsid sleep 20 & sleep 0.2; echo value");
        let outcome = run_command(&mut cmd, Duration::from_millis(500), 1024).unwrap();
        assert!(
            matches!(outcome, CommandOutcome::TimedOut),
            "a command whose output stays open must time out"
        );
    }

    #[test]
    fn a_command_within_its_limits_gives_its_output() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("printf value; echo oops >&2; exit 3");
        match run_command(&mut cmd, Duration::from_secs(30), 1024).unwrap() {
            CommandOutcome::Exited { status, stdout, .. } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(&stdout[..], b"value");
            }
            _ => panic!("expected an exit"),
        }
    }
}
