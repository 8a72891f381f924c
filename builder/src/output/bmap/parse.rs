//! The bmap reader: a tokenizer for the XML subset bmaptool writes and a
//! strict walk over the expected structure.

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
// Tokenizer

#[derive(Debug)]
enum Tok<'a> {
    Open {
        name: &'a str,
        attrs: Vec<(&'a str, String)>,
        empty: bool,
        at: usize,
    },
    Close {
        name: &'a str,
        at: usize,
    },
    Text {
        text: &'a str,
        at: usize,
    },
}

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

fn decode_entities(raw: &str, text: &str, at: usize) -> Result<String, BmapError> {
    if !raw.contains('&') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        let end = tail
            .find(';')
            .ok_or_else(|| syntax(line_of(text, at), "'&' that does not start an entity"))?;
        let ent = &tail[1..end];
        let c = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let num = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                num.and_then(char::from_u32)
                    .ok_or_else(|| syntax(line_of(text, at), format!("unknown entity &{ent};")))?
            }
        };
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn tokenize(text: &str) -> Result<Vec<Tok<'_>>, BmapError> {
    let mut toks = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    // A UTF-8 byte order mark is allowed before anything else.
    if text.starts_with('\u{feff}') {
        i = 3;
    }
    while i < b.len() {
        if b[i] != b'<' {
            let end = text[i..].find('<').map_or(b.len(), |p| i + p);
            let raw = &text[i..end];
            if raw.contains('>') {
                return Err(syntax(line_of(text, i), "stray '>' in text"));
            }
            toks.push(Tok::Text { text: raw, at: i });
            i = end;
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with("<?") {
            let end = rest
                .find("?>")
                .ok_or_else(|| syntax(line_of(text, i), "unterminated <? declaration"))?;
            // The declaration and processing instructions carry nothing we use.
            i += end + 2;
        } else if let Some(comment) = rest.strip_prefix("<!--") {
            let end = comment
                .find("-->")
                .ok_or_else(|| syntax(line_of(text, i), "unterminated comment"))?;
            i += 4 + end + 3;
        } else if rest.starts_with("<!") {
            return Err(syntax(
                line_of(text, i),
                "unsupported XML construct (DTD or CDATA section)",
            ));
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r
                .find('>')
                .ok_or_else(|| syntax(line_of(text, i), "unterminated closing tag"))?;
            let name = r[..end].trim_end();
            if name.is_empty() || !name.chars().all(is_name_char) {
                return Err(syntax(
                    line_of(text, i),
                    format!("malformed closing tag </{}>", &r[..end]),
                ));
            }
            toks.push(Tok::Close { name, at: i });
            i += 2 + end + 1;
        } else {
            let (tok, len) = open_tag(text, i)?;
            toks.push(tok);
            i += len;
        }
    }
    Ok(toks)
}

/// Parse `<name a="v" b='w'>` or `<name/>` at `at`; returns the token and
/// its length in bytes.
fn open_tag(text: &str, at: usize) -> Result<(Tok<'_>, usize), BmapError> {
    let line = line_of(text, at);
    let s = &text[at + 1..];
    let name_len = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
    let name = &s[..name_len];
    if name.is_empty() {
        return Err(syntax(line, "'<' that does not start a tag"));
    }
    let mut p = name_len;
    let mut attrs = Vec::new();
    loop {
        let ws = s[p..]
            .find(|c: char| !c.is_ascii_whitespace())
            .ok_or_else(|| syntax(line, format!("unterminated tag <{name}")))?;
        let had_ws = ws > 0;
        p += ws;
        let r = &s[p..];
        // `/>` or `>`: the tag ends (its length counts the leading '<').
        let end = if r.starts_with("/>") {
            Some((true, 2))
        } else if r.starts_with('>') {
            Some((false, 1))
        } else {
            None
        };
        if let Some((empty, close_len)) = end {
            let tok = Tok::Open {
                name,
                attrs,
                empty,
                at,
            };
            return Ok((tok, 1 + p + close_len));
        }
        if !had_ws {
            return Err(syntax(line, format!("malformed tag <{name}")));
        }
        let an_len = r.find(|c: char| !is_name_char(c)).unwrap_or(r.len());
        let an = &r[..an_len];
        if an.is_empty() {
            return Err(syntax(line, format!("malformed attribute in <{name}>")));
        }
        p += an_len;
        let r = s[p..].trim_start();
        p = s.len() - r.len();
        let r = r
            .strip_prefix('=')
            .ok_or_else(|| syntax(line, format!("attribute {an} of <{name}> has no value")))?;
        p += 1;
        let r2 = r.trim_start();
        p += r.len() - r2.len();
        let quote = r2
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| syntax(line, format!("attribute {an} of <{name}> is not quoted")))?;
        let vend = r2[1..]
            .find(quote)
            .ok_or_else(|| syntax(line, format!("unterminated value of attribute {an}")))?;
        let raw = &r2[1..1 + vend];
        if raw.contains('<') {
            return Err(syntax(line, format!("'<' in the value of attribute {an}")));
        }
        if attrs.iter().any(|(n, _)| *n == an) {
            return Err(syntax(line, format!("attribute {an} repeated in <{name}>")));
        }
        attrs.push((an, decode_entities(raw, text, at)?));
        p += 1 + vend + 1;
    }
}

