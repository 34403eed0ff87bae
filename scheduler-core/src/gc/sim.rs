//! The garbage-collection benchmark: a simulated node on which tasks start,
//! write logs at varying rates and finish, a shipper ships them with a lag,
//! a limited throughput and stalls, and every `pass_interval` the real
//! [`policy::plan`] decides and the simulation applies the plan. The
//! [`SimReport`] holds a time series per pass (disk usage, bytes freed,
//! decision time, forced deletions, unshipped bytes deleted without being
//! forced, which must stay 0), a summary, a CSV and an SVG plot of usage
//! over time. Deterministic for a given [`SimConfig::seed`] except for the
//! measured decision times. `sluice bench gc` runs it.
//!
//! The model: `running` short tasks run at all times (one starts when one
//! finishes), each writing at a log-uniform rate for a uniform runtime;
//! `long_running` tasks write for the whole run (their shipped prefixes are
//! what gets punched). Allocation is byte-exact (no blocks). The shipper
//! ships only what is older than `shipper_lag`, shares its throughput
//! equally among sandboxes with a backlog (water-filling), ships nothing
//! during a [`Stall`], and never finishes a `stuck_fraction` of sandboxes
//! (their last 4 KiB), which `max_wait` eventually forces.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::GcConfig;
use super::policy::{self, Decision, Forced, NodeDisk, SandboxInfo, SandboxState};

/// A window in which the shipper ships nothing (a bus outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// From the start of the simulation.
    pub start: Duration,
    /// How long the shipper ships nothing from `start`.
    pub length: Duration,
}

/// The simulated node and workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Sandboxes on the node at the start (running ones included); the rest
    /// are terminated, shipped, up to `initial_max_age` old.
    pub sandboxes: usize,
    /// Short tasks running at any time.
    pub running: usize,
    /// Tasks that run for the whole simulation.
    pub long_running: usize,
    /// What tasks can fill (`NodeDisk::total_bytes`).
    pub capacity_bytes: u64,
    /// Bytes used by other things than sandboxes.
    pub base_used_bytes: u64,
    /// Simulated time to run; one pass per whole `pass_interval` in it.
    pub duration: Duration,
    /// The GC pass interval (`disk_watch_interval`).
    pub pass_interval: Duration,
    /// Short tasks run for a uniform time in this range.
    pub task_runtime: (Duration, Duration),
    /// Short tasks write at a log-uniform rate in this range, bytes/s.
    pub write_rate: (u64, u64),
    /// Long-running tasks write at this rate, bytes/s.
    pub long_running_rate: u64,
    /// Every task's disk quota.
    pub quota_bytes: Option<u64>,
    /// Age spread of the terminated sandboxes present at the start.
    pub initial_max_age: Duration,
    /// Fraction of tasks whose logs the shipper never finishes.
    pub stuck_fraction: f64,
    /// The shipper's throughput, shared among sandboxes with a backlog.
    pub shipper_bytes_per_sec: u64,
    /// Bytes are shippable this long after they are written.
    pub shipper_lag: Duration,
    /// Windows in which the shipper ships nothing.
    pub stalls: Vec<Stall>,
    /// The garbage-collection settings under test.
    pub gc: GcConfig,
    /// Seeds the workload; the same seed gives the same run, decision times
    /// apart.
    pub seed: u64,
    /// Wall-clock time of the simulation's start (only shifts timestamps).
    pub start_unix_ms: u64,
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const STUCK_TAIL_BYTES: u64 = 4096;

