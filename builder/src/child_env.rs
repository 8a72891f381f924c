//! What the builder's child processes (command sources, mke2fs, debugfs)
//! must not inherit: the store identity (`SEALED_IMAGE_STORE_IDENTITY*`),
//! the signing key (`SEALED_IMAGE_SIGNING_KEY`, and the name of its file)
//! and every environment variable a secret is read from. A wrapper that
//! runs `set -x` or logs its environment would otherwise print them into
//! the CI log. Every `Command` the builder spawns goes through
//! [`scrub`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::process::Command;
use std::sync::Mutex;

/// The prefix of the store identity variables.
pub const IDENTITY_PREFIX: &str = "SEALED_IMAGE_STORE_IDENTITY";
/// The signing key itself (`crate::seal::signing` reads it).
pub const SIGNING_KEY: &str = "SEALED_IMAGE_SIGNING_KEY";
/// A file holding the signing key.
pub const SIGNING_KEY_FILE: &str = "SEALED_IMAGE_SIGNING_KEY_FILE";

static SECRET_VARS: Mutex<BTreeSet<OsString>> = Mutex::new(BTreeSet::new());

/// Make this process non-dumpable: its memory and `/proc/PID/environ`
/// (which keeps the environment it started with, identity and all) become
/// unreadable to other processes of the same user, such as a command
/// source reading `/proc/$PPID/environ`, and no core dump holds a key.
/// Best effort: a kernel without `prctl` leaves it as it was.
pub fn protect_self() {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
}

/// Remember that `var` holds (or may hold) a secret: no child sees it.
pub fn hide(var: &str) {
    if let Ok(mut set) = SECRET_VARS.lock() {
        set.insert(OsString::from(var));
    }
}

/// Remove the identity and signing key variables and every hidden
/// variable from `cmd`'s environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(IDENTITY_PREFIX) {
            cmd.env_remove(&name);
        }
    }
    for name in [SIGNING_KEY, SIGNING_KEY_FILE] {
        cmd.env_remove(name);
    }
    let hidden: Vec<OsString> = match SECRET_VARS.lock() {
        Ok(set) => set.iter().cloned().collect(),
        // A panic elsewhere poisoned the set: hide what it holds anyway.
        Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
    };
    for name in hidden {
        cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_hidden_variables_do_not_reach_children() {
        // The variables are set on the child only (the test's own
        // environment is shared by other tests' threads).
        hide("CHILD_ENV_TEST_SECRET");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("env");
        cmd.env("CHILD_ENV_TEST_SECRET", "s3cret")
            .env("CHILD_ENV_TEST_PLAIN", "visible");
        scrub(&mut cmd);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("CHILD_ENV_TEST_PLAIN=visible"), "{out}");
    }
}
