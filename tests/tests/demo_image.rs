//! End to end: build the demo image with a planted marker, check it with
//! sgdisk, sfdisk, fsck.vfat and mtools, pull the bundle out of the ESP,
//! provision and unseal it on a device tree with the real sealed-firstboot,
//! decrypt the store with the age CLI, and grep everything for the marker.

#![forbid(unsafe_code)]

use sealed_image_tests::*;
use std::path::Path;
use std::process::Command;

const MARKER: &str = "MARKER-9c1e5b7a-planted-wifi-psk";
const ENV_MARKER: &str = "MARKER-44d0-env-secret";

struct Built {
    _tmp: tempfile::TempDir,
    recipe_dir: std::path::PathBuf,
    out: std::path::PathBuf,
    image: std::path::PathBuf,
    stdout: Vec<u8>,
    transcript: Transcript,
}

/// Copy the demo recipe, plant the markers, build.
fn build_demo(extra: &[&str]) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let recipe_dir = tmp.path().join("demo");
    copy_tree(&workspace().join("image-recipes/demo"), &recipe_dir);
    std::fs::write(
        recipe_dir.join("secrets/wifi_psk.txt"),
        format!("{MARKER}\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut transcript = Transcript::default();
    let built = transcript.ok(build_cmd(&recipe_dir.join("recipe.toml"), &out)
        .args(extra)
        .env("DEMO_MOTD", format!("hello\n{ENV_MARKER}\n")));
    let image = out.join("demo.img");
    Built {
        _tmp: tmp,
        recipe_dir,
        out,
        image,
        stdout: built.stdout,
        transcript,
    }
}

/// (start, size) in bytes of the partition whose GPT name is `name`.
fn partition(image: &Path, name: &str) -> (u64, u64) {
    let parts = sfdisk_partitions(image);
    let p = parts
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition named {name}: {parts:?}"));
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

#[test]
#[ignore = "needs sgdisk (gdisk), sfdisk (fdisk), fsck.vfat (dosfstools), mcopy (mtools), e2fsck (e2fsprogs), age, zstd, bmaptool (bmap-tools); scripts/test runs it"]
fn demo_image_is_sound_and_provisions_on_a_device_tree() {
    require_tools_from(&[
        ("sgdisk", "gdisk"),
        ("sfdisk", "fdisk"),
        ("fsck.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("e2fsck", "e2fsprogs"),
        ("age", "age"),
    ]);
    let mut b = build_demo(&[]);
    let t = &mut b.transcript;
    let key = b.out.join("demo.key");
    assert!(b.image.is_file());
    assert_eq!(perm_bits(&key), 0o600);

    // The image is sparse: far fewer blocks than its size.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&b.image).unwrap();
    assert!(meta.blocks() * 512 < meta.len() / 2, "image is not sparse");

    // The other outputs: checksums verify, the .zst decompresses to the
    // image, bmaptool copies it byte for byte with the .bmap, and build.json
    // describes it.
    t.ok(command("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&b.out));
    let sums = std::fs::read_to_string(b.out.join("SHA256SUMS")).unwrap();
    for f in ["demo.img", "demo.img.zst", "demo.bmap"] {
        assert!(
            sums.contains(&format!("  {f}\n")),
            "{f} not in SHA256SUMS: {sums}"
        );
    }
    assert!(!sums.contains("demo.key"));
    require_tool_from("zstd", "zstd");
    t.ok(command("zstd").arg("-t").arg(b.out.join("demo.img.zst")));
    let unpacked = b.out.join("unpacked.img");
    t.ok(command("zstd")
        .args(["-q", "-d"])
        .arg(b.out.join("demo.img.zst"))
        .arg("-o")
        .arg(&unpacked));
    assert!(std::fs::read(&unpacked).unwrap() == std::fs::read(&b.image).unwrap());
    std::fs::remove_file(&unpacked).unwrap();
    require_tool_from("bmaptool", "bmap-tools");
    let copy = b.out.join("copy.img");
    t.ok(command("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(b.out.join("demo.bmap"))
        .arg(&b.image)
        .arg(&copy));
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&b.image).unwrap());
    std::fs::remove_file(&copy).unwrap();
    let build_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out.join("build.json")).unwrap()).unwrap();
    assert_eq!(build_json["key_mode"], "separate");
    assert_eq!(build_json["key_file"], "demo.key");
    assert_eq!(build_json["secrets"].as_array().unwrap().len(), 5);
    assert_eq!(build_json["partitions"].as_array().unwrap().len(), 2);
    let outputs = field_strs(&build_json["outputs"], "name");
    assert!(
        outputs.contains(&"demo.img") && !outputs.contains(&"demo.key"),
        "{outputs:?}"
    );

    // Partition table: sgdisk finds no problem; sfdisk sees both partitions.
    let v = t.ok(command("sgdisk").arg("-v").arg(&b.image));
    let v = String::from_utf8_lossy(&v.stdout);
    assert!(v.contains("No problems found"), "sgdisk -v: {v}");
    let parts = sfdisk_partitions(&b.image);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(parts[0]["uuid"], "C0FFEE00-0000-4000-8000-00000000E5B0");

    // The ESP: fsck.vfat on the extracted partition, mtools in place.
    let (esp_start, esp_size) = partition(&b.image, "ESP");
    let esp = b.out.join("esp.part");
    std::fs::write(&esp, read_range(&b.image, esp_start, esp_size)).unwrap();
    t.ok(command("fsck.vfat").arg("-n").arg(&esp));
    std::fs::remove_file(&esp).unwrap();
    let mimg = format!("{}@@{esp_start}", b.image.display());
    let listing = t.ok(command("mdir").args(["-b", "-i", &mimg, "::/sealed-secrets"]));
    let listing = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    assert!(listing.contains("bundle"), "mdir: {listing}");
    assert!(
        !listing.contains("image.key"),
        "separate key mode put the key on the ESP"
    );
    let readme = t.ok(command("mtype").args(["-i", &mimg, "::/README.TXT"]));
    assert!(String::from_utf8_lossy(&readme.stdout).contains("sealed-image demo"));

    // The root partition is a clean ext4 with the recipe's tree.
    let (root_start, root_size) = partition(&b.image, "root");
    let rootfs = b.out.join("root.part");
    std::fs::write(&rootfs, read_range(&b.image, root_start, root_size)).unwrap();
    t.ok(command("e2fsck").arg("-fn").arg(&rootfs));
    std::fs::remove_file(&rootfs).unwrap();

    // A device tree with the ESP's sealed-secrets/ and the separate key.
    let dev = b.out.parent().unwrap().join("device");
    let boot = dev.join("boot/efi/sealed-secrets");
    copy_sealed_out(&b.image, esp_start, &["bundle"], &boot);
    std::fs::copy(&key, boot.join("image.key")).unwrap();
    device_tree(&dev, &[]);

    let fb = bin("sealed-firstboot");
    t.ok(Command::new(&fb).arg("--root").arg(&dev).arg("provision"));
    assert!(!boot.join("bundle").exists(), "bundle not wiped");
    assert!(!boot.join("image.key").exists(), "key not wiped");
    t.ok(Command::new(&fb).arg("--root").arg(&dev).arg("unseal"));

    // Every secret equals its source, with its mode.
    let src = &b.recipe_dir;
    let expect: Vec<(&str, Vec<u8>, u32)> = vec![
        ("run/secrets/wifi_psk", MARKER.as_bytes().to_vec(), 0o400),
        (
            "run/secrets/api_token",
            b"demo-api-token-0000-NOT-A-REAL-SECRET".to_vec(),
            0o440,
        ),
        (
            "run/secrets/app/app.env",
            std::fs::read(src.join("secrets/app.env")).unwrap(),
            0o400,
        ),
        (
            "run/secrets/device_tls_key",
            std::fs::read(src.join("secrets/device_tls_key.pem")).unwrap(),
            0o400,
        ),
        (
            "run/secrets/motd",
            format!("hello\n{ENV_MARKER}\n").into_bytes(),
            0o444,
        ),
    ];
    for (path, value, mode) in &expect {
        let p = dev.join(path);
        assert_eq!(&std::fs::read(&p).unwrap(), value, "{path}");
        assert_eq!(perm_bits(&p), *mode, "{path}");
    }
    assert!(std::fs::symlink_metadata(dev.join("run/secrets"))
        .unwrap()
        .file_type()
        .is_symlink());

    // The template is rendered with the secret and linked from outside /run/secrets.
    let wpa = dev.join("run/wpa_supplicant/wpa_supplicant.conf");
    let link = std::fs::read_link(&wpa).expect("template path is a symlink");
    assert!(link.starts_with("/run/secrets/"), "{link:?}");
    let rendered_path = dev.join(link.strip_prefix("/").unwrap());
    let rendered = std::fs::read_to_string(&rendered_path).unwrap();
    assert!(
        rendered.contains(&format!("psk=\"{MARKER}\"")),
        "{rendered}"
    );
    assert!(!rendered.contains("${SECRET:"), "{rendered}");
    assert_eq!(perm_bits(&rendered_path), 0o600);

    // The store holds standard age files the age CLI opens with the identity.
    let identity = dev.join("var/lib/sealed-secrets/identity");
    assert_eq!(perm_bits(&identity), 0o400);
    let store = dev.join("var/lib/sealed-secrets/current/secrets/wifi_psk.age");
    // (Deliberately outside the transcript: this prints the secret.)
    let dec = command("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&store)
        .output()
        .unwrap();
    assert_success(&dec, "age -d");
    assert_eq!(dec.stdout, MARKER.as_bytes());

    // status lists every secret with ✓ and no values.
    let st = t.ok(Command::new(&fb).arg("--root").arg(&dev).arg("status"));
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert_eq!(st.matches('✓').count(), 6, "{st}");
    // pubkey prints the recipient matching the identity file.
    let pk = t.ok(Command::new(&fb).arg("--root").arg(&dev).arg("pubkey"));
    let pk = String::from_utf8_lossy(&pk.stdout).trim().to_string();
    assert!(pk.starts_with("age1"), "{pk}");
    assert!(std::fs::read_to_string(&identity).unwrap().contains(&pk));

    // A second provision finds no bundle and changes nothing.
    t.ok(Command::new(&fb).arg("--root").arg(&dev).arg("run"));
    assert_eq!(
        std::fs::read(dev.join("run/secrets/wifi_psk")).unwrap(),
        MARKER.as_bytes()
    );

    // The markers appear nowhere in clear: not in the image, not in any
    // output file, not in the store, not in anything printed. (Only the
    // decrypted /run/secrets and the recipe's own source hold them.)
    for marker in [MARKER, ENV_MARKER] {
        assert!(
            !file_contains(&b.image, marker.as_bytes()),
            "{marker} in the image"
        );
        let hits = files_containing(&b.out, marker.as_bytes());
        assert!(hits.is_empty(), "{marker} in outputs: {hits:?}");
        let hits = files_containing(&dev.join("var"), marker.as_bytes());
        assert!(hits.is_empty(), "{marker} in the store: {hits:?}");
        let hits = files_containing(&dev.join("boot"), marker.as_bytes());
        assert!(hits.is_empty(), "{marker} on the boot partition: {hits:?}");
        assert!(
            !contains(&t.text, marker.as_bytes()),
            "{marker} printed by a command"
        );
    }
}

#[test]
fn nothing_printed_or_written_contains_a_secret() {
    let mut b = build_demo(&["--json"]);
    let t = &mut b.transcript;
    // Also `check`: `check` prints the table, never values.
    let check = t.run(
        build_image_cmd()
            .arg("check")
            .arg(b.recipe_dir.join("recipe.toml"))
            .env("DEMO_MOTD", ENV_MARKER),
    );
    assert_success(&check, "");
    let table = String::from_utf8_lossy(&check.stdout);
    assert_eq!(table.matches('✓').count(), 5, "{table}");
    let printed = &t.text;
    for marker in [MARKER, ENV_MARKER] {
        assert!(!contains(printed, marker.as_bytes()), "{marker} printed");
        assert!(
            !file_contains(&b.image, marker.as_bytes()),
            "{marker} in image"
        );
    }
    // The JSON summary names secrets and paths, never values or the key.
    let json: serde_json::Value = serde_json::from_slice(&b.stdout).expect("--json prints JSON");
    let key_text = std::fs::read_to_string(b.out.join("demo.key")).unwrap();
    let key_hex = key_text.trim().rsplit(':').next().unwrap();
    assert!(!contains(printed, key_hex.as_bytes()), "image key printed");
    assert!(
        !file_contains(&b.image, key_hex.as_bytes()),
        "image key in the image"
    );
    assert!(!contains(
        &std::fs::read(b.out.join("SHA256SUMS")).unwrap(),
        key_hex.as_bytes()
    ));
    assert_eq!(
        json["secrets"].as_array().map(|a| a.len()),
        Some(5),
        "{json}"
    );
    // DEMO_MOTD was set by build_demo: every secret is in the bundle.
    assert!(
        json["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["included"] == true),
        "{json}"
    );
}

#[test]
#[ignore = "needs mcopy (mtools); scripts/test runs it"]
fn embedded_key_mode_provisions_from_the_esp_alone() {
    require_tool_from("mcopy", "mtools");
    let mut b = build_demo(&["--embed-key"]);
    let t = &mut b.transcript;
    assert!(
        !b.out.join("demo.key").exists(),
        "embedded mode wrote a separate key"
    );
    let (esp_start, _) = partition(&b.image, "ESP");
    let dev = b.out.parent().unwrap().join("device");
    let boot = dev.join("boot/efi/sealed-secrets");
    std::fs::create_dir_all(&boot).unwrap();
    device_tree(&dev, &[]);
    copy_sealed_out(&b.image, esp_start, &["bundle", "image.key"], &boot);
    t.ok(Command::new(bin("sealed-firstboot"))
        .arg("--root")
        .arg(&dev)
        .arg("run"));
    assert_eq!(
        std::fs::read(dev.join("run/secrets/wifi_psk")).unwrap(),
        MARKER.as_bytes()
    );
    assert!(!boot.exists() || std::fs::read_dir(&boot).unwrap().next().is_none());
}

#[test]
fn missing_secrets_are_listed_together_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe_dir = tmp.path().join("demo");
    copy_tree(&workspace().join("image-recipes/demo"), &recipe_dir);
    std::fs::remove_file(recipe_dir.join("secrets/wifi_psk.txt")).unwrap();
    std::fs::remove_file(recipe_dir.join("secrets/app.env")).unwrap();
    let out = tmp.path().join("out");
    let r = build_cmd(&recipe_dir.join("recipe.toml"), &out)
        .env_remove("DEMO_MOTD")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4), "exit code for missing secrets");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("2 required secret(s) missing"), "{err}");
    assert!(err.contains("wifi_psk") && err.contains("app_env"), "{err}");
    assert!(err.contains("create the file"), "{err}");
    assert!(
        !err.contains("motd"),
        "optional secret reported missing: {err}"
    );
    assert_left_nothing(&out, "a failed build");
}

