//! `sluice archiver` (the archiver and archive maintenance on their own;
//! `sluice up` runs both too), `sluice archive status`, and the one-shot
//! `sluice archive compact` and `sluice archive retention`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archiver::maintenance::{self, Maintenance, MaintenanceConfig};
use sluice_archiver::{self as archiver, ArchiverConfig};
use sluice_broker::{BusConfig, BusUrl};

use crate::shared::archiving::{
    MaintenanceArgs, metrics_writer, retention_config, spawn, spawn_maintenance,
};
use crate::shared::args::DataDirArg;
use crate::shared::{client, metrics_http};

#[derive(Args, Debug)]
pub struct ArchiverArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The bus [default: the data directory's].
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// The archive: `file:///PATH` or `s3://BUCKET/PREFIX` (S3 settings from
    /// `AWS_*`) [default: the data directory's].
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    /// This archiver's name in catalog commits (several may run in one group).
    #[arg(long, default_value = "archiver")]
    pub id: String,
    /// Kafka client setting passed to librdkafka (SASL, TLS, …); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = sluice_broker::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Milliseconds of records batched before a split is cut.
    #[arg(long, default_value_t = 5000)]
    pub cut_ms: u64,
    /// Fault tests: abort the process the Nth time a commit reaches STEP
    /// (`uploaded`, `logs-committed`, `committed` or `bus-committed`), as
    /// `kill -9` would.
    #[arg(long, value_name = "STEP:N", hide = true, value_parser = parse_crash)]
    pub crash_at: Option<(archiver::Step, u32)>,
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
    /// Serve the archive's Prometheus metrics (archiver, compaction,
    /// retention) at http://ADDR/metrics.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Certificate and key for metrics served off loopback.
    #[command(flatten)]
    pub tls: crate::shared::tls::TlsArgs,
}

fn parse_crash(text: &str) -> Result<(archiver::Step, u32), String> {
    let (step, n) = text.split_once(':').unwrap_or((text, "1"));
    let n = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
    Ok((step.parse()?, n))
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Splits, rows, bytes raw vs stored, time range, table versions, lag.
    #[command(
        after_help = "Examples:\n  sluice archive status\n  sluice archive status --store s3://logs-bucket/sluice --json"
    )]
    Status(StatusArgs),
    /// Merge the small splits of each hour now (what the archiver does in
    /// the background), or say what would be merged.
    #[command(
        after_help = "Examples:\n  sluice archive compact --dry-run\n  sluice archive compact"
    )]
    Compact(CompactArgs),
    /// Remove splits older than their retention now, or say which.
    #[command(after_help = "Examples:\n  sluice archive retention --retention 30d --dry-run")]
    Retention(RetentionArgs),
    /// Turn an archive written before Delta Lake (a `_catalog/` folder) into
    /// the Delta tables `logs` and `events`. Resumable: run it again after
    /// any interruption. Stop the archiver first.
    #[command(
        after_help = "Examples:\n  sluice archive migrate\n  sluice archive migrate --store s3://logs-bucket/sluice"
    )]
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// MiB of old splits per commit (progress is saved at each commit).
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=65536))]
    pub batch_mib: u64,
    /// Fault tests: abort the process after the Nth commit, as `kill -9`
    /// would.
    #[arg(long, value_name = "N", hide = true)]
    pub crash_after: Option<usize>,
}

