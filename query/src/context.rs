//! Context lines around hits, like `grep -C`: the lines just before and
//! after each hit in the same source (file generation), by offset.
//!
//! The lines are looked for within an hour of the hit's time (so the search
//! reads the splits of about three hours, not the whole archive): a line
//! logged more than an hour before or after its neighbour is not shown as
//! its context.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;

use super::{QueryEngine, QueryError, QueryRequest, Restrictions, TimeRange};

/// How far from a hit its context is looked for.
const WINDOW_NANOS: i64 = 3_600_000_000_000;
/// Hits given context at most, per call.
pub const MAX_HITS: usize = 1_000;

/// A matching line: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Job key (`role/env/name`) of the job that wrote the line.
    pub job: String,
    /// The file generation the line is in; with `offset` it names the line.
    pub source_id: u64,
    /// Byte offset of the line in its file.
    pub offset: u64,
    /// The line's time in Unix nanoseconds; its context is looked for within
    /// an hour of it.
    pub ts_unix_nanos: i64,
}

/// One line of a context group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextLine {
    /// The line's time in Unix nanoseconds.
    pub ts_unix_nanos: i64,
    /// Instance number of the job that wrote the line.
    pub instance: u32,
    /// Byte offset of the line in the hit's file; a group's lines are sorted
    /// by it.
    pub offset: u64,
    /// The text, invalid UTF-8 replaced by U+FFFD (empty if null).
    pub line: String,
    /// The hit itself, not context.
    pub hit: bool,
}

/// A hit with the lines around it, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextGroup {
    /// The hit the lines surround.
    pub hit: Hit,
    /// Up to `before` lines, the hit's own line and up to `after` lines,
    /// ascending by offset, without repeats.
    pub lines: Vec<ContextLine>,
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn lines_of(batches: &[RecordBatch], hit_offset: u64) -> Result<Vec<ContextLine>, QueryError> {
    let mut out = Vec::new();
    for batch in batches {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| QueryError::Execution(format!("context: no column {name}")))
        };
        let ints = |name: &str| -> Result<_, QueryError> {
            column(name)?
                .as_primitive_opt::<Int64Type>()
                .cloned()
                .ok_or_else(|| QueryError::Execution(format!("context: {name} is not BIGINT")))
        };
        let (ts, instance, offset) = (ints("ts_nanos")?, ints("instance")?, ints("offset")?);
        let line = datafusion::arrow::compute::cast(
            column("line")?,
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .map_err(|e| QueryError::Execution(e.to_string()))?;
        let line = line.as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.push(ContextLine {
                ts_unix_nanos: ts.value(i),
                instance: instance.value(i) as u32,
                offset: offset.value(i) as u64,
                line: if line.is_null(i) {
                    String::new()
                } else {
                    line.value(i).to_string()
                },
                hit: offset.value(i) as u64 == hit_offset,
            });
        }
    }
    Ok(out)
}

impl QueryEngine {
    /// Up to `before` and `after` lines around each hit (the first
    /// [`MAX_HITS`]), within the caller's restrictions.
    pub async fn context(
        &self,
        hits: &[Hit],
        before: usize,
        after: usize,
        restrictions: &Restrictions,
    ) -> Result<Vec<ContextGroup>, QueryError> {
        let mut groups = Vec::new();
        for hit in hits.iter().take(MAX_HITS) {
            let window = TimeRange::new(
                Some(hit.ts_unix_nanos.saturating_sub(WINDOW_NANOS)),
                Some(hit.ts_unix_nanos.saturating_add(WINDOW_NANOS)),
            );
            let mut scoped = restrictions.clone();
            scoped.time = scoped.time.and(window);
            let base = format!(
                "SELECT ts_nanos, instance, \"offset\", line FROM logs WHERE job = {} AND source_id = {}",
                quote(&hit.job),
                // The column holds the fingerprint's bits as a BIGINT.
                hit.source_id as i64
            );
            let mut lines = Vec::new();
            for (sql, n) in [
                (
                    format!(
                        "{base} AND \"offset\" < {} ORDER BY \"offset\" DESC LIMIT {before}",
                        hit.offset
                    ),
                    before,
                ),
                (format!("{base} AND \"offset\" = {}", hit.offset), 1),
                (
                    format!(
                        "{base} AND \"offset\" > {} ORDER BY \"offset\" LIMIT {after}",
                        hit.offset
                    ),
                    after,
                ),
            ] {
                if n == 0 {
                    continue;
                }
                let request = QueryRequest {
                    sql,
                    restrictions: scoped.clone(),
                    skip_corrupt: false,
                    limit: Some(n),
                    as_of: None,
                };
                let output = self.query(&request).await?;
                lines.extend(lines_of(&output.batches, hit.offset)?);
            }
            lines.sort_by_key(|l| l.offset);
            lines.dedup_by_key(|l| l.offset);
            groups.push(ContextGroup {
                hit: hit.clone(),
                lines,
            });
        }
        Ok(groups)
    }
}
