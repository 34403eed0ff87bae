//! `sluice bench archive`: the archiver's throughput and the archive's size,
//! next to `zstd -3 -T1` of the same raw bytes, in one run.
//!
//! The raw log is built from the loghub corpus, repeated with its digits
//! shifted on each repetition (so the repeats are not byte-identical), as
//! `LogChunk`s of 100 sources in an embedded bus. Then an archiver reads the
//! bus into a local store until everything is committed; its CPU (all
//! threads of this process while it runs) is the figure. The baseline
//! compresses the same raw bytes, written to a file, with `zstd -3 -T1`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use prost::Message as _;
use sluice_broker::{Bus, BusConfig, BusUrl, Record};
use sluice_query::archiver::{Archiver, ArchiverConfig};
use sluice_query::catalog::{Catalog, SplitKind};
use sluice_query::store::StoreUrl;
use sluice_schema::pb::{Line, LogChunk, Source};
use sluice_schema::topics;

use crate::bench::{child_cpu_time, corpus_dir, corpus_lines, cpu_time};

#[derive(Args, Debug)]
pub struct ArchiveBenchArgs {
    /// MiB of raw log to archive.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// The loghub corpus [default: ../shared/corpus/loghub].
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Scratch directory [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

const SOURCES: u64 = 100;

pub async fn run(args: ArchiveBenchArgs) -> anyhow::Result<()> {
    let corpus = corpus_lines(&corpus_dir(args.corpus.as_deref())?)?;
    anyhow::ensure!(!corpus.is_empty(), "the corpus has no lines");
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-archive-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let bus: Arc<dyn Bus> = sluice_broker::open(&BusConfig::new(BusUrl::Embedded(
        scratch.path().join("bus"),
    )))
    .await?;
    bus.ensure_topics(&topics::ALL).await?;
    let raw_path = scratch.path().join("raw.log");
    let mut raw = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&raw_path)?);

    // The raw log: chunks of ~64 KiB per source, round robin.
    let total = args.mb << 20;
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut offsets = vec![0u64; SOURCES as usize];
    let mut next = 0usize;
    let start_ts: i64 = 1_795_244_400_000_000_000;
    eprintln!("writing {} MiB of log into the bus…", args.mb);
    while bytes < total {
        for s in 0..SOURCES {
            let mut chunk_lines = Vec::new();
            let mut size = 0;
            while size < 64 << 10 {
                let base = &corpus[next % corpus.len()];
                let shift = (next / corpus.len()) as u8;
                next += 1;
                let text: Vec<u8> = base
                    .iter()
                    .map(|b| {
                        if b.is_ascii_digit() {
                            b'0' + (b - b'0' + shift) % 10
                        } else {
                            *b
                        }
                    })
                    .collect();
                raw.write_all(&text)?;
                raw.write_all(b"\n")?;
                let at = &mut offsets[s as usize];
                chunk_lines.push(Line {
                    offset: *at,
                    raw_len: text.len() as u32 + 1,
                    // Two hours of log over the run.
                    ts_unix_nanos: start_ts + (bytes as i64 * 7_200_000_000_000 / total as i64),
                    text: Bytes::from(text),
                    ..Default::default()
                });
                *at += chunk_lines.last().unwrap().raw_len as u64;
                size += chunk_lines.last().unwrap().text.len();
                bytes += chunk_lines.last().unwrap().text.len() as u64 + 1;
                lines += 1;
            }
            let chunk = LogChunk {
                source: Some(Source {
                    host: "bench".into(),
                    job: format!("bench/prod/svc{}", s % 20),
                    instance: s as u32,
                    task_id: format!("bench-{s}"),
                    process: "main".into(),
                    stream: 1,
                    source_id: s + 1,
                    ..Default::default()
                }),
                lines: chunk_lines,
                shipped_at_unix_nanos: start_ts,
            };
            let record = Record::new(topics::chunk_key(&chunk), chunk.encode_to_vec(), 0);
            bus.send(topics::LOGS, record).await?.await?;
        }
    }
    raw.flush()?;
    drop(raw);

