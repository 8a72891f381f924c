//! /etc/sealed-firstboot.conf as the device parses it (boot_dir, identity,
//! signer and allow_path lines), and a bundle's signer list. Never
//! panics; what parses gives a usable path policy.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(config) = sealed_bundle::config::parse(&text) {
        let policy = config.path_policy();
        assert_eq!(policy.allowed(), &config.allow_paths[..]);
        let _ = policy.check("/run/systemd/system/x.service");
    }
    let list: Vec<String> = text.lines().map(str::to_owned).collect();
    let _ = sealed_bundle::check_signers(&list);
});
