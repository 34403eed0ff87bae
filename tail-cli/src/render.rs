//! Lines and lifecycle notices as text: prefixed (`[3] text`, one colour
//! per instance), raw (the line's bytes as written), JSON (one object per
//! line) or a user's template.
//!
//! Text is bytes in Sluice (a line may be invalid UTF-8): raw and template
//! output write them unchanged (for pipes); prefixed output, meant for a
//! terminal, and JSON, whose strings are Unicode, write the lossy UTF-8
//! string (each invalid sequence replaced by U+FFFD).

use std::borrow::Cow;
use std::io::Write as _;

use serde::Serialize;
use sluice_schema::fields;
use sluice_schema::pb::{Line, Source, Stream};

/// Foreground colours for instance prefixes: the six colours and their
/// bright versions (no black or white: one of them is the background).
const PALETTE: [&str; 12] = [
    "32", "33", "34", "35", "36", "31", "92", "93", "94", "95", "96", "91",
];
const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// A lifecycle line: what happened to an instance (or a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// When it happened, in Unix nanoseconds.
    pub ts: i64,
    /// Job key it is about; empty for a node-wide event.
    pub job: String,
    /// The instance it is about; `None` when about no one instance (the prefix
    /// shows `*`).
    pub instance: Option<u32>,
    /// What happened, without prefix: `restarted on node-2 (run 4): exit 137`.
    pub text: String,
}

/// How lines and notices are printed (`--output`, `--template`).
#[derive(Debug, Clone)]
pub enum Format {
    /// `[3] text`: a prefix as [`Style`] says, then the text as lossy UTF-8.
    Prefixed,
    /// The line's bytes unchanged; notices go to stderr.
    Raw,
    /// One JSON object per line or notice.
    Json,
    /// Each line through a `--template`, bytes unchanged; notices go to stderr.
    Template(Template),
}

/// What prefixed output puts in each prefix, and whether it colours it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Colour each prefix (one colour per instance) and dim notices.
    pub color: bool,
    /// Add the node name to prefixes of lines (`-H`).
    pub host: bool,
    /// Add the run number to prefixes of lines (`--run`).
    pub run: bool,
    /// Name the job in prefixes (the glob can match several).
    pub job: bool,
}

/// Turns lines and notices into bytes in one [`Format`], keeping prefixes
/// aligned.
pub struct Renderer {
    format: Format,
    style: Style,
    /// Digits of the widest instance number so far, for aligned prefixes.
    width: usize,
}

impl Renderer {
    /// A renderer whose prefixes start one digit wide.
    pub fn new(format: Format, style: Style) -> Self {
        Renderer {
            format,
            style,
            width: 1,
        }
    }

    /// Makes prefixes wide enough for instances up to `max`.
    pub fn widen(&mut self, max: u32) {
        self.width = self.width.max(digits(max));
    }

    /// Appends `line` of `source` to `out`, ended by a newline.
    pub fn line(&mut self, out: &mut Vec<u8>, source: &Source, line: &Line) {
        match &self.format {
            Format::Raw => out.extend_from_slice(&line.text),
            Format::Prefixed => {
                self.widen(source.instance);
                self.prefix(
                    out,
                    &source.job,
                    Some(source.instance),
                    source.run,
                    &source.host,
                );
                out.extend_from_slice(String::from_utf8_lossy(&line.text).as_bytes());
            }
            Format::Json => {
                let object = JsonLine {
                    ts: line.ts_unix_nanos,
                    job: &source.job,
                    instance: source.instance,
                    run: source.run,
                    host: &source.host,
                    stream: stream_name(source.stream),
                    process: &source.process,
                    task_id: &source.task_id,
                    source_id: format!("{:016x}", source.source_id),
                    offset: line.offset,
                    line: String::from_utf8_lossy(&line.text),
                    partial: line.partial,
                    unterminated: line.unterminated,
                };
                serde_json::to_writer(&mut *out, &object).expect("writing to a Vec");
            }
            Format::Template(template) => template.render(out, source, line),
        }
        out.push(b'\n');
    }

