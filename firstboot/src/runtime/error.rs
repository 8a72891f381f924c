//! Errors of the unseal. They name the secret and the path, never a value.

use super::fsops::StepError;
use crate::accounts::AccountError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why an unseal (or clear) failed.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// A secret's name, path or mode breaks a rule; nothing was written.
    #[error("secret {name} ({path:?}): {reason}")]
    InvalidSecret {
        name: String,
        path: String,
        reason: String,
    },
    /// A directory on the way to a secret's path is a symbolic link.
    #[error("secret {name}: refusing to use {path:?}: {component:?} is a symbolic link, which is never followed")]
    SymlinkInPath {
        name: String,
        path: String,
        component: String,
    },
    /// A directory on the way to a secret's path exists but is something else.
    #[error("secret {name}: refusing to use {path:?}: {component:?} exists and is {what}, not a directory")]
    NotADirectory {
        name: String,
        path: String,
        component: String,
        what: &'static str,
    },
    /// The link location of a secret outside `/run/secrets` is taken by
    /// something sealed-firstboot did not create.
    #[error("secret {name}: refusing to replace {path:?}: it exists and is {what}, not a link created by sealed-firstboot")]
    LinkOccupied {
        name: String,
        path: String,
        what: String,
    },
    /// A directory on the way to a secret's link path can be written by
    /// another user, who could plant or swap what is at the path.
    #[error("secret {name}: refusing to use {path:?}: {dir:?} {why}; another user could plant or swap what is at that path")]
    UnsafeLinkDir {
        name: String,
        path: String,
        dir: String,
        why: String,
    },
    /// `/run/secrets` (or `/run/secrets.d`) is not what the runtime manages.
    #[error("refusing to replace {path}: it is {what}; sealed-firstboot manages it as {expected} and will not destroy it (move it away first)")]
    Occupied {
        path: PathBuf,
        what: &'static str,
        expected: &'static str,
    },
    /// A file system operation on one secret failed.
    #[error("secret {name} ({path:?}): cannot {op}")]
    SecretIo {
        name: String,
        path: String,
        op: &'static str,
        source: io::Error,
    },
    /// A file system operation on the runtime's own files failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// After mounting, `/run/secrets.d` is still not a ramfs.
    #[error("{path} is not a ramfs after mounting (file system type {found:#x})")]
    NotRamfs { path: PathBuf, found: u64 },
    /// The generation counter cannot grow any more.
    #[error("no generation number left in {path}")]
    GenerationOverflow { path: PathBuf },
}

/// One secret whose owner or group did not resolve.
#[derive(Debug)]
pub struct UnresolvedAccount {
    pub secret: String,
    pub error: AccountError,
}

impl std::fmt::Display for UnresolvedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "secret {}: {}", self.secret, self.error)
    }
}

impl RuntimeError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// Step `i` of the walk down `comps` (below `/run/{below}`) towards the
    /// secret `name` at `path` failed: the error names the component.
    pub(super) fn walk_step(
        (name, path): (&str, &str),
        below: &str,
        comps: &[&str],
        i: usize,
        e: StepError,
        op: &'static str,
    ) -> Self {
        let end = (i + 1).min(comps.len());
        let component = format!("/run/{below}{}", comps[..end].join("/"));
        let (name, path) = (name.to_owned(), path.to_owned());
        match e {
            StepError::Symlink => RuntimeError::SymlinkInPath {
                name,
                path,
                component,
            },
            StepError::NotDir(what) => RuntimeError::NotADirectory {
                name,
                path,
                component,
                what,
            },
            StepError::Io(source) => RuntimeError::SecretIo {
                name,
                path,
                op,
                source,
            },
        }
    }

    pub(crate) fn secret_io(
        name: &str,
        path: &str,
        op: &'static str,
        source: impl Into<io::Error>,
    ) -> Self {
        RuntimeError::SecretIo {
            name: name.to_owned(),
            path: path.to_owned(),
            op,
            source: source.into(),
        }
    }
}
