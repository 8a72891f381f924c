//! Unseal into `/run/secrets` at every boot.
//!
//! On-disk scheme (every path relative to the root passed in):
//!
//! ```text
//! /run/secrets.d/            ramfs (when mounting), 0751 root
//! /run/secrets.d/links.json  link paths we created outside /run/secrets, 0600
//! /run/secrets.d/N/          generation N, 0751 root
//! /run/secrets.d/N/a/b/x     secret with path /run/secrets/a/b/x (dirs 0755 root)
//! /run/secrets.d/N/.outside/NAME
//!                            secret NAME whose path is elsewhere under /run
//! /run/secrets -> secrets.d/N            swapped atomically (symlink + rename)
//! /run/wpa/psk -> /run/secrets/.outside/NAME   for a secret with path /run/wpa/psk
//! ```
//!
//! Secret files are created with `openat(O_CREAT|O_EXCL|O_NOFOLLOW)` relative
//! to a directory fd, get their owner and exact mode before the first byte is
//! written, and every directory is walked one component at a time with
//! `O_NOFOLLOW`: a symbolic link planted on the way is refused, never
//! followed. Everything that can be checked (names, paths, modes, owners,
//! groups, link locations, `/run/secrets` itself) is checked before anything
//! is written; a failure before the swap removes the new generation.

mod credstore;
mod error;
mod fsops;
mod links;
mod mount;
mod pending;
#[cfg(test)]
mod tests;

pub use credstore::{Credential, CredstoreReport, CREDSTORE_DIR};
pub use error::{RuntimeError, UnresolvedAccount};
pub use links::{OUTSIDE_DIR, STATE_FILE};
pub use mount::RAMFS_MAGIC;
pub use pending::PENDING_FILE;

use crate::accounts::Accounts;
use fsops::{Kind, StepError};
use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags};
use sealed_bundle::{check_clashes, validate_entry, SecretEntry};
use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Name of the generations directory (a ramfs) under `/run`.
pub const GENERATIONS_DIR: &str = "secrets.d";
/// Name of the symlink under `/run` that points at the live generation.
pub const SECRETS_LINK: &str = "secrets";
/// Temporary name of the new `/run/secrets` link before the rename.
const SWAP_TMP_PREFIX: &str = "secrets.tmp-";
/// Mode of `/run/secrets.d`, each generation and `.outside`: others may
/// traverse to a file they are allowed to read, not list names.
const PRIVATE_DIR_MODE: u32 = 0o751;
/// Mode of directories for paths like `/run/secrets/a/b/x` and of parents
/// created for links.
const DIR_MODE: u32 = 0o755;

/// How far the unseal may touch the system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsealOptions {
    /// Mount a ramfs on `/run/secrets.d` unless it already is a mount
    /// point (needs root; true on a real device).
    pub mount_ramfs: bool,
    /// chown files to their owner and group, directories to root (needs
    /// root). Owners and groups are resolved and checked either way.
    pub apply_ownership: bool,
}

impl UnsealOptions {
    /// What the device uses: mount the ramfs and apply ownership.
    pub fn device() -> Self {
        UnsealOptions {
            mount_ramfs: true,
            apply_ownership: true,
        }
    }
}

/// One secret to write: its manifest entry and its plaintext value.
pub struct SecretFile<'a> {
    pub entry: &'a SecretEntry,
    pub value: &'a [u8],
}

impl std::fmt::Debug for SecretFile<'_> {
    /// Never prints the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("entry", self.entry)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// What an unseal did.
#[derive(Debug)]
pub struct UnsealReport {
    /// Secrets left out because their owner or group does not exist on
    /// the device (every other secret was written).
    pub failed: Vec<UnresolvedAccount>,
    /// Secrets left out because their link location outside
    /// `/run/secrets` is squatted or unsafe (each with why; every other
    /// secret was written).
    pub refused: Vec<(String, RuntimeError)>,
    /// The generation now behind `/run/secrets`.
    pub generation: u64,
    /// Names of the secrets written, in input order.
    pub written: Vec<String>,
    /// Names of the secrets whose bytes, mode or owner differ from the
    /// generation that was live before (or that are new), in input order.
    pub changed: Vec<String>,
    /// Device paths outside `/run/secrets` that are links into it.
    pub links: Vec<String>,
    /// The restarts due (recorded in [`PENDING_FILE`] before the swap):
    /// those this unseal made due and those an interrupted run left.
    pub pending: crate::restart::Plan,
}

