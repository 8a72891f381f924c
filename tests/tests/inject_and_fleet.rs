//! `inject` into a Raspberry Pi OS style image made by sfdisk, mkfs.vfat and
//! mke2fs, and fleet builds: checked with sfdisk, fsck.vfat, mtools, zstd
//! and the real sealed-firstboot.

use sealed_image_tests::pi::{self, BOOT_SECTORS, BOOT_START, ROOT_OFF, SECTOR};
use sealed_image_tests::*;
use std::path::{Path, PathBuf};

const MARKER: &str = "MARKER-inject-5f0c-psk";

/// MBR, FAT32 "bootfs" at 4 MiB with a config.txt, ext4 "rootfs" after it.
fn raspios_like(dir: &Path) -> PathBuf {
    let img = pi::disk(
        dir,
        "raspios.img",
        "160M",
        "0x1234abcd",
        true,
        ("config.txt", "arm_64bit=1"),
    );
    sh(
        &format!(
            "mkdir -p root/etc && echo pi > root/etc/hostname
             mke2fs -q -t ext4 -L rootfs -d root -E offset={ROOT_OFF} raspios.img 20M"
        ),
        dir,
    );
    img
}

fn inject(args: &[&str], env_psk: &str) -> std::process::Output {
    build_image_cmd()
        .arg("inject")
        .args(args)
        .arg("--recipe")
        .arg(workspace().join("image-recipes/raspberry-pi/inject.toml"))
        .env("WIFI_PSK", env_psk)
        .output()
        .unwrap()
}

/// Provision a device from the boot partition of `image` plus `key`.
fn provision_from(image: &Path, key: Option<&Path>, root: &Path) {
    let boot = root.join("boot/firmware/sealed-secrets");
    device_tree(root, &[]);
    copy_sealed_out(image, BOOT_START * SECTOR, &["bundle"], &boot);
    if let Some(k) = key {
        std::fs::copy(k, boot.join("image.key")).unwrap();
    }
    firstboot_ok(root, "run");
}

fn tools() -> bool {
    require_tools_from(&[
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("fsck.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mke2fs", "e2fsprogs"),
        ("zstd", "zstd"),
    ])
}

/// For a test that can run here: a temp dir holding [`raspios_like`].
fn raspios() -> Option<(tempfile::TempDir, PathBuf)> {
    let tmp = scratch_if(tools())?;
    let img = raspios_like(tmp.path());
    Some((tmp, img))
}

