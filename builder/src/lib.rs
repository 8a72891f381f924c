//! build-image: recipe → secrets → bundle → image → outputs.

pub mod image;
