//! Compressed images: `.img.zst` (what build-image writes) and `.img.xz`
//! (what Raspberry Pi OS and many vendors publish), recognised by their
//! magic numbers rather than their names.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The zstd frame magic number, little-endian.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The xz stream header magic.
pub const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
/// zstd windows up to 2 GiB (images compressed with `--long`).
const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// How an image file is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Zstd,
    Xz,
}

impl Format {
    /// From the first bytes of a file.
    pub fn of_magic(head: &[u8]) -> Format {
        if head.starts_with(&ZSTD_MAGIC) {
            Format::Zstd
        } else if head.starts_with(&XZ_MAGIC) {
            Format::Xz
        } else {
            Format::Raw
        }
    }

    /// Read the magic of the file at `path`.
    pub fn detect(path: &Path) -> io::Result<Format> {
        Format::read(&mut File::open(path)?)
    }

    /// Read the magic at the current position of `file`.
    fn read(file: &mut File) -> io::Result<Format> {
        let mut head = [0u8; 6];
        let got = super::read_full(file, &mut head)?;
        Ok(Format::of_magic(&head[..got]))
    }

    pub fn is_compressed(self) -> bool {
        self != Format::Raw
    }
}

/// A decoding reader over `file` (which must be at its start).
pub fn decoder(file: File, format: Format) -> io::Result<Box<dyn Read + Send>> {
    Ok(match format {
        Format::Raw => Box::new(file),
        Format::Zstd => {
            let mut dec = zstd::stream::read::Decoder::new(file)?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(dec)
        }
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            BufReader::with_capacity(1 << 20, file),
        )),
    })
}

/// Open `path` (once) and decode it as its magic says.
pub fn open(path: &Path) -> io::Result<(Format, Box<dyn Read + Send>)> {
    let mut file = File::open(path)?;
    let format = Format::read(&mut file)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((format, decoder(file, format)?))
}

/// An image file name split by its suffixes: `foo.img.zst` → `foo`, `.img`,
/// zstd; `foo.xz` → `foo`, xz; `foo.img` and `foo` → `foo`, raw. The one
/// place image names are taken apart (`inject`'s outputs, `flash`'s bmap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageName<'a> {
    /// The name without `.img` and the compression suffix.
    pub stem: &'a str,
    /// Whether `.img` came before the compression suffix (or ended the name).
    pub img: bool,
    /// What the name says it is: `.zst` zstd, `.xz` xz, anything else raw.
    pub format: Format,
}

impl ImageName<'_> {
    pub fn parse(name: &str) -> ImageName<'_> {
        let (rest, format) = if let Some(r) = name.strip_suffix(".zst") {
            (r, Format::Zstd)
        } else if let Some(r) = name.strip_suffix(".xz") {
            (r, Format::Xz)
        } else {
            (name, Format::Raw)
        };
        match rest.strip_suffix(".img") {
            Some(stem) => ImageName {
                stem,
                img: true,
                format,
            },
            None => ImageName {
                stem: rest,
                img: false,
                format,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_format_decodes_to_the_same_bytes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (dir, raw) = testkit::scratch("a.img");
        std::fs::write(&raw, &data).unwrap();
        let zst = dir.path().join("a.img.zst");
        std::fs::write(&zst, zstd::bulk::compress(&data, 3).unwrap()).unwrap();
        let xz = dir.path().join("a.img.xz");
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&data).unwrap();
        std::fs::write(&xz, enc.finish().unwrap()).unwrap();
        for (path, want) in [(&raw, Format::Raw), (&zst, Format::Zstd), (&xz, Format::Xz)] {
            let (format, mut r) = open(path).unwrap();
            assert_eq!(format, want);
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, data, "{}", path.display());
        }
        // A truncated stream is an error, not a short image.
        let bytes = std::fs::read(&xz).unwrap();
        std::fs::write(&xz, &bytes[..bytes.len() / 2]).unwrap();
        let (_, mut r) = open(&xz).unwrap();
        assert!(
            matches!(r.read_to_end(&mut Vec::new()), Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        );
    }

    #[test]
    fn image_names_split_into_stem_and_suffixes() {
        let n = |s| {
            let n = ImageName::parse(s);
            (n.stem, n.img, n.format)
        };
        assert_eq!(n("a.img.zst"), ("a", true, Format::Zstd));
        assert_eq!(n("a.zst"), ("a", false, Format::Zstd));
        assert_eq!(n("d/a.img.xz"), ("d/a", true, Format::Xz));
        assert_eq!(n("a.xz"), ("a", false, Format::Xz));
        assert_eq!(n("a.img"), ("a", true, Format::Raw));
        assert_eq!(n("a.img.img"), ("a.img", true, Format::Raw));
        assert_eq!(n("a"), ("a", false, Format::Raw));
    }
}
