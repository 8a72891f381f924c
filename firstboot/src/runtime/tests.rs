use super::*;
use sealed_bundle::SecretType;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use tempfile::TempDir;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
svc:x:4242:4243:test service:/var/lib/svc:/usr/sbin/nologin
";
const GROUP: &str = "\
root:x:0:
svcgrp:x:4243:svc
";
const VALUE_MARK: &str = "SUPERSECRETVALUE";

fn tree() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::create_dir_all(dir.path().join("run")).unwrap();
    fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
    fs::write(dir.path().join("etc/group"), GROUP).unwrap();
    dir
}

fn entry(name: &str, path: &str, mode: u32) -> SecretEntry {
    owned(name, path, mode, "root", "root")
}

fn owned(name: &str, path: &str, mode: u32, owner: &str, group: &str) -> SecretEntry {
    SecretEntry {
        name: name.into(),
        kind: SecretType::File,
        path: path.into(),
        owner: owner.into(),
        group: group.into(),
        mode,
        description: None,
        restart_units: Vec::new(),
        reload_units: Vec::new(),
        credential: None,
        credential_encrypted: None,
    }
}

fn files<'a>(entries: &'a [SecretEntry], values: &'a [&'a [u8]]) -> Vec<SecretFile<'a>> {
    assert_eq!(entries.len(), values.len());
    entries
        .iter()
        .zip(values)
        .map(|(entry, value)| SecretFile { entry, value })
        .collect()
}

const PLAIN: UnsealOptions = UnsealOptions {
    mount_ramfs: false,
    apply_ownership: false,
};

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn link_target(p: &Path) -> String {
    fs::read_link(p).unwrap().to_string_lossy().into_owned()
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Read a device path through an absolute symlink, as the device would see
/// it (the link target is relative to the device root, not to ours).
fn read_through_link(root: &Path, device_path: &str) -> Vec<u8> {
    let target = link_target(&root.join(device_path.trim_start_matches('/')));
    assert!(target.starts_with("/run/secrets/"), "{target}");
    fs::read(root.join(target.trim_start_matches('/'))).unwrap()
}

/// Names in a directory, sorted.
fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Root-only tests skip when not root, unless CI=true (then they fail).
fn require_root(test: &str) -> bool {
    testkit::require_root(&format!("{test} (chown, mount)"))
}

#[test]
fn writes_contents_and_exact_modes() {
    let t = tree();
    let root = t.path();
    let entries = [
        entry("a", "/run/secrets/a", 0o400),
        entry("b", "/run/secrets/dir/sub/b", 0o440),
        entry("c", "/run/secrets/c", 0o600),
        entry("d", "/run/secrets/dir/d", 0o644),
    ];
    let values: [&[u8]; 4] = [b"alpha", b"beta\nline2\n", b"", b"\x00\xffbin"];
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    assert_eq!(report.generation, 1);
    assert_eq!(report.written, ["a", "b", "c", "d"]);
    assert!(report.links.is_empty());

    let run = root.join("run");
    assert_eq!(link_target(&run.join("secrets")), "secrets.d/1");
    assert_eq!(mode_of(&run.join("secrets.d")), 0o751);
    assert_eq!(mode_of(&run.join("secrets.d/1")), 0o751);
    assert_eq!(mode_of(&run.join("secrets.d/1/dir")), 0o755);
    assert_eq!(mode_of(&run.join("secrets.d/1/dir/sub")), 0o755);
    for (e, v) in entries.iter().zip(values) {
        let host = root.join(e.path.trim_start_matches('/'));
        assert_eq!(fs::read(&host).unwrap(), v, "{}", e.name);
        assert_eq!(mode_of(&host), e.mode, "{}", e.name);
        assert!(fs::symlink_metadata(&host).unwrap().is_file());
    }
    assert_eq!(names(&run.join("secrets.d/1")), ["a", "c", "dir"]);
    // No link state beyond an empty list.
    let state = fs::read_to_string(run.join("secrets.d/links.json")).unwrap();
    assert!(state.contains("\"links\": []"), "{state}");
    assert_eq!(mode_of(&run.join("secrets.d/links.json")), 0o600);
}

#[test]
fn second_unseal_swaps_and_removes_old_generation() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    let first = [
        entry("a", "/run/secrets/a", 0o400),
        entry("b", "/run/secrets/x/b", 0o440),
    ];
    unseal(root, &files(&first, &[b"one", b"bee"]), &PLAIN).unwrap();
    assert_eq!(fs::read(run.join("secrets/x/b")).unwrap(), b"bee");

    // b removed, a changed.
    let second = [entry("a", "/run/secrets/a", 0o440)];
    let report = unseal(root, &files(&second, &[b"two"]), &PLAIN).unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(link_target(&run.join("secrets")), "secrets.d/2");
    assert_eq!(names(&run.join("secrets.d")), ["2", "links.json"]);
    assert_eq!(fs::read(run.join("secrets/a")).unwrap(), b"two");
    assert_eq!(mode_of(&run.join("secrets/a")), 0o440);
    assert!(!exists(&run.join("secrets/x/b")));
    assert!(!exists(&run.join("secrets/x")));

    // No secrets at all: an empty generation, still swapped.
    let report = unseal(root, &[], &PLAIN).unwrap();
    assert_eq!(report.generation, 3);
    assert_eq!(names(&run.join("secrets.d")), ["3", "links.json"]);
    assert!(names(&run.join("secrets")).is_empty());
    // No temporary swap links are left behind.
    assert_eq!(names(&run), ["secrets", "secrets.d"]);
}

