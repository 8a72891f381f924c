//! build-image: recipe → secrets → bundle → image → outputs.
//!
//! [`recipe`] parses the recipe; [`sources`] fetch values; [`secrets`]
//! checks and collects them (with [`process`]ing); the bundle format lives
//! in `sealed_firstboot::bundle`; [`image`] assembles the disk; [`output`]
//! writes checksums and moves results into place; [`build`] runs the flow.

pub mod bmap;
pub mod build;
pub mod devices;
pub mod error;
pub mod flash;
pub mod fleet;
pub mod image;
pub mod inject;
pub mod inspect;
pub mod io;
pub mod output;
pub mod password_hash;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod sealing;
pub mod secrets;
pub mod sources;
pub mod store;
pub mod update;
