//! `store export FILE` / `store import FILE`: the whole store (metadata and
//! every version's value) in a tar archive encrypted with age, for backup
//! and for moving secrets to a store with other recipients.
//!
//! The archive says where it comes from (`SOURCE`: store id, key
//! generation, time, who, counts) and ends with a `MAC` under the source
//! store's key over every entry. age has no sender authentication: anyone
//! can encrypt an archive to the public recipients, so `import` takes
//! only an archive it can authenticate: one made by this store (its
//! current key), by a store named with `--from DIR` that the identity
//! opens, or one whose SHA-256 (`export` prints it) is given with
//! `--fingerprint`. It shows the origin before it writes.

use super::audit::Entry;
use super::crypto::{Identity, Recipients};
use super::input::MAX_VALUE;
use super::integrity::{hex, sha256_hex, StoreKey};
use super::layout::{self, Store};
use super::metadata::{now, SecretMeta};
use super::session::{Change, RecipientsCheck, Session};
use super::StoreError;
use crate::io::secret::SecretVec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use zeroize::Zeroizing;

const FORMAT_V1: &str = "sealed-image-store-export 1\n";
const FORMAT: &str = "sealed-image-store-export 2\n";
const MAX_ENTRIES: usize = 100_000;
const MAX_ARCHIVE: u64 = 4 << 30;
/// Most bytes of values an archive holds (what `import` keeps in memory
/// and `export` builds there).
const MAX_ARCHIVE_VALUES: u64 = 512 << 20;

/// What an export or import covered.
#[derive(Debug, Serialize)]
pub struct ArchiveReport {
    pub names: usize,
    pub versions: usize,
    /// The archive file's SHA-256 (what `import --fingerprint` takes).
    pub fingerprint: String,
    /// The store it came from.
    pub store: String,
}

/// Where an archive says it comes from (inside the encryption).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Source {
    pub store: String,
    pub generation: u32,
    pub exported_at: String,
    pub by: String,
    pub names: usize,
    pub versions: usize,
}

/// How many version files the secrets hold, over every scope.
fn version_count<'a>(metas: impl Iterator<Item = &'a SecretMeta>) -> usize {
    metas
        .flat_map(|m| m.scopes.values())
        .map(|sc| sc.versions.len())
        .sum()
}

fn mac_parts(entries: &[(String, String)]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .flat_map(|(p, h)| [p.as_bytes().to_vec(), h.as_bytes().to_vec()])
        .collect()
}

fn archive_mac(key: &StoreKey, entries: &[(String, String)]) -> String {
    let parts = mac_parts(entries);
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    key.mac_hex("export", &refs)
}