#[test]
fn outside_paths_become_links_and_stale_links_go() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    let entries = [
        entry("wpa_psk", "/run/wpa/psk", 0o400),
        entry("token", "/run/app/conf/token", 0o440),
        entry("inside", "/run/secrets/inside", 0o400),
    ];
    let report = unseal(root, &files(&entries, &[b"psk", b"tok", b"in"]), &PLAIN).unwrap();
    assert_eq!(report.links, ["/run/wpa/psk", "/run/app/conf/token"]);
    assert_eq!(
        link_target(&run.join("wpa/psk")),
        "/run/secrets/.outside/wpa_psk"
    );
    assert_eq!(
        link_target(&run.join("app/conf/token")),
        "/run/secrets/.outside/token"
    );
    assert_eq!(mode_of(&run.join("wpa")), 0o755);
    assert_eq!(mode_of(&run.join("app/conf")), 0o755);
    let stored = run.join("secrets.d/1/.outside/wpa_psk");
    assert_eq!(fs::read(&stored).unwrap(), b"psk");
    assert_eq!(read_through_link(root, "/run/wpa/psk"), b"psk");
    assert_eq!(read_through_link(root, "/run/app/conf/token"), b"tok");
    assert_eq!(mode_of(&stored), 0o400);
    assert_eq!(mode_of(&run.join("secrets.d/1/.outside")), 0o751);
    assert_eq!(mode_of(&run.join("secrets.d/1/.outside/token")), 0o440);
    let state = fs::read_to_string(run.join("secrets.d/links.json")).unwrap();
    assert!(
        state.contains("/run/wpa/psk") && state.contains("/run/app/conf/token"),
        "{state}"
    );

    // Drop the token: its link goes, the other stays (same target).
    let report = unseal(root, &files(&entries[..1], &[b"psk2"]), &PLAIN).unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(report.links, ["/run/wpa/psk"]);
    assert_eq!(
        link_target(&run.join("wpa/psk")),
        "/run/secrets/.outside/wpa_psk"
    );
    assert!(!exists(&run.join("app/conf/token")));
    assert!(
        exists(&run.join("app/conf")),
        "directories are left in place"
    );
    let state = fs::read_to_string(run.join("secrets.d/links.json")).unwrap();
    assert!(!state.contains("token"), "{state}");

    // Our own old link with another target is replaced atomically.
    fs::remove_file(run.join("wpa/psk")).unwrap();
    symlink("/run/secrets/.outside/old_name", run.join("wpa/psk")).unwrap();
    unseal(root, &files(&entries[..1], &[b"psk3"]), &PLAIN).unwrap();
    assert_eq!(
        link_target(&run.join("wpa/psk")),
        "/run/secrets/.outside/wpa_psk"
    );
    assert_eq!(names(&run.join("wpa")), ["psk"], "no temporary link left");

    // A stale link someone replaced with a real file is left alone.
    fs::remove_file(run.join("wpa/psk")).unwrap();
    fs::write(run.join("wpa/psk"), "theirs").unwrap();
    unseal(root, &[], &PLAIN).unwrap();
    assert_eq!(fs::read(run.join("wpa/psk")).unwrap(), b"theirs");
}

