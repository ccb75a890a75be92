//! Strict reading of metadata JSON, the checks `serde_json` does not make: no object may repeat
//! a key (Go keeps the last value of a repeated key and `serde_json` too, but any reader that
//! keeps the first would see another file), nesting is bounded, and the text of the envelope's
//! `signed` value is located so that it can be compared with its canonical form.
//!
//! The scanner is a recursive descent whose depth is bounded by [`MAX_DEPTH`], so hostile input
//! cannot exhaust the stack; its work is O(n log k) in the input (k: the keys of one object).

use std::borrow::Cow;
use std::ops::Range;

use crate::canonical::CanonicalError;

/// Deepest nesting of objects and arrays accepted. Notary metadata nests at most seven levels
/// (envelope, `signed`, `delegations`, `roles`, a role, its `paths`); `custom` target data may
/// nest further, and 32 leaves ample room.
pub const MAX_DEPTH: usize = 32;

/// The fewest input bytes per JSON value accepted, beyond [`SMALL_FILE_VALUES`]. A parsed value
/// costs tens of bytes of memory however short its text (`[]` is two bytes), so without this
/// bound a body of empty arrays parses into twenty times its size. Real metadata spends more
/// than 12 bytes per value even in its densest parts (delegation roles with empty lists), and
/// a target entry about 28.
pub const MIN_BYTES_PER_VALUE: usize = 8;
/// Values any file may hold whatever its size, so that tiny files are never refused as dense.
pub const SMALL_FILE_VALUES: usize = 64;

/// Why metadata JSON was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// Not JSON (or not UTF-8).
    #[error("invalid JSON at byte {0}")]
    Syntax(usize),
    /// An object repeats a key.
    #[error("an object repeats the key {0:?}")]
    DuplicateKey(String),
    /// Objects and arrays nest too deeply.
    #[error("JSON nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Too many values for the size of the input.
    #[error(
        "{values} JSON values in {bytes} bytes is denser than metadata is (at most one per {MIN_BYTES_PER_VALUE} bytes)"
    )]
    TooDense {
        /// Values found.
        values: usize,
        /// Input size.
        bytes: usize,
    },
}

/// What a successful scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Where the value of the top-level object's `signed` member lies, if there is one.
    pub signed: Option<Range<usize>>,
    /// How many JSON values the input holds (every scalar, object and array counts one).
    pub values: usize,
}

/// Checks `bytes` as one JSON value (surrounding whitespace allowed): valid UTF-8 and JSON, no
/// repeated object keys, nesting within [`MAX_DEPTH`].
pub fn scan(bytes: &[u8]) -> Result<Scan, StrictError> {
    std::str::from_utf8(bytes).map_err(|error| StrictError::Syntax(error.valid_up_to()))?;
    let mut scanner = Scanner { bytes, pos: 0, values: 0, signed: None };
    scanner.whitespace();
    scanner.value(0)?;
    scanner.whitespace();
    if scanner.pos != bytes.len() {
        return Err(StrictError::Syntax(scanner.pos));
    }
    if scanner.values > bytes.len() / MIN_BYTES_PER_VALUE + SMALL_FILE_VALUES {
        return Err(StrictError::TooDense { values: scanner.values, bytes: bytes.len() });
    }
    Ok(Scan { signed: scanner.signed, values: scanner.values })
}

