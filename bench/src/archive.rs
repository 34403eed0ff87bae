//! `sluice bench archive`: the archiver's throughput and the archive's size,
//! next to `zstd -3 -T1` of the same raw bytes, in one run.
//!
//! The raw log is built from the corpus (`--corpus DIR`, or the generated
//! one) the way a cluster writes it: each source is one instance of one job,
//! and each job is one sample file (so a source logs in one format), repeated with its numbers
//! changed on every pass and for every instance. The sources' lines reach
//! the bus as `LogChunk`s of about 64 KiB, round robin over the 100 sources.
//! Then an archiver reads the bus into a local store until everything is
//! committed; its CPU (all threads of this process while it runs) is the
//! figure.
//!
//! Two baselines compress the same raw bytes with `zstd -3 -T1`: in arrival
//! order (one file of the chunks as they were shipped, what a central log
//! file holds), and per source (each source's lines in its own file, what
//! compressing each task's log file gives; the stronger baseline, because a
//! file holds one format).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use prost::Message as _;
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archive::store::{Store, StoreUrl};
use sluice_archiver::maintenance::{Maintenance, MaintenanceConfig};
use sluice_archiver::{Archiver, ArchiverConfig};
use sluice_broker::{Bus, BusConfig, BusUrl, Record};
use sluice_schema::pb::{Line, LogChunk, Source};
use sluice_schema::topics;

use crate::corpus::corpus_files;
use crate::cpu::{child_cpu_time, cpu_time};

