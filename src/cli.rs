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

/// Printed after `sluice --help`: how `sluice` ends.
const EXIT_CODES: &str = "\
Exit status:
  0  success (also when the reader of the output goes away, as with `| head`)
  1  the command failed; the reason is on standard error
  2  the command line is wrong (unknown flag, bad value)

Examples:
  sluice up --demo                 everything on this machine, with sample jobs
  sluice status                    how the cluster is
  sluice query --since 1h \"SELECT job, count(*) FROM logs GROUP BY job\"
  sluice completions bash > ~/.local/share/bash-completion/completions/sluice";

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Ship, archive, query and tail the logs of cluster jobs",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); `SLUICE_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Colour on a terminal (`auto`, unless `NO_COLOR` is set), `always` or
    /// `never`.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorArg,
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

impl ColorArg {
    /// Whether to colour a stream: `always` wins over `NO_COLOR`, as
    /// no-color.org asks; `auto` colours a terminal unless `NO_COLOR` is set
    /// and not empty.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Whether standard output gets colour.
    pub fn stdout(self) -> bool {
        use std::io::IsTerminal as _;
        self.enabled(std::io::stdout().is_terminal())
    }
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
    /// Run everything in one process: bus, scheduler, nodes, archiver and
    /// the admin and query services.
    #[command(
        after_help = "Examples:\n  sluice up --demo\n  sluice up --nodes 3 --data-dir /var/lib/sluice\n  sluice up --bus kafka://localhost:9092 --store s3://logs/sluice"
    )]
    Up(up::UpArgs),
    /// Inspect the bus: topics, offsets, consumer lag, records.
    #[command(subcommand)]
    Bus(BusCommand),
    /// Ask a running cluster how it is.
    #[command(
        after_help = "Examples:\n  sluice status\n  sluice status --json | jq .detail.archive"
    )]
    Status(StatusArgs),
    /// Run a shipper: tail the sandboxes under a root and publish to the bus.
    #[command(
        after_help = "Examples:\n  sluice shipper --layout kubernetes --root /var/log/pods --bus kafka://k1:9092 --listen 0.0.0.0:7401"
    )]
    Shipper(shipper_cmd::ShipperArgs),
    /// Run an archiver: the bus into Parquet + index splits on object storage,
    /// with compaction and retention in the background.
    #[command(
        after_help = "Examples:\n  sluice archiver --bus kafka://k1:9092 --store s3://logs-bucket/sluice --retention 30d"
    )]
    Archiver(archive_cmd::ArchiverArgs),
    /// Inspect the archive; compact it or apply retention now.
    #[command(subcommand)]
    Archive(archive_cmd::ArchiveCommand),
    /// Run SQL over the archive (tables logs and events; search(line, '…')
    /// for full text).
    #[command(
        after_help = "Examples:\n  sluice query --since 1h \"SELECT job, count(*) FROM logs GROUP BY job\"\n  sluice query --since 1d -B 3 \"SELECT * FROM logs WHERE search(line, 'OutOfMemoryError')\""
    )]
    Query(query_cmd::QueryArgs),
    /// The audit trail: cluster events (task states, kills, quota kills,
    /// collections, data loss, API calls) with who asked.
    #[command(
        after_help = "Examples:\n  sluice events --job 'www/prod/*' --since 1h\n  sluice events --kind quota_kill --since 7d"
    )]
    Events(query_cmd::EventsArgs),
    /// Submit, update, kill and inspect jobs.
    #[command(subcommand)]
    Job(job_cmd::JobCommand),
    /// Run the scheduler alone (nodes join with `sluice node --scheduler`).
    #[command(
        after_help = "Examples:\n  sluice scheduler --listen 0.0.0.0:7400 --bus kafka://k1:9092"
    )]
    Scheduler(scheduler_cmd::SchedulerArgs),
    /// Run a node: the agent that runs the scheduler's tasks, and the
    /// shipper that tails them.
    #[command(
        after_help = "Examples:\n  sluice node --scheduler http://sched:7400 --bus kafka://k1:9092 --listen 0.0.0.0:7401"
    )]
    Node(node_cmd::NodeArgs),
    /// Collect sandboxes on the nodes now, or say what would be collected.
    #[command(after_help = "Examples:\n  sluice gc --dry-run\n  sluice gc --node node-1")]
    Gc(node_cmd::GcArgs),
    /// Run one task's processes in its sandbox (started by a node agent).
    #[command(hide = true)]
    Executor(executor_cmd::ExecutorArgs),
    /// Measure a component; results go to docs/PERFORMANCE.md.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a shell completion script for `sluice`.
    #[command(
        after_help = "Examples:\n  sluice completions bash > ~/.local/share/bash-completion/completions/sluice\n  sluice completions zsh > \"${fpath[1]}/_sluice\"\n  sluice completions fish > ~/.config/fish/completions/sluice.fish"
    )]
    Completions(CompletionsArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Publish → consume throughput and acknowledgement latency of a bus.
    #[command(
        after_help = "Examples:\n  sluice bench bus --mb 256\n  sluice bench bus --bus kafka://localhost:9092 --mb 256"
    )]
    Bus(bench::BusBenchArgs),
    /// Files → bus throughput of the shipper, next to cat and zstd.
    #[command(
        after_help = "Examples:\n  sluice bench shipper --mb 256\n  sluice bench shipper --corpus ../shared/corpus/loghub"
    )]
    Shipper(bench_shipper::ShipperBenchArgs),
    /// The garbage-collection policy on a simulated node.
    #[command(after_help = "Examples:\n  sluice bench gc")]
    Gc(bench_gc::GcBenchArgs),
    /// Archiver throughput and archive size, next to zstd -3.
    #[command(
        after_help = "Examples:\n  sluice bench archive --mb 1024\n  sluice bench archive --mb 256 --corpus ../shared/corpus/loghub"
    )]
    Archive(bench_archive::ArchiveBenchArgs),
    /// Needle, regex, count per hour and top errors over the archive, next
    /// to zstd -dc | grep and DuckDB.
    #[command(after_help = "Examples:\n  sluice bench query --mb 1024")]
    Query(bench_query::QueryBenchArgs),
    /// Append → display latency of `tailll`, and its throughput into a pipe.
    #[command(after_help = "Examples:\n  sluice bench tailll")]
    Tailll(bench_tailll::TaillBenchArgs),
    /// Sandboxes → queryable archive under a steady load: freshness, CPU per
    /// MB, tailll's latency meanwhile.
    #[command(after_help = "Examples:\n  sluice bench e2e --plot docs/img/e2e-freshness.svg")]
    E2e(bench_e2e::E2eBenchArgs),
    /// Write the generated corpus the benches use to files.
    #[command(
        after_help = "Examples:\n  sluice bench corpus /tmp/corpus\n  sluice bench corpus /tmp/java --formats java,json --events 100000 --seed 7"
    )]
    Corpus(bench::CorpusArgs),
}

