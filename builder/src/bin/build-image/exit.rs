//! Exit codes, decided in one place (documented in the README and in
//! `--help`).

use build_image::error::BuildError;
use build_image::secrets::SecretsError;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const RECIPE: u8 = 3;
pub const MISSING_SECRETS: u8 = 4;
pub const SECRET_INVALID: u8 = 5;
pub const IMAGE: u8 = 6;
pub const REFUSED: u8 = 7;

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
            return s.exit_code();
        }
        if let Some(b) = cause.downcast_ref::<BuildError>() {
            // A store that is not what its key authenticates (11), or no
            // identity for it (10): the store's own codes, in builds too.
            let store = match b {
                BuildError::Secrets(s) => s.store_error().into_iter().collect(),
                BuildError::Fleet(f) => f.iter().filter_map(|(_, e)| e.store_error()).collect(),
                _ => Vec::new(),
            };
            if let Some(code) = store
                .iter()
                .map(|e| e.exit_code())
                .filter(|c| {
                    *c == build_image::store::exit::INTEGRITY
                        || *c == build_image::store::exit::IDENTITY
                })
                .max()
            {
                return code;
            }
            return match b {
                BuildError::Recipe(_) => RECIPE,
                BuildError::Secrets(SecretsError::Missing(_)) => MISSING_SECRETS,
                BuildError::Secrets(_) => SECRET_INVALID,
                BuildError::Invalid(_) => RECIPE,
                BuildError::Signing(_) => USAGE,
                // What sealing refuses once the recipe is valid depends on
                // the values: a template escape that cannot hold one, a
                // rendering or a bundle too large.
                BuildError::Bundle(
                    sealed_firstboot::bundle::BundleError::Manifest(_)
                    | sealed_firstboot::bundle::BundleError::Limit(_),
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