#[test]
fn unknown_recipe_field_is_a_precise_error() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe_dir = tmp.path().join("demo");
    copy_tree(&workspace().join("image-recipes/demo"), &recipe_dir);
    let p = recipe_dir.join("recipe.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("table = \"gpt\"", "table = \"gpt\"\ncolour = 1");
    std::fs::write(&p, text).unwrap();
    let r = build_cmd(&p, &tmp.path().join("out")).output().unwrap();
    assert_eq!(r.status.code(), Some(3));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("recipe.toml: line 9, column 1") && err.contains("colour"),
        "{err}"
    );
}

#[test]
fn unknown_template_placeholder_fails_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe_dir = tmp.path().join("demo");
    copy_tree(&workspace().join("image-recipes/demo"), &recipe_dir);
    std::fs::write(
        recipe_dir.join("templates/wpa_supplicant.conf"),
        "psk=${SECRET:wifi_psk} ${SECRET:no_such_secret}\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let r = build_cmd(&recipe_dir.join("recipe.toml"), &out)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(5));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("template wpa_supplicant") && err.contains("${SECRET:no_such_secret}"),
        "{err}"
    );
    assert!(!out.join("demo.img").exists());
}

#[test]
#[ignore = "needs systemd-analyze (systemd); scripts/test runs it"]
fn unit_file_passes_systemd_analyze_verify() {
    require_tool_from("systemd-analyze", "systemd");
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::copy(
        bin("sealed-firstboot"),
        root.path().join("usr/bin/sealed-firstboot"),
    )
    .unwrap();
    std::fs::copy(
        workspace().join("firstboot/sealed-firstboot.service"),
        units.join("sealed-firstboot.service"),
    )
    .unwrap();
    let verify = || {
        command("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg("sealed-firstboot.service")
            .output()
            .unwrap()
    };
    let out = verify();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {text}"
    );
    assert!(
        !text.contains("sealed-firstboot"),
        "systemd-analyze verify warned: {text}"
    );
    // The check is real: without the binary it fails.
    std::fs::remove_file(root.path().join("usr/bin/sealed-firstboot")).unwrap();
    let out = verify();
    assert!(!out.status.success(), "verify passed without the binary");
}

