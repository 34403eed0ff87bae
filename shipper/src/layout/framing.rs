//! How a file's bytes become lines: plain newline-delimited text, CRI
//! (`<RFC3339Nano> <stdout|stderr> <P|F> <message>`) or Docker's json-file
//! (`{"log":"…","stream":"…","time":"…"}`).
//!
//! The tailer splits a file at `\n` and hands each physical line (without
//! the `\n`) to [`Framing::decode`]. A frame marked `partial` continues in
//! the next one (CRI `P`, a Docker `log` without a trailing newline); the
//! tailer joins them into one line.
//!
//! Both structured framings carry the line's time (RFC 3339 with up to nine
//! fractional digits, parsed by [`sluice_schema::time`]) and its stream. A
//! line that does not match its framing is a [`FramingError`] naming what is
//! wrong; the caller ships the raw bytes instead and counts it.

use std::borrow::Cow;

use serde::Deserialize;
use sluice_schema::pb::Stream;
use sluice_schema::time::parse_rfc3339_nanos;

/// How a layout's files encode lines; chosen by [`Layout::framing`](super::Layout::framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Newline-delimited text, no time or stream in the line (native,
    /// Thermos, Mesos and Nomad layouts).
    Plain,
    /// CRI: `<time> <stream> <P|F> <message>`, `P` continuing in the next
    /// line (the Kubernetes layout).
    Cri,
    /// Docker json-file: one JSON object per line, `log` without a trailing
    /// newline continues in the next (the Docker layout).
    DockerJson,
}

/// One physical line, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message, without framing or trailing newline.
    pub text: Cow<'a, [u8]>,
    /// Time from the framing, nanoseconds since the Unix epoch.
    pub ts_unix_nanos: Option<i64>,
    /// Stream from the framing.
    pub stream: Option<Stream>,
    /// The line continues in the next frame.
    pub partial: bool,
}

/// A physical line that does not match its framing. The tailer ships the
/// raw bytes as the line's text and counts the error; nothing is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{framing:?} framing: {problem}")]
pub struct FramingError {
    /// The framing the line was decoded with.
    pub framing: Framing,
    /// What does not match, e.g. an unknown CRI tag or invalid JSON; may quote part of the line.
    pub problem: String,
}

impl Framing {
    /// Decodes one physical line (without its `\n`).
    pub fn decode<'a>(self, raw: &'a [u8]) -> Result<Frame<'a>, FramingError> {
        match self {
            Framing::Plain => Ok(Frame {
                text: Cow::Borrowed(raw),
                ts_unix_nanos: None,
                stream: None,
                partial: false,
            }),
            Framing::Cri => decode_cri(raw),
            Framing::DockerJson => decode_docker(raw),
        }
    }
}

impl FramingError {
    fn new(framing: Framing, problem: impl Into<String>) -> Self {
        FramingError {
            framing,
            problem: problem.into(),
        }
    }
}

/// `<RFC3339Nano> <stdout|stderr> <tag> <message>`, as kubelet's CRI
/// runtimes write it. The tag is `F` (full) or `P` (partial), optionally
/// followed by `:`-separated extra tags, which are ignored (kubelet reads only
/// the first one too). The message is the rest of the line, possibly empty,
/// and is not required to be UTF-8; the separator before an empty message
/// may be missing.
fn decode_cri(raw: &[u8]) -> Result<Frame<'_>, FramingError> {
    let err = |problem: String| FramingError::new(Framing::Cri, problem);
    let mut fields = raw.splitn(4, |&b| b == b' ');
    let ts = fields.next().unwrap_or_default();
    let (Some(stream), Some(tag)) = (fields.next(), fields.next()) else {
        return Err(err(format!(
            "expected \"<time> <stream> <P|F> <message>\", got {}",
            snippet(raw)
        )));
    };
    let text = fields.next().unwrap_or_default();

    let ts = std::str::from_utf8(ts)
        .map_err(|_| err(format!("timestamp {} is not utf-8", snippet(ts))))?;
    let ts = parse_rfc3339_nanos(ts).map_err(|e| err(e.to_string()))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(err(format!(
                "unknown stream {}, expected stdout or stderr",
                snippet(other)
            )));
        }
    };
    let partial = match tag.split(|&b| b == b':').next().unwrap_or_default() {
        b"P" => true,
        b"F" => false,
        _ => {
            return Err(err(format!(
                "unknown tag {}, expected P or F",
                snippet(tag)
            )));
        }
    };
    Ok(Frame {
        text: Cow::Borrowed(text),
        ts_unix_nanos: Some(ts),
        stream: Some(stream),
        partial,
    })
}