/// Write every secret into an age-encrypted archive at `out` (mode 0600),
/// encrypted to `to` (the store's recipients when `None`). The audit line
/// is written before the archive.
pub fn export(
    s: &mut Session,
    identity: &Identity,
    out: &Path,
    to: Option<Recipients>,
) -> Result<ArchiveReport, StoreError> {
    let to = to.unwrap_or_else(|| s.recipients.clone());
    let mut tar = tar::Builder::new(SecretVec::default());
    let mut macced: Vec<(String, String)> = Vec::new();
    let mut total = 0u64;
    let mut add = |tar: &mut tar::Builder<SecretVec>, path: &str, data: &[u8]| {
        // No bigger than import takes.
        total += data.len() as u64;
        if total > MAX_ARCHIVE_VALUES {
            return Err(StoreError::Value(format!(
                "the store holds more than {MAX_ARCHIVE_VALUES} bytes of values: more than one archive may hold"
            )));
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_cksum();
        macced.push((path.to_string(), sha256_hex(data)));
        tar.append_data(&mut h, path, data)
            .map_err(super::io("building the export archive"))
    };
    let versions = version_count(s.metas.values());
    let source = Source {
        store: s.id(),
        generation: s.key.generation(),
        exported_at: now(),
        by: super::audit::actor(),
        names: s.metas.len(),
        versions,
    };
    add(&mut tar, "FORMAT", FORMAT.as_bytes())?;
    add(
        &mut tar,
        "SOURCE",
        &serde_json::to_vec(&source).unwrap_or_default(),
    )?;
    let mut entries = Vec::new();
    for (name, meta) in &s.metas {
        add(
            &mut tar,
            &format!("{name}/meta.toml"),
            meta.to_toml().as_bytes(),
        )?;
        for scope in meta.scope_list() {
            let Some(sc) = meta.scope(&scope) else {
                continue;
            };
            for v in &sc.versions {
                let value = s.read_value(identity, name, &scope, v.version)?;
                add(
                    &mut tar,
                    &format!("{name}/{}/v{}.value", scope.dir_name(), v.version),
                    &value,
                )?;
            }
            entries.push(Entry::new("export").secret(name, &scope.to_string(), sc.current));
        }
    }
    let mac = archive_mac(&s.key, &macced);
    let mut h = tar::Header::new_gnu();
    h.set_size(mac.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "MAC", mac.as_bytes())
        .map_err(super::io("building the export archive"))?;
    let plain = tar
        .into_inner()
        .map_err(super::io("building the export archive"))?
        .into_inner();
    let ciphertext = to.encrypt(&plain)?;
    drop(plain);
    let fingerprint = sha256_hex(&ciphertext);
    let detail = format!("to {} (sha256 {fingerprint})", out.display());
    for e in &mut entries {
        e.detail = Some(detail.clone());
    }
    if entries.is_empty() {
        entries.push(Entry::new("export").detail(format!("{detail}, empty")));
    }
    // Audited before the values leave, as `get`.
    s.audit(&entries)?;
    crate::io::write_output(out, &ciphertext, 0o600).map_err(super::io(format!(
        "writing {} (the export is in the audit log)",
        out.display()
    )))?;
    Ok(ArchiveReport {
        names: source.names,
        versions,
        fingerprint,
        store: source.store,
    })
}

/// How `import` may trust an archive, besides this store's own key.
#[derive(Default)]
pub struct Trust {
    /// The archive file's SHA-256, as `export` printed it.
    pub fingerprint: Option<String>,
    /// The store it was exported from (the identity must open it).
    pub from: Option<PathBuf>,
}

/// A decrypted archive, checked for what it is and where it comes from.
pub struct Opened {
    files: BTreeMap<String, Zeroizing<Vec<u8>>>,
    pub source: Option<Source>,
    /// How it was authenticated (for the confirmation).
    pub trusted_by: String,
    pub fingerprint: String,
    pub metas: Vec<SecretMeta>,
}

impl Opened {
    /// One line saying where the archive comes from.
    pub fn origin(&self) -> String {
        let versions = version_count(self.metas.iter());
        let from = match &self.source {
            Some(s) => format!(
                "store {} (key generation {}), exported {} by {}",
                s.store, s.generation, s.exported_at, s.by
            ),
            None => "an archive of format 1 (it does not say where it comes from)".into(),
        };
        format!(
            "{} secret(s), {versions} version(s) from {from}; authenticated by {}",
            self.metas.len(),
            self.trusted_by
        )
    }
}

/// Decrypt and authenticate an archive (nothing is written).
pub fn open(
    s: &Session,
    identity: &Identity,
    file: &Path,
    trust: &Trust,
) -> Result<Opened, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: file.to_path_buf(),
        reason,
    };
    // Streamed: the file is hashed (its fingerprint) as it is decrypted,
    // and only the entries are kept, never the whole archive in memory.
    let (f, size) = open_archive(file)?;
    let hashed = Rc::new(RefCell::new((Sha256::new(), 0u64)));
    let reader = Hashing {
        inner: f.take(MAX_ARCHIVE),
        hashed: Rc::clone(&hashed),
    };
    let mut plain = identity.decrypt_stream(reader, &file.display().to_string())?;
    let mut files: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut kept = 0u64;
    for entry in tar::Archive::new(&mut plain)
        .entries()
        .map_err(|e| corrupt(format!("not a store export: {e}")))?
    {
        let mut entry = entry.map_err(|e| corrupt(format!("not a store export: {e}")))?;
        if files.len() >= MAX_ENTRIES {
            return Err(corrupt("too many entries".into()));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt("an entry is not a regular file".into()));
        }
        let path = entry
            .path()
            .map_err(|e| corrupt(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        if entry.size() > MAX_VALUE {
            return Err(corrupt(format!("{path} is too large")));
        }
        let entry_size = entry.size();
        kept += entry_size;
        if kept > MAX_ARCHIVE_VALUES {
            return Err(corrupt(format!(
                "it holds more than {MAX_ARCHIVE_VALUES} bytes of values"
            )));
        }
        let data =
            crate::io::limit::read_bounded(&mut entry as &mut dyn Read, MAX_VALUE, entry_size)
                .map_err(|e| corrupt(format!("{path}: {e}")))?;
        if files.contains_key(&path) {
            return Err(corrupt(format!("{path} is in it twice")));
        }
        order.push((path.clone(), sha256_hex(&data)));
        files.insert(path, data);
    }
    // To its end: the last chunk authenticated, the whole file hashed.
    std::io::copy(&mut plain, &mut std::io::sink()).map_err(|e| corrupt(format!("age: {e}")))?;
    drop(plain);
    let (hasher, read) = Rc::try_unwrap(hashed)
        .map(RefCell::into_inner)
        .map_err(|_| corrupt("still being read".into()))?;
    if read != size {
        return Err(corrupt(
            "it changed while it was read, or holds data after its end".into(),
        ));
    }
    let fingerprint = hex(&hasher.finalize());
    let format = files.get("FORMAT").map(|f| f.to_vec());
    let (source, mac) = match format.as_deref() {
        Some(f) if f == FORMAT.as_bytes() => {
            let source: Source = files
                .get("SOURCE")
                .and_then(|b| serde_json::from_slice(b).ok())
                .ok_or_else(|| corrupt("its SOURCE entry is missing or unreadable".into()))?;
            let mac = match order.last() {
                Some((p, _)) if p == "MAC" => files
                    .get("MAC")
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default(),
                _ => {
                    return Err(corrupt(
                        "its MAC is missing (it must be the last entry)".into(),
                    ))
                }
            };
            order.pop();
            (Some(source), Some(mac))
        }
        Some(f) if f == FORMAT_V1.as_bytes() => (None, None),
        _ => {
            return Err(corrupt(
                "not a `build-image store export` archive (no FORMAT entry)".into(),
            ))
        }
    };
    let claims = |key: &StoreKey| {
        source.as_ref().is_some_and(|s| s.store == key.id())
            && mac
                .as_ref()
                .is_some_and(|m| key.verify(m, "export", &refs(&mac_parts(&order))))
    };
    let trusted_by = if let Some(want) = &trust.fingerprint {
        if !want.eq_ignore_ascii_case(&fingerprint) {
            return Err(StoreError::Untrusted(format!(
                "{} has SHA-256 {fingerprint}, not the --fingerprint given ({want}): it is not the archive you expect; nothing was imported",
                file.display()
            )));
        }
        format!("its fingerprint {fingerprint}")
    } else if claims(&s.key) {
        "this store's own key (a backup of it)".to_string()
    } else if let Some(dir) = &trust.from {
        let same = std::fs::canonicalize(dir).ok() == std::fs::canonicalize(s.store.root()).ok();
        if same {
            return Err(untrusted(
                file,
                &source,
                "it is not authenticated by this store's current key",
            ));
        }
        let mut other = Store::open_if_free(dir)?;
        let o = Session::open(&mut other, identity, RecipientsCheck::MustMatch)?;
        if !claims(&o.key) {
            return Err(untrusted(
                file,
                &source,
                &format!(
                    "it is not authenticated by the key of the store {} ({})",
                    dir.display(),
                    o.id()
                ),
            ));
        }
        format!("the key of the store {} ({})", dir.display(), o.id())
    } else {
        return Err(untrusted(
            file,
            &source,
            "it is not authenticated by a store key you trust",
        ));
    };
    let mut metas = Vec::new();
    for (path, data) in &files {
        if let Some(name) = path.strip_suffix("/meta.toml") {
            let text =
                std::str::from_utf8(data).map_err(|_| corrupt(format!("{path} is not UTF-8")))?;
            let meta = SecretMeta::parse(text).map_err(|e| corrupt(format!("{path}: {e}")))?;
            if meta.name != name {
                return Err(corrupt(format!("{path} names {}", meta.name)));
            }
            metas.push(meta);
        }
    }
    Ok(Opened {
        files,
        source,
        trusted_by,
        fingerprint,
        metas,
    })
}

