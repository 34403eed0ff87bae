//! `sluice query "SQL"` and `sluice events`: SQL over the archive.
//!
//! With `--store`, the query runs in this process over that archive. Else,
//! when a cluster is known (`client.toml` of `--data-dir`, or
//! `SLUICE_ADDR`/`SLUICE_TOKEN`), it runs on the cluster's query service,
//! which reads only the roles the token may read. Else it runs here over
//! the data directory's archive.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use sluice_query::service::{decode_ipc, group_from_pb, hit_to_pb};
use sluice_query::{
    AsOf, ContextGroup, EngineConfig, Hit, QueryEngine, QueryRequest, Restrictions, TimeRange,
};
use sluice_schema::pb;
use sluice_schema::pb::query_client::QueryClient;
use sluice_schema::time::{parse_rfc3339_nanos, rfc3339_nanos};

use crate::shared::args::DataDirArg;
use crate::shared::client;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// One JSON object per row.
    Json,
    Csv,
}

/// Where and when: flags `sluice query` and `sluice events` share.
#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Rows of the last D only (`90s`, `15m`, `2h`, `7d`).
    #[arg(long, value_name = "D", value_parser = sluice_schema::time::parse_duration)]
    pub since: Option<Duration>,
    /// Rows at or after this time (RFC 3339, `2026-11-17T00:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// Rows before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<i64>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Rows shown at most.
    #[arg(long, default_value_t = 10_000)]
    pub limit: usize,
    /// Leave out splits that cannot be read (a warning each) instead of
    /// failing.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Query this archive here (`file:///PATH`, `s3://BUCKET/PREFIX`)
    /// instead of the cluster's query service.
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    /// Print what the scan read (splits pruned, searched, rows selected by
    /// the indexes) on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Read the archive as it was: a version of the `logs` table (`events`
    /// as of that commit's time), or a time (RFC 3339, or `2h` for two
    /// hours ago) for both tables.
    #[arg(long, value_name = "VERSION|TIME", value_parser = parse_as_of)]
    pub as_of: Option<AsOf>,
}

