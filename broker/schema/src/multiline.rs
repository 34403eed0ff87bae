//! How a job's lines group into multi-line events (a stack trace is one
//! record), shared by the job spec and sandbox manifest (scheduler), the
//! shipper's configuration, and the shipper, which groups.
//!
//! ```yaml
//! multiline: java                       # or python, go
//! multiline: {start: '^\d{4}-\d\d-\d\d'}   # a matching line starts an event
//! multiline: {continue: '^\s'}          # a matching line continues one
//! multiline: {preset: java, timeout_ms: 5000}
//! ```
//!
//! Every line either starts an event or continues the one before. With
//! `start`, a line matching the regular expression starts one and any
//! other continues; with `continue` the reverse. The presets are
//! `continue` rules:
//!
//! - `java`: indented lines (`\tat com.example…`, `... 3 more`), `Caused
//!   by:`, `Suppressed:`, and an exception's own line
//!   (`java.lang.OutOfMemoryError: Java heap space`) continue;
//! - `python`: `Traceback (most recent call last):`, indented lines, blank
//!   lines, the chained-exception sentences, and the exception's line
//!   (`ZeroDivisionError: division by zero`) continue;
//! - `go`: a panic's blank lines, `goroutine 1 [running]:`, function lines
//!   (`main.main()`), indented file lines, `created by …` and `[signal …`
//!   continue.
//!
//! An event ends before a line that starts one, before a line of the other
//! stream (framed layouts), before a piece of a line cut for length, when
//! it reaches [`MAX_GROUP_LINES`] lines or would pass [`MAX_GROUP_BYTES`],
//! or when nothing was written for `timeout_ms` (default
//! [`DEFAULT_TIMEOUT_MS`]). All but the timeout depend only on the file's
//! bytes, so reading the file again forms the same events; the shipper
//! records where a timeout ended one, so that one is formed again too.

use std::fmt;

use regex::bytes::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Wait for a continuation line, by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// Longest wait for a continuation line allowed.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Lines in one event at most.
pub const MAX_GROUP_LINES: u32 = 1_000;
/// Bytes of text in one event at most (newlines between its lines included).
pub const MAX_GROUP_BYTES: usize = 1 << 20;
/// Longest regular expression accepted, in bytes.
pub const MAX_REGEX_BYTES: usize = 1_024;

const JAVA: &str = r"^(?:\s|Caused by:|Suppressed:|[\w$.]+(?:Exception|Error|Throwable)(?::|$))";
const PYTHON: &str = r"^(?:\s|$|Traceback \(most recent call last\):|During handling of the above exception|The above exception was the direct cause|[\w.]+(?:Error|Exception|Warning|Exit|Interrupt)(?::|$)|Exception(?::|$))";
const GO: &str = r"^(?:\s|$|goroutine \d+ \[|created by |\[signal |[\w.*/()\[\]-]+\(.*\)$)";

/// Which lines start or continue an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The `java` preset.
    Java,
    /// The `python` preset.
    Python,
    /// The `go` preset.
    Go,
    /// A line matching this regular expression starts an event.
    Start(String),
    /// A line matching this regular expression continues an event.
    Continue(String),
}

/// A job's multi-line rule and how long an event waits for more lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multiline {
    /// Which lines start or continue an event.
    pub rule: Rule,
    /// An event is closed this long after the file last grew, 1 to
    /// [`MAX_TIMEOUT_MS`].
    pub timeout_ms: u64,
}

impl Multiline {
    /// The rule with the default timeout.
    pub fn new(rule: Rule) -> Multiline {
        Multiline {
            rule,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    /// Checks the rule (its regular expression compiles, within
    /// [`MAX_REGEX_BYTES`]) and the timeout; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms: must be between 1 and {MAX_TIMEOUT_MS}, not {}",
                self.timeout_ms
            ));
        }
        Grouping::new(self).map(|_| ())
    }
}

/// A [`Multiline`] compiled: tells whether a line continues an event.
#[derive(Debug, Clone)]
pub struct Grouping {
    regex: Regex,
    /// The regular expression matches lines that start an event.
    starts: bool,
    /// A preset's test written out by hand: the same answers as the
    /// regular expression (a property test), without a regex search per
    /// line.
    preset: Option<fn(&[u8]) -> bool>,
    /// How long an event waits for more lines.
    pub timeout_ms: u64,
}

