//! How the binaries (this crate's and build-image) print an error, and
//! text from files they read: never a control character to the terminal.

/// The error and its causes, each said once: a message that already holds
/// its cause's text (`reading X: permission denied`) is not followed by it
/// again (`…: permission denied: permission denied`). Control characters
/// (from a file name or a file's text quoted in a message) are shown as
/// `?` ([`printable`]), line breaks kept.
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
    out.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
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
}
