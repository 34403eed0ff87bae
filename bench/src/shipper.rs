//! `sluice bench shipper`: files → bus throughput of the shipper, per
//! CPU-second, on many small files or a few large ones built from the log
//! corpus, next to `cat` and `zstd -1 -T1` of the same bytes in the same run.
//!
//! CPU time is this process's (the shipper's tracker and publisher, and for
//! the embedded bus its writer thread too); the baselines' is their own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use sluice_broker::{BusConfig, BusUrl};
use sluice_schema::sandbox::{self, Manifest};
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig};

use crate::corpus::corpus_lines;
use crate::cpu::{child_cpu_time, cpu_time};

/// Flags of `sluice bench shipper`; its help text comes from
/// [`BenchCommand::Shipper`](crate::BenchCommand::Shipper).
#[derive(Args, Debug)]
pub struct ShipperBenchArgs {
    /// Bus to ship to [default: a new embedded bus in a temporary directory]
    #[arg(long)]
    pub bus: Option<BusUrl>,
    /// Number of log files (one sandbox each).
    #[arg(long, default_value_t = 1000)]
    pub files: usize,
    /// Megabytes of log in all.
    #[arg(long, default_value_t = 256)]
    pub mb: u64,
    /// Directory for the sandboxes and the bus [default: system temp]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A directory of `*.log` log samples (e.g. ../shared/corpus/loghub)
    /// [default: the generated corpus, every format of sluice-corpus]
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Print the report as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Ship the same files again with this multi-line rule in every
    /// manifest (java, python, go), twice, then once more without (each
    /// run into a bus and state of its own), and report every run and the
    /// tracker's speed with the rule against without (mean of two each).
    #[arg(long, value_name = "PRESET")]
    pub compare_multiline: Option<String>,
}

#[derive(Serialize)]
struct Row {
    name: String,
    mb: f64,
    wall_s: f64,
    cpu_s: f64,
    mb_per_cpu_s: f64,
    lines_per_cpu_s: f64,
}

impl Row {
    fn new(name: &str, bytes: u64, lines: u64, wall: Duration, cpu: Duration) -> Row {
        let mb = bytes as f64 / 1048576.0;
        let cpu_s = cpu.as_secs_f64().max(1e-9);
        Row {
            name: name.into(),
            mb,
            wall_s: wall.as_secs_f64(),
            cpu_s,
            mb_per_cpu_s: mb / cpu_s,
            lines_per_cpu_s: lines as f64 / cpu_s,
        }
    }
}

#[derive(Serialize)]
struct Report {
    bus: String,
    files: usize,
    rows: Vec<Row>,
    /// Peak resident memory of this process while shipping (VmHWM).
    rss_before_mib: f64,
    peak_rss_mib: f64,
    /// CPU seconds of the shipping run by thread name.
    cpu_by_thread: BTreeMap<String, f64>,
}

