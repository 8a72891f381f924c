//! Bundle open: header parsing (formats 2 and 3), size checks, the
//! signature (verified before anything is decrypted, with a signer
//! pinned and without), authentication, key files, signing key files and
//! signer strings, with a fixed image key, a fixed device identity and a
//! fixed signing key (test keys, not secrets). Never panics; whatever
//! opens holds a valid manifest, and with the signer pinned was signed by it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealed_bundle::{
    open, open_with, verify, Header, ImageKey, OpenWith, PathPolicy, Policy, Signer, SigningKey,
};
use std::str::FromStr;

const TEST_IDENTITY: &str = "AGE-SECRET-KEY-1MLL3RHSZHKY05RK59AXL305S3EF9L3U9SXEP08ECUD0WVGT7YMPSZ7RFFY";
/// The key of seeds/bundle_open/signed.bundle (32 bytes of 0x09).
const TEST_SIGNING_KEY: &str =
    "SEALED-SIGNING-KEY-1:0909090909090909090909090909090909090909090909090909090909090909";

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let key = ImageKey::from_bytes(&[7u8; 32]);
    if let Ok(opened) = open(data, &key) {
        assert!(opened.contents.manifest.validate(&PathPolicy::strict()).is_ok());
    }
    if let Ok(signing) = SigningKey::from_file_text(TEST_SIGNING_KEY.as_bytes()) {
        let policy = Policy {
            signers: vec![signing.signer()],
            paths: PathPolicy::strict(),
        };
        if let Ok(header) = verify(data, &policy) {
            assert_eq!(header.signer, Some(signing.signer()));
        }
        if let Ok(opened) = open_with(data, OpenWith::ImageKey(&key), &policy) {
            assert_eq!(opened.header.signer, Some(signing.signer()));
        }
    }
    if let Ok(id) = age::x25519::Identity::from_str(TEST_IDENTITY) {
        let _ = open_with(data, OpenWith::Identity(&id), &Policy::default());
    }
    let _ = ImageKey::from_file_text(data);
    let _ = SigningKey::from_file_text(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Signer::from_str(text);
    }
});