/// One line of Docker's json-file driver. Other fields (`attrs`, when the
/// daemon is told to log labels or env) are ignored.
#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// `{"log":"…\n","stream":"stdout","time":"…"}`. `log` ends with `\n`
/// when the line is complete; the daemon splits lines longer than 16 KiB
/// into entries without it, which are partial. The text borrows from the raw
/// line only when `log` holds no JSON escape, which a complete line's `\n`
/// is: complete lines are copied once.
fn decode_docker(raw: &[u8]) -> Result<Frame<'_>, FramingError> {
    let err = |problem: String| FramingError::new(Framing::DockerJson, problem);
    let line: DockerLine<'_> =
        serde_json::from_slice(raw).map_err(|e| err(format!("invalid json-file entry: {e}")))?;
    let stream = match &*line.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        other => {
            return Err(err(format!(
                "unknown stream {other:?}, expected stdout or stderr"
            )));
        }
    };
    let ts = parse_rfc3339_nanos(&line.time).map_err(|e| err(e.to_string()))?;
    let partial = !line.log.ends_with('\n');
    let text = match line.log {
        Cow::Borrowed(log) => Cow::Borrowed(log.strip_suffix('\n').unwrap_or(log).as_bytes()),
        Cow::Owned(mut log) => {
            if !partial {
                log.pop();
            }
            Cow::Owned(log.into_bytes())
        }
    };
    Ok(Frame {
        text,
        ts_unix_nanos: Some(ts),
        stream: Some(stream),
        partial,
    })
}

