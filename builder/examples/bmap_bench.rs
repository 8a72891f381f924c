//! Benchmark helper (used by `scripts/bench`): write an image's bmap with
//! the builder's writer.
//!
//! Usage: bmap_bench IMAGE OUT.bmap

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: bmap_bench IMAGE OUT.bmap");
        std::process::exit(2);
    }
    let s =
        build_image::output::bmap::write_bmap(&PathBuf::from(&args[1]), &PathBuf::from(&args[2]))?;
    println!(
        "{} of {} blocks mapped",
        s.mapped_blocks_count, s.blocks_count
    );
    Ok(())
}
