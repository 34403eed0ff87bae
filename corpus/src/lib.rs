//! Deterministic, realistic logs of cluster jobs, and what is true of them.
//!
//! Sluice's tests and benches need log text that looks like what clusters
//! write (so that tokenizing, compression and search behave as they would in
//! production) and that a clone of the repository can make by itself. A
//! [`Generator`] writes one [`Format`] from a seed: the same seed gives the
//! same bytes on every machine and every run, whatever else changes. The
//! formats are syslog, HDFS data-node logs, Apache/nginx access logs, Java
//! services with stack traces, JSON lines, logfmt, and long or binary-ish
//! lines (base64 dumps, ANSI colours, invalid UTF-8).
//!
//! A generator also plants *needles*: tokens that no other line holds, each
//! in a known number of lines. A [`Cluster`] lays generators out as the
//! instances of jobs, one event every few seconds, and its [`Truths`] say
//! what any correct reader must find: lines per job and per hour, lines per
//! level, which lines hold a word, and where every needle is. Tests compare
//! Sluice's answers with these truths, not only with output blessed earlier.

mod formats;
mod truths;
mod vocab;

use rand::{RngExt as _, SeedableRng as _};
use rand_pcg::Pcg64Mcg;

pub use truths::{NeedleHit, Truths, tokens};

/// A log format the generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// RFC 3164 syslog: sshd, cron, systemd and kernel messages.
    Syslog,
    /// HDFS data-node and name-node lines (`yyMMdd HHmmss pid LEVEL class: …`).
    Hdfs,
    /// Apache/nginx combined access log.
    Access,
    /// A Java service (log4j layout); some errors carry a stack trace
    /// (several lines, `Caused by:` chains).
    Java,
    /// JSON lines with a level, a message, trace and span ids and fields.
    Json,
    /// logfmt (`key=value`) lines.
    Logfmt,
    /// Long and binary-ish lines: base64 and hex dumps, ANSI colours, tabs,
    /// control characters, invalid UTF-8, lines of several KiB.
    Raw,
}

impl Format {
    /// Every format, in a fixed order.
    pub const ALL: [Format; 7] = [
        Format::Syslog,
        Format::Hdfs,
        Format::Access,
        Format::Java,
        Format::Json,
        Format::Logfmt,
        Format::Raw,
    ];

    /// The format's name: `syslog`, `hdfs`, `access`, `java`, `json`,
    /// `logfmt`, `raw`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Syslog => "syslog",
            Format::Hdfs => "hdfs",
            Format::Access => "access",
            Format::Java => "java",
            Format::Json => "json",
            Format::Logfmt => "logfmt",
            Format::Raw => "raw",
        }
    }

    /// The format called `name` (as [`Format::name`] writes it).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// How severe an event is, as the generator meant it (whether or not the
/// format writes a level word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Finest detail; only the raw format's hex frame dumps use it.
    Trace,
    /// Diagnostic detail (debug messages, base64 body dumps).
    Debug,
    /// Normal operation; most events.
    Info,
    /// Something looks wrong but the work goes on (a 4xx response, say).
    Warn,
    /// A request or task failed (a 5xx response, say).
    Error,
    /// The application cannot go on; rare.
    Fatal,
}

impl Level {
    /// Lowercase name: `trace`, `debug`, `info`, `warn`, `error`, `fatal`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

/// One thing an application logged: one line, or several (a stack trace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event's lines without their newlines; never empty.
    pub lines: Vec<Vec<u8>>,
    /// How severe the event is; [`Truths`] counts its lines per level.
    pub level: Level,
    /// The needle this event holds (in its first line), if any.
    pub needle: Option<String>,
}

/// Writes one format's events from a seed.
#[derive(Debug, Clone)]
pub struct Generator {
    format: Format,
    rng: Pcg64Mcg,
    /// Events written so far.
    seq: u64,
    /// One event in `needle_every` holds a needle (0: none).
    needle_every: u64,
    /// Copies of the current needle still to plant.
    needle_left: u32,
    /// The needle being planted.
    needle: Option<String>,
    needles_planted: u64,
    state: formats::State,
}

/// Each needle is planted in this many events, a few events apart.
pub const NEEDLE_COPIES: u32 = 2;

