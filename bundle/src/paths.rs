//! Where a bundle may put files: nowhere the system reads as code or as
//! system configuration. One rule, applied by the builder before sealing
//! (recipe and bundle validation) and by the device when it opens a bundle
//! and again at every unseal.
//!
//! A secret, template or the link made for one is refused at or below any
//! directory of [`FORBIDDEN`] (compared with ASCII case ignored: a tmpfs
//! mounted with `casefold` would make `/run/SystemD` the same directory),
//! unless the device configuration allows that prefix explicitly
//! (`allow_path = …` in `/etc/sealed-firstboot.conf`; the recipe's
//! `[policy] allow-paths` for the builder). Paths are checked once they are
//! known to be normalised (`validate_device_path`: absolute, no `.`, `..`,
//! empty components or trailing slash), so no spelling reaches a directory
//! twice. The runtime never follows a symbolic link on the way to a path and
//! every link it creates points into `/run/secrets/`, so a link cannot lead
//! into one of these directories either.

/// Directories under `/run` that a stock Debian or Raspberry Pi OS system
/// (systemd, udev, PAM, NetworkManager, cloud-init, polkit, …) reads as
/// code or as system configuration, each with why.
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("/run/systemd", "systemd's runtime units and drop-ins (system/, user/, transient/, generators), network/, resolved, journald and logind configuration, its sockets"),
    ("/run/udev", "udev rules (rules.d: RUN+= runs programs as root), the device database and udev's control socket"),
    ("/run/tmpfiles.d", "systemd-tmpfiles: creates, writes, chmods and chowns any path as root"),
    ("/run/sysusers.d", "systemd-sysusers: creates users and groups and adds members (sudo, disk)"),
    ("/run/sysctl.d", "kernel parameters set at boot (systemd-sysctl)"),
    ("/run/modprobe.d", "modprobe configuration: an install line runs a command as root"),
    ("/run/modules-load.d", "kernel modules loaded at boot"),
    ("/run/binfmt.d", "binfmt_misc: which interpreter runs which binaries (with their privileges)"),
    ("/run/environment.d", "the environment of user managers and sessions (LD_PRELOAD, PATH)"),
    ("/run/repart.d", "systemd-repart: partitions and formats disks"),
    ("/run/sysupdate.d", "systemd-sysupdate: which OS images are downloaded and installed"),
    ("/run/extensions", "systemd-sysext: images merged over /usr"),
    ("/run/confexts", "systemd-confext: images merged over /etc"),
    ("/run/portables", "portablectl: service images attached as units"),
    ("/run/machines", "machinectl and systemd-nspawn: container images run as machines"),
    ("/run/nextroot", "systemctl soft-reboot switches into it as the next root file system"),
    ("/run/initramfs", "systemd-shutdown executes /run/initramfs/shutdown as PID 1"),
    ("/run/credentials", "the credentials systemd passes to units (LoadCredential=, SetCredential=)"),
    ("/run/credstore", "searched by LoadCredential= and ImportCredential=: credentials such as tmpfiles.extra, sysusers.extra or network.* configure the system"),
    ("/run/credstore.encrypted", "encrypted credentials, searched like /run/credstore"),
    ("/run/user", "per-user runtime directories: user units (systemd/user), the session bus and agent sockets"),
    ("/run/dbus", "the system bus socket: a file there impersonates or blocks D-Bus"),
    ("/run/polkit-1", "polkit authorization rules (rules.d, JavaScript run by polkitd)"),
    ("/run/NetworkManager", "NetworkManager's conf.d, dispatcher.d scripts (run as root), resolv.conf and state; only system-connections/ is allowed"),
    ("/run/netplan", "netplan: YAML that becomes systemd-networkd and NetworkManager configuration"),
    ("/run/resolvconf", "resolvconf: the DNS servers of /etc/resolv.conf"),
    ("/run/cloud-init", "cloud-init's runtime configuration (cloud.cfg, ds-identify): runcmd and friends run as root"),
    ("/run/sudo", "sudo's timestamp records: a forged record skips the password"),
    ("/run/faillock", "pam_faillock's failure records (account lockout)"),
    ("/run/nologin", "its existence refuses every login but root's (pam_nologin)"),
    ("/run/motd", "the message of the day shown to every user at login (pam_motd)"),
    ("/run/motd.d", "messages shown to every user at login (pam_motd)"),
    ("/run/motd.dynamic", "the message of the day shown to every user at login (pam_motd)"),
    ("/run/issue", "the text agetty shows on every console before login"),
    ("/run/issue.d", "texts agetty shows on every console before login"),
    ("/run/utmp", "the login records that who, w and last trust"),
    ("/run/log", "the volatile journal (/run/log/journal): forged log entries"),
    ("/run/blkid", "libblkid's cache: LABEL= and UUID= lookups (mount, fsck) trust it"),
    ("/run/mount", "libmount's utab: how mounts were made (umount trusts it for user mounts)"),
    ("/run/network", "ifupdown's state: which interfaces it takes as configured"),
    ("/run/chrony-dhcp", "chrony's time sources (sourcedir in Debian's chrony.conf): the clock that certificate checks and logs trust"),
];

