//! `build-image check --devices`: the device × secret matrix, resolved
//! from the store's metadata (nothing decrypted) and the recipe's other
//! sources. `build-image serve` shows the same matrix.

use crate::recipe::devices::{Device, Override};
use crate::recipe::{Recipe, SourceSpec};
use crate::secrets::sources::store::{gone_but_pinned, has_store, set_command, store_dir};
use crate::secrets::sources::{self, Fetched};
use crate::store::commands::resolve;
use crate::store::crypto::Identity;
use crate::store::layout::Store;
use crate::store::metadata::SecretMeta;
use crate::store::session::{self, RecipientsCheck, Session};
use crate::store::StoreError;
use serde::Serialize;
use std::collections::BTreeMap;

/// One cell of the `check --devices` matrix.
#[derive(Debug, Serialize)]
pub struct Cell {
    pub secret: String,
    pub present: bool,
    /// Where the value would come from (never the value).
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeviceRow {
    pub device: String,
    pub tags: Vec<String>,
    pub secrets: Vec<Cell>,
}

/// The device × secret matrix: resolved from metadata only, nothing is
/// decrypted. The metadata is verified when an identity is at hand;
/// `verified` says whether it was.
pub fn matrix(recipe: &Recipe, devices: &[Device]) -> Result<(Vec<DeviceRow>, bool), StoreError> {
    let dir = store_dir(recipe);
    let uses_store = uses_store(recipe);
    if uses_store && !has_store(&dir) {
        if let Some(e) = gone_but_pinned(&dir) {
            return Err(e);
        }
    }
    let (store_metas, verified) = if uses_store && has_store(&dir) {
        let mut store = Store::open(&dir)?;
        match Identity::load_optional(None)? {
            Some(identity) => {
                let s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)?;
                (Some(s.metas.clone()), true)
            }
            None => (Some(session::peek(&store)?.metas), false),
        }
    } else {
        (None, true)
    };
    Ok((matrix_of(recipe, devices, store_metas.as_ref()), verified))
}

/// Whether `recipe` reads any secret from the store.
pub fn uses_store(recipe: &Recipe) -> bool {
    recipe
        .secrets
        .values()
        .any(|s| matches!(s.source, Some(SourceSpec::Store(_))))
}

/// The device × secret matrix from the store's metadata (`None`: no
/// store), as [`matrix`] makes it: store secrets resolved device > tag >
/// global from metadata alone, other sources asked once each (their value
/// dropped at once), command sources included.
pub fn matrix_of(
    recipe: &Recipe,
    devices: &[Device],
    store_metas: Option<&BTreeMap<String, SecretMeta>>,
) -> Vec<DeviceRow> {
    matrix_with(recipe, devices, store_metas, Commands::Run)
}

/// Whether [`matrix_with`] runs `command` sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commands {
    Run,
    /// Not run: their cells are missing, `how` says why and what runs them.
    Skip {
        hint: &'static str,
    },
}

/// [`matrix_of`], with `command` sources run or not. A caller that has
/// verified the store passes its metadata (`build-image serve`).
pub fn matrix_with(
    recipe: &Recipe,
    devices: &[Device],
    store_metas: Option<&BTreeMap<String, SecretMeta>>,
    commands: Commands,
) -> Vec<DeviceRow> {
    let metas: BTreeMap<String, Option<SecretMeta>> = store_metas
        .iter()
        .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
        .collect();
    // Sources other than the store: asked once, the value dropped at once.
    let mut plain: BTreeMap<String, (bool, String, Option<String>)> = BTreeMap::new();
    devices
        .iter()
        .map(|d| {
            let secrets = recipe
                .secrets
                .iter()
                .map(|(secret, s)| {
                    if let Some(o) = d.overrides.get(secret) {
                        let from = match o {
                            Override::Value(_) => "devices file (value)".to_string(),
                            Override::Source(spec) => {
                                format!("devices file: {}", sources::describe(recipe, spec))
                            }
                        };
                        return Cell {
                            secret: secret.clone(),
                            present: true,
                            from,
                            how: None,
                        };
                    }
                    let spec = sources::effective(secret, s.source.as_ref());
                    if let SourceSpec::Store(name) = &spec {
                        let meta = metas.get(name).and_then(|m| m.as_ref());
                        return match meta.and_then(|m| resolve(m, &d.name, &d.tags)) {
                            Some((scope, v)) => Cell {
                                secret: secret.clone(),
                                present: true,
                                from: format!("store {name} {scope} v{v}"),
                                how: None,
                            },
                            None => Cell {
                                secret: secret.clone(),
                                present: false,
                                from: format!("store {name}"),
                                how: Some(set_command(recipe, secret, name)),
                            },
                        };
                    }
                    let (present, from, how) = plain
                        .entry(secret.clone())
                        .or_insert_with(|| {
                            let from = sources::describe(recipe, &spec);
                            if let (SourceSpec::Command(_), Commands::Skip { hint }) =
                                (&spec, commands)
                            {
                                return (false, from, Some(hint.to_string()));
                            }
                            match sources::fetch(recipe, secret, &spec) {
                                Ok(Fetched::Found(_)) => (true, from, None),
                                Ok(Fetched::Missing { how }) => (false, from, Some(how)),
                                Err(e) => (false, from, Some(e.to_string())),
                            }
                        })
                        .clone();
                    Cell {
                        secret: secret.clone(),
                        present,
                        from,
                        how,
                    }
                })
                .collect();
            DeviceRow {
                device: d.name.clone(),
                tags: d.tags.clone(),
                secrets,
            }
        })
        .collect()
}

/// The matrix as a text table.
pub fn render_matrix(rows: &[DeviceRow]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.device);
        if !row.tags.is_empty() {
            out.push_str(&format!("  (tags: {})", row.tags.join(", ")));
        }
        out.push('\n');
        for cell in &row.secrets {
            let mark = if cell.present { "✓" } else { "✗" };
            out.push_str(&format!("  {mark} {:<24} {}\n", cell.secret, cell.from));
            if let Some(how) = &cell.how {
                out.push_str(&format!("    └ missing: {how}\n"));
            }
        }
    }
    out
}