#[derive(Args, Debug)]
pub struct CompactArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    /// Say what would be merged; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Merge into splits of up to this many MiB of line text.
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub compact_target_mb: u64,
    #[arg(long)]
    pub json: bool,
    /// Fault tests: abort the process when a merge reaches STEP
    /// (`uploaded` or `committed`), as `kill -9` would.
    #[arg(long, value_name = "STEP", hide = true)]
    pub crash_at: Option<maintenance::Step>,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    /// Remove splits whose newest line is older than AGE (`30d`, `12h`).
    #[arg(long, value_name = "AGE", value_parser = maintenance::parse_age)]
    pub retention: Option<u64>,
    /// The retention of one role, overriding --retention; repeatable.
    #[arg(long = "retention-role", value_name = "ROLE=AGE", value_parser = maintenance::parse_role_age)]
    pub retention_roles: Vec<(String, u64)>,
    /// Say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ArchiverArgs) -> anyhow::Result<()> {
    // Before joining anything: a signal during start-up stops cleanly.
    let shutdown = crate::shared::serve::shutdown_signal();
    let maintenance_config = args.maintenance.config(&args.id)?;
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let bus = crate::shared::node::open_bus(&client::bus_config(
        args.bus.as_ref(),
        &data_dir,
        &args.kafka_properties,
    )?)
    .await?;
    let url = client::store_url(args.store.as_deref(), &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let config = ArchiverConfig {
        id: args.id.clone(),
        cut_ms: args.cut_ms,
        separate_roles: maintenance_config.compaction.separate_roles.clone(),
        ..ArchiverConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (archiver_metrics, task) =
        spawn(config, bus.clone(), &store, stopped, args.crash_at).await?;
    let (stop_maintenance, maintenance_stopped) = tokio::sync::oneshot::channel();
    let (maintenance_metrics, maintenance) =
        spawn_maintenance(maintenance_config, &store, maintenance_stopped).await?;
    if let Some(addr) = args.metrics_listen {
        let writers = vec![
            metrics_writer(archiver_metrics, maintenance_metrics),
            metrics_http::bus_writer(bus.clone(), &[archiver::GROUP], Duration::from_secs(5)),
        ];
        let tls = match (&args.tls.tls_cert, &args.tls.tls_key) {
            (Some(cert), Some(key)) => Some(crate::shared::tls::ServerTls::from_files(cert, key)?),
            _ => None,
        };
        let (bound, scheme) = metrics_http::serve_on(addr, writers, tls.as_ref()).await?;
        eprintln!("metrics on {scheme}://{bound}/metrics");
    }
    eprintln!("archiving to {url}");
    shutdown.await;
    let _ = stop_maintenance.send(());
    let _ = stop.send(());
    let _ = maintenance.await;
    let _ = task.await;
    bus.flush(Duration::from_secs(10)).await?;
    Ok(())
}

pub async fn command(command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Status(args) => status(args).await,
        ArchiveCommand::Compact(args) => compact(args).await,
        ArchiveCommand::Retention(args) => retention(args).await,
        ArchiveCommand::Migrate(args) => migrate(args).await,
    }
}

/// CPU seconds this process has used (user and system).
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let url = client::store_url(args.store.as_deref(), &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let cpu = cpu_seconds();
    let json = args.json;
    let crash_after = args.crash_after;
    let mut commits = 0;
    let report = sluice_archive::migrate::migrate(
        &store,
        Default::default(),
        &sluice_archive::migrate::MigrateOptions {
            batch_bytes: args.batch_mib << 20,
            ..Default::default()
        },
        |p| {
            commits += 1;
            if crash_after == Some(commits) {
                eprintln!("migrate: crashing after commit {commits} (--crash-after)");
                std::process::abort();
            }
            if !json {
                eprintln!(
                    "migrate: {} {}/{} splits ({:.1} MiB read)",
                    match p.kind {
                        SplitKind::Logs => "logs",
                        SplitKind::Events => "events",
                    },
                    p.done,
                    p.total,
                    p.bytes_read as f64 / (1 << 20) as f64
                )
            }
        },
    )
    .await
    .with_context(|| format!("failed to migrate {url} (run it again: it resumes)"))?;
    let cpu = cpu_seconds() - cpu;
    let gib = report.bytes_read as f64 / (1u64 << 30) as f64;
    let per_gib = |x: f64| if gib > 0.0 { x / gib } else { 0.0 };
    let wall = report.elapsed.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "store": url.to_string(),
                "found": report.found,
                "splits": {"logs": report.splits[0], "events": report.splits[1]},
                "already_migrated": {"logs": report.already[0], "events": report.already[1]},
                "rows": report.rows,
                "bytes_read": report.bytes_read,
                "bytes_written": report.bytes_written,
                "commits": report.commits,
                "old_objects_deleted": report.deleted,
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "wall_seconds_per_gib": per_gib(wall),
                "cpu_seconds_per_gib": per_gib(cpu),
            })
        );
        return Ok(());
    }
    if !report.found {
        println!("{url}: no archive of the format before Delta Lake; nothing to migrate");
        return Ok(());
    }
    println!(
        "{url}: migrated {} log and {} event splits ({} rows; {} and {} were done by an earlier run) in {} commits; deleted {} old objects",
        report.splits[0] - report.already[0],
        report.splits[1] - report.already[1],
        report.rows,
        report.already[0],
        report.already[1],
        report.commits,
        report.deleted
    );
    println!(
        "cost: {:.3} GiB read, {:.3} GiB written, {wall:.1} s wall, {cpu:.1} CPU-s: {:.1} s and {:.1} CPU-s per GiB",
        gib,
        report.bytes_written as f64 / (1u64 << 30) as f64,
        per_gib(wall),
        per_gib(cpu)
    );
    Ok(())
}