impl Default for SimConfig {
    /// 10,000 sandboxes on a 2 TiB disk for two simulated days: about 31
    /// MB/s of logs, around half the disk used at equilibrium, and a
    /// 16-hour shipper stall. Once the sandboxes shipped before the stall
    /// are collected, usage climbs past the pressure line (nothing left may
    /// be deleted without loss) but stays under the critical mark; when the
    /// shipper catches up, GC brings it back. A 20-hour stall crosses the
    /// critical mark and forces deletions.
    fn default() -> Self {
        SimConfig {
            sandboxes: 10_000,
            running: 1_000,
            long_running: 20,
            capacity_bytes: 2 << 40,
            base_used_bytes: 100 * GIB,
            duration: Duration::from_secs(48 * 3600),
            pass_interval: Duration::from_secs(60),
            task_runtime: (Duration::from_secs(5 * 60), Duration::from_secs(2 * 3600)),
            write_rate: (1 << 10, 128 << 10),
            long_running_rate: 256 << 10,
            quota_bytes: Some(16 * GIB),
            initial_max_age: Duration::from_secs(10 * 3600),
            stuck_fraction: 0.0005,
            shipper_bytes_per_sec: 100 * MIB,
            shipper_lag: Duration::from_secs(30),
            stalls: vec![Stall {
                start: Duration::from_secs(12 * 3600),
                length: Duration::from_secs(16 * 3600),
            }],
            gc: GcConfig::default(),
            seed: 0x5eed,
            start_unix_ms: 1_767_225_600_000,
        }
    }
}

/// One GC pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassStats {
    /// Simulated seconds since the start.
    pub t_secs: u64,
    /// Sandboxes on the node when the pass started.
    pub sandboxes: usize,
    /// Used bytes when the pass started, and its fraction of capacity.
    pub used_bytes: u64,
    /// `used_bytes` ÷ capacity.
    pub used_fraction: f64,
    /// Used bytes once the pass's actions were applied.
    pub used_after_bytes: u64,
    /// The pressure the plan reported at the pass's start.
    pub pressure: policy::Pressure,
    /// Sandboxes the pass deleted.
    pub deleted: usize,
    /// Deleted plus punched.
    pub freed_bytes: u64,
    /// Bytes freed by punching shipped log prefixes.
    pub punched_bytes: u64,
    /// Deletions forced by a critical disk ([`Forced::CriticalDisk`]).
    pub forced_critical: usize,
    /// Deletions forced by `max_wait` ([`Forced::MaxWait`]).
    pub forced_max_wait: usize,
    /// Unshipped bytes of forced deletions (each a `data_loss` event).
    pub forced_unshipped_bytes: u64,
    /// Unshipped bytes deleted without `forced`: a policy bug, must be 0.
    pub unforced_unshipped_bytes: u64,
    /// Time spent in `policy::plan`, nanoseconds.
    pub decision_ns: u64,
}

/// Totals over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimSummary {
    /// GC passes run.
    pub passes: usize,
    /// Most sandboxes on the node at the start of a pass.
    pub sandboxes_max: usize,
    /// Mean sandboxes on the node at the start of a pass.
    pub sandboxes_mean: f64,
    /// Median time of `policy::plan`, microseconds (measured, not simulated).
    pub decision_us_p50: f64,
    /// 99th percentile time of `policy::plan`, microseconds.
    pub decision_us_p99: f64,
    /// Longest time of `policy::plan`, microseconds.
    pub decision_us_max: f64,
    /// Sandboxes deleted over the run.
    pub deleted: usize,
    /// Bytes freed over the run, deletions and punches.
    pub freed_bytes: u64,
    /// Bytes freed by punches over the run.
    pub punched_bytes: u64,
    /// Deletions forced by a critical disk over the run.
    pub forced_critical: usize,
    /// Deletions forced by `max_wait` over the run.
    pub forced_max_wait: usize,
    /// Unshipped bytes lost to forced deletions over the run.
    pub forced_unshipped_bytes: u64,
    /// Unshipped bytes deleted without `forced` over the run: a policy bug,
    /// must be 0.
    pub unforced_unshipped_bytes: u64,
    /// Highest used fraction of capacity at the start of a pass.
    pub peak_used_fraction: f64,
    /// Passes that started above the pressure line.
    pub passes_over_pressure_line: usize,
    /// Passes that started at or above the critical mark.
    pub passes_at_critical: usize,
    /// Passes that started with the disk full (tasks would have failed).
    pub passes_full: usize,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// One entry per pass, in time order.
    pub passes: Vec<PassStats>,
    /// Totals and extremes over all passes.
    pub summary: SimSummary,
    /// The simulated disk's capacity ([`SimConfig::capacity_bytes`]).
    pub capacity_bytes: u64,
    /// Fraction of capacity above which the disk is under pressure,
    /// `1 − gc_disk_headroom`.
    pub pressure_line: f64,
    /// Fraction of capacity at or above which the disk is critical.
    pub critical_mark: f64,
    /// Stall windows, in simulated seconds.
    pub stalls_secs: Vec<(u64, u64)>,
}