#[test]
fn inject_into_a_raspios_image_changes_only_the_boot_partition() {
    let Some((tmp, img)) = raspios() else { return };
    let before = std::fs::read(&img).unwrap();
    let table_before = sfdisk_partitions(&img);
    let out = inject(&[img.to_str().unwrap()], MARKER);
    assert_success(&out, "");
    assert!(!contains(&out.stderr, MARKER.as_bytes()) && !contains(&out.stdout, MARKER.as_bytes()));
    let sealed = tmp.path().join("raspios.sealed.img");
    let key = tmp.path().join("raspios.sealed.key");
    assert!(sealed.is_file() && key.is_file());
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "the input was modified"
    );

    // Same partition table; every byte outside the boot partition identical.
    assert_eq!(sfdisk_partitions(&sealed), table_before);
    let after = std::fs::read(&sealed).unwrap();
    assert_eq!(after.len(), before.len());
    let (b0, b1) = (
        (BOOT_START * SECTOR) as usize,
        ((BOOT_START + BOOT_SECTORS) * SECTOR) as usize,
    );
    assert!(
        after[..b0] == before[..b0],
        "bytes before the boot partition changed"
    );
    assert!(
        after[b1..] == before[b1..],
        "bytes after the boot partition changed"
    );

    // The FAT is clean, keeps its files, and holds the bundle (no key).
    let fat = tmp.path().join("fat.part");
    std::fs::write(&fat, &after[b0..b1]).unwrap();
    let fsck = command("fsck.vfat").arg("-n").arg(&fat).output().unwrap();
    assert_success(&fsck, "");
    let mimg = format!("{}@@{b0}", sealed.display());
    let cfg = command("mtype")
        .args(["-i", &mimg, "::/config.txt"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cfg.stdout).trim(), "arm_64bit=1");
    let dir = command("mdir")
        .args(["-b", "-i", &mimg, "::/sealed-secrets"])
        .output()
        .unwrap();
    let dir = String::from_utf8_lossy(&dir.stdout).to_lowercase();
    assert!(
        dir.contains("bundle") && !dir.contains("image.key"),
        "{dir}"
    );
    assert!(!file_contains(&sealed, MARKER.as_bytes()));

    // The device gets the secret and the rendered template.
    let root = tmp.path().join("dev");
    provision_from(&sealed, Some(&key), &root);
    assert_eq!(
        std::fs::read_to_string(root.join("run/secrets/wifi_psk")).unwrap(),
        MARKER
    );
    // The NetworkManager keyfile (a symlink into /run/secrets).
    let nm = std::fs::read_link(
        root.join("run/NetworkManager/system-connections/site-wifi.nmconnection"),
    )
    .unwrap();
    let nm = std::fs::read_to_string(root.join(nm.strip_prefix("/").unwrap())).unwrap();
    assert!(nm.contains(&format!("\npsk={MARKER}\n")), "{nm}");

    // A second inject does not clobber the first output or its key.
    let again = inject(&[img.to_str().unwrap()], MARKER);
    assert_exit(&again, 6, "");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn inject_zst_gives_zst_and_in_place_replaces_atomically() {
    let Some((tmp, img)) = raspios() else { return };
    let before = std::fs::read(&img).unwrap();
    sh("zstd -q raspios.img -o raspios.img.zst", tmp.path());
    let zin = tmp.path().join("raspios.img.zst");
    let out = inject(&[zin.to_str().unwrap(), "--partition", "bootfs"], MARKER);
    assert_success(&out, "");
    let zout = tmp.path().join("raspios.sealed.img.zst");
    let t = command("zstd").arg("-t").arg(&zout).output().unwrap();
    assert_success(&t, "zstd -t");
    sh(
        "zstd -q -d raspios.sealed.img.zst -o unpacked.img",
        tmp.path(),
    );
    let unpacked = std::fs::read(tmp.path().join("unpacked.img")).unwrap();
    let (b0, b1) = (
        (BOOT_START * SECTOR) as usize,
        ((BOOT_START + BOOT_SECTORS) * SECTOR) as usize,
    );
    assert!(unpacked[..b0] == before[..b0] && unpacked[b1..] == before[b1..]);
    assert!(!file_contains(&zout, MARKER.as_bytes()));
    let root = tmp.path().join("dev");
    provision_from(
        &tmp.path().join("unpacked.img"),
        Some(&tmp.path().join("raspios.sealed.key")),
        &root,
    );
    assert_eq!(
        std::fs::read_to_string(root.join("run/secrets/wifi_psk")).unwrap(),
        MARKER
    );

    // --in-place with --embed-key: the input itself now carries bundle and key.
    let out = inject(
        &[img.to_str().unwrap(), "--in-place", "--embed-key"],
        MARKER,
    );
    assert_success(&out, "");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".inject"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let root = tmp.path().join("dev2");
    // The embedded key is on the boot partition.
    copy_sealed_out(
        &img,
        BOOT_START * SECTOR,
        &["image.key"],
        &root.join("boot/firmware/sealed-secrets"),
    );
    provision_from(&img, None, &root);
    assert_eq!(
        std::fs::read_to_string(root.join("run/secrets/wifi_psk")).unwrap(),
        MARKER
    );
}

#[test]
fn inject_refuses_an_image_without_a_fat_boot_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("blank.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = inject(&[img.to_str().unwrap()], MARKER);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no partition table"));
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["blank.img"],
        "a failed inject left files behind"
    );
}

