//! The recipes the server shows a setup view for, and that view: every
//! secret of a recipe with its description, type, required or optional,
//! ✓/✗ for each device of its devices file (or for a plain build) with
//! where the value comes from, and for each missing store secret the exact
//! `build-image store set …` command. Computed like `build-image check
//! --devices` ([`crate::cmd::check::matrix_of`]): store secrets from the
//! verified metadata (nothing is decrypted or audited), other sources asked
//! as `check` asks them (environment, files, dotenv files). `command`
//! sources are run only when the server was started with `--deep`: a
//! recipe in a served directory would otherwise run its
//! commands at every refresh of every open page; without it their cells
//! are *unchecked* (neither ✓ nor ✗) and the recipe is not called ready.
//! The recipe and devices files are read again at every request.

use super::error::ApiError;
use super::ServeError;
use crate::cmd::check::{matrix_with, uses_store, Commands, DeviceRow};
use crate::recipe::devices::Device;
use crate::recipe::{Recipe, SourceSpec};
use crate::secrets::sources::store::{set_command, store_dir};
use crate::store::metadata::SecretMeta;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A recipe named on the command line (`--recipe`, `--devices`) or found
/// in a directory (`--recipes DIR`).
#[derive(Debug, Clone)]
pub struct RecipeFile {
    pub path: PathBuf,
    pub devices: Option<PathBuf>,
    /// Found in a directory: skipped (with a note) when unusable.
    pub found: bool,
}

/// A recipe the server serves.
#[derive(Debug, Clone, Serialize)]
pub struct RecipeEntry {
    /// In URLs: `/api/recipes/ID/status`.
    pub id: String,
    /// The recipe's image name.
    pub name: String,
    pub path: PathBuf,
    pub devices: Option<PathBuf>,
    pub uses_store: bool,
}

/// `recipe.toml` in `dir` and in its subdirectories (two levels down),
/// each with `devices.toml` or `devices.csv` beside it as its devices file.
pub fn discover(dir: &Path) -> Result<Vec<RecipeFile>, ServeError> {
    let mut out = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    if !dir.is_dir() {
        return Err(ServeError::Usage(format!(
            "--recipes {}: not a directory",
            dir.display()
        )));
    }
    while let Some((d, depth)) = dirs.pop() {
        let recipe = d.join("recipe.toml");
        if recipe.is_file() {
            let devices = ["devices.toml", "devices.csv"]
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file());
            out.push(RecipeFile {
                path: recipe,
                devices,
                found: true,
            });
        }
        if depth < 2 {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut subs: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            subs.sort();
            subs.reverse();
            dirs.extend(subs.into_iter().map(|p| (p, depth + 1)));
        }
    }
    Ok(out)
}

/// The store to serve: `--store`, else the store of the first recipe that
/// reads one, else `./secrets-store`.
pub fn store_for(store: Option<PathBuf>, recipes: &[RecipeFile]) -> PathBuf {
    if let Some(s) = store {
        return s;
    }
    recipes
        .iter()
        .filter_map(|r| Recipe::load(&r.path).ok())
        .find(uses_store)
        .map(|r| store_dir(&r))
        .unwrap_or_else(|| PathBuf::from("secrets-store"))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "recipe".into()
    } else {
        s
    }
}

