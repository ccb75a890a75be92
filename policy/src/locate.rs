//! Where a value sits in the policy text: line and column of a byte offset, and of the value found by a path of keys
//! and indices in TOML (through toml's spanned parse tree) or JSON (through a small scanner), so that errors found
//! after parsing (an empty key list, a bad pattern) still name their line.

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A table or object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path from the document's top to a value.
pub(crate) type Path = Vec<Step>;

/// Builds a path from keys and indices written as `&["content-trust", "trust-pinning"]`-like steps.
pub(crate) fn key(name: &str) -> Step {
    Step::Key(name.to_owned())
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before.get(line_start..).map_or(0, |rest| rest.chars().count()) + 1;
    (line, column)
}

/// The byte offset of the value at `path` in TOML `text`, or of the deepest part of the path that exists.
pub(crate) fn toml_offset(text: &str, path: &[Step]) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut steps = path.iter();
    let first = match steps.next() {
        Some(Step::Key(name)) => name,
        _ => return Some(document.span().start),
    };
    let (_, mut value) = document.get_ref().iter().find(|(candidate, _)| candidate.get_ref() == first)?;
    for step in steps {
        let next = match step {
            Step::Key(name) => value.get_ref().get(name.as_str()),
            Step::Index(index) => value.get_ref().get(*index),
        };
        match next {
            Some(next) => value = next,
            None => break,
        }
    }
    Some(value.span().start)
}

/// The byte offset of the value at `path` in JSON `text`, or of the deepest part of the path that exists.
pub(crate) fn json_offset(text: &str, path: &[Step]) -> Option<usize> {
    let mut scanner = JsonScanner { bytes: text.as_bytes(), position: 0 };
    scanner.skip_space();
    let mut found = scanner.position;
    for step in path {
        match scanner.enter(step) {
            Some(offset) => found = offset,
            None => break,
        }
    }
    Some(found)
}

/// Just enough of a JSON reader to find a value: strings (with escapes), nesting and skipping.
struct JsonScanner<'a> {
    bytes: &'a [u8],
    position: usize,
}

/// The deepest nesting the scanner follows (the policy is far shallower; deeper text is simply not located).
const MAX_DEPTH: usize = 64;

impl JsonScanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|byte| byte.is_ascii_whitespace()) {
            self.position += 1;
        }
    }

    /// At a value: moves into the member or element `step` names and returns its offset.
    fn enter(&mut self, step: &Step) -> Option<usize> {
        self.skip_space();
        match (step, self.peek()?) {
            (Step::Key(wanted), b'{') => {
                self.position += 1;
                loop {
                    self.skip_space();
                    if self.peek()? != b'"' {
                        return None;
                    }
                    let name = self.string()?;
                    self.skip_space();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.position += 1;
                    self.skip_space();
                    if &name == wanted {
                        return Some(self.position);
                    }
                    self.skip_value(0)?;
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.position += 1,
                        _ => return None,
                    }
                }
            }
            (Step::Index(wanted), b'[') => {
                self.position += 1;
                let mut index = 0;
                loop {
                    self.skip_space();
                    if index == *wanted {
                        return if self.peek()? == b']' { None } else { Some(self.position) };
                    }
                    self.skip_value(0)?;
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.position += 1,
                        _ => return None,
                    }
                    index += 1;
                }
            }
            _ => None,
        }
    }

    /// Reads a string at the cursor (escapes decoded well enough to compare keys).
    fn string(&mut self) -> Option<String> {
        self.position += 1;
        let mut out = Vec::new();
        loop {
            let byte = self.peek()?;
            self.position += 1;
            match byte {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let escaped = self.peek()?;
                    self.position += 1;
                    match escaped {
                        b'u' => {
                            let hex = self.bytes.get(self.position..self.position + 4)?;
                            self.position += 4;
                            let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            let character = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut buffer = [0; 4];
                            out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                        }
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }

    /// Skips one value at the cursor.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_space();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.position += 1;
                loop {
                    self.skip_space();
                    if self.peek()? == close {
                        self.position += 1;
                        return Some(());
                    }
                    if open == b'{' {
                        self.string()?;
                        self.skip_space();
                        if self.peek()? != b':' {
                            return None;
                        }
                        self.position += 1;
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_space();
                    match self.peek()? {
                        b',' => self.position += 1,
                        byte if byte == close => {}
                        _ => return None,
                    }
                }
            }
            _ => {
                while self.peek().is_some_and(|byte| !matches!(byte, b',' | b'}' | b']') && !byte.is_ascii_whitespace())
                {
                    self.position += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("é\nxé", 5), (2, 3));
    }

    #[test]
    fn json_paths() {
        let text = "{\n  \"a\": [1, {\"b\\u0063\": \"x\"}],\n  \"d\": {\"e\": true}\n}";
        let at = |path: &[Step]| json_offset(text, path).map(|offset| line_column(text, offset));
        assert_eq!(at(&[key("a"), Step::Index(1), key("bc")]), Some((2, 24)));
        assert_eq!(at(&[key("d"), key("e")]), Some((3, 14)));
        // A missing step stops at the deepest value found.
        assert_eq!(at(&[key("d"), key("zz")]), Some((3, 8)));
        assert_eq!(at(&[key("a"), Step::Index(5)]), Some((2, 8)));
    }

    #[test]
    fn toml_paths() {
        let text = "[x]\ny = 1\n[[r]]\np = \"a\"\n[[r]]\np = \"b\"\n";
        let at = |path: &[Step]| toml_offset(text, path).map(|offset| line_column(text, offset));
        assert_eq!(at(&[key("x"), key("y")]), Some((2, 5)));
        assert_eq!(at(&[key("r"), Step::Index(1), key("p")]), Some((6, 5)));
    }
}
