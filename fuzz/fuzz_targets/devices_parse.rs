//! Devices files, TOML and CSV (the first byte picks which). Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let secrets: BTreeSet<String> = ["api_token", "wifi_psk"].iter().map(|s| s.to_string()).collect();
    let path = if kind & 1 == 0 {
        Path::new("/nonexistent/devices.csv")
    } else {
        Path::new("/nonexistent/devices.toml")
    };
    let _ = build_image::recipe::devices::parse_text(text, path, &secrets);
});
