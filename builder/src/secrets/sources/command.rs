//! Command source: the standard output of a program (pass, vault, op, sops…).
//! Its stderr is shown when it fails; its stdout never is. It runs with a
//! timeout (the secret's `timeout`, default 60 s) and may print at most a
//! secret's size: beyond either it is killed with its process group.

use super::{Fetched, SourceError};
use crate::io::bounded::{self, CommandOutcome};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub fn fetch(
    name: &str,
    argv: &[String],
    cwd: &Path,
    timeout: Option<Duration>,
) -> Result<Fetched, SourceError> {
    let (program, args) = argv.split_first().ok_or_else(|| SourceError::Invalid {
        name: name.into(),
        reason: "source.command is empty".into(),
    })?;
    let timeout = timeout.unwrap_or(bounded::DEFAULT_COMMAND_TIMEOUT);
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd);
    let outcome =
        bounded::run_command(&mut cmd, timeout, bounded::MAX_VALUE_BYTES).map_err(|source| {
            SourceError::CommandSpawn {
                name: name.into(),
                program: program.clone(),
                cause: source,
            }
        })?;
    match outcome {
        CommandOutcome::Exited {
            status,
            stdout,
            stderr,
        } => {
            if !status.success() {
                return Err(SourceError::CommandFailed {
                    name: name.into(),
                    program: program.clone(),
                    status: status.to_string(),
                    stderr,
                });
            }
            Ok(Fetched::Found(stdout))
        }
        CommandOutcome::TimedOut => Err(SourceError::Invalid {
            name: name.into(),
            reason: format!(
                "command {program:?} did not finish within {} s and was killed (set `timeout` on the secret to allow longer)",
                timeout.as_secs_f64()
            ),
        }),
        CommandOutcome::TooLarge { limit } => Err(SourceError::Invalid {
            name: name.into(),
            reason: format!(
                "command {program:?} printed more than {limit} bytes, the limit of a secret, and was killed"
            ),
        }),
    }
}