/// Runs `sluice bench shipper`: writes the sandboxes, times the `cat`, `zstd` and file-write
/// baselines on them, ships them all to the bus with a real shipper, and prints one row per run.
pub async fn run(args: ShipperBenchArgs) -> anyhow::Result<()> {
    let corpus = args.corpus.as_deref();
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-shipper-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let root = scratch.path().join("sandboxes");
    let (paths, bytes, lines) = write_sandboxes(corpus, &root, args.files, args.mb << 20)?;

    let mut rows = Vec::new();
    rows.push(baseline(
        "baseline: cat",
        Command::new("cat").args(&paths),
        bytes,
        lines,
    )?);
    match baseline(
        "baseline: zstd -1 -T1",
        Command::new("zstd").args(["-1", "-T1", "-c"]).args(&paths),
        bytes,
        lines,
    ) {
        Ok(row) => rows.push(row),
        Err(e) => eprintln!("zstd baseline skipped: {e:#} (apt-get install zstd)"),
    }

    // What writing the same bytes to a file costs here, fsync included:
    // the floor under any durable bus on this disk.
    let copy = scratch.path().join("copy");
    match baseline(
        "baseline: cat > file, fsync",
        Command::new("sh")
            .arg("-c")
            .arg(r#"out="$1"; shift; cat "$@" | dd of="$out" bs=1M conv=fdatasync status=none"#)
            .arg("sh")
            .arg(&copy)
            .args(&paths),
        bytes,
        lines,
    ) {
        Ok(row) => rows.push(row),
        Err(e) => eprintln!("write baseline skipped: {e:#}"),
    }
    let _ = std::fs::remove_file(&copy);

    let url = args
        .bus
        .clone()
        .unwrap_or_else(|| BusUrl::Embedded(scratch.path().join("bus")));
    let run = ship(
        &url,
        &root,
        &scratch.path().join("state"),
        args.files,
        bytes,
        lines,
        "",
    )
    .await?;
    let tracker = |run: &Shipped| run.by_thread.get(TRACKER_THREAD).copied().unwrap_or(0.0);
    let first_tracker = tracker(&run);
    let (rss_before_mib, peak_rss_mib, by_thread) =
        (run.rss_before_mib, run.peak_rss_mib, run.by_thread);
    rows.extend(run.rows);
    // With a rule to compare: the rule, the rule again, then no rule
    // again (each with a bus and state of its own), so whatever the
    // machine does to earlier or later runs (the first run's gigabyte
    // being written back) weighs on both sides; the tracker's CPU is
    // compared as the mean of each pair.
    let mut compared = None;
    if let Some(preset) = &args.compare_multiline {
        let rule: sluice_schema::multiline::Multiline =
            serde_json::from_value(serde_json::Value::String(preset.clone()))
                .map_err(|e| anyhow::anyhow!("--compare-multiline: {e}"))?;
        let (mut plain_cpu, mut rule_cpu) = (first_tracker, 0.0);
        for (n, with_rule) in [(1, true), (2, true), (2, false)] {
            set_multiline(&root, with_rule.then(|| rule.clone()))?;
            let name = format!("{}-{n}", if with_rule { "multiline" } else { "plain" });
            let url = match &args.bus {
                // Another run on a shared bus reads the same topic: fine,
                // the figures are the shipper's.
                Some(url) => url.clone(),
                None => BusUrl::Embedded(scratch.path().join(format!("bus-{name}"))),
            };
            let label = match (with_rule, n) {
                (true, 1) => format!(", multiline {preset}"),
                (true, _) => format!(", multiline {preset}, again"),
                (false, _) => ", no rule, again".to_string(),
            };
            let run = ship(
                &url,
                &root,
                &scratch.path().join(format!("state-{name}")),
                args.files,
                bytes,
                lines,
                &label,
            )
            .await?;
            if with_rule {
                rule_cpu += tracker(&run);
            } else {
                plain_cpu += tracker(&run);
            }
            rows.extend(run.rows);
            if args.bus.is_none() {
                let _ = std::fs::remove_dir_all(scratch.path().join(format!("bus-{name}")));
            }
        }
        compared = Some((preset.clone(), plain_cpu / 2.0, rule_cpu / 2.0));
    }
    let report = Report {
        bus: url.to_string(),
        files: args.files,
        rows,
        rss_before_mib,
        peak_rss_mib,
        cpu_by_thread: by_thread,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "{} files, {:.0} MB, {lines} lines, bus {}",
            report.files,
            bytes as f64 / 1048576.0,
            report.bus
        )?;
        writeln!(
            out,
            "{:<30} {:>8} {:>8} {:>10} {:>14}",
            "run", "wall s", "cpu s", "MB/cpu-s", "lines/cpu-s"
        )?;
        for r in &report.rows {
            writeln!(
                out,
                "{:<30} {:>8.2} {:>8.2} {:>10.0} {:>14.0}",
                r.name, r.wall_s, r.cpu_s, r.mb_per_cpu_s, r.lines_per_cpu_s
            )?;
        }
        writeln!(
            out,
            "resident memory: {:.1} MiB before the shipper started, peak {:.1} MiB while shipping",
            report.rss_before_mib, report.peak_rss_mib
        )?;
        let threads: Vec<String> = report
            .cpu_by_thread
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.2}"))
            .collect();
        writeln!(out, "shipper CPU seconds by thread: {}", threads.join(", "))?;
        if let Some((preset, plain, rule)) = &compared {
            let mb = bytes as f64 / 1048576.0;
            writeln!(
                out,
                "tracker, mean of two runs each: no rule {:.0} MB/cpu-s, multiline {preset} {:.0} MB/cpu-s: {:.0} % of the speed",
                mb / plain,
                mb / rule,
                plain / rule * 100.0
            )?;
        }
    }
    Ok(())
}

