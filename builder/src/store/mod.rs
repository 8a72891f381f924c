//! The team secrets store (`build-image store`): a directory that lives in
//! git beside the recipes.
//!
//! ```text
//! secrets-store/
//!   recipients.txt               age1… and ssh-ed25519 keys, one a line, # comments
//!   key.age                      the store key, encrypted to every recipient
//!   store.toml                   what the store key authenticates: the recipients, each meta.toml
//!   audit.jsonl                  hash-chained, authenticated lines: who, when, which name/scope/version, which operation
//!   audit.head                   the log's authenticated length and last line
//!   secrets/NAME/meta.toml       description, scopes, versions (each with its file's SHA-256); no values
//!   secrets/NAME/SCOPE/vN.age    one standard age file per version, to all recipients
//!   .gitignore                   keeps .lock and .tmp/ out of git
//!   .lock                        flocked by every command, after the store directory itself
//!   .gitattributes               `*.age binary`: no text diffs of ciphertext
//! ```
//!
//! [`layout`] opens the directory (never following a link inside it),
//! [`integrity`] is the store key and what it authenticates, [`session`]
//! a store verified with a member's identity, [`journal`] commits a change
//! as a whole (a crash leaves the old store or the new one), [`names`]
//! checks names and scopes, [`metadata`] and [`audit`] are the clear-text
//! files, [`crypto`] holds recipients and identities, [`input`] reads
//! values (never from argv), [`commands`] are the operations, [`archive`]
//! is export/import, [`migrate`] upgrades format 1. A library of its own: it
//! imports nothing of the build pipeline. The store source of a recipe is
//! `crate::secrets::sources::store`, the `build-image store` arguments and
//! exit codes are the binary's (`bin/build-image/store.rs`, `exit.rs`).

pub mod archive;
pub mod audit;
pub mod commands;
pub mod crypto;
pub mod input;
pub mod integrity;
pub mod journal;
pub mod layout;
pub mod metadata;
pub mod migrate;
pub mod names;
pub mod session;

pub use layout::Store;
pub use names::{validate_name, Scope};
pub use session::Session;

use std::path::PathBuf;
use thiserror::Error;

/// What kind of failure a [`StoreError`] is. The binary gives each kind
/// its exit code (`bin/build-image/exit.rs`, documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Anything else (I/O, a corrupt file).
    Other,
    /// A bad name, scope or value given by the user.
    Usage,
    /// The name (or store) already exists: `set` without `--update`,
    /// `init` on a store, `import` of names already present.
    Exists,
    /// No such secret, scope or version (`get`, `rm`, `rotate`, `history`).
    NotFound,
    /// No identity, or the identity cannot decrypt the store's files.
    Identity,
    /// The store is not what its key authenticates (a file changed without
    /// a member's identity, recipients nobody accepted, a link or special
    /// file in it, a format-1 store to migrate), or an archive is not from
    /// a store key you trust.
    Integrity,
}

/// One thing in the store that is not what its key authenticates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Relative to the store directory.
    pub path: String,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("secret {name} already exists in scope {scope}: add a new version with `build-image store set {name} --update` (or `store rotate {name}`)")]
    Exists { name: String, scope: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{path} is already a store (it has {file}): nothing was written. Change its recipients with `build-image store recipients add|rm KEY`; if a file of it is missing, put it back from git (`git checkout -- {path}`)")]
    AlreadyInitialised { path: PathBuf, file: String },
    #[error("no secret {name} in the store {store}{hint}")]
    NotFound {
        name: String,
        store: PathBuf,
        hint: String,
    },
    #[error("secret {name}: {what} does not exist ({have})")]
    NoSuchVersion {
        name: String,
        what: String,
        have: String,
    },
    #[error("{path} is not a secrets store (no recipients.txt): create it with `build-image store init --store {path} --recipient age1…`")]
    NotAStore { path: PathBuf },
    #[error("no identity to decrypt the store: set SEALED_IMAGE_STORE_IDENTITY (the key itself) or SEALED_IMAGE_STORE_IDENTITY_FILE, or pass --identity FILE to `build-image store`{why}")]
    NoIdentity { why: String },
    #[error("identity {from}: {reason}")]
    BadIdentity { from: String, reason: String },
    #[error("cannot decrypt {what}: the identity is not one of its recipients (is your key in the store's recipients, accepted by a member with `build-image store recipients add`?)")]
    NotARecipient { what: String },
    #[error("{path} line {line}: {reason}")]
    Recipients {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the store {store} is not what its key authenticates, so nothing was used or changed: {}{}. If no member made this change, `git log -- {store}` shows who did and `git checkout -- {store}` puts back what a member committed", .problems.first().map(|p| p.to_string()).unwrap_or_default(), more(.problems))]
    Integrity {
        store: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("the store {path} was written by an earlier build-image (format 1: its files are not authenticated): upgrade it with `build-image store migrate --store {path}` and a member's identity, review the recipients it shows, and commit the result")]
    OldFormat { path: PathBuf },
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    NotConfirmed(String),
    #[error("{0}")]
    Value(String),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

fn more(problems: &[Problem]) -> String {
    match problems.len() {
        0 | 1 => String::new(),
        n => format!(
            " (and {} more: `build-image store audit --verify` lists them)",
            n - 1
        ),
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::InvalidName(_) | StoreError::InvalidScope(_) | StoreError::Value(_) => {
                ErrorKind::Usage
            }
            StoreError::Exists { .. }
            | StoreError::Conflict(_)
            | StoreError::AlreadyInitialised { .. } => ErrorKind::Exists,
            StoreError::NotFound { .. } | StoreError::NoSuchVersion { .. } => ErrorKind::NotFound,
            StoreError::NoIdentity { .. }
            | StoreError::BadIdentity { .. }
            | StoreError::NotARecipient { .. } => ErrorKind::Identity,
            StoreError::Integrity { .. }
            | StoreError::OldFormat { .. }
            | StoreError::Untrusted(_) => ErrorKind::Integrity,
            _ => ErrorKind::Other,
        }
    }

    /// Whether the store itself cannot be trusted or opened (integrity or
    /// identity): a build or `check` that reads it fails as the store
    /// commands do.
    pub fn is_store_trouble(&self) -> bool {
        matches!(self.kind(), ErrorKind::Integrity | ErrorKind::Identity)
    }

    /// A store integrity error with one problem.
    pub fn integrity(
        store: &std::path::Path,
        path: &str,
        problem: impl Into<String>,
    ) -> StoreError {
        StoreError::Integrity {
            store: store.to_path_buf(),
            problems: vec![Problem {
                path: path.to_string(),
                problem: problem.into(),
            }],
        }
    }

    /// No identity (and why one is needed here).
    pub fn no_identity(why: &str) -> StoreError {
        StoreError::NoIdentity {
            why: if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            },
        }
    }
}

/// A closure turning an I/O error into [`StoreError::Io`] with context.
pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io {
        context,
        cause: source,
    }
}
