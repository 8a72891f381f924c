//! Build-time password hashing (`process = "mkpasswd-yescrypt"`): the
//! plaintext password never reaches the image, only its `$y$…` hash.

use crate::recipe::Process;
use yescrypt::{PasswordHasher, Yescrypt};
use zeroize::Zeroizing;

/// Apply `process` to a value. `mkpasswd-yescrypt` replaces the password by
/// its `$y$…` hash (as `mkpasswd -m yescrypt` prints), so the plaintext
/// never reaches the image.
pub fn apply(process: Process, value: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, String> {
    match process {
        Process::None => Ok(value),
        Process::MkpasswdYescrypt => {
            if value.is_empty() {
                return Err("an empty password cannot be hashed".into());
            }
            let hash = Yescrypt::default()
                .hash_password(&value)
                .map_err(|e| format!("yescrypt: {e}"))?;
            Ok(Zeroizing::new(hash.as_str().as_bytes().to_vec()))
        }
    }
}
