//! `sluice bench e2e`: sandboxes → queryable archive, the whole way.
//!
//! It starts `sluice up --nodes N` (this binary; embedded bus unless
//! `--bus`) in a scratch directory and, for each rate of `--rates`, submits
//! a job (a YAML spec, with `sluice job submit`) of `--instances` writers
//! spread over the nodes. Each writer is the probe of `sluice bench tailll`
//! (this binary again, hidden): it writes, every `--write-ms` as a buffered
//! logger does, the lines due at its share of the rate, each carrying its
//! write time in nanoseconds, its instance and a sequence number, then a
//! line of the corpus (instance `i` logs corpus file `i` modulo their
//! number, its digits changed on each pass through it).
//!
//! While the writers write, the bench follows the archive's catalog (every
//! 100 ms, as the query engine reads it) and notes when each commit's
//! archived line ranges became visible: a line is *queryable* from then on.
//! Once every byte the writers wrote is archived, it checks with SQL that
//! each line is in the archive exactly once and reads back every
//! `--sample`-th line of each writer (by sequence number): freshness is the
//! time the line became queryable minus the write time it carries.
//!
//! CPU is `sluice up`'s (`/proc/PID/stat`, every thread: shippers, bus,
//! archiver and its maintenance, scheduler, agents, services; not the
//! writers, which run under executor processes of their own) from the moment
//! the writers start until the last line is queryable, per MB written. The
//! baselines run in the same invocation on the same bytes (the writers'
//! files): `cat` and `zstd -3 -T1`.
//!
//! Unless `--no-tailll`, each rate runs a second time with `tailll --output
//! raw` following the job: append → display latency under that load, as in
//! `sluice bench tailll` (and what following costs `sluice up`).

mod report;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archive::store::Store;
use sluice_broker::BusUrl;
use sluice_query::{EngineConfig, QueryEngine, QueryRequest};
use sluice_schema::pb::{JobKeyRequest, TaskState};

use crate::corpus::corpus_dir;
use crate::cpu::child_cpu_time;
use crate::query::rows_of;
use crate::tailll::{
    Cluster, Follower, machine_cpu, now_nanos, parse_probe, proc_cpu, stat_cpu, until_running,
};
use report::{baselines, plot, print, quantile};
use watch::{Threads, Watcher};

/// Freshness target (issue 8): p99 write → queryable.
const FRESHNESS_TARGET_S: f64 = 15.0;
/// CPU target (issue 8): `sluice up`'s CPU-seconds per MB written.
const CPU_TARGET_S_PER_MB: f64 = 0.1;
const MB: f64 = 1_048_576.0;

