//! Benchmark helper (used by `scripts/bench`): copy a sparse image with the
//! builder's hole-keeping copy.
//!
//! Usage: sparse_copy_bench SRC DST

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: sparse_copy_bench SRC DST");
        std::process::exit(2);
    }
    let n =
        build_image::io::sparse::sparse_copy(&PathBuf::from(&args[1]), &PathBuf::from(&args[2]))?;
    println!("{n}");
    Ok(())
}