/// Check the recipes at start: one named on the command line must load
/// and, when it reads the store, read the served one; one found in a
/// directory that does not is skipped with a note on stderr.
pub fn entries(files: &[RecipeFile], store: &Path) -> Result<Vec<RecipeEntry>, ServeError> {
    let mut out: Vec<RecipeEntry> = Vec::new();
    for f in files {
        let recipe = match Recipe::load(&f.path) {
            Ok(r) => r,
            Err(e) if f.found => {
                eprintln!("build-image serve: skipping {}: {e}", f.path.display());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let uses = uses_store(&recipe);
        if uses && !same_dir(&store_dir(&recipe), store) {
            let why = format!(
                "{} reads the store {}, and this server serves {}",
                f.path.display(),
                store_dir(&recipe).display(),
                store.display()
            );
            if f.found {
                eprintln!("build-image serve: skipping {why}");
                continue;
            }
            return Err(ServeError::Usage(format!(
                "{why}: serve one store at a time (--store DIR)"
            )));
        }
        if let Some(d) = &f.devices {
            let names = recipe.secrets.keys().cloned().collect();
            if let Err(e) = crate::recipe::devices::load(d, &names) {
                if f.found {
                    eprintln!("build-image serve: skipping {}: {e}", f.path.display());
                    continue;
                }
                return Err(ServeError::Usage(e.to_string()));
            }
        }
        let base = slug(&recipe.image.name);
        let mut id = base.clone();
        let mut n = 2;
        while out.iter().any(|e| e.id == id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        out.push(RecipeEntry {
            id,
            name: recipe.image.name.clone(),
            path: f.path.clone(),
            devices: f.devices.clone(),
            uses_store: uses,
        });
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub tags: Vec<String>,
}

/// What an unchecked cell says.
pub const NOT_RUN: &str =
    "a command source: not run by the setup view (`build-image serve --deep` runs command sources)";

#[derive(Debug, Serialize)]
pub struct CellStatus {
    pub device: String,
    pub present: bool,
    /// A command source that was not run: neither present nor missing.
    pub unchecked: bool,
    /// Where the value comes from (or would).
    pub from: String,
    /// How to provide it, when missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SecretStatus {
    pub secret: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub required: bool,
    pub source: String,
    /// The store secret it reads, if any.
    pub store_name: Option<String>,
    /// Present for every device.
    pub complete: bool,
    /// A command source that was not run (see [`NOT_RUN`]).
    pub unchecked: bool,
    pub devices: Vec<CellStatus>,
    /// The command that creates the missing store secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RecipeStatus {
    pub recipe: RecipeEntry,
    /// Whether the store's metadata was verified with the server's identity.
    pub verified: bool,
    /// No devices file: one column, a plain build (global scope).
    pub plain_build: bool,
    pub devices: Vec<DeviceInfo>,
    pub secrets: Vec<SecretStatus>,
    /// Required secrets missing for some device.
    pub missing_required: usize,
    /// Required secrets from command sources that were not run.
    pub unchecked_required: usize,
    /// Every required secret present for every device (none unchecked).
    pub ready: bool,
}

/// The column of a plain build: no device, no tags (the global scope).
pub const PLAIN_BUILD: &str = "";

/// A recipe's devices (or the plain build's column) and its matrix.
pub fn matrix(
    entry: &RecipeEntry,
    metas: &BTreeMap<String, SecretMeta>,
    deep: bool,
) -> Result<(Recipe, Vec<DeviceRow>), ApiError> {
    let recipe = Recipe::load(&entry.path).map_err(unusable)?;
    let devices = match &entry.devices {
        Some(d) => {
            let names = recipe.secrets.keys().cloned().collect();
            crate::recipe::devices::load(d, &names).map_err(unusable)?
        }
        None => vec![Device {
            name: PLAIN_BUILD.into(),
            recipient: None,
            overrides: BTreeMap::new(),
            tags: Vec::new(),
        }],
    };
    let commands = if deep {
        Commands::Run
    } else {
        Commands::Skip { hint: NOT_RUN }
    };
    let rows = matrix_with(&recipe, &devices, Some(metas), commands);
    Ok((recipe, rows))
}

fn unusable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("the recipe cannot be used as it is now: {e}"),
    )
}

/// The setup view of a recipe.
pub fn status(
    entry: &RecipeEntry,
    metas: &BTreeMap<String, SecretMeta>,
    verified: bool,
    deep: bool,
) -> Result<RecipeStatus, ApiError> {
    let (recipe, rows) = matrix(entry, metas, deep)?;
    let secrets: Vec<SecretStatus> = recipe
        .secrets
        .iter()
        .map(|(name, s)| {
            let store_name = match &s.source {
                Some(SourceSpec::Store(n)) => Some(n.clone()),
                _ => None,
            };
            let spec = crate::secrets::sources::effective(name, s.source.as_ref());
            let not_run = !deep && matches!(spec, SourceSpec::Command(_));
            let cells: Vec<CellStatus> = rows
                .iter()
                .filter_map(|row| {
                    row.secrets
                        .iter()
                        .find(|c| c.secret == *name)
                        .map(|c| CellStatus {
                            device: row.device.clone(),
                            present: c.present,
                            // A device's own source (devices file) was not
                            // the recipe's command.
                            unchecked: not_run && !c.present && c.how.as_deref() == Some(NOT_RUN),
                            from: c.from.clone(),
                            how: c.how.clone(),
                        })
                })
                .collect();
            let complete = cells.iter().all(|c| c.present);
            let unchecked = cells.iter().any(|c| c.unchecked);
            let command = match &store_name {
                Some(n) if !complete => Some(set_command(&recipe, name, n)),
                _ => None,
            };
            SecretStatus {
                secret: name.clone(),
                description: s.description.clone(),
                kind: s.kind.as_str(),
                required: s.required,
                source: crate::secrets::sources::describe(&recipe, &spec),
                store_name,
                complete,
                unchecked,
                devices: cells,
                command,
            }
        })
        .collect();
    let missing_required = secrets
        .iter()
        .filter(|s| s.required && s.devices.iter().any(|c| !c.present && !c.unchecked))
        .count();
    let unchecked_required = secrets.iter().filter(|s| s.required && s.unchecked).count();
    Ok(RecipeStatus {
        recipe: entry.clone(),
        verified,
        plain_build: entry.devices.is_none(),
        devices: rows
            .iter()
            .map(|r| DeviceInfo {
                name: r.device.clone(),
                tags: r.tags.clone(),
            })
            .collect(),
        secrets,
        missing_required,
        unchecked_required,
        ready: missing_required == 0 && unchecked_required == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs() {
        assert_eq!(slug("Store Demo_1"), "store-demo-1");
        assert_eq!(slug("!!"), "recipe");
    }
}
