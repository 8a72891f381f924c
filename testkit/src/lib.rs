//! Test support for every crate of the workspace (`builder`, `firstboot`
//! and the end-to-end `tests`), one copy of each helper:
//!
//! * [`tools`]: real tools found in `$PATH` and the sbin directories, and
//!   the rule for what is missing (a tool, root): locally the test skips
//!   with a printed reason, under `CI=true` it fails.
//! * [`run`]: run a tool or a command, assert how it ended, keep a
//!   transcript of everything printed.
//! * [`scratch`]: a temporary directory and a path in it.
//! * [`files`]: sparse-file fixtures, byte ranges, marker searches in bytes,
//!   files and trees.
//! * [`modules`]: a crate's module graph read from its sources, and the
//!   check that no modules refer to each other in a circle.
//!
//! It depends on neither `build-image` nor `sealed-firstboot` (they take it
//! as a dev-dependency).

pub mod files;
pub mod modules;
pub mod run;
pub mod scratch;
pub mod tools;

/// The head of a recipe for an image of one 64 MiB ESP that holds the
/// secrets; the `[secrets.*]` tables follow.
pub const ESP_ONLY: &str = r#"
[image]
name = "t"

[[partition]]
label = "ESP"
type = "esp"
size = "64MiB"
secrets = true
"#;

pub use files::*;
pub use run::*;
pub use scratch::*;
pub use tools::*;
