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

use crate::corpus::corpus_lines;
use crate::cpu::{child_cpu_time, cpu_time};

/// Flags of `sluice bench bus`; its help text comes from
/// [`BenchCommand::Bus`](crate::BenchCommand::Bus).
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
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = sluice_broker::parse_property)]
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
    /// Print the report as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `--fsync` values, mapped one to one onto the embedded bus's [`FsyncPolicy`].
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum FsyncArg {
    /// Sync before acknowledging each group of records (the default)
    Batch,
    /// Sync every 200 ms, acknowledging records once written
    Interval,
    /// Never sync; the kernel writes back when it likes
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

/// Runs `sluice bench bus`: publishes `--mb` MiB of chunks to a new `bench.<pid>` topic, reads them
/// back, measures the file write and `cat` baseline, and prints one row per phase.
pub async fn run(args: BusBenchArgs) -> anyhow::Result<()> {
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
