//! Command source: the standard output of a program (pass, vault, op, sops…).
//! Its stderr is shown when it fails; its stdout never is.

use super::{Fetched, SourceError};
use std::path::Path;
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

pub fn fetch(name: &str, argv: &[String], cwd: &Path) -> Result<Fetched, SourceError> {
    let (program, args) = argv.split_first().ok_or_else(|| SourceError::Invalid {
        name: name.into(),
        reason: "source.command is empty".into(),
    })?;
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| SourceError::CommandSpawn {
            name: name.into(),
            program: program.clone(),
            source,
        })?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(SourceError::CommandFailed {
            name: name.into(),
            program: program.clone(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_string(),
        });
    }
    Ok(Fetched::Found(stdout))
}
