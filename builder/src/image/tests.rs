//! Whole-module tests: images checked with the real tools (sgdisk, sfdisk,
//! fsck.vfat, mtools, e2fsck, debugfs), reproducibility, sparseness, and
//! in-place FAT edits of an image made by other tools.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;
use testkit::{extract, require_tool, require_tools, run, run_ok, s, stdout};

const DISK_GUID: uuid::Uuid = uuid::uuid!("11111111-2222-4333-8444-555555555555");
const ESP_GUID: uuid::Uuid = uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000001");
const ROOT_GUID: uuid::Uuid = uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000002");
const DATA_GUID: uuid::Uuid = uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000003");
const SPARE_GUID: uuid::Uuid = uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000004");
const FS_UUID: uuid::Uuid = uuid::uuid!("0b5c6a4e-1111-4222-8333-444455556666");
const OTHER_TYPE: uuid::Uuid = uuid::uuid!("8DA63339-0007-60C0-C436-083AC8230908");
const BUNDLE: &[u8] = b"SEALED\x00\x01 not really a bundle \xff\xfe";

fn sfdisk_json(img: &Path) -> serde_json::Value {
    let out = run_ok("sfdisk", &["--json", s(img)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    v["partitiontable"].clone()
}

/// A small root tree: a file, a nested file, a symlink.
fn rootfs_dir(base: &Path) -> PathBuf {
    let root = base.join("rootfs");
    fs::create_dir_all(root.join("etc/sealed")).unwrap();
    fs::write(root.join("etc/hostname"), b"device-01\n").unwrap();
    fs::write(root.join("etc/sealed/note"), vec![b'x'; 10_000]).unwrap();
    std::os::unix::fs::symlink("etc/hostname", root.join("hostname-link")).unwrap();
    root
}

fn esp_files() -> Vec<FatFile> {
    vec![
        FatFile::file("sealed-secrets/bundle", BUNDLE.to_vec()),
        FatFile::file("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 70_000]),
        FatFile::dir("EFI/empty"),
        FatFile::file("config.txt", b"# nothing\n".to_vec()),
    ]
}

fn gpt_layout(root: Option<&Path>, data: Option<&Path>) -> Layout {
    let mut partitions = vec![PartitionSpec {
        label: "EFI system".into(),
        size: 40 << 20,
        kind: PartitionKind::Esp,
        uuid: Some(ESP_GUID),
        bootable: true,
        content: PartitionContent::Fat {
            volume_label: "ESP".into(),
            volume_id: Some(0x1234_abcd),
            files: esp_files(),
        },
    }];
    if let Some(root) = root {
        partitions.push(PartitionSpec {
            label: "root".into(),
            size: 24 << 20,
            kind: PartitionKind::LinuxFs,
            uuid: Some(ROOT_GUID),
            bootable: false,
            content: PartitionContent::Ext4 {
                source: root.to_path_buf(),
                fs_uuid: Some(FS_UUID),
            },
        });
    }
    if let Some(data) = data {
        partitions.push(PartitionSpec {
            label: "data".into(),
            size: 2 << 20,
            kind: PartitionKind::Other {
                gpt_type: OTHER_TYPE,
                mbr_type: 0xda,
            },
            uuid: Some(DATA_GUID),
            bootable: false,
            content: PartitionContent::ImageFile(data.to_path_buf()),
        });
    }
    partitions.push(PartitionSpec {
        label: "spare".into(),
        size: 1 << 20,
        kind: PartitionKind::Fat,
        uuid: Some(SPARE_GUID),
        bootable: false,
        content: PartitionContent::Empty,
    });
    Layout {
        table: TableKind::Gpt,
        disk_guid: Some(DISK_GUID),
        disk_signature: None,
        partitions,
        total_size: None,
    }
}

/// A partition image with data, holes, and data again.
fn partition_image(base: &Path) -> PathBuf {
    let p = base.join("data.part");
    let mut v = vec![0u8; (1 << 20) + 1000];
    v[..5000].fill(0xab);
    v[1 << 20..].fill(0xcd);
    v[700_001] = 1;
    fs::write(&p, v).unwrap();
    p
}

fn epoch() -> AssembleOptions {
    AssembleOptions {
        source_date_epoch: Some(1_700_000_000),
    }
}

fn mcopy_out(img: &Path, offset: u64, path: &str, dir: &Path) -> Option<Vec<u8>> {
    let dest = dir.join("mcopy.out");
    let _ = fs::remove_file(&dest);
    let spec = format!("{}@@{offset}", s(img));
    let out = run(
        "mcopy",
        &["-n", "-i", &spec, &format!("::/{path}"), s(&dest)],
    );
    out.status.success().then(|| fs::read(&dest).unwrap())
}

fn fsck_vfat(img: &Path, start: u64, size: u64, dir: &Path) {
    let part = dir.join("fat.part");
    extract(img, start, size, &part);
    let out = run("fsck.vfat", &["-n", s(&part)]);
    assert!(
        out.status.success(),
        "fsck.vfat -n failed:\n{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(&part).unwrap();
}

/// What makes and checks ext4 partitions (e2fsprogs).
const EXT4_TOOLS: &[&str] = &["mke2fs", "e2fsck", "debugfs"];

fn e2fsck(img: &Path, offset: u64) {
    let dev = format!("{}?offset={offset}", s(img));
    run_ok("e2fsck", &["-fn", &dev]);
}

fn debugfs(img: &Path, offset: u64, req: &str) -> String {
    let dev = format!("{}?offset={offset}", s(img));
    stdout(&run_ok("debugfs", &["-R", req, &dev]))
}

#[test]
#[ignore = "needs sgdisk (gdisk), sfdisk (fdisk), fsck.vfat (dosfstools), mtools, e2fsprogs; scripts/test runs it"]
fn gpt_image_checks_out_with_the_real_tools() {
    require_tools(&["sgdisk", "sfdisk", "fsck.vfat", "mcopy", "mdir"]);
    require_tools(EXT4_TOOLS);
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs_dir(dir.path());
    let data = partition_image(dir.path());
    let img = dir.path().join("disk.img");
    let layout = gpt_layout(Some(&root), Some(&data));
    let a = assemble_with(&img, &layout, &epoch()).unwrap();

    // Placement: 1 MiB aligned, in order, backup GPT room at the end.
    let starts: Vec<u64> = a.partitions.iter().map(|p| p.start).collect();
    assert_eq!(starts, vec![1 << 20, 41 << 20, 65 << 20, 67 << 20]);
    assert_eq!(a.size, 69 << 20);
    assert_eq!(fs::metadata(&img).unwrap().len(), a.size);
    assert_eq!(a.disk_id, "11111111-2222-4333-8444-555555555555");
    assert_eq!(a.partitions[0].fs_uuid.as_deref(), Some("1234-ABCD"));
    assert_eq!(
        a.partitions[1].fs_uuid.as_deref(),
        Some(FS_UUID.to_string().as_str())
    );
    assert_eq!(
        a.partitions[1].part_uuid.as_deref(),
        Some("AAAAAAAA-0000-4000-8000-000000000002")
    );

    // sgdisk: no problems.
    let v = stdout(&run_ok("sgdisk", &["-v", s(&img)]));
    assert!(v.contains("No problems found"), "{v}");

    // sfdisk: what we asked for.
    let t = sfdisk_json(&img);
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["id"], "11111111-2222-4333-8444-555555555555");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let want = [
        (
            "EFI system",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            ESP_GUID,
            40u64 << 20,
        ),
        (
            "root",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            ROOT_GUID,
            24 << 20,
        ),
        (
            "data",
            "8DA63339-0007-60C0-C436-083AC8230908",
            DATA_GUID,
            2 << 20,
        ),
        (
            "spare",
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            SPARE_GUID,
            1 << 20,
        ),
    ];
    for (i, (name, ty, uuid, size)) in want.iter().enumerate() {
        let p = &parts[i];
        assert_eq!(p["name"], *name);
        assert_eq!(p["type"], *ty);
        assert_eq!(p["uuid"], uuid.to_string().to_uppercase());
        assert_eq!(p["start"].as_u64().unwrap() * 512, starts[i]);
        assert_eq!(p["size"].as_u64().unwrap() * 512, *size);
    }
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert!(parts[1].get("attrs").is_none());

    // Our own reader agrees.
    let info = read_table(&img).unwrap();
    assert_eq!(info.table, TableKind::Gpt);
    assert_eq!(info.disk_id, "11111111-2222-4333-8444-555555555555");
    assert_eq!(info.size, a.size);
    assert_eq!(info.partitions.len(), 4);
    assert_eq!(info.partitions[0].label.as_deref(), Some("EFI system"));
    assert_eq!(info.partitions[0].fs_type.as_deref(), Some("vfat"));
    assert_eq!(info.partitions[0].fs_label.as_deref(), Some("ESP"));
    assert!(info.partitions[0].is_fat_boot_candidate);
    assert_eq!(info.partitions[1].fs_type.as_deref(), Some("ext4"));
    assert_eq!(info.partitions[1].fs_label.as_deref(), Some("root"));
    assert!(!info.partitions[1].is_fat_boot_candidate);
    assert!(
        !info.partitions[3].is_fat_boot_candidate,
        "empty FAT-typed partition"
    );
    for (p, q) in info.partitions.iter().zip(&a.partitions) {
        assert_eq!((p.index, p.start, p.size), (q.index, q.start, q.size));
        assert_eq!(p.uuid, q.part_uuid);
    }

    // FAT: fsck clean, files readable by mtools, label and serial right.
    let esp = &a.partitions[0];
    fsck_vfat(&img, esp.start, esp.size, dir.path());
    assert_eq!(
        mcopy_out(&img, esp.start, "sealed-secrets/bundle", dir.path()).unwrap(),
        BUNDLE
    );
    assert_eq!(
        mcopy_out(&img, esp.start, "EFI/BOOT/BOOTX64.EFI", dir.path()).unwrap(),
        vec![0x4d; 70_000]
    );
    let spec = format!("{}@@{}", s(&img), esp.start);
    let listing = stdout(&run_ok("mdir", &["-i", &spec, "::/EFI"]));
    assert!(listing.contains("empty"), "{listing}");
    assert!(listing.contains("Volume in drive : is ESP"), "{listing}");
    assert!(listing.contains("1234-ABCD"), "{listing}");
    let part = dir.path().join("esp.part");
    extract(&img, esp.start, esp.size, &part);
    let boot = fs::read(&part).unwrap();
    assert_eq!(&boot[82..90], b"FAT32   ", "a 40 MiB ESP is FAT32");
    assert_eq!(
        u32::from_le_bytes(boot[28..32].try_into().unwrap()),
        2048,
        "hidden sectors"
    );

    // ext4: e2fsck clean, files readable by debugfs, label and UUID right.
    let rootp = &a.partitions[1];
    e2fsck(&img, rootp.start);
    assert_eq!(
        debugfs(&img, rootp.start, "cat /etc/hostname"),
        "device-01\n"
    );
    assert_eq!(
        debugfs::debugfs_cat(&img, rootp.start, "/etc/sealed/note")
            .unwrap()
            .unwrap(),
        vec![b'x'; 10_000]
    );
    assert_eq!(
        debugfs::debugfs_cat(&img, rootp.start, "/nope").unwrap(),
        None
    );
    let stats = debugfs(&img, rootp.start, "stats");
    assert!(stats.contains("Filesystem volume name:   root"), "{stats}");
    assert!(
        stats.contains(&format!("Filesystem UUID:          {FS_UUID}")),
        "{stats}"
    );
    // Owners come from the source tree (mke2fs -d), the root directory is root's.
    let host = fs::metadata(root.join("etc/hostname")).unwrap();
    let stat = debugfs(&img, rootp.start, "stat /etc/hostname");
    assert!(
        stat.contains(&format!(
            "User: {:>5}   Group: {:>5}",
            host.uid(),
            host.gid()
        )),
        "{stat}"
    );
    let top = debugfs(&img, rootp.start, "stat /");
    assert!(top.contains("User:     0   Group:     0"), "{top}");
    let link = debugfs(&img, rootp.start, "stat /hostname-link");
    assert!(link.contains("Fast link dest: \"etc/hostname\""), "{link}");

    // Raw partition image: byte-identical, and the rest of the partition zero.
    let dp = &a.partitions[2];
    let got = dir.path().join("data.out");
    extract(&img, dp.start, dp.size, &got);
    let got = fs::read(&got).unwrap();
    let src = fs::read(&data).unwrap();
    assert_eq!(&got[..src.len()], &src[..]);
    assert!(got[src.len()..].iter().all(|&b| b == 0));
}

#[test]
#[ignore = "needs sfdisk (fdisk), fsck.vfat (dosfstools), mtools, e2fsprogs; scripts/test runs it"]
fn mbr_image_checks_out_with_sfdisk() {
    require_tools(&["sfdisk", "fsck.vfat", "mcopy"]);
    require_tools(EXT4_TOOLS);
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs_dir(dir.path());
    let img = dir.path().join("rpi.img");
    let bootfs = PartitionContent::Fat {
        volume_label: "BOOTFS".into(),
        volume_id: Some(7),
        files: vec![FatFile::file("sealed-secrets/bundle", BUNDLE.to_vec())],
    };
    // A FAT12 volume: nested directories below a fixed root region.
    let fat12 = vec![
        FatFile::file("a/b/c.txt", b"abc".to_vec()),
        FatFile::dir("a/d"),
    ];
    let layout = Layout {
        disk_signature: Some(0x5eed_cafe),
        total_size: Some(100 << 20),
        ..Layout::new(
            TableKind::Mbr,
            vec![
                PartitionSpec {
                    bootable: true,
                    ..PartitionSpec::new("bootfs", 48 << 20, PartitionKind::Fat, bootfs)
                },
                PartitionSpec::new(
                    "rootfs",
                    16 << 20,
                    PartitionKind::LinuxFs,
                    PartitionContent::ext4(root),
                ),
                PartitionSpec::new(
                    "esp",
                    4 << 20,
                    PartitionKind::Esp,
                    PartitionContent::fat("", fat12),
                ),
            ],
        )
    };
    let a = assemble_with(&img, &layout, &AssembleOptions::default()).unwrap();
    assert_eq!(a.size, 100 << 20);
    assert_eq!(a.disk_id, "0x5eedcafe");
    assert_eq!(a.partitions[1].part_uuid.as_deref(), Some("5eedcafe-02"));

    let t = sfdisk_json(&img);
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0x5eedcafe");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"], 48 * 2048);
    assert_eq!(parts[1]["type"], "83");
    assert!(parts[1].get("bootable").is_none());
    assert_eq!(parts[1]["start"], 49 * 2048);
    assert_eq!(parts[2]["type"], "ef");
    // sfdisk's own consistency check.
    let verify = run_ok("sfdisk", &["--verify", s(&img)]);
    let verify_text = stdout(&verify);
    assert!(
        !verify_text.to_lowercase().contains("overlap"),
        "{verify_text}"
    );

    let info = read_table(&img).unwrap();
    assert_eq!(info.table, TableKind::Mbr);
    assert_eq!(info.disk_id, "0x5eedcafe");
    let types: Vec<&str> = info.partitions.iter().map(|p| p.type_id.as_str()).collect();
    assert_eq!(types, ["0x0c", "0x83", "0xef"]);
    assert_eq!(info.partitions[0].fs_label.as_deref(), Some("BOOTFS"));
    assert_eq!(info.partitions[0].uuid.as_deref(), Some("5eedcafe-01"));
    assert_eq!(info.partitions[1].fs_label.as_deref(), Some("rootfs"));
    // Auto prefers the ESP-typed FAT partition; a label picks the other.
    let auto = find_boot_partition(&info, &PartitionSelector::Auto).unwrap();
    assert_eq!(auto.index, 3);
    let by_label = find_boot_partition(&info, &PartitionSelector::Label("bootfs".into())).unwrap();
    assert_eq!(by_label.index, 1);
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Index(2)),
        Err(ImageError::NotFat { .. })
    ));

    let boot = &a.partitions[0];
    fsck_vfat(&img, boot.start, boot.size, dir.path());
    fsck_vfat(
        &img,
        a.partitions[2].start,
        a.partitions[2].size,
        dir.path(),
    );
    assert_eq!(
        mcopy_out(&img, a.partitions[2].start, "a/b/c.txt", dir.path()).unwrap(),
        b"abc"
    );
    assert_eq!(
        mcopy_out(&img, boot.start, "sealed-secrets/bundle", dir.path()).unwrap(),
        BUNDLE
    );
    e2fsck(&img, a.partitions[1].start);
    assert_eq!(
        debugfs(&img, a.partitions[1].start, "cat /etc/hostname"),
        "device-01\n"
    );
}