/// The archive (the user's path): a regular file of at most
/// [`MAX_ARCHIVE`] bytes (opened without blocking), and its size.
fn open_archive(file: &Path) -> Result<(std::fs::File, u64), StoreError> {
    let io = |e: std::io::Error| StoreError::Io {
        context: format!("reading {}", file.display()),
        cause: e,
    };
    let f = crate::io::open_for_reading(file).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other(
            "not a regular file (an archive is read from a file)",
        )));
    }
    if meta.len() > MAX_ARCHIVE {
        return Err(io(std::io::Error::other(format!(
            "larger than {MAX_ARCHIVE} bytes"
        ))));
    }
    Ok((f, meta.len()))
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hashed: Rc<RefCell<(Sha256, u64)>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.hashed.borrow_mut();
        h.0.update(&buf[..n]);
        h.1 += n as u64;
        Ok(n)
    }
}

fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
}

fn untrusted(file: &Path, source: &Option<Source>, why: &str) -> StoreError {
    let from = match source {
        Some(s) => format!(
            "it says it comes from store {} (exported {} by {}, {} secret(s), {} version(s))",
            s.store, s.exported_at, s.by, s.names, s.versions
        ),
        None => "it is of format 1 and does not say where it comes from".into(),
    };
    StoreError::Untrusted(format!(
        "{}: {why}; {from}. Anyone can encrypt an archive to this store's public recipients: if you expect it, pass --from STORE_DIR (the store it was exported from, which your identity opens) or --fingerprint SHA256 (as `build-image store export` printed it). Nothing was imported",
        file.display()
    ))
}

