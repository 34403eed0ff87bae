//! What a log line says about itself: its level, and for JSON and logfmt
//! lines their message, trace and span ids and other fields. One parser,
//! shared: the archiver fills the `logs` table's `level`, `message`,
//! `trace_id`, `span_id` and `fields` columns with it, and the node filters
//! `tailll --level` with it, so both always agree on a line's level.
//!
//! - **JSON**: a line whose first non-blank byte is `{` and which is one
//!   JSON object. Nested objects are flattened with `.` (`{"http":{"code":
//!   500}}` is `http.code=500`); strings are kept without their quotes and
//!   escapes, numbers and booleans as written (`1.50` stays `1.50`),
//!   arrays as their compact JSON text, nulls left out.
//! - **logfmt**: a line of two or more `key=value` pairs and nothing else
//!   (values may be `"quoted \"like this\""`). A line with a stray word is
//!   plain text, so prose with an `=` in it is not mistaken for fields.
//! - **Plain text**: only a level, from a level word among the first
//!   [`PLAIN_TOKENS`] words of the first line: an upper-case word (`ERROR`,
//!   `WARN`), one in brackets or before a colon (`[warn]`, `error:`), a
//!   `level=`/`lvl=`/`severity=` pair, or glog's `E1207` prefix. Lower-case
//!   prose (`the trace was…`) is not a level.
//!
//! For JSON and logfmt the level comes from the first key of
//! [`LEVEL_KEYS`] present (compared without case), the message from
//! [`MESSAGE_KEYS`], the ids from [`TRACE_ID_KEYS`] and [`SPAN_ID_KEYS`];
//! everything else goes to `fields` (at most [`MAX_FIELDS`], sorted by
//! key, the first of equal keys kept). The line itself is always archived
//! whole, so nothing a parser leaves out is lost.
//!
//! Levels are normalised to [`Level`]'s six names; OpenTelemetry severity
//! numbers (1–24) and syslog's names map onto them as
//! [`Level::from_word`] says.

use std::borrow::Cow;
use std::fmt;

/// How many words of a plain line's start are looked at for its level.
pub const PLAIN_TOKENS: usize = 6;
/// Bytes of a plain line's start looked at for its level.
pub const PLAIN_PREFIX_BYTES: usize = 120;
/// Fields kept per line beyond level, message and ids.
pub const MAX_FIELDS: usize = 128;
/// Keys a line's level is read from, in order of preference.
pub const LEVEL_KEYS: &[&str] = &[
    "level",
    "severity",
    "lvl",
    "loglevel",
    "log_level",
    "log.level",
    "levelname",
    "severity_text",
    "severitytext",
    "@l",
    "@level",
];
/// Keys a line's message is read from, in order of preference.
pub const MESSAGE_KEYS: &[&str] = &["message", "msg", "@m", "@message", "body"];
/// Keys a line's trace id is read from.
pub const TRACE_ID_KEYS: &[&str] = &["trace_id", "traceid", "trace.id", "traceId"];
/// Keys a line's span id is read from.
pub const SPAN_ID_KEYS: &[&str] = &["span_id", "spanid", "span.id", "spanId"];

/// A line's severity, normalised; ordered from `Trace` to `Fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Finest detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (also `notice`).
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure (also `severe`, `err`).
    Error,
    /// The process cannot go on (also `panic`, `critical`, `alert`, `emerg`).
    Fatal,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    /// The name stored in the archive's `level` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// The level a word names, without regard to case: the six names and
    /// their common spellings (`warning`, `err`, `severe`, `notice`, `crit`,
    /// `panic`, `dbg`, `fine`, …), and OpenTelemetry severity numbers 1–24
    /// (1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error, 21–24
    /// fatal). `None` for anything else.
    pub fn from_word(word: &str) -> Option<Level> {
        if word.len() > 13 {
            return None;
        }
        if let Ok(n) = word.parse::<u8>() {
            return match n {
                1..=4 => Some(Level::Trace),
                5..=8 => Some(Level::Debug),
                9..=12 => Some(Level::Info),
                13..=16 => Some(Level::Warn),
                17..=20 => Some(Level::Error),
                21..=24 => Some(Level::Fatal),
                _ => None,
            };
        }
        let mut lower = [0u8; 13];
        let lower = &mut lower[..word.len()];
        lower.copy_from_slice(word.as_bytes());
        lower.make_ascii_lowercase();
        Some(match &*lower {
            b"trace" | b"trc" | b"finest" | b"finer" | b"verbose" => Level::Trace,
            b"debug" | b"dbg" | b"fine" => Level::Debug,
            b"info" | b"inf" | b"information" | b"informational" | b"notice" => Level::Info,
            b"warn" | b"warning" | b"wrn" => Level::Warn,
            b"error" | b"err" | b"eror" | b"severe" => Level::Error,
            b"fatal" | b"panic" | b"critical" | b"crit" | b"alert" | b"emerg" | b"emergency"
            | b"dpanic" => Level::Fatal,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        Level::from_word(s).ok_or_else(|| {
            format!("unknown level {s:?}: expected one of trace, debug, info, warn, error, fatal")
        })
    }
}

/// How a line was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Neither JSON nor logfmt: only a level is looked for.
    Plain,
    /// One JSON object.
    Json,
    /// `key=value` pairs.
    Logfmt,
}