fn build_tarball(path: &Path) {
    use tar::EntryType as E;
    type Entry<'a> = (&'a str, E, u32, u64, u64, &'a [u8], Option<&'a str>);
    // (path, type, mode, uid, gid, data, link target)
    #[rustfmt::skip]
    let entries: &[Entry] = &[
        ("./", E::Directory, 0o755, 0, 0, b"", None),
        ("etc/", E::Directory, 0o755, 0, 0, b"", None),
        ("etc/shadow", E::Regular, 0o640, 0, 42, b"root:*:19000::::::\n", None),
        ("etc/private/", E::Directory, 0o700, 1000, 1000, b"", None),
        ("etc/private/key", E::Regular, 0o400, 1000, 1000, b"k", None),
        ("usr/bin/su", E::Regular, 0o4755, 0, 0, b"\x7fELF", None),
        ("usr/bin/su-again", E::Link, 0o4755, 0, 0, b"", Some("usr/bin/su")),
        ("bin", E::Symlink, 0o777, 0, 0, b"", Some("usr/bin")),
        ("dev/null", E::Char, 0o666, 0, 0, b"", None),
        ("run/initctl", E::Fifo, 0o600, 0, 0, b"", None),
    ];
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for &(path, kind, mode, uid, gid, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if kind == E::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    }
    b.finish().unwrap();
}

