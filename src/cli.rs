//! Command-line flags and dispatch. Every client command finds its cluster
//! through `--data-dir` (or `SLUICE_DATA_DIR`), whose `client.toml` `sluice
//! up` writes; `SLUICE_ADDR` and `SLUICE_TOKEN` point at a remote cluster.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    admin, archive_cmd, bench, bench_archive, bench_e2e, bench_gc, bench_query, bench_shipper,
    bench_tailll, bus_cmd, executor_cmd, job_cmd, node_cmd, query_cmd, scheduler_cmd, shipper_cmd,
    up,
};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Ship, archive, query and tail the logs of cluster jobs"
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); `SLUICE_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process: bus, services (and, as they land,
    /// scheduler, nodes, archiver and query service).
    Up(up::UpArgs),
    /// Inspect the bus: topics, offsets, consumer lag, records.
    #[command(subcommand)]
    Bus(BusCommand),
    /// Ask a running cluster how it is.
    Status(StatusArgs),
    /// Run a shipper: tail the sandboxes under a root and publish to the bus.
    Shipper(shipper_cmd::ShipperArgs),
    /// Run an archiver: the bus into Parquet + index splits on object storage,
    /// with compaction and retention in the background.
    Archiver(archive_cmd::ArchiverArgs),
    /// Inspect the archive; compact it or apply retention now.
    #[command(subcommand)]
    Archive(archive_cmd::ArchiveCommand),
    /// Run SQL over the archive (tables logs and events; search(line, '…')
    /// for full text).
    Query(query_cmd::QueryArgs),
    /// The audit trail: cluster events (task states, kills, quota kills,
    /// collections, data loss, API calls) with who asked.
    Events(query_cmd::EventsArgs),
    /// Submit, update, kill and inspect jobs.
    #[command(subcommand)]
    Job(job_cmd::JobCommand),
    /// Run the scheduler alone (nodes join with `sluice node --scheduler`).
    Scheduler(scheduler_cmd::SchedulerArgs),
    /// Run a node: the agent that runs the scheduler's tasks, and the
    /// shipper that tails them.
    Node(node_cmd::NodeArgs),
    /// Collect sandboxes on the nodes now, or say what would be collected.
    Gc(node_cmd::GcArgs),
    /// Run one task's processes in its sandbox (started by a node agent).
    #[command(hide = true)]
    Executor(executor_cmd::ExecutorArgs),
    /// Measure a component; results go to docs/PERFORMANCE.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Publish → consume throughput and acknowledgement latency of a bus.
    Bus(bench::BusBenchArgs),
    /// Files → bus throughput of the shipper, next to cat and zstd.
    Shipper(bench_shipper::ShipperBenchArgs),
    /// The garbage-collection policy on a simulated node.
    Gc(bench_gc::GcBenchArgs),
    /// Archiver throughput and archive size, next to zstd -3.
    Archive(bench_archive::ArchiveBenchArgs),
    /// Needle, regex, count per hour and top errors over the archive, next
    /// to zstd -dc | grep and DuckDB.
    Query(bench_query::QueryBenchArgs),
    /// Append → display latency of `tailll`, and its throughput into a pipe.
    Tailll(bench_tailll::TaillBenchArgs),
    /// Sandboxes → queryable archive under a steady load: freshness, CPU per
    /// MB, tailll's latency meanwhile.
    E2e(bench_e2e::E2eBenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum BusCommand {
    /// Topics, partitions, end offsets and consumer-group lag.
    Status(bus_cmd::StatusArgs),
    /// Print records as text or JSON lines.
    Dump(bus_cmd::DumpArgs),
}

/// Where the cluster is: shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// The data directory of a `sluice up`; its `client.toml` says the rest.
    #[arg(
        long,
        env = "SLUICE_DATA_DIR",
        default_value = "./sluice-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Bus(BusCommand::Status(args)) => bus_cmd::status(args).await,
        Command::Bus(BusCommand::Dump(args)) => bus_cmd::dump(args).await,
        Command::Status(args) => admin::status(args).await,
        Command::Shipper(args) => shipper_cmd::run(args).await,
        Command::Job(command) => job_cmd::run(command).await,
        Command::Archiver(args) => archive_cmd::run(args).await,
        Command::Archive(command) => archive_cmd::command(command).await,
        Command::Query(args) => query_cmd::query(args).await,
        Command::Events(args) => query_cmd::events(args).await,
        Command::Executor(args) => executor_cmd::run(args),
        Command::Node(args) => node_cmd::node(args).await,
        Command::Scheduler(args) => scheduler_cmd::run(args).await,
        Command::Gc(args) => node_cmd::gc(args).await,
        Command::Bench(BenchCommand::Bus(args)) => bench::bus(args).await,
        Command::Bench(BenchCommand::Shipper(args)) => bench_shipper::run(args).await,
        Command::Bench(BenchCommand::Gc(args)) => bench_gc::run(args),
        Command::Bench(BenchCommand::Archive(args)) => bench_archive::run(args).await,
        Command::Bench(BenchCommand::Query(args)) => bench_query::run(args).await,
        Command::Bench(BenchCommand::Tailll(args)) => bench_tailll::run(args).await,
        Command::Bench(BenchCommand::E2e(args)) => bench_e2e::run(args).await,
    }
}
