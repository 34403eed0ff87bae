//! `sluice archiver` (the archiver on its own; `sluice up` runs one too) and
//! `sluice archive status`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_broker::{BusConfig, BusUrl};
use sluice_query::archiver::{self, Archiver, ArchiverConfig, ArchiverMetrics};
use sluice_query::catalog::{Catalog, SplitKind};

use crate::cli::DataDirArg;
use crate::client;

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
    /// Milliseconds of records batched before a split is cut.
    #[arg(long, default_value_t = 5000)]
    pub cut_ms: u64,
    /// Fault tests: abort the process the Nth time a commit reaches STEP
    /// (`uploaded`, `committed` or `bus-committed`), as `kill -9` would.
    #[arg(long, value_name = "STEP:N", hide = true, value_parser = parse_crash)]
    pub crash_at: Option<(archiver::Step, u32)>,
}

fn parse_crash(text: &str) -> Result<(archiver::Step, u32), String> {
    let (step, n) = text.split_once(':').unwrap_or((text, "1"));
    let n = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
    Ok((step.parse()?, n))
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Splits, rows, bytes raw vs stored, time range, catalog version, lag.
    Status(StatusArgs),
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

/// Starts an archiver in this process; it stops (committing what it holds)
/// when `stop` fires.
pub async fn spawn(
    config: ArchiverConfig,
    bus: Arc<dyn sluice_broker::Bus>,
    store: &sluice_query::store::Store,
    stop: tokio::sync::oneshot::Receiver<()>,
    crash_at: Option<(archiver::Step, u32)>,
) -> anyhow::Result<(Arc<ArchiverMetrics>, tokio::task::JoinHandle<()>)> {
    let mut archiver = Archiver::open(config, bus, store.clone())
        .await
        .with_context(|| format!("failed to start the archiver on {}", store.url))?;
    if let Some((at, n)) = crash_at {
        let seen = std::sync::atomic::AtomicU32::new(0);
        archiver.on_step(move |step| {
            if step == at && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= n {
                eprintln!("crashing at {step:?} as asked");
                std::process::abort();
            }
        });
    }
    let metrics = archiver.metrics();
    let task = tokio::spawn(async move {
        if let Err(e) = archiver
            .run(async {
                let _ = stop.await;
            })
            .await
        {
            tracing::error!(error = %e, "the archiver stopped");
        }
    });
    Ok((metrics, task))
}

pub async fn run(args: ArchiverArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let bus = crate::up::open_bus(&BusConfig::new(client::bus_url(
        args.bus.as_ref(),
        &data_dir,
    )?))
    .await?;
    let url = client::store_url(args.store.as_deref(), &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let config = ArchiverConfig {
        id: args.id.clone(),
        cut_ms: args.cut_ms,
        ..ArchiverConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (_, task) = spawn(config, bus.clone(), &store, stopped, args.crash_at).await?;
    eprintln!("archiving to {url}");
    crate::up::shutdown_signal().await;
    let _ = stop.send(());
    let _ = task.await;
    bus.flush(Duration::from_secs(10)).await?;
    Ok(())
}

pub async fn command(command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let url = client::store_url(args.store.as_deref(), &data_dir)?;
    let store = url.open(&client::s3_options())?;
    let catalog = Catalog::open(store.store.clone(), &store.prefix)
        .await
        .with_context(|| format!("failed to read the catalog of {url}"))?;
    let state = catalog.state();
    let mut kinds = serde_json::Map::new();
    for kind in [SplitKind::Logs, SplitKind::Events] {
        let splits: Vec<_> = state.splits().values().filter(|s| s.kind == kind).collect();
        let sum = |f: fn(&sluice_query::catalog::SplitEntry) -> u64| -> u64 {
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
        "catalog_version": state.version(),
        "logs": kinds["logs"],
        "events": kinds["events"],
        "bus_lag": lag,
    });
    if args.json {
        println!("{out}");
        return Ok(());
    }
    println!("archive {url}, catalog version {}", state.version());
    for kind in ["logs", "events"] {
        let k = &out[kind];
        let raw = k["raw_bytes"].as_u64().unwrap_or(0);
        let stored = k["data_bytes"].as_u64().unwrap_or(0) + k["index_bytes"].as_u64().unwrap_or(0);
        println!(
            "{kind:<7} {:>6} splits {:>12} rows  raw {:>12} B  data {:>12} B  index {:>10} B  ({:.1} % of raw)  {} .. {}",
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
    match lag {
        Some(lag) => println!("bus lag: {lag} records not yet archived"),
        None => println!("bus lag: unknown (bus not readable from here)"),
    }
    Ok(())
}