/// Checks keys that are not in ascending order for repeats; O(k log k).
fn no_repeats(mut keys: Vec<Cow<'_, [u8]>>) -> Result<(), StrictError> {
    keys.sort_unstable();
    match keys.windows(2).find_map(|pair| pair.split_first().filter(|(first, rest)| rest.first() == Some(first))) {
        // The key was decoded from valid UTF-8 input, so the lossy conversion is exact.
        Some((repeated, _)) => Err(StrictError::DuplicateKey(String::from_utf8_lossy(repeated).into_owned())),
        None => Ok(()),
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    values: usize,
    signed: Option<Range<usize>>,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, StrictError> {
        let byte = self.peek().ok_or(StrictError::Syntax(self.pos))?;
        self.pos += 1;
        Ok(byte)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), StrictError> {
        let at = self.pos;
        if self.next()? == wanted { Ok(()) } else { Err(StrictError::Syntax(at)) }
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), StrictError> {
        self.values = self.values.saturating_add(1);
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(false).map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(StrictError::Syntax(self.pos)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), StrictError> {
        if depth > MAX_DEPTH {
            return Err(StrictError::TooDeep);
        }
        self.expect(b'{')?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        // Keys in order of appearance; `sorted` while each is greater than the one before, which
        // is the case for canonical JSON and rules out repeats without any further work.
        let mut keys: Vec<Cow<'a, [u8]>> = Vec::new();
        let mut sorted = true;
        loop {
            self.whitespace();
            let key = self.string(true)?;
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            let start = self.pos;
            self.value(depth)?;
            if depth == 1 && key.as_ref() == b"signed" {
                self.signed = Some(start..self.pos);
            }
            sorted = sorted && keys.last().is_none_or(|last| *last < key);
            keys.push(key);
            self.whitespace();
            match self.next()? {
                b',' => continue,
                b'}' => return if sorted { Ok(()) } else { no_repeats(keys) },
                _ => return Err(StrictError::Syntax(self.pos - 1)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), StrictError> {
        if depth > MAX_DEPTH {
            return Err(StrictError::TooDeep);
        }
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.whitespace();
            self.value(depth)?;
            self.whitespace();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(()),
                _ => return Err(StrictError::Syntax(self.pos - 1)),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), StrictError> {
        let end = self.pos.saturating_add(word.len());
        if self.bytes.get(self.pos..end) != Some(word) {
            return Err(StrictError::Syntax(self.pos));
        }
        self.pos = end;
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), StrictError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(StrictError::Syntax(self.pos)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(StrictError::Syntax(self.pos));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(StrictError::Syntax(self.pos));
            }
        }
        Ok(())
    }

    /// Reads a string; with `decode`, returns its decoded bytes (borrowed when it has no
    /// escapes), otherwise an empty value.
    fn string(&mut self, decode: bool) -> Result<Cow<'a, [u8]>, StrictError> {
        let bytes = self.bytes;
        self.expect(b'"')?;
        let start = self.pos;
        let mut decoded: Option<Vec<u8>> = None;
        loop {
            // Skip a run of plain bytes at once.
            let rest = bytes.get(self.pos..).unwrap_or_default();
            let run = rest.iter().position(|byte| matches!(byte, b'"' | b'\\' | 0..0x20)).unwrap_or(rest.len());
            if let Some(owned) = decoded.as_mut() {
                owned.extend_from_slice(rest.get(..run).unwrap_or_default());
            }
            self.pos += run;
            let at = self.pos;
            match self.next()? {
                b'"' => {
                    return Ok(match decoded {
                        Some(owned) => Cow::Owned(owned),
                        None if decode => Cow::Borrowed(bytes.get(start..at).unwrap_or_default()),
                        None => Cow::Borrowed(&[]),
                    });
                }
                b'\\' => {
                    let unescaped = self.escape()?;
                    if decode {
                        let owned = decoded.get_or_insert_with(|| bytes.get(start..at).unwrap_or_default().to_vec());
                        let mut buffer = [0u8; 4];
                        owned.extend_from_slice(unescaped.encode_utf8(&mut buffer).as_bytes());
                    }
                }
                byte if byte < 0x20 => return Err(StrictError::Syntax(at)),
                byte => {
                    if let Some(owned) = decoded.as_mut() {
                        owned.push(byte);
                    }
                }
            }
        }
    }

    /// Reads the rest of an escape sequence (after the backslash).
    fn escape(&mut self) -> Result<char, StrictError> {
        let at = self.pos;
        Ok(match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                if (0xD800..0xDC00).contains(&first) {
                    self.expect(b'\\')?;
                    self.expect(b'u')?;
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(StrictError::Syntax(at));
                    }
                    let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    char::from_u32(code).ok_or(StrictError::Syntax(at))?
                } else {
                    char::from_u32(first).ok_or(StrictError::Syntax(at))?
                }
            }
            _ => return Err(StrictError::Syntax(at)),
        })
    }

    fn hex4(&mut self) -> Result<u32, StrictError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let at = self.pos;
            let digit = char::from(self.next()?).to_digit(16).ok_or(StrictError::Syntax(at))?;
            code = code * 16 + digit;
        }
        Ok(code)
    }
}

