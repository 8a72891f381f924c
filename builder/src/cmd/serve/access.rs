//! Store operations for requests: the same lock, verification and commits
//! as the CLI. Every request opens the store (taking its lock, which CLI
//! commands wait for too), verifies it whole with the server's identity
//! (a member of the store), works, and lets go. Requests of this process
//! queue on one mutex first, so blocking threads never pile up on the lock.
//! Without an identity the server reads metadata unverified (and says so)
//! and refuses every change and every reveal (403).
//!
//! Reads that queue together share one verification: a read may use the
//! view of a verification that *began after the read arrived* (and that no
//! change of this server followed), as if it had run at that moment. So
//! every answer is what a full verification found at some time between the
//! request and the response, as the CLI's would be; many readers waiting
//! behind a writer are served by one verification.

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
use std::time::Instant;

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
    /// The last verification: when it began, and what it found.
    last: std::sync::Mutex<Option<(Instant, Arc<View>)>>,
}

const NO_IDENTITY: &str = "the server holds no identity, so it can neither change nor reveal values: start it with --identity FILE (a member of the store: `build-image store recipients add` its key)";

impl StoreAccess {
    pub fn new(dir: PathBuf, identity: Option<Arc<Identity>>) -> StoreAccess {
        StoreAccess {
            dir,
            identity,
            queue: tokio::sync::Mutex::new(()),
            last: std::sync::Mutex::new(None),
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

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<View>)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the store's metadata and log: verified now, or by a
    /// verification that began after this call (see the module's doc).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&View) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let arrived = Instant::now();
        let _turn = self.queue.lock().await;
        let shared = match &*self.last() {
            Some((began, v)) if *began >= arrived => Some(v.clone()),
            _ => None,
        };
        let view = match shared {
            Some(v) => v,
            None => {
                let dir = self.dir.clone();
                let identity = self.identity.clone();
                let began = Instant::now();
                let v = tokio::task::spawn_blocking(move || view(&dir, identity.as_deref()))
                    .await
                    .map_err(|_| ApiError::internal("the store operation failed unexpectedly"))?;
                let v = match v {
                    Ok(v) => Arc::new(v),
                    Err(e) => {
                        *self.last() = None;
                        return Err(e.into());
                    }
                };
                *self.last() = Some((began, v.clone()));
                v
            }
        };
        f(&view)
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
        let _turn = self.queue.lock().await;
        // Whatever happens now, later reads verify again.
        *self.last() = None;
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&dir)?;
            let mut s = Session::open(&mut store, &identity, RecipientsCheck::MustMatch)?;
            f(&mut s, &identity)
        })
        .await
        .map_err(|_| ApiError::internal("the store operation failed unexpectedly"))?
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