async fn open_maintenance(
    dir: &DataDirArg,
    store: Option<&str>,
    config: MaintenanceConfig,
) -> anyhow::Result<(sluice_archive::store::StoreUrl, Maintenance)> {
    let data_dir = std::path::absolute(&dir.data_dir)?;
    let url = client::store_url(store, &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let maintenance = Maintenance::open(config, store)
        .await
        .with_context(|| format!("failed to read the catalog of {url}"))?;
    Ok((url, maintenance))
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let mut config = MaintenanceConfig {
        id: "sluice-archive-compact".into(),
        ..MaintenanceConfig::default()
    };
    config.compaction.target_raw_bytes = args.compact_target_mb << 20;
    config.validate()?;
    let (url, mut maintenance) = open_maintenance(&args.dir, args.store.as_deref(), config).await?;
    if let Some(at) = args.crash_at {
        maintenance.on_step(move |step| {
            if step == at {
                eprintln!("crashing at {step:?} as asked");
                std::process::abort();
            }
        });
    }
    let mut out = Vec::new();
    let (mut conflicts, mut failed) = (0, Vec::new());
    if args.dry_run {
        for job in maintenance.plan_compaction().await? {
            out.push(serde_json::json!({
                "partition": job.partition(),
                "inputs": job.inputs.len(),
                "rows": job.rows(),
                "bytes_in": job.stored_bytes(),
            }));
        }
    } else {
        loop {
            let pass = maintenance.compact_pass().await?;
            for merge in &pass.merged {
                out.push(serde_json::json!({
                    "partition": merge.partition,
                    "inputs": merge.inputs.len(),
                    "rows": merge.rows,
                    "bytes_in": merge.bytes_in,
                    "bytes_out": merge.bytes_out,
                    "split": merge.output.key,
                    "elapsed_ms": merge.elapsed.as_millis() as u64,
                }));
            }
            conflicts += pass.conflicts;
            failed.extend(pass.failed.iter().cloned());
            if !pass.more || !pass.failed.is_empty() {
                break;
            }
        }
    }
    let live: usize = SplitKind::ALL
        .map(|kind| maintenance.catalog(kind).state().splits().len())
        .iter()
        .sum();
    if args.json {
        let failed: Vec<_> = failed
            .iter()
            .map(|(partition, error)| serde_json::json!({"partition": partition, "error": error}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "store": url.to_string(),
                "dry_run": args.dry_run,
                "merges": out,
                "conflicts": conflicts,
                "failed": failed,
                "live_splits": live,
            })
        );
    } else {
        let verb = if args.dry_run {
            "would merge"
        } else {
            "merged"
        };
        for m in &out {
            let bytes_out = m["bytes_out"]
                .as_u64()
                .map_or(String::new(), |b| format!(" → {b} B"));
            let split = m["split"]
                .as_str()
                .map_or(String::new(), |s| format!(" into {s}"));
            println!(
                "{verb} {} splits of {}: {} rows, {} B{bytes_out}{split}",
                m["inputs"],
                m["partition"].as_str().unwrap_or("-"),
                m["rows"],
                m["bytes_in"],
            );
        }
        for (partition, error) in &failed {
            println!("failed to merge the splits of {partition}: {error}");
        }
        println!(
            "{} merges{}, {conflicts} lost to another writer, {} failed; {live} live splits in {url}",
            out.len(),
            if args.dry_run { " due" } else { "" },
            failed.len()
        );
    }
    anyhow::ensure!(failed.is_empty(), "{} merges failed", failed.len());
    Ok(())
}

