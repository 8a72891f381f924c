//! What `build` and `inject` report (`--json`): the image, its key and
//! bundle, and the secrets sealed into it. Names and metadata only, never a
//! value or a key.

use crate::image::agent::AgentReport;
use crate::output::manifest::SecretInfo;
use serde::Serialize;
use std::path::PathBuf;

/// The part of the build and inject reports they share.
#[derive(Debug, Clone, Serialize)]
pub struct SealedImage {
    /// The image written.
    pub image: PathBuf,
    /// The image key file written beside it (separate key mode).
    pub key: Option<PathBuf>,
    /// `separate`, `embedded` or `recipient`.
    pub key_mode: &'static str,
    /// Bundle id (hex) and short key id, from the bundle header.
    pub bundle_id: String,
    pub key_id: String,
    /// When the bundle was sealed, unix seconds.
    pub created_at: u64,
    /// Who signed the bundle (`sealed-signer1…`); none: unsigned (format 2).
    pub signer: Option<String>,
    /// The signers the image pins in `/etc/sealed-firstboot.conf`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned_signers: Vec<String>,
    /// The recipe's secrets as build.json lists them.
    pub secrets: Vec<SecretInfo>,
    /// The device agent installed into the root filesystem, if asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
}

impl SealedImage {
    /// How many secrets were sealed (optional ones not provided are not).
    pub fn included(&self) -> usize {
        self.secrets.iter().filter(|s| s.included).count()
    }
}
