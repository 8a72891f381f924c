//! bmap files (bmaptool format 1.x/2.x) as `flash` reads them. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(b) = build_image::cmd::flash::Bmap::parse(text) {
            let _ = b.mapped_bytes();
        }
    }
});