/// splitmix64: small, seeded, good enough for a workload.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + (self.unit() * hi.saturating_sub(lo) as f64) as u64
    }

    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo, hi) = ((lo.max(1) as f64).ln(), (hi.max(1) as f64).ln());
        (lo + self.unit() * (hi - lo)).exp() as u64
    }
}

/// A simulated sandbox. Times are unix milliseconds.
#[derive(Debug, Clone)]
struct Sandbox {
    num: u64,
    id: String,
    start_ms: u64,
    /// When the task ends (`u64::MAX`: never).
    end_ms: u64,
    rate: u64,
    stuck: bool,
    terminated: bool,
    written: u64,
    shipped: u64,
    punched: u64,
}

impl Sandbox {
    /// Bytes written by `t_ms` (the rate is constant).
    fn written_at(&self, t_ms: u64) -> u64 {
        let elapsed = t_ms.min(self.end_ms).saturating_sub(self.start_ms);
        (self.rate as u128 * elapsed as u128 / 1000) as u64
    }

    fn allocated(&self) -> u64 {
        self.written - self.punched
    }
}

struct Node<'a> {
    config: &'a SimConfig,
    rng: Rng,
    next_num: u64,
    sandboxes: Vec<Sandbox>,
}

impl Node<'_> {
    fn spawn(&mut self, start_ms: u64, long: bool) -> Sandbox {
        let config = self.config;
        let (end_ms, rate) = if long {
            (u64::MAX, config.long_running_rate)
        } else {
            let (lo, hi) = config.task_runtime;
            let runtime = self
                .rng
                .between(lo.as_millis() as u64, hi.as_millis() as u64);
            let rate = self
                .rng
                .log_uniform(config.write_rate.0, config.write_rate.1);
            (start_ms + runtime.max(1), rate)
        };
        let num = self.next_num;
        self.next_num += 1;
        Sandbox {
            num,
            id: format!("task-{num:08}"),
            start_ms,
            end_ms,
            rate,
            stuck: self.rng.unit() < config.stuck_fraction,
            terminated: false,
            written: 0,
            shipped: 0,
            punched: 0,
        }
    }

    /// The node at the start: terminated sandboxes (shipped) of every age
    /// up to `initial_max_age`, short tasks part-way through, long ones.
    fn populate(&mut self) {
        let config = self.config;
        let t0 = config.start_unix_ms;
        let max_age = config.initial_max_age.as_millis() as u64;
        let max_runtime = config.task_runtime.1.as_millis() as u64;
        let terminated = config
            .sandboxes
            .saturating_sub(config.running + config.long_running);
        for _ in 0..terminated {
            let ended = t0 - self.rng.between(0, max_age);
            let mut sandbox = self.spawn(0, false);
            let runtime = sandbox.end_ms;
            sandbox.start_ms = ended - runtime;
            sandbox.end_ms = ended;
            sandbox.terminated = true;
            sandbox.written = sandbox.written_at(ended);
            sandbox.shipped = if sandbox.stuck {
                sandbox.written.saturating_sub(STUCK_TAIL_BYTES)
            } else {
                sandbox.written
            };
            self.sandboxes.push(sandbox);
        }
        for k in 0..config.running + config.long_running {
            let long = k >= config.running;
            let mut sandbox = self.spawn(0, long);
            let runtime = if long {
                self.rng.between(0, max_runtime)
            } else {
                sandbox.end_ms
            };
            // Started `runtime × u` ago, so it ends in the future.
            let ago = (runtime as f64 * self.rng.unit()) as u64;
            sandbox.start_ms = t0 - ago;
            if !long {
                sandbox.end_ms = sandbox.start_ms + runtime;
            }
            sandbox.written = sandbox.written_at(t0);
            sandbox.shipped = sandbox.written;
            self.sandboxes.push(sandbox);
        }
        self.sandboxes.sort_by_key(|s| s.num);
    }

    /// Tasks write up to `now`; finished ones are replaced at their end.
    fn advance(&mut self, now: u64) {
        let mut k = 0;
        while k < self.sandboxes.len() {
            let sandbox = &mut self.sandboxes[k];
            if !sandbox.terminated {
                sandbox.written = sandbox.written_at(now);
                if sandbox.end_ms <= now {
                    sandbox.terminated = true;
                    let end = sandbox.end_ms;
                    let mut next = self.spawn(end, false);
                    next.written = next.written_at(now);
                    self.sandboxes.push(next);
                }
            }
            k += 1;
        }
    }

    /// The shipper's share of `budget` bytes, water-filled over backlogs.
    fn ship(&mut self, shippable_by: u64, mut budget: u64) {
        let mut backlog: Vec<(u64, usize)> = Vec::new();
        for (k, sandbox) in self.sandboxes.iter().enumerate() {
            let mut shippable = sandbox.written_at(shippable_by).min(sandbox.written);
            if sandbox.stuck {
                shippable = shippable.min(sandbox.written.saturating_sub(STUCK_TAIL_BYTES));
            }
            if shippable > sandbox.shipped {
                backlog.push((shippable - sandbox.shipped, k));
            }
        }
        backlog.sort_unstable();
        let mut left = backlog.len() as u64;
        for (want, k) in backlog {
            let share = budget / left;
            let given = want.min(share);
            self.sandboxes[k].shipped += given;
            budget -= given;
            left -= 1;
        }
    }

    fn used(&self) -> u64 {
        self.config.base_used_bytes + self.sandboxes.iter().map(Sandbox::allocated).sum::<u64>()
    }

    fn infos(&self) -> Vec<SandboxInfo> {
        self.sandboxes
            .iter()
            .map(|s| {
                let unshipped = s.written - s.shipped;
                SandboxInfo {
                    id: s.id.clone(),
                    state: if s.terminated {
                        SandboxState::Terminated {
                            at_unix_ms: s.end_ms,
                        }
                    } else {
                        SandboxState::Running
                    },
                    allocated_bytes: s.allocated(),
                    unshipped_bytes: unshipped,
                    unshipped_files: if unshipped > 0 {
                        vec![(format!("{}/stdout", s.id), unshipped)]
                    } else {
                        Vec::new()
                    },
                    shipped_prefix_reclaimable: if s.terminated {
                        0
                    } else {
                        s.shipped - s.punched
                    },
                    quota_bytes: self.config.quota_bytes,
                }
            })
            .collect()
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let num: u64 = id.strip_prefix("task-")?.parse().ok()?;
        self.sandboxes.binary_search_by_key(&num, |s| s.num).ok()
    }
}