#[test]
#[ignore = "needs mke2fs, e2fsck, debugfs (e2fsprogs); scripts/test runs it"]
fn tarball_source_keeps_owners_modes_links_and_devices() {
    require_tools(EXT4_TOOLS);
    let (dir, tarball) = testkit::scratch("rootfs.tar");
    build_tarball(&tarball);
    let img = dir.path().join("t.img");
    let root = PartitionContent::ext4(tarball.clone());
    let layout = Layout::new(
        TableKind::Gpt,
        vec![PartitionSpec::new(
            "root",
            8 << 20,
            PartitionKind::LinuxFs,
            root,
        )],
    );
    let a = assemble_with(&img, &layout, &epoch()).unwrap();
    let off = a.partitions[0].start;
    e2fsck(&img, off);
    // What `debugfs stat` says of each path.
    let expected: [(&str, &[&str]); 6] = [
        (
            "/etc/shadow",
            &[
                "Mode:  0640",
                "User:     0   Group:    42",
                // mtime from the header (1600000000 = 0x5f5e1000), clamped
                // times stay.
                "mtime: 0x5f5e1000",
                "ctime: 0x5f5e1000",
            ],
        ),
        (
            "/etc/private",
            &["Mode:  0700", "User:  1000   Group:  1000"],
        ),
        // Links: 2: the hard link is kept.
        ("/usr/bin/su", &["Mode:  04755", "Links: 2"]),
        (
            "/dev/null",
            &[
                "Type: character special",
                "Mode:  0666",
                "Device major/minor number: 01:03",
            ],
        ),
        ("/run/initctl", &["Type: FIFO", "Mode:  0600"]),
        ("/bin", &["Type: symlink", "Fast link dest: \"usr/bin\""]),
    ];
    for (path, lines) in expected {
        let stat = debugfs(&img, off, &format!("stat {path}"));
        for line in lines {
            assert!(stat.contains(line), "{path}: no {line:?} in\n{stat}");
        }
    }
    assert_eq!(debugfs(&img, off, "cat /etc/private/key"), "k");
    // Nothing staged is left beside the image.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-image"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Compressed tarballs are refused with a clear message.
    let heads: [(&str, &[u8]); 4] = [
        ("gzip", &[0x1f, 0x8b, 8, 0, 0, 0]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
        ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
        ("bzip2", b"BZh91A"),
    ];
    for (kind, head) in heads {
        let packed = dir.path().join(format!("rootfs.tar.{kind}"));
        fs::write(&packed, head).unwrap();
        let mut l2 = layout.clone();
        l2.partitions[0].content = PartitionContent::ext4(packed);
        let out = dir.path().join(format!("{kind}.img"));
        let err = assemble_with(&out, &l2, &epoch()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{kind}-compressed")),
            "{err}"
        );
        assert!(!out.exists());
    }
}

fn touch_source(root: &Path) {
    // New ctime (same mode) and atime on every file: what a fresh checkout
    // or a read by the previous build does.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for p in ["etc/hostname", "etc/sealed/note", "etc", "."] {
        let path = root.join(p);
        let perm = fs::metadata(&path).unwrap().permissions();
        fs::set_permissions(&path, perm).unwrap();
        let _ = fs::read(&path);
    }
}

