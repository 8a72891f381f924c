//! The bmap reader: quick-xml's events into a small tree (DTDs, CDATA,
//! misnested or unclosed tags refused, each naming its line) and a strict
//! walk over the expected structure.

use super::{Bmap, BmapError, BmapRange};
use sha2::{Digest, Sha256};

/// Parse and check a bmap file's text.
pub(super) fn parse(text: &str) -> Result<Bmap, BmapError> {
    let doc = parse_document(text)?;
    build(text, &doc)
}

fn syntax(line: usize, reason: impl Into<String>) -> BmapError {
    BmapError::Syntax {
        line,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Tree

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    /// Concatenated, entity-decoded text directly inside the element.
    text: String,
    children: Vec<Element>,
    at: usize,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Element nesting deeper than this is not a bmap.
const MAX_DEPTH: usize = 16;

/// An error quick-xml reports, at the byte `at`, in our words where we
/// have them.
fn xml_error(text: &str, at: u64, e: quick_xml::Error) -> BmapError {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    let line = line_of(text, usize::try_from(at).unwrap_or(usize::MAX));
    let reason = match e {
        quick_xml::Error::Syntax(SyntaxError::UnclosedPI | SyntaxError::UnclosedXmlDecl) => {
            "unterminated <? declaration".to_string()
        }
        quick_xml::Error::Syntax(SyntaxError::UnclosedComment) => "unterminated comment".into(),
        quick_xml::Error::Syntax(SyntaxError::UnclosedTag) => "unterminated tag".into(),
        quick_xml::Error::Syntax(SyntaxError::InvalidBangMarkup) => {
            "unsupported XML construct (DTD or CDATA section)".into()
        }
        quick_xml::Error::IllFormed(IllFormedError::UnclosedReference) => {
            "'&' that does not start an entity".into()
        }
        other => format!("malformed XML: {other}"),
    };
    syntax(line, reason)
}

/// The text of a reference `&name;` at `at`: the five predefined entities
/// and character references.
fn resolve_ref(
    text: &str,
    at: usize,
    r: &quick_xml::events::BytesRef<'_>,
) -> Result<char, BmapError> {
    let line = line_of(text, at);
    let name = r
        .decode()
        .map_err(|_| syntax(line, "an entity name that is not UTF-8"))?;
    let unknown = || syntax(line, format!("unknown entity &{name};"));
    if r.is_char_ref() {
        return r.resolve_char_ref().ok().flatten().ok_or_else(unknown);
    }
    quick_xml::escape::resolve_predefined_entity(&name)
        .and_then(|s| s.chars().next())
        .ok_or_else(unknown)
}

/// The name and attributes of a start tag at `at`, checked.
fn open_tag(
    text: &str,
    at: usize,
    e: &quick_xml::events::BytesStart<'_>,
    decoder: quick_xml::encoding::Decoder,
) -> Result<Element, BmapError> {
    use quick_xml::events::attributes::AttrError;
    let line = line_of(text, at);
    let raw_name = e.name();
    let name = std::str::from_utf8(raw_name.as_ref())
        .map_err(|_| syntax(line, "a tag name that is not UTF-8"))?
        .to_string();
    if name.is_empty() {
        return Err(syntax(line, "'<' that does not start a tag"));
    }
    if !name.chars().all(is_name_char) {
        return Err(syntax(line, format!("malformed tag <{name}>")));
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| {
            let reason = match err {
                AttrError::ExpectedEq(_) | AttrError::ExpectedValue(_) => {
                    format!("an attribute of <{name}> has no value")
                }
                AttrError::UnquotedValue(_) => {
                    format!("an attribute of <{name}> is not quoted")
                }
                AttrError::ExpectedQuote(..) => {
                    format!("unterminated attribute value in <{name}>")
                }
                AttrError::Duplicated(..) => format!("an attribute repeated in <{name}>"),
            };
            syntax(line, reason)
        })?;
        let an = std::str::from_utf8(a.key.as_ref())
            .map_err(|_| syntax(line, format!("malformed attribute in <{name}>")))?
            .to_string();
        if an.is_empty() || !an.chars().all(is_name_char) {
            return Err(syntax(line, format!("malformed attribute in <{name}>")));
        }
        if a.value.contains(&b'<') {
            return Err(syntax(line, format!("'<' in the value of attribute {an}")));
        }
        let value = a
            .decode_and_unescape_value(decoder)
            .map_err(|err| match err {
                quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnterminatedEntity(_)) => {
                    syntax(line, "'&' that does not start an entity")
                }
                _ => syntax(line, format!("unknown entity in attribute {an}")),
            })?
            .into_owned();
        attrs.push((an, value));
    }
    Ok(Element {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
        at,
    })
}

