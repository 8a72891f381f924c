//! How the binaries (this crate's and build-image) print an error.

/// The error and its causes, each said once: a message that already holds
/// its cause's text (`reading X: permission denied`) is not followed by it
/// again (`…: permission denied: permission denied`).
pub fn chain_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
