//! The commands: each reads its arguments' files, runs the stages
//! (recipe → secrets → seal → image → output) and reports. Stages never
//! import from here.

pub mod build;
pub mod bundle;
pub mod check;
pub mod error;
pub mod flash;
pub mod fleet;
pub mod inject;
pub mod inspect;
pub mod progress;
pub mod report;
pub mod serve;