/// At most 40 bytes of `bytes`, quoted with escapes, for error messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{shown:?}…")
    } else {
        format!("{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_763_708_820_123_456_789; // 2025-11-21T07:07:00.123456789Z

    fn frame(text: &[u8], ts: i64, stream: Stream, partial: bool) -> Frame<'_> {
        Frame {
            text: Cow::Borrowed(text),
            ts_unix_nanos: Some(ts),
            stream: Some(stream),
            partial,
        }
    }

    #[test]
    fn plain_lines_pass_through() {
        let f = Framing::Plain.decode(b"GET / 200\r").unwrap();
        assert_eq!(f.text, &b"GET / 200\r"[..]);
        assert_eq!((f.ts_unix_nanos, f.stream, f.partial), (None, None, false));
    }

    #[test]
    fn cri_full_lines() {
        // As containerd writes them under /var/log/pods.
        let line =
            b"2025-11-21T07:07:00.123456789Z stdout F 10.0.0.7 - - \"GET /healthz HTTP/1.1\" 200 2";
        assert_eq!(
            Framing::Cri.decode(line).unwrap(),
            frame(
                b"10.0.0.7 - - \"GET /healthz HTTP/1.1\" 200 2",
                T0,
                Stream::Stdout,
                false
            )
        );
        // CRI-O writes a local offset and fewer digits.
        let line = b"2025-11-21T08:07:00.1234+01:00 stderr F panic: boom";
        assert_eq!(
            Framing::Cri.decode(line).unwrap(),
            frame(b"panic: boom", T0 - 56_789, Stream::Stderr, false)
        );
    }

    #[test]
    fn cri_partial_then_full() {
        let p = Framing::Cri
            .decode(b"2025-11-21T07:07:00.123456789Z stdout P {\"msg\":\"a very long ")
            .unwrap();
        let f = Framing::Cri
            .decode(b"2025-11-21T07:07:00.123456789Z stdout F line\"}")
            .unwrap();
        assert_eq!(
            p,
            frame(b"{\"msg\":\"a very long ", T0, Stream::Stdout, true)
        );
        assert_eq!(f, frame(b"line\"}", T0, Stream::Stdout, false));
        let joined = [&*p.text, &*f.text].concat();
        assert_eq!(joined, b"{\"msg\":\"a very long line\"}");
    }

    #[test]
    fn cri_empty_messages_extra_tags_and_spaces() {
        let with_sep = Framing::Cri
            .decode(b"2025-11-21T07:07:00.123456789Z stdout F ")
            .unwrap();
        assert_eq!(with_sep, frame(b"", T0, Stream::Stdout, false));
        let without = Framing::Cri
            .decode(b"2025-11-21T07:07:00.123456789Z stdout F")
            .unwrap();
        assert_eq!(without, frame(b"", T0, Stream::Stdout, false));
        let tagged = Framing::Cri
            .decode(b"2025-11-21T07:07:00.123456789Z stderr P:x-extra:y   indented ")
            .unwrap();
        assert_eq!(tagged, frame(b"  indented ", T0, Stream::Stderr, true));
        // Invalid UTF-8 in the message is kept as written.
        let bytes = b"2025-11-21T07:07:00.123456789Z stdout F caf\xe9";
        assert_eq!(Framing::Cri.decode(bytes).unwrap().text, &b"caf\xe9"[..]);
    }

    #[test]
    fn cri_malformed_lines_name_the_problem() {
        for (line, problem) in [
            (
                &b""[..],
                "expected \"<time> <stream> <P|F> <message>\", got \"\"",
            ),
            (
                b"plain text from a misconfigured runtime",
                "invalid rfc 3339 timestamp \"plain\": too short",
            ),
            (
                b"2025-11-21T07:07:00Z stdout",
                "expected \"<time> <stream> <P|F> <message>\", got \"2025-11-21T07:07:00Z stdout\"",
            ),
            (
                b"2025-11-21 07:07:00Z stdout F x",
                "invalid rfc 3339 timestamp \"2025-11-21\": too short",
            ),
            (
                b"2025-11-21T07:07:00Z stdin F x",
                "unknown stream \"stdin\", expected stdout or stderr",
            ),
            (
                b"2025-11-21T07:07:00Z stdout X x",
                "unknown tag \"X\", expected P or F",
            ),
            (
                b"2025-11-21T07:07:00Z stdout  x",
                "unknown tag \"\", expected P or F",
            ),
            (
                b"\xff\xfe stdout F x",
                "timestamp \"\u{fffd}\u{fffd}\" is not utf-8",
            ),
        ] {
            let err = Framing::Cri.decode(line).unwrap_err();
            assert_eq!(err.framing, Framing::Cri);
            assert_eq!(err.problem, problem, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn docker_complete_lines() {
        let line = br#"{"log":"listening on :8080\n","stream":"stdout","time":"2025-11-21T07:07:00.123456789Z"}"#;
        let f = Framing::DockerJson.decode(line).unwrap();
        assert_eq!(f, frame(b"listening on :8080", T0, Stream::Stdout, false));
        // An empty line, and `attrs` from `--log-opt labels=...`.
        let line = br#"{"log":"\n","stream":"stderr","attrs":{"app":"web"},"time":"2025-11-21T07:07:00.123456789Z"}"#;
        assert_eq!(
            Framing::DockerJson.decode(line).unwrap(),
            frame(b"", T0, Stream::Stderr, false)
        );
    }

    #[test]
    fn docker_escapes_are_decoded() {
        let line = br#"{"log":"\u001b[31mERROR\u001b[0m \"quoted\" tab\there back\\slash caf\u00e9 \ud83d\ude00\r\n","stream":"stderr","time":"2025-11-21T07:07:00.123456789Z"}"#;
        let f = Framing::DockerJson.decode(line).unwrap();
        assert!(matches!(f.text, Cow::Owned(_)));
        assert_eq!(
            std::str::from_utf8(&f.text).unwrap(),
            "\u{1b}[31mERROR\u{1b}[0m \"quoted\" tab\there back\\slash café 😀\r"
        );
        assert_eq!((f.stream, f.partial), (Some(Stream::Stderr), false));
    }

    #[test]
    fn docker_16k_split_is_partial_then_complete() {
        // The daemon cuts lines at 16 KiB: the first entry has no newline.
        let head = "x".repeat(16 * 1024);
        let first = format!(
            r#"{{"log":"{head}","stream":"stdout","time":"2025-11-21T07:07:00.123456789Z"}}"#
        );
        let second =
            r#"{"log":"tail\"end\n","stream":"stdout","time":"2025-11-21T07:07:00.123456790Z"}"#;
        let a = Framing::DockerJson.decode(first.as_bytes()).unwrap();
        let b = Framing::DockerJson.decode(second.as_bytes()).unwrap();
        assert!(a.partial);
        assert!(matches!(a.text, Cow::Borrowed(_)), "no escape, no copy");
        assert_eq!(a.text.len(), 16 * 1024);
        assert!(!b.partial);
        assert_eq!(b.ts_unix_nanos, Some(T0 + 1));
        let joined = [&*a.text, &*b.text].concat();
        assert_eq!(joined, format!("{head}tail\"end").into_bytes());
    }

    #[test]
    fn docker_malformed_lines_name_the_problem() {
        for (line, problem) in [
            (
                &br#"{"log":"half a line"#[..],
                "invalid json-file entry: EOF while parsing a string at line 1 column 19",
            ),
            (
                b"not json",
                "invalid json-file entry: expected ident at line 1 column 2",
            ),
            (
                br#"{"stream":"stdout","time":"2025-11-21T07:07:00Z"}"#,
                "invalid json-file entry: missing field `log` at line 1 column 49",
            ),
            (
                br#"{"log":"x\n","stream":"stdout"}"#,
                "invalid json-file entry: missing field `time` at line 1 column 31",
            ),
            (
                br#"{"log":7,"stream":"stdout","time":"2025-11-21T07:07:00Z"}"#,
                "invalid json-file entry: invalid type: integer `7`, expected a string at line 1 column 8",
            ),
            (
                br#"{"log":"x\n","stream":"tty","time":"2025-11-21T07:07:00Z"}"#,
                "unknown stream \"tty\", expected stdout or stderr",
            ),
            (
                br#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#,
                "invalid rfc 3339 timestamp \"yesterday\": too short",
            ),
            (
                b"{\"log\":\"caf\xe9\\n\",\"stream\":\"stdout\",\"time\":\"2025-11-21T07:07:00Z\"}",
                "invalid json-file entry: invalid unicode code point at line 1 column 13",
            ),
        ] {
            let err = Framing::DockerJson.decode(line).unwrap_err();
            assert_eq!(err.framing, Framing::DockerJson);
            assert_eq!(err.problem, problem, "{}", String::from_utf8_lossy(line));
        }
        let err = Framing::DockerJson.decode(b"[]").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DockerJson framing: invalid json-file entry"),
            "{err}"
        );
    }

    mod props {
        use proptest::prelude::*;
        use sluice_schema::time::rfc3339_nanos;

        use super::*;

        fn stream() -> impl Strategy<Value = Stream> {
            prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)]
        }

        fn name(stream: Stream) -> &'static str {
            if stream == Stream::Stdout {
                "stdout"
            } else {
                "stderr"
            }
        }

        proptest! {
            #[test]
            fn cri_lines_round_trip(
                ts in any::<i64>(),
                stream in stream(),
                partial in any::<bool>(),
                message in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
            ) {
                let tag = if partial { "P" } else { "F" };
                let mut line = format!("{} {} {tag} ", rfc3339_nanos(ts), name(stream)).into_bytes();
                line.extend_from_slice(&message);
                let frame = Framing::Cri.decode(&line).unwrap();
                prop_assert_eq!(&*frame.text, &message[..]);
                prop_assert_eq!(frame.ts_unix_nanos, Some(ts));
                prop_assert_eq!(frame.stream, Some(stream));
                prop_assert_eq!(frame.partial, partial);
            }

            #[test]
            fn docker_lines_round_trip(
                ts in any::<i64>(),
                stream in stream(),
                partial in any::<bool>(),
                message in "\\PC*",
            ) {
                let message = message.replace('\n', "");
                let log = if partial { message.clone() } else { format!("{message}\n") };
                let line = serde_json::json!({"log": log, "stream": name(stream), "time": rfc3339_nanos(ts)});
                let line = serde_json::to_vec(&line).unwrap();
                let frame = Framing::DockerJson.decode(&line).unwrap();
                prop_assert_eq!(&*frame.text, message.as_bytes());
                prop_assert_eq!(frame.ts_unix_nanos, Some(ts));
                prop_assert_eq!(frame.stream, Some(stream));
                prop_assert_eq!(frame.partial, partial);
            }

            #[test]
            fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..120)) {
                let _ = Framing::Cri.decode(&raw);
                let _ = Framing::DockerJson.decode(&raw);
            }
        }
    }
}
