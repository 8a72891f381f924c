//! What inject and inspect read of an image: the partition table (GPT or
//! MBR with EBR chains), the boot partition choice and its FAT. The input
//! is written to a file (images are files). Never panics.
#![no_main]
use build_image::image::{self, PartitionSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = tempfile::NamedTempFile::new() else {
        return;
    };
    use std::io::Write;
    if f.write_all(data).is_err() {
        return;
    }
    let Ok(info) = image::read_table(f.path()) else {
        return;
    };
    for sel in [PartitionSelector::Auto, PartitionSelector::Index(1), PartitionSelector::Label("bootfs".into())] {
        if let Ok(part) = image::find_boot_partition(&info, &sel) {
            let _ = image::fat_read_file(f.path(), &part, "sealed-secrets/bundle");
            let _ = image::fat_read_file(f.path(), &part, "config.txt");
        }
    }
});