/// What [`parse`] found in a line: text borrowed from the line where it
/// is written as it is read (no escapes), so most lines allocate only
/// the vector of fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// How the line was read.
    pub format: Format,
    /// Its level, when it names one.
    pub level: Option<Level>,
    /// The message field of a JSON or logfmt line.
    pub message: Option<Cow<'a, str>>,
    /// The trace id field, as written.
    pub trace_id: Option<Cow<'a, str>>,
    /// The span id field, as written.
    pub span_id: Option<Cow<'a, str>>,
    /// Every other field, sorted by key, keys unique.
    pub fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// A key and value read from a line.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

impl<'a> Parsed<'a> {
    /// The value of field `key` (keys are sorted).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.fields[i].1.as_ref())
    }

    fn plain(level: Option<Level>) -> Parsed<'a> {
        Parsed {
            format: Format::Plain,
            level,
            message: None,
            trace_id: None,
            span_id: None,
            fields: Vec::new(),
        }
    }
}

/// Reads a line (or the first line of a multi-line event) as the module
/// documentation says. Never fails: what is not JSON or logfmt is plain.
pub fn parse(text: &[u8]) -> Parsed<'_> {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let trimmed = &text[start..];
    if trimmed.first() == Some(&b'{')
        && let Some(parsed) = parse_json(trimmed)
    {
        return parsed;
    }
    let first = first_line(text);
    if first.contains(&b'=')
        && let Some(pairs) = logfmt_pairs(first)
    {
        return from_pairs(Format::Logfmt, pairs);
    }
    Parsed::plain(plain_level(first))
}

/// The level [`parse`] finds, for filters that need nothing else.
pub fn level(text: &[u8]) -> Option<Level> {
    parse(text).level
}

fn first_line(text: &[u8]) -> &[u8] {
    match text.iter().position(|&b| b == b'\n') {
        Some(end) => &text[..end],
        None => text,
    }
}

fn key_in(key: &str, keys: &[&str]) -> bool {
    keys.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// What a key of a JSON or logfmt line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A level, with the key's rank in [`LEVEL_KEYS`].
    Level(usize),
    Message,
    TraceId,
    SpanId,
    Field,
}

/// [`Role`] of `key`, without regard to case: only the keys of its length
/// are compared (a test holds this table to the lists).
fn role(key: &str) -> Role {
    use Role::*;
    let candidates: &[(&str, Role)] = match key.len() {
        2 => &[("@l", Level(9)), ("@m", Message)],
        3 => &[("lvl", Level(2)), ("msg", Message)],
        4 => &[("body", Message)],
        5 => &[("level", Level(0))],
        6 => &[("@level", Level(10)), ("spanid", SpanId)],
        7 => &[
            ("message", Message),
            ("traceid", TraceId),
            ("span_id", SpanId),
            ("span.id", SpanId),
        ],
        8 => &[
            ("severity", Level(1)),
            ("loglevel", Level(3)),
            ("@message", Message),
            ("trace_id", TraceId),
            ("trace.id", TraceId),
        ],
        9 => &[
            ("log_level", Level(4)),
            ("log.level", Level(5)),
            ("levelname", Level(6)),
        ],
        12 => &[("severitytext", Level(8))],
        13 => &[("severity_text", Level(7))],
        _ => return Field,
    };
    candidates
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map_or(Field, |&(_, role)| role)
}

