//! `--install-agent`: sealed-firstboot written into the ext4 root of a stock
//! image (made by sfdisk, mkfs.vfat and mke2fs, like Raspberry Pi OS), with
//! no root, loop device or mount. Checked with debugfs, e2fsck and cmp; and
//! `.img.xz` input read like the official images.

use sealed_image_tests::pi::{self, BOOT_START, ROOT_OFF, ROOT_START, SECTOR};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const UNIT_LINK: &str = "/etc/systemd/system/sysinit.target.wants/sealed-firstboot.service";

fn tools() -> bool {
    [
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
    ]
    .iter()
    .all(|(t, p)| require_tool_from(t, p))
}

/// A stock image: MBR (disk id 0x5ea1ed01), FAT32 bootfs at 4 MiB, a root
/// partition made by `root_fs` (a shell command given the image, offset and
/// size) from the tree in `root/`, whose /usr/bin/env is the host's and
/// whose fstab mounts bootfs at /boot/firmware.
fn stock(dir: &Path, fstab_boot: &str, root_fs: &str) -> PathBuf {
    let img = pi::disk(
        dir,
        "stock.img",
        "200M",
        "0x5ea1ed01",
        false,
        (
            "cmdline.txt",
            "console=serial0,115200 root=PARTUUID=5ea1ed01-02",
        ),
    );
    sh(
        &format!(
            "mkdir -p root/usr/bin root/etc/systemd/system root/boot/firmware
             cp /usr/bin/env root/usr/bin/env
             printf 'proc /proc proc defaults 0 0\\n{fstab_boot} /boot/firmware vfat defaults 0 2\\nPARTUUID=5ea1ed01-02 / ext4 defaults,noatime 0 1\\n' > root/etc/fstab
             echo raspberrypi > root/etc/hostname
             {root_fs}"
        ),
        dir,
    );
    img
}

fn ext4_root(dir: &Path, fstab_boot: &str) -> PathBuf {
    stock(
        dir,
        fstab_boot,
        &format!("mke2fs -q -t ext4 -L rootfs -d root -E offset={ROOT_OFF} stock.img 60M"),
    )
}

/// For a test that can run here: a temp dir holding [`ext4_root`] (fstab
/// names bootfs by PARTUUID), and the image's bytes as made.
fn stock_image() -> Option<(tempfile::TempDir, PathBuf, Vec<u8>)> {
    let t = scratch_if(tools())?;
    let img = ext4_root(t.path(), "PARTUUID=5ea1ed01-01");
    let bytes = std::fs::read(&img).unwrap();
    Some((t, img, bytes))
}

fn build_image(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = build_image_cmd();
    cmd.args(args).env("WIFI_PSK", "psk-value-not-checked-here");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `build-image inject IMAGE --recipe (the Pi inject recipe) EXTRA…`
fn inject(img: &Path, extra: &[&str]) -> Output {
    let recipe = inject_recipe();
    let mut args = vec!["inject", img.to_str().unwrap(), "--recipe", &recipe];
    args.extend_from_slice(extra);
    build_image(&args, &[])
}

/// `inject IMG --install-agent --agent AGENT --json EXTRA…`, which must
/// succeed: its report.
fn install_agent(img: &Path, agent: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--install-agent",
        "--agent",
        agent.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&inject(img, &args))
}

fn inject_recipe() -> String {
    workspace()
        .join("image-recipes/raspberry-pi/inject.toml")
        .display()
        .to_string()
}

/// `debugfs -R REQ` on the ext4 filesystem at byte `offset` of `img`.
fn debugfs_at(img: &Path, offset: u64, req: &str) -> Output {
    run(
        "debugfs",
        &["-R", req, &format!("{}?offset={offset}", img.display())],
    )
}

/// What [`debugfs_at`] the root partition printed, stdout then stderr.
fn debugfs(img: &Path, req: &str) -> String {
    let out = debugfs_at(img, ROOT_OFF, req);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    debugfs_at(img, ROOT_OFF, &format!("cat {path}")).stdout
}

