//! The decrypted payload: zstd → tar → manifest.json + secrets/NAME, with
//! every limit checked before allocation, validated as a whole (paths,
//! modes, templates rendered, what unseals together bounded). Never
//! panics; what decodes validates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealed_bundle::{Contents, PathPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Contents::decode(data, &PathPolicy::strict()) {
        assert!(c.validate(&PathPolicy::strict()).is_ok());
    }
});
