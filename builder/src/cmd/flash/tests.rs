//! Flash tests: regular file targets (always), loop devices (when the
//! kernel lets us have them), checked with the real tools (bmaptool,
//! sfdisk, mtools, fsck.vfat). A missing tool skips with a reason, or fails
//! under `CI=true`; a kernel that refuses loop devices skips with a reason
//! in any case.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sealed_bundle::{self as bundle, Contents, ImageKey, Manifest};

use super::*;
use crate::image::{
    assemble_with, fat_read_file, fat_write_files, find_boot_partition, read_table,
    read_table_from, AssembleOptions, DiskView, FatFile, Layout, PartitionContent, PartitionKind,
    PartitionSpec, TableKind,
};

// ---------------------------------------------------------------------------
// Helpers

use testkit::{allocated, assert_same, require_root, require_tools as require, run, run_ok, s};

const EPOCH: AssembleOptions = AssembleOptions {
    source_date_epoch: Some(1_700_000_000),
};

/// A bundle sealed to `key` (empty manifest: only the header matters here).
fn real_bundle(key: &ImageKey) -> Vec<u8> {
    let contents = Contents {
        manifest: Manifest::default(),
        values: BTreeMap::new(),
    };
    bundle::seal(key, &contents, 1_700_000_000).unwrap()
}

