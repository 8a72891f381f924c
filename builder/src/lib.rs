//! build-image: recipe → secrets → bundle → image → outputs.
//!
//! [`recipe`] parses the recipe and [`plan`] turns it into a layout;
//! [`sources`] fetch values; [`secrets`] checks and collects them (with
//! [`password_hash`]); [`sealing`] seals them, signed with the key
//! [`signing`] finds (the bundle format lives in
//! `sealed_bundle`); [`image`] assembles the disk; [`bmap`] and
//! [`output`] write the outputs and move them into place; [`io`] holds the
//! shared byte streams. [`build`], [`inject`], [`fleet`], [`update`],
//! [`flash`] and [`inspect`] are the commands; [`serve`] is the web page
//! and REST API over the [`store`]. See ARCHITECTURE.md.

pub mod bmap;
pub mod build;
pub mod child_env;
pub mod devices;
pub mod error;
pub mod flash;
pub mod fleet;
pub mod host_tools;
pub mod image;
pub mod inject;
pub mod inspect;
pub mod io;
pub mod output;
pub mod password_hash;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod recipient;
pub mod report;
pub mod sealing;
pub mod secrets;
pub mod serve;
pub mod signing;
pub mod sources;
pub mod store;
pub mod update;
