//! Where secret values come from. Each source either yields the value,
//! reports it missing (with how to provide it), or fails with a reason that
//! never contains the value.

mod command;
mod dotenv;
mod env;
mod file;
pub mod store;

use crate::recipe::{Recipe, SourceSpec};
use std::path::PathBuf;
use thiserror::Error;
use zeroize::Zeroizing;

/// The outcome of asking a source.
pub enum Fetched {
    Found(Zeroizing<Vec<u8>>),
    /// Not there; the text says how to provide it.
    Missing {
        how: String,
    },
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error(
        "secret {name}: command {program:?} failed ({status}){}",
        stderr_part(stderr)
    )]
    CommandFailed {
        name: String,
        program: String,
        status: String,
        stderr: String,
    },
    #[error("secret {name}: cannot run {program:?}: {cause}")]
    CommandSpawn {
        name: String,
        program: String,
        cause: std::io::Error,
    },
    #[error("secret {name}: reading {path}: {cause}")]
    Read {
        name: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("secret {name}: {path} line {line}: {reason}")]
    Dotenv {
        name: String,
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("secret {name}: {reason}")]
    Invalid { name: String, reason: String },
    /// Not marked as the source (the message holds it); exit codes find
    /// it through [`crate::secrets::SecretsError::store_error`].
    #[error("secret {name}: store: {cause}")]
    Store {
        name: String,
        cause: crate::store::StoreError,
    },
}

/// The source in effect for a secret: the recipe's, or the environment
/// variable named like the secret.
pub fn effective(name: &str, spec: Option<&SourceSpec>) -> SourceSpec {
    spec.cloned()
        .unwrap_or_else(|| SourceSpec::Env(name.to_string()))
}

/// A short description of a source for tables and `--json` (never a value).
pub fn describe(recipe: &Recipe, spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Env(var) => format!("env {var}"),
        SourceSpec::File(p) => format!("file {}", recipe.resolve(p).display()),
        SourceSpec::Command(argv) => {
            format!("command {}", argv.first().map(String::as_str).unwrap_or(""))
        }
        SourceSpec::Dotenv { file, key } => format!(
            "dotenv {} {}",
            recipe.resolve(file).display(),
            key.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        SourceSpec::Store(n) => format!("store {n}"),
    }
}

/// Ask the source of one secret for its value. The variables every secret
/// of the recipe is read from are hidden from child processes first, so a
/// command source that runs before an environment source cannot see them.
pub fn fetch(recipe: &Recipe, name: &str, spec: &SourceSpec) -> Result<Fetched, SourceError> {
    hide_env_sources(recipe);
    if let SourceSpec::Env(var) = spec {
        crate::child_env::hide(var);
    }
    match spec {
        SourceSpec::Env(var) => Ok(env::fetch(var)),
        SourceSpec::File(p) => file::fetch(name, &recipe.resolve(p)),
        SourceSpec::Command(argv) => {
            let timeout = recipe
                .secrets
                .get(name)
                .and_then(|s| s.timeout)
                .map(std::time::Duration::from_secs_f64);
            command::fetch(name, argv, &recipe.base_dir, timeout)
        }
        SourceSpec::Dotenv { file, key } => {
            dotenv::fetch(name, &recipe.resolve(file), key.as_deref().unwrap_or(name))
        }
        SourceSpec::Store(n) => store::fetch(recipe, name, n),
    }
}

/// Hide from child processes every variable the recipe reads a secret from.
pub fn hide_env_sources(recipe: &Recipe) {
    for (name, s) in &recipe.secrets {
        if let SourceSpec::Env(var) = effective(name, s.source.as_ref()) {
            crate::child_env::hide(&var);
        }
    }
}

/// How a failed command's stderr is shown: its text, or that it printed none.
fn stderr_part(stderr: &str) -> String {
    if stderr.is_empty() {
        " and printed nothing on stderr".into()
    } else {
        format!("; its stderr:\n{stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_says_whether_it_printed_anything() {
        let e = |stderr: &str| {
            SourceError::CommandFailed {
                name: "a".into(),
                program: "false".into(),
                status: "exit status: 1".into(),
                stderr: stderr.into(),
            }
            .to_string()
        };
        assert_eq!(
            e(""),
            "secret a: command \"false\" failed (exit status: 1) and printed nothing on stderr"
        );
        assert!(e("no such entry").ends_with("; its stderr:\nno such entry"));
    }
}
