//! Resolve owner and group names on the device.
//!
//! Reads the device's own `ROOT/etc/passwd` and `ROOT/etc/group` (written by
//! `systemd-sysusers` before the unit runs), never NSS: the unseal runs early
//! and must not depend on daemons or on the host when testing on a tree.
//! Numeric ids (`"0"`, `"4242"`) are accepted as they are, without a lookup.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a user or group could not be resolved. Messages name the user or
/// group and the file that was searched.
#[derive(Debug, Error)]
pub enum AccountError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("user {name:?} not found in {path}")]
    UnknownUser { name: String, path: PathBuf },
    #[error("group {name:?} not found in {path}")]
    UnknownGroup { name: String, path: PathBuf },
    #[error("{path} line {line}: {kind} {name:?} has an invalid id {id:?}")]
    BadEntry {
        path: PathBuf,
        line: usize,
        kind: AccountKind,
        name: String,
        id: String,
    },
    #[error("{kind} id {value} is out of range (0 to 4294967294)")]
    IdOutOfRange { kind: AccountKind, value: String },
    #[error("{kind} name is empty")]
    EmptyName { kind: AccountKind },
}

/// User or group, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Group,
}

impl std::fmt::Display for AccountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccountKind::User => "user",
            AccountKind::Group => "group",
        })
    }
}

/// Resolve a user name (or numeric uid) from `ROOT/etc/passwd`.
pub fn resolve_user(root: &Path, name: &str) -> Result<u32, AccountError> {
    Accounts::new(root).user(name)
}

/// Resolve a group name (or numeric gid) from `ROOT/etc/group`.
pub fn resolve_group(root: &Path, name: &str) -> Result<u32, AccountError> {
    Accounts::new(root).group(name)
}

/// A lookup over one root that reads and parses each file at most once
/// (for resolving many secrets). Files are read lazily, so a root with only
/// numeric ids needs neither file.
#[derive(Debug)]
pub struct Accounts {
    root: PathBuf,
    passwd_path: PathBuf,
    group_path: PathBuf,
    passwd: OnceCell<Table>,
    group: OnceCell<Table>,
}

/// name -> (line number, raw id field); the first entry for a name wins, as
/// with the `files` NSS module.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, (usize, String)>,
}

impl Accounts {
    pub fn new(root: &Path) -> Self {
        Accounts {
            root: root.to_path_buf(),
            passwd_path: root.join("etc/passwd"),
            group_path: root.join("etc/group"),
            passwd: OnceCell::new(),
            group: OnceCell::new(),
        }
    }

    /// Resolve a user name or numeric uid.
    pub fn user(&self, name: &str) -> Result<u32, AccountError> {
        self.resolve(AccountKind::User, name)
    }

    /// Resolve a group name or numeric gid.
    pub fn group(&self, name: &str) -> Result<u32, AccountError> {
        self.resolve(AccountKind::Group, name)
    }

    fn resolve(&self, kind: AccountKind, name: &str) -> Result<u32, AccountError> {
        if name.is_empty() {
            return Err(AccountError::EmptyName { kind });
        }
        if name.bytes().all(|c| c.is_ascii_digit()) {
            return parse_id(name).ok_or_else(|| AccountError::IdOutOfRange {
                kind,
                value: name.to_owned(),
            });
        }
        let (cell, path) = match kind {
            AccountKind::User => (&self.passwd, &self.passwd_path),
            AccountKind::Group => (&self.group, &self.group_path),
        };
        let table = match cell.get() {
            Some(t) => t,
            None => {
                let t = load(&self.root, path)?;
                cell.get_or_init(|| t)
            }
        };
        let Some((line, id)) = table.entries.get(name) else {
            return Err(match kind {
                AccountKind::User => AccountError::UnknownUser {
                    name: name.to_owned(),
                    path: path.clone(),
                },
                AccountKind::Group => AccountError::UnknownGroup {
                    name: name.to_owned(),
                    path: path.clone(),
                },
            });
        };
        parse_id(id).ok_or_else(|| AccountError::BadEntry {
            path: path.clone(),
            line: *line,
            kind,
            name: name.to_owned(),
            id: id.clone(),
        })
    }
}

/// A decimal id, 0 to 2^32-2 (`-1` means "unchanged" to chown).
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

/// Largest passwd or group file read.
const MAX_ACCOUNTS_BYTES: u64 = 16 * 1024 * 1024;

/// Read a passwd or group file: a regular file (not a link: with `--root`
/// it could lead out of the tree), bounded, and, with `--root`, reached
/// through no link either.
fn load(root: &Path, path: &Path) -> Result<Table, AccountError> {
    let read_err = |source| AccountError::Read {
        path: path.to_path_buf(),
        source,
    };
    let rel = path.strip_prefix(root).unwrap_or(path);
    crate::fsutil::in_root(root, &rel.to_string_lossy()).map_err(read_err)?;
    let bytes =
        sealed_bundle::io::read_regular_bounded(path, MAX_ACCOUNTS_BYTES).map_err(|e| match e {
            sealed_bundle::io::ReadError::Io(source) => read_err(source),
            other => read_err(io::Error::other(other.to_string())),
        })?;
    Ok(parse_table(&String::from_utf8_lossy(&bytes)))
}