/// Directories inside a forbidden one that hold data, not code, and are
/// the intended home of some secrets.
pub const ALLOWED_WITHIN: &[(&str, &str)] = &[(
    "/run/NetworkManager/system-connections",
    "NetworkManager connection profiles (keyfiles, 0600 root), the intended home of Wi-Fi templates; a profile configures a network and runs nothing",
)];

/// The credential namespaces systemd and its components read as system
/// configuration (systemd.system-credentials(7)): a credential of that
/// name in `/run/credstore` (or `/etc/credstore.encrypted`) configures the
/// system at the next boot or service start. A secret's `credential` or
/// `credential-encrypted` name is refused when its first dot-separated
/// part (ASCII case ignored) is one of these, unless the device allows
/// `/run/credstore/NAME` explicitly (`allow_path`; `[policy] allow-paths`
/// in the recipe).
pub const SYSTEM_CREDENTIALS: &[(&str, &str)] = &[
    ("tmpfiles", "tmpfiles.extra: systemd-tmpfiles lines, which create, write and chown any path as root"),
    ("sysusers", "sysusers.extra: users and groups systemd-sysusers creates"),
    ("passwd", "passwd.hashed-password.*, passwd.plaintext-password.*, passwd.shell.*: passwords and shells of system users (root)"),
    ("userdb", "userdb.user.*, userdb.group.*: user and group records"),
    ("home", "home.create.*: home directories systemd-homed creates"),
    ("systemd", "systemd.extra-unit.*, systemd.unit-dropin.*: units and drop-ins systemd runs"),
    ("udev", "udev.conf.*, udev.rules.*: udev configuration and rules (RUN+= runs programs as root)"),
    ("sysctl", "sysctl.extra: kernel parameters"),
    ("fstab", "fstab.extra: file systems mounted at boot"),
    ("network", "network.*: networkd, netdev, link and WireGuard configuration, DNS, /etc/hosts"),
    ("ssh", "ssh.authorized_keys.root, ssh.listen: who logs in as root over SSH, and where sshd listens"),
    ("login", "login.issue, login.motd, login.noauth: texts shown at login, logins without authentication"),
    ("agetty", "agetty.autologin: a console logged in without a password"),
    ("getty", "getty.ttys.*: the terminals gettys run on"),
    ("tty", "tty.*: terminal settings"),
    ("shell", "shell.prompt.*, shell.welcome: what every shell prints"),
    ("firstboot", "firstboot.*: keymap, locale and time zone systemd-firstboot sets"),
    ("vconsole", "vconsole.*: the console keymap and font"),
    ("system", "system.machine_id, system.hostname: the machine's identity"),
    ("cryptsetup", "cryptsetup.*: disk passphrases and PINs"),
    ("journal", "journal.*: where the journal is stored and forwarded"),
    ("vmm", "vmm.notify_socket: where the system reports its state"),
    ("import", "import.*: images systemd-importd downloads"),
    ("io", "io.systemd.*: systemd's own interfaces"),
];