// ---------------------------------------------------------------------------
// Tree

#[derive(Debug)]
struct Element<'a> {
    name: &'a str,
    attrs: Vec<(&'a str, String)>,
    /// Concatenated, entity-decoded text directly inside the element.
    text: String,
    children: Vec<Element<'a>>,
    at: usize,
}

impl Element<'_> {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Element nesting deeper than this is not a bmap.
const MAX_DEPTH: usize = 16;

fn parse_document(text: &str) -> Result<Element<'_>, BmapError> {
    let toks = tokenize(text)?;
    let mut stack: Vec<Element<'_>> = Vec::new();
    let mut root: Option<Element<'_>> = None;
    for tok in toks {
        match tok {
            Tok::Text { text: t, at } => match stack.last_mut() {
                Some(el) => el.text.push_str(&decode_entities(t, text, at)?),
                None if t.trim().is_empty() => {}
                None => return Err(syntax(line_of(text, at), "text outside the <bmap> element")),
            },
            Tok::Open {
                name,
                attrs,
                empty,
                at,
            } => {
                if stack.is_empty() && root.is_some() {
                    return Err(syntax(
                        line_of(text, at),
                        format!("a second top-level element <{name}>"),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(syntax(line_of(text, at), "elements nested too deeply"));
                }
                let el = Element {
                    name,
                    attrs,
                    text: String::new(),
                    children: Vec::new(),
                    at,
                };
                if empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Tok::Close { name, at } => {
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
        }
    }
    if let Some(open) = stack.last() {
        return Err(BmapError::Unclosed {
            element: open.name.to_string(),
            line: line_of(text, open.at),
        });
    }
    root.ok_or(BmapError::NoRoot)
}

// ---------------------------------------------------------------------------
// Structure and checks

fn number(text: &str, el: &Element<'_>) -> Result<u64, BmapError> {
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
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

fn leaf<'e>(text: &str, el: &'e Element<'e>) -> Result<&'e Element<'e>, BmapError> {
    if let Some(c) = el.children.first() {
        return Err(syntax(
            line_of(text, c.at),
            format!("unexpected <{}> inside <{}>", c.name, el.name),
        ));
    }
    Ok(el)
}

fn parse_range(text: &str, el: &Element<'_>) -> Result<BmapRange, BmapError> {
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

fn build(text: &str, root: &Element<'_>) -> Result<Bmap, BmapError> {
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
    let mut block_map: Option<&Element<'_>> = None;
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
        match child.name {
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
    use crate::output::bmap::hex;

    fn with_checksum(body: &str) -> String {
        // Fill in a correct BmapFileChecksum (the placeholder is 64 zeros).
        let sum = hex(&Sha256::digest(body.as_bytes()));
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
        assert_eq!(hex(&b.ranges[0].sha256.unwrap()), SUM);
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