/// A secret, checked and resolved, ready to write.
struct Planned<'a> {
    name: &'a str,
    path: &'a str,
    mode: u32,
    owner: (u32, u32),
    value: &'a [u8],
    /// Directories below the generation directory.
    dirs: Vec<&'a str>,
    /// File name in the last of `dirs`.
    file: &'a str,
    link: Option<links::Link<'a>>,
}

/// Write decrypted secrets into a new generation under `ROOT/run/secrets.d`, then
/// point `ROOT/run/secrets` at it atomically and remove older generations
/// and stale links.
pub fn unseal(
    root: &Path,
    files: &[SecretFile<'_>],
    opts: &UnsealOptions,
) -> Result<UnsealReport, RuntimeError> {
    unseal_with_due(root, files, opts, &|_| crate::restart::Plan::default())
}

/// [`unseal`], recording before the swap the restarts `due` names for the
/// secrets that changed under a live generation (see [`pending`]).
pub fn unseal_with_due(
    root: &Path,
    files: &[SecretFile<'_>],
    opts: &UnsealOptions,
    due: &dyn Fn(&[String]) -> crate::restart::Plan,
) -> Result<UnsealReport, RuntimeError> {
    // 1. Check and resolve everything; nothing is written yet.
    let (mut plan, unresolved) = plan(root, files)?;
    let run = open_run(root, true)?.ok_or_else(|| {
        RuntimeError::io(
            "open",
            root.join("run"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    let run = run.as_fd();
    check_secrets_link(run, root)?;
    let old_links = match fsops::open_dir(run, GENERATIONS_DIR) {
        Ok(Some(gens)) => links::read_state(gens.as_fd()),
        Ok(None) => BTreeSet::new(),
        Err(e) => {
            return Err(step_to_runtime(
                e,
                "open",
                root.join("run").join(GENERATIONS_DIR),
            ))
        }
    };
    // A squatted link location (something planted there, a link on the
    // way, a directory another user can write) fails that secret alone:
    // nothing is followed or replaced, every other secret is unsealed.
    let mut refused = Vec::new();
    plan.retain(|p| match &p.link {
        Some(link) => match links::preflight(run, link, &old_links) {
            Ok(()) => true,
            Err(e) => {
                refused.push((p.name.to_owned(), e));
                false
            }
        },
        None => true,
    });

    // 2. The generations directory (ramfs) and a new generation.
    let gens_host = root.join("run").join(GENERATIONS_DIR);
    let gens = prepare_generations(run, &gens_host, opts)?;
    let gens = gens.as_fd();
    let generation = next_generation(gens, &gens_host)?;
    let gen_name = generation.to_string();
    let gen_host = gens_host.join(&gen_name);
    rfs::mkdirat(
        gens,
        gen_name.as_str(),
        Mode::from_raw_mode(PRIVATE_DIR_MODE),
    )
    .map_err(|e| RuntimeError::io("create the generation directory", &gen_host, e))?;
    let new_links: BTreeSet<String> = plan
        .iter()
        .filter_map(|p| p.link.as_ref().map(|l| l.path.to_owned()))
        .collect();

    // 3. Fill it, install links, swap. Undo the generation on failure.
    let staged = (|| {
        let gen = fsops::open_dir(gens, &gen_name)
            .map_err(|e| step_to_runtime(e, "open", &gen_host))?
            .ok_or_else(|| {
                RuntimeError::io(
                    "open",
                    &gen_host,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
        let chown_root = opts.apply_ownership.then_some((0, 0));
        fsops::set_owner_mode(gen.as_fd(), PRIVATE_DIR_MODE, chown_root)
            .map_err(|e| RuntimeError::io("set the mode of", &gen_host, e))?;
        for p in &plan {
            write_secret(gen.as_fd(), p, opts)?;
        }
        // Record new links before creating them, so a crash in between
        // still lets the next run clean up.
        let union: BTreeSet<String> = old_links.union(&new_links).cloned().collect();
        links::write_state(gens, &gens_host, &union, opts.apply_ownership)?;
        for link in plan.iter().filter_map(|p| p.link.as_ref()) {
            links::install(run, link, &old_links, opts.apply_ownership)?;
        }
        let changed = changed_since_live(run, gens, &plan, opts);
        // Recorded before the swap: a crash after it loses no restart.
        let now_due = due(&changed);
        if !now_due.is_empty() {
            let mut record = pending::read(gens);
            record.merge(now_due);
            pending::write(gens, &gens_host, &record, opts.apply_ownership)?;
        }
        swap(run, root, generation)?;
        Ok(changed)
    })();
    let changed = match staged {
        Ok(changed) => changed,
        Err(e) => {
            let _ = fsops::remove_tree(gens, &cstring(&gen_name));
            return Err(e);
        }
    };

    // 4. The new generation is live: clean up.
    for stale in old_links.difference(&new_links) {
        links::remove_stale(run, stale)?;
    }
    links::write_state(gens, &gens_host, &new_links, opts.apply_ownership)?;
    remove_generations(gens, &gens_host, Some(generation))?;
    remove_swap_temps(run, root)?;

    Ok(UnsealReport {
        generation,
        pending: pending::read(gens),
        changed,
        failed: unresolved,
        refused,
        written: plan.iter().map(|p| p.name.to_owned()).collect(),
        links: plan
            .iter()
            .filter_map(|p| p.link.as_ref().map(|l| l.path.to_owned()))
            .collect(),
    })
}

/// Write the secrets that name a credential into `ROOT/run/credstore`
/// (see [`credstore`]).
pub fn write_credentials(
    root: &Path,
    creds: &[Credential<'_>],
    opts: &UnsealOptions,
    kept: &std::collections::BTreeSet<String>,
) -> Result<CredstoreReport, RuntimeError> {
    credstore::write(root, creds, opts, kept)
}

/// Remove `ROOT/run/secrets`, the links we created, every generation and
/// the state file. The ramfs, if mounted, stays mounted (empty). Refuses a
/// real directory at `ROOT/run/secrets`.
pub fn clear(root: &Path) -> Result<(), RuntimeError> {
    let Some(run) = open_run(root, false)? else {
        return Ok(());
    };
    let run = run.as_fd();
    check_secrets_link(run, root)?;
    let link_host = root.join("run").join(SECRETS_LINK);
    fsops::unlink_if_symlink(run, SECRETS_LINK)
        .map_err(|e| RuntimeError::io("remove", &link_host, e))?;
    let gens_host = root.join("run").join(GENERATIONS_DIR);
    match fsops::open_dir(run, GENERATIONS_DIR) {
        Ok(Some(gens)) => {
            let gens = gens.as_fd();
            rfs::flock(gens, FlockOperation::LockExclusive)
                .map_err(|e| RuntimeError::io("lock", &gens_host, e))?;
            for stale in links::read_state(gens) {
                links::remove_stale(run, &stale)?;
            }
            remove_generations(gens, &gens_host, None)?;
            for name in [
                STATE_FILE,
                links::STATE_TMP,
                PENDING_FILE,
                pending::PENDING_TMP,
            ] {
                fsops::remove_tree(gens, &cstring(name))
                    .map_err(|e| RuntimeError::io("remove", gens_host.join(name), e))?;
            }
        }
        Ok(None) => {}
        Err(e) => return Err(step_to_runtime(e, "open", gens_host)),
    }
    remove_swap_temps(run, root)
}

/// Check every secret and resolve every owner and group. Secrets whose
/// owner or group does not resolve are left out and returned apart.
#[allow(clippy::type_complexity)]
fn plan<'a>(
    root: &Path,
    files: &'a [SecretFile<'a>],
) -> Result<(Vec<Planned<'a>>, Vec<UnresolvedAccount>), RuntimeError> {
    // The manifest's own rules (the one home of them), checked again as
    // defence in depth: the manifest was validated when opened.
    let entry_err = |e: sealed_bundle::EntryError| RuntimeError::InvalidSecret {
        name: e.name,
        path: e.path,
        reason: e.reason,
    };
    for f in files {
        validate_entry(f.entry).map_err(entry_err)?;
    }
    check_clashes(files.iter().map(|f| f.entry)).map_err(entry_err)?;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let e = f.entry;
        let invalid = |reason: String| RuntimeError::InvalidSecret {
            name: e.name.clone(),
            path: e.path.clone(),
            reason,
        };
        let rest = e
            .path
            .strip_prefix("/run/")
            .ok_or_else(|| invalid("path must be under /run/".into()))?;
        let planned = if let Some(inside) = rest.strip_prefix("secrets/") {
            let comps: Vec<&str> = inside.split('/').collect();
            if comps.first() == Some(&OUTSIDE_DIR) {
                return Err(invalid(format!(
                    "/run/secrets/{OUTSIDE_DIR} is reserved for the runtime"
                )));
            }
            let Some((file, dirs)) = comps.split_last() else {
                return Err(invalid("path has no file name".into()));
            };
            (dirs.to_vec(), *file, None)
        } else {
            let comps: Vec<&str> = rest.split('/').collect();
            if comps
                .first()
                .is_some_and(|c| c.starts_with(SWAP_TMP_PREFIX))
            {
                return Err(invalid(format!(
                    "/run/{SWAP_TMP_PREFIX}* is reserved for the runtime"
                )));
            }
            let link = links::Link {
                name: &e.name,
                path: &e.path,
                comps,
                target: format!("/run/{SECRETS_LINK}/{OUTSIDE_DIR}/{}", e.name),
            };
            (vec![OUTSIDE_DIR], e.name.as_str(), Some(link))
        };
        out.push(Planned {
            name: &e.name,
            path: &e.path,
            mode: e.mode,
            owner: (0, 0),
            value: f.value,
            dirs: planned.0,
            file: planned.1,
            link: planned.2,
        });
    }
    // An owner or group missing on the device fails that secret only.
    let accounts = Accounts::new(root);
    let mut unresolved = Vec::new();
    let mut planned = Vec::with_capacity(out.len());
    for (mut p, f) in out.into_iter().zip(files) {
        let uid = accounts.user(&f.entry.owner);
        let gid = accounts.group(&f.entry.group);
        match (uid, gid) {
            (Ok(uid), Ok(gid)) => {
                p.owner = (uid, gid);
                planned.push(p);
            }
            (uid, gid) => {
                for error in [uid.err(), gid.err()].into_iter().flatten() {
                    unresolved.push(UnresolvedAccount {
                        secret: p.name.to_owned(),
                        error,
                    });
                }
            }
        }
    }
    Ok((planned, unresolved))
}

/// Open `ROOT/run` (creating it, 0755, when `create`), never through a
/// symlink. The root itself is trusted.
fn open_run(root: &Path, create: bool) -> Result<Option<OwnedFd>, RuntimeError> {
    let root_fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::io("open the root directory", root, e))?;
    let host = root.join("run");
    let opened = if create {
        fsops::open_or_create_dir(root_fd.as_fd(), "run", DIR_MODE, false).map(Some)
    } else {
        fsops::open_dir(root_fd.as_fd(), "run")
    };
    opened.map_err(|e| step_to_runtime(e, "open", host))
}

fn step_to_runtime(e: StepError, op: &'static str, path: impl Into<PathBuf>) -> RuntimeError {
    let path = path.into();
    match e {
        StepError::Symlink => RuntimeError::Occupied {
            path,
            what: "a symbolic link",
            expected: "a directory",
        },
        StepError::NotDir(what) => RuntimeError::Occupied {
            path,
            what,
            expected: "a directory",
        },
        StepError::Io(source) => RuntimeError::Io { op, path, source },
    }
}

/// `ROOT/run/secrets` must be missing or a symlink: never destroy a real
/// directory or file someone put there.
fn check_secrets_link(run: BorrowedFd<'_>, root: &Path) -> Result<(), RuntimeError> {
    let host = root.join("run").join(SECRETS_LINK);
    match fsops::kind_at(run, SECRETS_LINK).map_err(|e| RuntimeError::io("inspect", &host, e))? {
        Kind::Missing | Kind::Symlink => Ok(()),
        Kind::Dir => Err(RuntimeError::Occupied {
            path: host,
            what: "a real directory",
            expected: "a symbolic link to secrets.d/N",
        }),
        Kind::Other(what) => Err(RuntimeError::Occupied {
            path: host,
            what,
            expected: "a symbolic link to secrets.d/N",
        }),
    }
}

/// Create (0751 root) and, when asked, mount a ramfs on `/run/secrets.d`;
/// return it open and locked.
fn prepare_generations(
    run: BorrowedFd<'_>,
    host: &Path,
    opts: &UnsealOptions,
) -> Result<OwnedFd, RuntimeError> {
    let mut gens =
        fsops::open_or_create_dir(run, GENERATIONS_DIR, PRIVATE_DIR_MODE, opts.apply_ownership)
            .map_err(|e| step_to_runtime(e, "create", host))?;
    if opts.mount_ramfs {
        let mounted = mount::is_mount_point(run, gens.as_fd())
            .map_err(|e| RuntimeError::io("inspect", host, e))?;
        if !mounted {
            mount::mount_ramfs(gens.as_fd(), host)
                .map_err(|e| RuntimeError::io("mount a ramfs on", host, e))?;
            // The fd still refers to the directory under the mount.
            gens = fsops::open_dir(run, GENERATIONS_DIR)
                .map_err(|e| step_to_runtime(e, "open", host))?
                .ok_or_else(|| {
                    RuntimeError::io(
                        "open",
                        host,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })?;
            let found =
                mount::fs_type(gens.as_fd()).map_err(|e| RuntimeError::io("inspect", host, e))?;
            if found != RAMFS_MAGIC {
                return Err(RuntimeError::NotRamfs {
                    path: host.to_path_buf(),
                    found,
                });
            }
        }
    }
    fsops::set_owner_mode(
        gens.as_fd(),
        PRIVATE_DIR_MODE,
        opts.apply_ownership.then_some((0, 0)),
    )
    .map_err(|e| RuntimeError::io("set the owner and mode of", host, e))?;
    rfs::flock(gens.as_fd(), FlockOperation::LockExclusive)
        .map_err(|e| RuntimeError::io("lock", host, e))?;
    Ok(gens)
}

/// Generations present in `/run/secrets.d`: number and directory name.
fn generations(gens: BorrowedFd<'_>, host: &Path) -> Result<Vec<(u64, CString)>, RuntimeError> {
    let names = fsops::list(gens).map_err(|e| RuntimeError::io("list", host, e))?;
    Ok(names
        .into_iter()
        .filter_map(|n| parse_generation(&n).map(|g| (g, n)))
        .collect())
}

fn parse_generation(name: &CStr) -> Option<u64> {
    let s = name.to_str().ok()?;
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn next_generation(gens: BorrowedFd<'_>, host: &Path) -> Result<u64, RuntimeError> {
    let highest = generations(gens, host)?
        .into_iter()
        .map(|(n, _)| n)
        .max()
        .unwrap_or(0);
    highest
        .checked_add(1)
        .ok_or_else(|| RuntimeError::GenerationOverflow {
            path: host.to_path_buf(),
        })
}

/// Remove every generation but `keep`, without following symlinks.
fn remove_generations(
    gens: BorrowedFd<'_>,
    host: &Path,
    keep: Option<u64>,
) -> Result<(), RuntimeError> {
    for (n, name) in generations(gens, host)? {
        if Some(n) != keep {
            fsops::remove_tree(gens, &name).map_err(|e| {
                let path = host.join(name.to_string_lossy().as_ref());
                RuntimeError::io("remove the old generation", path, e)
            })?;
        }
    }
    Ok(())
}

/// The secrets of `plan` that differ from the live generation (the one
/// `/run/secrets` points to before the swap): bytes, mode, owner, or new.
fn changed_since_live(
    run: BorrowedFd<'_>,
    gens: BorrowedFd<'_>,
    plan: &[Planned<'_>],
    opts: &UnsealOptions,
) -> Vec<String> {
    let live = fsops::read_link(run, SECRETS_LINK)
        .ok()
        .and_then(|t| String::from_utf8(t).ok())
        .and_then(|t| {
            t.strip_prefix(&format!("{GENERATIONS_DIR}/"))
                .map(str::to_owned)
        })
        .filter(|n| parse_generation(&cstring(n)).is_some())
        .and_then(|n| fsops::open_dir(gens, &n).ok().flatten());
    plan.iter()
        .filter(|p| {
            let Some(live) = &live else { return true };
            let Ok(Some(dir)) = fsops::walk_existing(live.as_fd(), &p.dirs) else {
                return true;
            };
            let owner = opts.apply_ownership.then_some(p.owner);
            !fsops::same_file(dir.as_fd(), p.file, p.value, p.mode, owner)
        })
        .map(|p| p.name.to_owned())
        .collect()
}

/// The restarts recorded as due in `ROOT/run/secrets.d`.
pub fn pending_restarts(root: &Path) -> Result<crate::restart::Plan, RuntimeError> {
    let Some(run) = open_run(root, false)? else {
        return Ok(crate::restart::Plan::default());
    };
    let gens_host = root.join("run").join(GENERATIONS_DIR);
    match fsops::open_dir(run.as_fd(), GENERATIONS_DIR) {
        Ok(Some(gens)) => Ok(pending::read(gens.as_fd())),
        Ok(None) => Ok(crate::restart::Plan::default()),
        Err(e) => Err(step_to_runtime(e, "open", gens_host)),
    }
}

/// Replace the record of restarts due with `plan` (removed when empty):
/// what is left once `systemctl` ran.
pub fn set_pending_restarts(
    root: &Path,
    plan: &crate::restart::Plan,
    opts: &UnsealOptions,
) -> Result<(), RuntimeError> {
    let Some(run) = open_run(root, false)? else {
        return Ok(());
    };
    let gens_host = root.join("run").join(GENERATIONS_DIR);
    match fsops::open_dir(run.as_fd(), GENERATIONS_DIR) {
        Ok(Some(gens)) => pending::write(gens.as_fd(), &gens_host, plan, opts.apply_ownership),
        Ok(None) => Ok(()),
        Err(e) => Err(step_to_runtime(e, "open", gens_host)),
    }
}

/// Write one secret into the generation open at `gen`.
fn write_secret(
    gen: BorrowedFd<'_>,
    p: &Planned<'_>,
    opts: &UnsealOptions,
) -> Result<(), RuntimeError> {
    let dir_mode = if p.link.is_some() {
        PRIVATE_DIR_MODE
    } else {
        DIR_MODE
    };
    let dir =
        fsops::walk_create(gen, &p.dirs, dir_mode, opts.apply_ownership).map_err(|(i, e)| {
            let below = format!("{SECRETS_LINK}/");
            let op = "create its directory";
            RuntimeError::walk_step((p.name, p.path), &below, &p.dirs, i, e, op)
        })?;
    let owner = opts.apply_ownership.then_some(p.owner);
    fsops::create_secret_file(dir.as_fd(), p.file, p.mode, owner, p.value)
        .map_err(|e| RuntimeError::secret_io(p.name, p.path, "write the secret file", e))
}

/// Point `ROOT/run/secrets` at `secrets.d/N` atomically: a symlink under a
/// temporary name, renamed over the old one.
fn swap(run: BorrowedFd<'_>, root: &Path, generation: u64) -> Result<(), RuntimeError> {
    check_secrets_link(run, root)?;
    let tmp = format!("{SWAP_TMP_PREFIX}{generation}");
    let tmp_host = root.join("run").join(&tmp);
    match fsops::unlink_if_symlink(run, &tmp)
        .map_err(|e| RuntimeError::io("remove", &tmp_host, e))?
    {
        Kind::Missing | Kind::Symlink => {}
        other => {
            return Err(RuntimeError::Occupied {
                path: tmp_host,
                what: other.describe(),
                expected: "a temporary symbolic link",
            })
        }
    }
    let target = format!("{GENERATIONS_DIR}/{generation}");
    rfs::symlinkat(target.as_str(), run, tmp.as_str())
        .map_err(|e| RuntimeError::io("create the symbolic link", &tmp_host, e))?;
    rfs::renameat(run, tmp.as_str(), run, SECRETS_LINK).map_err(|e| {
        let _ = rfs::unlinkat(run, tmp.as_str(), rfs::AtFlags::empty());
        RuntimeError::io("rename into place", root.join("run").join(SECRETS_LINK), e)
    })
}

/// Remove leftover `secrets.tmp-N` symlinks (from an interrupted swap).
fn remove_swap_temps(run: BorrowedFd<'_>, root: &Path) -> Result<(), RuntimeError> {
    let host = root.join("run");
    for name in fsops::list(run).map_err(|e| RuntimeError::io("list", &host, e))? {
        if let Some(name) = name
            .to_str()
            .ok()
            .filter(|n| n.starts_with(SWAP_TMP_PREFIX))
        {
            fsops::unlink_if_symlink(run, name)
                .map_err(|e| RuntimeError::io("remove", host.join(name), e))?;
        }
    }
    Ok(())
}

/// Names built here never contain NUL; an empty string is the safe fallback.
fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}
