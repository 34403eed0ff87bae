//! The query service (`sluice.v1.Query`): [`QueryEngine`] over gRPC, for
//! `sluice query` and `sluice events` against a cluster. Callers read only
//! the rows of the roles they may read: the engine enforces it below any
//! SQL (see [`Restrictions`]).

use std::pin::Pin;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use futures::Stream;
use sluice_schema::audit::{Audit, Call, method_of, outcome, sql_target};
use sluice_schema::auth;
use sluice_schema::limits::{PerUser, check_size};
use sluice_schema::pb;
use tonic::{Request, Response, Status};

use super::{
    ContextGroup, ContextLine, Hit, QueryEngine, QueryError, QueryRequest, Restrictions, ScanStats,
    TimeRange,
};

/// Bytes of Arrow data per reply at most (gRPC messages stay far below the
/// 4 MiB clients accept by default).
const REPLY_BYTES: usize = 1 << 20;

/// Queries one user may run at once, by default.
pub const DEFAULT_QUERIES_PER_USER: usize = 4;
/// The longest SQL text a query may have.
pub const MAX_SQL_BYTES: usize = 64 << 10;

/// `sluice.v1.Query`. Every query and context call is on the audit trail
/// (when the service has an [`Audit`]); a user runs at most so many at once.
pub struct QueryService {
    engine: Arc<QueryEngine>,
    audit: Option<Arc<Audit>>,
    running: PerUser,
}

impl QueryService {
    /// A service over `engine` with no audit trail and
    /// [`DEFAULT_QUERIES_PER_USER`] queries per user.
    pub fn new(engine: Arc<QueryEngine>) -> QueryService {
        QueryService {
            engine,
            audit: None,
            running: PerUser::new(
                "queries",
                "--max-queries-per-user",
                DEFAULT_QUERIES_PER_USER,
            ),
        }
    }

    /// Records each call in `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// At most `max` queries (and context calls) at once per user.
    pub fn with_queries_per_user(mut self, max: usize) -> Self {
        self.running = PerUser::new("queries", "--max-queries-per-user", max);
        self
    }

    /// The per-user count of running queries.
    pub fn running(&self) -> &PerUser {
        &self.running
    }

    fn audit<T>(
        &self,
        user: &str,
        method: String,
        target: String,
        peer: Option<std::net::SocketAddr>,
        result: &Result<T, Status>,
    ) {
        if let Some(audit) = &self.audit {
            let call = Call {
                actor: user.to_string(),
                method,
                target,
                job: String::new(),
                outcome: outcome(result),
                peer,
            };
            audit.record(call, now_unix_nanos());
        }
    }
}

use sluice_schema::time::now_unix_nanos;

fn time_range(from: i64, to: i64) -> TimeRange {
    TimeRange::new((from != 0).then_some(from), (to != 0).then_some(to))
}

/// A query error as a gRPC status, its message intact.
pub fn status(e: QueryError) -> Status {
    let message = e.to_string();
    match e {
        QueryError::Sql(_) | QueryError::Forbidden(_) => Status::invalid_argument(message),
        QueryError::Timeout(_) => Status::deadline_exceeded(message),
        QueryError::Memory { .. } => Status::resource_exhausted(message),
        QueryError::CorruptSplit { .. } => Status::data_loss(message),
        QueryError::Catalog(_) => Status::unavailable(message),
        QueryError::Execution(_) => Status::internal(message),
    }
}

/// `batches` as an Arrow IPC stream with `schema`.
pub fn encode_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, Status> {
    let fail = |e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string());
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(fail)?;
    for batch in batches {
        writer.write(batch).map_err(fail)?;
    }
    writer.into_inner().map_err(fail)
}