impl Generator {
    /// A generator of `format` from `seed`; it plants no needles.
    pub fn new(format: Format, seed: u64) -> Generator {
        // Formats of one seed differ: the format is part of the stream.
        let mut rng =
            Pcg64Mcg::seed_from_u64(seed ^ (format as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let state = formats::State::new(&mut rng);
        Generator {
            format,
            rng,
            seq: 0,
            needle_every: 0,
            needle_left: 0,
            needle: None,
            needles_planted: 0,
            state,
        }
    }

    /// Plants a needle in about one event in `every` (0: none): each needle
    /// goes into [`NEEDLE_COPIES`] events, then the next one starts.
    pub fn with_needles(mut self, every: u64) -> Generator {
        self.needle_every = every;
        self
    }

    /// The format this generator writes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next event, logged at `ts_unix_nanos` (the time written in the
    /// text, to the millisecond where the format has them).
    pub fn event(&mut self, ts_unix_nanos: i64) -> Event {
        self.seq += 1;
        let needle = self.next_needle();
        let mut event = formats::write(
            self.format,
            &mut self.rng,
            &mut self.state,
            ts_unix_nanos,
            needle.as_deref(),
        );
        event.needle = needle;
        event
    }

    /// The needle the next event holds, if it is its turn.
    fn next_needle(&mut self) -> Option<String> {
        if self.needle_every == 0 {
            return None;
        }
        if self.needle_left == 0 {
            if !self.rng.random_ratio(1, self.needle_every.max(1) as u32) {
                return None;
            }
            self.needles_planted += 1;
            self.needle = Some(formats::needle(
                self.format,
                &mut self.rng,
                self.needles_planted,
            ));
            self.needle_left = NEEDLE_COPIES;
        } else if !self.rng.random_ratio(1, 3) {
            // The copies are a few events apart, not adjacent.
            return None;
        }
        self.needle_left -= 1;
        self.needle.clone()
    }
}

/// One instance of a job in a [`Cluster`]: what it logs and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `role/env/name`.
    pub job: String,
    /// Instance number, from 0.
    pub instance: u32,
    /// The format this instance logs in (its job's).
    pub format: Format,
    /// `(ts_unix_nanos, event)` in time order.
    pub events: Vec<(i64, Event)>,
}

impl Stream {
    /// The stream's lines in order, each with its event's time.
    pub fn lines(&self) -> impl Iterator<Item = (i64, &[u8])> {
        self.events
            .iter()
            .flat_map(|(ts, e)| e.lines.iter().map(move |l| (*ts, l.as_slice())))
    }
}

/// How a [`Cluster`] is laid out.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Seed of the whole cluster; each stream's generator seed is derived from
    /// it and the stream's job and instance.
    pub seed: u64,
    /// `(job, format)`; each job has `instances` instances.
    pub jobs: Vec<(String, Format)>,
    /// Instances per job, numbered from 0.
    pub instances: u32,
    /// The first event's time.
    pub start_unix_nanos: i64,
    /// Time between two events of one instance.
    pub every_nanos: i64,
    /// Events per instance.
    pub events: usize,
    /// One event in about this many holds a needle (0: none).
    pub needle_every: u64,
}

/// The logs of a few jobs, instance by instance.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// One stream per instance, job by job in the spec's order, instances
    /// ascending.
    pub streams: Vec<Stream>,
}

impl Cluster {
    /// Generates every stream of `spec`. Instance `i` of job `j` starts
    /// `j` seconds and `i` half-seconds after the start, so no two streams
    /// log at the same instant.
    pub fn generate(spec: &ClusterSpec) -> Cluster {
        const SECOND: i64 = 1_000_000_000;
        let mut streams = Vec::new();
        for (j, (job, format)) in spec.jobs.iter().enumerate() {
            for instance in 0..spec.instances {
                let seed = spec.seed
                    ^ ((j as u64) << 32 | u64::from(instance)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
                let mut generator = Generator::new(*format, seed).with_needles(spec.needle_every);
                let offset = j as i64 * SECOND + i64::from(instance) * SECOND / 2;
                let events = (0..spec.events)
                    .map(|n| {
                        let ts = spec.start_unix_nanos + n as i64 * spec.every_nanos + offset;
                        (ts, generator.event(ts))
                    })
                    .collect();
                streams.push(Stream {
                    job: job.clone(),
                    instance,
                    format: *format,
                    events,
                });
            }
        }
        Cluster { streams }
    }

    /// What is true of these logs; `words` are the words whose lines are
    /// counted (see [`Truths::lines_with_word`]).
    pub fn truths(&self, words: &[&str]) -> Truths {
        Truths::of(self, words)
    }
}

/// `events` events of each format in `formats` from `seed`, one event
/// every second from `start_unix_nanos`, needles in about one event in
/// 1,000: one "file" per format, as `(format name, lines)`.
pub fn files(
    formats: &[Format],
    seed: u64,
    events: usize,
    start_unix_nanos: i64,
) -> Vec<(String, Vec<Vec<u8>>)> {
    formats
        .iter()
        .map(|&format| {
            let mut generator = Generator::new(format, seed).with_needles(1000);
            let lines = (0..events)
                .flat_map(|n| {
                    generator
                        .event(start_unix_nanos + n as i64 * 1_000_000_000)
                        .lines
                })
                .collect();
            (format.name().to_string(), lines)
        })
        .collect()
}

#[cfg(test)]
mod tests;
