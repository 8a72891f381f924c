//! Exit codes, decided in one place (documented in the README and in
//! `--help`).

use build_image::cmd::error::BuildError;
use build_image::secrets::SecretsError;
use build_image::store::ErrorKind;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const RECIPE: u8 = 3;
pub const MISSING_SECRETS: u8 = 4;
pub const SECRET_INVALID: u8 = 5;
pub const IMAGE: u8 = 6;
pub const REFUSED: u8 = 7;
/// The store's own codes.
pub const STORE_EXISTS: u8 = 8;
pub const STORE_NOT_FOUND: u8 = 9;
pub const STORE_IDENTITY: u8 = 10;
pub const STORE_INTEGRITY: u8 = 11;

/// The exit code of a store error of this kind.
pub fn store_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Other => FAILURE,
        ErrorKind::Usage => USAGE,
        ErrorKind::Exists => STORE_EXISTS,
        ErrorKind::NotFound => STORE_NOT_FOUND,
        ErrorKind::Identity => STORE_IDENTITY,
        ErrorKind::Integrity => STORE_INTEGRITY,
    }
}

/// Marks an error as a usage error (exit code 2).
#[derive(Debug)]
pub struct UsageError;

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid arguments")
    }
}

/// The exit code of a failed command, from what its error chain holds.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        return USAGE;
    }
    if let Some(f) = e.downcast_ref::<build_image::cmd::flash::FlashError>() {
        return if f.is_refusal() { REFUSED } else { IMAGE };
    }
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<build_image::store::StoreError>() {
            return store_code(s.kind());
        }
        if let Some(b) = cause.downcast_ref::<BuildError>() {
            // A store that is not what its key authenticates (11), or no
            // identity for it (10): the store's own codes, in builds too.
            let store = match b {
                BuildError::Secrets(s) => s.store_error().into_iter().collect(),
                BuildError::Fleet(f) => f.iter().filter_map(|(_, e)| e.store_error()).collect(),
                _ => Vec::new(),
            };
            if let Some(kind) = store
                .iter()
                .filter(|e| e.is_store_trouble())
                .map(|e| e.kind())
                .max()
            {
                return store_code(kind);
            }
            return match b {
                BuildError::Recipe(_) => RECIPE,
                BuildError::Secrets(SecretsError::Missing(_)) => MISSING_SECRETS,
                BuildError::Secrets(_) => SECRET_INVALID,
                BuildError::Invalid(_) => RECIPE,
                BuildError::Plan(build_image::recipe::plan::PlanError::Invalid(_)) => RECIPE,
                BuildError::Signing(_) => USAGE,
                // What sealing refuses once the recipe is valid depends on
                // the values: a template escape that cannot hold one, a
                // rendering or a bundle too large.
                BuildError::Bundle(
                    sealed_bundle::BundleError::Manifest(_) | sealed_bundle::BundleError::Limit(_),
                ) => SECRET_INVALID,
                BuildError::Fleet(f)
                    if f.iter().all(|(_, e)| matches!(e, SecretsError::Missing(_))) =>
                {
                    MISSING_SECRETS
                }
                BuildError::Fleet(_) => SECRET_INVALID,
                _ => IMAGE,
            };
        }
        if cause
            .downcast_ref::<build_image::recipe::RecipeError>()
            .is_some()
        {
            return RECIPE;
        }
    }
    FAILURE
}