/// The schema and batches of an Arrow IPC stream.
pub fn decode_ipc(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("bad Arrow data in reply: {e}"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad Arrow data in reply: {e}"))?;
    Ok((schema, batches))
}

/// Batches cut so each holds about [`REPLY_BYTES`] at most.
fn slices(batch: &RecordBatch) -> Vec<RecordBatch> {
    let size = batch.get_array_memory_size().max(1);
    let rows = batch.num_rows();
    if size <= REPLY_BYTES || rows <= 1 {
        return vec![batch.clone()];
    }
    let per = (rows * REPLY_BYTES / size).max(1);
    (0..rows)
        .step_by(per)
        .map(|at| batch.slice(at, per.min(rows - at)))
        .collect()
}

/// [`ScanStats`] as sent in a query's last reply (`splits_read` becomes a
/// count).
pub fn stats_to_pb(stats: &ScanStats) -> pb::ScanStats {
    pb::ScanStats {
        splits_total: stats.splits_total,
        splits_pruned: stats.splits_pruned,
        splits_searched: stats.splits_searched,
        splits_without_hits: stats.splits_without_hits,
        splits_read: stats.splits_read.len() as u64,
        rows_in_splits_read: stats.rows_in_splits_read,
        rows_selected_by_index: stats.rows_selected_by_index,
        splits_skipped_by_terms: stats.splits_skipped_by_terms,
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<pb::QueryReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::query_server::Query for QueryService {
    type RunStream = ReplyStream;

    async fn run(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::RunStream>, Status> {
        let principal = auth::principal(&request)?;
        let method = method_of(&request, "/sluice.v1.Query/Run");
        let peer = request.remote_addr();
        let target = sql_target(&request.get_ref().sql);
        let result = self.run_query(&principal, request.into_inner()).await;
        self.audit(&principal.user, method, target, peer, &result);
        result
    }

    async fn context(
        &self,
        request: Request<pb::ContextRequest>,
    ) -> Result<Response<pb::ContextReply>, Status> {
        let principal = auth::principal(&request)?;
        let method = method_of(&request, "/sluice.v1.Query/Context");
        let peer = request.remote_addr();
        let req = request.get_ref();
        let target = format!(
            "{} hits, {} before, {} after",
            req.hits.len(),
            req.before,
            req.after
        );
        let result = self.run_context(&principal, request.into_inner()).await;
        self.audit(&principal.user, method, target, peer, &result);
        result
    }
}

impl QueryService {
    async fn run_query(
        &self,
        principal: &auth::Principal,
        req: pb::QueryRequest,
    ) -> Result<Response<ReplyStream>, Status> {
        check_size("sql", req.sql.len(), MAX_SQL_BYTES)?;
        let _running = self.running.acquire(&principal.user)?;
        let query = QueryRequest {
            sql: req.sql,
            restrictions: Restrictions {
                time: time_range(req.from_unix_nanos, req.to_unix_nanos),
                roles: principal.readable_roles(),
                ..Default::default()
            },
            skip_corrupt: req.skip_corrupt,
            limit: (req.limit > 0).then(|| usize::try_from(req.limit).unwrap_or(usize::MAX)),
            as_of: match (req.as_of_version, req.as_of_unix_ms) {
                (Some(v), _) => Some(crate::AsOf::Version(v)),
                (None, Some(ms)) => Some(crate::AsOf::Time(ms.max(0) as u64)),
                (None, None) => None,
            },
        };
        let output = self.engine.query(&query).await.map_err(status)?;
        let mut replies = Vec::new();
        for batch in output.batches.iter().filter(|b| b.num_rows() > 0) {
            for slice in slices(batch) {
                replies.push(Ok(pb::QueryReply {
                    arrow_ipc: encode_ipc(&output.schema, &[slice])?,
                    ..Default::default()
                }));
            }
        }
        let empty = replies.is_empty();
        replies.push(Ok(pb::QueryReply {
            arrow_ipc: if empty {
                encode_ipc(&output.schema, &[])?
            } else {
                Vec::new()
            },
            warnings: output.warnings,
            stats: Some(stats_to_pb(&output.stats)),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(replies))))
    }

    async fn run_context(
        &self,
        principal: &auth::Principal,
        req: pb::ContextRequest,
    ) -> Result<Response<pb::ContextReply>, Status> {
        let _running = self.running.acquire(&principal.user)?;
        let restrictions = Restrictions {
            time: time_range(req.from_unix_nanos, req.to_unix_nanos),
            roles: principal.readable_roles(),
            ..Default::default()
        };
        let hits: Vec<Hit> = req.hits.into_iter().map(hit_from_pb).collect();
        let groups = self
            .engine
            .context(
                &hits,
                req.before as usize,
                req.after as usize,
                &restrictions,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ContextReply {
            groups: groups.into_iter().map(group_to_pb).collect(),
        }))
    }
}

/// A [`Hit`] as sent in a `Context` request.
pub fn hit_to_pb(hit: &Hit) -> pb::Hit {
    pb::Hit {
        job: hit.job.clone(),
        source_id: hit.source_id,
        offset: hit.offset,
        ts_unix_nanos: hit.ts_unix_nanos,
    }
}

/// The [`Hit`] of a `Context` request.
pub fn hit_from_pb(hit: pb::Hit) -> Hit {
    Hit {
        job: hit.job,
        source_id: hit.source_id,
        offset: hit.offset,
        ts_unix_nanos: hit.ts_unix_nanos,
    }
}

fn group_to_pb(group: ContextGroup) -> pb::ContextGroup {
    pb::ContextGroup {
        hit: Some(hit_to_pb(&group.hit)),
        lines: group
            .lines
            .into_iter()
            .map(|l| pb::ContextLine {
                ts_unix_nanos: l.ts_unix_nanos,
                instance: l.instance,
                offset: l.offset,
                line: l.line,
                hit: l.hit,
            })
            .collect(),
    }
}

/// A context group as received in a `Context` reply; a missing hit becomes
/// the default one (empty job, zeros).
pub fn group_from_pb(group: pb::ContextGroup) -> ContextGroup {
    ContextGroup {
        hit: hit_from_pb(group.hit.unwrap_or_default()),
        lines: group
            .lines
            .into_iter()
            .map(|l| ContextLine {
                ts_unix_nanos: l.ts_unix_nanos,
                instance: l.instance,
                offset: l.offset,
                line: l.line,
                hit: l.hit,
            })
            .collect(),
    }
}
