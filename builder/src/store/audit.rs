//! `audit.jsonl`: one JSON object a line for every operation that reads
//! or changes values. Never a value.
//!
//! Each line names the SHA-256 of the line before it (`prev`; the first
//! names the store id) and carries its HMAC under the store key of its
//! generation (`mac`). `audit.head` holds the authenticated count and last
//! line's hash. An edited line breaks its MAC or the next line's `prev`, a
//! removed or reordered one the chain, a removed tail the head; lines of
//! an earlier key generation are held by the chain up to a line (or the
//! head) under the current key. Lines past the head (a command killed
//! between its line and the head) are kept when their MACs hold.

use super::integrity::{hex, StoreKey};
use super::metadata::now;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The operations logged without a change to the store (a read): the
/// only ones after the length `store.toml` records.
pub const READ_OPS: &[&str] = &["get", "read", "export"];

/// Largest audit log read (every command reads and checks it whole).
pub const MAX_LOG: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// RFC 3339 UTC.
    pub at: String,
    /// `$USER`, or the CI job (`github:ACTOR run ID`, `gitlab:USER job ID`, …).
    pub by: String,
    /// init, get, set, update, rotate, rm, rekey, recipients, export,
    /// import, migrate, read (a build or check).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Free text without values: the recipe of a build, a file name, a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The store key generation that authenticates the line.
    #[serde(default)]
    pub generation: u32,
    /// SHA-256 of the previous line (the store id for the first).
    #[serde(default)]
    pub prev: String,
    /// HMAC-SHA256 of the line without this field.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl Entry {
    pub fn new(op: &str) -> Entry {
        Entry {
            at: now(),
            by: actor(),
            op: op.into(),
            name: None,
            scope: None,
            version: None,
            detail: None,
            generation: 0,
            prev: String::new(),
            mac: String::new(),
        }
    }
    pub fn secret(mut self, name: &str, scope: &str, version: u32) -> Entry {
        self.name = Some(name.into());
        self.scope = Some(scope.into());
        self.version = Some(version);
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> Entry {
        self.detail = Some(d.into());
        self
    }

    /// The bytes the MAC covers: the line without its `mac`.
    fn unsigned(&self) -> Vec<u8> {
        let mut e = self.clone();
        e.mac.clear();
        serde_json::to_vec(&e).unwrap_or_default()
    }
}

/// What acts for the user in this process (`build-image serve`), set once.
static VIA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Record from now on that changes and reads are made through `what`: the
/// actor becomes `USER via WHAT` in metadata and audit lines.
pub fn act_via(what: &str) {
    let _ = VIA.set(what.to_string());
}

/// Who is acting: the CI job when running in CI, else the user (and what
/// acts for them, see [`act_via`]).
pub fn actor() -> String {
    match VIA.get() {
        Some(via) => format!("{} via {via}", who()),
        None => who(),
    }
}

fn who() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").is_some() {
        return format!(
            "github:{} run {} ({})",
            var("GITHUB_ACTOR").unwrap_or_else(|| "?".into()),
            var("GITHUB_RUN_ID").unwrap_or_else(|| "?".into()),
            var("GITHUB_REPOSITORY").unwrap_or_else(|| "?".into())
        );
    }
    if var("GITLAB_CI").is_some() {
        return format!(
            "gitlab:{} job {}",
            var("GITLAB_USER_LOGIN").unwrap_or_else(|| "?".into()),
            var("CI_JOB_ID").unwrap_or_else(|| "?".into())
        );
    }
    if let Some(id) = var("CI_JOB_ID").or_else(|| var("BUILD_ID")) {
        return format!("ci:{} job {id}", var("USER").unwrap_or_else(|| "?".into()));
    }
    var("USER")
        .or_else(|| var("LOGNAME"))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Where the log ends: what the next line chains to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// Lines.
    pub count: u64,
    /// Bytes (where the next line is written).
    pub len: u64,
    /// `prev` of the next line.
    pub last: String,
}

impl Tip {
    /// The tip of an empty log of the store `id`.
    pub fn empty(id: &str) -> Tip {
        Tip {
            count: 0,
            len: 0,
            last: id.to_string(),
        }
    }
}