/// Parse `name:password:id:…` lines (both passwd and group have the id in
/// the third field). Blank lines, comments and NIS `+`/`-` entries are
/// skipped; a line with fewer than three fields is ignored.
fn parse_table(text: &str) -> Table {
    let mut table = Table::default();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with(['#', '+', '-']) {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        table
            .entries
            .entry(name.to_owned())
            .or_insert_with(|| (i + 1, id.trim().to_owned()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment

daemon:x:1:1::/:/usr/sbin/nologin
svc:x:4242:4243:service:/var/lib/svc:/usr/sbin/nologin
svc:x:9999:9999:duplicate, ignored:/:/bin/false
+nisuser::::::
broken:x:notanumber:0::/:/bin/false
minus:x:-1:0::/:/bin/false
short:x
";
    const GROUP: &str = "\
root:x:0:
svcgrp:x:4243:svc
wheel:x:10:alice,bob
badgroup:x:4294967295:
";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    #[test]
    fn resolves_names() {
        let t = tree();
        assert_eq!(resolve_user(t.path(), "root").unwrap(), 0);
        assert_eq!(resolve_user(t.path(), "daemon").unwrap(), 1);
        assert_eq!(
            resolve_user(t.path(), "svc").unwrap(),
            4242,
            "first entry wins"
        );
        assert_eq!(resolve_group(t.path(), "root").unwrap(), 0);
        assert_eq!(resolve_group(t.path(), "svcgrp").unwrap(), 4243);
        assert_eq!(resolve_group(t.path(), "wheel").unwrap(), 10);
    }

    #[test]
    fn numeric_ids_need_no_files() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve_user(empty.path(), "0").unwrap(), 0);
        assert_eq!(resolve_user(empty.path(), "4242").unwrap(), 4242);
        assert_eq!(resolve_group(empty.path(), "65534").unwrap(), 65534);
        // (uid_t)-1 is not an id, and neither is anything above it.
        let root = empty.path();
        for r in [
            resolve_user(root, "4294967295"),
            resolve_group(root, "99999999999"),
        ] {
            assert!(matches!(r, Err(AccountError::IdOutOfRange { .. })), "{r:?}");
        }
    }

    #[test]
    fn unknown_names_name_the_file() {
        let t = tree();
        let err = resolve_user(t.path(), "nobody-here").unwrap_err();
        assert!(matches!(err, AccountError::UnknownUser { .. }));
        let msg = err.to_string();
        assert!(msg.contains("nobody-here"), "{msg}");
        assert!(msg.contains("etc/passwd"), "{msg}");

        // A user name is not a group name.
        let err = resolve_group(t.path(), "svc").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AccountError::UnknownGroup { .. }));
        assert!(
            msg.contains("\"svc\"") && msg.contains("etc/group"),
            "{msg}"
        );

        // Comments, NIS entries and short lines are not names.
        for odd in ["+nisuser", "short", "# a comment"] {
            assert!(resolve_user(t.path(), odd).is_err(), "{odd}");
        }
    }

    #[test]
    fn bad_entries_are_reported_with_line() {
        let t = tree();
        let err = resolve_user(t.path(), "broken").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, AccountError::BadEntry { line: 8, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("broken") && msg.contains("notanumber"),
            "{msg}"
        );
        assert!(resolve_group(t.path(), "badgroup").is_err());
    }

    #[test]
    fn missing_files_are_clear() {
        let empty = tempfile::tempdir().unwrap();
        let err = resolve_user(empty.path(), "svc").unwrap_err();
        assert!(matches!(err, AccountError::Read { .. }));
        assert!(err.to_string().contains("etc/passwd"), "{err}");
        let err = resolve_group(empty.path(), "svcgrp").unwrap_err();
        assert!(err.to_string().contains("etc/group"), "{err}");
        assert!(matches!(
            resolve_user(empty.path(), ""),
            Err(AccountError::EmptyName { .. })
        ));
    }

    #[test]
    fn cache_reads_each_file_once() {
        let t = tree();
        let acc = Accounts::new(t.path());
        assert_eq!(acc.user("svc").unwrap(), 4242);
        // Changing the file after the first lookup does not change answers.
        fs::write(t.path().join("etc/passwd"), "svc:x:1:1::/:/bin/sh\n").unwrap();
        assert_eq!(acc.user("svc").unwrap(), 4242);
        assert_eq!(acc.user("root").unwrap(), 0);
        assert_eq!(acc.group("svcgrp").unwrap(), 4243);
    }
}
