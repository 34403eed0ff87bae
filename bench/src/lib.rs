//! `sluice bench …`: each component measured next to a baseline in the
//! same run (`cat`, `zstd`, `grep`, DuckDB on the same bytes), and the whole
//! pipeline under load. The `sluice` binary only dispatches here; results
//! and the commands that reproduce them are in `docs/PERFORMANCE.md`.
//!
//! CPU time ([`cpu`]) rather than wall time is what the benches compare:
//! the machines they run on are shared and noisy.

pub mod archive;
pub mod bus;
pub mod corpus;
pub mod cpu;
pub mod e2e;
pub mod gc;
pub mod query;
pub mod shipper;
pub mod tailll;

use clap::Subcommand;

/// The benches, as `sluice bench` subcommands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Publish → consume throughput and acknowledgement latency of a bus.
    #[command(
        after_help = "Examples:\n  sluice bench bus --mb 256\n  sluice bench bus --bus kafka://localhost:9092 --mb 256"
    )]
    Bus(bus::BusBenchArgs),
    /// Files → bus throughput of the shipper, next to cat and zstd.
    #[command(
        after_help = "Examples:\n  sluice bench shipper --mb 256\n  sluice bench shipper --corpus ../shared/corpus/loghub"
    )]
    Shipper(shipper::ShipperBenchArgs),
    /// The garbage-collection policy on a simulated node.
    #[command(after_help = "Examples:\n  sluice bench gc")]
    Gc(gc::GcBenchArgs),
    /// Archiver throughput and archive size, next to zstd -3.
    #[command(
        after_help = "Examples:\n  sluice bench archive --mb 1024\n  sluice bench archive --mb 256 --corpus ../shared/corpus/loghub"
    )]
    Archive(archive::ArchiveBenchArgs),
    /// Needle, regex, count per hour and top errors over the archive, next
    /// to zstd -dc | grep and DuckDB.
    #[command(after_help = "Examples:\n  sluice bench query --mb 1024")]
    Query(query::QueryBenchArgs),
    /// Append → display latency of `tailll`, and its throughput into a pipe.
    #[command(after_help = "Examples:\n  sluice bench tailll")]
    Tailll(tailll::TaillBenchArgs),
    /// Sandboxes → queryable archive under a steady load: freshness, CPU per
    /// MB, tailll's latency meanwhile.
    #[command(after_help = "Examples:\n  sluice bench e2e --plot docs/img/e2e-freshness.svg")]
    E2e(e2e::E2eBenchArgs),
    /// Write the generated corpus the benches use to files.
    #[command(
        after_help = "Examples:\n  sluice bench corpus /tmp/corpus\n  sluice bench corpus /tmp/java --formats java,json --events 100000 --seed 7"
    )]
    Corpus(corpus::CorpusArgs),
}

/// Runs one bench.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Bus(args) => bus::run(args).await,
        BenchCommand::Shipper(args) => shipper::run(args).await,
        BenchCommand::Gc(args) => gc::run(args),
        BenchCommand::Archive(args) => archive::run(args).await,
        BenchCommand::Query(args) => query::run(args).await,
        BenchCommand::Tailll(args) => tailll::run(args).await,
        BenchCommand::E2e(args) => e2e::run(args).await,
        BenchCommand::Corpus(args) => corpus::run(args),
    }
}