/// The escapes Go's encoder writes when it copies JSON text (`json.Marshal` of a
/// `json.RawMessage`, which is how the notary client writes the envelope around the canonical
/// `signed` bytes), with the text they stand for.
const GO_ESCAPES: [(&[u8], &[u8]); 5] = [
    (b"\\u003c", b"<"),
    (b"\\u003e", b">"),
    (b"\\u0026", b"&"),
    (b"\\u2028", "\u{2028}".as_bytes()),
    (b"\\u2029", "\u{2029}".as_bytes()),
];

/// Why the text of a `signed` value has no canonical form, or is not written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// A number the text holds has no canonical form (not integral, or beyond ±2^53).
    Canonical(CanonicalError),
    /// A number is too large for any reader (`1e400`).
    Number(String),
    /// The text is not its value's canonical form written as [`is_canonical_text`] allows.
    NotCanonical,
}

/// The canonical form of the JSON value `text` (valid JSON, as [`scan`] checked), read straight
/// from the text, or why the text is not that form written as a notary client may write it
/// (see [`is_canonical_text`]). Equivalent to parsing `text`, encoding the value canonically and
/// comparing, without building the value: the canonical form is the text with whitespace
/// between tokens dropped and Go's five escapes decoded, and it is the text itself (borrowed,
/// no copy) when the text holds neither. A number without canonical form is reported before a
/// text that is not canonical, as the encoder would fail before any comparison.
pub fn canonical_form(text: &[u8]) -> Result<Cow<'_, [u8]>, TextError> {
    let mut reader = TextReader { text, pos: 0, out: Out { text, owned: None, len: 0 }, differs: false, number: None };
    reader.whitespace();
    reader.value()?;
    if let Some(error) = reader.number {
        return Err(TextError::Canonical(error));
    }
    if reader.differs {
        return Err(TextError::NotCanonical);
    }
    Ok(match reader.out.owned {
        Some(owned) => Cow::Owned(owned),
        None => Cow::Borrowed(text.get(..reader.out.len).unwrap_or_default()),
    })
}

/// The canonical bytes being written: a prefix of the text while they agree with it, a copy
/// from the first difference on.
struct Out<'a> {
    text: &'a [u8],
    owned: Option<Vec<u8>>,
    /// Bytes of `text` written so far while nothing differs.
    len: usize,
}

impl Out<'_> {
    /// Writes the text's bytes `start..end` unchanged.
    fn keep(&mut self, start: usize, end: usize) {
        let bytes = self.text.get(start..end).unwrap_or_default();
        match self.owned.as_mut() {
            Some(owned) => owned.extend_from_slice(bytes),
            None if start == self.len => self.len = end,
            None => self.own().extend_from_slice(bytes),
        }
    }

    /// Writes bytes that are not the text's at this point.
    fn write(&mut self, bytes: &[u8]) {
        self.own().extend_from_slice(bytes);
    }

    fn own(&mut self) -> &mut Vec<u8> {
        let (text, len) = (self.text, self.len);
        self.owned.get_or_insert_with(|| {
            let mut owned = Vec::with_capacity(text.len());
            owned.extend_from_slice(text.get(..len).unwrap_or_default());
            owned
        })
    }
}

