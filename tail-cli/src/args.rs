//! `tailll`'s flags (clap), and the small parsers behind them: instance
//! lists (`0,2-5`), durations (`90s`, `1h30m`) and `--since` points.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sluice_schema::glob::JobGlob;

/// Most instances a `-i` list may name (the scheduler's own limit).
pub const MAX_LISTED_INSTANCES: usize = 10_000;

/// `tailll`'s command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tailll",
    version,
    about = "Every instance of a Sluice job, live, in one terminal",
    args_override_self = true,
    after_help = "The cluster is found like `sluice` finds it: --data-dir's client.toml \
                  (SLUICE_DATA_DIR), or SLUICE_ADDR and SLUICE_TOKEN.\n\
                  Examples:\n  tailll www/prod/web\n  tailll 'www/prod/*' -i 0,2-5 -g ERROR\n  \
                  tailll www/prod/web --level warn\n  \
                  tailll batch/prod/etl --no-follow -n 100 --output json"
)]
pub struct Args {
    /// The job, `role/env/name`, or a glob of them (`www/prod/*`, `www`).
    #[arg(value_name = "ROLE/ENV/NAME", value_parser = parse_glob)]
    pub job: JobGlob,

    /// Lines of backfill per instance [default: 10, or all since --since].
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<u32>,
    /// Backfill what was written since then: a duration ago (`90s`, `15m`,
    /// `2h`, `1d`, `1h30m`) or an RFC 3339 time.
    #[arg(long, value_name = "D", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only these instances: `3`, `0,2-5`.
    #[arg(short = 'i', long, value_name = "LIST", value_parser = parse_instances)]
    pub instances: Option<Instances>,
    /// Only this stream.
    #[arg(long, value_enum)]
    pub stream: Option<StreamArg>,
    /// Only this process's lines (repeatable).
    #[arg(long = "process", value_name = "NAME")]
    pub processes: Vec<String>,
    /// Only lines matching this regular expression (Rust syntax), applied
    /// on the nodes.
    #[arg(short = 'g', long = "grep", value_name = "REGEX")]
    pub grep: Option<String>,
    /// With --grep: the lines that do not match.
    #[arg(short = 'v', long, requires = "grep")]
    pub invert: bool,
    /// Only lines at this level or above (trace, debug, info, warn, error,
    /// fatal), read on the nodes from each line as the archive reads it:
    /// JSON and logfmt level keys, or a level word near a plain line's
    /// start. Lines that name no level are left out.
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<sluice_schema::fields::Level>,
    /// Print the backfill and exit.
    #[arg(long)]
    pub no_follow: bool,

    /// How lines are printed. json: one object per line with its identity
    /// and offset (invalid UTF-8 replaced by U+FFFD).
    #[arg(long, value_enum, default_value = "prefixed")]
    pub output: OutputArg,
    /// Print each line through a template instead: `{instance} {line}`;
    /// fields: ts, time, job, role, env, name, instance, run, host, stream,
    /// process, task_id, source_id, offset, line, and what the line says of
    /// itself: level, message, trace_id, span_id, fields.NAME (a JSON or
    /// logfmt line's field; empty when absent); `{{` for a brace.
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Add the host to each line's prefix.
    #[arg(short = 'H', long = "host")]
    pub host: bool,
    /// Add the run number to each line's prefix.
    #[arg(long)]
    pub run: bool,
    /// One colour per instance; auto: when stdout is a terminal and
    /// NO_COLOR is not set.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
    /// Hide lifecycle lines (restarts, reschedules, scaling).
    #[arg(short, long)]
    pub quiet: bool,

    /// Lines of different instances that arrive this close together are
    /// printed in timestamp order (each instance's own order always holds).
    #[arg(long, value_name = "D", default_value = "30ms", value_parser = parse_duration)]
    pub reorder_window: Duration,
    /// Print lines as they arrive, for the lowest latency.
    #[arg(long)]
    pub unordered: bool,

    /// The data directory of a `sluice up`; its client.toml says where the
    /// cluster is and holds the token.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// The scheduler, `https://HOST:PORT`, instead of client.toml's.
    #[arg(long = "addr", env = "SLUICE_ADDR", hide = true)]
    pub addr: Option<String>,
    /// The token, instead of client.toml's.
    #[arg(
        long = "token",
        env = "SLUICE_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The CA (PEM file) the services' certificates are checked against,
    /// instead of client.toml's.
    #[arg(long, env = "SLUICE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// How often to ask the scheduler where the instances are.
    #[arg(long, hide = true, default_value = "1s", value_parser = parse_duration)]
    pub refresh: Duration,
}

impl Args {
    /// Backfill lines asked of each shipper: `-n`, else 10, else (with
    /// `--since` alone) no limit.
    pub fn backfill_lines(&self) -> u32 {
        match (self.lines, &self.since) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            (None, None) => 10,
        }
    }
}

/// `--stream`: which of the processes' output streams to show.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamArg {
    /// Standard output
    Stdout,
    /// Standard error
    Stderr,
}

/// `--output`: how each line is printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputArg {
    /// Each line after its instance in brackets: `[3] text`
    Prefixed,
    /// The line's bytes as written, nothing added
    Raw,
    /// One JSON object per line, with its identity and offset
    Json,
}