/// A test image: FAT boot partition (ESP for GPT, 0x0c for MBR) holding
/// `bundle`, a data partition copied from a file with holes, an empty one.
fn make_image(dir: &Path, name: &str, table: TableKind, bundle: &[u8]) -> PathBuf {
    let data = dir.join(format!("{name}.data"));
    let mut v = vec![0u8; (3 << 20) + 1000];
    v[..5000].fill(0xab);
    v[2 << 20..].fill(0xcd);
    v[700_001] = 1;
    fs::write(&data, v).unwrap();
    let boot_kind = match table {
        TableKind::Gpt => PartitionKind::Esp,
        TableKind::Mbr => PartitionKind::Fat,
    };
    let layout = Layout {
        table,
        disk_guid: Some(uuid::uuid!("11111111-2222-4333-8444-555555555555")),
        disk_signature: Some(0x1234_abcd),
        partitions: vec![
            PartitionSpec {
                label: "BOOT".into(),
                size: 40 << 20,
                kind: boot_kind,
                uuid: Some(uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000001")),
                bootable: true,
                content: PartitionContent::Fat {
                    volume_label: "BOOT".into(),
                    volume_id: Some(0x1234_abcd),
                    files: vec![
                        FatFile::file(crate::seal::BUNDLE_PATH, bundle.to_vec()),
                        FatFile::file("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 70_000]),
                        FatFile::file("config.txt", b"# nothing\n".to_vec()),
                    ],
                },
            },
            PartitionSpec {
                label: "data".into(),
                size: 4 << 20,
                kind: PartitionKind::LinuxFs,
                uuid: Some(uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000002")),
                bootable: false,
                content: PartitionContent::ImageFile(data),
            },
            PartitionSpec {
                label: "spare".into(),
                size: 1 << 20,
                kind: PartitionKind::LinuxFs,
                uuid: Some(uuid::uuid!("AAAAAAAA-0000-4000-8000-000000000003")),
                bootable: false,
                content: PartitionContent::Empty,
            },
        ],
        total_size: None,
    };
    let img = dir.join(format!("{name}.img"));
    assemble_with(&img, &layout, &EPOCH).unwrap();
    img
}

/// `bmaptool create IMAGE -o OUT`.
fn make_bmap(img: &Path, out: &Path) {
    run_ok("bmaptool", &["create", s(img), "-o", s(out)]);
}

/// In a fresh temporary directory, a GPT test image `disk.img` (no real
/// bundle) and its bmap, made by bmaptool, at `bmap_name` (the test fails
/// when bmaptool is missing: it is `#[ignore]`d for that).
fn image_with_bmap(bmap_name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    require(&["bmaptool"]);
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, b"x");
    let bmap_path = dir.path().join(bmap_name);
    make_bmap(&img, &bmap_path);
    (dir, img, bmap_path)
}

/// The tools that check a flashed key (bmaptool, mtools, fsck.vfat), a
/// fresh temporary directory and a fresh image key (the test fails when a
/// tool is missing: it is `#[ignore]`d for that).
fn keyed_scratch() -> (tempfile::TempDir, ImageKey) {
    require(&["bmaptool", "mtype", "fsck.vfat"]);
    (tempfile::tempdir().unwrap(), ImageKey::generate())
}

/// Compress like the zstd CLI does a file: one frame that declares its size.
fn compress(img: &Path, out: &Path) {
    let mut src = fs::File::open(img).unwrap();
    let len = src.metadata().unwrap().len();
    let mut enc = zstd::stream::write::Encoder::new(fs::File::create(out).unwrap(), 3).unwrap();
    enc.include_contentsize(true).unwrap();
    enc.set_pledged_src_size(Some(len)).unwrap();
    std::io::copy(&mut src, &mut enc).unwrap();
    enc.finish().unwrap();
}

fn write_key_file(dir: &Path, key: &ImageKey) -> PathBuf {
    let p = dir.join("image.key");
    fs::write(&p, key.to_file_text().as_bytes()).unwrap();
    p
}

/// What the target must hold: the image with the key file written into its
/// boot partition by the image module (FAT timestamps are fixed, so this is
/// byte-exact).
fn expected_with_key(img: &Path, key: &ImageKey, dir: &Path) -> PathBuf {
    let exp = dir.join("expected.img");
    fs::copy(img, &exp).unwrap();
    let info = read_table(&exp).unwrap();
    let boot = find_boot_partition(&info, &PartitionSelector::Auto).unwrap();
    fat_write_files(
        &exp,
        &boot,
        &[FatFile::file(
            crate::seal::EMBEDDED_KEY_PATH,
            key.to_file_text().as_bytes().to_vec(),
        )],
    )
    .unwrap();
    exp
}

/// The key file reads back with mtools, and `fsck.vfat -n` finds the boot
/// partition clean, in the disk image `view`.
fn check_key_fat(view: &Path, boot: &crate::image::PartInfo, key: &ImageKey, dir: &Path) {
    let spec = format!("{}@@{}", s(view), boot.start);
    let out = run_ok("mtype", &["-i", &spec, "::/sealed-secrets/image.key"]);
    assert_eq!(out.stdout, key.to_file_text().as_bytes());
    let part = dir.join("boot.part");
    let bytes = fs::read(view).unwrap();
    fs::write(
        &part,
        &bytes[boot.start as usize..(boot.start + boot.size) as usize],
    )
    .unwrap();
    let out = run("fsck.vfat", &["-n", s(&part)]);
    assert!(
        out.status.success(),
        "fsck.vfat -n: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// On a flashed file target: the key file and a clean FAT, the bundle
/// untouched, and every byte outside the boot partition equal to the image.
fn check_key_on_target(target: &Path, img: &Path, key: &ImageKey, dir: &Path) {
    let info = read_table(img).unwrap();
    let boot = find_boot_partition(&info, &PartitionSelector::Auto).unwrap();
    let (a, b) = (fs::read(target).unwrap(), fs::read(img).unwrap());
    assert_eq!(a.len(), b.len());
    let (s0, s1) = (boot.start as usize, (boot.start + boot.size) as usize);
    assert_same(&a[..s0], &b[..s0], "before the boot partition");
    assert_same(&a[s1..], &b[s1..], "after the boot partition");
    check_key_fat(target, &boot, key, dir);
    assert_eq!(
        fat_read_file(target, &boot, crate::seal::BUNDLE_PATH).unwrap(),
        fat_read_file(img, &boot, crate::seal::BUNDLE_PATH).unwrap()
    );
}

fn opts() -> FlashOptions {
    FlashOptions::default()
}

fn with_bmap(bmap: PathBuf) -> FlashOptions {
    FlashOptions {
        bmap: Some(bmap),
        ..opts()
    }
}

fn with_key(key: PathBuf) -> FlashOptions {
    FlashOptions {
        key: Some(key),
        ..opts()
    }
}

/// `--yes`: loop devices are not removable.
fn with_yes() -> FlashOptions {
    FlashOptions {
        yes: true,
        ..opts()
    }
}

// ---------------------------------------------------------------------------
// Regular file targets

/// `flash(args…)` must fail with a `FlashError` of `kind`; returns the error.
macro_rules! fails {
    ($kind:ident, $($arg:expr),+) => {{
        let e = flash($($arg),+).unwrap_err();
        assert!(matches!(e, FlashError::$kind { .. }), "{e}");
        e
    }};
}

#[test]
#[ignore = "needs bmaptool (bmap-tools), sfdisk (fdisk); scripts/test runs it"]
fn bmap_flash_equals_the_image_and_bmaptool_copy() {
    require(&["bmaptool", "sfdisk"]);
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, b"not a bundle");
    let bmap_path = dir.path().join("disk.img.bmap");
    make_bmap(&img, &bmap_path);
    let target = dir.path().join("target.img");
    let with_progress = FlashOptions {
        progress: true,
        ..opts()
    };
    let report = flash(&img, &target, &with_progress).unwrap();

    let bm = load_bmap(&bmap_path).unwrap();
    assert!(report.used_bmap);
    assert_eq!(report.bmap.as_deref(), Some(bmap_path.as_path()));
    assert_eq!(report.mapped_bytes, bm.mapped_bytes());
    assert_eq!(report.bytes_written, bm.mapped_bytes());
    assert_eq!(report.image_size, fs::metadata(&img).unwrap().len());
    assert!(report.verified && !report.key_written);
    assert_eq!(report.target_kind, "file");
    assert_eq!(report.target, fs::canonicalize(&target).unwrap());
    assert_eq!(report.sha256_mapped.len(), 64);

    let ours = fs::read(&target).unwrap();
    assert_same(&ours, &fs::read(&img).unwrap(), "target vs image");
    assert!(
        allocated(&target) <= bm.mapped_bytes() + (1 << 20),
        "target not sparse: {} bytes allocated for {} mapped",
        allocated(&target),
        bm.mapped_bytes()
    );

    // bmaptool's own copy is byte-identical.
    let theirs = dir.path().join("bmaptool.img");
    run_ok(
        "bmaptool",
        &["copy", "--bmap", s(&bmap_path), s(&img), s(&theirs)],
    );
    assert_same(&ours, &fs::read(&theirs).unwrap(), "ours vs bmaptool copy");

    // --no-bmap: the bmap beside the image is ignored.
    let whole = dir.path().join("whole.img");
    let r = flash(
        &img,
        &whole,
        &FlashOptions {
            no_bmap: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(!r.used_bmap && r.bmap.is_none());
    assert_eq!(r.mapped_bytes, r.image_size);
    assert_same(&fs::read(&whole).unwrap(), &ours, "--no-bmap vs bmap");

    // sfdisk reads the table of the target.
    let out = run_ok("sfdisk", &["--json", s(&target)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(v["partitiontable"]["label"], "gpt");
    assert_eq!(parts[0]["name"], "BOOT");
}

#[test]
fn no_bmap_writes_everything_but_zero_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Mbr, b"x");
    let target = dir.path().join("out.img");
    // A pre-existing, longer target file is truncated first (with --force:
    // it is not an earlier flash output).
    fs::write(&target, vec![0xee; 80 << 20]).unwrap();
    assert!(matches!(
        flash(&img, &target, &opts()),
        Err(FlashError::TargetFileExists { .. })
    ));
    let report = flash(
        &img,
        &target,
        &FlashOptions {
            force: true,
            ..opts()
        },
    )
    .unwrap();
    let size = fs::metadata(&img).unwrap().len();
    assert!(!report.used_bmap && report.bmap.is_none());
    assert_eq!(report.mapped_bytes, size);
    assert_eq!(report.image_size, size);
    assert!(report.bytes_written < size / 4, "{report:?}");
    assert_eq!(fs::metadata(&target).unwrap().len(), size);
    assert_same(
        &fs::read(&target).unwrap(),
        &fs::read(&img).unwrap(),
        "target vs image",
    );
    assert!(allocated(&target) < size / 2);
    // sha256_mapped is the image's SHA-256.
    use sha2::Digest;
    let sum = sha2::Sha256::digest(fs::read(&img).unwrap());
    assert_eq!(report.sha256_mapped, hex::encode(sum));
}

#[test]
#[ignore = "needs bmaptool (bmap-tools), mtools, fsck.vfat (dosfstools); scripts/test runs it"]
fn key_goes_onto_the_boot_partition() {
    for table in [TableKind::Gpt, TableKind::Mbr] {
        let (dir, key) = keyed_scratch();
        let img = make_image(dir.path(), "disk", table, &real_bundle(&key));
        make_bmap(&img, &dir.path().join("disk.bmap")); // found as N.bmap
        let keyf = write_key_file(dir.path(), &key);
        // A key file reached through a symbolic link works (build-host
        // paths may be links into a secrets directory).
        let link = dir.path().join("linked.key");
        std::os::unix::fs::symlink(&keyf, &link).unwrap();
        let target = dir.path().join("target.img");
        let report = flash(&img, &target, &with_key(link)).unwrap();
        assert!(report.used_bmap && report.key_written && report.verified);
        assert_eq!(report.boot_partition, Some(1));
        let exp = expected_with_key(&img, &key, dir.path());
        assert_same(
            &fs::read(&target).unwrap(),
            &fs::read(&exp).unwrap(),
            "target vs image + key",
        );
        check_key_on_target(&target, &img, &key, dir.path());
    }
}

#[test]
#[ignore = "needs bmaptool (bmap-tools), mtools, fsck.vfat (dosfstools); scripts/test runs it"]
fn zstd_images_with_and_without_bmap() {
    let (dir, key) = keyed_scratch();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, &real_bundle(&key));
    let zst = dir.path().join("disk.img.zst");
    compress(&img, &zst);
    let keyf = write_key_file(dir.path(), &key);
    let exp = fs::read(expected_with_key(&img, &key, dir.path())).unwrap();

    // Without a bmap (none beside the image).
    let t1 = dir.path().join("t1.img");
    let r1 = flash(&zst, &t1, &with_key(keyf.clone())).unwrap();
    assert!(!r1.used_bmap && r1.key_written);
    assert_eq!(r1.image_size, exp.len() as u64);
    assert_same(&fs::read(&t1).unwrap(), &exp, "zst without bmap");

    // With the bmap of the uncompressed image, found beside it as disk.img.bmap.
    make_bmap(&img, &dir.path().join("disk.img.bmap"));
    let t2 = dir.path().join("t2.img");
    let r2 = flash(
        &zst,
        &t2,
        &FlashOptions {
            key: Some(keyf),
            progress: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(r2.used_bmap && r2.key_written);
    assert_eq!(r2.bmap, Some(dir.path().join("disk.img.bmap")));
    assert_same(&fs::read(&t2).unwrap(), &exp, "zst with bmap");
    check_key_on_target(&t2, &img, &key, dir.path());

    // Same data checksum as from the plain image.
    let t3 = dir.path().join("t3.img");
    let r3 = flash(&img, &t3, &opts()).unwrap();
    assert_eq!(r3.sha256_mapped, r2.sha256_mapped);
}

#[test]
#[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
fn corrupted_image_data_fails_the_range_checksum() {
    let (dir, img, bmap_path) = image_with_bmap("disk.img.bmap");
    let bm = load_bmap(&bmap_path).unwrap();
    // Flip a byte inside the second mapped range.
    let (start, _) = bm.byte_range(&bm.ranges[1]);
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0x5a], start + 7).unwrap();
    drop(f);
    let target = dir.path().join("t.img");
    let e = flash(&img, &target, &opts()).unwrap_err();
    match &e {
        FlashError::ChecksumMismatch { blocks, .. } => {
            assert!(blocks.contains(&format!("(bytes {start}..")), "{blocks}")
        }
        other => panic!("{other}"),
    }
    assert!(!e.is_refusal());
    assert!(e.to_string().contains("partial image"), "{e}");

    // The same through zstd.
    let zst = dir.path().join("disk.img.zst");
    compress(&img, &zst);
    fails!(ChecksumMismatch, &zst, &target, &opts());
}

#[test]
#[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
fn edited_or_foreign_bmaps_are_refused_before_writing() {
    let (dir, img, bmap_path) = image_with_bmap("good.bmap");
    let target = dir.path().join("t.img");

    // An edited range checksum breaks the file checksum.
    let text = fs::read_to_string(&bmap_path).unwrap();
    let at = text.find("chksum=\"").unwrap() + 8;
    let mut edited = text.clone();
    let c = if &text[at..at + 1] == "0" { "1" } else { "0" };
    edited.replace_range(at..at + 1, c);
    let bad = dir.path().join("edited.bmap");
    fs::write(&bad, edited).unwrap();
    let e = fails!(BmapMalformed, &img, &target, &with_bmap(bad));
    assert!(e.to_string().contains("modified or damaged"), "{e}");
    assert!(e.is_refusal());
    assert!(!target.exists());

    // Truncated file.
    let cut = dir.path().join("cut.bmap");
    fs::write(&cut, &text[..text.len() / 2]).unwrap();
    fails!(BmapMalformed, &img, &target, &with_bmap(cut));
    assert!(!target.exists());

    // The bmap of another image (different size).
    let other = dir.path().join("other.img");
    fs::copy(&img, &other).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&other)
        .unwrap()
        .set_len(fs::metadata(&img).unwrap().len() + 4096)
        .unwrap();
    fails!(
        BmapSizeMismatch,
        &other,
        &target,
        &with_bmap(bmap_path.clone())
    );
    assert!(!target.exists());

    // A compressed image longer than the bmap says (declared in the frame
    // header: refused before writing).
    let zst = dir.path().join("other.img.zst");
    compress(&other, &zst);
    fails!(BmapSizeMismatch, &zst, &target, &with_bmap(bmap_path));
    assert!(!target.exists());

    // A missing explicit bmap.
    fails!(
        BmapOpen,
        &img,
        &target,
        &with_bmap(dir.path().join("nope.bmap"))
    );
}

#[test]
#[ignore = "needs bmaptool (bmap-tools); scripts/test runs it"]
fn zstd_stream_longer_than_the_bmap_fails_after_the_stream() {
    // A multi-frame .zst whose first frame matches the bmap but a second
    // frame appends data: detected when the stream ends.
    let (dir, img, _bmap) = image_with_bmap("disk.img.bmap");
    let zst = dir.path().join("disk.img.zst");
    compress(&img, &zst);
    let mut bytes = fs::read(&zst).unwrap();
    bytes.extend(zstd::encode_all(&[1u8; 100][..], 3).unwrap());
    fs::write(&zst, bytes).unwrap();
    let target = dir.path().join("t.img");
    let e = flash(&zst, &target, &opts()).unwrap_err();
    match &e {
        FlashError::ImageLength {
            partially_written, ..
        } => assert!(partially_written.is_some()),
        other => panic!("{other}"),
    }
}

#[test]
fn wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = ImageKey::generate();
    let other = ImageKey::generate();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, &real_bundle(&key));
    let wrong = write_key_file(dir.path(), &other);
    let target = dir.path().join("t.img");
    let o = FlashOptions {
        key: Some(wrong),
        ..opts()
    };
    // Plain image: refused before anything is written.
    let e = fails!(KeyMismatch, &img, &target, &o);
    assert!(e.to_string().contains(&other.id().to_string()), "{e}");
    assert!(e.is_refusal());
    assert!(!target.exists());

    // Compressed image: found on the target after writing; no key written.
    let zst = dir.path().join("disk.img.zst");
    compress(&img, &zst);
    let e = fails!(KeyMismatch, &zst, &target, &o);
    assert!(e.to_string().contains("the key was not"), "{e}");
    assert!(!e.is_refusal());
    assert_same(
        &fs::read(&target).unwrap(),
        &fs::read(&img).unwrap(),
        "image written, no key",
    );

    // No bundle at all.
    let bare = make_image(dir.path(), "bare", TableKind::Gpt, b"not a bundle");
    let key_file = write_key_file(dir.path(), &key);
    fails!(KeyMismatch, &bare, &target, &with_key(key_file));
}

#[test]
fn bad_inputs_and_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, b"x");
    let before = fs::read(&img).unwrap();

    // Missing image.
    fails!(
        ImageOpen,
        &dir.path().join("nope.img"),
        &dir.path().join("t"),
        &opts()
    );
    // A directory as image.
    fails!(ImageNotFile, dir.path(), &dir.path().join("t"), &opts());
    // Invalid key file.
    let badkey = dir.path().join("bad.key");
    fs::write(&badkey, "hello\n").unwrap();
    let e = fails!(KeyInvalid, &img, &dir.path().join("t"), &with_key(badkey));
    assert!(
        !e.to_string().contains("hello"),
        "never echo key content: {e}"
    );
    // A FIFO as key file is refused at once (never blocks).
    let fifo = dir.path().join("fifo.key");
    testkit::mkfifo(&fifo);
    fails!(KeyInvalid, &img, &dir.path().join("t"), &with_key(fifo));

    // The image itself (directly, through a symlink, through a hard link).
    fails!(TargetIsInput, &img, &img, &opts());
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    let e = fails!(TargetIsInput, &img, &link, &opts());
    assert!(e.to_string().contains("given as"), "{e}");
    let hard = dir.path().join("hard.img");
    fs::hard_link(&img, &hard).unwrap();
    fails!(TargetIsInput, &img, &hard, &opts());
    assert_eq!(fs::read(&img).unwrap(), before, "the image was modified");

    // A device node that is not there: never created as a file.
    fails!(
        TargetMissing,
        &img,
        Path::new("/dev/sdzz-flash-test"),
        &opts()
    );
    assert!(!Path::new("/dev/sdzz-flash-test").exists());
    // A dangling symlink.
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("/dev/disk/by-id/usb-nothing-here", &dangling).unwrap();
    fails!(TargetMissing, &img, &dangling, &opts());
    // A regular file in /dev (an earlier copy to an absent device).
    let stray = PathBuf::from(format!("/dev/flash-test-stray-{}", std::process::id()));
    if fs::write(&stray, b"").is_ok() {
        let e = flash(&img, &stray, &opts()).unwrap_err();
        let _ = fs::remove_file(&stray);
        assert!(matches!(e, FlashError::TargetKind { .. }), "{e}");
        assert!(e.to_string().contains("under /dev"), "{e}");
    }
    // A character device, a directory.
    fails!(TargetKind, &img, Path::new("/dev/null"), &opts());
    fails!(TargetKind, &img, dir.path(), &opts());
}