#[derive(Subcommand, Debug)]
pub enum BusCommand {
    /// Topics, partitions, end offsets and consumer-group lag.
    #[command(after_help = "Examples:\n  sluice bus status\n  sluice bus status --json")]
    Status(bus_cmd::StatusArgs),
    /// Print records as text or JSON lines.
    #[command(
        after_help = "Examples:\n  sluice bus dump --topic sluice.logs --json --max 5\n  sluice bus dump --topic sluice.events --from-beginning --follow"
    )]
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
    /// The CA (PEM) the services' certificates are checked against
    /// [default: client.toml's].
    #[arg(long, env = "SLUICE_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
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
        Command::Status(args) => admin::status(args, cli.color.stdout()).await,
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
        Command::Bench(BenchCommand::Corpus(args)) => bench::corpus(args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "sluice", &mut std::io::stdout());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every command a user can run, as its words after `sluice`.
    fn leaves(
        command: &clap::Command,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, clap::Command)>,
    ) {
        if command.is_hide_set() {
            return;
        }
        if command.get_subcommands().next().is_none() {
            out.push((path, command.clone()));
            return;
        }
        for sub in command.get_subcommands() {
            let mut path = path.clone();
            path.push(sub.get_name().to_string());
            leaves(sub, path, out);
        }
    }

    /// Each command's `--help` ends with examples, and each example parses
    /// as that command.
    #[test]
    fn every_command_has_examples_that_parse() {
        let mut all = Vec::new();
        leaves(&Cli::command(), Vec::new(), &mut all);
        assert!(all.len() >= 25, "{}", all.len());
        for (path, command) in all {
            let name = path.join(" ");
            let help = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            let examples: Vec<&str> = help
                .split("Examples:")
                .nth(1)
                .unwrap_or_else(|| panic!("`sluice {name} --help` has no examples"))
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            assert!(!examples.is_empty(), "sluice {name}");
            for example in examples {
                let words = shell_words(
                    example
                        .split(" > ")
                        .next()
                        .unwrap()
                        .split(" | ")
                        .next()
                        .unwrap(),
                );
                assert_eq!(words[0], "sluice", "{example}");
                assert_eq!(
                    words[1..=path.len()],
                    path[..],
                    "`{example}` is not an example of `sluice {name}`"
                );
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("`{example}` does not parse: {e}");
                }
            }
        }
    }

    /// Splits on spaces, keeping single- and double-quoted words whole.
    fn shell_words(text: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quote = None;
        let mut in_word = false;
        for c in text.chars() {
            match (quote, c) {
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, ' ') => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                (_, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn no_color_and_the_flag() {
        // `always` and `never` win whatever the environment says.
        assert!(ColorArg::Always.enabled(false));
        assert!(!ColorArg::Never.enabled(true));
        assert!(!ColorArg::Auto.enabled(false));
    }

    #[test]
    fn completions_are_written_for_each_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("sluice") && text.contains("completions"),
                "{shell}"
            );
            assert!(
                text.contains("since"),
                "{shell}: subcommand flags are completed"
            );
        }
    }
}
