//! SQL over the archive: the `logs` and `events` tables on DataFusion, with
//! `search(line, 'QUERY')` answered by the split indexes.
//!
//! [`QueryEngine::query`] reads the freshest committed version of both
//! Delta tables (or, with [`AsOf`], an older one), plans the
//! SQL in a session of its own (read-only: no DDL, DML, `COPY` or `SET`; no
//! table but `logs` and `events`, no URL or file tables), runs it under a
//! memory limit and a timeout, and returns at most `limit` rows. A split
//! that cannot be read fails the query with an error naming it, or with
//! `skip_corrupt` is left out with a warning.

mod cache;
mod context;
mod date_trunc;
pub mod metrics;
mod prune;
mod search_udf;
pub mod service;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use object_store::ObjectStoreExt;

pub use context::{ContextGroup, ContextLine, Hit, MAX_HITS};
pub use prune::{JobFilter, Pruning, SEARCH_FUNCTION, TimeRange};
pub use search_udf::SearchUdf;
pub use table::{ArchiveTable, QueryScope, Restrictions, ScanStats};

use sluice_archive::catalog::{Catalog, CatalogConfig, SplitEntry, SplitKind};
use sluice_archive::split::SearchQuery;
use sluice_archive::store::Store;

/// Limits of every query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Memory the operators of all running queries may hold together:
    /// one pool, so that many queries at once cannot take more than one
    /// could (sorts and aggregations spill or fail beyond it).
    pub memory_limit_bytes: usize,
    /// Longest a query may run once planned; it is then aborted with
    /// [`QueryError::Timeout`].
    pub timeout: Duration,
    /// Rows returned at most (a `LIMIT` on top of the query).
    pub max_rows: usize,
    /// Parallel partitions of a scan; 0: one per CPU.
    pub target_partitions: usize,
    /// Packed bytes of split indexes kept open between queries.
    pub index_cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            memory_limit_bytes: 1 << 30,
            timeout: Duration::from_secs(300),
            max_rows: 1_000_000,
            target_partitions: 0,
            index_cache_bytes: 256 << 20,
        }
    }
}

/// One query.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    /// The SQL text: a read-only query over the tables `logs` and `events`.
    pub sql: String,
    /// What the caller may read, enforced below the SQL whatever it says.
    pub restrictions: Restrictions,
    /// Leave out splits that cannot be read, with a warning each, instead of
    /// failing.
    pub skip_corrupt: bool,
    /// Rows returned at most (capped by [`EngineConfig::max_rows`]).
    pub limit: Option<usize>,
    /// Read the tables as they were then; `None`: as they are now.
    pub as_of: Option<AsOf>,
}

/// Which committed versions of the tables a query reads (time travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The `logs` table's version `N`, and `events` as of that commit's time.
    Version(u64),
    /// Both tables as of this instant (Unix milliseconds): each one's last
    /// commit at or before it.
    Time(u64),
    /// Exactly these versions of the two tables.
    Tables {
        /// Version of `logs`.
        logs: u64,
        /// Version of `events`.
        events: u64,
    },
}

/// What a query returned, and what its scans did.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The result's schema (also when no row came back).
    pub schema: SchemaRef,
    /// The result rows, at most the request's limit in all.
    pub batches: Vec<RecordBatch>,
    /// What the scans of the query did (splits pruned, searched, read).
    pub stats: ScanStats,
    /// Splits left out (`skip_corrupt`), one line each.
    pub warnings: Vec<String>,
}

impl QueryOutput {
    /// Rows in all of `batches`.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a query failed; [`QueryError::kind`] names the variant for metrics.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan; the message points at the problem.
    #[error("{0}")]
    Sql(String),
    /// A statement the query engine does not run (DDL, DML, `COPY`, `SET`).
    #[error(
        "refused: {0}; sluice query runs read-only SELECT queries over the tables logs and events"
    )]
    Forbidden(String),
    /// The query ran longer than [`EngineConfig::timeout`] (the duration held)
    /// and was aborted.
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
    /// The query's operators needed more memory than was left of the pool all
    /// running queries share ([`EngineConfig::memory_limit_bytes`]).
    #[error(
        "limit query memory: the query needed more than is left of the memory limit of {limit_mib} MiB that all running queries share: {detail}"
    )]
    Memory {
        /// The shared limit, in MiB.
        limit_mib: usize,
        /// DataFusion's message: which operator asked for how much.
        detail: String,
    },
    /// A split of the archive cannot be read.
    #[error("split {key} cannot be read: {problem} (--skip-corrupt reads the rest)")]
    CorruptSplit {
        /// The split's key under the archive's root (`logs/…` or `events/…`).
        key: String,
        /// What went wrong reading it.
        problem: String,
    },
    /// A table's log could not be opened or refreshed, or `--as-of` names a
    /// version it does not have.
    #[error("catalog: {0}")]
    Catalog(#[from] sluice_archive::catalog::Error),
    /// Any other failure while running the query (DataFusion's message, or
    /// the query task's panic).
    #[error("{0}")]
    Execution(String),
}