#[test]
fn default_bmap_lookup_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let zst = d.join("n.img.zst");
    assert_eq!(default_bmap(&zst), None);
    fs::write(d.join("n.bmap"), "").unwrap();
    assert_eq!(default_bmap(&zst), Some(d.join("n.bmap")));
    fs::write(d.join("n.img.bmap"), "").unwrap();
    assert_eq!(default_bmap(&zst), Some(d.join("n.img.bmap")));
    fs::write(d.join("n.img.zst.bmap"), "").unwrap();
    assert_eq!(default_bmap(&zst), Some(d.join("n.img.zst.bmap")));
    assert_eq!(default_bmap(&d.join("n.img")), Some(d.join("n.img.bmap")));
}

#[test]
fn table_read_from_a_handle_matches_read_table() {
    // GPT and MBR images from the assembler.
    let dir = tempfile::tempdir().unwrap();
    let mut images = vec![
        make_image(dir.path(), "g", TableKind::Gpt, b"x"),
        make_image(dir.path(), "m", TableKind::Mbr, b"x"),
    ];
    // A GPT image whose primary header is damaged: read from its backup.
    let damaged = dir.path().join("damaged.img");
    fs::copy(&images[0], &damaged).unwrap();
    let d = fs::OpenOptions::new().write(true).open(&damaged).unwrap();
    d.write_all_at(&[0; 512], 512).unwrap();
    images.push(damaged);
    for img in images {
        table_from_handle_matches(&img, dir.path());
    }
}