#[test]
#[ignore = "needs mke2fs, debugfs (e2fsprogs); scripts/test runs it"]
fn fixed_ids_give_byte_identical_images() {
    require_tools(&["mke2fs", "debugfs"]);
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs_dir(dir.path());
    let data = partition_image(dir.path());
    let tarball = dir.path().join("rootfs.tar");
    build_tarball(&tarball);
    let mut layout = gpt_layout(Some(&root), Some(&data));
    layout.partitions.push(PartitionSpec {
        label: "from-tar".into(),
        size: 8 << 20,
        kind: PartitionKind::LinuxFs,
        uuid: Some(uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000005")),
        bootable: false,
        content: PartitionContent::Ext4 {
            source: tarball,
            fs_uuid: Some(uuid::uuid!("0b5c6a4e-1111-4222-8333-444455556667")),
        },
    });
    let one = dir.path().join("one.img");
    let two = dir.path().join("two.img");
    assemble_with(&one, &layout, &epoch()).unwrap();
    touch_source(&root);
    assemble_with(&two, &layout, &epoch()).unwrap();
    let (a, b) = (fs::read(&one).unwrap(), fs::read(&two).unwrap());
    assert!(
        a == b,
        "images differ at byte {:?}",
        a.iter().zip(&b).position(|(x, y)| x != y)
    );

    // Without ext4 no epoch is needed.
    let plain = gpt_layout(None, Some(&data));
    assemble_with(&one, &plain, &AssembleOptions::default()).unwrap();
    assemble_with(&two, &plain, &AssembleOptions::default()).unwrap();
    assert!(fs::read(&one).unwrap() == fs::read(&two).unwrap());

    // Ids left open are random: two builds differ, in the GPT at least.
    let mut random = plain.clone();
    random.disk_guid = None;
    for p in &mut random.partitions {
        p.uuid = None;
    }
    let r1 = assemble_with(&one, &random, &AssembleOptions::default()).unwrap();
    let r2 = assemble_with(&two, &random, &AssembleOptions::default()).unwrap();
    assert_ne!(r1.disk_id, r2.disk_id);
    assert_ne!(r1.partitions[0].part_uuid, r2.partitions[0].part_uuid);
}

#[test]
#[ignore = "needs mke2fs (e2fsprogs); scripts/test runs it"]
fn a_one_gib_image_is_sparse() {
    require_tool("mke2fs");
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs_dir(dir.path());
    let img = dir.path().join("big.img");
    let esp = PartitionContent::fat("ESP", esp_files());
    let layout = Layout {
        total_size: Some(1 << 30),
        ..Layout::new(
            TableKind::Gpt,
            vec![
                PartitionSpec::new("esp", 256 << 20, PartitionKind::Esp, esp),
                PartitionSpec::new(
                    "root",
                    700 << 20,
                    PartitionKind::LinuxFs,
                    PartitionContent::ext4(root),
                ),
            ],
        )
    };
    let a = assemble_with(&img, &layout, &epoch()).unwrap();
    assert_eq!(a.size, 1 << 30);
    let meta = fs::metadata(&img).unwrap();
    let used = meta.blocks() * 512;
    eprintln!("1 GiB image: {used} bytes ({} KiB) allocated", used / 1024);
    assert_eq!(meta.len(), 1 << 30);
    assert!(used < 8 << 20, "{used} bytes allocated for a 1 GiB image");

    // The FAT's boot sectors and both FATs are data, not holes: a bmap must
    // map them, or flashing onto a used card leaves garbage in the FATs.
    let esp = &a.partitions[0];
    let file = fs::File::open(&img).unwrap();
    let meta_len = fat::metadata_len(&file, esp.start).unwrap();
    assert!(
        meta_len > 64 * 1024,
        "FAT metadata region of {meta_len} bytes"
    );
    let segs = crate::io::sparse::data_segments(&file, meta.len()).unwrap();
    let covered = segs
        .iter()
        .any(|&(s, e)| s <= esp.start && esp.start + meta_len <= e);
    assert!(
        covered,
        "FAT metadata [{}, +{meta_len}) not fully data: {segs:?}",
        esp.start
    );
}

/// A Raspberry Pi OS style image made by sfdisk + mkfs.vfat + mke2fs.
fn rpi_image(dir: &Path) -> PathBuf {
    let img = dir.join("raspios.img");
    let f = fs::File::create(&img).unwrap();
    // bootfs: 512 MiB at 4 MiB (FAT32 needs 65525+ clusters); rootfs after it.
    f.set_len(600 << 20).unwrap();
    drop(f);
    let script = dir.join("sfdisk.script");
    fs::write(
        &script,
        "label: dos\nlabel-id: 0x3a8e0a1b\nstart=8192, size=1048576, type=c\nstart=1056768, type=83\n",
    )
    .unwrap();
    let out = testkit::command("sfdisk")
        .arg(&img)
        .stdin(fs::File::open(&script).unwrap())
        .output()
        .unwrap();
    testkit::assert_success(&out, "sfdisk");
    run_ok(
        "mkfs.vfat",
        &[
            "-F",
            "32",
            "-n",
            "bootfs",
            "-i",
            "4b1d0001",
            "--offset",
            "8192",
            s(&img),
            "524288",
        ],
    );
    let size_k = ((600u64 << 20) - 1056768 * 512) / 1024;
    run_ok(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext4",
            "-L",
            "rootfs",
            "-E",
            &format!("offset={}", 1056768u64 * 512),
            "-F",
            s(&img),
            &format!("{size_k}k"),
        ],
    );
    let spec = format!("{}@@{}", s(&img), 8192 * 512);
    fs::write(
        dir.join("cmdline.txt"),
        b"console=serial0 root=PARTUUID=3a8e0a1b-02\n",
    )
    .unwrap();
    run_ok(
        "mcopy",
        &["-i", &spec, s(&dir.join("cmdline.txt")), "::/cmdline.txt"],
    );
    img
}

