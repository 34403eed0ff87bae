//! One JSON object read straight into flattened `key` = value pairs, by a
//! scanner over the line's bytes: strings without escapes and numbers are
//! borrowed from the line as written, nothing is built that is not kept.
//! About twice as fast on log lines as serde_json driving a visitor, which
//! parses every number into a float or integer only for it to be printed
//! back (`SLUICE_PARSE_FILE=F cargo test --release -p sluice-schema --
//! --ignored parse_speed`).
//!
//! Strict JSON (RFC 8259): anything else (a bad escape, a control byte in a
//! string, invalid UTF-8, a trailing comma, more than one value, nesting
//! deeper than [`MAX_DEPTH`]) gives `None` and the line is read as plain
//! text. Values: a string as it reads, without its quotes and escapes; a
//! number, `true` or `false` as its JSON text; an array as its JSON text
//! without blanks between tokens; an object flattened with `.`; `null` left out.

use std::borrow::Cow;

use super::{MAX_FIELDS, Pair};

/// Objects and arrays nested deeper than this make a line plain (serde_json's
/// own limit).
pub const MAX_DEPTH: usize = 128;

/// The pairs of `text`, which must be one JSON object and white space.
pub(super) fn object_pairs(text: &[u8]) -> Option<Vec<Pair<'_>>> {
    // Once for the line: every string is then sliced from it as it is.
    let text = std::str::from_utf8(text).ok()?;
    let mut reader = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
        out: Vec::with_capacity(16),
    };
    reader.blank();
    if reader.peek() != Some(b'{') {
        return None;
    }
    reader.object(None, 1)?;
    reader.blank();
    (reader.at == text.len()).then_some(reader.out)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    out: Vec<Pair<'a>>,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn blank(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// An object at `{`, its members pushed under `prefix.`.
    fn object(&mut self, prefix: Option<&str>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.blank();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.blank();
            let key = self.string()?;
            self.blank();
            self.eat(b':')?;
            self.blank();
            if self.out.len() >= MAX_FIELDS * 2 {
                // Enough for any line: the rest is checked, not kept.
                self.skip(depth)?;
            } else {
                let key = match prefix {
                    None => key,
                    Some(prefix) => Cow::Owned(format!("{prefix}.{key}")),
                };
                self.value(key, depth)?;
            }
            self.blank();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The value of `key`, pushed (or its members, for an object).
    fn value(&mut self, key: Cow<'a, str>, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let value = self.string()?;
                self.out.push((key, value));
            }
            b'{' => self.object(Some(&key), depth + 1)?,
            b'[' => {
                let start = self.at;
                self.skip(depth)?;
                let raw = compact(&self.text[start..self.at]);
                self.out.push((key, raw));
            }
            b'n' => self.literal(b"null").map(|_| ())?,
            _ => {
                let raw = self.scalar()?;
                self.out.push((key, raw));
            }
        }
        Some(())
    }

    /// `true`, `false` or a number, as written.
    fn scalar(&mut self) -> Option<Cow<'a, str>> {
        let start = self.at;
        match self.peek()? {
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            _ => self.number()?,
        }
        Some(Cow::Borrowed(&self.text[start..self.at]))
    }

    fn literal(&mut self, word: &'static [u8]) -> Option<()> {
        let raw = self.bytes.get(self.at..self.at + word.len())?;
        (raw == word).then(|| self.at += word.len())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A string at `"`: borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let mut escaped = false;
        let end = loop {
            let next = self.at + memchr::memchr2(b'"', b'\\', &self.bytes[self.at..])?;
            if self.bytes[self.at..next].iter().any(|&b| b < 0x20) {
                return None;
            }
            if self.bytes[next] == b'"' {
                break next;
            }
            // The escaped byte is checked by serde_json below.
            escaped = true;
            self.at = next + 2;
            if self.at > self.bytes.len() {
                return None;
            }
        };
        self.at = end + 1;
        if escaped {
            // With its quotes: serde_json undoes the escapes (and checks
            // them, `\u` surrogates included).
            serde_json::from_str::<String>(&self.text[start - 1..=end])
                .ok()
                .map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&self.text[start..end]))
        }
    }

    /// Any value, checked and passed over.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'n' => self.literal(b"null").map(|_| ()),
            b'{' | b'[' => {
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                let close = if self.peek()? == b'{' { b'}' } else { b']' };
                self.at += 1;
                self.blank();
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    self.blank();
                    if close == b'}' {
                        self.string()?;
                        self.blank();
                        self.eat(b':')?;
                        self.blank();
                    }
                    self.skip(depth + 1)?;
                    self.blank();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b if b == close => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.scalar().map(|_| ()),
        }
    }
}

/// Checked JSON text without the blanks between its tokens (as serde_json
/// prints it compact); borrowed when it has none.
fn compact(text: &str) -> Cow<'_, str> {
    let blank = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    if !text.bytes().any(blank) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii() && blank(c as u8) {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}
