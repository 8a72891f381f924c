//! Every shipped recipe builds, and its image passes the partition and
//! filesystem tools.

use sealed_image_tests::*;
use std::process::Command;

#[test]
fn raspberry_pi_recipe_builds_an_mbr_image() {
    if !require_tools_from(&[
        ("sfdisk", "fdisk"),
        ("fsck.vfat", "dosfstools"),
        ("mtype", "mtools"),
        ("e2fsck", "e2fsprogs"),
    ]) {
        return;
    }
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
    let o = command("sfdisk").arg("--json").arg(&img).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0x5ea1ed01");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[1]["type"], "83");
    let verify = command("sfdisk")
        .arg("--verify")
        .arg(&img)
        .output()
        .unwrap();
    assert_success(&verify, "");

    let start = parts[0]["start"].as_u64().unwrap() * 512;
    let size = parts[0]["size"].as_u64().unwrap() * 512;
    let fat = tmp.path().join("boot.part");
    std::fs::write(&fat, read_range(&img, start, size)).unwrap();
    let f = command("fsck.vfat").arg("-n").arg(&fat).output().unwrap();
    assert_success(&f, "");
    let label = command("mlabel")
        .args(["-s", "-i"])
        .arg(format!("{}@@{start}", img.display()))
        .arg("::")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&label.stdout).contains("BOOTFS"),
        "{}",
        String::from_utf8_lossy(&label.stdout)
    );
    let cfg = command("mtype")
        .args([
            "-i",
            &format!("{}@@{start}", img.display()),
            "::/config.txt",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&cfg.stdout).contains("arm_64bit=1"));

    let rstart = parts[1]["start"].as_u64().unwrap() * 512;
    let rsize = parts[1]["size"].as_u64().unwrap() * 512;
    let rootfs = tmp.path().join("root.part");
    std::fs::write(&rootfs, read_range(&img, rstart, rsize)).unwrap();
    let e = command("e2fsck").arg("-fn").arg(&rootfs).output().unwrap();
    assert_success(&e, "");

    for m in ["MARKER-pi-psk", "MARKER-pi-password"] {
        assert!(!file_contains(&img, m.as_bytes()), "{m} in clear");
        assert!(!contains(&r.stderr, m.as_bytes()) && !contains(&r.stdout, m.as_bytes()));
    }

    // inspect reads the MBR image and the bundle header, and with the key
    // the manifest (names only).
    let i = Command::new(bin("build-image"))
        .arg("inspect")
        .arg(&img)
        .arg("--key")
        .arg(out.join("pi.key"))
        .arg("--json")
        .output()
        .unwrap();
    assert_success(&i, "");
    assert!(!contains(&i.stdout, b"MARKER"));
    let j: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(j["table"], "mbr");
    assert_eq!(j["boot_partition"], 1);
    assert_eq!(j["bundle"]["sealed_to"], "image-key");
    let names: Vec<&str> = j["manifest"]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pi_password", "wifi_psk"]);
    // With a wrong key, inspect refuses rather than guessing.
    let wrong = tmp.path().join("wrong.key");
    std::fs::write(
        &wrong,
        "SEALED-IMAGE-KEY-1:0000000000000000000000000000000000000000000000000000000000000000\n",
    )
    .unwrap();
    let i = Command::new(bin("build-image"))
        .arg("inspect")
        .arg(&img)
        .arg("--key")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!i.status.success());
    assert!(String::from_utf8_lossy(&i.stderr).contains("wrong image key"));
}