fn fleet(args: &[&str], devices: &Path, out: &Path) -> std::process::Output {
    build_cmd(&workspace().join("image-recipes/demo/recipe.toml"), out)
        .arg("--devices")
        .arg(devices)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn fleet_build_gives_each_device_its_own_key_and_values() {
    let Some(tmp) = scratch_if(tools()) else {
        return;
    };
    let devices = write_file(
        &tmp,
        "devices.toml",
        "[[device]]\nname = \"kiosk-001\"\nsecrets.wifi_psk = { value = \"MARKER-fleet-one\" }\n\n\
         [[device]]\nname = \"kiosk-002\"\nsecrets.wifi_psk = { value = \"MARKER-fleet-two\" }\n\n\
         [[device]]\nname = \"kiosk-003\"\n",
    );
    let out = tmp.path().join("out");
    let r = fleet(&["--json", "--raw-images"], &devices, &out);
    assert_success(&r, "");
    assert!(!contains(&r.stdout, b"MARKER") && !contains(&r.stderr, b"MARKER"));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let ids: std::collections::BTreeSet<_> = field_strs(&report["devices"], "bundle_id")
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 3, "bundle ids not distinct");
    let keys: std::collections::BTreeSet<_> = ["kiosk-001", "kiosk-002", "kiosk-003"]
        .iter()
        .map(|d| std::fs::read(out.join(d).join("demo.key")).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "image keys not distinct");

    for (dev, expect) in [
        ("kiosk-001", "MARKER-fleet-one"),
        ("kiosk-002", "MARKER-fleet-two"),
        ("kiosk-003", "demo-wifi-passphrase-NOT-A-REAL-SECRET"),
    ] {
        let img = out.join(dev).join("demo.img");
        // The .img.zst (base frames reused, changed frames recompressed)
        // decompresses to the raw image, and `bmaptool copy` of it with the
        // device's .bmap (base range hashes reused) gives the same bytes.
        let zst = out.join(dev).join("demo.img.zst");
        let unpacked = tmp.path().join(format!("{dev}.unpacked.img"));
        run_ok("zstd", &["-q", "-d", "-f", s(&zst), "-o", s(&unpacked)]);
        assert!(
            same_contents(&unpacked, &img),
            "{dev}: .img.zst differs from .img"
        );
        if require_tool_from("bmaptool", "bmap-tools") {
            let copied = tmp.path().join(format!("{dev}.bmapcopy.img"));
            let bmap = out.join(dev).join("demo.bmap");
            run_ok(
                "bmaptool",
                &["-q", "copy", "--bmap", s(&bmap), s(&zst), s(&copied)],
            );
            assert!(same_contents(&copied, &img), "{dev}: bmaptool copy differs");
        }
        let v = command("sgdisk").arg("-v").arg(&img).output().unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
        assert!(
            !file_contains(&img, b"MARKER-fleet"),
            "{dev}: value in clear"
        );
        assert_checksums(&out.join(dev), dev);
        let parts = sfdisk_partitions(&img);
        let esp = parts[0]["start"].as_u64().unwrap() * 512;
        let root = tmp.path().join(format!("dev-{dev}"));
        let boot = root.join("boot/efi/sealed-secrets");
        device_tree(&root, &[]);
        copy_sealed_out(&img, esp, &["bundle"], &boot);
        // Each device's bundle is signed, and the base image pins the signer.
        let header =
            sealed_bundle::Header::parse(&std::fs::read(boot.join("bundle")).unwrap()).unwrap();
        assert_eq!(header.signer, Some(test_signer()), "{dev}");
        let root_off = parts[1]["start"].as_u64().unwrap() * 512;
        let conf = run_ok(
            "debugfs",
            &[
                "-R",
                "cat /etc/sealed-firstboot.conf",
                &format!("{}?offset={root_off}", img.display()),
            ],
        );
        assert!(
            stdout(&conf).contains(&format!("signer = {}", test_signer())),
            "{dev}: {}",
            stdout(&conf)
        );
        // Another device's key is refused.
        let other = if dev == "kiosk-001" {
            "kiosk-002"
        } else {
            "kiosk-001"
        };
        std::fs::copy(out.join(other).join("demo.key"), boot.join("image.key")).unwrap();
        let o = firstboot(&root, "provision");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("wrong image key"),
            "{dev}"
        );
        std::fs::copy(out.join(dev).join("demo.key"), boot.join("image.key")).unwrap();
        firstboot_ok(&root, "run");
        assert_eq!(
            std::fs::read_to_string(root.join("run/secrets/wifi_psk")).unwrap(),
            expect,
            "{dev}"
        );
    }
    // By default a device gets no raw image: .img.zst, .bmap, key, sums.
    let out2 = tmp.path().join("out2");
    let r = fleet(&[], &devices, &out2);
    assert_success(&r, "");
    let mut names: Vec<String> = std::fs::read_dir(out2.join("kiosk-001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".sealed-image-device",
            "SHA256SUMS",
            "demo.bmap",
            "demo.img.zst",
            "demo.key"
        ]
    );
    assert_checksums(&out2.join("kiosk-001"), "kiosk-001 without a raw image");
}

