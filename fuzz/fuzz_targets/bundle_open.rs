//! Bundle open: header parsing, size checks and authentication, with a
//! fixed image key and a fixed device identity (a test identity, not a
//! secret). Never panics; whatever opens holds a valid manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealed_firstboot::bundle::{open, open_with, Header, ImageKey, OpenWith};
use std::str::FromStr;

const TEST_IDENTITY: &str = "AGE-SECRET-KEY-1MLL3RHSZHKY05RK59AXL305S3EF9L3U9SXEP08ECUD0WVGT7YMPSZ7RFFY";

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let key = ImageKey::from_bytes(&[7u8; 32]);
    if let Ok(opened) = open(data, &key) {
        assert!(opened.contents.manifest.validate().is_ok());
    }
    if let Ok(id) = age::x25519::Identity::from_str(TEST_IDENTITY) {
        let _ = open_with(data, OpenWith::Identity(&id));
    }
    let _ = ImageKey::from_file_text(data);
});