/// Flags of `sluice bench e2e`; its help text comes from
/// [`BenchCommand::E2e`](crate::BenchCommand::E2e).
#[derive(Args, Debug)]
pub struct E2eBenchArgs {
    /// Total rates (lines/s, all writers together), one load each, in order.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub rates: Vec<u32>,
    /// Seconds each load writes.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Nodes of the `sluice up`.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Writers (instances of the job), spread over the nodes.
    #[arg(long, default_value_t = 30)]
    pub instances: u32,
    /// Each writer writes what is due every this many milliseconds.
    #[arg(long, default_value_t = 10)]
    pub write_ms: u64,
    /// One line in this many of each writer (by sequence number) is read
    /// back for freshness.
    #[arg(long, default_value_t = 100)]
    pub sample: u64,
    /// The bus of the `sluice up` (`kafka://HOST:PORT`; use a fresh broker)
    /// [default: embedded in its data directory]
    #[arg(long)]
    pub bus: Option<BusUrl>,
    /// Only the loads without tailll.
    #[arg(long)]
    pub no_tailll: bool,
    /// The tailll binary [default: `tailll` next to this sluice].
    #[arg(long)]
    pub tailll: Option<PathBuf>,
    /// A directory of `*.log` log samples (e.g. ../shared/corpus/loghub)
    /// [default: the generated corpus, every format of sluice-corpus]
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Scratch directory [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write freshness over time as an SVG here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: u32,
    instances: u32,
    bus: String,
    write_ms: u64,
    /// `sluice up`'s CPU per second before any job ran.
    up_idle_cpu_per_s: f64,
    loads: Vec<Load>,
}

#[derive(Debug, Serialize)]
struct Load {
    name: String,
    job: String,
    rate: u32,
    seconds: u64,
    with_tailll: bool,
    /// Lines the writers wrote (the archive's count).
    lines: u64,
    /// Bytes the writers wrote (their files' sizes).
    bytes: u64,
    lines_per_s: f64,
    mb_per_s: f64,
    /// Every byte written was archived before the deadline.
    complete: bool,
    /// Rows in the archive for the job, and how many were a second copy of
    /// a `(source_id, offset)`.
    rows: u64,
    duplicates: u64,
    /// Catalog commits that archived lines of the job.
    commits: u64,
    /// Records (`LogChunk`s) appended to the logs topic from the writers'
    /// start to the last line queryable, and their mean size.
    bus_records: Option<u64>,
    bytes_per_record: Option<f64>,
    /// From the writers' scheduled end to the last line queryable.
    drain_s: f64,
    /// How late the last sampled line was written (the writers could not
    /// keep the rate).
    writers_late_s: f64,
    freshness: Freshness,
    /// `sluice up`'s CPU per second with the writers running but idle
    /// (before they start writing).
    up_idle_cpu_per_s: f64,
    /// `sluice up`'s CPU from the writers' start to the last line
    /// queryable.
    up_cpu_s: f64,
    up_cpu_s_per_mb: f64,
    /// `sluice up`'s cores in use while the writers wrote.
    up_cores_writing: f64,
    /// `sluice up`'s CPU by thread name over the same window (sampled every
    /// 250 ms or less: a thread that ended keeps its last sample).
    up_cpu_by_thread: BTreeMap<String, f64>,
    /// Share of the machine's CPU in use from start to last line queryable.
    machine_busy: f64,
    baselines: Vec<Baseline>,
    tailll: Option<Tailll>,
    /// Every line once, the writers on schedule, no line waiting 30 s.
    sustained: bool,
}

#[derive(Debug, Serialize, Default)]
struct Freshness {
    samples: u64,
    /// Sampled lines not found queryable (should be none).
    unmatched: u64,
    p50_s: f64,
    p99_s: f64,
    max_s: f64,
    /// The same with the catalog commit's own time instead of when the
    /// bench saw it (takes out the 100 ms polling).
    commit_p50_s: f64,
    commit_p99_s: f64,
    /// Per half second of write time since the start: p50, p99, max.
    #[serde(skip)]
    series: Vec<(f64, f64, f64, f64)>,
    /// Some of the samples: (write time since the start, freshness), s.
    #[serde(skip)]
    points: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
struct Baseline {
    name: String,
    cpu_s: f64,
    cpu_s_per_mb: f64,
    /// Output bytes ÷ input bytes (zstd).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Tailll {
    shown: u64,
    duplicates: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    cpu_s: f64,
}

/// Runs `sluice bench e2e`: starts a `sluice up` cluster in a scratch directory, runs each
/// `--rates` load without and then with tailll (unless `--no-tailll`), stops the cluster, and
/// prints the report (and writes the `--plot` SVG).
pub async fn run(args: E2eBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.instances > 0 && !args.rates.is_empty() && args.rates.iter().all(|r| *r > 0),
        "--instances and --rates must be positive"
    );
    anyhow::ensure!(args.sample > 0, "--sample must be positive");
    let exe = std::env::current_exe().context("cannot find this sluice binary")?;
    let tailll = args
        .tailll
        .clone()
        .unwrap_or_else(|| exe.with_file_name("tailll"));
    anyhow::ensure!(
        args.no_tailll || tailll.exists(),
        "no tailll binary at {} (build it with `cargo build --release -p tailll`, pass --tailll, or --no-tailll)",
        tailll.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-e2e-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let corpus = corpus_dir(args.corpus.as_deref(), scratch.path())?;
    let up_args: Vec<String> = match &args.bus {
        Some(url) => vec!["--bus".into(), url.to_string()],
        None => Vec::new(),
    };
    let cluster = Cluster::start(&exe, scratch.path(), args.nodes, &up_args).await?;
    let result = async {
        let bench = Bench::new(&args, exe, tailll, corpus, scratch.path(), &cluster).await?;
        bench.all(&args).await
    }
    .await;
    cluster.stop();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&report))
            .with_context(|| format!("failed to write {}", path.display()))?;
        eprintln!("freshness plot in {}", path.display());
    }
    Ok(())
}

struct Bench<'a> {
    exe: PathBuf,
    tailll: PathBuf,
    corpus: PathBuf,
    scratch: PathBuf,
    cluster: &'a Cluster,
    watcher: Watcher,
    engine: QueryEngine,
    instances: u32,
}

