//! Disk image assembly (owned by the image helper).