/// Chain and authenticate `entries` after `tip` under `key`: the bytes to
/// append and the new tip.
pub fn chain(tip: &Tip, entries: &[Entry], key: &StoreKey) -> (Vec<u8>, Tip) {
    let mut out = Vec::new();
    let mut tip = tip.clone();
    for e in entries {
        let mut e = e.clone();
        e.generation = key.generation();
        e.prev = tip.last.clone();
        e.mac.clear();
        e.mac = key.mac_hex("audit line", &[&e.unsigned()]);
        let line = serde_json::to_vec(&e).unwrap_or_default();
        tip.last = hex(&Sha256::digest(&line));
        tip.count += 1;
        tip.len += line.len() as u64 + 1;
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    (out, tip)
}

/// `audit.head`: the authenticated count and last line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub count: u64,
    pub last: String,
    pub generation: u32,
    pub mac: String,
}

impl Head {
    fn parts(id: &str, count: u64, last: &str, generation: u32) -> Vec<Vec<u8>> {
        vec![
            id.as_bytes().to_vec(),
            count.to_be_bytes().to_vec(),
            last.as_bytes().to_vec(),
            generation.to_be_bytes().to_vec(),
        ]
    }

    pub fn new(tip: &Tip, key: &StoreKey) -> Head {
        let parts = Head::parts(&key.id(), tip.count, &tip.last, key.generation());
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Head {
            count: tip.count,
            last: tip.last.clone(),
            generation: key.generation(),
            mac: key.mac_hex("audit head", &refs),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Read the log without checking it (for showing it when no identity is
/// at hand, and for migrating a format 1 log). Errors name the line.
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// What [`verify`] found wrong, and in which file.
#[derive(Debug)]
pub struct Broken {
    /// `audit.jsonl` or `audit.head`.
    pub file: &'static str,
    pub problem: String,
}

/// Check the whole log against its head under `key`; the entries and the
/// tip, or what is wrong (naming the line).
pub fn verify(
    log: &[u8],
    head: &[u8],
    key: &StoreKey,
    floor: u64,
) -> Result<(Vec<Entry>, Tip), Broken> {
    check(log, head, key, floor).map_err(|problem| Broken {
        file: if problem.starts_with("line") {
            super::layout::AUDIT
        } else {
            super::layout::AUDIT_HEAD
        },
        problem,
    })
}

fn check(log: &[u8], head: &[u8], key: &StoreKey, floor: u64) -> Result<(Vec<Entry>, Tip), String> {
    let id = key.id();
    let head: Head =
        serde_json::from_slice(head).map_err(|e| format!("it is not an audit head ({e})"))?;
    let parts = Head::parts(&id, head.count, &head.last, head.generation);
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    if head.generation != key.generation() || !key.verify(&head.mac, "audit head", &refs) {
        return Err("it was changed without the store key".into());
    }
    if head.count < floor {
        return Err(format!(
            "it records {} lines, fewer than the {floor} the store's last change recorded: the log was rolled back",
            head.count
        ));
    }
    // A line cut short (a crash in the middle of writing it, past the
    // head) is not a line: it is left out, and the next append replaces it.
    let body = match log.iter().rposition(|b| *b == b'\n') {
        Some(end) => &log[..=end],
        None => &log[..0],
    };
    let mut tip = Tip::empty(&id);
    let mut entries = Vec::new();
    let mut head_seen = head.count == 0;
    for (i, line) in body.split_inclusive(|b| *b == b'\n').enumerate() {
        let line = &line[..line.len() - 1];
        let n = i + 1;
        let e: Entry =
            serde_json::from_slice(line).map_err(|_| format!("line {n} is not an audit line"))?;
        if e.prev != tip.last {
            return Err(format!(
                "line {n} does not follow line {}: a line was removed, reordered or edited before it",
                n - 1
            ));
        }
        let past_head = tip.count >= head.count;
        if e.generation > key.generation() || (past_head && e.generation != key.generation()) {
            return Err(format!("line {n} was not written with the store key"));
        }
        if e.generation == key.generation() && !key.verify(&e.mac, "audit line", &[&e.unsigned()]) {
            return Err(format!(
                "line {n} was changed or added without the store key"
            ));
        }
        tip.last = hex(&Sha256::digest(line));
        tip.count += 1;
        tip.len += line.len() as u64 + 1;
        if tip.count == head.count {
            if tip.last != head.last {
                return Err(format!(
                    "line {n} is not the line audit.head authenticates: the log was edited"
                ));
            }
            head_seen = true;
        }
        entries.push(e);
    }
    if !head_seen {
        return Err(format!(
            "lines were removed from its end: it has {}, audit.head authenticates {}",
            tip.count, head.count
        ));
    }
    Ok((entries, tip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(key: &StoreKey, n: usize) -> (Vec<u8>, Tip) {
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry::new("get").secret("A", "global", i as u32 + 1))
            .collect();
        chain(&Tip::empty(&key.id()), &entries, key)
    }

    #[test]
    fn edits_removals_reorders_and_truncation_are_found() {
        let key = StoreKey::generate();
        let (log, tip) = log_of(&key, 4);
        let head = Head::new(&tip, &key).to_bytes();
        let (entries, got) = verify(&log, &head, &key, 4).unwrap();
        assert_eq!((entries.len(), &got), (4, &tip));
        let lines: Vec<&[u8]> = log
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let join = |ls: &[&[u8]]| {
            let mut v = Vec::new();
            for l in ls {
                v.extend_from_slice(l);
                v.push(b'\n');
            }
            v
        };
        let edited =
            String::from_utf8(log.clone())
                .unwrap()
                .replacen("\"version\":2", "\"version\":9", 1);
        for (what, bad) in [
            ("edited", edited.into_bytes()),
            ("middle removed", join(&[lines[0], lines[2], lines[3]])),
            ("reordered", join(&[lines[0], lines[2], lines[1], lines[3]])),
            ("tail removed", join(&lines[..3])),
            ("emptied", Vec::new()),
        ] {
            assert!(
                matches!(
                    verify(&bad, &head, &key, 0),
                    Err(Broken {
                        file: "audit.jsonl",
                        ..
                    })
                ),
                "{what}"
            );
        }
        // A line added by someone without the key.
        let mut forged = Entry::new("get");
        forged.prev = tip.last.clone();
        forged.generation = 1;
        forged.mac = "00".repeat(32);
        let mut added = log.clone();
        added.extend_from_slice(&serde_json::to_vec(&forged).unwrap());
        added.push(b'\n');
        assert!(matches!(
            verify(&added, &head, &key, 0),
            Err(Broken { file: "audit.jsonl", problem }) if problem.contains("changed or added without the store key")
        ));
        // A line of ours past the head (killed before the head): kept.
        let (more, tip2) = chain(&tip, &[Entry::new("get")], &key);
        let mut longer = log.clone();
        longer.extend_from_slice(&more);
        assert_eq!(verify(&longer, &head, &key, 4).unwrap().1, tip2);
        // A line cut short past the head is left out.
        let mut torn = log.clone();
        torn.extend_from_slice(b"{\"at\":");
        assert_eq!(verify(&torn, &head, &key, 4).unwrap().1, tip);
        // The floor: a head rolled back below the last change.
        assert!(matches!(
            verify(&log, &head, &key, 5),
            Err(Broken { file: "audit.head", problem }) if problem.contains("the log was rolled back")
        ));
    }

    #[test]
    fn earlier_generations_are_held_by_the_chain() {
        let k1 = StoreKey::generate();
        let (log, tip) = log_of(&k1, 3);
        let k2 = k1.rotate();
        let (more, tip2) = chain(&tip, &[Entry::new("rekey")], &k2);
        let mut log2 = log.clone();
        log2.extend_from_slice(&more);
        let head = Head::new(&tip2, &k2).to_bytes();
        verify(&log2, &head, &k2, 4).unwrap();
        // A former member (knows k1) rewrites an old line and re-MACs it.
        let mut lines: Vec<Entry> = parse(&log2).unwrap();
        lines[0].detail = Some("forged".into());
        let (relog, _) = chain(&Tip::empty(&k1.id()), &lines[..3], &k1);
        let mut forged = relog;
        forged.extend_from_slice(&more);
        assert!(matches!(
            verify(&forged, &head, &k2, 0),
            Err(Broken { file: "audit.jsonl", problem }) if problem.contains("does not follow line 3")
        ));
    }
}
