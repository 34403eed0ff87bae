//! `sluice bench tailll`: how fast `tailll` shows what tasks write.
//!
//! It starts `sluice up --nodes 3` (this binary) in a scratch directory and
//! runs probe jobs on it: each instance is this binary again (`sluice bench
//! tailll --probe`, hidden) writing lines that carry their write time in
//! nanoseconds, at a fixed rate, to its stdout file in the sandbox. A
//! `tailll` process follows the job and the bench reads its stdout, taking
//! the time each line arrives: append → display latency, with the node's
//! inotify, shipper, Tail stream, the network hop, tailll's reorder window
//! and its output all on the way.
//!
//! 1. Latency at `--rate` lines/s in all (10,000) over `--instances` (60)
//!    instances on three nodes for `--seconds` (20): `tailll --output json`
//!    in its default reorder window, then with `--unordered`.
//! 2. Throughput into a pipe: `tailll --output raw` at rising rates
//!    (`--pipe-rates`), each probe writing what is due every 10 ms as a
//!    buffered logger does; a rate is sustained when every line arrived once,
//!    the writers kept their schedule (the machine was not saturated) and
//!    99 % of lines took under a second (no backlog building up).
//!
//! Every phase checks that each line arrived exactly once. CPU times are
//! read from `/proc/PID/stat`, for tailll and for `sluice up` (three
//! shippers, the scheduler, the archiver), over the measured window.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{JobKeyRequest, SubmitJobRequest, TaskState};

use sluice_client::{self as client, AuthedChannel};

/// Flags of `sluice bench tailll`, including the hidden `--probe*` ones the probe jobs run it
/// with; its help text comes from [`BenchCommand::Tailll`](crate::BenchCommand::Tailll).
#[derive(Args, Debug)]
pub struct TaillBenchArgs {
    /// Lines per second in all, for the latency phases.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Instances of each probe job, spread over the nodes.
    #[arg(long, default_value_t = 60)]
    pub instances: u32,
    /// Nodes of the `sluice up`.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Seconds each latency phase writes.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Only the pipe phase.
    #[arg(long)]
    pub no_latency: bool,
    /// Total rates (lines/s) tried for the pipe phase, in order, until one is
    /// not sustained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "20000,30000,40000,60000,80000,120000,160000"
    )]
    pub pipe_rates: Vec<u32>,
    /// Seconds each pipe rate writes.
    #[arg(long, default_value_t = 10)]
    pub pipe_seconds: u64,
    /// In the pipe phase, each probe writes what is due every this many
    /// milliseconds (a buffered logger); the latency phases write each line
    /// when it is due.
    #[arg(long, default_value_t = 10)]
    pub pipe_write_ms: u64,
    /// The tailll binary [default: `tailll` next to this sluice].
    #[arg(long)]
    pub tailll: Option<PathBuf>,
    /// Scratch directory [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,

    /// Run as one probe instance (what the probe jobs run).
    #[arg(long, hide = true)]
    pub probe: bool,
    /// Probe: lines per second this instance writes (must be positive)
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub probe_rate: f64,
    /// Probe: lines to write in all, then exit
    #[arg(long, hide = true, default_value_t = 0)]
    pub probe_lines: u64,
    /// Probe: instance number, printed in its `hello` line and stamped on every line
    #[arg(long, hide = true, default_value_t = 0)]
    pub probe_instance: u32,
    /// Probe: wait until this file exists before writing lines
    #[arg(long, hide = true)]
    pub probe_go: Option<PathBuf>,
    /// Probe: least milliseconds between two writes (0: 0.5 ms); what is due is written at once
    #[arg(long, hide = true, default_value_t = 0)]
    pub probe_write_ms: u64,
    /// Log samples: each line carries one of them after its stamp (instance
    /// `i` logs the corpus's file `i` modulo their number) instead of
    /// padding to `LINE_BYTES`.
    #[arg(long, hide = true)]
    pub probe_corpus: Option<PathBuf>,
}

/// Bytes of each probe line, newline included (about a log line's).
const LINE_BYTES: usize = 100;

