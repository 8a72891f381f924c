//! Benchmark helper (used by `scripts/bench`): compress an image with the
//! builder's zstd writer.
//!
//! Usage: zst_bench IMAGE OUT.zst [LEVEL [THREADS]]   (THREADS 0 = all cores)

use build_image::output::zst;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: zst_bench IMAGE OUT.zst [LEVEL [THREADS]]");
        std::process::exit(2);
    }
    let level = args
        .get(3)
        .map_or(Ok(zst::DEFAULT_LEVEL), |s| s.parse())
        .expect("LEVEL: a number");
    let threads = args
        .get(4)
        .map_or(Ok(0), |s| s.parse())
        .expect("THREADS: a number");
    let n = zst::compress_image(
        &PathBuf::from(&args[1]),
        &PathBuf::from(&args[2]),
        level,
        threads,
    )?;
    println!("{n}");
    Ok(())
}
