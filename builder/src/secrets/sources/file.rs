//! File source (relative to the recipe): a regular file of at most a
//! secret's size; a FIFO, device or directory is refused at once.

use super::{Fetched, SourceError};
use crate::io::bounded;
use crate::io::limit::{read_file, BoundedError};
use std::path::Path;

pub fn fetch(name: &str, path: &Path) -> Result<Fetched, SourceError> {
    match read_file(path, bounded::MAX_VALUE_BYTES) {
        Ok(v) => Ok(Fetched::Found(v)),
        Err(BoundedError::NotFound) => Ok(Fetched::Missing {
            how: format!("create the file {}", path.display()),
        }),
        Err(BoundedError::Io(source)) => Err(SourceError::Read {
            name: name.into(),
            path: path.to_path_buf(),
            cause: source,
        }),
        Err(e) => Err(SourceError::Invalid {
            name: name.into(),
            reason: format!("{}: {e}", path.display()),
        }),
    }
}
