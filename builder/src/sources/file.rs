//! File source (relative to the recipe).

use super::{Fetched, SourceError};
use std::path::Path;
use zeroize::Zeroizing;

pub fn fetch(name: &str, path: &Path) -> Result<Fetched, SourceError> {
    match std::fs::read(path) {
        Ok(v) => Ok(Fetched::Found(Zeroizing::new(v))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Fetched::Missing {
            how: format!("create the file {}", path.display()),
        }),
        Err(source) => Err(SourceError::Read {
            name: name.into(),
            path: path.to_path_buf(),
            source,
        }),
    }
}
