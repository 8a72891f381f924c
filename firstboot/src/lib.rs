//! Device side of sealed-image.
//!
//! Flow: `sealed_bundle` (the sealed format the builder writes, a crate of
//! its own) → [`identity`] (the device key) → [`store`] (secrets resealed to the device,
//! on disk) → [`runtime`] (decrypted into `/run/secrets` at every boot).
//! [`provision`] ties the first steps together (boot bundle → store);
//! [`unseal`] the last ones (store → runtime). [`config`] reads
//! `/etc/sealed-firstboot.conf`; [`trust`] says which signers are pinned.

pub mod accounts;
pub mod config;
pub mod credentials;
pub mod fsutil;
pub mod identity;
pub mod provision;
pub mod restart;
pub mod runtime;
pub mod status;
pub mod store;
pub mod trust;
pub mod unseal;