/// Read the document with quick-xml into a tree of elements. The reader's
/// own end-tag checks are off: misnested, unmatched and unclosed tags are
/// reported here, with the lines of both tags.
fn parse_document(text: &str) -> Result<Element, BmapError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.allow_dangling_amp = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| xml_error(text, reader.error_position(), e))?;
        let piece = match &event {
            Event::Text(t) => {
                let raw = t
                    .decode()
                    .map_err(|_| syntax(line_of(text, at), "text that is not UTF-8"))?;
                if raw.contains('>') {
                    return Err(syntax(line_of(text, at), "stray '>' in text"));
                }
                Some(raw.into_owned())
            }
            Event::GeneralRef(r) => Some(resolve_ref(text, at, r)?.to_string()),
            _ => None,
        };
        if let Some(piece) = piece {
            match stack.last_mut() {
                Some(el) => el.text.push_str(&piece),
                None if piece.trim().is_empty() => {}
                None => return Err(syntax(line_of(text, at), "text outside the <bmap> element")),
            }
            continue;
        }
        match event {
            Event::Eof => break,
            // The declaration, processing instructions and comments carry
            // nothing we use.
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::DocType(_) | Event::CData(_) => {
                return Err(syntax(
                    line_of(text, at),
                    "unsupported XML construct (DTD or CDATA section)",
                ))
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let el = open_tag(text, at, e, reader.decoder())?;
                if stack.is_empty() && root.is_some() {
                    return Err(syntax(
                        line_of(text, at),
                        format!("a second top-level element <{}>", el.name),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(syntax(line_of(text, at), "elements nested too deeply"));
                }
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(ref e) => {
                let raw_name = e.name();
                let raw = std::str::from_utf8(raw_name.as_ref()).unwrap_or("");
                let name = raw.trim_end();
                if name.is_empty() || !name.chars().all(is_name_char) {
                    return Err(syntax(
                        line_of(text, at),
                        format!("malformed closing tag </{raw}>"),
                    ));
                }
                let el = stack.pop().ok_or_else(|| {
                    syntax(
                        line_of(text, at),
                        format!("closing tag </{name}> without an opening tag"),
                    )
                })?;
                if el.name != name {
                    return Err(syntax(
                        line_of(text, at),
                        format!(
                            "</{name}> closes <{}> opened on line {}",
                            el.name,
                            line_of(text, el.at)
                        ),
                    ));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(_) | Event::GeneralRef(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(BmapError::Unclosed {
            element: open.name.clone(),
            line: line_of(text, open.at),
        });
    }
    root.ok_or(BmapError::NoRoot)
}

// ---------------------------------------------------------------------------
// Structure and checks

fn number(text: &str, el: &Element) -> Result<u64, BmapError> {
    let v = el.text.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(
            line_of(text, el.at),
            format!("<{}> must be a decimal number, found {:?}", el.name, v),
        ));
    }
    v.parse::<u64>().map_err(|_| {
        syntax(
            line_of(text, el.at),
            format!("<{}> value {v} is too large", el.name),
        )
    })
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

fn leaf<'e>(text: &str, el: &'e Element) -> Result<&'e Element, BmapError> {
    if let Some(c) = el.children.first() {
        return Err(syntax(
            line_of(text, c.at),
            format!("unexpected <{}> inside <{}>", c.name, el.name),
        ));
    }
    Ok(el)
}

fn parse_range(text: &str, el: &Element) -> Result<BmapRange, BmapError> {
    let line = line_of(text, el.at);
    let el = leaf(text, el)?;
    let v = el.text.trim();
    let num = |s: &str| -> Result<u64, BmapError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax(
                line,
                format!("<Range> must be \"FIRST-LAST\" or \"BLOCK\" (decimal), found {v:?}"),
            ));
        }
        s.parse::<u64>()
            .map_err(|_| syntax(line, format!("block number {s} is too large")))
    };
    let (first, last) = match v.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(v)?;
            (n, n)
        }
    };
    if last < first {
        return Err(syntax(
            line,
            format!("range {first}-{last} ends before it starts"),
        ));
    }
    let sha256 = match el.attr("chksum") {
        None => None,
        Some(c) => Some(parse_sha256(c).ok_or_else(|| {
            syntax(
                line,
                format!("chksum {c:?} is not a SHA-256 (64 hex digits)"),
            )
        })?),
    };
    for (n, _) in &el.attrs {
        if *n != "chksum" {
            return Err(syntax(line, format!("unknown attribute {n} on <Range>")));
        }
    }
    Ok(BmapRange {
        first,
        last,
        sha256,
    })
}