/// The one refusal of `report`, for `name`, as text.
fn refusal(report: &UnsealReport, name: &str) -> String {
    let names: Vec<&str> = report.refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [name], "refused");
    report.refused[0].1.to_string()
}

/// A link planted on the way to one secret's path fails that secret
/// alone: nothing is written through the link, every other secret is
/// unsealed.
#[test]
fn planted_symlink_parent_fails_that_secret_alone_and_nothing_is_written_through_it() {
    let t = tree();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = t.path();
    symlink(elsewhere.path(), root.join("run/wpa")).unwrap();
    let entries = [
        entry("first", "/run/secrets/first", 0o400),
        entry("wpa_psk", "/run/wpa/psk", 0o400),
    ];
    let report = unseal(
        root,
        &files(&entries, &[b"x", VALUE_MARK.as_bytes()]),
        &PLAIN,
    )
    .unwrap();
    let msg = refusal(&report, "wpa_psk");
    assert!(
        matches!(report.refused[0].1, RuntimeError::SymlinkInPath { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("/run/wpa/psk") && msg.contains("\"/run/wpa\""),
        "{msg}"
    );
    assert!(!msg.contains(VALUE_MARK));
    assert_eq!(report.written, ["first"]);
    assert_eq!(fs::read(root.join("run/secrets/first")).unwrap(), b"x");
    assert!(
        names(elsewhere.path()).is_empty(),
        "something was written through the link"
    );

    // A symlink deeper in the parent path too.
    fs::remove_file(root.join("run/wpa")).unwrap();
    fs::create_dir(root.join("run/app")).unwrap();
    symlink(elsewhere.path(), root.join("run/app/conf")).unwrap();
    let entries = [
        entry("tok", "/run/app/conf/deep/token", 0o400),
        entry("first", "/run/secrets/first", 0o400),
    ];
    let report = unseal(root, &files(&entries, &[b"x", b"y"]), &PLAIN).unwrap();
    assert!(refusal(&report, "tok").contains("\"/run/app/conf\""));
    assert_eq!(report.written, ["first"]);
    assert!(names(elsewhere.path()).is_empty());
}

/// Something planted at one secret's link location (a foreign link, a
/// file, a FIFO, a directory, a file as parent) is never followed or
/// replaced, and fails that secret alone.
#[test]
fn occupied_link_location_fails_that_secret_alone_not_clobbered() {
    let t = tree();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = root.join("run");
    fs::create_dir(run.join("wpa")).unwrap();
    let entries = [
        entry("wpa_psk", "/run/wpa/psk", 0o400),
        entry("other", "/run/secrets/other", 0o400),
    ];
    let values: [&[u8]; 2] = [VALUE_MARK.as_bytes(), b"o"];

    // A foreign symlink at the file location: not followed, not replaced.
    let target = elsewhere.path().join("target");
    fs::write(&target, "original").unwrap();
    symlink(&target, run.join("wpa/psk")).unwrap();
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    let msg = refusal(&report, "wpa_psk");
    assert!(
        matches!(report.refused[0].1, RuntimeError::LinkOccupied { .. }),
        "{msg}"
    );
    assert!(!msg.contains(VALUE_MARK));
    assert_eq!(report.written, ["other"]);
    assert_eq!(fs::read(run.join("secrets/other")).unwrap(), b"o");
    assert_eq!(fs::read(&target).unwrap(), b"original");
    assert_eq!(link_target(&run.join("wpa/psk")), target.to_string_lossy());

    // A regular file.
    fs::remove_file(run.join("wpa/psk")).unwrap();
    fs::write(run.join("wpa/psk"), "mine").unwrap();
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    assert!(refusal(&report, "wpa_psk").contains("a regular file"));
    assert_eq!(fs::read(run.join("wpa/psk")).unwrap(), b"mine");

    // A FIFO (opening it could block forever: it is never opened).
    fs::remove_file(run.join("wpa/psk")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        run.join("wpa/psk"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    assert!(refusal(&report, "wpa_psk").contains("wpa/psk"));
    assert_eq!(report.written, ["other"]);

    // A directory.
    fs::remove_file(run.join("wpa/psk")).unwrap();
    fs::create_dir(run.join("wpa/psk")).unwrap();
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    assert!(refusal(&report, "wpa_psk").contains("a directory"));

    // A parent that is a file.
    fs::remove_dir(run.join("wpa/psk")).unwrap();
    fs::remove_dir(run.join("wpa")).unwrap();
    fs::write(run.join("wpa"), "file").unwrap();
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    refusal(&report, "wpa_psk");
    assert!(matches!(
        report.refused[0].1,
        RuntimeError::NotADirectory { .. }
    ));
    assert_eq!(fs::read(run.join("wpa")).unwrap(), b"file");
    assert_eq!(report.written, ["other"]);
}

/// A link location in a directory another user can write (group- or
/// world-writable, sticky or not) is refused for that secret: that user
/// could plant or swap what is at the path.
#[test]
fn a_link_location_in_a_directory_others_can_write_fails_that_secret_alone() {
    use std::os::unix::fs::PermissionsExt;
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    fs::create_dir(run.join("shared")).unwrap();
    let entries = [
        entry("tok", "/run/shared/app/token", 0o400),
        entry("other", "/run/secrets/other", 0o400),
    ];
    for mode in [0o777, 0o1777, 0o775] {
        fs::set_permissions(run.join("shared"), fs::Permissions::from_mode(mode)).unwrap();
        let report = unseal(root, &files(&entries, &[b"t", b"o"]), &PLAIN).unwrap();
        let msg = refusal(&report, "tok");
        assert!(
            msg.contains("\"/run/shared\"") && msg.contains("writable by its group or others"),
            "{msg}"
        );
        assert_eq!(report.written, ["other"]);
        assert!(!exists(&run.join("shared/app")), "created in it");
    }
    fs::set_permissions(run.join("shared"), fs::Permissions::from_mode(0o755)).unwrap();
    let report = unseal(root, &files(&entries, &[b"t", b"o"]), &PLAIN).unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(read_through_link(root, "/run/shared/app/token"), b"t");
}

#[test]
fn planted_symlinks_in_generations_are_removed_not_followed() {
    let t = tree();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = root.join("run");
    fs::write(elsewhere.path().join("keep"), "keep").unwrap();
    let entries = [entry("a", "/run/secrets/a", 0o400)];
    unseal(root, &files(&entries, &[b"1"]), &PLAIN).unwrap();
    // A fake generation that is a symlink, and a symlink inside generation 1.
    symlink(elsewhere.path(), run.join("secrets.d/7")).unwrap();
    symlink(elsewhere.path(), run.join("secrets.d/1/evil")).unwrap();
    // Leading zeros still count as a generation and are removed by name.
    fs::create_dir(run.join("secrets.d/005")).unwrap();
    let report = unseal(root, &files(&entries, &[b"2"]), &PLAIN).unwrap();
    assert_eq!(report.generation, 8);
    assert_eq!(names(&run.join("secrets.d")), ["8", "links.json"]);
    assert_eq!(names(elsewhere.path()), ["keep"]);
    assert_eq!(fs::read(run.join("secrets/a")).unwrap(), b"2");

    // /run/secrets.d itself as a symlink is refused.
    clear(root).unwrap();
    fs::remove_dir(run.join("secrets.d")).unwrap();
    symlink(elsewhere.path(), run.join("secrets.d")).unwrap();
    let err = unseal(root, &files(&entries, &[b"3"]), &PLAIN).unwrap_err();
    assert!(matches!(err, RuntimeError::Occupied { .. }), "{err}");
    assert_eq!(names(elsewhere.path()), ["keep"]);

    // And so is /run itself.
    let t2 = tree();
    fs::remove_dir(t2.path().join("run")).unwrap();
    symlink(elsewhere.path(), t2.path().join("run")).unwrap();
    assert!(unseal(t2.path(), &files(&entries, &[b"4"]), &PLAIN).is_err());
    assert_eq!(names(elsewhere.path()), ["keep"]);
}

#[test]
fn real_directory_at_run_secrets_is_refused() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    fs::create_dir(run.join("secrets")).unwrap();
    fs::write(run.join("secrets/precious"), "data").unwrap();
    let entries = [entry("a", "/run/secrets/a", 0o400)];
    let err = unseal(root, &files(&entries, &[b"v"]), &PLAIN).unwrap_err();
    assert!(matches!(err, RuntimeError::Occupied { .. }), "{err}");
    assert!(err.to_string().contains("a real directory"), "{err}");
    assert_eq!(fs::read(run.join("secrets/precious")).unwrap(), b"data");
    assert!(!exists(&run.join("secrets.d")));
    assert!(clear(root).is_err());
    assert_eq!(fs::read(run.join("secrets/precious")).unwrap(), b"data");

    // A foreign symlink at /run/secrets is replaced, its target untouched.
    let elsewhere = tempfile::tempdir().unwrap();
    fs::remove_dir_all(run.join("secrets")).unwrap();
    symlink(elsewhere.path(), run.join("secrets")).unwrap();
    unseal(root, &files(&entries, &[b"v"]), &PLAIN).unwrap();
    assert_eq!(link_target(&run.join("secrets")), "secrets.d/1");
    assert!(names(elsewhere.path()).is_empty());
}

#[test]
fn bad_paths_names_and_modes_are_refused() {
    let t = tree();
    let root = t.path();
    let cases: Vec<(Vec<SecretEntry>, &str)> = vec![
        (vec![entry("a", "/etc/shadow", 0o400)], "under /run"),
        (
            vec![entry("a", "/run/secrets/../../etc/x", 0o400)],
            "normalised",
        ),
        (vec![entry("a", "/run/../etc/x", 0o400)], "normalised"),
        (vec![entry("a", "/run/secrets/./x", 0o400)], "normalised"),
        (vec![entry("a", "/run/secrets", 0o400)], "reserved"),
        (vec![entry("a", "/run/secrets.d/1/x", 0o400)], "reserved"),
        (
            vec![entry("a", "/run/secrets/.outside/x", 0o400)],
            "reserved",
        ),
        (vec![entry("a", "/run/secrets.tmp-3", 0o400)], "reserved"),
        (vec![entry("a", "run/secrets/x", 0o400)], "under /run"),
        (
            vec![entry("a/b", "/run/secrets/x", 0o400)],
            "invalid secret name",
        ),
        (vec![entry("a", "/run/secrets/x", 0o4755)], "outside 0777"),
        (
            vec![
                entry("a", "/run/secrets/x", 0o400),
                entry("a", "/run/secrets/y", 0o400),
            ],
            "two secrets",
        ),
        (
            vec![
                entry("a", "/run/secrets/x", 0o400),
                entry("b", "/run/secrets/x", 0o400),
            ],
            "also used by secret a",
        ),
        (
            vec![
                entry("a", "/run/secrets/x", 0o400),
                entry("b", "/run/secrets/x/y", 0o400),
            ],
            "needs it as a directory",
        ),
    ];
    for (entries, expect) in &cases {
        let values: Vec<&[u8]> = entries.iter().map(|_| VALUE_MARK.as_bytes()).collect();
        let err = unseal(root, &files(entries, &values), &PLAIN).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RuntimeError::InvalidSecret { .. }), "{msg}");
        assert!(msg.contains(expect), "{:?}: {msg}", entries[0].path);
        assert!(msg.contains(&entries[0].name), "{msg}");
        assert!(!msg.contains(VALUE_MARK) && !format!("{err:?}").contains(VALUE_MARK));
        assert!(
            names(&root.join("run")).is_empty(),
            "{:?} wrote something",
            entries[0].path
        );
    }
    assert!(!exists(&root.join("etc/shadow")));
}

#[test]
fn unknown_owner_or_group_fails_only_that_secret() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    let entries = [
        owned("good", "/run/secrets/good", 0o400, "svc", "svcgrp"),
        owned("ghostly", "/run/secrets/ghostly", 0o400, "ghost", "svcgrp"),
        owned("nogroup", "/run/wpa/psk", 0o400, "root", "nogroup"),
        owned("numeric", "/run/secrets/numeric", 0o400, "4300", "4301"),
    ];
    let values: [&[u8]; 4] = [b"1", b"2", b"3", b"4"];
    // A missing owner or group fails that secret only: the others are
    // written, the failures are named.
    let report = unseal(root, &files(&entries, &values), &PLAIN).unwrap();
    assert_eq!(report.written, ["good", "numeric"]);
    let msg: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
    let msg = msg.join("; ");
    assert_eq!(report.failed.len(), 2, "{msg}");
    assert!(
        msg.contains("secret ghostly") && msg.contains("\"ghost\"") && msg.contains("etc/passwd"),
        "{msg}"
    );
    assert!(
        msg.contains("secret nogroup") && msg.contains("\"nogroup\"") && msg.contains("etc/group"),
        "{msg}"
    );
    assert_eq!(fs::read(run.join("secrets/good")).unwrap(), b"1");
    assert_eq!(fs::read(run.join("secrets/numeric")).unwrap(), b"4");
    assert!(!exists(&run.join("secrets/ghostly")));
    assert!(!exists(&run.join("wpa/psk")));
}

