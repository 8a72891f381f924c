//! The team secrets store (`build-image store`): a directory that lives in
//! git beside the recipes.
//!
//! ```text
//! secrets-store/
//!   recipients.txt               age1… and ssh-ed25519 keys, one a line, # comments
//!   audit.jsonl                  append-only: who, when, which name/scope/version, which operation
//!   secrets/NAME/meta.toml       description, scopes, versions, created/updated at and by (no values)
//!   secrets/NAME/SCOPE/vN.age    one standard age file per version, to all recipients
//!   .gitignore                   keeps .lock and .tmp/ out of git
//!   .gitattributes               `*.age binary`: no text diffs of ciphertext
//! ```
//!
//! [`layout`] knows the paths and writes atomically, [`names`] checks names
//! and scopes, [`metadata`] and [`audit`] are the clear-text files,
//! [`crypto`] holds recipients and identities, [`input`] reads values
//! (never from argv), [`commands`] are the operations, [`archive`] is
//! export/import, [`recipe`] is what builds and `check` use, [`cli`] the
//! `build-image store` arguments.

pub mod archive;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod crypto;
pub mod input;
pub mod layout;
pub mod metadata;
pub mod names;
pub mod recipe;

pub use layout::Store;
pub use names::{validate_name, Scope};

use std::path::PathBuf;
use thiserror::Error;

/// Exit codes of the store's own errors (documented in the README).
pub mod exit {
    /// The name (or store) already exists: `set` without `--update`,
    /// `init` on a store, `import` of names already present.
    pub const EXISTS: u8 = 8;
    /// No such secret, scope or version (`get`, `rm`, `rotate`, `history`).
    pub const NOT_FOUND: u8 = 9;
    /// No identity, or the identity cannot decrypt the store's files.
    pub const IDENTITY: u8 = 10;
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
    #[error("{path} is already a store (it has recipients.txt); change recipients by editing it and running `build-image store rekey`")]
    AlreadyInitialised { path: PathBuf },
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
    #[error("no identity to decrypt the store: set SEALED_IMAGE_STORE_IDENTITY (the key itself) or SEALED_IMAGE_STORE_IDENTITY_FILE, or pass --identity FILE to `build-image store`")]
    NoIdentity,
    #[error("identity {from}: {reason}")]
    BadIdentity { from: String, reason: String },
    #[error("cannot decrypt {what}: the identity is not one of its recipients (is your key in recipients.txt, and was `store rekey` run after it was added?)")]
    NotARecipient { what: String },
    #[error("{path} line {line}: {reason}")]
    Recipients {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Value(String),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

impl StoreError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            StoreError::InvalidName(_) | StoreError::InvalidScope(_) => 2,
            StoreError::Exists { .. }
            | StoreError::Conflict(_)
            | StoreError::AlreadyInitialised { .. } => exit::EXISTS,
            StoreError::NotFound { .. } | StoreError::NoSuchVersion { .. } => exit::NOT_FOUND,
            StoreError::NoIdentity
            | StoreError::BadIdentity { .. }
            | StoreError::NotARecipient { .. } => exit::IDENTITY,
            StoreError::Value(_) => 2,
            _ => 1,
        }
    }
}

/// A closure turning an I/O error into [`StoreError::Io`] with context.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io {
        context,
        cause: source,
    }
}
