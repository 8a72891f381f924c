//! Test support for every crate of the workspace (`builder`, `firstboot`
//! and the end-to-end `tests`), one copy of each helper:
//!
//! * [`tools`]: real tools found in `$PATH` and the sbin directories, and
//!   the rule for what is missing (a tool, root): locally the test skips
//!   with a printed reason, under `CI=true` it fails.
//! * [`run`]: run a tool or a command, assert how it ended, keep a
//!   transcript of everything printed.
//! * [`files`]: sparse-file fixtures, byte ranges, marker searches in bytes,
//!   files and trees.
//!
//! It depends on neither `build-image` nor `sealed-firstboot` (they take it
//! as a dev-dependency).

pub mod files;
pub mod run;
pub mod tools;

pub use files::*;
pub use run::*;
pub use tools::*;
