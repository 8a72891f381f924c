//! Store operations for requests: the same lock, verification and commits
//! as the CLI. Every request opens the store (taking its lock, which CLI
//! commands wait for too), verifies it whole with the server's identity
//! (a member of the store), works, and lets go. Requests of this process
//! queue on one mutex first, so blocking threads never pile up on the lock.
//! Without an identity the server reads metadata unverified (and says so)
//! and refuses every change and every reveal (403).

use super::error::ApiError;
use crate::store::audit::Entry;
use crate::store::crypto::Identity;
use crate::store::layout::Store;
use crate::store::metadata::SecretMeta;
use crate::store::session::{self, RecipientsCheck, Session};
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a read sees: verified with the identity, or read as it is.
pub struct View {
    pub metas: BTreeMap<String, SecretMeta>,
    pub log: Vec<Entry>,
    pub verified: bool,
    pub id: Option<String>,
}

pub struct StoreAccess {
    dir: PathBuf,
    identity: Option<Arc<Identity>>,
    queue: tokio::sync::Mutex<()>,
}

const NO_IDENTITY: &str = "the server holds no identity, so it can neither change nor reveal values: start it with --identity FILE (a member of the store: `build-image store recipients add` its key)";

impl StoreAccess {
    pub fn new(dir: PathBuf, identity: Option<Arc<Identity>>) -> StoreAccess {
        StoreAccess {
            dir,
            identity,
            queue: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// At start: the store must open (and verify, with an identity); what
    /// the start line says about it.
    pub fn check_at_start(&self) -> Result<String, StoreError> {
        let view = view(&self.dir, self.identity.as_deref())?;
        Ok(match &self.identity {
            Some(id) => format!(
                "the store {} (id {}, {} secret(s); verified as {}: values can be changed and revealed)",
                self.dir.display(),
                view.id.unwrap_or_default(),
                view.metas.len(),
                id.recipients()
                    .first()
                    .map(|r| crate::store::commands::short_key(r))
                    .unwrap_or_default()
            ),
            None => format!(
                "the store {} ({} secret(s), UNVERIFIED and read-only: no identity; --identity FILE of a member verifies it and allows changes)",
                self.dir.display(),
                view.metas.len()
            ),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _turn = self.queue.lock().await;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| ApiError::internal("the store operation failed unexpectedly"))?
    }

    /// Read the store's metadata and log.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(View) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let dir = self.dir.clone();
        let identity = self.identity.clone();
        self.blocking(move || f(view(&dir, identity.as_deref())?))
            .await
    }

    /// Work on the verified store with the identity (changes, reveals).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session, &Identity) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let Some(identity) = self.identity.clone() else {
            return Err(ApiError::forbidden(NO_IDENTITY));
        };
        let dir = self.dir.clone();
        self.blocking(move || {
            let mut store = Store::open(&dir)?;
            let mut s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)?;
            f(&mut s, &identity)
        })
        .await
    }
}

fn view(dir: &std::path::Path, identity: Option<&Identity>) -> Result<View, StoreError> {
    let mut store = Store::open(dir)?;
    Ok(match identity {
        Some(id) => {
            let s = Session::open(&mut store, id, RecipientsCheck::MustMatch)?;
            View {
                id: Some(s.id()),
                metas: s.metas,
                log: s.log,
                verified: true,
            }
        }
        None => {
            let u = session::peek(&store)?;
            View {
                metas: u.metas,
                log: u.log,
                verified: false,
                id: u.id,
            }
        }
    })
}