#[test]
#[ignore = "needs sfdisk (fdisk), mkfs.vfat, fsck.vfat (dosfstools), mtools, e2fsprogs; scripts/test runs it"]
fn fat_edits_in_place_on_an_image_made_by_other_tools() {
    require_tools(&[
        "sfdisk",
        "mkfs.vfat",
        "fsck.vfat",
        "mcopy",
        "mdir",
        "mke2fs",
        "e2fsck",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let img = rpi_image(dir.path());
    let before = fs::read(&img).unwrap();

    let info = read_table(&img).unwrap();
    assert_eq!(info.table, TableKind::Mbr);
    assert_eq!(info.disk_id, "0x3a8e0a1b");
    assert_eq!(info.partitions.len(), 2);
    let boot = &info.partitions[0];
    assert_eq!((boot.index, boot.start, boot.size), (1, 4 << 20, 512 << 20));
    assert_eq!(boot.type_id, "0x0c");
    assert_eq!(boot.fs_type.as_deref(), Some("vfat"));
    assert_eq!(boot.fs_label.as_deref(), Some("bootfs"));
    assert_eq!(boot.uuid.as_deref(), Some("3a8e0a1b-01"));
    assert!(boot.is_fat_boot_candidate);
    assert_eq!(info.partitions[1].fs_type.as_deref(), Some("ext4"));
    assert_eq!(info.partitions[1].fs_label.as_deref(), Some("rootfs"));

    for sel in [
        PartitionSelector::Auto,
        PartitionSelector::Label("bootfs".into()),
        PartitionSelector::Label("BOOTFS".into()),
        PartitionSelector::Index(1),
    ] {
        assert_eq!(
            find_boot_partition(&info, &sel).unwrap().index,
            1,
            "{sel:?}"
        );
    }
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Index(2)),
        Err(ImageError::NotFat { .. })
    ));
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Index(9)),
        Err(ImageError::NoBootPartition(_))
    ));
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Label("nope".into())),
        Err(ImageError::NoBootPartition(_))
    ));

    let part = find_boot_partition(&info, &PartitionSelector::Auto).unwrap();
    assert_eq!(
        fat_read_file(&img, &part, "cmdline.txt").unwrap().unwrap(),
        b"console=serial0 root=PARTUUID=3a8e0a1b-02\n"
    );
    assert_eq!(
        fat_read_file(&img, &part, "sealed-secrets/bundle").unwrap(),
        None
    );

    fat_write_files(
        &img,
        &part,
        &[
            FatFile::file("sealed-secrets/bundle", BUNDLE.to_vec()),
            FatFile::file("sealed-secrets/image.key", b"key".to_vec()),
            FatFile::file("cmdline.txt", b"console=tty1\n".to_vec()),
        ],
    )
    .unwrap();
    fsck_vfat(&img, part.start, part.size, dir.path());
    assert_eq!(
        fat_read_file(&img, &part, "sealed-secrets/bundle")
            .unwrap()
            .unwrap(),
        BUNDLE
    );
    assert_eq!(
        mcopy_out(&img, part.start, "sealed-secrets/bundle", dir.path()).unwrap(),
        BUNDLE
    );
    assert_eq!(
        mcopy_out(&img, part.start, "cmdline.txt", dir.path()).unwrap(),
        b"console=tty1\n"
    );

    // Overwrite with a shorter bundle, then remove the key.
    fat_write_files(
        &img,
        &part,
        &[FatFile::file("sealed-secrets/bundle", b"v2".to_vec())],
    )
    .unwrap();
    assert_eq!(
        fat_read_file(&img, &part, "sealed-secrets/bundle")
            .unwrap()
            .unwrap(),
        b"v2"
    );
    assert!(fat_remove_file(&img, &part, "sealed-secrets/image.key").unwrap());
    assert!(!fat_remove_file(&img, &part, "sealed-secrets/image.key").unwrap());
    assert!(!fat_remove_file(&img, &part, "no/such/dir/file").unwrap());
    assert_eq!(
        fat_read_file(&img, &part, "sealed-secrets/image.key").unwrap(),
        None
    );
    assert!(mcopy_out(&img, part.start, "sealed-secrets/image.key", dir.path()).is_none());
    fsck_vfat(&img, part.start, part.size, dir.path());
    let spec = format!("{}@@{}", s(&img), part.start);
    let listing = stdout(&run_ok("mdir", &["-i", &spec, "::/sealed-secrets"]));
    assert!(
        listing.contains("bundle") && !listing.contains("image"),
        "{listing}"
    );

    // Outside the boot partition, nothing changed: MBR and the ext4 bytes.
    let after = fs::read(&img).unwrap();
    assert_eq!(before[..512], after[..512]);
    let root_start = info.partitions[1].start as usize;
    assert!(before[root_start..] == after[root_start..]);
    assert!(before[512..part.start as usize] == after[512..part.start as usize]);
    e2fsck(&img, info.partitions[1].start);
}