/// Sorts out level, message and ids from the other pairs (first of each
/// kind wins, in the keys' order of preference for the level).
fn from_pairs(format: Format, mut pairs: Vec<Pair<'_>>) -> Parsed<'_> {
    let mut out = Parsed::plain(None);
    out.format = format;
    // The level: the pair of the most preferred level key that names one.
    let chosen = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, (key, value))| match role(key) {
            Role::Level(rank) => Some((rank, i, Level::from_word(value.trim())?)),
            _ => None,
        })
        .min_by_key(|&(rank, i, _)| (rank, i));
    out.level = chosen.map(|(_, _, level)| level);
    let chosen = chosen.map(|(_, i, _)| i);
    // In place: a line's pairs are its fields but for a few.
    let mut i = 0;
    pairs.retain_mut(|(key, value)| {
        let this = i;
        i += 1;
        if Some(this) == chosen {
            return false;
        }
        let taken = match role(key) {
            Role::Message if out.message.is_none() => &mut out.message,
            Role::TraceId if out.trace_id.is_none() => &mut out.trace_id,
            Role::SpanId if out.span_id.is_none() => &mut out.span_id,
            _ => return true,
        };
        *taken = Some(std::mem::take(value));
        false
    });
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|b, a| a.0 == b.0);
    pairs.truncate(MAX_FIELDS);
    out.fields = pairs;
    out
}

/// One JSON object, flattened into pairs as it is read ([`json`]).
fn parse_json(text: &[u8]) -> Option<Parsed<'_>> {
    json::object_pairs(text).map(|pairs| from_pairs(Format::Json, pairs))
}

/// The pairs of a logfmt line, or `None` when any word of it is not a
/// `key=value` pair or it has fewer than two.
fn logfmt_pairs(line: &[u8]) -> Option<Vec<Pair<'_>>> {
    let line = std::str::from_utf8(line).ok()?;
    let bytes = line.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && !matches!(bytes[i], b'=' | b'"') && !bytes[i].is_ascii_whitespace()
        {
            i += 1;
        }
        if i == key_start || i == bytes.len() || bytes[i] != b'=' {
            return None;
        }
        let key = &line[key_start..i];
        i += 1;
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let start = i;
            // Borrowed up to the first escape, if any.
            while i < bytes.len() && !matches!(bytes[i], b'"' | b'\\') {
                i += 1;
            }
            let value = if bytes.get(i) == Some(&b'"') {
                i += 1;
                Cow::Borrowed(&line[start..i - 1])
            } else {
                let mut value = line[start..i].to_string();
                loop {
                    let c = line[i..].chars().next()?;
                    i += c.len_utf8();
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = line[i..].chars().next()?;
                            i += e.len_utf8();
                            value.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        c => value.push(c),
                    }
                }
                Cow::Owned(value)
            };
            if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                return None;
            }
            value
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'"' {
                    return None;
                }
                i += 1;
            }
            Cow::Borrowed(&line[start..i])
        };
        pairs.push((Cow::Borrowed(key), value));
    }
    (pairs.len() >= 2).then_some(pairs)
}

/// The level of a plain line's start, as the module documentation says.
fn plain_level(line: &[u8]) -> Option<Level> {
    let head = &line[..line.len().min(PLAIN_PREFIX_BYTES)];
    let head = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
    };
    for (n, word) in head.split_ascii_whitespace().enumerate() {
        if n >= PLAIN_TOKENS {
            break;
        }
        if let Some(level) = word_level(word, n == 0) {
            return Some(level);
        }
    }
    None
}

fn word_level(word: &str, first: bool) -> Option<Level> {
    // `level=warn`, `severity:ERROR`.
    if let Some((key, value)) = word.split_once(['=', ':'])
        && key_in(key.trim_matches(['[', '(']), LEVEL_KEYS)
    {
        return Level::from_word(value.trim_matches(|c: char| !c.is_ascii_alphanumeric()));
    }
    // glog: `E1207 10:00:00.000000 …` (severity letter and month-day).
    let bytes = word.as_bytes();
    if first && bytes.len() == 5 && bytes[1..].iter().all(u8::is_ascii_digit) {
        match bytes[0] {
            b'I' => return Some(Level::Info),
            b'W' => return Some(Level::Warn),
            b'E' => return Some(Level::Error),
            b'F' => return Some(Level::Fatal),
            _ => {}
        }
    }
    let bracketed = word.starts_with(['[', '(', '<']);
    let core = word.trim_start_matches(['[', '(', '<']);
    let end = core
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(core.len());
    let (name, after) = core.split_at(end);
    if name.is_empty() {
        return None;
    }
    let level = Level::from_word(name)?;
    let upper = name.bytes().all(|b| b.is_ascii_uppercase());
    let marked = bracketed || after.starts_with([':', ']', ')', '>', '|']);
    (upper || marked).then_some(level)
}

mod json;
#[cfg(test)]
mod tests;
