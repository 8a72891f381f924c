//! The builder's error type: what a build, an inject, a fleet or a bundle
//! can fail with. `main`'s exit codes are decided from these variants.

use crate::image;
use crate::recipe;
use crate::secrets::SecretsError;
use sealed_firstboot::bundle::BundleError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Not marked as the source: the message already holds it, and a chain
    /// printer (`{:#}`) would print it twice.
    #[error("sealing the bundle: {0}")]
    Bundle(BundleError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Agent(#[from] image::agent::AgentError),
    #[error("{context}: {cause}")]
    Io {
        context: String,
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
