//! Where a new value comes from: standard input (not echoed on a
//! terminal), a file, or a random generator. Never the command line.

use super::metadata::Generator;
use super::StoreError;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Largest value accepted (bundles carry config files and certificates,
/// not disk images).
pub const MAX_VALUE: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub enum ValueInput {
    /// Standard input: the whole stream, or one hidden line on a terminal.
    Stdin,
    File(PathBuf),
    Generate(Generator),
    /// A value already read (by `build-image serve`, from a request body).
    Given(GivenValue),
}

/// A value in memory: zeroized on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct GivenValue(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for GivenValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GivenValue({} bytes)", self.0.len())
    }
}

/// Character sets for `--generate`.
pub const CHARSETS: &[(&str, &str)] = &[
    (
        "alnum",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    ),
    ("hex", "0123456789abcdef"),
    (
        "base64url",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    ),
    ("digits", "0123456789"),
    (
        "ascii",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~",
    ),
];

/// Check a generator's options.
pub fn generator(charset: &str, length: usize) -> Result<Generator, StoreError> {
    if !CHARSETS.iter().any(|(n, _)| *n == charset) {
        let names: Vec<&str> = CHARSETS.iter().map(|(n, _)| *n).collect();
        return Err(StoreError::Value(format!(
            "--charset {charset:?}: use one of {}",
            names.join(", ")
        )));
    }
    if !(8..=4096).contains(&length) {
        return Err(StoreError::Value(format!(
            "--length {length}: use 8 to 4096 characters"
        )));
    }
    Ok(Generator {
        charset: charset.into(),
        length,
    })
}

/// A random value: each character drawn uniformly from the set (OsRng).
pub fn generate(g: &Generator) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    use rand::Rng;
    let set = CHARSETS
        .iter()
        .find(|(n, _)| *n == g.charset)
        .map(|(_, s)| s.as_bytes())
        .ok_or_else(|| StoreError::Value(format!("unknown charset {:?}", g.charset)))?;
    let mut rng = rand::rngs::OsRng;
    let mut out = Zeroizing::new(Vec::with_capacity(g.length));
    for _ in 0..g.length {
        out.push(set[rng.gen_range(0..set.len())]);
    }
    Ok(out)
}

/// Read the value. `name` only labels the prompt.
pub fn read(input: &ValueInput, name: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let value = match input {
        ValueInput::Generate(g) => generate(g)?,
        ValueInput::Given(v) if v.0.len() as u64 > MAX_VALUE => {
            return Err(StoreError::Value(format!(
                "the value is larger than {MAX_VALUE} bytes"
            )))
        }
        ValueInput::Given(v) => v.0.clone(),
        ValueInput::File(p) => {
            // The user's path: links followed, a pipe (`<(command)`) read,
            // one nobody writes to read as empty (never waited on).
            let mut f = crate::io::open_for_reading(p)
                .map_err(|e| StoreError::Value(format!("--from-file {}: {e}", p.display())))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            bounded(&mut f, size)
                .map_err(|e| StoreError::Value(format!("--from-file {}: {e}", p.display())))?
        }
        ValueInput::Stdin if std::io::stdin().is_terminal() => {
            let first = prompt_hidden(&format!("value for {name} (not shown): "))?;
            let again = prompt_hidden(&format!("again, to confirm {name}: "))?;
            if first != again {
                return Err(StoreError::Value(
                    "the two entries differ; nothing was stored".into(),
                ));
            }
            first
        }
        ValueInput::Stdin => bounded(&mut std::io::stdin().lock(), 0)
            .map_err(|e| StoreError::Value(format!("reading standard input: {e}")))?,
    };
    if value.is_empty() {
        return Err(StoreError::Value(
            "the value is empty; pipe it on standard input, or use --from-file FILE or --generate"
                .into(),
        ));
    }
    Ok(value)
}

/// Read a value of at most [`MAX_VALUE`] bytes into a zeroized buffer.
fn bounded(r: &mut dyn Read, size_hint: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    crate::io::limit::read_bounded(r, MAX_VALUE, size_hint).map_err(|e| match e {
        crate::io::limit::BoundedReadError::TooLarge { .. } => {
            format!("the value is larger than {MAX_VALUE} bytes")
        }
        crate::io::limit::BoundedReadError::Io(e) => e.to_string(),
    })
}

/// Prompt on stderr and read one line from the terminal with echo off.
fn prompt_hidden(prompt: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let err = |e: std::io::Error| StoreError::Value(format!("reading the terminal: {e}"));
    let saved = tcgetattr(&stdin).map_err(|e| err(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off before the prompt appears: whoever sees the prompt can type.
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|e| err(e.into()))?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    // Room for any line typed, so that it is never moved (and copied).
    let mut line = Zeroizing::new(String::with_capacity(64 * 1024));
    let r = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    r.map_err(err)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(Zeroizing::new(line.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_use_the_charset_and_length() {
        let g = generator("hex", 40).unwrap();
        let a = generate(&g).unwrap();
        let b = generate(&g).unwrap();
        assert_eq!(a.len(), 40);
        assert!(a.iter().all(|c| b"0123456789abcdef".contains(c)));
        assert_ne!(a, b);
        assert!(matches!(
            generator("emoji", 20),
            Err(crate::store::StoreError::Value(..))
        ));
        assert!(matches!(
            generator("alnum", 4),
            Err(crate::store::StoreError::Value(..))
        ));
    }

    #[test]
    fn given_values_are_read_and_never_shown() {
        let v = ValueInput::Given(GivenValue(Zeroizing::new(b"g1ven-MARKER".to_vec())));
        assert_eq!(&read(&v, "A").unwrap()[..], b"g1ven-MARKER");
        assert!(!format!("{v:?}").contains("MARKER"));
        let empty = ValueInput::Given(GivenValue(Zeroizing::new(Vec::new())));
        assert!(matches!(
            read(&empty, "A"),
            Err(crate::store::StoreError::Value(..))
        ));
    }
}
