//! Environment variable source.

use super::Fetched;
use std::os::unix::ffi::OsStringExt;
use zeroize::Zeroizing;

pub fn fetch(var: &str) -> Fetched {
    // A secret's variable: no child process (a command source, mke2fs)
    // inherits it.
    crate::child_env::hide(var);
    match std::env::var_os(var) {
        Some(v) => Fetched::Found(Zeroizing::new(v.into_vec())),
        None => Fetched::Missing {
            how: format!("set the environment variable {var}"),
        },
    }
}