/// The committed versions a query reads and their live splits.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Version of the `logs` table.
    pub logs_version: u64,
    /// Version of the `events` table.
    pub events_version: u64,
    /// The live splits of both at those versions.
    pub splits: Vec<SplitEntry>,
}

/// Plans and runs SQL over one archive.
pub struct QueryEngine {
    store: Store,
    url: ObjectStoreUrl,
    /// `logs`, then `events`, as last refreshed.
    catalogs: tokio::sync::Mutex<[Catalog; 2]>,
    indexes: Arc<cache::IndexCache>,
    config: EngineConfig,
    metrics: Arc<QueryMetrics>,
    /// The memory every query's operators draw from.
    memory: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
}

/// What the engine has answered, for `/metrics`.
#[derive(Debug, Default)]
pub struct QueryMetrics {
    /// Queries answered or failed since the engine was opened.
    pub queries: AtomicU64,
    /// Failed queries by [`QueryError::kind`], in its order.
    pub errors: [AtomicU64; QueryError::KINDS.len()],
    /// Microseconds spent in [`QueryEngine::query`], summed over all queries.
    pub micros: AtomicU64,
    /// Rows returned by successful queries.
    pub rows_returned: AtomicU64,
    /// Splits dropped by time, job or role before any object was read
    /// (successful queries).
    pub splits_pruned: AtomicU64,
    /// Splits whose index answered a `search()` (successful queries).
    pub splits_searched: AtomicU64,
    /// Splits a search skipped on their term filter without fetching their
    /// index (successful queries).
    pub splits_skipped_by_terms: AtomicU64,
    /// Splits whose Parquet data was read (successful queries).
    pub splits_read: AtomicU64,
    /// Rows of the splits read, before index selection and filters
    /// (successful queries).
    pub rows_in_splits_read: AtomicU64,
    /// Rows selected by full-text indexes (successful queries).
    pub rows_selected_by_index: AtomicU64,
}

impl QueryError {
    /// Every [`QueryError::kind`].
    pub const KINDS: [&'static str; 7] = [
        "sql",
        "forbidden",
        "timeout",
        "memory",
        "corrupt_split",
        "catalog",
        "execution",
    ];

    /// A short name of the error's variant (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Sql(_) => "sql",
            QueryError::Forbidden(_) => "forbidden",
            QueryError::Timeout(_) => "timeout",
            QueryError::Memory { .. } => "memory",
            QueryError::CorruptSplit { .. } => "corrupt_split",
            QueryError::Catalog(_) => "catalog",
            QueryError::Execution(_) => "execution",
        }
    }
}