/// Milliseconds of `[from, to)` (simulated ms since the start) in a stall.
fn stalled_ms(stalls: &[Stall], from: u64, to: u64) -> u64 {
    stalls
        .iter()
        .map(|stall| {
            let start = stall.start.as_millis() as u64;
            let end = start + stall.length.as_millis() as u64;
            end.min(to).saturating_sub(start.max(from))
        })
        .sum::<u64>()
        .min(to - from)
}

/// Runs the simulation.
pub fn run(config: &SimConfig) -> SimReport {
    let mut node = Node {
        config,
        rng: Rng(config.seed),
        next_num: 0,
        sandboxes: Vec::with_capacity(config.sandboxes * 2),
    };
    node.populate();
    let step = config.pass_interval.as_millis().max(1) as u64;
    let duration = config.duration.as_millis() as u64;
    let lag = config.shipper_lag.as_millis() as u64;
    let mut passes = Vec::with_capacity((duration / step) as usize);
    let mut t = 0;
    while t + step <= duration {
        let shipping_ms = step - stalled_ms(&config.stalls, t, t + step);
        t += step;
        let now = config.start_unix_ms + t;
        node.advance(now);
        let budget = (config.shipper_bytes_per_sec as u128 * shipping_ms as u128 / 1000) as u64;
        node.ship(now.saturating_sub(lag), budget);

        let used = node.used();
        let disk = NodeDisk {
            total_bytes: config.capacity_bytes,
            used_bytes: used,
        };
        let infos = node.infos();
        let started = Instant::now();
        let plan = policy::plan(&config.gc, disk, &infos, now);
        let decision_ns = started.elapsed().as_nanos() as u64;
        drop(infos);

        let mut stats = PassStats {
            t_secs: t / 1000,
            sandboxes: node.sandboxes.len(),
            used_bytes: used,
            used_fraction: used as f64 / config.capacity_bytes.max(1) as f64,
            used_after_bytes: 0,
            pressure: plan.pressure,
            deleted: 0,
            freed_bytes: 0,
            punched_bytes: 0,
            forced_critical: 0,
            forced_max_wait: 0,
            forced_unshipped_bytes: 0,
            unforced_unshipped_bytes: 0,
            decision_ns,
        };
        let mut gone = Vec::new();
        for decision in plan.actions() {
            let Some(k) = node.index_of(decision.id()) else {
                continue;
            };
            let sandbox = &mut node.sandboxes[k];
            match decision {
                Decision::Delete { forced, .. } => {
                    // Judge by the simulation's truth, not the plan's copy.
                    let unshipped = sandbox.written - sandbox.shipped;
                    match forced {
                        None => stats.unforced_unshipped_bytes += unshipped,
                        Some(reason) => {
                            stats.forced_unshipped_bytes += unshipped;
                            match reason {
                                Forced::CriticalDisk => stats.forced_critical += 1,
                                Forced::MaxWait => stats.forced_max_wait += 1,
                            }
                        }
                    }
                    debug_assert!(sandbox.terminated, "deleted a running sandbox");
                    stats.deleted += 1;
                    stats.freed_bytes += sandbox.allocated();
                    gone.push(k);
                }
                Decision::PunchHoles { .. } => {
                    let freed = sandbox.shipped - sandbox.punched;
                    sandbox.punched = sandbox.shipped;
                    stats.punched_bytes += freed;
                    stats.freed_bytes += freed;
                }
                Decision::Keep { .. } => {}
            }
        }
        if !gone.is_empty() {
            gone.sort_unstable();
            let mut next = gone.into_iter().peekable();
            let mut k = 0;
            node.sandboxes.retain(|_| {
                let drop = next.peek() == Some(&k);
                if drop {
                    next.next();
                }
                k += 1;
                !drop
            });
        }
        stats.used_after_bytes = node.used();
        passes.push(stats);
    }
    let summary = summarize(&passes, config);
    SimReport {
        passes,
        summary,
        capacity_bytes: config.capacity_bytes,
        pressure_line: 1.0 - config.gc.gc_disk_headroom,
        critical_mark: config.gc.critical_mark,
        stalls_secs: config
            .stalls
            .iter()
            .map(|s| (s.start.as_secs(), (s.start + s.length).as_secs()))
            .collect(),
    }
}

