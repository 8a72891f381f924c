//! `store export FILE` / `store import FILE`: the whole store (metadata and
//! every version's value) in a tar archive encrypted with age, for backup
//! and for moving secrets to a store with other recipients.

use super::audit::{self, Entry};
use super::crypto::{Identity, Recipients};
use super::input::MAX_VALUE;
use super::layout::{self, write_atomic, Store};
use super::metadata::SecretMeta;
use super::{io, StoreError};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

const FORMAT: &str = "sealed-image-store-export 1\n";
const MAX_ENTRIES: usize = 100_000;
const MAX_ARCHIVE: u64 = 4 << 30;

/// What an export or import covered.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveReport {
    pub names: usize,
    pub versions: usize,
}

/// Write every secret into an age-encrypted archive at `out` (mode 0600),
/// encrypted to `to` (the store's recipients when `None`).
pub fn export(
    store: &Store,
    identity: &Identity,
    out: &Path,
    to: Option<Recipients>,
) -> Result<ArchiveReport, StoreError> {
    let to = match to {
        Some(r) => r,
        None => Recipients::load(&store.recipients_file())?,
    };
    let mut tar = tar::Builder::new(Vec::new());
    let add = |tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, data)
            .map_err(io("building the export archive"))
    };
    add(&mut tar, "FORMAT", FORMAT.as_bytes())?;
    let mut report = ArchiveReport {
        names: 0,
        versions: 0,
    };
    let mut entries = Vec::new();
    for name in store.names()? {
        let Some(meta) = SecretMeta::load(store, &name)? else {
            continue;
        };
        add(
            &mut tar,
            &format!("{name}/meta.toml"),
            meta.to_toml().as_bytes(),
        )?;
        for scope in meta.scope_list() {
            let Some(s) = meta.scope(&scope) else {
                continue;
            };
            for v in &s.versions {
                let value = identity.decrypt_file(&store.version_file(&name, &scope, v.version))?;
                add(
                    &mut tar,
                    &format!("{name}/{}/v{}.value", scope.dir_name(), v.version),
                    &value,
                )?;
                report.versions += 1;
            }
            entries.push(Entry::new("export").secret(&name, &scope.to_string(), s.current));
        }
        report.names += 1;
    }
    let plain = Zeroizing::new(
        tar.into_inner()
            .map_err(io("building the export archive"))?,
    );
    let ciphertext = to.encrypt(&plain)?;
    write_atomic(out, &ciphertext, 0o600)?;
    for e in &mut entries {
        e.detail = Some(format!("to {}", out.display()));
    }
    if entries.is_empty() {
        entries.push(Entry::new("export").detail(format!("to {} (empty)", out.display())));
    }
    audit::append(store, &entries)?;
    Ok(report)
}

/// Add every secret of an archive to the store, encrypted to this store's
/// recipients. Names already present are refused (all listed) and nothing
/// is written; each name arrives with one rename.
pub fn import(
    store: &Store,
    identity: &Identity,
    file: &Path,
) -> Result<ArchiveReport, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: file.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(file).map_err(io(format!("reading {}", file.display())))?;
    let mut ciphertext = Vec::new();
    f.take(MAX_ARCHIVE)
        .read_to_end(&mut ciphertext)
        .map_err(io(format!("reading {}", file.display())))?;
    let plain = identity.decrypt(&ciphertext, &file.display().to_string())?;
    let mut files: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut archive = tar::Archive::new(&plain[..]);
    for entry in archive
        .entries()
        .map_err(|e| corrupt(format!("not a store export: {e}")))?
    {
        let mut entry = entry.map_err(|e| corrupt(format!("not a store export: {e}")))?;
        if files.len() >= MAX_ENTRIES {
            return Err(corrupt("too many entries".into()));
        }
        let path = entry
            .path()
            .map_err(|e| corrupt(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        if entry.size() > MAX_VALUE {
            return Err(corrupt(format!("{path} is too large")));
        }
        let mut data = Zeroizing::new(Vec::new());
        entry
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("{path}: {e}")))?;
        files.insert(path, data);
    }
    if files.get("FORMAT").map(|f| &f[..]) != Some(FORMAT.as_bytes()) {
        return Err(corrupt(
            "not a `build-image store export` archive (no FORMAT entry)".into(),
        ));
    }
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
    let present: Vec<&str> = metas
        .iter()
        .filter(|m| store.name_dir(&m.name).exists())
        .map(|m| m.name.as_str())
        .collect();
    if !present.is_empty() {
        return Err(StoreError::Conflict(format!(
            "{} already in the store {}: {} (nothing was imported; remove them with `build-image store rm NAME` first, or import into another store)",
            if present.len() == 1 { "this secret is" } else { "these secrets are" },
            store.root().display(),
            present.join(", ")
        )));
    }
    let recipients = Recipients::load(&store.recipients_file())?;
    let fingerprint = recipients.fingerprint();
    let stage = store.staging()?;
    let mut report = ArchiveReport {
        names: 0,
        versions: 0,
    };
    let mut entries = Vec::new();
    for meta in &mut metas {
        let dir = stage.path().join(&meta.name);
        for scope in meta.scope_list() {
            let key = scope.to_string();
            let Some(s) = meta.scopes.get_mut(&key) else {
                continue;
            };
            for v in &mut s.versions {
                let path = format!("{}/{}/v{}.value", meta.name, scope.dir_name(), v.version);
                let value = files
                    .get(&path)
                    .ok_or_else(|| corrupt(format!("{path} is missing")))?;
                write_atomic(
                    &layout::version_path(&dir, &scope, v.version),
                    &recipients.encrypt(value)?,
                    0o644,
                )?;
                v.recipients = fingerprint.clone();
                report.versions += 1;
            }
            entries.push(
                Entry::new("import")
                    .secret(&meta.name, &key, s.current)
                    .detail(format!("from {}", file.display())),
            );
        }
        meta.save_in(&dir)?;
        report.names += 1;
    }
    for meta in &metas {
        let target = store.name_dir(&meta.name);
        std::fs::rename(stage.path().join(&meta.name), &target)
            .map_err(io(format!("renaming into {}", target.display())))?;
    }
    layout::sync_dir(&store.secrets_dir())?;
    if entries.is_empty() {
        entries.push(Entry::new("import").detail(format!("from {} (empty)", file.display())));
    }
    audit::append(store, &entries)?;
    Ok(report)
}