#[test]
fn gpt_boot_selection_prefers_the_esp_and_refuses_to_guess() {
    let dir = tempfile::tempdir().unwrap();
    let fat = |label: &str, kind: PartitionKind| {
        let content = PartitionContent::fat(label.to_uppercase(), vec![]);
        PartitionSpec::new(label, 2 << 20, kind, content)
    };
    let mut layout = Layout::new(
        TableKind::Gpt,
        vec![
            fat("data", PartitionKind::Fat),
            fat("esp", PartitionKind::Esp),
        ],
    );
    let img = dir.path().join("g.img");
    assemble_with(&img, &layout, &AssembleOptions::default()).unwrap();
    let info = read_table(&img).unwrap();
    assert_eq!(
        find_boot_partition(&info, &PartitionSelector::Auto)
            .unwrap()
            .index,
        2
    );
    assert_eq!(
        find_boot_partition(&info, &PartitionSelector::Label("data".into()))
            .unwrap()
            .index,
        1
    );

    layout.partitions[1] = fat("data2", PartitionKind::Fat);
    assemble_with(&img, &layout, &AssembleOptions::default()).unwrap();
    let info = read_table(&img).unwrap();
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Auto),
        Err(ImageError::AmbiguousBootPartition(_))
    ));
    // A name picks by GPT name or label, ASCII case ignored; what matches
    // nothing is named with the image's partitions.
    assert_eq!(
        find_boot_partition(&info, &PartitionSelector::Label("DATA".into()))
            .unwrap()
            .index,
        1
    );
    for (sel, want) in [
        (
            PartitionSelector::Index(9),
            "no partition 9; partitions: 1 (type ",
        ),
        (
            PartitionSelector::Label("nothing".into()),
            "no partition named or labelled \"nothing\"; partitions: 1 (type ",
        ),
    ] {
        match find_boot_partition(&info, &sel) {
            Err(ImageError::NoBootPartition(m)) => assert!(m.starts_with(want), "{m}"),
            other => panic!("{sel:?}: {other:?}"),
        }
    }

    layout.partitions = vec![PartitionSpec {
        content: PartitionContent::Empty,
        ..fat("esp", PartitionKind::Esp)
    }];
    assemble_with(&img, &layout, &AssembleOptions::default()).unwrap();
    let info = read_table(&img).unwrap();
    assert!(matches!(
        find_boot_partition(&info, &PartitionSelector::Auto),
        Err(ImageError::NoBootPartition(_))
    ));
}

