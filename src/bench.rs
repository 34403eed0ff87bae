//! `sluice bench bus`: publish → consume throughput and acknowledgement
//! latency of a bus, with 64 KiB `LogChunk`s of real log lines, next to a
//! baseline measured in the same run on the same bytes (a plain file write
//! with one fsync, and `cat` of that file).
//!
//! CPU time is the process's own (user + system, all threads, from
//! `getrusage`), so MB per CPU-second is comparable across runs on a noisy
//! machine where wall time is not.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use prost::Message as _;
use serde::Serialize;
use sluice_broker::{Bus, BusConfig, BusUrl, FsyncPolicy, Record};
use sluice_schema::pb::{Layout, Line, LogChunk, Source, Stream};
use sluice_schema::topics;

#[derive(Args, Debug)]
pub struct BusBenchArgs {
    /// Bus to measure [default: a new embedded bus in a temporary directory]
    #[arg(long)]
    pub bus: Option<BusUrl>,
    /// Megabytes of payload to publish.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// Size of each LogChunk in KiB.
    #[arg(long, default_value_t = 64)]
    pub chunk_kib: usize,
    /// Records awaiting acknowledgement at once.
    #[arg(long, default_value_t = 256)]
    pub inflight: usize,
    /// Kafka client setting (e.g. `linger.ms=20`, `batch.size=4194304`);
    /// repeatable, applied last.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = crate::up::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// fsync policy of the embedded bus.
    #[arg(long, value_enum, default_value = "batch")]
    pub fsync: FsyncArg,
    /// Directory for the embedded bus and the baseline file [default: system temp]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A directory of `*.log` log samples (e.g. ../shared/corpus/loghub)
    /// [default: the generated corpus, every format of sluice-corpus]
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum FsyncArg {
    Batch,
    Interval,
    Never,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    bytes: u64,
    records: u64,
    wall_s: f64,
    cpu_s: f64,
    mb_per_s: f64,
    mb_per_cpu_s: f64,
    records_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_p99_ms: Option<f64>,
}

impl Phase {
    fn new(name: &str, bytes: u64, records: u64, wall: Duration, cpu: Duration) -> Phase {
        let mb = bytes as f64 / (1 << 20) as f64;
        Phase {
            name: name.into(),
            bytes,
            records,
            wall_s: wall.as_secs_f64(),
            cpu_s: cpu.as_secs_f64(),
            mb_per_s: mb / wall.as_secs_f64(),
            mb_per_cpu_s: mb / cpu.as_secs_f64().max(1e-9),
            records_per_s: records as f64 / wall.as_secs_f64(),
            ack_p50_ms: None,
            ack_p99_ms: None,
        }
    }
}

#[derive(Serialize)]
struct Report {
    bus: String,
    chunk_bytes: usize,
    inflight: usize,
    phases: Vec<Phase>,
}

pub async fn bus(args: BusBenchArgs) -> anyhow::Result<()> {
    let chunks = build_chunks(args.corpus.as_deref(), args.chunk_kib << 10)?;
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let url = args
        .bus
        .clone()
        .unwrap_or_else(|| BusUrl::Embedded(scratch.path().join("bus")));
    let mut config = BusConfig::new(url.clone());
    config.embedded.fsync = match args.fsync {
        FsyncArg::Batch => FsyncPolicy::Batch,
        FsyncArg::Interval => FsyncPolicy::Interval,
        FsyncArg::Never => FsyncPolicy::Never,
    };
    config
        .kafka
        .properties
        .extend(args.kafka_properties.iter().cloned());
    let total = args.mb << 20;
    let records = total.div_ceil(chunks[0].payload.len() as u64);
    let bus = sluice_broker::open(&config)
        .await
        .with_context(|| format!("failed to open {url}"))?;
    let topic = format!("bench.{}", std::process::id());
    bus.ensure_topics(&[&topic]).await?;

    let mut phases = vec![publish(bus.clone(), &topic, &chunks, records, args.inflight).await?];
    phases.push(consume(bus.clone(), &topic, records).await?);
    drop(bus);
    let bytes: u64 = phases[0].bytes;
    phases.extend(baseline(scratch.path(), &chunks, bytes)?);

    let report = Report {
        bus: url.to_string(),
        chunk_bytes: chunks[0].payload.len(),
        inflight: args.inflight,
        phases,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "bus {}  chunk {} B  in flight {}",
            report.bus, report.chunk_bytes, report.inflight
        )?;
        writeln!(
            out,
            "{:<22} {:>10} {:>9} {:>9} {:>10} {:>12} {:>9} {:>9}",
            "phase", "MB", "wall s", "cpu s", "MB/s", "MB/cpu-s", "p50 ms", "p99 ms"
        )?;
        for p in &report.phases {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            writeln!(
                out,
                "{:<22} {:>10.0} {:>9.2} {:>9.2} {:>10.0} {:>12.0} {:>9} {:>9}",
                p.name,
                p.bytes as f64 / 1048576.0,
                p.wall_s,
                p.cpu_s,
                p.mb_per_s,
                p.mb_per_cpu_s,
                ms(p.ack_p50_ms),
                ms(p.ack_p99_ms)
            )?;
        }
    }
    Ok(())
}