#[test]
fn failure_before_swap_removes_new_generation() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    let good = [entry("a", "/run/secrets/a", 0o400)];
    unseal(root, &files(&good, &[b"1"]), &PLAIN).unwrap();
    // The swap's temporary name is taken by a real directory: the swap
    // fails after generation 2 was filled, which must be rolled back.
    fs::create_dir(run.join("secrets.tmp-2")).unwrap();
    let err = unseal(root, &files(&good, &[b"2"]), &PLAIN).unwrap_err();
    assert!(matches!(err, RuntimeError::Occupied { .. }), "{err}");
    assert_eq!(names(&run.join("secrets.d")), ["1", "links.json"]);
    assert_eq!(link_target(&run.join("secrets")), "secrets.d/1");
    assert_eq!(fs::read(run.join("secrets/a")).unwrap(), b"1");
    // A leftover temp symlink from an interrupted swap is fine.
    fs::remove_dir(run.join("secrets.tmp-2")).unwrap();
    symlink("secrets.d/2", run.join("secrets.tmp-2")).unwrap();
    symlink("secrets.d/9", run.join("secrets.tmp-9")).unwrap();
    let report = unseal(root, &files(&good, &[b"2"]), &PLAIN).unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(names(&run), ["secrets", "secrets.d"]);
}