/// Reads valid JSON text into its canonical form (see [`canonical_form`]). The text has passed
/// [`scan`], so nesting is bounded and the syntax is known to be right; a byte out of place is
/// still answered with [`TextError::NotCanonical`] rather than trusted.
struct TextReader<'a> {
    text: &'a [u8],
    pos: usize,
    out: Out<'a>,
    /// Whether the text differs from the canonical form in more than whitespace and Go escapes.
    differs: bool,
    /// The first number without a canonical form.
    number: Option<CanonicalError>,
}

impl<'a> TextReader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Writes the next byte unchanged if it is `wanted`.
    fn expect(&mut self, wanted: u8) -> Result<(), TextError> {
        if self.peek() != Some(wanted) {
            return Err(TextError::NotCanonical);
        }
        self.out.keep(self.pos, self.pos + 1);
        self.pos += 1;
        Ok(())
    }

    fn value(&mut self) -> Result<(), TextError> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string(false).map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't' | b'n') => self.literal(4),
            Some(b'f') => self.literal(5),
            _ => Err(TextError::NotCanonical),
        }
    }

    fn literal(&mut self, length: usize) -> Result<(), TextError> {
        let end = self.pos.saturating_add(length).min(self.text.len());
        self.out.keep(self.pos, end);
        self.pos = end;
        Ok(())
    }

    fn object(&mut self) -> Result<(), TextError> {
        self.expect(b'{')?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            return self.expect(b'}');
        }
        let mut previous: Option<Cow<'a, [u8]>> = None;
        loop {
            self.whitespace();
            let key = self.string(true)?;
            // Canonical members are in ascending byte order of their decoded names.
            if previous.as_ref().is_some_and(|previous| *previous >= key) {
                self.differs = true;
            }
            previous = Some(key);
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            self.value()?;
            self.whitespace();
            if self.peek() == Some(b'}') {
                return self.expect(b'}');
            }
            self.expect(b',')?;
        }
    }

    fn array(&mut self) -> Result<(), TextError> {
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            return self.expect(b']');
        }
        loop {
            self.whitespace();
            self.value()?;
            self.whitespace();
            if self.peek() == Some(b']') {
                return self.expect(b']');
            }
            self.expect(b',')?;
        }
    }

    /// Writes a string in canonical form and, with `decode`, returns the bytes it stands for
    /// (for ordering member names). Canonical strings escape only `"` and `\`; of the other
    /// escapes only Go's five are accepted, as the characters they stand for.
    fn string(&mut self, decode: bool) -> Result<Cow<'a, [u8]>, TextError> {
        self.expect(b'"')?;
        let start = self.pos;
        // The decoded bytes, once an escape makes them differ from the text (a name without
        // escapes, as nearly all are, is borrowed).
        let mut decoded: Option<Vec<u8>> = None;
        loop {
            let rest = self.text.get(self.pos..).unwrap_or_default();
            let run = rest.iter().position(|byte| matches!(byte, b'"' | b'\\')).unwrap_or(rest.len());
            if let Some(owned) = decoded.as_mut() {
                owned.extend_from_slice(rest.get(..run).unwrap_or_default());
            }
            self.out.keep(self.pos, self.pos + run);
            self.pos += run;
            let rest = self.text.get(self.pos..).unwrap_or_default();
            match rest.first() {
                Some(b'"') => {
                    let end = self.pos;
                    self.expect(b'"')?;
                    return Ok(match decoded {
                        Some(owned) => Cow::Owned(owned),
                        None if decode => Cow::Borrowed(self.text.get(start..end).unwrap_or_default()),
                        None => Cow::Borrowed(&[]),
                    });
                }
                Some(_) => {
                    if decode && decoded.is_none() {
                        decoded = Some(self.text.get(start..self.pos).unwrap_or_default().to_vec());
                    }
                    if let Some(plain @ (b'"' | b'\\')) = rest.get(1).copied() {
                        if let Some(owned) = decoded.as_mut() {
                            owned.push(plain);
                        }
                        self.out.keep(self.pos, self.pos + 2);
                        self.pos += 2;
                    } else if let Some((escape, unescaped)) =
                        GO_ESCAPES.iter().find(|(escape, _)| rest.starts_with(escape))
                    {
                        if let Some(owned) = decoded.as_mut() {
                            owned.extend_from_slice(unescaped);
                        }
                        self.out.write(unescaped);
                        self.pos += escape.len();
                    } else {
                        // Any other escape has no place in canonical text; step over it whole.
                        self.differs = true;
                        let length = if rest.get(1) == Some(&b'u') { 6 } else { 2 };
                        let escape = rest.get(..length).ok_or(TextError::NotCanonical)?;
                        if let Some(owned) = decoded.as_mut() {
                            owned.extend_from_slice(escape);
                        }
                        self.out.write(escape);
                        self.pos += length;
                    }
                }
                None => return Err(TextError::NotCanonical),
            }
        }
    }

    fn number(&mut self) -> Result<(), TextError> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.pos += 1;
        }
        let token = self.text.get(start..self.pos).unwrap_or_default();
        self.out.keep(start, self.pos);
        if plain_safe_integer(token) {
            return Ok(());
        }
        // Anything else is judged as the encoder would judge the parsed number.
        let number: serde_json::Number =
            serde_json::from_slice(token).map_err(|error| TextError::Number(error.to_string()))?;
        let mut canonical = Vec::new();
        match crate::canonical::write_number(&number, &mut canonical) {
            Ok(()) if canonical == token => {}
            Ok(()) => self.differs = true,
            Err(error) => {
                self.number.get_or_insert(error);
            }
        }
        Ok(())
    }
}