    /// A lifecycle notice: into `out` with the lines (prefixed, JSON), or
    /// into `err` (raw and template output keep stdout for lines).
    pub fn notice(&mut self, out: &mut Vec<u8>, err: &mut Vec<u8>, notice: &Notice) {
        match &self.format {
            Format::Prefixed => {
                self.prefix(out, &notice.job, notice.instance, 0, "");
                if self.style.color {
                    out.extend_from_slice(DIM.as_bytes());
                }
                out.extend_from_slice(notice.text.as_bytes());
                if self.style.color {
                    out.extend_from_slice(RESET.as_bytes());
                }
                out.push(b'\n');
            }
            Format::Json => {
                let object = JsonNotice {
                    ts: notice.ts,
                    job: &notice.job,
                    instance: notice.instance,
                    lifecycle: &notice.text,
                };
                serde_json::to_writer(&mut *out, &object).expect("writing to a Vec");
                out.push(b'\n');
            }
            Format::Raw | Format::Template(_) => {
                let _ = write!(err, "tailll: ");
                self.plain_prefix(err, &notice.job, notice.instance);
                let _ = writeln!(err, "{}", notice.text);
            }
        }
    }

    fn prefix(&self, out: &mut Vec<u8>, job: &str, instance: Option<u32>, run: u32, host: &str) {
        if self.style.color {
            let colour = PALETTE[colour_index(job, instance.unwrap_or(0))];
            let _ = write!(out, "\x1b[{colour}m");
        }
        out.push(b'[');
        if self.style.job {
            let _ = write!(out, "{job} ");
        }
        match instance {
            Some(i) => {
                let _ = write!(out, "{i:>width$}", width = self.width);
            }
            None => {
                let _ = write!(out, "{:>width$}", "*", width = self.width);
            }
        }
        if self.style.run && !host.is_empty() {
            let _ = write!(out, " run {run}");
        }
        if self.style.host && !host.is_empty() {
            let _ = write!(out, " {host}");
        }
        out.push(b']');
        if self.style.color {
            out.extend_from_slice(RESET.as_bytes());
        }
        out.push(b' ');
    }

    fn plain_prefix(&self, out: &mut Vec<u8>, job: &str, instance: Option<u32>) {
        let _ = match (self.style.job, instance) {
            (true, Some(i)) => write!(out, "[{job} {i}] "),
            (true, None) => write!(out, "[{job}] "),
            (false, Some(i)) => write!(out, "[{i}] "),
            (false, None) => Ok(()),
        };
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: i64,
    job: &'a str,
    instance: u32,
    run: u32,
    host: &'a str,
    stream: &'static str,
    process: &'a str,
    task_id: &'a str,
    source_id: String,
    offset: u64,
    line: Cow<'a, str>,
    #[serde(skip_serializing_if = "is_false")]
    partial: bool,
    #[serde(skip_serializing_if = "is_false")]
    unterminated: bool,
}

#[derive(Serialize)]
struct JsonNotice<'a> {
    ts: i64,
    job: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<u32>,
    lifecycle: &'a str,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A `Stream` value as JSON output and templates write it: `stdout`,
/// `stderr` or `unknown`.
pub fn stream_name(stream: i32) -> &'static str {
    match Stream::try_from(stream) {
        Ok(Stream::Stdout) => "stdout",
        Ok(Stream::Stderr) => "stderr",
        _ => "unknown",
    }
}

fn digits(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Consecutive instances of one job get different colours.
fn colour_index(job: &str, instance: u32) -> usize {
    // FNV-1a: stable across runs, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash.wrapping_add(u64::from(instance)) % PALETTE.len() as u64) as usize
}

/// What `{name}` in a template stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Ts,
    Time,
    Job,
    Role,
    Env,
    Name,
    Instance,
    Run,
    Host,
    Stream,
    Process,
    TaskId,
    SourceId,
    Offset,
    Line,
    Level,
    Message,
    TraceId,
    SpanId,
}