#[test]
#[ignore = "needs mcopy (mtools); scripts/test runs it"]
fn same_recipe_and_secrets_give_identical_images_apart_from_the_bundle() {
    require_tool_from("mcopy", "mtools");
    let build = |out: &Path| {
        let r = build_cmd(&workspace().join("image-recipes/demo/recipe.toml"), out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("DEMO_MOTD")
            .output()
            .unwrap();
        assert_success(&r, "");
        let img = out.join("demo.img");
        let (esp, _) = partition(&img, "ESP");
        copy_sealed_out(&img, esp, &["bundle"], out);
        (
            std::fs::read(&img).unwrap(),
            std::fs::read(out.join("bundle")).unwrap(),
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut a, bundle_a) = build(&tmp.path().join("a"));
    let (mut b, bundle_b) = build(&tmp.path().join("b"));
    assert_ne!(
        bundle_a, bundle_b,
        "bundle id, nonce and key must be fresh per build"
    );
    assert_eq!(bundle_a.len(), bundle_b.len());
    assert_eq!(a.len(), b.len());
    // Blank each image's bundle where it lies; everything else must match.
    for (img, bundle) in [(&mut a, &bundle_a), (&mut b, &bundle_b)] {
        let at = img
            .windows(bundle.len())
            .position(|w| w == &bundle[..])
            .expect("bundle stored contiguously in the image");
        img[at..at + bundle.len()].fill(0);
    }
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(
        first_diff, None,
        "images differ outside the bundle at byte {first_diff:?}"
    );
}