/// Runs `sluice bench tailll`: starts a `sluice up` in a scratch directory, runs the latency and
/// pipe phases with probe jobs and `tailll`, and prints the report. With `--probe`, runs as one
/// probe instance instead.
pub async fn run(args: TaillBenchArgs) -> anyhow::Result<()> {
    if args.probe {
        return tokio::task::spawn_blocking(move || probe(&args)).await?;
    }
    anyhow::ensure!(
        args.instances > 0 && args.rate > 0,
        "--instances and --rate must be positive"
    );
    let exe = std::env::current_exe().context("cannot find this sluice binary")?;
    let tailll = args
        .tailll
        .clone()
        .unwrap_or_else(|| exe.with_file_name("tailll"));
    anyhow::ensure!(
        tailll.exists(),
        "no tailll binary at {} (build it with `cargo build --release -p tailll`, or pass --tailll)",
        tailll.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("sluice-bench-tailll-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let cluster = Cluster::start(&exe, scratch.path(), args.nodes, &[]).await?;
    let bench = Bench {
        exe,
        tailll,
        scratch: scratch.path().to_path_buf(),
        cluster,
        instances: args.instances,
    };
    let result = bench.all(&args).await;
    bench.cluster.stop();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: u32,
    instances: u32,
    line_bytes: usize,
    latency: Vec<Phase>,
    pipe: Vec<Phase>,
    /// Highest total rate the pipe phase sustained.
    pipe_sustained_lines_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: String,
    rate: u32,
    seconds: u64,
    expected: u64,
    received: u64,
    duplicates: u64,
    /// Lines per second tailll delivered while the writers wrote.
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// From the writers' scheduled end to the last line.
    drain_s: f64,
    /// How late the last line was written (the writers could not keep
    /// the rate: the machine was saturated).
    writers_late_s: f64,
    /// Share of the machine's CPU time in use during the phase.
    machine_busy: f64,
    tailll_cpu_s: f64,
    tailll_lines_per_cpu_s: f64,
    up_cpu_s: f64,
    sustained: bool,
}

fn print(r: &Report) {
    println!(
        "tailll: {} instances on {} nodes, {}-byte lines",
        r.instances, r.nodes, r.line_bytes
    );
    println!(
        "{:<24} {:>8} {:>9} {:>9} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>9} {:>12} {:>8} {:>5}",
        "phase",
        "rate",
        "expected",
        "received",
        "dups",
        "lines/s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "drain s",
        "late s",
        "tailll s",
        "lines/CPU-s",
        "up CPU s",
        "busy"
    );
    for p in r.latency.iter().chain(&r.pipe) {
        println!(
            "{:<24} {:>8} {:>9} {:>9} {:>5} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.2} {:>6.2} {:>9.2} {:>12.0} {:>8.2} {:>4.0}%{}",
            p.name,
            p.rate,
            p.expected,
            p.received,
            p.duplicates,
            p.delivered_per_s,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms,
            p.drain_s,
            p.writers_late_s,
            p.tailll_cpu_s,
            p.tailll_lines_per_cpu_s,
            p.up_cpu_s,
            p.machine_busy * 100.0,
            if p.sustained { "" } else { "  (not sustained)" }
        );
    }
    match r.pipe_sustained_lines_per_s {
        Some(rate) => println!("highest sustained rate into a pipe: {rate:.0} lines/s"),
        None => println!("no pipe rate was sustained"),
    }
}

/// A `sluice up` in the background, and a scheduler client for it.
pub(crate) struct Cluster {
    pub(crate) child: Child,
    pub(crate) data_dir: PathBuf,
    pub(crate) scheduler: SchedulerClient<AuthedChannel>,
}

impl Cluster {
    /// `sluice up --nodes NODES UP_ARGS…` with its data directory in
    /// `scratch/d` and its log in `scratch/up.log`.
    pub(crate) async fn start(
        exe: &Path,
        scratch: &Path,
        nodes: u32,
        up_args: &[String],
    ) -> anyhow::Result<Cluster> {
        let data_dir = scratch.join("d");
        std::fs::create_dir_all(&data_dir)?;
        let log = scratch.join("up.log");
        let child = Command::new(exe)
            .arg("up")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--nodes", &nodes.to_string()])
            .args(up_args)
            .env_remove("SLUICE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("failed to start sluice up")?;
        let mut child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !client::ClientFile::path(&data_dir).exists() {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "sluice up exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.take().map(|mut c| c.kill());
                anyhow::bail!("sluice up did not start in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let overrides = sluice_client::Overrides::default();
        let cluster = client::Cluster::resolve(&data_dir, &overrides)?;
        let scheduler =
            SchedulerClient::new(cluster.connect(&client::ConnectOptions::default()).await?);
        Ok(Cluster {
            child: child.take().expect("running"),
            data_dir,
            scheduler,
        })
    }

    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the probes of one phase write.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// Lines per second, all instances together.
    rate: u32,
    seconds: u64,
    /// Each probe writes at most every this many milliseconds (0: each
    /// line when it is due).
    write_ms: u64,
}

struct Bench {
    exe: PathBuf,
    tailll: PathBuf,
    scratch: PathBuf,
    cluster: Cluster,
    instances: u32,
}

impl Bench {
    async fn all(&self, args: &TaillBenchArgs) -> anyhow::Result<Report> {
        let mut scheduler = self.cluster.scheduler.clone();
        let mut latency = Vec::new();
        let latency_phases: &[(&str, &[&str])] = match args.no_latency {
            true => &[],
            false => &[
                ("json ordered", &[]),
                ("json --unordered", &["--unordered"]),
            ],
        };
        for &(name, extra) in latency_phases {
            let mut tailll_args = vec!["--output", "json"];
            tailll_args.extend_from_slice(extra);
            let phase = self
                .phase(
                    &mut scheduler,
                    name,
                    Load {
                        rate: args.rate,
                        seconds: args.seconds,
                        write_ms: 0,
                    },
                    &tailll_args,
                    true,
                )
                .await?;
            eprintln!(
                "{name}: p50 {:.1} ms, p99 {:.1} ms",
                phase.p50_ms, phase.p99_ms
            );
            latency.push(phase);
        }
        let mut pipe = Vec::new();
        let mut best = None;
        for &rate in &args.pipe_rates {
            let name = format!("raw pipe {rate}");
            let phase = self
                .phase(
                    &mut scheduler,
                    &name,
                    Load {
                        rate,
                        seconds: args.pipe_seconds,
                        write_ms: args.pipe_write_ms,
                    },
                    &["--output", "raw"],
                    false,
                )
                .await?;
            eprintln!(
                "{name}: delivered {:.0} lines/s, p99 {:.1} ms, sustained {}",
                phase.delivered_per_s, phase.p99_ms, phase.sustained
            );
            let sustained = phase.sustained;
            if sustained {
                best = Some(phase.delivered_per_s);
            }
            pipe.push(phase);
            if !sustained {
                break;
            }
        }
        Ok(Report {
            nodes: args.nodes,
            instances: self.instances,
            line_bytes: LINE_BYTES,
            latency,
            pipe,
            pipe_sustained_lines_per_s: best,
        })
    }

    /// One probe job writing `load`, followed by `tailll TAILLL_ARGS`.
    async fn phase(
        &self,
        scheduler: &mut SchedulerClient<AuthedChannel>,
        name: &str,
        load: Load,
        tailll_args: &[&str],
        json: bool,
    ) -> anyhow::Result<Phase> {
        let Load {
            rate,
            seconds,
            write_ms,
        } = load;
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let job = format!("bench/tailll/{slug}");
        let go = self.scratch.join(format!("go-{slug}"));
        let per_instance = f64::from(rate) / f64::from(self.instances);
        let lines = (per_instance * seconds as f64).round() as u64;
        let expected = lines * u64::from(self.instances);
        let cmd = format!(
            "exec '{}' bench tailll --probe --probe-rate {per_instance} --probe-lines {lines} --probe-instance {{{{instance}}}} --probe-write-ms {write_ms} --probe-go '{}'",
            self.exe.display(),
            go.display()
        );
        let spec = format!(
            "name: {slug}\nrole: bench\nenv: tailll\ninstances: {}\nresources: {{cpu: 0.001, ram_mb: 1, disk_mb: 256}}\nrestart: never\nprocesses:\n  - name: probe\n    cmd: {}\n",
            self.instances,
            serde_json::to_string(&cmd)?
        );
        scheduler
            .submit_job(SubmitJobRequest {
                spec_yaml: spec,
                stage: String::new(),
            })
            .await
            .with_context(|| format!("failed to submit {job}"))?;
        until_running(scheduler, &job, self.instances).await?;

        let mut follower = Follower::start(
            &self.tailll,
            &job,
            tailll_args,
            &self.cluster.data_dir,
            &self.scratch.join(format!("tailll-{slug}.err")),
            json,
        )?;
        follower
            .wait_for_hellos(u64::from(self.instances), Duration::from_secs(60))
            .await
            .with_context(|| name.to_string())?;
        let pid = follower.pid();
        let (tailll_cpu0, up_cpu0) = (proc_cpu(pid), proc_cpu(self.cluster.child.id()));
        let machine0 = machine_cpu();
        let went = Instant::now();
        let go_nanos = now_nanos();
        std::fs::write(&go, b"go")?;
        let deadline = went + Duration::from_secs(seconds + 30);
        while follower.received() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (tailll_cpu, up_cpu) = (
            proc_cpu(pid) - tailll_cpu0,
            proc_cpu(self.cluster.child.id()) - up_cpu0,
        );
        let machine = machine_cpu();
        let machine_busy = (machine.0 - machine0.0) as f64 / (machine.1 - machine0.1).max(1) as f64;
        let (exited, seen) = follower.stop().await?;
        let _ = scheduler.kill_job(JobKeyRequest { job: job.clone() }).await;
        anyhow::ensure!(
            exited.is_some_and(|s| s.success()),
            "{name}: tailll did not exit 0 on Ctrl-C ({exited:?})"
        );

        let mut latencies = seen.latencies;
        latencies.sort_unstable();
        let quantile = |q: f64| -> f64 {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .map_or(f64::NAN, |ns| *ns as f64 / 1e6)
        };
        let write_end = go_nanos + (seconds as i64) * 1_000_000_000;
        let drain_s = (seen.last_nanos - write_end) as f64 / 1e9;
        let writers_late_s = (seen.last_written - write_end) as f64 / 1e9;
        let received = seen.unique;
        Ok(Phase {
            name: name.to_string(),
            rate,
            seconds,
            expected,
            received,
            duplicates: seen.duplicates,
            delivered_per_s: received as f64
                / ((seen.last_nanos - go_nanos) as f64 / 1e9).max(1e-9),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: latencies.last().map_or(f64::NAN, |ns| *ns as f64 / 1e6),
            drain_s,
            writers_late_s,
            machine_busy,
            tailll_cpu_s: tailll_cpu.as_secs_f64(),
            tailll_lines_per_cpu_s: received as f64 / tailll_cpu.as_secs_f64().max(1e-9),
            up_cpu_s: up_cpu.as_secs_f64(),
            // Every line, once, with no backlog building up: the writers
            // kept their schedule and 99 % of lines took under a second.
            sustained: received == expected
                && seen.duplicates == 0
                && writers_late_s < 1.0
                && quantile(0.99) < 1000.0,
        })
    }
}

/// Waits until every one of the job's `instances` runs.
pub(crate) async fn until_running(
    scheduler: &mut SchedulerClient<AuthedChannel>,
    job: &str,
    instances: u32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = scheduler
            .describe_job(JobKeyRequest { job: job.into() })
            .await?
            .into_inner();
        let running = status
            .instances
            .iter()
            .filter(|i| i.state == TaskState::Running as i32)
            .count();
        if running == instances as usize {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{job}: {running} of {instances} instances running after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `tailll JOB ARGS… -n 1 --quiet` process, its stdout read by a
/// [`Reader`].
pub(crate) struct Follower {
    child: Child,
    reader: Reader,
}

impl Follower {
    pub(crate) fn start(
        tailll: &Path,
        job: &str,
        args: &[&str],
        data_dir: &Path,
        stderr: &Path,
        json: bool,
    ) -> anyhow::Result<Follower> {
        let mut child = Command::new(tailll)
            .arg(job)
            .args(args)
            .args(["-n", "1", "--quiet", "--data-dir"])
            .arg(data_dir)
            .env_remove("SLUICE_ADDR")
            .env_remove("SLUICE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr)?)
            .spawn()
            .with_context(|| format!("failed to start {}", tailll.display()))?;
        let reader = Reader::start(child.stdout.take().expect("piped"), json);
        Ok(Follower { child, reader })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Probe lines shown so far (once each).
    pub(crate) fn received(&self) -> u64 {
        self.reader.received.load(Ordering::Relaxed)
    }

    /// Each probe writes `hello` before it waits for the go file: when
    /// tailll shows `probes` of them, it follows every node. Kills tailll
    /// if that takes longer than `within`.
    pub(crate) async fn wait_for_hellos(
        &mut self,
        probes: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while self.reader.hellos.load(Ordering::Relaxed) < probes {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                anyhow::bail!(
                    "tailll showed {} of {probes} probes' first lines in {within:?}",
                    self.reader.hellos.load(Ordering::Relaxed),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Ctrl-C; how tailll exited (`None`: not within 10 s, killed) and what
    /// it showed.
    pub(crate) async fn stop(self) -> anyhow::Result<(Option<std::process::ExitStatus>, Seen)> {
        let Follower { mut child, reader } = self;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let exited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await?;
        Ok((exited, reader.finish()))
    }
}

/// What the bench read from tailll.
pub(crate) struct Seen {
    /// Arrival − write time of each line shown, nanoseconds, in arrival
    /// order.
    pub(crate) latencies: Vec<i64>,
    pub(crate) unique: u64,
    pub(crate) duplicates: u64,
    pub(crate) last_nanos: i64,
    /// The latest write time of a line.
    pub(crate) last_written: i64,
}

/// Reads tailll's stdout on a thread, timing each probe line.
struct Reader {
    hellos: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Seen>,
}

impl Reader {
    fn start(stdout: std::process::ChildStdout, json: bool) -> Reader {
        let hellos = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (h, r) = (hellos.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut input = std::io::BufReader::with_capacity(1 << 20, stdout);
            let mut line = Vec::new();
            let mut seen = HashSet::new();
            let mut out = Seen {
                latencies: Vec::new(),
                unique: 0,
                duplicates: 0,
                last_nanos: 0,
                last_written: 0,
            };
            loop {
                line.clear();
                match input.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = now_nanos();
                let text = match json {
                    true => match find(&line, b"\"line\":\"") {
                        Some(at) => &line[at + 8..],
                        None => continue,
                    },
                    false => &line[..],
                };
                if text.starts_with(b"hello") {
                    h.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Some((written, instance, seq)) = parse_probe(text) else {
                    continue;
                };
                if seen.insert((instance, seq)) {
                    out.unique += 1;
                    out.latencies.push(now - written);
                    out.last_nanos = now;
                    out.last_written = out.last_written.max(written);
                    r.fetch_add(1, Ordering::Relaxed);
                } else {
                    out.duplicates += 1;
                }
            }
            out
        });
        Reader {
            hellos,
            received,
            thread,
        }
    }

    fn finish(self) -> Seen {
        self.thread.join().expect("the reader does not panic")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `WRITE_NANOS INSTANCE SEQ …`.
pub(crate) fn parse_probe(text: &[u8]) -> Option<(i64, u32, u64)> {
    let mut fields = text.split(|b| *b == b' ');
    let mut number = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    let written = i64::try_from(number()?).ok()?;
    let instance = u32::try_from(number()?).ok()?;
    let seq = number()?;
    Some((written, instance, seq))
}

/// A probe line: write time, instance, sequence number, then `text` or
/// padding to `LINE_BYTES`.
fn probe_line(out: &mut Vec<u8>, written: i64, instance: u32, seq: u64, text: Option<&[u8]>) {
    let start = out.len();
    let _ = write!(out, "{written:019} {instance:05} {seq:010} ");
    match text {
        Some(text) => out.extend_from_slice(text),
        None => {
            while out.len() - start < LINE_BYTES - 1 {
                out.push(b'a' + ((out.len() - start) % 26) as u8);
            }
        }
    }
    out.push(b'\n');
}

/// The probe: `hello`, then (once the go file exists) `--probe-lines`
/// lines at `--probe-rate` lines/s, each stamped just before its write;
/// what is due is written at once, at most every `--probe-write-ms`.
fn probe(args: &TaillBenchArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "hello {}", args.probe_instance)?;
    stdout.flush()?;
    if let Some(go) = &args.probe_go {
        while !go.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    anyhow::ensure!(args.probe_rate > 0.0, "--probe-rate must be positive");
    // The instance's corpus file, its digits changed on each pass through
    // it so that repeats are not byte-identical.
    let corpus = match &args.probe_corpus {
        Some(dir) => {
            let mut files = crate::corpus::corpus_files(Some(dir))?;
            let at = args.probe_instance as usize % files.len();
            files.swap_remove(at).1
        }
        None => Vec::new(),
    };
    let text = |seq: u64| -> Option<Vec<u8>> {
        let n = corpus.len() as u64;
        (n > 0).then(|| crate::archive::vary(&corpus[(seq % n) as usize], (seq / n) as usize))
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut buffer = Vec::with_capacity(64 << 10);
    while written < args.probe_lines {
        let due =
            ((started.elapsed().as_secs_f64() * args.probe_rate) as u64 + 1).min(args.probe_lines);
        if due > written {
            buffer.clear();
            let now = now_nanos();
            for seq in written..due {
                probe_line(
                    &mut buffer,
                    now,
                    args.probe_instance,
                    seq,
                    text(seq).as_deref(),
                );
            }
            stdout.write_all(&buffer)?;
            stdout.flush()?;
            written = due;
        }
        let next = Duration::from_secs_f64(written as f64 / args.probe_rate);
        let wait = next.saturating_sub(started.elapsed());
        let least = Duration::from_millis(args.probe_write_ms).max(Duration::from_micros(500));
        std::thread::sleep(wait.max(least));
    }
    Ok(())
}

pub(crate) use sluice_schema::time::now_unix_nanos as now_nanos;

/// The machine's busy and total CPU time so far, in ticks (`/proc/stat`).
pub(crate) fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// User + system CPU of a process so far (zero if it is gone).
pub(crate) fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    stat_cpu(&stat)
}

/// User + system CPU in the text of a `/proc/…/stat` file (a process's, or
/// a thread's in `/proc/PID/task/TID/stat`).
pub(crate) fn stat_cpu(stat: &str) -> Duration {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    // After the command: state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_parse_back() {
        let mut out = Vec::new();
        probe_line(&mut out, 1_795_000_000_123_456_789, 42, 7, None);
        assert_eq!(out.len(), LINE_BYTES);
        assert_eq!(parse_probe(&out), Some((1_795_000_000_123_456_789, 42, 7)));
        out.clear();
        probe_line(&mut out, 5, 1, 2, Some(b"INFO dfs.DataNode: a b"));
        assert_eq!(
            out,
            b"0000000000000000005 00001 0000000002 INFO dfs.DataNode: a b\n"
        );
        assert_eq!(parse_probe(&out), Some((5, 1, 2)));
        let json = br#"{"ts":1,"line":"0000000000000000005 00003 0000000009 abc"}"#;
        let at = find(json, b"\"line\":\"").unwrap();
        assert_eq!(parse_probe(&json[at + 8..]), Some((5, 3, 9)));
        assert_eq!(parse_probe(b"hello 3"), None);
    }

    #[test]
    fn cpu_of_this_process() {
        let before = proc_cpu(std::process::id());
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(proc_cpu(std::process::id()) >= before);
        assert_eq!(proc_cpu(u32::MAX), Duration::ZERO);
    }
}
