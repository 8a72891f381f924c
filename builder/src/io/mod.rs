//! Byte streams shared by the commands: compressed images (detected by
//! their magic, decoded one way) and sparse writing (all-zero blocks become
//! holes).

pub mod compressed;
pub mod sparse_write;

/// How many worker threads hashing, compressing and fleet builds use: the
/// cores available to this process (decided here only).
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