/// Add every secret of an authenticated archive to the store, encrypted
/// to this store's recipients, in one change. Names already present are
/// refused (all listed) and nothing is written.
pub fn import(s: &Session, file: &Path, opened: Opened) -> Result<ArchiveReport, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: file.to_path_buf(),
        reason,
    };
    let present: Vec<&str> = opened
        .metas
        .iter()
        .filter(|m| s.metas.contains_key(&m.name))
        .map(|m| m.name.as_str())
        .collect();
    if !present.is_empty() {
        return Err(StoreError::Conflict(format!(
            "{} already in the store {}: {} (nothing was imported; remove them with `build-image store rm NAME` first, or import into another store)",
            if present.len() == 1 { "this secret is" } else { "these secrets are" },
            s.store.root().display(),
            present.join(", ")
        )));
    }
    let fingerprint = s.recipients.fingerprint();
    let mut metas = s.metas.clone();
    let mut change_files = Vec::new();
    let mut entries = Vec::new();
    let mut versions = 0;
    let from = match &opened.source {
        Some(src) => format!("from {} (store {})", file.display(), src.store),
        None => format!("from {}", file.display()),
    };
    for mut meta in opened.metas.clone() {
        for scope in meta.scope_list() {
            let key = scope.to_string();
            let Some(sc) = meta.scopes.get_mut(&key) else {
                continue;
            };
            for v in &mut sc.versions {
                let path = format!("{}/{}/v{}.value", meta.name, scope.dir_name(), v.version);
                let value = opened
                    .files
                    .get(&path)
                    .ok_or_else(|| corrupt(format!("{path} is missing")))?;
                let ciphertext = s.recipients.encrypt(value)?;
                v.sha256 = sha256_hex(&ciphertext);
                v.recipients = fingerprint.clone();
                change_files.push((
                    layout::version_rel(&meta.name, &scope, v.version),
                    ciphertext,
                ));
                versions += 1;
            }
            entries.push(
                Entry::new("import")
                    .secret(&meta.name, &key, sc.current)
                    .detail(from.clone()),
            );
        }
        metas.insert(meta.name.clone(), meta);
    }
    if entries.is_empty() {
        entries.push(Entry::new("import").detail(format!("{from} (empty)")));
    }
    let names = opened.metas.len();
    let mut change = Change::new("import", metas);
    change.files = change_files;
    change.audit = entries;
    s.commit(change)?;
    Ok(ArchiveReport {
        names,
        versions,
        fingerprint: opened.fingerprint.clone(),
        store: opened
            .source
            .as_ref()
            .map(|s| s.store.clone())
            .unwrap_or_default(),
    })
}