#[test]
fn errors_are_precise_and_leave_nothing_behind() {
    let (dir, out) = testkit::scratch("fail.img");
    let esp = |size: u64, label: &str, files: Vec<FatFile>| {
        let content = PartitionContent::fat(label, files);
        PartitionSpec::new("esp", size, PartitionKind::Esp, content)
    };
    let layout = |parts: Vec<PartitionSpec>| Layout::new(TableKind::Gpt, parts);
    let fails = |l: &Layout| -> ImageError {
        fs::write(&out, b"old contents").unwrap();
        let e = assemble_with(&out, l, &AssembleOptions::default()).unwrap_err();
        assert!(!out.exists(), "{e}: output left behind");
        e
    };

    let e = fails(&layout(vec![esp(8192, "ESP", vec![])]));
    assert!(
        matches!(e.innermost(), ImageError::FatTooSmall { .. }),
        "{e}"
    );
    assert!(e.to_string().starts_with("partition 1 (\"esp\"): "), "{e}");

    let e = fails(&layout(vec![esp(
        1 << 20,
        "ESP",
        vec![FatFile::file("big", vec![1; 2 << 20])],
    )]));
    assert!(matches!(e.innermost(), ImageError::FatFull { .. }), "{e}");

    let e = fails(&layout(vec![esp(1 << 20, "esp", vec![])]));
    assert!(
        matches!(e.innermost(), ImageError::InvalidFatLabel { .. }),
        "{e}"
    );

    let e = fails(&layout(vec![esp(
        1 << 20,
        "ESP",
        vec![FatFile::file("a/../b", vec![])],
    )]));
    assert!(
        matches!(e.innermost(), ImageError::InvalidFatPath { .. }),
        "{e}"
    );

    let mut dir_with_data = FatFile::dir("d");
    dir_with_data.data = vec![1];
    let e = fails(&layout(vec![esp(1 << 20, "ESP", vec![dir_with_data])]));
    assert!(
        matches!(e.innermost(), ImageError::InvalidFatPath { .. }),
        "{e}"
    );

    let mut long = esp(1 << 20, "ESP", vec![]);
    long.label = "a-name-that-is-much-too-long-for-a-gpt".into();
    let e = fails(&layout(vec![long]));
    assert!(
        matches!(e, ImageError::GptLabelTooLong { units: 38, .. }),
        "{e}"
    );

    let nothing = PartitionContent::ext4(dir.path().join("no-such-dir"));
    let missing = PartitionSpec::new("root", 8 << 20, PartitionKind::LinuxFs, nothing);
    let e = fails(&layout(vec![missing.clone()]));
    assert!(matches!(e.innermost(), ImageError::SourceMissing(_)), "{e}");

    let big = dir.path().join("big.part");
    fs::write(&big, vec![1u8; (1 << 20) + 1]).unwrap();
    let too_big = PartitionSpec {
        content: PartitionContent::ImageFile(big),
        ..missing.clone()
    };
    let mut l = layout(vec![too_big]);
    l.partitions[0].size = 1 << 20;
    let e = fails(&l);
    assert!(matches!(e.innermost(), ImageError::ImageFile { .. }), "{e}");

    let mut l = layout(vec![esp(1 << 20, "ESP", vec![])]);
    l.total_size = Some(2 << 20);
    let e = fails(&l);
    assert!(matches!(e, ImageError::DoesNotFit { .. }), "{e}");
    assert!(e.to_string().contains("at least"), "{e}");

    let mut l = layout((0..5).map(|_| esp(1 << 20, "ESP", vec![])).collect());
    l.table = TableKind::Mbr;
    let e = fails(&l);
    assert!(matches!(e, ImageError::TooManyMbrPartitions(5)), "{e}");

    let mut l = layout(vec![
        esp(1 << 20, "ESP", vec![]),
        esp(1 << 20, "ESP", vec![]),
    ]);
    l.partitions[0].uuid = Some(ESP_GUID);
    l.partitions[1].uuid = Some(ESP_GUID);
    let e = fails(&l);
    assert!(e.to_string().contains("used twice"), "{e}");

    // A GPT header claiming an absurd partition array is refused, not allocated.
    let img = dir.path().join("crafted.img");
    assemble_with(
        &img,
        &layout(vec![esp(1 << 20, "ESP", vec![])]),
        &AssembleOptions::default(),
    )
    .unwrap();
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &u32::MAX.to_le_bytes(), 512 + 80).unwrap();
    drop(f);
    assert!(matches!(read_table(&img), Err(ImageError::BadTable { .. })));

    // Reading: not an image, out-of-range requests.
    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![0u8; 4096]).unwrap();
    assert!(matches!(
        read_table(&junk),
        Err(ImageError::NoPartitionTable(_))
    ));
    assert!(matches!(
        read_table(&dir.path().join("absent.img")),
        Err(ImageError::Io { .. })
    ));
}