/// One shipper run over the sandboxes under `root`, to `url`, with its
/// state in `state`, until every line is acknowledged.
struct Shipped {
    rows: Vec<Row>,
    rss_before_mib: f64,
    peak_rss_mib: f64,
    by_thread: BTreeMap<String, f64>,
}

async fn ship(
    url: &BusUrl,
    root: &Path,
    state: &Path,
    files: usize,
    bytes: u64,
    lines: u64,
    label: &str,
) -> anyhow::Result<Shipped> {
    let mut rows = Vec::new();
    let bus = sluice_broker::open(&BusConfig::new(url.clone()))
        .await
        .with_context(|| format!("failed to open {url}"))?;
    let mut config = ShipperConfig::new("bench", LayoutKind::Native, root, state);
    config.max_open_files = files.max(16) + 16;
    let rss_before_mib = reset_peak_rss();
    let threads_before = thread_cpu();
    let cpu = cpu_time();
    let start = Instant::now();
    let shipper = Shipper::start(config, bus.clone())?;
    let metrics = shipper.metrics();
    // Every byte read and acknowledged (with a multi-line rule, records
    // are fewer than lines, and the last event of each file waits for its
    // timeout).
    while metrics.bytes_read.get() < bytes
        || metrics.lag_bytes.get() > 0
        || metrics.inflight_bytes.get() > 0
        || metrics.chunks_acked.get() == 0
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "shipping did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        if std::env::var_os("SLUICE_BENCH_TRACE").is_some()
            && start.elapsed().as_millis() % 1000 < 6
        {
            eprintln!(
                "lines {} / {lines}, read {} B, acked {} B, inflight {} B, chunks {}",
                metrics.lines_read.get(),
                metrics.bytes_read.get(),
                metrics.acked_bytes.get(),
                metrics.inflight_bytes.get(),
                metrics.chunks_acked.get()
            );
        }
    }
    let wall = start.elapsed();
    let used = cpu_time() - cpu;
    let peak_rss_mib = peak_rss_mib();
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    for (name, secs) in thread_cpu() {
        *by_thread.entry(name).or_default() += secs;
    }
    for (name, secs) in threads_before {
        *by_thread.entry(name).or_default() -= secs;
    }
    by_thread.retain(|_, secs| *secs >= 0.005);
    shipper.shutdown().await;
    rows.push(Row::new(
        &format!("shipper → {}{label}", url_kind(url)),
        bytes,
        lines,
        wall,
        used,
    ));
    if let Some(tracker) = by_thread.get(TRACKER_THREAD) {
        // Reading, line assembly, multi-line grouping and encoding: what a
        // multi-line rule adds to, free of the bus's disk writes (which a
        // second run on the same machine pays differently).
        rows.push(Row::new(
            &format!("  of which the tracker{label}"),
            bytes,
            lines,
            wall,
            Duration::from_secs_f64(*tracker),
        ));
    }
    if let Some(writer) = by_thread.get(EMBEDDED_WRITER_THREAD) {
        // The same run without the embedded bus's writer thread: the
        // shipper's own cost (reading, framing, encoding, publishing).
        rows.push(Row::new(
            &format!("  of which the shipper{label}"),
            bytes,
            lines,
            wall,
            used.saturating_sub(Duration::from_secs_f64(*writer)),
        ));
    }
    Ok(Shipped {
        rows,
        rss_before_mib,
        peak_rss_mib,
        by_thread,
    })
}