/// The system credential namespace `name` is in, ASCII case ignored.
pub fn system_credential(name: &str) -> Option<(&'static str, &'static str)> {
    let first = name.split('.').next().unwrap_or_default();
    SYSTEM_CREDENTIALS
        .iter()
        .copied()
        .find(|(ns, _)| first.eq_ignore_ascii_case(ns))
}

/// Where systemd looks for the credential `name` (the device path the
/// `allow_path` rule is written for).
pub fn credstore_path(name: &str) -> String {
    format!("/run/credstore/{name}")
}

/// The `/run` prefixes a device (or a recipe) allows besides the default
/// rule. Empty: the default rule alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    allow: Vec<String>,
}

impl PathPolicy {
    /// The default rule: every directory of [`FORBIDDEN`] refused.
    pub fn strict() -> PathPolicy {
        PathPolicy::default()
    }

    /// The default rule with `prefixes` allowed (each a normalised path
    /// under `/run`: itself and everything below it).
    pub fn allowing(prefixes: Vec<String>) -> Result<PathPolicy, String> {
        for p in &prefixes {
            validate_device_path(p)
                .and_then(|()| look_alike(p))
                .map_err(|e| format!("allowed path {p:?}: {e}"))?;
        }
        Ok(PathPolicy { allow: prefixes })
    }

    /// The prefixes allowed explicitly.
    pub fn allowed(&self) -> &[String] {
        &self.allow
    }

