//! After an update on a running device: restart or reload the units that
//! use a secret whose bytes, owner or mode changed (`restart-units`,
//! `reload-units` in the recipe). Never during boot: the boot-time unseal
//! runs before those units start, so only `apply` calls this.

use crate::identity::tool::{system_program, CLEAN_PATH, SYSTEM_DIRS};
use sealed_bundle::Manifest;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The units to act on. A unit listed for restart is not also reloaded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub restart: BTreeSet<String>,
    pub reload: BTreeSet<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.restart.is_empty() && self.reload.is_empty()
    }

    /// Add `other`'s units (a unit restarted is not also reloaded).
    pub fn merge(&mut self, other: Plan) {
        self.restart.extend(other.restart);
        self.reload.extend(other.reload);
        let restart = self.restart.clone();
        self.reload.retain(|u| !restart.contains(u));
    }
}

/// Which units the changed secrets and templates name.
pub fn plan(manifest: &Manifest, changed: &[String]) -> Plan {
    let mut plan = Plan::default();
    for e in manifest.entries().filter(|e| changed.contains(&e.name)) {
        plan.restart.extend(e.restart_units.iter().cloned());
        plan.reload.extend(e.reload_units.iter().cloned());
    }
    let restart = plan.restart.clone();
    plan.reload.retain(|u| !restart.contains(u));
    plan
}

/// `program` with an empty environment but a fixed `PATH`: nothing of the
/// caller's (`SYSTEMD_*`, `SYSTEMCTL_*`, `DBUS_*`, `LD_*`, `PATH`) reaches it.
/// `systemctl` itself is found as every device tool is
/// ([`system_program`]: by absolute path, never through `$PATH`, which
/// whoever runs `sudo sealed-firstboot apply` may have set).
fn systemctl(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", CLEAN_PATH);
    c
}

/// One `systemctl` call and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub verb: &'static str,
    pub units: Vec<String>,
    /// `None` on success, else why it failed.
    pub error: Option<String>,
    /// False when `root` is a tree (`--root`), not this machine: nothing
    /// was run, this is what would have been.
    pub ran: bool,
}

/// Run `systemctl try-restart` and `systemctl try-reload-or-restart` for
/// the plan (units that are not running are left alone, as `try-` means).
/// Only on the machine itself: with `root` a tree (`--root`), the units
/// are the tree's, not this machine's, and nothing is run.
pub fn run(plan: &Plan, root: &Path) -> Vec<Action> {
    let host = crate::fsutil::is_host_root(root);
    let mut actions = Vec::new();
    for (verb, units) in [
        ("try-restart", &plan.restart),
        ("try-reload-or-restart", &plan.reload),
    ] {
        if units.is_empty() {
            continue;
        }
        let units: Vec<String> = units.iter().cloned().collect();
        if !host {
            actions.push(Action {
                verb,
                units,
                error: None,
                ran: false,
            });
            continue;
        }
        let Some(program) = system_program("systemctl") else {
            actions.push(Action {
                verb,
                units,
                error: Some(format!(
                    "cannot run systemctl: not found in {}",
                    SYSTEM_DIRS.join(", ")
                )),
                ran: true,
            });
            continue;
        };
        let error = match systemctl(&program)
            .arg(verb)
            .arg("--")
            .args(&units)
            .output()
        {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "systemctl {verb} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run systemctl: {e}")),
        };
        actions.push(Action {
            verb,
            units,
            error,
            ran: true,
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealed_bundle::{SecretEntry, SecretType};

    fn e(name: &str, restart: &[&str], reload: &[&str]) -> SecretEntry {
        SecretEntry {
            name: name.into(),
            kind: SecretType::SingleLine,
            path: format!("/run/secrets/{name}"),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o400,
            description: None,
            restart_units: restart.iter().map(|s| s.to_string()).collect(),
            reload_units: reload.iter().map(|s| s.to_string()).collect(),
            credential: None,
            credential_encrypted: None,
        }
    }

    #[test]
    fn only_units_of_changed_secrets_restart_wins_over_reload() {
        let m = Manifest {
            secrets: vec![
                e("a", &["app.service"], &["nginx.service"]),
                e("b", &["db.service"], &[]),
                e("c", &[], &["app.service", "proxy.service"]),
            ],
            ..Default::default()
        };
        let p = plan(&m, &["a".into(), "c".into()]);
        assert_eq!(p.restart.iter().collect::<Vec<_>>(), ["app.service"]);
        assert_eq!(
            p.reload.iter().collect::<Vec<_>>(),
            ["nginx.service", "proxy.service"]
        );
        assert!(plan(&m, &[]).is_empty());
    }

    /// systemctl is run by its absolute path, with nothing of the caller's
    /// environment: a stand-in that prints its environment sees only PATH.
    #[test]
    fn systemctl_runs_by_path_with_a_clean_environment() {
        let found = system_program("systemctl").expect("systemctl in a system directory");
        assert!(
            SYSTEM_DIRS
                .iter()
                .any(|d| found.parent() == Some(Path::new(d))),
            "{}",
            found.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let stand_in = dir.path().join("systemctl");
        std::fs::write(&stand_in, "#!/bin/sh\nenv\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = systemctl(&stand_in).output().unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| *k != "PWD" && *k != "SHLVL" && *k != "_")
            .collect();
        assert_eq!(names, ["PATH"], "{env}");
        assert!(env.contains(&format!("PATH={CLEAN_PATH}")), "{env}");
    }

    /// On a tree, the plan is reported and nothing is run (the units are
    /// the tree's; a `systemctl` here would act on this machine).
    #[test]
    fn a_tree_runs_nothing() {
        let tree = tempfile::tempdir().unwrap();
        let p = Plan {
            restart: ["app.service".to_string()].into(),
            reload: ["web.service".to_string()].into(),
        };
        let actions = run(&p, tree.path());
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| !a.ran && a.error.is_none()));
    }
}