#[test]
fn fleet_shards_split_the_devices_and_missing_secrets_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let devices = write_file(
        &tmp,
        "devices.csv",
        "name,wifi_psk\na,p-a\nb,p-b\nc,p-c\nd,p-d\ne,p-e\n",
    );
    let mut all = Vec::new();
    for shard in ["1/2", "2/2"] {
        let out = tmp.path().join(format!("out-{}", &shard[..1]));
        let r = fleet(&["--shard", shard, "--bundles-only"], &devices, &out);
        assert_success(&r, "");
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in &names {
            assert!(out.join(n).join("sealed-secrets/bundle").is_file());
            assert!(out.join(n).join("demo.key").is_file());
        }
        all.extend(names);
    }
    all.sort();
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
    assert!(
        fleet(&["--shard", "3/2"], &devices, &tmp.path().join("x"))
            .status
            .code()
            == Some(2)
    );

    // A device whose required secret is missing: every one is listed, nothing written.
    let recipe_dir = tmp.path().join("demo");
    copy_tree(&workspace().join("image-recipes/demo"), &recipe_dir);
    std::fs::remove_file(recipe_dir.join("secrets/wifi_psk.txt")).unwrap();
    std::fs::write(&devices, "name,wifi_psk\nhas,p\nlacks-1,\nlacks-2,\n").unwrap();
    let out = tmp.path().join("out-missing");
    let r = build_cmd(&recipe_dir.join("recipe.toml"), &out)
        .arg("--devices")
        .arg(&devices)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("device lacks-1")
            && err.contains("device lacks-2")
            && !err.contains("device has:"),
        "{err}"
    );
    assert_left_nothing(&out, "a fleet build with missing secrets");
}

