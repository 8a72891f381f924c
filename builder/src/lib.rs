//! build-image: recipe → secrets → seal → image → output, driven by the
//! commands in [`cmd`].
//!
//! [`recipe`] parses the recipe, the devices files and turns them into a
//! layout ([`recipe::plan`]); [`secrets`] fetches values from their
//! [`secrets::sources`], checks and collects them; [`seal`] seals them,
//! signed with the key [`seal::signing`] finds (the bundle format lives in
//! `sealed_bundle`); [`image`] assembles the disk; [`output`]
//! writes the outputs (with the block map, [`output::bmap`]) and moves them
//! into place; [`io`] holds the shared byte streams. [`cmd`] holds the
//! commands (build, inject, fleet, bundle, inspect, flash, serve);
//! [`store`] is the secret store, a library of its own. See ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod child_env;
pub mod cmd;
pub mod host_tools;
pub mod image;
pub mod io;
pub mod output;
pub mod recipe;
pub mod recipient;
pub mod seal;
pub mod secrets;
pub mod store;