impl<'a> Bench<'a> {
    async fn new(
        args: &E2eBenchArgs,
        exe: PathBuf,
        tailll: PathBuf,
        corpus: PathBuf,
        scratch: &Path,
        cluster: &'a Cluster,
    ) -> anyhow::Result<Bench<'a>> {
        let url: sluice_archive::store::StoreUrl =
            sluice_client::ClientFile::read(&cluster.data_dir)?
                .and_then(|f| f.store)
                .context("the cluster's client.toml names no archive")?
                .parse()?;
        let store = url
            .open(&sluice_archive::store::s3_options(std::env::vars()))
            .with_context(|| format!("failed to open the archive {url}"))?;
        let watcher = Watcher::start(&store).await?;
        let engine = QueryEngine::open(store.clone(), EngineConfig::default()).await?;
        Ok(Bench {
            exe,
            tailll,
            corpus,
            scratch: scratch.to_path_buf(),
            cluster,
            watcher,
            engine,
            instances: args.instances,
        })
    }

    async fn all(self, args: &E2eBenchArgs) -> anyhow::Result<Report> {
        let up = self.cluster.child.id();
        let cpu0 = proc_cpu(up);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let up_idle_cpu_per_s = (proc_cpu(up) - cpu0).as_secs_f64() / 3.0;
        let mut loads = Vec::new();
        for &rate in &args.rates {
            for with_tailll in [false, true] {
                if with_tailll && args.no_tailll {
                    continue;
                }
                let load = self.load(args, rate, with_tailll).await?;
                eprintln!(
                    "{}: {:.0} lines/s, {:.2} MB/s; freshness p50 {:.2} s, p99 {:.2} s; up {:.3} CPU-s/MB{}",
                    load.name,
                    load.lines_per_s,
                    load.mb_per_s,
                    load.freshness.p50_s,
                    load.freshness.p99_s,
                    load.up_cpu_s_per_mb,
                    load.tailll.as_ref().map_or(String::new(), |t| format!(
                        "; tailll p50 {:.1} ms, p99 {:.1} ms",
                        t.p50_ms, t.p99_ms
                    ))
                );
                loads.push(load);
            }
        }
        self.watcher.stop();
        Ok(Report {
            nodes: args.nodes,
            instances: self.instances,
            bus: args
                .bus
                .as_ref()
                .map_or("embedded".into(), ToString::to_string),
            write_ms: args.write_ms,
            up_idle_cpu_per_s,
            loads,
        })
    }

    /// One job writing `rate` lines/s for `--seconds`, until every line is
    /// queryable.
    async fn load(
        &self,
        args: &E2eBenchArgs,
        rate: u32,
        with_tailll: bool,
    ) -> anyhow::Result<Load> {
        let seconds = args.seconds;
        let slug = match with_tailll {
            false => format!("r{rate}"),
            true => format!("r{rate}-tailll"),
        };
        let name = match with_tailll {
            false => format!("{rate} lines/s"),
            true => format!("{rate} lines/s + tailll"),
        };
        let job = format!("bench/e2e/{slug}");
        let go = self.scratch.join(format!("go-{slug}"));
        let per_instance = f64::from(rate) / f64::from(self.instances);
        let lines = (per_instance * seconds as f64).round() as u64;
        let cmd = format!(
            "exec '{}' bench tailll --probe --probe-rate {per_instance} --probe-lines {lines} --probe-instance {{{{instance}}}} --probe-write-ms {} --probe-go '{}' --probe-corpus '{}'",
            self.exe.display(),
            args.write_ms,
            go.display(),
            self.corpus.display(),
        );
        let spec = format!(
            "name: {slug}\nrole: bench\nenv: e2e\ninstances: {}\nresources: {{cpu: 0.001, ram_mb: 1, disk_mb: 2048}}\nrestart: never\nprocesses:\n  - name: probe\n    cmd: {}\n",
            self.instances,
            serde_json::to_string(&cmd)?
        );
        let spec_path = self.scratch.join(format!("{slug}.yaml"));
        std::fs::write(&spec_path, spec)?;
        let known = self.watcher.sources();
        let submitted = Command::new(&self.exe)
            .args(["job", "submit"])
            .arg(&spec_path)
            .arg("--data-dir")
            .arg(&self.cluster.data_dir)
            .env_remove("SLUICE_ADDR")
            .env_remove("SLUICE_TOKEN")
            .stdout(Stdio::null())
            .output()
            .context("failed to run sluice job submit")?;
        anyhow::ensure!(
            submitted.status.success(),
            "sluice job submit {}: {}",
            spec_path.display(),
            String::from_utf8_lossy(&submitted.stderr)
        );
        let mut scheduler = self.cluster.scheduler.clone();
        until_running(&mut scheduler, &job, self.instances).await?;
        let mut follower = match with_tailll {
            false => None,
            true => {
                let mut follower = Follower::start(
                    &self.tailll,
                    &job,
                    &["--output", "raw"],
                    &self.cluster.data_dir,
                    &self.scratch.join(format!("tailll-{slug}.err")),
                    false,
                )?;
                follower
                    .wait_for_hellos(u64::from(self.instances), Duration::from_secs(60))
                    .await
                    .with_context(|| name.clone())?;
                Some(follower)
            }
        };

        // The writers wait for the go file: what `up` costs meanwhile.
        let up = self.cluster.child.id();
        let idle0 = proc_cpu(up);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let up_idle_cpu_per_s = (proc_cpu(up) - idle0).as_secs_f64() / 3.0;

        let tailll_cpu0 = follower.as_ref().map(|f| proc_cpu(f.pid()));
        let records0 = self.bus_records().await;
        let mut threads = Threads::start(up);
        let (up_cpu0, machine0) = (proc_cpu(up), machine_cpu());
        let go_nanos = now_nanos();
        let went = Instant::now();
        std::fs::write(&go, b"go")?;
        while went.elapsed() < Duration::from_secs(seconds) {
            let left = Duration::from_secs(seconds).saturating_sub(went.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
            threads.sample();
        }
        let up_cpu_writing = proc_cpu(up) - up_cpu0;
        let writing_s = went.elapsed().as_secs_f64();

        // Every writer done: what they wrote, then until it is all archived.
        let deadline = Instant::now() + Duration::from_secs(120);
        let files = loop {
            let status = scheduler
                .describe_job(JobKeyRequest { job: job.clone() })
                .await?
                .into_inner();
            let done = status.instances.iter().all(|i| {
                i.state == TaskState::Finished as i32 || i.state == TaskState::Failed as i32
            });
            if done {
                break status
                    .instances
                    .iter()
                    .map(|i| {
                        self.cluster
                            .data_dir
                            .join("nodes")
                            .join(&i.host)
                            .join("sandboxes")
                            .join(&i.task_id)
                            .join("logs")
                            .join(format!("run-{}", i.run))
                            .join("probe.stdout")
                    })
                    .collect::<Vec<_>>();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{job}: the writers did not finish within 120 s of their end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            threads.sample();
        };
        let mut bytes = 0;
        for file in &files {
            bytes += std::fs::metadata(file)
                .with_context(|| format!("no writer output at {}", file.display()))?
                .len();
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        let complete = loop {
            if self.watcher.covered(&known) >= bytes {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            threads.sample();
        };
        let done_nanos = now_nanos();
        threads.sample();
        let (up_cpu, machine) = (proc_cpu(up) - up_cpu0, machine_cpu());
        let bus_records = match (records0, self.bus_records().await) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let tailll = match follower.take() {
            None => None,
            Some(follower) => {
                let cpu = proc_cpu(follower.pid()) - tailll_cpu0.unwrap_or_default();
                let (exited, seen) = follower.stop().await?;
                anyhow::ensure!(
                    exited.is_some_and(|s| s.success()),
                    "{name}: tailll did not exit 0 on Ctrl-C ({exited:?})"
                );
                let mut latencies = seen.latencies;
                latencies.sort_unstable();
                let ms = |q: f64| quantile(&latencies, q) as f64 / 1e6;
                Some(Tailll {
                    shown: seen.unique,
                    duplicates: seen.duplicates,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                    p999_ms: ms(0.999),
                    max_ms: ms(1.0),
                    cpu_s: cpu.as_secs_f64(),
                })
            }
        };
        let _ = scheduler.kill_job(JobKeyRequest { job: job.clone() }).await;

        let baselines = baselines(&files, bytes, &self.scratch)?;

        // What the archive holds: each line once, and the samples.
        let counts = self
            .sql(&format!(
                "SELECT CAST(count(*) AS BIGINT), CAST(sum(n) AS BIGINT) FROM \
                 (SELECT source_id, \"offset\", count(*) AS n FROM logs WHERE job = '{job}' \
                  GROUP BY source_id, \"offset\")"
            ))
            .await?;
        let number = |row: usize, col: usize| -> u64 {
            counts
                .get(row)
                .and_then(|r| r.get(col))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (distinct, rows) = (number(0, 0), number(0, 1));
        let samples = self
            .sql(&format!(
                "SELECT CAST(source_id AS VARCHAR), CAST(\"offset\" AS BIGINT), substr(line, 1, 36) \
                 FROM logs WHERE job = '{job}' AND substr(line, 1, 5) <> 'hello' \
                 AND TRY_CAST(substr(line, 27, 10) AS BIGINT) % {} = 0",
                args.sample
            ))
            .await?;
        let commits = self.watcher.commits(&known);
        let mut fresh = Vec::new();
        let mut fresh_commit = Vec::new();
        let mut unmatched = 0;
        let mut last_written = 0i64;
        let mut by_second: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut points = Vec::new();
        for row in &samples {
            let (Some(source), Some(offset), Some(text)) = (
                row.first().and_then(|v| v.parse::<u64>().ok()),
                row.get(1).and_then(|v| v.parse::<u64>().ok()),
                row.get(2),
            ) else {
                continue;
            };
            let Some((written, _, _)) = parse_probe(text.as_bytes()) else {
                continue;
            };
            last_written = last_written.max(written);
            match self.watcher.when(source, offset) {
                Some((seen, commit_ms)) => {
                    fresh.push(seen - written);
                    fresh_commit.push(commit_ms as i64 * 1_000_000 - written);
                    by_second
                        .entry((written - go_nanos).div_euclid(500_000_000))
                        .or_default()
                        .push(seen - written);
                    points.push((
                        (written - go_nanos) as f64 / 1e9,
                        (seen - written) as f64 / 1e9,
                    ));
                }
                None => unmatched += 1,
            }
        }
        fresh.sort_unstable();
        fresh_commit.sort_unstable();
        let s = |v: &[i64], q: f64| quantile(v, q) as f64 / 1e9;
        let series = by_second
            .into_iter()
            .map(|(second, mut v)| {
                v.sort_unstable();
                (second as f64 / 2.0, s(&v, 0.5), s(&v, 0.99), s(&v, 1.0))
            })
            .collect();
        // At most 800 points a panel: the plot stays small.
        let stride = points.len().div_ceil(800).max(1);
        let points = points.into_iter().step_by(stride).collect();
        let freshness = Freshness {
            samples: fresh.len() as u64,
            unmatched,
            p50_s: s(&fresh, 0.5),
            p99_s: s(&fresh, 0.99),
            max_s: s(&fresh, 1.0),
            commit_p50_s: s(&fresh_commit, 0.5),
            commit_p99_s: s(&fresh_commit, 0.99),
            series,
            points,
        };

        let write_end = go_nanos + seconds as i64 * 1_000_000_000;
        let writers_late_s = (last_written - write_end) as f64 / 1e9;
        let hellos = u64::from(self.instances);
        let expected = lines * hellos;
        let lines = distinct.saturating_sub(hellos);
        let mb = bytes as f64 / MB;
        Ok(Load {
            sustained: complete
                && rows == distinct
                && distinct == expected + hellos
                && writers_late_s < 1.0
                && freshness.max_s < 30.0,
            name,
            job,
            rate,
            seconds,
            with_tailll,
            lines,
            bytes,
            lines_per_s: lines as f64 / seconds as f64,
            mb_per_s: mb / seconds as f64,
            complete,
            rows,
            duplicates: rows - distinct,
            commits,
            bus_records,
            bytes_per_record: bus_records.map(|r| bytes as f64 / r.max(1) as f64),
            drain_s: (done_nanos - write_end) as f64 / 1e9,
            writers_late_s,
            freshness,
            up_idle_cpu_per_s,
            up_cpu_s: up_cpu.as_secs_f64(),
            up_cpu_s_per_mb: up_cpu.as_secs_f64() / mb.max(1e-9),
            up_cores_writing: up_cpu_writing.as_secs_f64() / writing_s,
            up_cpu_by_thread: threads.by_name(),
            machine_busy: (machine.0 - machine0.0) as f64 / (machine.1 - machine0.1).max(1) as f64,
            baselines,
            tailll,
        })
    }

    /// Records in the bus's logs topic so far (`None`: the bus cannot say).
    async fn bus_records(&self) -> Option<u64> {
        let url: sluice_broker::BusUrl = sluice_client::ClientFile::read(&self.cluster.data_dir)
            .ok()??
            .bus?
            .parse()
            .ok()?;
        let bus = sluice_broker::open_for_inspection(&sluice_broker::BusConfig::new(url))
            .await
            .ok()?;
        let status = bus.status(&[]).await.ok()?;
        let topic = status
            .topics
            .iter()
            .find(|t| t.topic == sluice_schema::topics::LOGS)?;
        Some(topic.partitions.iter().map(|p| p.end_offset).sum())
    }

    async fn sql(&self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let output = self
            .engine
            .query(&QueryRequest {
                sql: sql.into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("query failed: {sql}"))?;
        rows_of(&output)
    }
}

#[cfg(test)]
mod tests;