#[test]
fn flash_writes_the_image_and_key_and_refuses_the_system_disk() {
    let Some(tmp) = scratch_if(require_tools_from(FAT_TOOLS)) else {
        return;
    };
    let out = tmp.path().join("out");
    let r = build_image_cmd()
        .args(["build", "-q"])
        .arg(workspace().join("image-recipes/demo/recipe.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&r, "");
    let target = tmp.path().join("card.img");
    let (img, key) = (out.join("demo.img"), out.join("demo.key"));
    let f = run_ok(
        bin("build-image"),
        &["flash", s(&img), s(&target), "--key", s(&key), "--json"],
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(
        !contains(&f.stdout, key_text.trim().as_bytes()),
        "key printed"
    );
    let report: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    assert_eq!(report["key_written"], true);
    assert_eq!(report["verified"], true);
    // The card provisions on its own: bundle and key are on its ESP.
    let parts = sfdisk_partitions(&target);
    let esp = parts[0]["start"].as_u64().unwrap() * 512;
    let root = tmp.path().join("dev");
    device_tree(&root, &[]);
    copy_sealed_out(
        &target,
        esp,
        &["bundle", "image.key"],
        &root.join("boot/efi/sealed-secrets"),
    );
    firstboot_ok(&root, "run");
    assert_eq!(
        std::fs::read_to_string(root.join("run/secrets/wifi_psk")).unwrap(),
        "demo-wifi-passphrase-NOT-A-REAL-SECRET"
    );

    // The disk the system runs from is refused with exit code 7.
    let src = command("findmnt")
        .args(["-n", "-o", "SOURCE", "/"])
        .output()
        .unwrap();
    let src = String::from_utf8_lossy(&src.stdout).trim().to_string();
    if !src.starts_with("/dev/") {
        eprintln!("SKIP system-disk refusal: / is on {src:?}, not a block device");
        return;
    }
    let f = run(bin("build-image"), &["flash", s(&img), &src]);
    assert_exit(&f, 7, "");
    assert!(String::from_utf8_lossy(&f.stderr).contains("refusing"));
}

/// inject: the output's format follows its name; a stale embedded key of
/// an earlier injection is removed in separate-key mode; a read-only input
/// works for a non-root user; messages name the user's files, never the
/// working copy.
#[test]
fn inject_output_format_stale_key_and_read_only_input() {
    let Some((tmp, img)) = raspios() else { return };
    // .img in, -o x.img.zst out: zstd.
    let zout = tmp.path().join("x.img.zst");
    let out = inject(
        &[img.to_str().unwrap(), "-o", zout.to_str().unwrap()],
        MARKER,
    );
    assert_success(&out, "");
    let magic = std::fs::read(&zout).unwrap()[..4].to_vec();
    assert_eq!(magic, [0x28, 0xb5, 0x2f, 0xfd], "-o x.img.zst must be zstd");
    assert!(command("zstd")
        .args(["-q", "-t"])
        .arg(&zout)
        .status()
        .unwrap()
        .success());

    // An embedded-key injection, then a separate-key one into its output:
    // the old image.key must not stay on the boot partition.
    let emb = tmp.path().join("emb.img");
    let out = inject(
        &[
            img.to_str().unwrap(),
            "-o",
            emb.to_str().unwrap(),
            "--embed-key",
        ],
        MARKER,
    );
    assert_success(&out, "");
    let sep = tmp.path().join("sep.img");
    let out = inject(
        &[emb.to_str().unwrap(), "-o", sep.to_str().unwrap()],
        MARKER,
    );
    assert_success(&out, "");
    let esp = format!("{}@@{}", sep.display(), BOOT_START * 512);
    let dir = command("mdir")
        .args(["-i", &esp, "::/sealed-secrets"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&dir.stdout).to_lowercase();
    assert!(listing.contains("bundle"), "{listing}");
    assert!(
        !listing.contains("image") || !listing.contains("key"),
        "stale key kept: {listing}"
    );

    // A read-only input, as a non-root user (root only drops to nobody
    // here; a non-root test run is that user already).
    let ro_dir = tmp.path().join("ro");
    std::fs::create_dir(&ro_dir).unwrap();
    let ro = ro_dir.join("in.img");
    std::fs::copy(&img, &ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let is_root = command("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if is_root && require_tool_from("setpriv", "util-linux") {
        let mut c = command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .env("SEALED_IMAGE_SIGNING_KEY_FILE", test_signing_key())
            .arg(bin("build-image"));
        c
    } else {
        build_image_cmd()
    };
    let target_dir_ok = std::fs::metadata(bin("build-image")).is_ok();
    assert!(target_dir_ok);
    let out = cmd
        .arg("inject")
        .arg(&ro)
        .arg("--recipe")
        .arg(workspace().join("image-recipes/raspberry-pi/inject.toml"))
        .env("WIFI_PSK", MARKER)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The binary may not be reachable for nobody (a private target dir):
    // then nothing is asserted beyond the working-copy rule below.
    if !err.contains("Permission denied (os error 13)") || out.status.success() {
        assert!(out.status.success(), "read-only input: {err}");
        assert!(ro_dir.join("in.sealed.img").is_file());
    }
    assert!(
        !err.contains(".inject-"),
        "a message names the working copy: {err}"
    );

    // An image without a FAT boot partition: the error names the input.
    let bad = tmp.path().join("nofat.img");
    std::fs::write(&bad, vec![0u8; 1 << 20]).unwrap();
    let out = inject(&[bad.to_str().unwrap()], MARKER);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nofat.img") && !err.contains(".inject-"),
        "{err}"
    );
}