#[test]
fn clear_removes_link_generations_and_links() {
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    clear(root).unwrap(); // nothing there yet
    let entries = [
        entry("a", "/run/secrets/a", 0o400),
        entry("w", "/run/wpa/psk", 0o400),
    ];
    unseal(root, &files(&entries, &[b"1", b"2"]), &PLAIN).unwrap();
    clear(root).unwrap();
    assert!(!exists(&run.join("secrets")));
    assert!(!exists(&run.join("wpa/psk")));
    assert!(names(&run.join("secrets.d")).is_empty());
    let report = unseal(root, &files(&entries, &[b"1", b"2"]), &PLAIN).unwrap();
    assert_eq!(report.generation, 1);
    assert_eq!(read_through_link(root, "/run/wpa/psk"), b"2");

    let empty = tempfile::tempdir().unwrap();
    clear(empty.path()).unwrap();
}

#[test]
fn debug_and_errors_never_show_values() {
    let e = entry("a", "/run/secrets/a", 0o400);
    let f = SecretFile {
        entry: &e,
        value: VALUE_MARK.as_bytes(),
    };
    let dbg = format!("{f:?}");
    assert!(
        !dbg.contains(VALUE_MARK) && dbg.contains("16 bytes"),
        "{dbg}"
    );
}

#[test]
fn as_root_applies_owner_group_and_mode() {
    if !require_root("as_root_applies_owner_group_and_mode") {
        return;
    }
    let t = tree();
    let root = t.path();
    let run = root.join("run");
    let entries = [
        owned("svc_key", "/run/secrets/svc/key", 0o400, "svc", "svcgrp"),
        owned("shared", "/run/secrets/shared", 0o440, "root", "svcgrp"),
        owned("numeric", "/run/secrets/numeric", 0o600, "4300", "4301"),
        owned("outside", "/run/wpa/psk", 0o440, "svc", "root"),
    ];
    let opts = UnsealOptions {
        mount_ramfs: false,
        apply_ownership: true,
    };
    unseal(root, &files(&entries, &[b"k", b"s", b"n", b"o"]), &opts).unwrap();
    let check = |rel: &str, uid: u32, gid: u32, mode: u32| {
        let md = fs::symlink_metadata(run.join(rel)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (uid, gid, mode),
            "{rel}"
        );
    };
    check("secrets.d/1/svc/key", 4242, 4243, 0o400);
    check("secrets.d/1/shared", 0, 4243, 0o440);
    check("secrets.d/1/numeric", 4300, 4301, 0o600);
    check("secrets.d/1/.outside/outside", 4242, 0, 0o440);
    check("secrets.d", 0, 0, 0o751);
    check("secrets.d/1", 0, 0, 0o751);
    check("secrets.d/1/svc", 0, 0, 0o755);
    check("secrets.d/1/.outside", 0, 0, 0o751);
    check("secrets.d/links.json", 0, 0, 0o600);
    check("wpa", 0, 0, 0o755);
    assert_eq!(read_through_link(root, "/run/wpa/psk"), b"o");

    // Non-root readers: the svc user can read its key through the link
    // chain only if each directory is traversable (0751/0755).
    for dir in ["secrets.d", "secrets.d/1", "secrets.d/1/svc"] {
        assert_ne!(mode_of(&run.join(dir)) & 0o001, 0, "{dir} not traversable");
    }
}