/// Flags of `sluice bench archive`; its help text comes from
/// [`BenchCommand::Archive`](crate::BenchCommand::Archive).
#[derive(Args, Debug)]
pub struct ArchiveBenchArgs {
    /// MiB of raw log to archive.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// A directory of `*.log` log samples (e.g. ../shared/corpus/loghub)
    /// [default: the generated corpus, every format of sluice-corpus]
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Scratch directory [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory (bus, archive) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Also time opening a `logs` table of this many commits (one split
    /// each) and planning a one-hour query over it; 0: skip.
    #[arg(long, default_value_t = 10_000)]
    pub open_commits: u64,
    /// Archive the same raw log three more times, twice with the parsed
    /// columns (`level`, `message`, `trace_id`, `span_id`, `fields`) left
    /// null, in the order parsed, not, not, parsed, and report what parsing
    /// costs (the mean of each pair).
    #[arg(long)]
    pub compare_parsing: bool,
}

const SOURCES: usize = 100;

/// `line` with every run of two or more digits changed for `pass` (numbers
/// keep their width; single digits stay, like levels and small counts).
pub(crate) fn vary(line: &[u8], pass: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let start = i;
        while i < line.len() && line[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= 2 && pass > 0 {
            out.extend(line[start..i].iter().enumerate().map(|(k, d)| {
                let shift = (pass * 7 + k * (pass / 10 + 1) * 3 + pass / 10) % 10;
                b'0' + (d - b'0' + shift as u8) % 10
            }));
        } else {
            out.extend_from_slice(&line[start..i]);
        }
        if i < line.len() && !line[i].is_ascii_digit() {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// One source of the bench: instance `instance` of the job logging like
/// sample `dataset`.
struct BenchSource {
    dataset: usize,
    instance: usize,
    /// Lines written so far.
    next: usize,
    offset: u64,
    raw: Option<std::io::BufWriter<std::fs::File>>,
}

/// zstd -3 -T1 of `files`; returns (CPU seconds, wall seconds, bytes out).
fn zstd_baseline(files: &[PathBuf]) -> anyhow::Result<(f64, f64, u64)> {
    let cpu0 = child_cpu_time();
    let wall0 = Instant::now();
    let status = Command::new("zstd")
        .args(["-3", "-T1", "-q", "-f"])
        .args(files)
        .stdout(Stdio::null())
        .status()
        .context("failed to run zstd (apt-get install zstd)")?;
    anyhow::ensure!(status.success(), "zstd failed: {status}");
    let cpu = (child_cpu_time() - cpu0).as_secs_f64();
    let wall = wall0.elapsed().as_secs_f64();
    let mut out = 0;
    for file in files {
        let zst = file.with_extension("log.zst");
        out += std::fs::metadata(&zst)?.len();
        std::fs::remove_file(&zst)?;
        std::fs::remove_file(file)?;
    }
    Ok((cpu, wall, out))
}

/// The bench's raw log, in a new embedded bus and in files.
pub(crate) struct Generated {
    /// Holds the bus (`bus/`), the raw files and, once archived, `archive/`.
    pub scratch: tempfile::TempDir,
    pub bus: Arc<dyn Bus>,
    /// Every line in the order the chunks were shipped.
    pub arrival: PathBuf,
    /// Each source's lines in a file of its own (when asked for).
    pub sources: Vec<PathBuf>,
    /// Bytes of raw log, newlines included.
    pub bytes: u64,
    pub lines: u64,
}

/// Writes `mb` MiB of raw log from the samples of `corpus` as
/// `LogChunk`s of 100 sources into an embedded bus in a new scratch
/// directory (under `dir`, named `prefix…`), and the same lines to
/// `arrival.log` in arrival order and, with `per_source`, to one file per
/// source.
pub(crate) async fn generate(
    mb: u64,
    corpus: Option<&Path>,
    dir: Option<&Path>,
    prefix: &str,
    per_source: bool,
) -> anyhow::Result<Generated> {
    let datasets = corpus_files(corpus)?;
    let scratch = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir.map_or_else(std::env::temp_dir, Path::to_path_buf))?;
    let bus: Arc<dyn Bus> = sluice_broker::open(&BusConfig::new(BusUrl::Embedded(
        scratch.path().join("bus"),
    )))
    .await?;
    bus.ensure_topics(&topics::ALL).await?;
    let arrival_path = scratch.path().join("arrival.log");
    let mut arrival =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&arrival_path)?);
    let source_dir = scratch.path().join("sources");
    if per_source {
        std::fs::create_dir(&source_dir)?;
    }
    let mut sources = (0..SOURCES)
        .map(|s| {
            let raw = if per_source {
                let file = std::fs::File::create(source_dir.join(format!("{s:03}.log")))?;
                Some(std::io::BufWriter::with_capacity(64 << 10, file))
            } else {
                None
            };
            Ok(BenchSource {
                dataset: s % datasets.len(),
                instance: s / datasets.len(),
                next: 0,
                offset: 0,
                raw,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let instances = SOURCES.div_ceil(datasets.len());

    let total = mb << 20;
    let (mut bytes, mut lines) = (0u64, 0u64);
    let start_ts: i64 = 1_795_244_400_000_000_000;
    eprintln!("writing {mb} MiB of log into the bus…");
    while bytes < total {
        for (s, source) in sources.iter_mut().enumerate() {
            let (name, sample) = &datasets[source.dataset];
            let mut chunk_lines = Vec::new();
            let mut size = 0;
            // Two hours of log over the run. The lines of a chunk share its
            // time, as the lines of one read of a plain file do in the
            // shipper.
            let chunk_ts =
                start_ts + (i128::from(bytes) * 7_200_000_000_000 / i128::from(total)) as i64;
            while size < 64 << 10 {
                let pass = source.next / sample.len();
                let text = vary(
                    &sample[source.next % sample.len()],
                    pass * instances + source.instance,
                );
                source.next += 1;
                for out in std::iter::once(&mut arrival).chain(source.raw.as_mut()) {
                    out.write_all(&text)?;
                    out.write_all(b"\n")?;
                }
                let raw_len = text.len() as u32 + 1;
                size += text.len();
                chunk_lines.push(Line {
                    offset: source.offset,
                    raw_len,
                    ts_unix_nanos: chunk_ts,
                    text: Bytes::from(text),
                    ..Default::default()
                });
                source.offset += u64::from(raw_len);
                bytes += u64::from(raw_len);
                lines += 1;
            }
            let chunk = LogChunk {
                source: Some(Source {
                    host: format!("node-{}", s % 3),
                    job: format!("bench/prod/{name}"),
                    instance: source.instance as u32,
                    task_id: format!("{name}-{}-0", source.instance),
                    process: "main".into(),
                    stream: 1,
                    source_id: s as u64 + 1,
                    path: format!(
                        "/var/lib/sluice/sandboxes/{name}/{}/stdout",
                        source.instance
                    ),
                    ..Default::default()
                }),
                lines: chunk_lines,
                shipped_at_unix_nanos: start_ts,
            };
            let record = Record::new(topics::chunk_key(&chunk), chunk.encode_to_vec(), 0);
            bus.send(topics::LOGS, record).await?.await?;
        }
    }
    arrival.flush()?;
    drop(arrival);
    let mut source_paths = Vec::new();
    for (s, source) in sources.into_iter().enumerate() {
        if let Some(mut raw) = source.raw {
            raw.flush()?;
            source_paths.push(source_dir.join(format!("{s:03}.log")));
        }
    }
    Ok(Generated {
        scratch,
        bus,
        arrival: arrival_path,
        sources: source_paths,
        bytes,
        lines,
    })
}

/// Runs an archiver (default settings, the parsed columns filled when
/// `parse_fields`) over the bus into `archive/` in the scratch directory
/// until every line is committed; returns the store and the CPU and wall
/// seconds it took (all threads of this process).
pub(crate) async fn archive_all(
    generated: &Generated,
    parse_fields: bool,
) -> anyhow::Result<(Store, f64, f64)> {
    let store = StoreUrl::File(generated.scratch.path().join("archive")).open(&[])?;
    let mut config = ArchiverConfig::default();
    config.split.parse_fields = parse_fields;
    let mut archiver = Archiver::open(config, generated.bus.clone(), store.clone()).await?;
    let metrics = archiver.metrics();
    let lines = generated.lines;
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
    Ok((
        store,
        (cpu_time() - cpu).as_secs_f64(),
        wall.elapsed().as_secs_f64(),
    ))
}

/// Runs `sluice bench archive`: ships the raw log to a scratch bus, archives and compacts it,
/// compresses the same bytes with `zstd -3 -T1`, and prints CPU times and sizes side by side.
pub async fn run(args: ArchiveBenchArgs) -> anyhow::Result<()> {
    // The raw log in a scratch bus of its own (and per-source files).
    let raw_log = |prefix: &'static str, sources: bool| {
        generate(
            args.mb,
            args.corpus.as_deref(),
            args.dir.as_deref(),
            prefix,
            sources,
        )
    };
    let generated = raw_log("sluice-bench-archive-", true).await?;
    let (bytes, lines) = (generated.bytes, generated.lines);

    // The baselines: zstd -3 of the same raw bytes, in arrival order and
    // per source.
    let (zstd_cpu, zstd_wall, zstd_bytes) =
        zstd_baseline(std::slice::from_ref(&generated.arrival))?;
    let (per_source_cpu, _, per_source_bytes) = zstd_baseline(&generated.sources)?;

    // The archiver, until every line is committed.
    let (store, mut archive_cpu, mut archive_wall) = archive_all(&generated, true).await?;
    // The same bytes again, each run in a bus of its own, in the order
    // parsed (above), not parsed, not parsed, parsed: whatever the machine
    // does to the earlier or later runs (write-back of the raw log, other
    // tenants) weighs on both sides alike.
    let mut unparsed = None;
    if args.compare_parsing {
        let (mut cpu, mut wall) = (0.0, 0.0);
        for parse_fields in [false, false, true] {
            let again = raw_log("sluice-bench-archive-again-", false).await?;
            anyhow::ensure!(again.bytes == bytes, "the raw log differs between runs");
            let (_, run_cpu, run_wall) = archive_all(&again, parse_fields).await?;
            eprintln!("  parse_fields={parse_fields}: {run_cpu:.2} s CPU");
            if parse_fields {
                archive_cpu = (archive_cpu + run_cpu) / 2.0;
                archive_wall = (archive_wall + run_wall) / 2.0;
            } else {
                cpu += run_cpu / 2.0;
                wall += run_wall / 2.0;
            }
        }
        unparsed = Some((cpu, wall));
    }

    let (splits, data, index, rows) = log_sizes(&store).await?;
    anyhow::ensure!(rows == lines, "archived {rows} of {lines} lines");

    // Compaction, as the archive runs it in the background: every settled
    // hour's small splits merged. Its CPU is its own figure.
    let mut maintenance = Maintenance::open(
        MaintenanceConfig {
            id: "bench".into(),
            ..MaintenanceConfig::default()
        },
        store.clone(),
    )
    .await?;
    let cpu = cpu_time();
    loop {
        let pass = maintenance.compact_pass().await?;
        anyhow::ensure!(
            pass.failed.is_empty(),
            "compaction failed: {:?}",
            pass.failed
        );
        if pass.merged.is_empty() {
            break;
        }
    }
    let compact_cpu = (cpu_time() - cpu).as_secs_f64();
    let (compacted, compacted_data, compacted_index, compacted_rows) = log_sizes(&store).await?;
    anyhow::ensure!(
        compacted_rows == lines,
        "{compacted_rows} of {lines} lines after compaction"
    );
    let mb = bytes as f64 / 1048576.0;
    let ratio = |out: u64| bytes as f64 / out as f64;
    let report = serde_json::json!({
        "raw_mb": mb,
        "lines": lines,
        "splits": splits,
        "archiver": {"wall_s": archive_wall, "cpu_s": archive_cpu, "mb_per_cpu_s": mb / archive_cpu},
        "zstd_3_arrival": {"wall_s": zstd_wall, "cpu_s": zstd_cpu, "mb_per_cpu_s": mb / zstd_cpu, "bytes": zstd_bytes, "ratio": ratio(zstd_bytes)},
        "zstd_3_per_source": {"cpu_s": per_source_cpu, "mb_per_cpu_s": mb / per_source_cpu, "bytes": per_source_bytes, "ratio": ratio(per_source_bytes)},
        "data": {"bytes": data, "ratio": ratio(data)},
        "index": {"bytes": index, "percent_of_raw": index as f64 * 100.0 / bytes as f64},
        "total": {"bytes": data + index, "ratio": ratio(data + index)},
        "data_ratio_vs_zstd_3_arrival": ratio(data) / ratio(zstd_bytes),
        "data_ratio_vs_zstd_3_per_source": ratio(data) / ratio(per_source_bytes),
        "compacted": {
            "splits": compacted,
            "cpu_s": compact_cpu,
            "data": {"bytes": compacted_data, "ratio": ratio(compacted_data)},
            "index": {"bytes": compacted_index, "percent_of_raw": compacted_index as f64 * 100.0 / bytes as f64},
            "total": {"bytes": compacted_data + compacted_index, "ratio": ratio(compacted_data + compacted_index)},
            "data_ratio_vs_zstd_3_arrival": ratio(compacted_data) / ratio(zstd_bytes),
        },
    });
    let open = match args.open_commits {
        0 => serde_json::Value::Null,
        n => open_and_plan(n, generated.scratch.path()).await?,
    };
    let mut report = report;
    report["open_and_plan"] = open.clone();
    if let Some((cpu, wall)) = unparsed {
        report["archiver_without_parsing"] = serde_json::json!({
            "wall_s": wall, "cpu_s": cpu, "mb_per_cpu_s": mb / cpu,
            "parsing_cost_percent": (archive_cpu / cpu - 1.0) * 100.0,
        });
    }
    if args.keep {
        eprintln!("kept {}", generated.scratch.keep().display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !open.is_null() {
        println!(
            "a logs table of {} commits and {} splits: written in {:.1} s; opening it and planning a one-hour query: {:.0} ms wall, {:.0} ms CPU (median of {}; best {:.0} ms); {} of {} splits left after pruning",
            open["commits"],
            open["splits"],
            open["write_s"].as_f64().unwrap_or(0.0),
            open["median_ms"].as_f64().unwrap_or(0.0),
            open["median_cpu_ms"].as_f64().unwrap_or(0.0),
            open["runs"],
            open["best_ms"].as_f64().unwrap_or(0.0),
            open["splits_left"],
            open["splits"],
        );
    }
    println!("{mb:.0} MiB of raw log, {lines} lines, {splits} splits");
    println!(
        "archiver:               {archive_wall:>7.2} s wall {archive_cpu:>7.2} s CPU  {:>7.1} MB/CPU-s (Parquet + index + catalog)",
        mb / archive_cpu
    );
    if let Some((cpu, wall)) = unparsed {
        println!(
            "archiver, no parsing:   {wall:>7.2} s wall {cpu:>7.2} s CPU  {:>7.1} MB/CPU-s (level … fields null): parsing costs {:+.1} % of the CPU",
            mb / cpu,
            (archive_cpu / cpu - 1.0) * 100.0
        );
    }
    println!(
        "zstd -3 -T1, arrival:   {zstd_wall:>7.2} s wall {zstd_cpu:>7.2} s CPU  {:>7.1} MB/CPU-s, {:.2}× smaller",
        mb / zstd_cpu,
        ratio(zstd_bytes)
    );
    println!(
        "zstd -3 -T1, per source:               {per_source_cpu:>7.2} s CPU  {:>7.1} MB/CPU-s, {:.2}× smaller",
        mb / per_source_cpu,
        ratio(per_source_bytes)
    );
    println!(
        "sizes: data {:.2}× smaller than raw ({:.2}× zstd -3's ratio in arrival order, {:.2}× per source), index {:.1} % of raw, data + index {:.2}× smaller",
        ratio(data),
        ratio(data) / ratio(zstd_bytes),
        ratio(data) / ratio(per_source_bytes),
        index as f64 * 100.0 / bytes as f64,
        ratio(data + index)
    );
    println!(
        "after compaction ({compacted} splits, {compact_cpu:.2} s CPU): data {:.2}× smaller ({:.2}× zstd -3's ratio in arrival order), index {:.1} % of raw, data + index {:.2}× smaller",
        ratio(compacted_data),
        ratio(compacted_data) / ratio(zstd_bytes),
        compacted_index as f64 * 100.0 / bytes as f64,
        ratio(compacted_data + compacted_index)
    );
    Ok(())
}

/// Writes a `logs` table of `commits` commits, each adding one split of
/// its own hour (the archiver's shape: several jobs and sources per split,
/// their ranges in its tags; a Delta checkpoint every 50 commits), then
/// times opening the archive as a query engine does and planning a query
/// over one hour (`EXPLAIN`: every split's metadata is pruned, no file is
/// read).
async fn open_and_plan(commits: u64, scratch: &Path) -> anyhow::Result<serde_json::Value> {
    use sluice_archive::catalog::{Held, SplitEntry};
    use sluice_schema::archive::{self as keys, Date};
    let dir = scratch.join("open-bench");
    let store = StoreUrl::File(dir.clone()).open(&[])?;
    let mut catalog = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs).await?;
    const HOUR: i64 = 3_600_000_000_000;
    // 2025-01-01T00:00:00Z.
    let start: i64 = 1_735_689_600 * 1_000_000_000;
    let wall = Instant::now();
    for i in 0..commits as i64 {
        let ts = start + i * HOUR;
        let (date, hour) = (Date::from_unix_nanos(ts), keys::hour_of(ts));
        let id = keys::split_id_with(ts, i as u64);
        let mut held = Held::default();
        // Twenty sources of its own, each a range of lines.
        for source in 0..20u64 {
            held.add_line(i as u64 * 20 + source, 0, 1_000_000);
        }
        let jobs: Vec<String> = (0..5)
            .map(|j| format!("role{j}/prod/job{}", i % 7))
            .collect();
        let entry = SplitEntry {
            key: keys::log_split_key(date, hour, &id),
            index_key: Some(keys::log_index_key(date, hour, &id)),
            kind: SplitKind::Logs,
            date: date.to_string(),
            hour: Some(hour),
            rows: 100_000,
            raw_bytes: 20 << 20,
            data_bytes: 2 << 20,
            index_bytes: 2 << 20,
            min_ts_nanos: ts,
            max_ts_nanos: ts + HOUR - 1,
            roles: sluice_archive::catalog::delta::roles_of(&jobs),
            jobs,
            created_unix_ms: (ts / 1_000_000) as u64,
            held,
            levels: None,
        };
        let mut draft = catalog.draft("bench");
        draft.add_split(entry);
        match catalog.commit_rebasing(&mut draft).await? {
            sluice_archive::catalog::CommitOutcome::Committed(_) => {}
            other => anyhow::bail!("bench commit {i}: {other:?}"),
        }
    }
    let write_s = wall.elapsed().as_secs_f64();
    let from = sluice_schema::time::rfc3339_nanos(start + (commits as i64 / 2) * HOUR);
    let to = sluice_schema::time::rfc3339_nanos(start + (commits as i64 / 2 + 1) * HOUR);
    let sql = format!(
        "EXPLAIN SELECT count(*) FROM logs WHERE ts >= '{from}' AND ts < '{to}' AND search(line, 'error')"
    );
    let runs = 5;
    let mut times = Vec::new();
    let mut left = 0;
    for _ in 0..runs {
        let (cpu, wall) = (cpu_time(), Instant::now());
        let engine = sluice_query::QueryEngine::open(store.clone(), Default::default()).await?;
        let output = engine
            .query(&sluice_query::QueryRequest {
                sql: sql.clone(),
                ..Default::default()
            })
            .await?;
        times.push((
            wall.elapsed().as_secs_f64() * 1000.0,
            (cpu_time() - cpu).as_secs_f64() * 1000.0,
        ));
        left = output.stats.splits_total - output.stats.splits_pruned;
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::remove_dir_all(&dir).ok();
    Ok(serde_json::json!({
        "commits": commits,
        "splits": commits,
        "write_s": write_s,
        "runs": runs,
        "best_ms": times[0].0,
        "median_ms": times[runs / 2].0,
        "median_cpu_ms": times[runs / 2].1,
        "splits_left": left,
    }))
}

/// Log splits, data bytes, index bytes and rows of the archive.
pub(crate) async fn log_sizes(store: &Store) -> anyhow::Result<(usize, u64, u64, u64)> {
    let catalog = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs).await?;
    let splits: Vec<_> = catalog.state().splits().values().cloned().collect();
    Ok((
        splits.len(),
        splits.iter().map(|s| s.data_bytes).sum(),
        splits.iter().map(|s| s.index_bytes).sum(),
        splits.iter().map(|s| s.rows).sum(),
    ))
}
