//! The decrypted payload: zstd → tar → manifest.json + secrets/NAME, with
//! every limit checked before allocation. Never panics; what decodes
//! validates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealed_firstboot::bundle::Contents;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Contents::decode(data) {
        assert!(c.validate().is_ok() || c.manifest.partial);
    }
});