impl QueryEngine {
    /// Opens both tables under `store`'s prefix; the memory pool and the
    /// index cache are sized by `config`.
    pub async fn open(store: Store, config: EngineConfig) -> Result<QueryEngine, QueryError> {
        let catalogs = Catalog::open_tables(&store, &CatalogConfig::default()).await?;
        let url = ObjectStoreUrl::parse("sluice://archive").expect("a valid url");
        Ok(QueryEngine {
            store,
            url,
            catalogs: tokio::sync::Mutex::new(catalogs),
            indexes: Arc::new(cache::IndexCache::new(config.index_cache_bytes)),
            memory: Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(
                config.memory_limit_bytes,
            )),
            config,
            metrics: Arc::default(),
        })
    }

    /// The limits the engine was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The memory pool every query of this engine draws from.
    pub fn memory_pool(&self) -> &Arc<dyn datafusion::execution::memory_pool::MemoryPool> {
        &self.memory
    }

    /// The live splits of both tables' freshest committed versions.
    pub async fn splits(&self) -> Result<Vec<SplitEntry>, QueryError> {
        Ok(self.snapshot(None).await?.splits)
    }

    /// The tables' versions a query with `as_of` reads, and their live
    /// splits.
    pub async fn snapshot(&self, as_of: Option<AsOf>) -> Result<Snapshot, QueryError> {
        let mut catalogs = self.catalogs.lock().await;
        for catalog in catalogs.iter_mut() {
            catalog.refresh().await?;
        }
        let [logs, events] = &*catalogs;
        let versions = match as_of {
            None => [logs.version(), events.version()],
            Some(AsOf::Version(v)) => {
                if v > logs.version() {
                    return Err(QueryError::Catalog(sluice_archive::catalog::Error::Config(
                        format!(
                            "--as-of {v}: the logs table's latest version is {}",
                            logs.version()
                        ),
                    )));
                }
                let at = logs.commit_time(v).await?;
                [v, events.version_at(at).await?]
            }
            Some(AsOf::Time(unix_ms)) => [
                logs.version_at(unix_ms).await?,
                events.version_at(unix_ms).await?,
            ],
            Some(AsOf::Tables { logs: l, events: e }) => {
                for (catalog, v) in [(logs, l), (events, e)] {
                    if v > catalog.version() {
                        return Err(QueryError::Catalog(sluice_archive::catalog::Error::Config(
                            format!(
                                "{}: no version {v} (the latest is {})",
                                catalog.table_path(),
                                catalog.version()
                            ),
                        )));
                    }
                }
                [l, e]
            }
        };
        let mut splits = Vec::new();
        for (catalog, version) in catalogs.iter().zip(versions) {
            if version == catalog.version() {
                splits.extend(catalog.state().splits().values().cloned());
            } else {
                let old = Catalog::open_at(
                    self.store.store.clone(),
                    &self.store.prefix,
                    catalog.kind(),
                    catalog.config().clone(),
                    Some(version),
                )
                .await?;
                splits.extend(old.state().splits().values().cloned());
            }
        }
        Ok(Snapshot {
            logs_version: versions[0],
            events_version: versions[1],
            splits,
        })
    }

    /// Runs one query on the freshest committed catalog (see the crate docs)
    /// and counts it in [`QueryEngine::metrics`]. With `skip_corrupt`, a split
    /// that cannot be read is left out and the query run again.
    pub async fn query(&self, request: &QueryRequest) -> Result<QueryOutput, QueryError> {
        let started = std::time::Instant::now();
        let result = self.query_with_skips(request).await;
        let m = &self.metrics;
        m.queries.fetch_add(1, Ordering::Relaxed);
        m.micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match &result {
            Ok(output) => {
                let s = &output.stats;
                m.rows_returned
                    .fetch_add(output.num_rows() as u64, Ordering::Relaxed);
                m.splits_pruned
                    .fetch_add(s.splits_pruned, Ordering::Relaxed);
                m.splits_searched
                    .fetch_add(s.splits_searched, Ordering::Relaxed);
                m.splits_skipped_by_terms
                    .fetch_add(s.splits_skipped_by_terms, Ordering::Relaxed);
                m.splits_read
                    .fetch_add(s.splits_read.len() as u64, Ordering::Relaxed);
                m.rows_in_splits_read
                    .fetch_add(s.rows_in_splits_read, Ordering::Relaxed);
                m.rows_selected_by_index
                    .fetch_add(s.rows_selected_by_index, Ordering::Relaxed);
            }
            Err(e) => {
                let i = QueryError::KINDS
                    .iter()
                    .position(|k| *k == e.kind())
                    .expect("every kind is listed");
                m.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// The engine's counters.
    pub fn metrics(&self) -> Arc<QueryMetrics> {
        self.metrics.clone()
    }

    async fn query_with_skips(&self, request: &QueryRequest) -> Result<QueryOutput, QueryError> {
        let splits = self.snapshot(request.as_of).await?.splits;
        let mut restrictions = request.restrictions.clone();
        let mut warnings = Vec::new();
        loop {
            match self.run(request, &splits, restrictions.clone()).await {
                Err(QueryError::CorruptSplit { key, problem })
                    if request.skip_corrupt && !restrictions.skip.contains(&key) =>
                {
                    tracing::warn!(split = %key, %problem, "query: split skipped");
                    warnings.push(format!("skipped split {key}: {problem}"));
                    restrictions.skip.insert(key);
                }
                Ok(mut output) => {
                    output.warnings = warnings;
                    return Ok(output);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn session(&self, scope: Arc<QueryScope>) -> Result<SessionContext, QueryError> {
        let partitions = match self.config.target_partitions {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_information_schema(true);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(self.memory.clone())
            .build_arc()
            .map_err(|e| QueryError::Execution(e.to_string()))?;
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        datafusion_functions_json::register_all(&mut ctx)
            .map_err(|e| QueryError::Execution(e.to_string()))?;
        ctx.register_object_store(self.url.as_ref(), self.store.store.clone());
        ctx.register_udf(ScalarUDF::from(SearchUdf::default()));
        ctx.register_udf(ScalarUDF::from(date_trunc::UtcDateTrunc::default()));
        for (name, kind) in [("logs", SplitKind::Logs), ("events", SplitKind::Events)] {
            ctx.register_table(name, Arc::new(ArchiveTable::new(kind, scope.clone())))
                .map_err(|e| QueryError::Execution(e.to_string()))?;
        }
        Ok(ctx)
    }

    async fn run(
        &self,
        request: &QueryRequest,
        splits: &[SplitEntry],
        restrictions: Restrictions,
    ) -> Result<QueryOutput, QueryError> {
        let scope = Arc::new(QueryScope {
            store: self.store.clone(),
            url: self.url.clone(),
            splits: splits.to_vec(),
            restrictions,
            stats: Mutex::new(ScanStats::default()),
            indexes: self.indexes.clone(),
        });
        let ctx = self.session(scope.clone())?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx
            .sql_with_options(&request.sql, options)
            .await
            .map_err(planning_error)?;
        check_searches(frame.logical_plan())?;
        let limit = request
            .limit
            .unwrap_or(self.config.max_rows)
            .min(self.config.max_rows);
        // EXPLAIN must stay the root of its plan; its output is small.
        let frame = match frame.logical_plan() {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => frame,
            _ => frame.limit(0, Some(limit)).map_err(planning_error)?,
        };
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        // Its own task: a panic in a decoder fails this query, not the caller.
        let task = tokio::spawn(async move { frame.collect().await });
        let abort = task.abort_handle();
        let result = match tokio::time::timeout(self.config.timeout, task).await {
            Err(_) => {
                abort.abort();
                return Err(QueryError::Timeout(self.config.timeout));
            }
            Ok(Err(join)) => Err(format!("the query failed: {join}")),
            Ok(Ok(Err(e))) => match classify(e, self.config.memory_limit_bytes) {
                Ok(message) => Err(message),
                Err(e) => return Err(e),
            },
            Ok(Ok(Ok(batches))) => Ok(batches),
        };
        let stats = scope
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match result {
            Ok(batches) => Ok(QueryOutput {
                schema,
                batches,
                stats,
                warnings: Vec::new(),
            }),
            Err(message) => {
                // Which split? Read each one the query read until one fails.
                for key in &stats.splits_read {
                    if let Err(problem) = self.check_split(key).await {
                        return Err(QueryError::CorruptSplit {
                            key: key.clone(),
                            problem,
                        });
                    }
                }
                Err(QueryError::Execution(message))
            }
        }
    }

    /// Reads a split's Parquet file to its end: the problem, if any.
    pub async fn check_split(&self, key: &str) -> Result<(), String> {
        let path = self.store.object_path(key);
        let bytes = match self.store.store.get(&path).await {
            Ok(get) => get.bytes().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(|e| e.to_string())?;
            for batch in reader {
                batch.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("reading it panicked: {e}"))?
    }
}

/// Every `search(line, 'QUERY')` of the plan has a constant query that
/// parses: a bad one is a SQL error now, not an execution error later.
fn check_searches(plan: &LogicalPlan) -> Result<(), QueryError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut problem: Option<String> = None;
    let mut check = |e: &Expr| {
        if let Expr::ScalarFunction(call) = e
            && call.name() == SEARCH_FUNCTION
            && problem.is_none()
        {
            let mut query = call.args.get(1);
            while let Some(Expr::Cast(cast)) = query {
                query = Some(&cast.expr);
            }
            problem = match query {
                Some(Expr::Literal(value, _)) if value.is_null() => None,
                Some(Expr::Literal(
                    ScalarValue::Utf8(Some(text))
                    | ScalarValue::Utf8View(Some(text))
                    | ScalarValue::LargeUtf8(Some(text)),
                    _,
                )) => SearchQuery::parse(text).err().map(|e| e.to_string()),
                _ => Some("search(line, 'QUERY'): the query must be a constant string".into()),
            };
        }
        Ok(TreeNodeRecursion::Continue)
    };
    plan.apply_with_subqueries(|node| {
        for expr in node.expressions() {
            expr.apply(&mut check)?;
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(planning_error)?;
    match problem {
        Some(problem) => Err(QueryError::Sql(problem)),
        None => Ok(()),
    }
}

/// A planning error as the user should see it.
fn planning_error(e: DataFusionError) -> QueryError {
    let e = e.find_root().to_string();
    for prefix in [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ] {
        if let Some(rest) = e.split(prefix).nth(1) {
            return QueryError::Forbidden(format!("{prefix}{rest}"));
        }
    }
    QueryError::Sql(e)
}

/// An execution error: `Err` when it says which split, or that memory ran
/// out; `Ok(message)` otherwise.
fn classify(e: DataFusionError, memory_limit: usize) -> Result<String, QueryError> {
    let root = e.find_root();
    if let DataFusionError::ResourcesExhausted(detail) = root {
        return Err(QueryError::Memory {
            limit_mib: memory_limit >> 20,
            detail: detail.clone(),
        });
    }
    let message = root.to_string();
    if let Some(rest) = message.split("split ").nth(1)
        && let Some((key, problem)) = rest.split_once(": ")
        && (key.starts_with("logs/") || key.starts_with("events/"))
    {
        return Err(QueryError::CorruptSplit {
            key: key.to_string(),
            problem: problem.to_string(),
        });
    }
    Ok(message)
}