    /// Whether `path` is at or below a prefix allowed explicitly.
    pub fn allows_explicitly(&self, path: &str) -> bool {
        self.allow.iter().any(|p| {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether a secret may be handed to systemd as the credential `name`:
    /// not a system credential, unless `/run/credstore/NAME` is allowed
    /// explicitly. The error names the namespace and why.
    pub fn check_credential(&self, name: &str) -> Result<(), String> {
        let Some((ns, why)) = system_credential(name) else {
            return Ok(());
        };
        if self.allows_explicitly(&credstore_path(name)) {
            return Ok(());
        }
        Err(format!(
            "the credential name {name:?} is in systemd's {ns}.* namespace, which configures the system ({why}); \
             choose another name, or allow it explicitly (allow_path = {} in /etc/sealed-firstboot.conf on the device, [policy] allow-paths in the recipe)",
            credstore_path(name)
        ))
    }

    /// Whether a normalised device path may hold a secret, a template or
    /// the link made for one. The error names the directory and why.
    pub fn check(&self, path: &str) -> Result<(), String> {
        look_alike(path)?;
        let Some((dir, why)) = forbidden_dir(path) else {
            return Ok(());
        };
        let under = |prefix: &str| {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let inside = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
        };
        if self.allow.iter().any(|p| under(p)) || ALLOWED_WITHIN.iter().any(|(p, _)| inside(p)) {
            return Ok(());
        }
        let instead = if CREDENTIAL_DIRS.contains(&dir) {
            "; to hand a secret to systemd as a credential, set credential = \"NAME\" (or credential-encrypted) on it: sealed-firstboot writes /run/credstore itself"
        } else {
            ""
        };
        Err(format!(
            "the path is in {dir}, which the system reads as code or configuration ({why}); \
             keep secrets under /run/secrets, or allow the prefix explicitly \
             (allow_path in /etc/sealed-firstboot.conf on the device, [policy] allow-paths in the recipe){instead}"
        ))
    }
}

/// The directory right under `/run` (where every directory of
/// [`FORBIDDEN`] and the runtime's own names are) must be spelled in ASCII,
/// and a name of the runtime's exactly: a file system that folds case
/// (tmpfs and ext4 with `casefold`) folds Unicode too, so `/run/ſystemd`
/// (long s) would be `/run/systemd` there, and `/run/Secrets` the
/// runtime's `/run/secrets`. Names further down are free (Wi-Fi profiles
/// named `Café.nmconnection`).
fn look_alike(path: &str) -> Result<(), String> {
    let first = path
        .strip_prefix("/run/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    if !first.is_ascii() {
        return Err(format!(
            "the directory {first:?} right under /run is not spelled in ASCII: on a file system \
             that folds case a look-alike may be one the system reads as code or configuration \
             (/run/\u{17f}ystemd, with a long s, is /run/systemd there); use an ASCII name"
        ));
    }
    let lower = first.to_ascii_lowercase();
    let runtime =
        RESERVED_RUN_NAMES.iter().any(|n| lower == *n) || lower.starts_with(RESERVED_RUN_PREFIX);
    if runtime && !RESERVED_RUN_NAMES.contains(&first) && !first.starts_with(RESERVED_RUN_PREFIX) {
        return Err(format!(
            "/run/{first} differs from the runtime's own /run/{lower} only in case (on a file system that folds case it is the same); use a file under /run/secrets/"
        ));
    }
    Ok(())
}

/// The directories where credentials are found, which sealed-firstboot
/// writes itself for `credential = "NAME"` (refused to bundle paths by the
/// default rule, like every directory of [`FORBIDDEN`]).
pub const CREDENTIAL_DIRS: [&str; 2] = ["/run/credstore", "/run/credstore.encrypted"];

/// The forbidden directory `path` is at or below, ASCII case ignored.
pub fn forbidden_dir(path: &str) -> Option<(&'static str, &'static str)> {
    let lower = path.to_ascii_lowercase();
    FORBIDDEN.iter().copied().find(|(dir, _)| {
        let dir = dir.to_ascii_lowercase();
        lower == dir
            || lower
                .strip_prefix(&dir)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Longest device path, and longest component (Linux `NAME_MAX`).
pub const MAX_PATH_BYTES: usize = 1024;
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Names under `/run` and `/run/secrets` the runtime owns.
pub const RESERVED_RUN_NAMES: [&str; 2] = ["secrets", "secrets.d"];
pub const RESERVED_RUN_PREFIX: &str = "secrets.tmp-";
pub const RESERVED_SECRETS_NAME: &str = ".outside";

/// Device paths: absolute, normalised, strictly under `/run`, each component
/// a plain name of at most 255 bytes (no `.`, `..`, empty components or
/// control characters), and nothing the runtime owns: `/run/secrets` and
/// `/run/secrets.d` themselves, anything in `/run/secrets.d`,
/// `/run/secrets.tmp-*`, and `/run/secrets/.outside` (where secrets with
/// paths elsewhere under `/run` live).
pub fn validate_device_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix("/run/")
        .ok_or_else(|| "the path must be absolute and under /run/".to_string())?;
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path is longer than {MAX_PATH_BYTES} bytes"));
    }
    for comp in rest.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(
                "the path must be normalised (no empty, '.' or '..' components)".to_string(),
            );
        }
        if comp.bytes().any(|c| c.is_ascii_control()) {
            return Err("the path contains a control character".to_string());
        }
        if comp.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "the path has a component of {} bytes (limit {MAX_COMPONENT_BYTES})",
                comp.len()
            ));
        }
    }
    let first = rest.split('/').next().unwrap_or_default();
    let reserved = RESERVED_RUN_NAMES.contains(&rest)
        || rest.starts_with("secrets.d/")
        || first.starts_with(RESERVED_RUN_PREFIX)
        || rest
            .strip_prefix("secrets/")
            .is_some_and(|r| r.split('/').next() == Some(RESERVED_SECRETS_NAME));
    if reserved {
        return Err(
            "the path is reserved for the runtime (/run/secrets, /run/secrets.d, /run/secrets.tmp-*, /run/secrets/.outside); use a file under /run/secrets/".to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_device_path("/run/secrets/wifi").is_ok());
        assert!(validate_device_path("/run/wpa/psk").is_ok());
        for bad in [
            "/etc/shadow",
            "run/secrets/x",
            "/run/secrets/../../etc/x",
            "/run/secrets/./x",
            "/run//x",
            "/run/secrets",
            "/run/secrets.d/1/x",
            "/run/",
            "/run/x/",
            "/run/secrets/.outside/x",
            "/run/secrets/.outside",
            "/run/secrets.tmp-5",
            "/run/secrets.tmp-5/x",
            "/run/secrets.d",
            &format!("/run/secrets/{}", "x".repeat(256)),
        ] {
            assert!(validate_device_path(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_device_path(&format!("/run/secrets/{}", "x".repeat(255))).is_ok());
        assert!(validate_device_path("/run/secrets/.outsider").is_ok());
        assert!(validate_device_path("/run/secrets.tmp/x").is_ok());
    }

    #[test]
    fn every_listed_directory_and_what_is_below_it_is_refused() {
        let strict = PathPolicy::strict();
        for (dir, _) in FORBIDDEN {
            for path in [
                dir.to_string(),
                format!("{dir}/x"),
                format!("{dir}/a/b/c.conf"),
                dir.to_uppercase(),
                format!("{}/x", dir.to_uppercase()),
            ] {
                let e = strict.check(&path).unwrap_err();
                assert!(e.contains(dir), "{path}: {e}");
            }
        }
        for ok in [
            "/run/secrets/x",
            "/run/wpa/psk",
            "/run/systemdx/y",
            "/run/udev2",
            "/run/user-data/x",
            "/run/NetworkManager/system-connections/wifi.nmconnection",
            "/run/networkmanager-like/x",
        ] {
            assert!(strict.check(ok).is_ok(), "{ok} refused");
        }
        // The allowed directory itself is no file, and only its exact
        // spelling is NetworkManager's.
        for bad in [
            "/run/NetworkManager/system-connections",
            "/run/NetworkManager/System-Connections/x",
            "/run/NetworkManager/conf.d/x.conf",
            "/run/NetworkManager/dispatcher.d/01-x",
        ] {
            assert!(strict.check(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn look_alikes_and_case_variants_of_the_runtime_are_refused() {
        let strict = PathPolicy::strict();
        for bad in [
            "/run/\u{17f}ystemd/system/x.service",
            "/run/ud\u{435}v/rules.d/x.rules",
            "/run/i\u{df}ue",
            "/run/Secrets/x",
            "/run/SECRETS.D/1/x",
            "/run/Secrets.tmp-1/x",
        ] {
            assert!(strict.check(bad).is_err(), "{bad} accepted");
        }
        for ok in [
            "/run/secrets/caf\u{e9}",
            "/run/NetworkManager/system-connections/Caf\u{e9}.nmconnection",
            "/run/app/caf\u{e9}.conf",
            "/run/secretsx/y",
        ] {
            assert!(strict.check(ok).is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn system_credentials_are_refused_unless_allowed() {
        let strict = PathPolicy::strict();
        for (ns, _) in SYSTEM_CREDENTIALS {
            for name in [
                format!("{ns}.extra"),
                format!("{}.x", ns.to_uppercase()),
                ns.to_string(),
            ] {
                let e = strict.check_credential(&name).unwrap_err();
                assert!(e.contains(&format!("{ns}.*")), "{name}: {e}");
            }
        }
        for ok in [
            "app-db-password",
            "wifi_psk",
            "myapp.token",
            "tmpfilesx.extra",
            "systemdx",
        ] {
            assert!(strict.check_credential(ok).is_ok(), "{ok} refused");
        }
        let p = PathPolicy::allowing(vec!["/run/credstore/tmpfiles.extra".into()]).unwrap();
        assert!(p.check_credential("tmpfiles.extra").is_ok());
        assert!(p.check_credential("sysusers.extra").is_err());
        // Bundle paths there are refused by the default rule, pointing to
        // credential = (an explicit allow_path opens exactly what it names).
        for path in ["/run/credstore/x", "/run/CredStore.encrypted/x"] {
            assert!(
                strict.check(path).unwrap_err().contains("credential = "),
                "{path}"
            );
        }
        assert!(p.check("/run/credstore/y").is_err());
    }

    #[test]
    fn a_prefix_is_allowed_only_explicitly() {
        let p = PathPolicy::allowing(vec!["/run/systemd/network".into()]).unwrap();
        assert!(p.check("/run/systemd/network/10-wifi.network").is_ok());
        assert!(p.check("/run/systemd/network").is_ok());
        assert!(p.check("/run/systemd/networkd.conf.d/x").is_err());
        assert!(p.check("/run/systemd/system/x.service").is_err());
        for bad in ["/run/systemd/../x", "systemd", "/etc/x", "/run/x/"] {
            assert!(PathPolicy::allowing(vec![bad.into()]).is_err(), "{bad}");
        }
    }
}
