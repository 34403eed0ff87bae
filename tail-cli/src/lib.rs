//! `tailll`: every instance of a Sluice job, live, in one terminal.
//!
//! It asks the scheduler where the selected instances are ([`cluster`]),
//! opens one `Tail.Follow` stream per node that holds any ([`stream`]),
//! merges their lines by timestamp within a short window ([`merge`]) and
//! prints them ([`render`], [`output`]); [`session`] ties these together
//! and follows the job as it changes. The library is the binary's body,
//! kept apart so its pieces are tested on their own; `main.rs` only parses
//! flags and maps the result to an exit status.
//!
//! tailll knows nothing of Kafka or the bus: it talks to the scheduler and
//! to the nodes' Tail services, with the token of `client.toml` (or
//! `SLUICE_TOKEN`).

pub mod args;
pub mod client;
pub mod cluster;
pub mod merge;
pub mod output;
pub mod render;
pub mod session;
pub mod stream;

use std::sync::Arc;

use anyhow::Context;
use sluice_schema::glob::JobGlob;
use sluice_schema::pb::{Selector, Stream};

pub use args::Args;
use args::{ColorArg, OutputArg, StreamArg};
use client::ClusterAddress;
use cluster::{PollError, Scheduler};
use output::Output;
use render::{Format, Renderer, Style, Template};
use session::{Interrupts, Session, Settings};
use stream::Plan;

/// Most bytes of `--grep` once compiled (the nodes' own limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What the binary learned of its surroundings, besides the flags.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// Standard output is a terminal (`--color auto` then colours).
    pub stdout_is_terminal: bool,
    /// `NO_COLOR` is set and not empty.
    pub no_color: bool,
}

/// Runs `tailll` to its end: Ctrl-C, a closed pipe, or (`--no-follow`)
/// the end of the backfill.
pub async fn run(args: Args, terminal: Terminal) -> anyhow::Result<()> {
    follow(args, terminal, Output::stdout(), Interrupts::listen()).await
}

/// What [`run`] does, into `output` and until `interrupts` (or the output's
/// reader goes away): the console's live tail runs it with a writer of
/// server-sent events and no signals.
pub async fn follow(
    args: Args,
    terminal: Terminal,
    output: Output,
    mut interrupts: Interrupts,
) -> anyhow::Result<()> {
    if let Some(grep) = &args.grep {
        regex::bytes::RegexBuilder::new(grep)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .with_context(|| format!("invalid --grep {grep:?}"))?;
    }
    let format = match (&args.template, args.output) {
        (Some(template), _) => {
            Format::Template(Template::parse(template).map_err(anyhow::Error::msg)?)
        }
        (None, OutputArg::Prefixed) => Format::Prefixed,
        (None, OutputArg::Raw) => Format::Raw,
        (None, OutputArg::Json) => Format::Json,
    };
    let style = Style {
        color: use_colour(args.color, terminal),
        host: args.host,
        run: args.run,
        job: !is_one_job(&args.job),
    };

    let ca = match &args.tls_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the CA {} (--tls-ca)", path.display()))?,
        ),
        None => None,
    };
    let overrides = sluice_client::Overrides {
        addr: args.addr.clone(),
        token: args.token.clone(),
        ca,
    };
    let address = ClusterAddress::new(&args.data_dir, overrides);
    let cluster = address.resolve()?;
    let (token, ca) = (cluster.token, cluster.ca);
    let mut scheduler = Scheduler::new(address, args.job.clone(), args.instances.clone());
    let first = tokio::select! {
        first = scheduler.poll() => first.map_err(PollError::into_inner)?,
        () = interrupts.recv() => return Ok(()),
    };
    if first.jobs.is_empty() {
        anyhow::bail!(
            "no job matches {} (`sluice job list` shows the jobs you may read)",
            args.job
        );
    }
    if first.instances.is_empty() && args.instances.is_some() {
        anyhow::bail!("no instance of {} matches -i", args.job);
    }

    let started = session::now_unix_nanos();
    let selector = Selector {
        job: args.job.as_str().to_string(),
        instances: args
            .instances
            .as_ref()
            .map(|i| i.0.clone())
            .unwrap_or_default(),
        streams: match args.stream {
            Some(StreamArg::Stdout) => vec![Stream::Stdout as i32],
            Some(StreamArg::Stderr) => vec![Stream::Stderr as i32],
            None => Vec::new(),
        },
        processes: args.processes.clone(),
        regex: args.grep.clone().unwrap_or_default(),
        invert: args.invert,
        min_level: args.level.map(|l| l.to_string()).unwrap_or_default(),
    };
    let backfill_lines = args.backfill_lines();
    let plan = Plan {
        selector,
        backfill_lines,
        since_unix_nanos: args.since.map_or(0, |s| s.unix_nanos(started)),
        no_follow: args.no_follow,
        trim: backfill_lines as usize,
        token,
        ca,
    };
    let session = Session::new(Settings {
        plan: Arc::new(plan),
        renderer: Renderer::new(format, style),
        window: (!args.unordered).then_some(args.reorder_window),
        quiet: args.quiet,
        refresh: args.refresh,
        started_unix_nanos: started,
    });
    session.run(first, scheduler, output, interrupts).await
}

/// `--color`: `auto` colours a terminal unless `NO_COLOR` is set; the
/// flag's `always` wins over `NO_COLOR` (as no-color.org asks).
fn use_colour(arg: ColorArg, terminal: Terminal) -> bool {
    match arg {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => terminal.stdout_is_terminal && !terminal.no_color,
    }
}

/// Whether the glob names one job exactly (then prefixes leave the job out).
fn is_one_job(glob: &JobGlob) -> bool {
    let text = glob.as_str();
    text.split('/').count() == 3 && !text.contains(['*', '?'])
}

/// Whether an error is a closed standard output: `tailll … | head`.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_when_asked_or_on_a_terminal_without_no_color() {
        let term = |stdout_is_terminal, no_color| Terminal {
            stdout_is_terminal,
            no_color,
        };
        assert!(use_colour(ColorArg::Auto, term(true, false)));
        assert!(!use_colour(ColorArg::Auto, term(true, true)));
        assert!(!use_colour(ColorArg::Auto, term(false, false)));
        assert!(use_colour(ColorArg::Always, term(false, true)));
        assert!(!use_colour(ColorArg::Never, term(true, false)));
    }

    #[test]
    fn one_job_or_many() {
        let glob = |s: &str| JobGlob::parse(s).unwrap();
        assert!(is_one_job(&glob("www/prod/web")));
        assert!(!is_one_job(&glob("www/prod/*")));
        assert!(!is_one_job(&glob("www/prod")));
        assert!(!is_one_job(&glob("www/pro?/web")));
    }
}