#[test]
#[ignore = "needs sfdisk (fdisk); scripts/test runs it"]
fn table_read_from_a_handle_follows_an_ebr_chain_made_by_sfdisk() {
    // An MBR with logical partitions made by sfdisk (EBR chain).
    require(&["sfdisk"]);
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("ext.img");
    fs::File::create(&ext).unwrap().set_len(64 << 20).unwrap();
    let script = "label: dos\n,8M,c\n,8M,83\n,,5\n,8M,83\n,8M,83\n,,83\n";
    let out =
        testkit::output_with_stdin(testkit::command("sfdisk").arg(s(&ext)), script.as_bytes());
    assert!(out.status.success());
    table_from_handle_matches(&ext, dir.path());
}

/// [`read_table_from`] on an open `img` reads what [`read_table`] does,
/// also from a larger target holding the image (in `dir`).
fn table_from_handle_matches(img: &Path, dir: &Path) {
    let want = read_table(img).unwrap();
    let f = fs::File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    let got = read_table_from(DiskView::new(&f, size), img).unwrap();
    assert_eq!(got, want, "{}", img.display());
    // A target larger than the image written onto it (a card with old
    // data after the image): read as the image, the backup GPT header
    // at the image's end, not at the card's.
    let card = dir.join("card");
    fs::copy(img, &card).unwrap();
    let c = fs::OpenOptions::new().write(true).open(&card).unwrap();
    c.set_len(size + (4 << 20)).unwrap();
    c.write_all_at(&[0xa5; 4096], size + (4 << 20) - 4096)
        .unwrap();
    let c = fs::File::open(&card).unwrap();
    let got = read_table_from(DiskView::new(&c, size), &card).unwrap();
    assert_eq!(got, want, "{} on a larger target", img.display());
}