fn summarize(passes: &[PassStats], config: &SimConfig) -> SimSummary {
    let mut times: Vec<u64> = passes.iter().map(|p| p.decision_ns).collect();
    times.sort_unstable();
    let percentile = |q: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        let k = ((times.len() - 1) as f64 * q).round() as usize;
        times[k] as f64 / 1000.0
    };
    let line = config.gc.pressure_line_bytes(config.capacity_bytes);
    let critical = config.gc.critical_bytes(config.capacity_bytes);
    SimSummary {
        passes: passes.len(),
        sandboxes_max: passes.iter().map(|p| p.sandboxes).max().unwrap_or(0),
        sandboxes_mean: passes.iter().map(|p| p.sandboxes as f64).sum::<f64>()
            / passes.len().max(1) as f64,
        decision_us_p50: percentile(0.5),
        decision_us_p99: percentile(0.99),
        decision_us_max: percentile(1.0),
        deleted: passes.iter().map(|p| p.deleted).sum(),
        freed_bytes: passes.iter().map(|p| p.freed_bytes).sum(),
        punched_bytes: passes.iter().map(|p| p.punched_bytes).sum(),
        forced_critical: passes.iter().map(|p| p.forced_critical).sum(),
        forced_max_wait: passes.iter().map(|p| p.forced_max_wait).sum(),
        forced_unshipped_bytes: passes.iter().map(|p| p.forced_unshipped_bytes).sum(),
        unforced_unshipped_bytes: passes.iter().map(|p| p.unforced_unshipped_bytes).sum(),
        peak_used_fraction: passes.iter().map(|p| p.used_fraction).fold(0.0, f64::max),
        passes_over_pressure_line: passes.iter().filter(|p| p.used_bytes > line).count(),
        passes_at_critical: passes.iter().filter(|p| p.used_bytes >= critical).count(),
        passes_full: passes
            .iter()
            .filter(|p| p.used_bytes >= config.capacity_bytes)
            .count(),
    }
}