async fn publish(
    bus: Arc<dyn Bus>,
    topic: &str,
    chunks: &[Record],
    records: u64,
    inflight: usize,
) -> anyhow::Result<Phase> {
    let cpu = cpu_time();
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(inflight);
    let mut latencies = Vec::with_capacity(records as usize);
    let mut bytes = 0u64;
    for i in 0..records {
        let record = chunks[i as usize % chunks.len()].clone();
        bytes += record.payload.len() as u64;
        pending.push_back((Instant::now(), bus.send(topic, record).await?));
        if pending.len() >= inflight {
            let (sent, ack) = pending.pop_front().unwrap();
            ack.await?;
            latencies.push(sent.elapsed());
        }
    }
    for (sent, ack) in pending {
        ack.await?;
        latencies.push(sent.elapsed());
    }
    let mut phase = Phase::new(
        "publish (acked)",
        bytes,
        records,
        start.elapsed(),
        cpu_time() - cpu,
    );
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    phase.ack_p50_ms = Some(pct(0.50));
    phase.ack_p99_ms = Some(pct(0.99));
    Ok(phase)
}

async fn consume(bus: Arc<dyn Bus>, topic: &str, records: u64) -> anyhow::Result<Phase> {
    let cpu = cpu_time();
    let start = Instant::now();
    let mut consumer = bus
        .consumer(&format!("bench-{}", std::process::id()), &[topic])
        .await?;
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut idle = Instant::now();
    while got < records {
        let batch = consumer.poll(4096, Duration::from_millis(200)).await?;
        if batch.is_empty() {
            anyhow::ensure!(
                idle.elapsed() < Duration::from_secs(60),
                "consumed {got} of {records} records, then nothing for 60 s"
            );
            continue;
        }
        idle = Instant::now();
        got += batch.len() as u64;
        bytes += batch.iter().map(|m| m.payload.len() as u64).sum::<u64>();
    }
    Ok(Phase::new(
        "consume",
        bytes,
        got,
        start.elapsed(),
        cpu_time() - cpu,
    ))
}

/// The same bytes written to a plain file with one fsync, then read by `cat`.
fn baseline(dir: &Path, chunks: &[Record], bytes: u64) -> anyhow::Result<Vec<Phase>> {
    let path = dir.join("baseline.raw");
    let cpu = cpu_time();
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let (mut written, mut n) = (0u64, 0u64);
    while written < bytes {
        let payload = &chunks[n as usize % chunks.len()].payload;
        file.write_all(payload)?;
        written += payload.len() as u64;
        n += 1;
    }
    file.sync_all()?;
    drop(file);
    let write = Phase::new(
        "baseline: write+fsync",
        written,
        n,
        start.elapsed(),
        cpu_time() - cpu,
    );
    let children = child_cpu_time();
    let start = Instant::now();
    let status = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .context("failed to run cat")?;
    anyhow::ensure!(status.success(), "cat {} failed: {status}", path.display());
    let read = Phase::new(
        "baseline: cat",
        written,
        n,
        start.elapsed(),
        child_cpu_time() - children,
    );
    Ok(vec![write, read])
}

/// `sluice bench corpus`.
#[derive(Args, Debug)]
pub struct CorpusArgs {
    /// Directory to write one `FORMAT.log` file per format into (created).
    pub out: PathBuf,
    /// Events of each format (a Java error with its stack trace is one
    /// event of several lines).
    #[arg(long, default_value_t = GENERATED_EVENTS)]
    pub events: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Formats to write, comma-separated: syslog, hdfs, access, java, json,
    /// logfmt, raw [default: all]
    #[arg(long, value_delimiter = ',', value_parser = parse_format)]
    pub formats: Vec<sluice_corpus::Format>,
}

fn parse_format(name: &str) -> Result<sluice_corpus::Format, String> {
    sluice_corpus::Format::parse(name).ok_or_else(|| {
        let names: Vec<&str> = sluice_corpus::Format::ALL
            .iter()
            .map(|f| f.name())
            .collect();
        format!(
            "unknown format {name:?}; expected one of {}",
            names.join(", ")
        )
    })
}

/// Writes the generated corpus the benches use (or another seed or size of
/// it) as files, for other tools to read.
pub fn corpus(args: CorpusArgs) -> anyhow::Result<()> {
    let formats = if args.formats.is_empty() {
        sluice_corpus::Format::ALL.to_vec()
    } else {
        args.formats.clone()
    };
    let files = sluice_corpus::files(&formats, args.seed, args.events, 1_795_244_400_000_000_000);
    write_corpus(&files, &args.out)?;
    for (name, lines) in &files {
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        println!(
            "{}/{name}.log: {} lines, {bytes} bytes",
            args.out.display(),
            lines.len()
        );
    }
    Ok(())
}

/// Events of each format in the generated corpus the benches use without
/// `--corpus` (about the size of a loghub sample).
const GENERATED_EVENTS: usize = 2_000;

