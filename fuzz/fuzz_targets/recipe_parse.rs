//! Recipe parsing and validation (the secrets' device rules included), and
//! the layout rules `build` adds. Never panics.
#![no_main]
use build_image::recipe::Recipe;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Recipe::parse(text, Path::new("/nonexistent/recipe.toml")) {
        let _ = r.validate_layout();
        for (name, s) in &r.secrets {
            let _ = r.secret_entry(name, s);
        }
    }
});
