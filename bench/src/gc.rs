//! `sluice bench gc`: the garbage-collection policy on a simulated node.
//!
//! 10,000 sandboxes (by default) under a synthetic fill workload with a
//! shipper stall; every pass calls the real `gc::plan` and applies it. It
//! prints the decision time per pass (the target: under 10 ms for 10,000
//! sandboxes), bytes freed, forced deletions and unshipped bytes deleted
//! without being forced (must be zero), and writes the disk usage over time
//! as CSV and SVG.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sluice_scheduler::gc::{SimConfig, Stall};

/// Flags of `sluice bench gc`; its help text comes from
/// [`BenchCommand::Gc`](crate::BenchCommand::Gc).
#[derive(Args, Debug)]
pub struct GcBenchArgs {
    /// Sandboxes on the simulated node (finished and running).
    #[arg(long, default_value_t = 10_000)]
    pub sandboxes: usize,
    /// Hours the shipper stalls, from hour 12 (0: no stall). 16 fills the
    /// disk past the pressure line; 20 crosses the critical mark.
    #[arg(long, default_value_t = 16)]
    pub stall_hours: u64,
    /// Simulated hours.
    #[arg(long, default_value_t = 48)]
    pub hours: u64,
    /// Write `gc-sim.csv` and `gc-sim.svg` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the simulation's summary as JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `sluice bench gc`: simulates the node, prints the summary and writes the `--out` files;
/// fails if the policy deleted unshipped bytes without being forced.
pub fn run(args: GcBenchArgs) -> anyhow::Result<()> {
    let mut config = SimConfig {
        sandboxes: args.sandboxes,
        duration: Duration::from_secs(args.hours * 3600),
        ..SimConfig::default()
    };
    config.running = config.running.min(args.sandboxes / 2);
    config.stalls = if args.stall_hours == 0 {
        Vec::new()
    } else {
        vec![Stall {
            start: Duration::from_secs(12 * 3600),
            length: Duration::from_secs(args.stall_hours * 3600),
        }]
    };
    let started = Instant::now();
    let report = sluice_scheduler::gc::sim::run(&config);
    let wall = started.elapsed();
    let s = &report.summary;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.summary)?);
    } else {
        println!(
            "{} sandboxes (up to {} at once), {} h simulated, shipper stall {} h, {} passes in {:.1} s",
            args.sandboxes,
            s.sandboxes_max,
            args.hours,
            args.stall_hours,
            s.passes,
            wall.as_secs_f64()
        );
        println!(
            "decision time per pass: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.decision_us_p50 / 1000.0,
            s.decision_us_p99 / 1000.0,
            s.decision_us_max / 1000.0
        );
        println!(
            "deleted {} sandboxes, freed {:.1} GiB, punched {:.1} GiB; peak usage {:.1} %",
            s.deleted,
            s.freed_bytes as f64 / (1u64 << 30) as f64,
            s.punched_bytes as f64 / (1u64 << 30) as f64,
            s.peak_used_fraction * 100.0
        );
        println!(
            "passes over the pressure line {}, at the critical mark {}, disk full {}",
            s.passes_over_pressure_line, s.passes_at_critical, s.passes_full
        );
        println!(
            "forced deletions: {} at the critical mark, {} after the maximum wait, {:.1} GiB unshipped (data_loss)",
            s.forced_critical,
            s.forced_max_wait,
            s.forced_unshipped_bytes as f64 / (1u64 << 30) as f64
        );
        println!(
            "unshipped bytes deleted without being forced: {}",
            s.unforced_unshipped_bytes
        );
    }
    if let Some(dir) = args.out {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        for (name, text) in [
            ("gc-sim.csv", report.to_csv()),
            ("gc-sim.svg", report.to_svg()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("failed to write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    anyhow::ensure!(
        s.unforced_unshipped_bytes == 0,
        "the policy deleted unshipped bytes without being forced"
    );
    Ok(())
}
