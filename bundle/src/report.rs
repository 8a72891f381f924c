//! How the binaries (this crate's and build-image) print an error, and
//! text from files they read: never a control character to the terminal.

/// The error and its causes as the binaries print them: each message of
/// the chain ([`chain`]), joined with ": ". Every library error of the
/// workspace names its cause only as its `source()`, never in its own
/// message, so each cause is said once. Control characters (from a file
/// name or a file's text quoted in a message) are shown as `?`
/// ([`printable`]), line breaks kept.
pub fn chain_message(e: &anyhow::Error) -> String {
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    chain(e)
        .split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The message of `e` followed by those of its causes (`source()`, then
/// its source, …), joined with ": "; empty messages are left out. For a
/// typed error that is recorded as text (a failed secret's reason).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `text` with every control character (escape sequences that would move
/// the cursor or erase a line, a carriage return, C1 controls) shown as
/// `?`: for what a file that anyone may have written says.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_as_question_marks() {
        assert_eq!(printable("a\u{1b}[2K\rb\u{9b}c\td"), "a?[2K?b?c\td");
        let e = anyhow::anyhow!("line one\nline \u{1b}two");
        assert_eq!(chain_message(&e), "line one\nline ?two");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}")]
    struct Reading(&'static str, #[source] std::io::Error);

    /// Each message of the chain once, in order, context first; a message
    /// that happens to contain its cause's words is not shortened.
    #[test]
    fn the_chain_is_walked_through_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = anyhow::Error::new(Reading("x", io)).context("loading permission denied");
        assert_eq!(
            chain_message(&e),
            "loading permission denied: reading x: permission denied"
        );
        let io = std::io::Error::other("gone");
        assert_eq!(chain(&Reading("y", io)), "reading y: gone");
    }
}