/// More data than the filesystem holds: mke2fs's own message comes
/// through, and nothing is left behind.
#[test]
#[ignore = "needs mke2fs (e2fsprogs); scripts/test runs it"]
fn an_ext4_partition_too_small_for_its_tree_is_mke2fs_s_error() {
    require_tool("mke2fs");
    let (dir, out) = testkit::scratch("fail.img");
    let src = dir.path().join("fat-tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("blob"), vec![0x5a; 3 << 20]).unwrap();
    let part = PartitionSpec::new(
        "root",
        2 << 20,
        PartitionKind::LinuxFs,
        PartitionContent::ext4(src),
    );
    fs::write(&out, b"old contents").unwrap();
    let l = Layout::new(TableKind::Gpt, vec![part]);
    let e = assemble_with(&out, &l, &AssembleOptions::default()).unwrap_err();
    assert!(!out.exists(), "{e}: output left behind");
    match e.innermost() {
        ImageError::ToolFailed { tool, stderr, .. } => {
            assert_eq!(*tool, "mke2fs");
            assert!(!stderr.is_empty(), "{e}");
        }
        other => panic!("{other}"),
    }
}
#[test]
fn source_date_epoch_values() {
    assert_eq!(
        parse_source_date_epoch("1700000000").unwrap(),
        1_700_000_000
    );
    assert_eq!(parse_source_date_epoch(" 0 ").unwrap(), 0);
    for bad in ["", "-1", "1.5", "soon", "99999999999999999999"] {
        assert!(
            matches!(
                parse_source_date_epoch(bad),
                Err(ImageError::InvalidSourceDateEpoch(_))
            ),
            "{bad}"
        );
    }
}