async fn retention(args: RetentionArgs) -> anyhow::Result<()> {
    let retention = retention_config(args.retention, &args.retention_roles)?;
    anyhow::ensure!(
        retention.is_enabled(),
        "nothing to remove: give --retention AGE or --retention-role ROLE=AGE"
    );
    let config = MaintenanceConfig {
        id: "sluice-archive-retention".into(),
        retention,
        ..MaintenanceConfig::default()
    };
    config.validate()?;
    let grace = config.janitor_grace_secs;
    let (url, mut maintenance) = open_maintenance(&args.dir, args.store.as_deref(), config).await?;
    let (splits, conflicts) = if args.dry_run {
        (maintenance.plan_retention().await?, 0)
    } else {
        let pass = maintenance.retention_pass().await?;
        (pass.removed, pass.conflicts)
    };
    let rows: u64 = splits.iter().map(|s| s.rows).sum();
    let bytes: u64 = splits.iter().map(|s| s.data_bytes + s.index_bytes).sum();
    if args.json {
        let removed: Vec<_> = splits
            .iter()
            .map(|s| {
                serde_json::json!({
                    "split": s.key,
                    "rows": s.rows,
                    "roles": s.roles,
                    "newest": sluice_schema::time::rfc3339_nanos(s.max_ts_nanos),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "store": url.to_string(),
                "dry_run": args.dry_run,
                "retention": maintenance.retention_summary(),
                "removed": removed,
                "rows": rows,
                "bytes": bytes,
                "conflicts": conflicts,
            })
        );
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for s in &splits {
        println!(
            "{verb} {} ({} rows, roles {}, newest {})",
            s.key,
            s.rows,
            s.roles.join(","),
            sluice_schema::time::rfc3339_nanos(s.max_ts_nanos)
        );
    }
    println!(
        "retention {}: {verb} {} splits, {rows} rows, {bytes} B{}",
        maintenance.retention_summary(),
        splits.len(),
        if args.dry_run || splits.is_empty() {
            String::new()
        } else {
            format!(
                "; their objects are deleted {} after",
                maintenance::format_age(grace)
            )
        }
    );
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let url = client::store_url(args.store.as_deref(), &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let mut kinds = serde_json::Map::new();
    let mut removed = 0;
    for kind in SplitKind::ALL {
        let catalog = Catalog::open(store.store.clone(), &store.prefix, kind)
            .await
            .with_context(|| format!("failed to read the {kind:?} table of {url}"))?;
        let state = catalog.state();
        removed += state.removed_splits().len();
        let splits: Vec<_> = state.splits().values().collect();
        let sum = |f: fn(&sluice_archive::catalog::SplitEntry) -> u64| -> u64 {
            splits.iter().map(|s| f(s)).sum()
        };
        let oldest = splits.iter().map(|s| s.min_ts_nanos).min();
        let newest = splits.iter().map(|s| s.max_ts_nanos).max();
        kinds.insert(
            match kind {
                SplitKind::Logs => "logs",
                SplitKind::Events => "events",
            }
            .into(),
            serde_json::json!({
                "version": state.version(),
                "splits": splits.len(),
                "rows": sum(|s| s.rows),
                "raw_bytes": sum(|s| s.raw_bytes),
                "data_bytes": sum(|s| s.data_bytes),
                "index_bytes": sum(|s| s.index_bytes),
                "oldest": oldest.map(sluice_schema::time::rfc3339_nanos),
                "newest": newest.map(sluice_schema::time::rfc3339_nanos),
            }),
        );
    }
    // Lag: what the archivers' group has not read, from the bus.
    let lag = match sluice_broker::open_for_inspection(&BusConfig::new(client::bus_url(
        args.bus.as_ref(),
        &data_dir,
    )?))
    .await
    {
        Ok(bus) => bus
            .status(&[archiver::GROUP])
            .await
            .ok()
            .and_then(|s| s.groups.into_iter().next())
            .map(|g| g.lag),
        Err(e) => {
            tracing::debug!(error = %e, "bus not readable for lag");
            None
        }
    };
    let out = serde_json::json!({
        "store": url.to_string(),
        // Removed by compaction or retention; the janitor deletes their
        // objects after its grace period.
        "removed_splits": removed,
        "logs": kinds["logs"],
        "events": kinds["events"],
        "bus_lag": lag,
    });
    if args.json {
        println!("{out}");
        return Ok(());
    }
    println!("archive {url} (Delta tables logs/ and events/)");
    for kind in ["logs", "events"] {
        let k = &out[kind];
        let raw = k["raw_bytes"].as_u64().unwrap_or(0);
        let stored = k["data_bytes"].as_u64().unwrap_or(0) + k["index_bytes"].as_u64().unwrap_or(0);
        println!(
            "{kind:<7} v{:<6} {:>6} splits {:>12} rows  raw {:>12} B  data {:>12} B  index {:>10} B  ({:.1} % of raw)  {} .. {}",
            k["version"],
            k["splits"],
            k["rows"],
            raw,
            k["data_bytes"],
            k["index_bytes"],
            if raw == 0 {
                0.0
            } else {
                stored as f64 * 100.0 / raw as f64
            },
            k["oldest"].as_str().unwrap_or("-"),
            k["newest"].as_str().unwrap_or("-"),
        );
    }
    println!(
        "removed splits (objects deleted after the janitor's grace period): {}",
        removed
    );
    match lag {
        Some(lag) => println!("bus lag: {lag} records not yet archived"),
        None => println!("bus lag: unknown (bus not readable from here)"),
    }
    Ok(())
}