// ---------------------------------------------------------------------------
// Loop devices

/// A loop device over a file, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = run("losetup", &["-d", s(&self.dev)]);
    }
}

/// Attach `backing` to a free loop device; the test fails when it cannot
/// (no losetup, not root, or the kernel refuses loop devices: such tests
/// are `#[ignore]`d for that).
fn attach(backing: &Path, partscan: bool) -> Loop {
    require(&["losetup"]);
    require_root("loop devices");
    let mut args = vec!["-f", "--show"];
    if partscan {
        args.push("-P");
    }
    args.push(s(backing));
    let out = run("losetup", &args);
    if !out.status.success() {
        // Not a missing tool: the kernel (or the sandbox) refuses loop
        // devices.
        testkit::missing(
            "a loop device",
            &format!(
                "the kernel refused one: losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
    let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Loop { dev }
}

#[test]
#[ignore = "needs root, losetup and loop devices, bmaptool (bmap-tools), mtools, fsck.vfat (dosfstools); scripts/test runs it"]
fn as_root_loop_device_flash_with_key() {
    let (dir, key) = keyed_scratch();
    // with/ holds the image, its bmap and its .zst; without/ the same
    // images and no bmap.
    let with = dir.path().join("with");
    let without = dir.path().join("without");
    fs::create_dir_all(&with).unwrap();
    fs::create_dir_all(&without).unwrap();
    let img = make_image(&with, "disk", TableKind::Gpt, &real_bundle(&key));
    let bmap_path = with.join("disk.img.bmap");
    make_bmap(&img, &bmap_path);
    let bm = load_bmap(&bmap_path).unwrap();
    compress(&img, &with.join("disk.img.zst"));
    fs::copy(&img, without.join("disk.img")).unwrap();
    fs::copy(with.join("disk.img.zst"), without.join("disk.img.zst")).unwrap();
    let keyf = write_key_file(dir.path(), &key);
    let size = fs::metadata(&img).unwrap().len();
    let exp = fs::read(expected_with_key(&img, &key, dir.path())).unwrap();
    let info = read_table(&img).unwrap();
    let boot = find_boot_partition(&info, &PartitionSelector::Auto).unwrap();
    let spare = info.partitions[2].clone();

    for (n, image) in [
        with.join("disk.img"),
        with.join("disk.img.zst"),
        without.join("disk.img"),
        without.join("disk.img.zst"),
    ]
    .iter()
    .enumerate()
    {
        let use_bmap = image.starts_with(&with);
        let backing = dir.path().join(format!("backing{n}"));
        // Bigger than the image. Without a bmap, full of old data that must
        // not survive anywhere. With one, like a fresh (erased) card, but
        // with old data in the empty third partition, which the bmap does
        // not map and which must therefore stay as it was.
        // (Old data everywhere would also stay in the unmapped, all-zero
        // parts of the FAT tables: see the report about sparse FATs.)
        let old = if use_bmap { 0u8 } else { 0x77 };
        fs::write(&backing, vec![old; (size + (8 << 20)) as usize]).unwrap();
        if use_bmap {
            let f = fs::OpenOptions::new().write(true).open(&backing).unwrap();
            f.write_all_at(&[0x77; 8192], spare.start).unwrap();
        }
        let lo = attach(&backing, false);
        // Through a symlink, like /dev/disk/by-id/...
        let link = dir.path().join(format!("by-id-{n}"));
        std::os::unix::fs::symlink(&lo.dev, &link).unwrap();
        let r = flash(
            image,
            &link,
            &FlashOptions {
                key: Some(keyf.clone()),
                yes: true, // loop devices are not removable
                ..opts()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()));
        assert_eq!(r.target, lo.dev, "the report names the real device");
        assert_eq!(r.target_kind, "block-device");
        assert!(r.key_written && r.verified);
        assert_eq!(r.used_bmap, use_bmap, "{}", image.display());
        assert_eq!(r.boot_partition, Some(boot.index));

        // Read through the device itself (what a reader of the disk sees).
        let f = fs::File::open(&lo.dev).unwrap();
        let mut got = vec![0u8; size as usize];
        f.read_exact_at(&mut got, 0).unwrap();
        drop(f);
        if use_bmap {
            assert_eq!(r.bytes_written, bm.mapped_bytes());
            // Unmapped blocks keep the old data; mapped ones hold the
            // image with the key written.
            for rg in &bm.ranges {
                let (a, b) = bm.byte_range(rg);
                let (a, b) = (a as usize, b as usize);
                assert_same(&got[a..b], &exp[a..b], "mapped range");
            }
            let at = spare.start as usize;
            assert!(
                got[at..at + 8192].iter().all(|&b| b == 0x77),
                "unmapped blocks were written"
            );
            got[at..at + 8192].fill(0);
            assert_same(&got, &exp, "device vs image + key");
        } else {
            assert_eq!(r.bytes_written, size, "all blocks written to a device");
            assert_same(&got, &exp, "device vs image + key");
        }
        // The key reads back with mtools, the FAT is clean.
        let view = dir.path().join("view.img");
        fs::write(&view, &got).unwrap();
        check_key_fat(&view, &boot, &key, dir.path());
    }
}

#[test]
#[ignore = "needs root, losetup and loop devices; scripts/test runs it"]
fn as_root_loop_device_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, b"x");
    let size = fs::metadata(&img).unwrap().len();

    // Too small: refused from sysfs before writing, even with --yes.
    let small = dir.path().join("small");
    testkit::sparse_file(&small, size - (1 << 20), &[]);
    let lo = attach(&small, false);
    let e = fails!(TargetTooSmall, &img, &lo.dev, &with_yes());
    assert!(e.is_refusal());
    assert_eq!(allocated(&small), 0, "something was written");
    drop(lo);

    // Not removable: refused without --yes.
    let big = dir.path().join("big");
    testkit::sparse_file(&big, size + (1 << 20), &[]);
    let lo = attach(&big, true);
    fails!(NotRemovable, &img, &lo.dev, &opts());

    // Busy: someone holds it exclusively (the kernel says no).
    let holder = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(&lo.dev)
        .unwrap();
    fails!(Busy, &img, &lo.dev, &with_yes());
    drop(holder);
    assert_eq!(allocated(&big), 0, "something was written");
}

#[test]
#[ignore = "needs root, losetup and loop devices with partition nodes (loopNp1); scripts/test runs it"]
fn as_root_loop_device_partition_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "disk", TableKind::Gpt, b"x");
    let size = fs::metadata(&img).unwrap().len();
    let big = dir.path().join("big");
    testkit::sparse_file(&big, size + (1 << 20), &[]);
    let lo = attach(&big, true);

    // Write it for real, then its partitions show up (partition scan):
    // a partition as target is refused without --yes.
    flash(&img, &lo.dev, &with_yes()).unwrap();
    let _ = run("blockdev", &["--rereadpt", s(&lo.dev)]);
    let part = PathBuf::from(format!("{}p1", s(&lo.dev)));
    let mut waited = 0;
    while !part.exists() && waited < 50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    if !part.exists() {
        testkit::missing(
            &format!("the partition node {}", part.display()),
            "not there after a partition rescan: no udev or devtmpfs partition nodes here",
        );
    }
    let e = fails!(IsPartition, &img, &part, &opts());
    let loop_name = lo.dev.file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.to_string().contains(&loop_name), "{e}");
}