/// `--color`: when instance prefixes are coloured.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorArg {
    /// When stdout is a terminal and NO_COLOR is not set
    Auto,
    /// Even into a pipe or with NO_COLOR set
    Always,
    /// No colour escapes at all
    Never,
}

/// Instances to show, sorted, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances(pub Vec<u32>);

impl Instances {
    /// Whether `instance` is listed (a binary search: the list is sorted).
    pub fn contains(&self, instance: u32) -> bool {
        self.0.binary_search(&instance).is_ok()
    }
}

/// Where `--since` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// A duration before now (`--since 15m`).
    Ago(Duration),
    /// An instant in Unix nanoseconds (`--since` with an RFC 3339 time).
    At(i64),
}

impl Since {
    /// Nanoseconds since the Unix epoch, `now` being the current time.
    pub fn unix_nanos(&self, now: i64) -> i64 {
        match self {
            Since::Ago(d) => now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Since::At(t) => *t,
        }
    }
}

fn parse_glob(text: &str) -> Result<JobGlob, String> {
    JobGlob::parse(text).map_err(|e| e.to_string())
}

/// `3`, `0,2-5`: single instances and inclusive ranges.
pub fn parse_instances(text: &str) -> Result<Instances, String> {
    let mut all = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} in {text:?} is not an instance number"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("range {part:?} runs backwards"));
        }
        if (last - first) as usize >= MAX_LISTED_INSTANCES
            || all.len() + (last - first) as usize >= MAX_LISTED_INSTANCES
        {
            return Err(format!(
                "{text:?} names more than {MAX_LISTED_INSTANCES} instances"
            ));
        }
        all.extend(first..=last);
    }
    all.sort_unstable();
    all.dedup();
    Ok(Instances(all))
}

pub use sluice_schema::time::parse_duration;

/// A duration ago, or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if text.contains(':') {
        return sluice_schema::time::parse_rfc3339_nanos(text)
            .map(Since::At)
            .map_err(|e| e.to_string());
    }
    parse_duration(text).map(Since::Ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tailll").chain(args.iter().copied()))
    }

    #[test]
    fn instance_lists() {
        assert_eq!(parse_instances("3").unwrap(), Instances(vec![3]));
        assert_eq!(
            parse_instances("0,2-5").unwrap(),
            Instances(vec![0, 2, 3, 4, 5])
        );
        assert_eq!(
            parse_instances("5, 1-2,2").unwrap(),
            Instances(vec![1, 2, 5])
        );
        assert!(parse_instances("5-2").unwrap_err().contains("backwards"));
        assert!(parse_instances("a").unwrap_err().contains("\"a\""));
        assert!(parse_instances("1,").is_err());
        assert!(parse_instances("-3").is_err());
        assert!(
            parse_instances("0-4294967295")
                .unwrap_err()
                .contains("more than")
        );
        assert!(parse_instances("0-9999").is_ok());
        let set = parse_instances("0,2-5").unwrap();
        assert!(set.contains(4) && !set.contains(1) && !set.contains(6));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn since_is_a_duration_or_a_time() {
        assert_eq!(parse_since("15m"), Ok(Since::Ago(Duration::from_secs(900))));
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z"),
            Ok(Since::At(1_000_000_000))
        );
        assert!(parse_since("1970-01-01T00:00:01").is_err());
        assert_eq!(
            Since::Ago(Duration::from_secs(1)).unix_nanos(5_000_000_000),
            4_000_000_000
        );
    }

    #[test]
    fn flags() {
        let a = parse(&[
            "www/prod/*",
            "-i",
            "0,2-3",
            "-g",
            "ERR",
            "-v",
            "-H",
            "--run",
            "--level",
            "WARNING",
        ])
        .unwrap();
        assert_eq!(a.level, Some(sluice_schema::fields::Level::Warn));
        let err = parse(&["www", "--level", "loud"]).unwrap_err().to_string();
        assert!(err.contains("unknown level \"loud\""), "{err}");
        assert_eq!(a.job.as_str(), "www/prod/*");
        assert_eq!(a.instances, Some(Instances(vec![0, 2, 3])));
        assert_eq!(a.grep.as_deref(), Some("ERR"));
        assert!(a.invert && a.host && a.run && !a.no_follow);
        assert_eq!(a.output, OutputArg::Prefixed);
        assert_eq!(a.reorder_window, Duration::from_millis(30));
        assert_eq!(a.backfill_lines(), 10);

        let a = parse(&[
            "www", "--since", "2h", "--stream", "stderr", "--output", "json",
        ])
        .unwrap();
        assert_eq!(a.backfill_lines(), 0, "--since alone: everything since");
        assert_eq!(a.stream, Some(StreamArg::Stderr));
        assert_eq!(a.output, OutputArg::Json);
        let a = parse(&["www", "--since", "2h", "-n", "5"]).unwrap();
        assert_eq!(a.backfill_lines(), 5);

        assert!(parse(&["a/b/c/d"]).is_err(), "four segments");
        assert!(parse(&["www", "-v"]).is_err(), "-v needs -g");
        assert!(parse(&["www", "--output", "xml"]).is_err());
        assert!(parse(&[]).is_err(), "a job is required");
    }
}
