//! Command-line flags and dispatch. Every client command finds its cluster
//! through `--data-dir` (or `SLUICE_DATA_DIR`), whose `client.toml` `sluice
//! up` writes; `SLUICE_ADDR` and `SLUICE_TOKEN` point at a remote cluster.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd::{archive, bus, executor, job, node, query, scheduler, shipper, status, up};
use crate::shared::args::ColorArg;

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

impl Cli {
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }

    /// Where the process's own log goes: `sluice up`'s services log to
    /// `DATA_DIR/logs/sluice.log` (unless `--log-stderr`), everything else
    /// to standard error.
    pub fn log_file(&self) -> anyhow::Result<Option<std::path::PathBuf>> {
        Ok(match &self.command {
            Command::Up(args) if !args.log_stderr => Some(crate::shared::logs::file_of(
                &std::path::absolute(&args.dir.data_dir)?,
            )),
            _ => None,
        })
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
    Bus(bus::BusCommand),
    /// Ask a running cluster how it is.
    #[command(
        after_help = "Examples:\n  sluice status\n  sluice status --json | jq .detail.archive"
    )]
    Status(status::StatusArgs),
    /// Run a shipper: tail the sandboxes under a root and publish to the bus.
    #[command(
        after_help = "Examples:\n  sluice shipper --layout kubernetes --root /var/log/pods --bus kafka://k1:9092 --listen 0.0.0.0:7401"
    )]
    Shipper(shipper::ShipperArgs),
    /// Run an archiver: the bus into Parquet + index splits on object storage,
    /// with compaction and retention in the background.
    #[command(
        after_help = "Examples:\n  sluice archiver --bus kafka://k1:9092 --store s3://logs-bucket/sluice --retention 30d"
    )]
    Archiver(archive::ArchiverArgs),
    /// Inspect the archive; compact it or apply retention now.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Run SQL over the archive (tables logs and events; search(line, '…')
    /// for full text).
    #[command(
        after_help = "Examples:\n  sluice query --since 1h \"SELECT job, count(*) FROM logs GROUP BY job\"\n  sluice query --since 1d -B 3 \"SELECT * FROM logs WHERE search(line, 'OutOfMemoryError')\""
    )]
    Query(query::QueryArgs),
    /// The audit trail: cluster events (task states, kills, quota kills,
    /// collections, data loss, API calls) with who asked.
    #[command(
        after_help = "Examples:\n  sluice events --job 'www/prod/*' --since 1h\n  sluice events --kind quota_kill --since 7d"
    )]
    Events(query::EventsArgs),
    /// Submit, update, kill and inspect jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Run the scheduler alone (nodes join with `sluice node --scheduler`).
    #[command(
        after_help = "Examples:\n  sluice scheduler --listen 0.0.0.0:7400 --bus kafka://k1:9092"
    )]
    Scheduler(scheduler::SchedulerArgs),
    /// Run a node: the agent that runs the scheduler's tasks, and the
    /// shipper that tails them.
    #[command(
        after_help = "Examples:\n  sluice node --scheduler http://sched:7400 --bus kafka://k1:9092 --listen 0.0.0.0:7401"
    )]
    Node(node::NodeArgs),
    /// Collect sandboxes on the nodes now, or say what would be collected.
    #[command(after_help = "Examples:\n  sluice gc --dry-run\n  sluice gc --node node-1")]
    Gc(node::GcArgs),
    /// Run one task's processes in its sandbox (started by a node agent).
    #[command(hide = true)]
    Executor(executor::ExecutorArgs),
    /// Measure a component; results go to docs/PERFORMANCE.md.
    #[command(subcommand)]
    Bench(sluice_bench::BenchCommand),
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Bus(command) => bus::run(command).await,
        Command::Status(args) => status::run(args, cli.color.stdout()).await,
        Command::Shipper(args) => shipper::run(args).await,
        Command::Job(command) => job::run(command).await,
        Command::Archiver(args) => archive::run(args).await,
        Command::Archive(command) => archive::command(command).await,
        Command::Query(args) => query::query(args).await,
        Command::Events(args) => query::events(args).await,
        Command::Executor(args) => executor::run(args),
        Command::Node(args) => node::node(args).await,
        Command::Scheduler(args) => scheduler::run(args).await,
        Command::Gc(args) => node::gc(args).await,
        Command::Bench(command) => sluice_bench::run(command).await,
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