fn build(text: &str, root: &Element) -> Result<Bmap, BmapError> {
    if root.name != "bmap" {
        return Err(syntax(
            line_of(text, root.at),
            format!("the top-level element is <{}>, not <bmap>", root.name),
        ));
    }
    if !root.text.trim().is_empty() {
        return Err(syntax(
            line_of(text, root.at),
            "text directly inside <bmap>",
        ));
    }
    let version = root
        .attr("version")
        .ok_or(BmapError::NoVersion)?
        .trim()
        .to_string();
    let major = version.split('.').next().unwrap_or("");
    if major != "2" {
        return Err(BmapError::UnsupportedVersion(version));
    }

    let mut image_size = None;
    let mut block_size = None;
    let mut blocks_count = None;
    let mut mapped_count = None;
    let mut checksum_type = None;
    let mut file_checksum = None;
    let mut block_map: Option<&Element> = None;
    for child in &root.children {
        let slot_dup = |seen: bool| -> Result<(), BmapError> {
            if seen {
                Err(syntax(
                    line_of(text, child.at),
                    format!("<{}> appears twice", child.name),
                ))
            } else {
                Ok(())
            }
        };
        let number_slot = |slot: &mut Option<u64>| -> Result<(), BmapError> {
            slot_dup(slot.is_some())?;
            *slot = Some(number(text, leaf(text, child)?)?);
            Ok(())
        };
        match child.name.as_str() {
            "ImageSize" => number_slot(&mut image_size)?,
            "BlockSize" => number_slot(&mut block_size)?,
            "BlocksCount" => number_slot(&mut blocks_count)?,
            "MappedBlocksCount" => number_slot(&mut mapped_count)?,
            "ChecksumType" => {
                slot_dup(checksum_type.is_some())?;
                checksum_type = Some(leaf(text, child)?.text.trim().to_string());
            }
            "BmapFileChecksum" => {
                slot_dup(file_checksum.is_some())?;
                file_checksum = Some((leaf(text, child)?.text.trim().to_string(), child.at));
            }
            "BlockMap" => {
                slot_dup(block_map.is_some())?;
                block_map = Some(child);
            }
            // Newer minor versions may add elements: ignore them.
            _ => {}
        }
    }
    let image_size = image_size.ok_or(BmapError::Missing("ImageSize"))?;
    let block_size = block_size.ok_or(BmapError::Missing("BlockSize"))?;
    let blocks_count = blocks_count.ok_or(BmapError::Missing("BlocksCount"))?;
    let checksum_type = checksum_type.ok_or(BmapError::Missing("ChecksumType"))?;
    let block_map = block_map.ok_or(BmapError::Missing("BlockMap"))?;

    if !checksum_type.eq_ignore_ascii_case("sha256") {
        return Err(BmapError::UnsupportedChecksumType(checksum_type));
    }
    if block_size == 0 {
        return Err(BmapError::ZeroBlockSize);
    }
    let expected_blocks = image_size.div_ceil(block_size);
    if blocks_count != expected_blocks {
        return Err(BmapError::BlocksCount {
            declared: blocks_count,
            image_size,
            expected: expected_blocks,
            block_size,
        });
    }
    if !block_map.text.trim().is_empty() {
        return Err(syntax(
            line_of(text, block_map.at),
            "text directly inside <BlockMap>",
        ));
    }

    let mut ranges: Vec<BmapRange> = Vec::with_capacity(block_map.children.len());
    for el in &block_map.children {
        if el.name != "Range" {
            return Err(syntax(
                line_of(text, el.at),
                format!("unexpected <{}> inside <BlockMap>", el.name),
            ));
        }
        let r = parse_range(text, el)?;
        if r.last >= blocks_count {
            return Err(syntax(
                line_of(text, el.at),
                format!(
                    "range {}-{} lies past the image's last block {}",
                    r.first,
                    r.last,
                    blocks_count.saturating_sub(1)
                ),
            ));
        }
        if let Some(prev) = ranges.last() {
            if r.first <= prev.last {
                return Err(syntax(
                    line_of(text, el.at),
                    format!(
                        "range {}-{} overlaps or precedes the range before it ({}-{})",
                        r.first, r.last, prev.first, prev.last
                    ),
                ));
            }
        }
        ranges.push(r);
    }
    let bmap = Bmap {
        version,
        image_size,
        block_size,
        blocks_count,
        ranges,
    };
    if let Some(m) = mapped_count {
        if m != bmap.mapped_blocks() {
            return Err(BmapError::MappedBlocksCount {
                declared: m,
                actual: bmap.mapped_blocks(),
            });
        }
    }
    if let Some((sum, at)) = file_checksum {
        let expected = parse_sha256(&sum).ok_or_else(|| {
            syntax(
                line_of(text, at),
                format!("<BmapFileChecksum> {sum:?} is not a SHA-256"),
            )
        })?;
        // As bmaptool: the checksum of the file with its own value replaced by zeros.
        let zeroed = text.replace(&sum, &"0".repeat(sum.len()));
        let actual: [u8; 32] = Sha256::digest(zeroed.as_bytes()).into();
        if actual != expected {
            return Err(BmapError::FileChecksum { expected, actual });
        }
    }
    Ok(bmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex::encode as hex;

    fn with_checksum(body: &str) -> String {
        // Fill in a correct BmapFileChecksum (the placeholder is 64 zeros).
        let sum = hex(Sha256::digest(body.as_bytes()));
        body.replace(&"0".repeat(64), &sum)
    }

    fn sample(ranges: &str, image_size: u64, blocks: u64, mapped: u64) -> String {
        format!(
            "<?xml version=\"1.0\" ?>\n<!-- comment with <tags> & stuff -->\n\
             <bmap version=\"2.0\">\n  <ImageSize> {image_size} </ImageSize>\n  \
             <BlockSize> 4096 </BlockSize>\n  <BlocksCount> {blocks} </BlocksCount>\n  \
             <MappedBlocksCount> {mapped} </MappedBlocksCount>\n  \
             <ChecksumType> sha256 </ChecksumType>\n  <BlockMap>\n{ranges}  </BlockMap>\n</bmap>\n"
        )
    }

    const SUM: &str = "b15056c9a8db77ab5708d19b7f330fe13d88eeae3d0ab271081d3438c0f46264";

    #[test]
    fn parses_ranges_and_single_blocks() {
        let text = sample(
            &format!(
                "    <Range chksum=\"{SUM}\"> 0-1 </Range>\n    <Range chksum='{SUM}'>3</Range>\n    <Range> 9 </Range>\n"
            ),
            10 * 4096 - 100,
            10,
            4,
        );
        let b = Bmap::parse(&text).unwrap();
        assert_eq!(b.image_size, 10 * 4096 - 100);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.ranges.len(), 3);
        assert_eq!((b.ranges[0].first, b.ranges[0].last), (0, 1));
        assert_eq!((b.ranges[1].first, b.ranges[1].last), (3, 3));
        assert!(b.ranges[2].sha256.is_none());
        assert_eq!(hex(b.ranges[0].sha256.unwrap()), SUM);
        // The last block is partial.
        assert_eq!(b.byte_range(&b.ranges[2]), (9 * 4096, 10 * 4096 - 100));
        assert_eq!(b.mapped_bytes(), 3 * 4096 + 4096 - 100);
        assert_eq!(b.mapped_blocks(), 4);
    }

    #[test]
    fn verifies_the_file_checksum() {
        let body = sample(
            &format!("<Range chksum=\"{SUM}\">2</Range>\n"),
            4096 * 4,
            4,
            1,
        )
        .replace(
            "<BlockMap>",
            &format!(
                "<BmapFileChecksum> {} </BmapFileChecksum>\n<BlockMap>",
                "0".repeat(64)
            ),
        );
        let good = with_checksum(&body);
        Bmap::parse(&good).unwrap();
        let tampered = good.replace(">2</Range>", ">3</Range>");
        let e = Bmap::parse(&tampered).unwrap_err().to_string();
        assert!(e.contains("checksum does not match"), "{e}");
    }

    #[test]
    fn rejects_malformed_input() {
        let ok_range = format!("<Range chksum=\"{SUM}\">1</Range>\n");
        let ok = sample(&ok_range, 8192, 2, 1);
        // A two-block image with these ranges, `mapped` blocks declared.
        let ranges = |ranges: &str, mapped: u64| sample(ranges, 8192, 2, mapped);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no <bmap>"),
            ("<bmap version=\"2.0\">".into(), "never closed"),
            (
                ok.replace("</BlockMap>", "</Blockmap>"),
                "closes <BlockMap>",
            ),
            (
                ok.replace("version=\"2.0\"", "version=\"1.4\""),
                "not supported",
            ),
            (ok.replace("sha256", "sha1"), "only sha256"),
            (sample(&ok_range, 8192, 3, 1), "<BlocksCount> is 3"),
            (sample(&ok_range, 8192, 2, 2), "<MappedBlocksCount> is 2"),
            (
                ranges("<Range>2</Range>\n", 1),
                "past the image's last block",
            ),
            (
                ranges("<Range>1</Range><Range>0</Range>\n", 2),
                "overlaps or precedes",
            ),
            (
                ranges("<Range>0-1</Range><Range>1</Range>\n", 3),
                "overlaps or precedes",
            ),
            (ranges("<Range>1-0</Range>\n", 0), "ends before"),
            (ranges("<Range>x</Range>\n", 1), "FIRST-LAST"),
            (ranges("<Range>-1</Range>\n", 1), "FIRST-LAST"),
            (
                ranges("<Range chksum=\"abc\">1</Range>\n", 1),
                "not a SHA-256",
            ),
            (ranges("<Range chksum=abc>1</Range>\n", 1), "not quoted"),
            (ok.replace(" 8192 ", " 8x92 "), "decimal number"),
            (
                ok.replace(" 8192 ", " 99999999999999999999999999 "),
                "too large",
            ),
            (
                ok.replace("<BlockSize> 4096 </BlockSize>", ""),
                "no <BlockSize>",
            ),
            (
                ok.replace(
                    "<BlockSize> 4096 </BlockSize>",
                    "<BlockSize> 4096 </BlockSize><BlockSize>4096</BlockSize>",
                ),
                "appears twice",
            ),
            (
                ok.replace("<BlockMap>", "<!DOCTYPE x><BlockMap>"),
                "unsupported XML",
            ),
            (ok.replace("</bmap>", "</bmap><bmap/>"), "second top-level"),
            (ok.replace("</bmap>", "</bmap> junk"), "text outside"),
            (
                ranges("<Range>1<x/></Range>\n", 1),
                "unexpected <x> inside <Range>",
            ),
            (
                ranges("<Other>1</Other>\n", 0),
                "unexpected <Other> inside <BlockMap>",
            ),
            (ranges("<Range>&bogus;</Range>\n", 1), "unknown entity"),
            (ok.replace("<bmap ", "<bmap version=\"2.0\" "), "repeated"),
        ];
        for (text, want) in cases {
            let e = Bmap::parse(&text).expect_err(want).to_string();
            assert!(e.contains(want), "expected {want:?} in error {e:?}");
        }
    }

    /// Each XML-level rejection names the line of the construct (here the
    /// line after `<BlockMap>`), in words of its own.
    #[test]
    fn every_xml_rejection_names_its_line() {
        let cases = [
            ("<Range>1 > 0</Range>", "stray '>'"),
            ("<!DOCTYPE x>", "unsupported XML"),
            ("<![CDATA[1]]>", "unsupported XML"),
            ("<Range a=1>1</Range>", "not quoted"),
            ("<Range a='1' a='2'>1</Range>", "repeated"),
            ("<Range a='<'>1</Range>", "'<' in the value"),
            ("<Range>&bogus;</Range>", "unknown entity"),
            ("<Range>1 & 2</Range>", "does not start an entity"),
            ("<Range a='&bogus;'>1</Range>", "unknown entity"),
            ("<Range>1</Rang>", "closes <Range> opened on line"),
            ("</Nothing>", "closes <BlockMap> opened on line"),
            ("<Ra\"nge>1</Ra\"nge>", "malformed tag"),
            ("<!-- never closed", "unterminated comment"),
            ("<?pi never closed", "unterminated <?"),
        ];
        for (piece, want) in cases {
            let text = sample(&format!("{piece}\n"), 8192, 2, 1);
            let line = text.lines().position(|l| l.starts_with(piece)).unwrap() + 1;
            let err = Bmap::parse(&text).expect_err(piece);
            match &err {
                BmapError::Syntax { line: l, reason } => {
                    assert_eq!(*l, line, "{piece}: {err}");
                    assert!(reason.contains(want), "{piece}: {err}");
                }
                other => panic!("{piece}: {other:?}"),
            }
        }
        // Closing a tag never opened, at the top level.
        let e = Bmap::parse("</bmap>").unwrap_err().to_string();
        assert!(
            e.contains("line 1: closing tag </bmap> without an opening tag"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = sample("<Range>zz</Range>\n", 8192, 2, 1);
        let err = Bmap::parse(&text).unwrap_err();
        let e = err.to_string();
        let line = text.lines().position(|l| l.contains("zz")).unwrap() + 1;
        assert!(
            matches!(err, BmapError::Syntax { line: l, .. } if l == line),
            "{err:?}"
        );
        assert!(e.starts_with(&format!("line {line}:")), "{e}");
    }

    #[test]
    fn unknown_elements_are_ignored_and_entities_decoded() {
        let text = sample(
            &format!("<Range chksum=\"{SUM}\">&#49;</Range>\n"),
            8192,
            2,
            1,
        )
        .replace(
            "<BlockMap>",
            "<FutureThing a='1'><x/></FutureThing><BlockMap>",
        );
        let b = Bmap::parse(&text).unwrap();
        assert_eq!(b.ranges[0].first, 1);
    }
}