/// `--as-of`: digits are a version, anything else a time.
fn parse_as_of(text: &str) -> Result<AsOf, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(AsOf::Version)
            .map_err(|e| format!("version {text:?}: {e}"));
    }
    let nanos = match parse_rfc3339_nanos(text) {
        Ok(nanos) => nanos,
        Err(_) => {
            let ago = sluice_schema::time::parse_duration(text).map_err(|_| {
                format!("{text:?} is neither a version, an RFC 3339 time nor a duration like 2h")
            })?;
            now_nanos().saturating_sub(ago.as_nanos() as i64)
        }
    };
    Ok(AsOf::Time((nanos.max(0) / 1_000_000) as u64))
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// A SELECT over the tables `logs` and `events`; `search(line, 'words
    /// "a phrase" AND NOT x')` in WHERE uses the full-text index.
    pub sql: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Lines of context around each row, like grep -C (the result needs the
    /// columns job, source_id, offset and ts).
    #[arg(short = 'C', long, value_name = "N")]
    pub context: Option<u32>,
    /// Lines before each row.
    #[arg(short = 'B', long, value_name = "N")]
    pub before: Option<u32>,
    /// Lines after each row.
    #[arg(short = 'A', long, value_name = "N")]
    pub after: Option<u32>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Events of this job (`role/env/name`; `*` matches within the key,
    /// `www/prod/*`).
    #[arg(long)]
    pub job: Option<String>,
    /// Events of this kind (`task_state`, `quota_kill`, `sandbox_collected`,
    /// `data_loss`, `api_call`, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Events of this actor (a user, `system:scheduler`; `*` matches
    /// within it).
    #[arg(long)]
    pub actor: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

fn parse_time(text: &str) -> Result<i64, String> {
    parse_rfc3339_nanos(text).map_err(|e| e.to_string())
}

use sluice_schema::time::now_unix_nanos as now_nanos;

impl ScopeArgs {
    fn time(&self) -> TimeRange {
        let since = self
            .since
            .map(|d| now_nanos().saturating_sub(d.as_nanos() as i64));
        TimeRange::new(since, None).and(TimeRange::new(self.from, self.to))
    }
}

/// A query result, wherever it ran.
struct Answer {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    warnings: Vec<String>,
    stats: Option<pb::ScanStats>,
}

impl Answer {
    fn columns(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }
}

/// Where queries run.
enum Runner {
    Local(Arc<QueryEngine>),
    Remote(QueryClient<client::AuthedChannel>),
}

impl Runner {
    async fn open(scope: &ScopeArgs) -> anyhow::Result<Runner> {
        let data_dir = &scope.dir.data_dir;
        let cluster =
            std::env::var("SLUICE_ADDR").is_ok() || client::ClientFile::read(data_dir)?.is_some();
        if scope.store.is_none() && cluster {
            let channel = client::connect(&client::cluster(&scope.dir)?).await?;
            let client = QueryClient::new(channel).max_decoding_message_size(64 << 20);
            return Ok(Runner::Remote(client));
        }
        let url = client::store_url(scope.store.as_deref(), data_dir)?;
        let store = url.open(&client::s3_options())?;
        let engine = QueryEngine::open(store, EngineConfig::default())
            .await
            .with_context(|| format!("failed to open the archive {url}"))?;
        Ok(Runner::Local(Arc::new(engine)))
    }

    async fn query(&mut self, sql: &str, scope: &ScopeArgs) -> anyhow::Result<Answer> {
        let time = scope.time();
        match self {
            Runner::Local(engine) => {
                let output = engine
                    .query(&QueryRequest {
                        sql: sql.to_string(),
                        restrictions: Restrictions {
                            time,
                            ..Default::default()
                        },
                        skip_corrupt: scope.skip_corrupt,
                        limit: Some(scope.limit),
                        as_of: scope.as_of,
                    })
                    .await?;
                Ok(Answer {
                    schema: output.schema,
                    batches: output.batches,
                    warnings: output.warnings,
                    stats: Some(sluice_query::service::stats_to_pb(&output.stats)),
                })
            }
            Runner::Remote(client) => {
                let request = pb::QueryRequest {
                    sql: sql.to_string(),
                    from_unix_nanos: time.from.unwrap_or(0),
                    to_unix_nanos: time.to.unwrap_or(0),
                    skip_corrupt: scope.skip_corrupt,
                    limit: scope.limit as u64,
                    as_of_version: match scope.as_of {
                        Some(AsOf::Version(v)) => Some(v),
                        _ => None,
                    },
                    as_of_unix_ms: match scope.as_of {
                        Some(AsOf::Time(ms)) => Some(ms as i64),
                        _ => None,
                    },
                };
                let mut stream = client
                    .run(request)
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner();
                let mut answer = Answer {
                    schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()),
                    batches: Vec::new(),
                    warnings: Vec::new(),
                    stats: None,
                };
                while let Some(reply) = stream
                    .message()
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                {
                    if !reply.arrow_ipc.is_empty() {
                        let (schema, batches) =
                            decode_ipc(&reply.arrow_ipc).map_err(anyhow::Error::msg)?;
                        answer.schema = schema;
                        answer.batches.extend(batches);
                    }
                    answer.warnings.extend(reply.warnings);
                    if reply.stats.is_some() {
                        answer.stats = reply.stats;
                    }
                }
                Ok(answer)
            }
        }
    }

    async fn context(
        &mut self,
        hits: Vec<Hit>,
        before: u32,
        after: u32,
        scope: &ScopeArgs,
    ) -> anyhow::Result<Vec<ContextGroup>> {
        let time = scope.time();
        match self {
            Runner::Local(engine) => Ok(engine
                .context(
                    &hits,
                    before as usize,
                    after as usize,
                    &Restrictions {
                        time,
                        ..Default::default()
                    },
                )
                .await?),
            Runner::Remote(client) => {
                let reply = client
                    .context(pb::ContextRequest {
                        hits: hits.iter().map(hit_to_pb).collect(),
                        before,
                        after,
                        from_unix_nanos: time.from.unwrap_or(0),
                        to_unix_nanos: time.to.unwrap_or(0),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                    .into_inner();
                Ok(reply.groups.into_iter().map(group_from_pb).collect())
            }
        }
    }
}

/// "querying… 2.1 s" on stderr while a query runs, when stderr is a
/// terminal; nothing otherwise.
struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    fn start() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let started = Instant::now();
        Progress(Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            for n in 0.. {
                eprint!(
                    "\r{} querying… {:.1} s",
                    frames[n % frames.len()],
                    started.elapsed().as_secs_f64()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

async fn run_sql(runner: &mut Runner, sql: &str, scope: &ScopeArgs) -> anyhow::Result<Answer> {
    let progress = Progress::start();
    let answer = runner.query(sql, scope).await;
    drop(progress);
    let answer = answer?;
    for warning in &answer.warnings {
        eprintln!("warning: {warning}");
    }
    if scope.stats
        && let Some(s) = &answer.stats
    {
        eprintln!(
            "splits: {} in the catalog, {} pruned by time/job/role, {} searched by index ({} without hits, {} of them ruled out by term filters), {} read ({} rows, {} selected by the indexes)",
            s.splits_total,
            s.splits_pruned,
            s.splits_searched,
            s.splits_without_hits,
            s.splits_skipped_by_terms,
            s.splits_read,
            s.rows_in_splits_read,
            s.rows_selected_by_index
        );
    }
    Ok(answer)
}

pub async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let mut runner = Runner::open(&args.scope).await?;
    let answer = run_sql(&mut runner, &args.sql, &args.scope).await?;
    let (before, after) = (
        args.before.or(args.context).unwrap_or(0),
        args.after.or(args.context).unwrap_or(0),
    );
    if before + after > 0 {
        let hits = hits_of(&answer.batches)?;
        let groups = runner.context(hits, before, after, &args.scope).await?;
        return print_guarded(|out| print_context(out, &groups));
    }
    print_answer(&answer, args.scope.format, args.scope.limit)
}

pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let sql = crate::shared::sql::events(&crate::shared::sql::EventFilter {
        job: args.job.clone(),
        kind: args.kind.clone(),
        actor: args.actor.clone(),
    });
    let mut runner = Runner::open(&args.scope).await?;
    let answer = run_sql(&mut runner, &sql, &args.scope).await?;
    print_answer(&answer, args.scope.format, args.scope.limit)
}

/// The hits of a result: its rows' `job`, `source_id`, `offset` and `ts`.
fn hits_of(batches: &[RecordBatch]) -> anyhow::Result<Vec<Hit>> {
    let mut hits = Vec::new();
    for batch in batches {
        let column = |name: &str| {
            batch.column_by_name(name).with_context(|| {
                format!("context lines (-C, -B, -A) need the column {name} in the result: SELECT job, source_id, \"offset\", ts, … FROM logs")
            })
        };
        let job = datafusion::arrow::compute::cast(column("job")?, &DataType::Utf8)?;
        let job = job.as_string::<i32>();
        let int = |name: &str| -> anyhow::Result<_> {
            let values = datafusion::arrow::compute::cast(column(name)?, &DataType::Int64)?;
            Ok(values
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone())
        };
        let (source, offset) = (int("source_id")?, int("offset")?);
        // The exact time if the result has it, else `ts` (microseconds).
        let ts = match batch.column_by_name("ts_nanos") {
            Some(_) => int("ts_nanos")?,
            None => {
                let ts = datafusion::arrow::compute::cast(
                    column("ts")?,
                    &DataType::Timestamp(TimeUnit::Nanosecond, None),
                )?;
                datafusion::arrow::compute::cast(&ts, &DataType::Int64)?
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone()
            }
        };
        for i in 0..batch.num_rows() {
            hits.push(Hit {
                job: job.value(i).to_string(),
                // BIGINT columns hold the shipper's u64 bits.
                source_id: source.value(i) as u64,
                offset: offset.value(i) as u64,
                ts_unix_nanos: ts.value(i),
            });
        }
    }
    Ok(hits)
}

/// Runs `print` on a locked, buffered stdout; a closed pipe ends it quietly.
fn print_guarded(print: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match print(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn print_context(out: &mut dyn Write, groups: &[ContextGroup]) -> std::io::Result<()> {
    for (n, group) in groups.iter().enumerate() {
        if n > 0 {
            writeln!(out, "--")?;
        }
        for line in &group.lines {
            writeln!(
                out,
                "{}[{}] {}{} {}",
                group.hit.job,
                line.instance,
                rfc3339_nanos(line.ts_unix_nanos),
                if line.hit { ':' } else { '-' },
                line.line
            )?;
        }
    }
    Ok(())
}

fn print_answer(answer: &Answer, format: Format, limit: usize) -> anyhow::Result<()> {
    let rows: usize = answer.batches.iter().map(RecordBatch::num_rows).sum();
    print_guarded(|out| {
        let io = |e: datafusion::arrow::error::ArrowError| std::io::Error::other(e.to_string());
        match format {
            Format::Table => {
                let table = datafusion::arrow::util::pretty::pretty_format_batches(&answer.batches)
                    .map_err(io)?;
                if answer.batches.is_empty() {
                    writeln!(out, "(no rows; columns: {})", answer.columns().join(", "))?;
                } else {
                    writeln!(out, "{table}")?;
                }
            }
            Format::Json => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
                for batch in &answer.batches {
                    writer.write(batch).map_err(io)?;
                }
                writer.finish().map_err(io)?;
            }
            Format::Csv => {
                if answer.batches.is_empty() {
                    writeln!(out, "{}", answer.columns().join(","))?;
                } else {
                    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut *out);
                    for batch in &answer.batches {
                        writer.write(batch).map_err(io)?;
                    }
                }
            }
        }
        Ok(())
    })?;
    if rows >= limit {
        eprintln!("(the first {limit} rows; --limit N for more)");
    }
    Ok(())
}