impl Grouping {
    /// Compiles `multiline`'s rule; the error names the field.
    pub fn new(multiline: &Multiline) -> Result<Grouping, String> {
        let (pattern, starts, field) = match &multiline.rule {
            Rule::Java => (JAVA, false, "preset"),
            Rule::Python => (PYTHON, false, "preset"),
            Rule::Go => (GO, false, "preset"),
            Rule::Start(p) => (p.as_str(), true, "start"),
            Rule::Continue(p) => (p.as_str(), false, "continue"),
        };
        let preset: Option<fn(&[u8]) -> bool> = match &multiline.rule {
            Rule::Java => Some(java_continues),
            Rule::Python => Some(python_continues),
            Rule::Go => Some(go_continues),
            _ => None,
        };
        if pattern.len() > MAX_REGEX_BYTES {
            return Err(format!(
                "{field}: the regular expression is {} bytes, at most {MAX_REGEX_BYTES}",
                pattern.len()
            ));
        }
        let regex = compiled(pattern).map_err(|e| format!("{field}: {e}"))?;
        Ok(Grouping {
            regex,
            starts,
            preset,
            timeout_ms: multiline.timeout_ms,
        })
    }

    /// Whether `line` (its text, without newline) continues the event
    /// before it rather than starting one.
    pub fn continues(&self, line: &[u8]) -> bool {
        match self.preset {
            Some(preset) => preset(line),
            None => self.regex.is_match(line) != self.starts,
        }
    }

    /// [`continues`](Self::continues) by the regular expression alone.
    #[cfg(test)]
    fn continues_by_regex(&self, line: &[u8]) -> bool {
        self.regex.is_match(line) != self.starts
    }
}

/// `pattern` compiled, once per process: a shipper builds a grouping for
/// every file it tracks (compiling the Java preset's expression took about
/// a millisecond each time). Up to [`CACHED_PATTERNS`] are kept; a regex
/// clone shares its compiled program.
fn compiled(pattern: &str) -> Result<Regex, regex::Error> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Regex>>> =
        std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(regex) = cache.get(pattern) {
        return Ok(regex.clone());
    }
    let regex = regex::bytes::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()?;
    if cache.len() >= CACHED_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), regex.clone());
    Ok(regex)
}

/// How many compiled patterns [`compiled`] keeps.
const CACHED_PATTERNS: usize = 256;

/// Whether `b` is what the regular expressions' `\s` matches at a line's
/// start (ASCII whitespace, and the multi-byte spaces below).
fn starts_with_space(line: &[u8]) -> bool {
    match line.first() {
        Some(b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') => true,
        Some(&b) if b >= 0x80 => std::str::from_utf8(&line[..line.len().min(4)])
            .or_else(|e| std::str::from_utf8(&line[..e.valid_up_to()]))
            .ok()
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_whitespace),
        _ => false,
    }
}

/// Length of the leading run of bytes `allowed` accepts, where `\w`
/// (the regex crate's word characters, Unicode) is allowed too when
/// `word`. ASCII is decided byte by byte; a non-ASCII character (rare at a
/// line's start) by the regex crate itself.
fn leading_run(line: &[u8], word: bool, allowed: &[u8]) -> usize {
    static WORD: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"^\w$").expect("a valid pattern"));
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b < 0x80 {
            if (word && (b.is_ascii_alphanumeric() || b == b'_')) || allowed.contains(&b) {
                i += 1;
                continue;
            }
            return i;
        }
        let rest = &line[i..line.len().min(i + 4)];
        let c = match std::str::from_utf8(rest) {
            Ok(s) => s.chars().next(),
            Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()])
                .ok()
                .and_then(|s| s.chars().next()),
        };
        match c {
            Some(c) if word && WORD.is_match(c.encode_utf8(&mut [0; 4]).as_bytes()) => {
                i += c.len_utf8();
            }
            _ => return i,
        }
    }
    i
}