/// The benches' log samples as `(name, non-empty lines)`: the `*.log` files
/// of `corpus` in name order, or, without one, the generated corpus (every
/// format of `sluice-corpus`, seed 1), so a bench runs on a plain clone.
pub fn corpus_files(corpus: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<Vec<u8>>)>> {
    match corpus {
        Some(dir) => read_corpus(dir),
        None => Ok(sluice_corpus::files(
            &sluice_corpus::Format::ALL,
            1,
            GENERATED_EVENTS,
            1_795_244_400_000_000_000,
        )),
    }
}

/// Every line of the corpus, file after file.
pub fn corpus_lines(corpus: Option<&Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(corpus_files(corpus)?
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect())
}

/// A directory of `*.log` files holding the corpus, for processes the bench
/// starts: `corpus` itself, or the generated corpus written under `scratch`.
pub fn corpus_dir(corpus: Option<&Path>, scratch: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = corpus {
        return Ok(std::path::absolute(dir)?);
    }
    let dir = scratch.join("corpus");
    write_corpus(&corpus_files(None)?, &dir)?;
    Ok(dir)
}

/// Writes each `(name, lines)` to `dir/NAME.log`.
pub fn write_corpus(files: &[(String, Vec<Vec<u8>>)], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (name, lines) in files {
        let path = dir.join(format!("{name}.log"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        );
        for line in lines {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// The `*.log` files of `dir` in name order: each file's stem, lowercased,
/// and its non-empty lines.
fn read_corpus(corpus: &Path) -> anyhow::Result<Vec<(String, Vec<Vec<u8>>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus)
        .with_context(|| format!("failed to list the corpus {} (--corpus)", corpus.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in &paths {
        let text =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let lines: Vec<Vec<u8>> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if !lines.is_empty() {
            files.push((name, lines));
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "no *.log files with lines in {}",
        corpus.display()
    );
    Ok(files)
}

/// A needle picked from the data: the first (in file and line order) token
/// of letters and digits, at least 10 long, with letters and a run of two
/// or more digits (which the benches' repetitions rewrite), that is in at
/// most 3 lines of the whole corpus; `None` if there is none.
pub fn rare_token(files: &[(String, Vec<Vec<u8>>)]) -> Option<String> {
    let tokens = |line: &[u8]| -> Vec<String> {
        line.split(|b| !b.is_ascii_alphanumeric())
            .filter(|t| {
                t.len() >= 10
                    && t.windows(2).any(|w| w.iter().all(u8::is_ascii_digit))
                    && t.iter().any(u8::is_ascii_alphabetic)
            })
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect()
    };
    let mut lines_with = std::collections::HashMap::<String, usize>::new();
    for (_, lines) in files {
        for line in lines {
            let mut seen = tokens(line);
            seen.sort();
            seen.dedup();
            for token in seen {
                *lines_with.entry(token).or_default() += 1;
            }
        }
    }
    files
        .iter()
        .flat_map(|(_, lines)| lines)
        .flat_map(|line| tokens(line))
        .find(|t| lines_with.get(t).is_some_and(|n| (1..=3).contains(n)))
}

/// Chunks of about `size` bytes of real lines, one source per chunk, cycling
/// over 16 instances of a few jobs so keys spread over partitions.
fn build_chunks(corpus: Option<&Path>, size: usize) -> anyhow::Result<Vec<Record>> {
    let lines: Vec<Bytes> = corpus_lines(corpus)?.into_iter().map(Bytes::from).collect();
    let jobs = [
        "www/prod/api",
        "batch/prod/etl",
        "db/staging/pg",
        "ml/dev/train",
    ];
    let mut chunks = Vec::new();
    let mut next = 0usize;
    for i in 0..64u64 {
        let job = jobs[i as usize % jobs.len()];
        let instance = (i % 16) as u32;
        let mut chunk = LogChunk {
            source: Some(Source {
                host: format!("node-{}", i % 3),
                job: job.into(),
                instance,
                task_id: format!("{}-{instance}", job.replace('/', "-")),
                process: "main".into(),
                stream: Stream::Stdout as i32,
                layout: Layout::Native as i32,
                source_id: 0x5eed_0000 + i,
                ..Default::default()
            }),
            ..Default::default()
        };
        let (mut text_bytes, mut offset) = (0usize, 0u64);
        while text_bytes < size {
            let text = lines[next % lines.len()].clone();
            next += 1;
            text_bytes += text.len();
            chunk.lines.push(Line {
                offset,
                raw_len: text.len() as u32 + 1,
                ts_unix_nanos: 1_763_700_000_000_000_000 + next as i64 * 1_000_000,
                text,
                ..Default::default()
            });
            offset += chunk.lines.last().unwrap().raw_len as u64;
        }
        let key = topics::chunk_key(&chunk);
        chunks.push(Record::new(
            key,
            chunk.encode_to_vec(),
            1_763_700_000_000 + i as i64,
        ));
    }
    Ok(chunks)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of this process, all threads.
pub fn cpu_time() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of this process's finished children.
pub fn child_cpu_time() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}
