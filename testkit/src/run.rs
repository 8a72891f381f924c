//! Running tools and commands, and asserting how they ended.

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::tools::find_tool;

/// A command for `tool`: a path is used as it is, a bare name is looked up
/// with [`find_tool`] (so /usr/sbin tools run even when `$PATH` lacks it),
/// else left to the system's lookup.
pub fn command(tool: impl AsRef<OsStr>) -> Command {
    let tool = tool.as_ref();
    let resolved = match tool.to_str() {
        Some(name) if !name.contains('/') => find_tool(name),
        _ => None,
    };
    match resolved {
        Some(p) => Command::new(p),
        None => Command::new(tool),
    }
}

/// Run `tool` with `args` (C locale, no stdin, mtools' geometry check off)
/// and return its output whatever the status.
pub fn run(tool: impl AsRef<OsStr>, args: &[&str]) -> Output {
    let tool = tool.as_ref();
    command(tool)
        .args(args)
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.to_string_lossy()))
}

/// [`run`] that must succeed.
pub fn run_ok(tool: impl AsRef<OsStr>, args: &[&str]) -> Output {
    let out = run(&tool, args);
    let what = format!("{} {args:?}", tool.as_ref().to_string_lossy());
    assert_success(&out, what);
    out
}

/// Run `cmd` with `input` on its standard input, capturing its stdout and
/// stderr. A command that exits before reading all its input is no error
/// here: the caller asserts on how it ended.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()));
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.unwrap(),
    }
    child.wait_with_output().unwrap()
}

/// A command's stdout, lossily as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr, lossily as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What a failed assertion names: `what`, or "the command" when empty.
fn name(what: impl Display) -> String {
    let what = what.to_string();
    if what.is_empty() {
        "the command".into()
    } else {
        what
    }
}

/// Fails unless `out` is a success, showing its status, stdout and stderr.
pub fn assert_success(out: &Output, what: impl Display) {
    assert!(
        out.status.success(),
        "{} failed: {}\nstdout:\n{}\nstderr:\n{}",
        name(what),
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Fails unless `out` exited with `code`, showing its stderr.
pub fn assert_exit(out: &Output, code: i32, what: impl Display) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}: {}",
        name(what),
        stderr(out)
    );
}

/// `path` as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// Everything a series of commands printed, kept for leak checks.
#[derive(Default)]
pub struct Transcript {
    pub text: Vec<u8>,
}

impl Transcript {
    /// Run a command, record its stdout and stderr, and return its output.
    pub fn run(&mut self, cmd: &mut Command) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()));
        // Program and arguments only: Command's Debug would show the
        // environment, where tests pass secrets on purpose.
        let mut line = format!("$ {}", cmd.get_program().to_string_lossy());
        for a in cmd.get_args() {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        line.push('\n');
        self.text.extend_from_slice(line.as_bytes());
        self.text.extend_from_slice(&out.stdout);
        self.text.extend_from_slice(&out.stderr);
        out
    }

    /// Run a command that must succeed.
    pub fn ok(&mut self, cmd: &mut Command) -> Output {
        let out = self.run(cmd);
        assert_success(&out, format!("{:?}", cmd.get_program()));
        out
    }
}