/// Rewrites every sandbox manifest under `root` with `multiline`.
fn set_multiline(
    root: &Path,
    multiline: Option<sluice_schema::multiline::Multiline>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path().join(sandbox::MANIFEST);
        let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&path)?)?;
        manifest.multiline = multiline.clone();
        std::fs::write(&path, serde_json::to_vec(&manifest)?)?;
    }
    Ok(())
}

/// The shipper's tracker thread as `/proc` names it (15 bytes).
const TRACKER_THREAD: &str = "sluice-tracker-";

/// The embedded bus's writer thread as `/proc` names it (15 bytes).
const EMBEDDED_WRITER_THREAD: &str = "sluice-bus-writ";

fn url_kind(url: &BusUrl) -> &'static str {
    match url {
        BusUrl::Embedded(_) => "embedded bus",
        BusUrl::Kafka(_) => "kafka",
    }
}

fn baseline(name: &str, command: &mut Command, bytes: u64, lines: u64) -> anyhow::Result<Row> {
    let cpu = child_cpu_time();
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("failed to run {name}"))?;
    anyhow::ensure!(status.success(), "{name} failed: {status}");
    Ok(Row::new(
        name,
        bytes,
        lines,
        start.elapsed(),
        child_cpu_time() - cpu,
    ))
}

/// `files` native sandboxes holding `total` bytes of corpus lines between
/// them, written in a streaming way so this process stays small.
fn write_sandboxes(
    corpus: Option<&Path>,
    root: &Path,
    files: usize,
    total: u64,
) -> anyhow::Result<(Vec<PathBuf>, u64, u64)> {
    let lines = corpus_lines(corpus)?;
    let per_file = total / files as u64;
    let (mut paths, mut bytes, mut count, mut next) = (Vec::new(), 0u64, 0u64, 0usize);
    for f in 0..files {
        let task = format!("bench-prod-svc-{f}");
        let dir = root.join(&task);
        let logs = dir.join(sandbox::LOGS_DIR).join(sandbox::run_dir(0));
        std::fs::create_dir_all(&logs)?;
        let manifest = Manifest {
            version: 1,
            job: format!("bench/prod/svc{}", f % 50),
            instance: f as u32,
            task_id: task,
            run: 0,
            processes: vec!["main".into()],
            labels: Default::default(),
            multiline: None,
        };
        std::fs::write(dir.join(sandbox::MANIFEST), serde_json::to_vec(&manifest)?)?;
        let path = logs.join(sandbox::log_file("main", false));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut written = 0u64;
        while written < per_file {
            let line = &lines[next % lines.len()];
            next += 1;
            out.write_all(line)?;
            out.write_all(b"\n")?;
            written += line.len() as u64 + 1;
            count += 1;
        }
        out.flush()?;
        bytes += written;
        paths.push(path);
    }
    Ok((paths, bytes, count))
}

/// Resets this process's peak resident set size to its current size (Linux
/// `clear_refs`), so the peak measured later is the shipper's, not the
/// corpus writer's; returns the current size.
fn reset_peak_rss() -> f64 {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("cannot reset the peak resident size ({e}); it includes writing the files");
    }
    proc_status_mib("VmRSS:")
}

/// CPU seconds so far of each thread of this process, by thread name
/// (`/proc/self/task/*/stat`; threads that ended are not counted).
fn thread_cpu() -> Vec<(String, f64)> {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // `pid (comm) state ...`: fields after the last `)`.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((name, (utime + stime) / ticks))
        })
        .collect()
}

/// Peak resident set size of this process, from `/proc/self/status`.
fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