    // The baseline: zstd -3 of the same raw bytes.
    let zstd_out = scratch.path().join("raw.log.zst");
    let cpu0 = child_cpu_time();
    let wall0 = Instant::now();
    let status = Command::new("zstd")
        .args(["-3", "-T1", "-q", "-f", "-o"])
        .arg(&zstd_out)
        .arg(&raw_path)
        .stdout(Stdio::null())
        .status()
        .context("failed to run zstd (apt-get install zstd)")?;
    anyhow::ensure!(status.success(), "zstd failed: {status}");
    let zstd_cpu = (child_cpu_time() - cpu0).as_secs_f64();
    let zstd_wall = wall0.elapsed().as_secs_f64();
    let zstd_bytes = std::fs::metadata(&zstd_out)?.len();
    std::fs::remove_file(&zstd_out)?;
    std::fs::remove_file(&raw_path)?;

    // The archiver, until every line is committed.
    let store = StoreUrl::File(scratch.path().join("archive")).open(&[])?;
    let mut archiver =
        Archiver::open(ArchiverConfig::default(), bus.clone(), store.clone()).await?;
    let metrics = archiver.metrics();
    eprintln!("archiving {lines} lines…");
    let cpu = cpu_time();
    let wall = Instant::now();
    while metrics.lines_archived.load(Ordering::Relaxed) < lines {
        archiver.step().await?;
        anyhow::ensure!(
            wall.elapsed() < Duration::from_secs(3600),
            "archiving did not finish in an hour"
        );
    }
    let archive_cpu = (cpu_time() - cpu).as_secs_f64();
    let archive_wall = wall.elapsed().as_secs_f64();

    let catalog = Catalog::open(store.store.clone(), &store.prefix).await?;
    let splits: Vec<_> = catalog
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs)
        .cloned()
        .collect();
    let data: u64 = splits.iter().map(|s| s.data_bytes).sum();
    let index: u64 = splits.iter().map(|s| s.index_bytes).sum();
    let rows: u64 = splits.iter().map(|s| s.rows).sum();
    anyhow::ensure!(rows == lines, "archived {rows} of {lines} lines");
    let mb = bytes as f64 / 1048576.0;
    let report = serde_json::json!({
        "raw_mb": mb,
        "lines": lines,
        "splits": splits.len(),
        "archiver": {"wall_s": archive_wall, "cpu_s": archive_cpu, "mb_per_cpu_s": mb / archive_cpu},
        "zstd_3": {"wall_s": zstd_wall, "cpu_s": zstd_cpu, "mb_per_cpu_s": mb / zstd_cpu, "bytes": zstd_bytes, "ratio": bytes as f64 / zstd_bytes as f64},
        "data": {"bytes": data, "ratio": bytes as f64 / data as f64},
        "index": {"bytes": index, "percent_of_raw": index as f64 * 100.0 / bytes as f64},
        "total": {"bytes": data + index, "ratio": bytes as f64 / (data + index) as f64},
        "data_ratio_vs_zstd_3": (bytes as f64 / data as f64) / (bytes as f64 / zstd_bytes as f64),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{mb:.0} MiB of raw log, {lines} lines, {} splits",
        splits.len()
    );
    println!(
        "archiver:      {:>7.2} s wall {:>7.2} s CPU  {:>7.1} MB/CPU-s (Parquet + index + catalog)",
        archive_wall,
        archive_cpu,
        mb / archive_cpu
    );
    println!(
        "zstd -3 -T1:   {:>7.2} s wall {:>7.2} s CPU  {:>7.1} MB/CPU-s, ratio {:.2}",
        zstd_wall,
        zstd_cpu,
        mb / zstd_cpu,
        bytes as f64 / zstd_bytes as f64
    );
    println!(
        "sizes: data {:.2}× smaller than raw ({:.2}× zstd -3's ratio), index {:.1} % of raw, data + index {:.2}× smaller",
        bytes as f64 / data as f64,
        report["data_ratio_vs_zstd_3"].as_f64().unwrap_or(0.0),
        index as f64 * 100.0 / bytes as f64,
        bytes as f64 / (data + index) as f64
    );
    Ok(())
}