fn e2fsck_clean(img: &Path) {
    let fs = format!("{}?offset={ROOT_OFF}", img.display());
    assert_success(&run("e2fsck", &["-fn", &fs]), "e2fsck -fn");
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An ELF header for another machine (aarch64), enough for the arch check.
fn foreign_elf(dir: &Path) -> PathBuf {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
    let p = dir.join("sealed-firstboot-aarch64");
    std::fs::write(&p, h).unwrap();
    p
}

#[test]
fn installs_into_a_stock_image_in_place_and_again_changes_nothing() {
    let Some((t, img, before)) = stock_image() else {
        return;
    };
    let env_before = cat(&img, "/usr/bin/env");
    let out_img = t.path().join("sealed.img");
    // The host's /usr/bin/env stands in for an agent of the root's
    // architecture (this machine's): the installation is what is tested.
    let agent = Path::new("/usr/bin/env");
    let report = install_agent(&img, agent, &["-o", out_img.to_str().unwrap()]);
    let a = &report["agent"];
    assert_eq!(a["arch"], std::env::consts::ARCH);
    assert_eq!(a["root_partition"], 2);
    assert_eq!(a["boot_dir"], "/boot/firmware");
    assert_eq!(a["changed"].as_array().unwrap().len(), 5, "{a}");

    e2fsck_clean(&out_img);
    let after = std::fs::read(&out_img).unwrap();
    let boot_off = (BOOT_START * SECTOR) as usize;
    assert_eq!(
        before[..boot_off],
        after[..boot_off],
        "MBR and gap unchanged"
    );
    assert_eq!(
        cat(&out_img, "/usr/bin/sealed-firstboot"),
        std::fs::read(agent).unwrap()
    );
    assert_eq!(
        cat(&out_img, "/usr/bin/env"),
        env_before,
        "other files unchanged"
    );
    let stat = debugfs(&out_img, "stat /usr/bin/sealed-firstboot");
    assert!(
        stat.contains("Mode:  0755") && stat.contains("User:     0   Group:     0"),
        "{stat}"
    );
    let link = debugfs(&out_img, &format!("stat {UNIT_LINK}"));
    assert!(
        link.contains("Type: symlink")
            && link.contains("Fast link dest: \"/etc/systemd/system/sealed-firstboot.service\""),
        "{link}"
    );
    let unit = cat(&out_img, "/etc/systemd/system/sealed-firstboot.service");
    assert_eq!(
        unit,
        std::fs::read(workspace().join("firstboot/sealed-firstboot.service")).unwrap()
    );
    let dropin = String::from_utf8(cat(
        &out_img,
        "/etc/systemd/system/sealed-firstboot.service.d/boot-dir.conf",
    ))
    .unwrap();
    assert!(
        dropin.contains("RequiresMountsFor=/boot/firmware"),
        "{dropin}"
    );
    let conf = String::from_utf8(cat(&out_img, "/etc/sealed-firstboot.conf")).unwrap();
    assert!(
        conf.lines().any(|l| l == "boot_dir = /boot/firmware"),
        "{conf}"
    );

    // Again, in place: the agent's files are as wanted, the root partition
    // stays byte for byte what it was.
    let root_before = after[ROOT_OFF as usize..].to_vec();
    let again = install_agent(&out_img, agent, &["--in-place", "--embed-key"]);
    assert_eq!(again["agent"]["changed"].as_array().unwrap().len(), 0);
    let root_after = std::fs::read(&out_img).unwrap()[ROOT_OFF as usize..].to_vec();
    assert!(
        root_before == root_after,
        "the second run changed the root partition"
    );
}

#[test]
fn the_images_own_config_is_kept_and_boot_dirs_come_from_fstab() {
    let Some(t) = scratch_if(tools()) else { return };
    // fstab names bootfs by its label; the image has its own config.
    sh("mkdir -p root/etc && printf 'identity = ssh-host-key\\nboot_dir = /boot\\n' > root/etc/sealed-firstboot.conf", t.path());
    let img = ext4_root(t.path(), "LABEL=bootfs");
    let report = install_agent(
        &img,
        Path::new("/usr/bin/env"),
        &["--in-place", "--embed-key"],
    );
    assert_eq!(report["agent"]["boot_dir"], "/boot/firmware");
    let conf = String::from_utf8(cat(&img, "/etc/sealed-firstboot.conf")).unwrap();
    // Its settings are kept, the boot directory set, the signer pinned.
    assert_eq!(
        conf,
        format!(
            "identity = ssh-host-key\nboot_dir = /boot/firmware\n\
             # Only bundles signed by one of these keys are applied:\nsigner = {}\n",
            test_signer()
        )
    );

    // No fstab line for bootfs: a clear error naming --boot-dir, the
    // image untouched; with --boot-dir it works.
    let t2 = tempfile::tempdir().unwrap();
    let img2 = ext4_root(t2.path(), "/dev/sdz9");
    let before = std::fs::read(&img2).unwrap();
    let out = inject(
        &img2,
        &["--in-place", "--agent", "/usr/bin/env", "--embed-key"],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("--boot-dir"), "{}", stderr(&out));
    assert!(
        std::fs::read(&img2).unwrap() == before,
        "a failed inject changed the image"
    );
    let ok = inject(
        &img2,
        &[
            "--in-place",
            "--agent",
            "/usr/bin/env",
            "--boot-dir",
            "/boot/firmware",
            "--embed-key",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    e2fsck_clean(&img2);
}

/// fstab may name bootfs by `UUID=` (for vfat the volume serial, as blkid
/// reports it) or by its device; either gives the boot directory, and a
/// line that matched nothing would have been exit 6.
#[test]
fn fstab_names_bootfs_by_uuid_or_device() {
    let Some(t) = scratch_if(tools() && require_tool_from("blkid", "util-linux")) else {
        return;
    };
    // Leaves printf's single quotes for the command substitution.
    let by_uuid = format!(
        "UUID='\"$(blkid -p -O {} -o value -s UUID stock.img)\"'",
        BOOT_START * SECTOR
    );
    for (i, spec) in [by_uuid.as_str(), "/dev/mmcblk0p1"].into_iter().enumerate() {
        let dir = t.path().join(i.to_string());
        std::fs::create_dir(&dir).unwrap();
        let img = ext4_root(&dir, spec);
        let fstab = String::from_utf8(cat(&img, "/etc/fstab")).unwrap();
        let line = fstab
            .lines()
            .find(|l| l.contains("/boot/firmware"))
            .unwrap();
        let first = line.split_whitespace().next().unwrap();
        if i == 0 {
            let serial = first.strip_prefix("UUID=").unwrap_or_default();
            assert!(
                serial.len() == 9 && serial.as_bytes()[4] == b'-',
                "blkid gave no FAT serial: {line}"
            );
        }
        // Fails (exit 6) when no fstab line matched.
        let report = install_agent(
            &img,
            Path::new("/usr/bin/env"),
            &["--in-place", "--embed-key"],
        );
        assert_eq!(report["agent"]["boot_dir"], "/boot/firmware", "{first}");
    }
}

#[test]
fn wrong_roots_and_agents_are_clear_errors_that_change_nothing() {
    let Some((t, img, before)) = stock_image() else {
        return;
    };
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["inject", img.to_str().unwrap(), "--in-place", "--recipe"];
        let recipe = inject_recipe();
        args.push(&recipe);
        args.extend_from_slice(&["--install-agent", "--embed-key"]);
        args.extend_from_slice(extra);
        let out = build_image(&args, env);
        assert_eq!(out.status.code(), Some(6), "{:?}: {}", extra, stderr(&out));
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{extra:?}: a failed inject changed the image"
        );
        stderr(&out)
    };
    // An agent for another architecture.
    let elf = foreign_elf(t.path());
    let e = run(&["--agent", elf.to_str().unwrap()], &[]);
    assert!(
        e.contains("aarch64") && e.contains(std::env::consts::ARCH),
        "{e}"
    );
    // Not an ELF at all.
    let e = run(&["--agent", inject_recipe().as_str()], &[]);
    assert!(e.contains("not an ELF"), "{e}");
    // No shipped binary where it is looked for: says how to get one.
    let empty = t.path().join("no-agents");
    std::fs::create_dir(&empty).unwrap();
    let e = run(&[], &[("SEALED_IMAGE_AGENT_DIR", empty.to_str().unwrap())]);
    assert!(
        e.contains("scripts/build-device-binaries") && e.contains("no-agents"),
        "{e}"
    );
    // --root-partition naming the FAT partition.
    let e = run(&["--agent", "/usr/bin/env", "--root-partition", "1"], &[]);
    assert!(e.contains("not ext4"), "{e}");

    // A root that is not ext: a FAT root partition.
    let t2 = tempfile::tempdir().unwrap();
    let img2 = stock(
        t2.path(),
        "PARTUUID=5ea1ed01-01",
        &format!("mkfs.vfat -n ROOTFS --offset {ROOT_START} stock.img 40960 >/dev/null"),
    );
    let out = inject(
        &img2,
        &[
            "--in-place",
            "--agent",
            "/usr/bin/env",
            "--partition",
            "1",
            "--embed-key",
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("not ext4"), "{}", stderr(&out));
    // Flags that need --install-agent say so (usage error).
    let out = inject(&img, &["--boot-dir", "/boot"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_recipe_switch_installs_the_agent_at_build_time() {
    let Some(t) = scratch_if(tools()) else { return };
    sh(
        "mkdir -p r/root/usr/bin r/root/etc r/boot && cp /usr/bin/env r/root/usr/bin/env
         printf 'LABEL=BOOT /boot/firmware vfat defaults 0 2\\n' > r/root/etc/fstab
         echo x > r/boot/config.txt",
        t.path(),
    );
    let recipe = t.path().join("r/recipe.toml");
    std::fs::write(
        &recipe,
        r#"
[image]
name = "agent-build"
table = "mbr"

[[partition]]
label = "BOOT"
type = "fat"
size = "40MiB"
secrets = true
files = { "config.txt" = "boot/config.txt" }

[[partition]]
label = "rootfs"
type = "linux"
size = "40MiB"
source = "root"

[agent]
install = true
binary = "/usr/bin/env"

[secrets.token]
type = "single-line"
source = { env = "TOKEN" }
"#,
    )
    .unwrap();
    let out_dir = t.path().join("out");
    let report = json(&build_image(
        &[
            "build",
            recipe.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--no-zst",
            "--json",
        ],
        &[("TOKEN", "t0ken")],
    ));
    assert_eq!(report["agent"]["boot_dir"], "/boot/firmware");
    let img = out_dir.join("agent-build.img");
    let parts = sfdisk_partitions(&img);
    let root_off = parts[1]["start"].as_u64().unwrap() * SECTOR;
    let out = debugfs_at(&img, root_off, &format!("stat {UNIT_LINK}"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Type: symlink"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The checksums were taken after the installation.
    assert_checksums(&out_dir, "the build with the agent");
}

#[test]
fn xz_images_are_read_like_the_official_ones() {
    if !require_tool_from("xz", "xz-utils") {
        return;
    }
    let Some((t, img, _)) = stock_image() else {
        return;
    };
    sh("xz -T0 -1 -k stock.img", t.path());
    let xz = t.path().join("stock.img.xz");
    let report = json(&inject(&xz, &["--agent", "/usr/bin/env", "--json"]));
    // Written raw and sparse beside it (build-image writes no xz).
    let out = t.path().join("stock.sealed.img");
    assert_eq!(report["image"], out.display().to_string());
    assert!(t.path().join("stock.sealed.key").is_file());
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&img).unwrap().len()
    );
    e2fsck_clean(&out);
    assert_eq!(
        cat(&out, "/usr/bin/sealed-firstboot"),
        std::fs::read("/usr/bin/env").unwrap()
    );
    // Asking for xz output is refused up front.
    let refused = inject(&xz, &["-o", t.path().join("x.img.xz").to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("does not write xz"),
        "{}",
        stderr(&refused)
    );
}

/// Hostile or odd roots: a file where a directory must be, an oversized
/// config, a /etc/fstab that is a directory. Each is a clear error (exit 6)
/// and the image is left as it was.
#[test]
fn hostile_roots_are_refused_and_left_unchanged() {
    if !tools() {
        return;
    }
    let mke2fs = format!("mke2fs -q -t ext4 -L rootfs -d root -E offset={ROOT_OFF} stock.img 60M");
    let cases = [
        (
            "rm -rf root/etc/systemd/system && echo x > root/etc/systemd/system",
            "/etc/systemd/system in the image's root filesystem is not a directory",
        ),
        (
            "head -c 70000 /dev/zero | tr '\\0' '#' > root/etc/sealed-firstboot.conf",
            "/etc/sealed-firstboot.conf in the image is 70000 bytes",
        ),
        (
            "rm root/etc/fstab && mkdir root/etc/fstab",
            "its /etc/fstab is not a regular file",
        ),
        // A config that is a link (never followed inside the image) or a
        // FIFO: its settings cannot be read, so nothing is replaced.
        (
            "ln -s ../etc/hostname root/etc/sealed-firstboot.conf",
            "/etc/sealed-firstboot.conf in the image is a symbolic link or a special file",
        ),
        (
            "mkfifo root/etc/sealed-firstboot.conf",
            "/etc/sealed-firstboot.conf in the image is a symbolic link or a special file",
        ),
        // '%' would be a systemd specifier in RequiresMountsFor=.
        (
            "sed -i 's| /boot/firmware | /boot/%H |' root/etc/fstab",
            "invalid boot directory \"/boot/%H\"",
        ),
    ];
    for (tweak, want) in cases {
        let t = tempfile::tempdir().unwrap();
        let img = stock(
            t.path(),
            "PARTUUID=5ea1ed01-01",
            &format!("{tweak}\n{mke2fs}"),
        );
        let before = std::fs::read(&img).unwrap();
        let out = inject(
            &img,
            &["--in-place", "--agent", "/usr/bin/env", "--embed-key"],
        );
        assert_eq!(out.status.code(), Some(6), "{tweak}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{tweak}: {}", stderr(&out));
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{tweak}: a failed inject changed the image"
        );
    }
}

/// A root whose architecture cannot be read (no /usr/bin/env or other
/// probe): the binary given with --agent says what it is for, and is
/// installed; without --agent the error says to pass one.
#[test]
fn an_agent_given_names_the_architecture_a_bare_root_does_not() {
    if !tools() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = stock(
        t.path(),
        "PARTUUID=5ea1ed01-01",
        &format!(
            "rm root/usr/bin/env\nmke2fs -q -t ext4 -L rootfs -d root -E offset={ROOT_OFF} stock.img 60M"
        ),
    );
    let before = std::fs::read(&img).unwrap();
    let out = inject(&img, &["--in-place", "--install-agent", "--embed-key"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pass --agent FILE"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a failed inject changed the image"
    );

    let agent = bin("sealed-firstboot");
    let report = install_agent(&img, &agent, &["--in-place"]);
    assert_eq!(report["agent"]["arch"], std::env::consts::ARCH, "{report}");
    assert_eq!(
        cat(&img, "/usr/bin/sealed-firstboot"),
        std::fs::read(&agent).unwrap()
    );
    e2fsck_clean(&img);
}

/// Without `--install-agent`, the agent already in the image decides what
/// its device applies: `inject` refuses (exit 2, nothing written) a bundle
/// that device would refuse and wipe at first boot, one signed by a key
/// its configuration does not pin or an unsigned one, and refuses (exit 3)
/// a path its configuration does not allow; it injects a bundle signed by
/// a key the image pins.
#[test]
fn inject_refuses_what_the_images_own_agent_would_refuse() {
    let Some(t) = scratch_if(tools()) else { return };
    let other = sealed_bundle::SigningKey::generate().signer();
    let conf = t.path().join("root/etc/sealed-firstboot.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, format!("signer = {other}\n")).unwrap();
    let img = ext4_root(t.path(), "PARTUUID=5ea1ed01-01");
    let before = std::fs::read(&img).unwrap();
    let sealed = t.path().join("stock.sealed.img");
    let key = t.path().join("stock.sealed.key");
    for extra in [&[][..], &["--unsigned"]] {
        let out = inject(&img, extra);
        assert_exit(
            &out,
            2,
            format!("inject {extra:?} into an image pinning another key"),
        );
        let err = stderr(&out);
        assert!(
            err.contains(&other.to_string()) && err.contains("would refuse"),
            "{err}"
        );
        assert!(
            !sealed.exists() && !key.exists(),
            "{extra:?}: something was written"
        );
        assert!(std::fs::read(&img).unwrap() == before, "the input changed");
    }

    // The image pins the tests' key: injected, but a path its
    // configuration does not allow is refused.
    let team = std::fs::read_to_string(test_signing_key()).unwrap();
    let team = sealed_bundle::SigningKey::from_file_text(team.as_bytes())
        .unwrap()
        .signer();
    let t2 = scratch_if(tools()).unwrap();
    let conf = t2.path().join("root/etc/sealed-firstboot.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, format!("signer = {team}\n")).unwrap();
    let img = ext4_root(t2.path(), "PARTUUID=5ea1ed01-01");
    let recipe = t2.path().join("net.toml");
    std::fs::write(
        &recipe,
        "[image]\nname = \"pi\"\n\n[policy]\nallow-paths = [\"/run/systemd/network\"]\n\n[secrets.wifi_psk]\ntype = \"single-line\"\npath = \"/run/systemd/network/psk\"\nsource = { env = \"WIFI_PSK\" }\n",
    )
    .unwrap();
    let out = build_image(
        &[
            "inject",
            img.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
        ],
        &[],
    );
    assert_exit(&out, 3, "a path the image does not allow");
    assert!(stderr(&out).contains("does not allow"), "{}", stderr(&out));
    assert!(!t2.path().join("stock.sealed.img").exists());
    let out = inject(&img, &[]);
    assert_success(&out, "inject signed by a key the image pins");
    assert!(t2.path().join("stock.sealed.img").exists());
}
