//! Fleets at the cost of a bundle: one base image, one small directory per
//! device (`build --devices --bundles-only`), and `flash IMAGE TARGET
//! --bundle DIR` writing the base and that device's bundle and key onto the
//! boot partition, verified; checked with mtools and by provisioning a
//! device tree from what was flashed.

#![forbid(unsafe_code)]

use sealed_image_tests::*;
use std::path::Path;
use std::process::{Command, Output};

const RECIPE: &str = r#"[image]
name = "kiosk"
table = "gpt"

[[partition]]
label = "ESP"
type = "esp"
size = "32MiB"
secrets = true

[[partition]]
label = "root"
type = "linux"
size = "16MiB"

[secrets.api_token]
type = "single-line"
source = { file = "token.txt" }
"#;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    for s in [&out.stdout, &out.stderr] {
        assert!(!contains(s, b"MARKER-"), "{}", String::from_utf8_lossy(s));
    }
    out
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert_success(&out, "");
    out
}

fn esp_offset(image: &Path) -> u64 {
    let parts = sfdisk_partitions(image);
    parts[0]["start"].as_u64().unwrap() * 512
}

#[test]
#[ignore = "needs mcopy (mtools), sfdisk (fdisk), fsck.vfat (dosfstools); scripts/test runs it"]
fn flash_a_base_image_with_one_devices_bundle() {
    require_tools_from(FAT_TOOLS);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("recipe.toml"), RECIPE).unwrap();
    std::fs::write(d.join("token.txt"), "MARKER-base").unwrap();
    std::fs::write(
        d.join("devices.csv"),
        "name,api_token\nkiosk-001,MARKER-one\nkiosk-002,MARKER-two\n",
    )
    .unwrap();
    ok(build_image_cmd()
        .arg("build")
        .arg(d.join("recipe.toml"))
        .args(["--no-zst", "--out"])
        .arg(d.join("base")));
    ok(build_image_cmd()
        .arg("build")
        .arg(d.join("recipe.toml"))
        .arg("--devices")
        .arg(d.join("devices.csv"))
        .args(["--bundles-only", "--out"])
        .arg(d.join("fleet")));
    let image = d.join("base/kiosk.img");
    let dev1 = d.join("fleet/kiosk-001");

    // Another device's key with this device's bundle: refused before
    // anything is written.
    let target = d.join("sd.img");
    let out = run(build_image_cmd()
        .arg("flash")
        .arg(&image)
        .arg(&target)
        .arg("--bundle")
        .arg(&dev1)
        .arg("--key")
        .arg(d.join("fleet/kiosk-002/kiosk.key")));
    assert_exit(&out, 7, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the one the bundle is sealed to"));
    assert!(!target.exists(), "nothing may be written");

    let out = ok(build_image_cmd()
        .arg("flash")
        .arg(&image)
        .arg(&target)
        .arg("--bundle")
        .arg(&dev1)
        .arg("--json"));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["bundle_written"], true);
    assert_eq!(r["key_written"], true);
    assert_eq!(r["verified"], true);

    // The target's ESP holds exactly this device's bundle and key.
    let got = d.join("got");
    copy_sealed_out(&target, esp_offset(&target), &["bundle", "image.key"], &got);
    assert_eq!(
        std::fs::read(got.join("bundle")).unwrap(),
        std::fs::read(dev1.join("sealed-secrets/bundle")).unwrap()
    );
    assert_eq!(
        std::fs::read(got.join("image.key")).unwrap(),
        std::fs::read(dev1.join("kiosk.key")).unwrap()
    );
    // The FAT is clean after the bundle and key were written into it.
    require_tool_from("fsck.vfat", "dosfstools");
    let parts = sfdisk_partitions(&target);
    let size = parts[0]["size"].as_u64().unwrap() * 512;
    let esp = d.join("esp.vfat");
    std::fs::write(&esp, read_range(&target, esp_offset(&target), size)).unwrap();
    let fsck = command("fsck.vfat").arg("-n").arg(&esp).output().unwrap();
    assert_success(&fsck, "");

    // A device provisioned from it has kiosk-001's value.
    let root = d.join("device");
    device_tree(&root, &[]);
    let boot = root.join("boot/efi/sealed-secrets");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(got.join("bundle"), boot.join("bundle")).unwrap();
    std::fs::copy(got.join("image.key"), boot.join("image.key")).unwrap();
    firstboot_ok(&root, "run");
    assert_eq!(
        std::fs::read_to_string(root.join("run/secrets/api_token")).unwrap(),
        "MARKER-one"
    );
}