/// `[run](suffix)(:|$)` at the start: the leading run ends with one of
/// `suffixes` (with something before it) and is followed by `:` or the end.
fn exception_line(line: &[u8], allowed: &[u8], suffixes: &[&[u8]]) -> bool {
    let run = leading_run(line, true, allowed);
    let next = line.get(run);
    if !(next.is_none() || next == Some(&b':')) {
        return false;
    }
    suffixes
        .iter()
        .any(|s| run > s.len() && line[..run].ends_with(s))
}

fn java_continues(line: &[u8]) -> bool {
    starts_with_space(line)
        || line.starts_with(b"Caused by:")
        || line.starts_with(b"Suppressed:")
        || exception_line(line, b"$.", &[b"Exception", b"Error", b"Throwable"])
}

fn python_continues(line: &[u8]) -> bool {
    line.is_empty()
        || starts_with_space(line)
        || line.starts_with(b"Traceback (most recent call last):")
        || line.starts_with(b"During handling of the above exception")
        || line.starts_with(b"The above exception was the direct cause")
        || exception_line(
            line,
            b".",
            &[b"Error", b"Exception", b"Warning", b"Exit", b"Interrupt"],
        )
        || (line.starts_with(b"Exception") && matches!(line.get(9), None | Some(b':')))
}

fn go_continues(line: &[u8]) -> bool {
    if line.is_empty()
        || starts_with_space(line)
        || line.starts_with(b"created by ")
        || line.starts_with(b"[signal ")
    {
        return true;
    }
    if let Some(rest) = line.strip_prefix(b"goroutine ") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest[digits..].starts_with(b" [") {
            return true;
        }
    }
    // `[\w.*/()\[\]-]+\(.*\)$`: a '(' inside the leading run (not first),
    // and a ')' last.
    let run = leading_run(line, true, b".*/()[]-");
    line.ends_with(b")") && line[..run].iter().skip(1).any(|&b| b == b'(')
}

impl Serialize for Multiline {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        match &self.rule {
            Rule::Java => map.serialize_entry("preset", "java")?,
            Rule::Python => map.serialize_entry("preset", "python")?,
            Rule::Go => map.serialize_entry("preset", "go")?,
            Rule::Start(p) => map.serialize_entry("start", p)?,
            Rule::Continue(p) => map.serialize_entry("continue", p)?,
        }
        map.serialize_entry("timeout_ms", &self.timeout_ms)?;
        map.end()
    }
}

fn preset<E: de::Error>(name: &str) -> Result<Rule, E> {
    match name {
        "java" => Ok(Rule::Java),
        "python" => Ok(Rule::Python),
        "go" => Ok(Rule::Go),
        other => Err(E::custom(format!(
            "unknown preset {other:?}: expected java, python or go, or {{start: REGEX}} or \
             {{continue: REGEX}}"
        ))),
    }
}

