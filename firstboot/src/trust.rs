//! Which signers the device pins, and where that list comes from.
//!
//! The `signer = …` lines of `/etc/sealed-firstboot.conf` (written by
//! `build-image build` and `inject --install-agent`, or by hand on a
//! deployed device) pin the image's signers. A signed bundle may carry a
//! list of its own (`build-image bundle --set-signers`): once applied, that
//! list is kept with the store (`signers.json`, replaced atomically with
//! it) and is the one that counts, so a leaked key can be retired
//! fleet-wide by a bundle signed with a key that stays. With no signer
//! pinned at all (images built before signatures), unsigned bundles are
//! still accepted, and signed ones whose signature verifies.

use crate::config::Config;
use crate::store::Current;
use sealed_bundle::{Policy, Signer};
use serde::Serialize;

/// Where the pinned signers come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum TrustSource {
    /// Nothing is pinned.
    None,
    /// The `signer` lines of `/etc/sealed-firstboot.conf`.
    Config,
    /// The list a signed bundle set (its id).
    Bundle { bundle_id: String },
}

impl std::fmt::Display for TrustSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustSource::None => f.write_str("nothing pinned"),
            TrustSource::Config => f.write_str("/etc/sealed-firstboot.conf"),
            TrustSource::Bundle { bundle_id } => write!(f, "set by bundle {bundle_id}"),
        }
    }
}

/// The signers in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub signers: Vec<Signer>,
    pub source: TrustSource,
}

impl Trust {
    /// The list a bundle set (kept with the store), else the configuration's.
    pub fn effective(config: &Config, current: Option<&Current>) -> Trust {
        if let Some(list) = current.and_then(|c| c.signers.as_ref()) {
            // Checked when the store was read.
            let signers = list.signers.iter().filter_map(|s| s.parse().ok()).collect();
            return Trust {
                signers,
                source: TrustSource::Bundle {
                    bundle_id: list.set_by.clone(),
                },
            };
        }
        Trust {
            signers: config.signers.clone(),
            source: if config.signers.is_empty() {
                TrustSource::None
            } else {
                TrustSource::Config
            },
        }
    }

    /// Unsigned (format 2) bundles are accepted only while nothing is pinned.
    pub fn accepts_unsigned(&self) -> bool {
        self.signers.is_empty()
    }

    /// What a bundle must pass on this device.
    pub fn policy(&self, config: &Config) -> Policy {
        Policy {
            signers: self.signers.clone(),
            paths: config.path_policy(),
        }
    }
}
