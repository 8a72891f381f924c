//! Every shipped recipe builds, and its image passes the partition and
//! filesystem tools.

#![forbid(unsafe_code)]

use sealed_image_tests::*;

#[test]
#[ignore = "needs sfdisk (fdisk), fsck.vfat (dosfstools), mtype (mtools), e2fsck (e2fsprogs); scripts/test runs it"]
fn raspberry_pi_recipe_builds_an_mbr_image() {
    let tools = [
        ("sfdisk", "fdisk"),
        ("fsck.vfat", "dosfstools"),
        ("mtype", "mtools"),
        ("e2fsck", "e2fsprogs"),
    ];
    require_tools_from(&tools);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = build_cmd(
        &workspace().join("image-recipes/raspberry-pi/recipe.toml"),
        &out,
    )
    .env("WIFI_PSK", "MARKER-pi-psk")
    .env("PI_PASSWORD", "MARKER-pi-password")
    .output()
    .unwrap();
    assert_success(&r, "");
    let img = out.join("pi.img");
    let t = sfdisk_table(&img);
    assert_eq!(
        (t["label"].as_str(), t["id"].as_str()),
        (Some("dos"), Some("0x5ea1ed01")),
        "{t}"
    );
    // (type, boot flag) of each partition: a bootable FAT, then Linux.
    let parts = t["partitions"].as_array().unwrap();
    let kinds: Vec<(&str, bool)> = parts
        .iter()
        .map(|p| (p["type"].as_str().unwrap(), p["bootable"] == true))
        .collect();
    assert_eq!(kinds, [("c", true), ("83", false)], "{t}");
    run_ok("sfdisk", &["--verify", s(&img)]);

    // Partition `i` copied out to `name`: its byte offset, and the copy.
    let part = |i: usize, name: &str| {
        let start = parts[i]["start"].as_u64().unwrap() * 512;
        let copy = tmp.path().join(name);
        extract(&img, start, parts[i]["size"].as_u64().unwrap() * 512, &copy);
        (start, copy)
    };
    let (start, fat) = part(0, "boot.part");
    run_ok("fsck.vfat", &["-n", s(&fat)]);
    let label = stdout(&run(
        "mlabel",
        &["-s", "-i", &format!("{}@@{start}", img.display()), "::"],
    ));
    assert!(label.contains("BOOTFS"), "{label}");
    assert!(fat_file(&img, start, "/config.txt").contains("arm_64bit=1"));

    let (_, rootfs) = part(1, "root.part");
    run_ok("e2fsck", &["-fn", s(&rootfs)]);

    for m in ["MARKER-pi-psk", "MARKER-pi-password"] {
        assert!(!file_contains(&img, m.as_bytes()), "{m} in clear");
        assert!(!contains(&r.stderr, m.as_bytes()) && !contains(&r.stdout, m.as_bytes()));
    }

    // inspect reads the MBR image and the bundle header, and with the key
    // the manifest (names only).
    let build_image = bin("build-image");
    let key = out.join("pi.key");
    let i = run_ok(
        &build_image,
        &["inspect", s(&img), "--key", s(&key), "--json"],
    );
    assert!(!contains(&i.stdout, b"MARKER"));
    let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["table"], "mbr");
    assert_eq!(j["boot_partition"], 1);
    assert_eq!(j["bundle"]["sealed_to"], "image-key");
    let names = field_strs(&j["manifest"]["secrets"], "name");
    assert_eq!(names, ["pi_password", "wifi_psk"]);
    // With a wrong key, inspect refuses rather than guessing.
    let wrong = write_file(
        &tmp,
        "wrong.key",
        "SEALED-IMAGE-KEY-1:0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    let i = run(&build_image, &["inspect", s(&img), "--key", s(&wrong)]);
    assert!(!i.status.success());
    assert!(stderr(&i).contains("wrong image key"));
}