impl Field {
    const ALL: [(&'static str, Field); 19] = [
        ("ts", Field::Ts),
        ("time", Field::Time),
        ("job", Field::Job),
        ("role", Field::Role),
        ("env", Field::Env),
        ("name", Field::Name),
        ("instance", Field::Instance),
        ("run", Field::Run),
        ("host", Field::Host),
        ("stream", Field::Stream),
        ("process", Field::Process),
        ("task_id", Field::TaskId),
        ("source_id", Field::SourceId),
        ("offset", Field::Offset),
        ("line", Field::Line),
        ("level", Field::Level),
        ("message", Field::Message),
        ("trace_id", Field::TraceId),
        ("span_id", Field::SpanId),
    ];

    /// Read from the line's text by [`sluice_schema::fields::parse`].
    fn is_parsed(self) -> bool {
        matches!(
            self,
            Field::Level | Field::Message | Field::TraceId | Field::SpanId
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
    /// `{fields.NAME}`: a JSON or logfmt line's field.
    Named(String),
}

/// `--template`: text with `{field}`s; `{{` and `}}` are braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a `--template`; the error names an unknown field or a lone `}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    if let Some(field) = name.strip_prefix("fields.").filter(|f| !f.is_empty()) {
                        if !literal.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut literal)));
                        }
                        parts.push(Part::Named(field.to_string()));
                        continue;
                    }
                    let field = Field::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            let known: Vec<&str> = Field::ALL.iter().map(|(n, _)| *n).collect();
                            format!(
                                "template {text:?}: unknown field {{{name}}}; fields are {}, \
                                 and fields.NAME for a JSON or logfmt line's field NAME",
                                known.join(", ")
                            )
                        })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return Err(format!("template {text:?}: a lone `}}` (write `}}}}`)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    fn render(&self, out: &mut Vec<u8>, source: &Source, line: &Line) {
        let lossy = String::from_utf8_lossy(&line.text);
        let parsed = self
            .parts
            .iter()
            .any(|p| matches!(p, Part::Named(_)) || matches!(p, Part::Field(f) if f.is_parsed()))
            .then(|| fields::parse(lossy.as_bytes()));
        let parsed = parsed.as_ref();
        let text = |value: Option<&str>| value.unwrap_or_default().as_bytes().to_vec();
        let mut segments = source.job.splitn(3, '/');
        let (role, env, name) = (
            segments.next().unwrap_or_default(),
            segments.next().unwrap_or_default(),
            segments.next().unwrap_or_default(),
        );
        for part in &self.parts {
            let _ = match part {
                Part::Text(t) => out.write_all(t.as_bytes()),
                Part::Named(name) => out.write_all(&text(parsed.and_then(|p| p.field(name)))),
                Part::Field(f) => match f {
                    Field::Level => {
                        out.write_all(&text(parsed.and_then(|p| p.level).map(|l| l.as_str())))
                    }
                    Field::Message => {
                        out.write_all(&text(parsed.and_then(|p| p.message.as_deref())))
                    }
                    Field::TraceId => {
                        out.write_all(&text(parsed.and_then(|p| p.trace_id.as_deref())))
                    }
                    Field::SpanId => {
                        out.write_all(&text(parsed.and_then(|p| p.span_id.as_deref())))
                    }
                    Field::Ts => write!(out, "{}", line.ts_unix_nanos),
                    Field::Time => out.write_all(
                        sluice_schema::time::rfc3339_nanos(line.ts_unix_nanos).as_bytes(),
                    ),
                    Field::Job => out.write_all(source.job.as_bytes()),
                    Field::Role => out.write_all(role.as_bytes()),
                    Field::Env => out.write_all(env.as_bytes()),
                    Field::Name => out.write_all(name.as_bytes()),
                    Field::Instance => write!(out, "{}", source.instance),
                    Field::Run => write!(out, "{}", source.run),
                    Field::Host => out.write_all(source.host.as_bytes()),
                    Field::Stream => out.write_all(stream_name(source.stream).as_bytes()),
                    Field::Process => out.write_all(source.process.as_bytes()),
                    Field::TaskId => out.write_all(source.task_id.as_bytes()),
                    Field::SourceId => write!(out, "{:016x}", source.source_id),
                    Field::Offset => write!(out, "{}", line.offset),
                    Field::Line => out.write_all(&line.text),
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(instance: u32) -> Source {
        Source {
            host: "node-1".into(),
            job: "www/prod/web".into(),
            instance,
            task_id: "t-1".into(),
            run: 2,
            process: "main".into(),
            stream: Stream::Stderr as i32,
            source_id: 0xabc,
            ..Default::default()
        }
    }

    fn line(text: &[u8]) -> Line {
        Line {
            offset: 42,
            raw_len: text.len() as u32 + 1,
            ts_unix_nanos: 1_000_000_123,
            text: bytes::Bytes::copy_from_slice(text),
            ..Default::default()
        }
    }

    fn render(format: Format, style: Style, instance: u32, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Renderer::new(format, style).line(&mut out, &source(instance), &line(text));
        out
    }

    #[test]
    fn prefixed_lines() {
        let plain = Style::default();
        assert_eq!(render(Format::Prefixed, plain, 3, b"hello"), b"[3] hello\n");
        let all = Style {
            host: true,
            run: true,
            job: true,
            ..plain
        };
        assert_eq!(
            render(Format::Prefixed, all, 3, b"hello"),
            b"[www/prod/web 3 run 2 node-1] hello\n"
        );
        // Invalid UTF-8: replaced for the terminal, unchanged in raw output.
        assert_eq!(
            render(Format::Prefixed, plain, 0, b"a\xffb"),
            "[0] a\u{fffd}b\n".as_bytes()
        );
        assert_eq!(render(Format::Raw, all, 0, b"a\xffb"), b"a\xffb\n");
    }

    #[test]
    fn prefixes_align_and_colour_per_instance() {
        let mut r = Renderer::new(Format::Prefixed, Style::default());
        r.widen(120);
        let mut out = Vec::new();
        r.line(&mut out, &source(7), &line(b"x"));
        assert_eq!(out, b"[  7] x\n");

        let colour = Style {
            color: true,
            ..Style::default()
        };
        let a = render(Format::Prefixed, colour, 0, b"x");
        let b = render(Format::Prefixed, colour, 1, b"x");
        let a = String::from_utf8(a).unwrap();
        assert!(
            a.starts_with("\x1b[") && a.contains("[0]\x1b[0m x"),
            "{a:?}"
        );
        assert_ne!(
            a.as_bytes()[..8],
            b[..8],
            "instances 0 and 1 differ in colour"
        );
        let indices: std::collections::HashSet<usize> =
            (0..12).map(|i| colour_index("www/prod/web", i)).collect();
        assert_eq!(indices.len(), 12, "twelve instances, twelve colours");
    }

    #[test]
    fn json_lines_carry_identity_and_offset() {
        let out = render(Format::Json, Style::default(), 3, b"caf\xc3\xa9 \xff");
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts"], 1_000_000_123i64);
        assert_eq!(v["job"], "www/prod/web");
        assert_eq!(v["instance"], 3);
        assert_eq!(v["run"], 2);
        assert_eq!(v["host"], "node-1");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["process"], "main");
        assert_eq!(v["task_id"], "t-1");
        assert_eq!(v["source_id"], "0000000000000abc");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["line"], "café \u{fffd}", "lossy UTF-8");
        assert!(v.get("partial").is_none());
    }

    #[test]
    fn notices_go_with_lines_or_to_stderr() {
        let n = Notice {
            ts: 5,
            job: "www/prod/web".into(),
            instance: Some(3),
            text: "restarted on node-2 (run 1): exit 137".into(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        Renderer::new(Format::Prefixed, Style::default()).notice(&mut out, &mut err, &n);
        assert_eq!(out, b"[3] restarted on node-2 (run 1): exit 137\n");
        assert!(err.is_empty());

        let (mut out, mut err) = (Vec::new(), Vec::new());
        Renderer::new(Format::Json, Style::default()).notice(&mut out, &mut err, &n);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["lifecycle"], "restarted on node-2 (run 1): exit 137");
        assert_eq!(v["instance"], 3);
        assert!(v.get("line").is_none());

        let (mut out, mut err) = (Vec::new(), Vec::new());
        Renderer::new(Format::Raw, Style::default()).notice(&mut out, &mut err, &n);
        assert!(out.is_empty());
        assert_eq!(err, b"tailll: [3] restarted on node-2 (run 1): exit 137\n");
    }

    #[test]
    fn templates() {
        let t = Template::parse("{{{role}}} {env}/{name}#{instance}.{run}@{host} {stream} {process} {task_id} {source_id}:{offset} {ts} {time} {line}").unwrap();
        let out = render(Format::Template(t), Style::default(), 3, b"hi");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{www} prod/web#3.2@node-1 stderr main t-1 0000000000000abc:42 1000000123 1970-01-01T00:00:01.000000123Z hi\n"
        );
        let err = Template::parse("{nope}").unwrap_err();
        assert!(
            err.contains("unknown field {nope}") && err.contains("instance"),
            "{err}"
        );
        assert!(Template::parse("a } b").is_err());
        let t = Template::parse(
            "{level}|{message}|{trace_id}|{span_id}|{fields.user}|{fields.http.code}|{fields.none}",
        )
        .unwrap();
        let json = br#"{"level":"WARNING","msg":"slow","trace_id":"t1","span_id":"s1","user":"bob","http":{"code":503}}"#;
        let out = render(Format::Template(t.clone()), Style::default(), 3, json);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "warn|slow|t1|s1|bob|503|\n"
        );
        let out = render(
            Format::Template(t.clone()),
            Style::default(),
            3,
            b"ERROR boom",
        );
        assert_eq!(String::from_utf8(out).unwrap(), "error||||||\n");
        let out = render(
            Format::Template(t),
            Style::default(),
            3,
            b"level=info msg=hi user=ann",
        );
        assert_eq!(String::from_utf8(out).unwrap(), "info|hi|||ann||\n");
        let err = Template::parse("{fields.}").unwrap_err();
        assert!(err.contains("fields.NAME"), "{err}");
        assert_eq!(Template::parse("").unwrap().parts, []);
    }
}