/// Unmounts at the end of the test, even when an assertion fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        // Both mounts if a test mounted twice by mistake.
        while rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::empty()).is_ok() {}
    }
}

fn mount_count(path: &Path) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.as_ref()))
        .count()
}

#[test]
fn as_root_mounts_ramfs_once() {
    if !require_root("as_root_mounts_ramfs_once") {
        return;
    }
    let t = tree();
    let root = t.path().canonicalize().unwrap();
    let gens = root.join("run/secrets.d");
    let _guard = Unmount(gens.clone());
    let entries = [owned("k", "/run/secrets/k", 0o400, "svc", "svcgrp")];
    let opts = UnsealOptions::device();
    unseal(&root, &files(&entries, &[b"v1"]), &opts).unwrap();
    assert_eq!(
        mount::fs_type(fs::File::open(&gens).unwrap().as_fd()).unwrap(),
        RAMFS_MAGIC
    );
    assert_eq!(mount_count(&gens), 1, "ramfs not in /proc/self/mountinfo");
    let md = fs::symlink_metadata(&gens).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (0, 0, 0o751));
    let key = fs::symlink_metadata(root.join("run/secrets/k")).unwrap();
    assert_eq!(
        (key.uid(), key.gid(), key.mode() & 0o7777),
        (4242, 4243, 0o400)
    );

    // Already a mount point: not mounted again, generations continue.
    let report = unseal(&root, &files(&entries, &[b"v2"]), &opts).unwrap();
    assert_eq!(report.generation, 2);
    assert_eq!(mount_count(&gens), 1);
    assert_eq!(fs::read(root.join("run/secrets/k")).unwrap(), b"v2");
    assert_eq!(names(&gens), ["2", "links.json"]);
}