/// Whether `token` is an integer written as the canonical encoder writes it: no sign but `-`,
/// no leading zero, no `-0`, at most 2^53 in magnitude.
fn plain_safe_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    let well_formed = match digits.split_first() {
        Some((b'0', rest)) => rest.is_empty() && digits.len() == token.len(),
        Some((b'1'..=b'9', rest)) => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    // Up to 15 digits is always below 2^53; longer ones are left to the exact check.
    well_formed && digits.len() <= 15
}

/// Whether `text` (valid JSON, as [`scan`] checked) is `canonical` written the way a notary
/// client may write it: the same bytes, except for whitespace between tokens (a pretty-printed
/// envelope) and the five escapes Go's encoder adds when it copies JSON text. Compares as it
/// goes, without a copy.
pub fn is_canonical_text(text: &[u8], canonical: &[u8]) -> bool {
    // What notary clients send: the canonical bytes themselves.
    if text == canonical {
        return true;
    }
    let mut expected = canonical;
    // Consumes `bytes` from the front of `expected`, if they are there.
    let mut matches = |bytes: &[u8]| match expected.strip_prefix(bytes) {
        Some(rest) => {
            expected = rest;
            true
        }
        None => false,
    };
    let mut rest = text;
    let mut in_string = false;
    while let Some((&byte, tail)) = rest.split_first() {
        if in_string && byte == b'\\' {
            if let Some((escape, unescaped)) = GO_ESCAPES.iter().find(|(escape, _)| rest.starts_with(escape)) {
                if !matches(unescaped) {
                    return false;
                }
                rest = rest.get(escape.len()..).unwrap_or_default();
                continue;
            }
            // Any other escape is two bytes (`\uXXXX` keeps its four digits as they are).
            let escape = rest.get(..2).unwrap_or(rest);
            if !matches(escape) {
                return false;
            }
            rest = rest.get(escape.len()..).unwrap_or_default();
            continue;
        }
        if in_string {
            in_string = byte != b'"';
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            rest = tail;
            continue;
        } else {
            in_string = byte == b'"';
        }
        if !matches(&[byte]) {
            return false;
        }
        rest = tail;
    }
    expected.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_json_scans_and_finds_signed() {
        let text = br#" {"signatures":[],"signed":{"a":[1,-2.5e3,true,false,null,"x\u00e9\"\\"]}} "#;
        let scan = scan(text).unwrap();
        let span = scan.signed.unwrap();
        assert_eq!(&text[span], br#"{"a":[1,-2.5e3,true,false,null,"x\u00e9\"\\"]}"#);
        assert_eq!(scan.values, 10);
        // `signed` below the top level is not the envelope's.
        assert_eq!(super::scan(br#"{"x":{"signed":1}}"#).unwrap().signed, None);
    }

    #[test]
    fn repeated_keys_are_refused_also_when_spelled_differently() {
        assert_eq!(scan(br#"{"a":1,"a":2}"#), Err(StrictError::DuplicateKey("a".into())));
        assert_eq!(scan(br#"{"x":[{"k":1,"\u006b":2}]}"#), Err(StrictError::DuplicateKey("k".into())));
        assert_eq!(scan(r#"{"\ud83d\ude00":1,"😀":2}"#.as_bytes()), Err(StrictError::DuplicateKey("😀".into())));
        assert!(scan(br#"{"a":{"a":1},"b":{"a":1}}"#).is_ok());
    }

    #[test]
    fn malformed_json_is_refused_with_its_position() {
        let cases: [(&[u8], StrictError); 12] = [
            (b"", StrictError::Syntax(0)),
            (b"{", StrictError::Syntax(1)),
            (b"{\"a\" 1}", StrictError::Syntax(5)),
            (b"[1,]", StrictError::Syntax(3)),
            (b"01", StrictError::Syntax(1)),
            (b"1.", StrictError::Syntax(2)),
            (b"-", StrictError::Syntax(1)),
            (b"\"\x01\"", StrictError::Syntax(1)),
            (b"\"\\x\"", StrictError::Syntax(2)),
            (br#""\ud800x""#, StrictError::Syntax(7)),
            (b"\xff", StrictError::Syntax(0)),
            (b"nul", StrictError::Syntax(0)),
        ];
        for (input, expected) in cases {
            assert_eq!(scan(input), Err(expected), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn values_denser_than_metadata_are_refused() {
        let within = format!("[{}0]", "0,".repeat(SMALL_FILE_VALUES - 2));
        assert_eq!(scan(within.as_bytes()).map(|scan| scan.values), Ok(SMALL_FILE_VALUES));
        let dense = format!("[{}[]]", "[],".repeat(100_000));
        assert_eq!(scan(dense.as_bytes()), Err(StrictError::TooDense { values: 100_002, bytes: 300_004 }));
        // Real client output is far from the bound.
        for file in [
            &include_bytes!("../tests/data/notary-0.7/root.json")[..],
            include_bytes!("../tests/data/notary-0.7/targets.json"),
            include_bytes!("../tests/data/notary-0.7/snapshot.json"),
        ] {
            let values = scan(file).unwrap().values;
            assert!(values * 12 < file.len(), "{values} values in {} bytes", file.len());
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(scan(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(scan(deep.as_bytes()), Err(StrictError::TooDeep));
        // Far beyond any stack: refused at the bound, not by running out of stack.
        assert_eq!(scan("[".repeat(1_000_000).as_bytes()), Err(StrictError::TooDeep));
    }

    #[test]
    fn canonical_text_allows_only_whitespace_and_go_escapes() {
        let canonical = "{\"a\":\"<b>&\u{2028}\",\"n\":[1,2]}".as_bytes();
        assert!(is_canonical_text(canonical, canonical));
        assert!(is_canonical_text(b"{ \"a\" : \"\\u003cb\\u003e\\u0026\\u2028\",\n  \"n\": [1, 2]\n}", canonical));
        let not: [&[u8]; 6] = [
            b"{\"n\":[1,2],\"a\":\"<b>&\xe2\x80\xa8\"}",
            b"{\"a\":\"\\u003Cb>&\xe2\x80\xa8\",\"n\":[1,2]}",
            b"{\"a\":\"<b>&\xe2\x80\xa8\",\"n\":[1.0,2]}",
            b"{\"a\":\"<b>&\xe2\x80\xa8\",\"n\":[1,2]}  x",
            b"{\"a\":\"<b>&\xe2\x80\xa8 \",\"n\":[1,2]}",
            b"{\"a\":\"<b>&\xe2\x80\xa8\",\"n\":[1,2]",
        ];
        for text in not {
            assert!(!is_canonical_text(text, canonical), "{}", String::from_utf8_lossy(text));
        }
        // Escaped quotes and backslashes stay as written.
        assert!(is_canonical_text(br#"{"k":"a\"b\\"}"#, br#"{"k":"a\"b\\"}"#));
    }

    /// The definition `canonical_form` must agree with: parse the text into a tree, encode the
    /// tree canonically, compare the text with the encoding.
    fn through_a_tree(text: &[u8]) -> Result<Vec<u8>, TextError> {
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|error| TextError::Number(error.to_string()))?;
        let canonical = crate::canonical::to_canonical(&value).map_err(TextError::Canonical)?;
        if is_canonical_text(text, &canonical) { Ok(canonical) } else { Err(TextError::NotCanonical) }
    }

    #[test]
    fn canonical_form_agrees_with_encoding_a_parsed_tree() {
        let texts: [&[u8]; 30] = [
            br#"{}"#,
            br#"[]"#,
            br#"{"a":[1,-2,true,false,null,"x"],"b":{"c":{}}}"#,
            b"{ \"a\" : \"\\u003cb\\u003e\\u0026\\u2028\\u2029\",\n  \"n\": [1, 2]\n}",
            br#"{"b":1,"a":2}"#,
            br#"{"a":1,"a ":2,"a\"":3}"#,
            br#"{"a\"":3,"a":1}"#,
            br#"{"\\":1,"a":2}"#,
            br#"{"a":2,"\\":1}"#,
            br#"{"\u0061":1}"#,
            br#"{"a":"\/"}"#,
            br#"{"a":"\n"}"#,
            br#"{"a":"\ud83d\ude00"}"#,
            "{\"a\":\"\u{1F600}é\"}".as_bytes(),
            br#"{"a":"\u003C"}"#,
            br#"{"a":"\\u003c"}"#,
            br#"{"\u003c":1,"=":2}"#,
            br#"{"=":2,"\u003c":1}"#,
            br#"[0,-0,1.0,1e3,1E3,-1.5,10,100]"#,
            br#"[-0]"#,
            br#"[1.0]"#,
            br#"[1.5,"\n"]"#,
            br#"[999999999999999,-999999999999999,9007199254740992,-9007199254740992]"#,
            br#"[9007199254740993]"#,
            br#"[-9007199254740993]"#,
            br#"[18446744073709551616]"#,
            br#"{"b":[1],"a":1.5}"#,
            br#"[1e400]"#,
            br#"[ 1 , 2 ]"#,
            br#"{"a":{"b":[{"c":"d"},[]]},"b":null}"#,
        ];
        for text in texts {
            assert!(scan(text).is_ok(), "{}", String::from_utf8_lossy(text));
            let expected = through_a_tree(text);
            let found = canonical_form(text).map(Cow::into_owned);
            match (&expected, &found) {
                // The two parsers word an out-of-range number differently.
                (Err(TextError::Number(_)), Err(TextError::Number(_))) => {}
                _ => assert_eq!(found, expected, "{}", String::from_utf8_lossy(text)),
            }
        }
        // Text written canonically is its own canonical form, without a copy.
        let canonical = br#"{"a":[1,"x\"y"],"b":{}}"#;
        assert!(matches!(canonical_form(canonical), Ok(Cow::Borrowed(bytes)) if bytes == canonical));
    }
}
