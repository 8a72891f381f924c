//! The builder's error type: what a build, an inject, a fleet or a bundle
//! can fail with. `main`'s exit codes are decided from these variants.

use crate::image;
use crate::recipe;
use crate::secrets::SecretsError;
use sealed_bundle::BundleError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error(transparent)]
    Plan(#[from] recipe::plan::PlanError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("sealing the bundle")]
    Bundle(#[source] BundleError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Agent(#[from] image::agent::AgentError),
    #[error(transparent)]
    Signing(#[from] crate::seal::signing::SigningError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// An error in a user's image, worded with its name.
    #[error("{}: {message}", image.display())]
    InImage { image: PathBuf, message: String },
    #[error("{path} exists; {hint}")]
    OutputExists { path: PathBuf, hint: &'static str },
    #[error("{} device(s) cannot be built:\n{}", .0.len(), .0.iter().map(|(d, e)| format!("device {d}: {e}")).collect::<Vec<_>>().join("\n"))]
    Fleet(Vec<(String, SecretsError)>),
}

impl From<BundleError> for BuildError {
    fn from(e: BundleError) -> Self {
        BuildError::Bundle(e)
    }
}

pub(crate) fn io_err(context: String) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io {
        context,
        cause: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause is said once in the printed chain: either as the `source()`
    /// (the builder's own errors: `BuildError::Io`, `FlashError`) or in the
    /// message alone, never both (anyhow's `{:#}` would say "X: X").
    #[test]
    fn chains_print_each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let errors: Vec<anyhow::Error> = vec![
            crate::secrets::sources::SourceError::Read {
                name: "a".into(),
                path: "a.txt".into(),
                cause: io(),
            }
            .into(),
            crate::secrets::sources::SourceError::CommandSpawn {
                name: "a".into(),
                program: "pass".into(),
                cause: io(),
            }
            .into(),
            BuildError::Io {
                context: "writing x".into(),
                cause: io(),
            }
            .into(),
            BuildError::from(sealed_bundle::BundleError::Io {
                context: "reading b".into(),
                source: io(),
            })
            .into(),
            crate::cmd::flash::FlashError::KeyOpen {
                key: "k".into(),
                cause: io(),
            }
            .into(),
        ];
        let denied = io().to_string();
        for e in errors {
            let text = format!("{e:#}");
            assert_eq!(text.matches(&denied).count(), 1, "{text}");
        }
    }
}