impl<'de> Deserialize<'de> for Multiline {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Multiline, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Multiline;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("java, python, go, {start: REGEX} or {continue: REGEX}")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Multiline, E> {
                Ok(Multiline::new(preset(name)?))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Multiline, A::Error> {
                let mut rule = None;
                let mut timeout_ms = None;
                while let Some(key) = map.next_key::<String>()? {
                    let next = match key.as_str() {
                        "preset" => preset(&map.next_value::<String>()?)?,
                        "start" => Rule::Start(map.next_value()?),
                        "continue" => Rule::Continue(map.next_value()?),
                        "timeout_ms" => {
                            timeout_ms = Some(map.next_value()?);
                            continue;
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown field `{other}`, expected one of `preset`, `start`, \
                                 `continue`, `timeout_ms`"
                            )));
                        }
                    };
                    if rule.replace(next).is_some() {
                        return Err(de::Error::custom(
                            "give one of `preset`, `start` and `continue`",
                        ));
                    }
                }
                let rule = rule.ok_or_else(|| {
                    de::Error::custom("give one of `preset`, `start` and `continue`")
                })?;
                Ok(Multiline {
                    rule,
                    timeout_ms: timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouping(rule: Rule) -> Grouping {
        Grouping::new(&Multiline::new(rule)).unwrap()
    }

    #[test]
    fn java_traces_continue_and_log_lines_start() {
        let g = grouping(Rule::Java);
        for line in [
            "java.lang.OutOfMemoryError: Java heap space",
            "\tat com.example.Batch.run(Batch.java:42)",
            "\t... 3 more",
            "Caused by: java.io.IOException: disk full",
            "    Suppressed: x",
            "com.example.MyException",
        ] {
            assert!(g.continues(line.as_bytes()), "{line}");
        }
        for line in [
            "ERROR batch 28 failed: java.lang.OutOfMemoryError",
            "2026-12-07 10:00:00 INFO started",
            "Error: not an exception line",
        ] {
            assert!(!g.continues(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn python_and_go_presets() {
        let py = grouping(Rule::Python);
        for line in [
            "Traceback (most recent call last):",
            "  File \"x.py\", line 3, in <module>",
            "ZeroDivisionError: division by zero",
            "",
            "During handling of the above exception, another exception occurred:",
        ] {
            assert!(py.continues(line.as_bytes()), "{line:?}");
        }
        assert!(!py.continues(b"ERROR:root:batch failed"));
        let go = grouping(Rule::Go);
        for line in [
            "",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/tmp/x.go:8 +0x1d",
            "created by main.start in goroutine 1",
        ] {
            assert!(go.continues(line.as_bytes()), "{line:?}");
        }
        assert!(!go.continues(b"panic: runtime error: index out of range"));
        assert!(!go.continues(b"2026/12/07 10:00:00 listening on :8080"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// The presets written out by hand answer as their regular
        /// expressions do, on lines near their patterns and on any bytes.
        #[test]
        fn presets_agree_with_their_regular_expressions(
            near in r"(\s|\t| |Caused by:|Suppressed:|Traceback \(most recent call last\):|goroutine [0-9]{0,3} ?\[?|created by |\[signal |Exception|During handling of the above exception|[a-zA-Zé$._]{0,6})([a-zA-Z$.]{0,4}(Exception|Error|Throwable|Warning|Exit|Interrupt)?)(:|\(|\)| |x|é)?[ -~]{0,6}\)?",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
        ) {
            static PRESETS: std::sync::LazyLock<Vec<(Rule, Grouping)>> =
                std::sync::LazyLock::new(|| {
                    [Rule::Java, Rule::Python, Rule::Go]
                        .into_iter()
                        .map(|r| (r.clone(), grouping(r)))
                        .collect()
                });
            for (rule, g) in PRESETS.iter() {
                for line in [near.as_bytes(), &bytes] {
                    proptest::prop_assert_eq!(
                        g.continues(line),
                        g.continues_by_regex(line),
                        "{:?} on {:?}", rule, String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }

    #[test]
    fn start_and_continue_rules() {
        let start = grouping(Rule::Start(r"^\d{4}-".into()));
        assert!(!start.continues(b"2026-12-07 x"));
        assert!(start.continues(b"anything else"));
        let cont = grouping(Rule::Continue(r"^\s".into()));
        assert!(cont.continues(b"  more"));
        assert!(!cont.continues(b"new"));
    }

    #[test]
    fn forms_read_and_bad_ones_are_named() {
        let read = |json: &str| serde_json::from_str::<Multiline>(json);
        assert_eq!(read(r#""java""#).unwrap(), Multiline::new(Rule::Java));
        let m = read(r#"{"start":"^x","timeout_ms":500}"#).unwrap();
        assert_eq!(m.rule, Rule::Start("^x".into()));
        assert_eq!(m.timeout_ms, 500);
        assert_eq!(
            read(r#"{"preset":"go"}"#).unwrap(),
            Multiline::new(Rule::Go)
        );
        for m in [Multiline::new(Rule::Python), m] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(read(&json).unwrap(), m);
        }
        for (bad, says) in [
            (r#""ruby""#, "unknown preset \"ruby\""),
            (r#"{"start":"a","continue":"b"}"#, "one of"),
            (r#"{}"#, "one of"),
            (r#"{"stop":"x"}"#, "unknown field `stop`"),
            ("3", "expected java, python"),
        ] {
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let bad = Multiline::new(Rule::Start("(".into()));
        assert!(bad.validate().unwrap_err().starts_with("start: "));
        let slow = Multiline {
            timeout_ms: 0,
            ..Multiline::new(Rule::Java)
        };
        assert!(slow.validate().unwrap_err().starts_with("timeout_ms"));
    }
}