impl SimReport {
    /// One row per pass, with a header.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "t_secs,sandboxes,used_bytes,used_fraction,used_after_bytes,pressure,deleted,\
             freed_bytes,punched_bytes,forced_critical,forced_max_wait,\
             forced_unshipped_bytes,unforced_unshipped_bytes,decision_us\n",
        );
        for p in &self.passes {
            let pressure = match p.pressure {
                policy::Pressure::None => "none",
                policy::Pressure::High => "high",
                policy::Pressure::Critical => "critical",
            };
            out.push_str(&format!(
                "{},{},{},{:.6},{},{},{},{},{},{},{},{},{},{:.1}\n",
                p.t_secs,
                p.sandboxes,
                p.used_bytes,
                p.used_fraction,
                p.used_after_bytes,
                pressure,
                p.deleted,
                p.freed_bytes,
                p.punched_bytes,
                p.forced_critical,
                p.forced_max_wait,
                p.forced_unshipped_bytes,
                p.unforced_unshipped_bytes,
                p.decision_ns as f64 / 1000.0,
            ));
        }
        out
    }

    /// A self-contained SVG line plot of disk usage over time, with the
    /// pressure line, the critical mark, stalls and forced deletions.
    pub fn to_svg(&self) -> String {
        super::plot::usage_svg(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small node: 500 sandboxes on 100 GiB.
    fn small() -> SimConfig {
        SimConfig {
            sandboxes: 500,
            running: 50,
            long_running: 2,
            capacity_bytes: 100 * GIB,
            base_used_bytes: 5 * GIB,
            duration: Duration::from_secs(24 * 3600),
            write_rate: (1 << 10, 256 << 10),
            long_running_rate: 64 << 10,
            quota_bytes: Some(2 * GIB),
            stuck_fraction: 0.0,
            shipper_bytes_per_sec: 20 * MIB,
            stalls: Vec::new(),
            ..SimConfig::default()
        }
    }

    #[test]
    fn a_healthy_shipper_loses_nothing() {
        let report = run(&small());
        let s = &report.summary;
        assert_eq!(s.passes, 24 * 60);
        assert_eq!(s.unforced_unshipped_bytes, 0);
        assert_eq!(s.forced_critical + s.forced_max_wait, 0, "{s:?}");
        assert_eq!(s.passes_at_critical, 0, "{s:?}");
        assert!(s.deleted > 0, "{s:?}");
        assert!(s.peak_used_fraction < report.critical_mark, "{s:?}");
    }

    #[test]
    fn a_stalled_shipper_crosses_critical_and_reports_the_loss() {
        let config = SimConfig {
            stalls: vec![Stall {
                start: Duration::from_secs(4 * 3600),
                length: Duration::from_secs(16 * 3600),
            }],
            // Long enough that only the critical mark forces.
            gc: GcConfig {
                max_wait_secs: 7 * 24 * 3600,
                ..GcConfig::default()
            },
            ..small()
        };
        let report = run(&config);
        let s = &report.summary;
        assert_eq!(s.unforced_unshipped_bytes, 0, "{s:?}");
        assert!(s.passes_at_critical > 0, "{s:?}");
        assert!(s.forced_critical > 0, "{s:?}");
        assert!(s.forced_unshipped_bytes > 0, "{s:?}");
        // Forcing holds the line: no pass ends at or above the mark while
        // there was something left to delete.
        let critical = config.gc.critical_bytes(config.capacity_bytes);
        let ended_critical = report
            .passes
            .iter()
            .filter(|p| p.used_after_bytes >= critical)
            .count();
        assert_eq!(ended_critical, 0, "{s:?}");
        assert_eq!(s.passes_full, 0, "{s:?}");
    }

    #[test]
    fn sandboxes_the_shipper_never_finishes_are_forced_after_max_wait() {
        let config = SimConfig {
            stuck_fraction: 0.05,
            gc: GcConfig {
                max_wait_secs: 2 * 3600,
                ..GcConfig::default()
            },
            ..small()
        };
        let report = run(&config);
        let s = &report.summary;
        assert_eq!(s.unforced_unshipped_bytes, 0, "{s:?}");
        assert!(s.forced_max_wait > 0, "{s:?}");
        assert_eq!(s.forced_critical, 0, "{s:?}");
    }

    #[test]
    fn runs_are_deterministic_and_render() {
        let config = SimConfig {
            duration: Duration::from_secs(3 * 3600),
            ..small()
        };
        let strip = |mut report: SimReport| {
            report.passes.iter_mut().for_each(|p| p.decision_ns = 0);
            report.passes
        };
        let report = run(&config);
        assert_eq!(strip(report.clone()), strip(run(&config)));
        let csv = report.to_csv();
        assert_eq!(csv.lines().count(), report.passes.len() + 1);
        assert!(csv.starts_with("t_secs,sandboxes,used_bytes,"));
        let svg = report.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        for needle in [
            "<polyline",
            "critical mark",
            "pressure line",
            "simulated time",
        ] {
            assert!(svg.contains(needle), "{needle}");
        }
    }

    /// The benchmark at full size: 10,000 sandboxes. Debug builds run a few
    /// passes; `cargo test --release -p sluice-scheduler --lib gc::sim --
    /// --nocapture` runs the default two days and writes the CSV and SVG to
    /// the temporary directory. Prints timings; asserts only correctness.
    #[test]
    fn full_size_node() {
        let mut config = SimConfig::default();
        if cfg!(debug_assertions) {
            config.duration = Duration::from_secs(20 * 60);
        }
        let started = Instant::now();
        let report = run(&config);
        let s = &report.summary;
        println!(
            "gc sim: {} passes in {:.1?}, sandboxes max {} mean {:.0}, decision µs p50 {:.0} \
             p99 {:.0} max {:.0}, peak usage {:.1}%, over pressure {} passes, critical {}, \
             deleted {}, freed {} GiB, punched {} GiB, forced critical {} max_wait {} \
             ({} MiB unshipped), unforced unshipped {}",
            s.passes,
            started.elapsed(),
            s.sandboxes_max,
            s.sandboxes_mean,
            s.decision_us_p50,
            s.decision_us_p99,
            s.decision_us_max,
            s.peak_used_fraction * 100.0,
            s.passes_over_pressure_line,
            s.passes_at_critical,
            s.deleted,
            s.freed_bytes / GIB,
            s.punched_bytes / GIB,
            s.forced_critical,
            s.forced_max_wait,
            s.forced_unshipped_bytes / MIB,
            s.unforced_unshipped_bytes,
        );
        assert_eq!(s.unforced_unshipped_bytes, 0);
        assert!(s.sandboxes_max >= 10_000, "{s:?}");
        if !cfg!(debug_assertions) {
            let dir = std::env::temp_dir().join("sluice-gc-sim");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("gc-sim.csv"), report.to_csv()).unwrap();
            std::fs::write(dir.join("gc-sim.svg"), report.to_svg()).unwrap();
            println!("gc sim: wrote {}/gc-sim.{{csv,svg}}", dir.display());
        }
    }
}
