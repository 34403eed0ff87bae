//! What splits are made of: [`LogRow`] (one shipped line with its source)
//! and [`EventRow`] (one cluster event), built from the bus records, and
//! their Arrow batches in the archive's schema
//! ([`sluice_schema::archive`]).
//!
//! The lines of a chunk share one [`RowSource`] behind an `Arc`, so making
//! rows copies no strings; a row's text is the chunk's `Bytes`, not a copy.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int32Type, Int64Type, TimestampMicrosecondType, TimestampNanosecondType, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use bytes::Bytes;
use sluice_schema::archive::{self as schema, split_job};
use sluice_schema::fields::{self, Format, Parsed};
use sluice_schema::pb::{ClusterEvent, Line, LogChunk, Source};

use super::error::{Result, SplitError};

/// The columns a row takes from its source (one file generation of one
/// task), shared by the rows of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowSource {
    /// Host the file was shipped from.
    pub host: String,
    /// Job key `role/env/name`.
    pub job: String,
    /// Instance number of the task within its job.
    pub instance: u32,
    /// The scheduler's id of the task.
    pub task_id: String,
    /// Run (restart) number of the instance, from 0.
    pub run: u32,
    /// Process (Thermos, native) or container (Kubernetes, Docker, Nomad task)
    /// that wrote the file.
    pub process: String,
    /// `sluice_schema::Stream` value.
    pub stream: i32,
    /// Path of the file on the host, as discovered.
    pub path: String,
    /// Fingerprint of the file generation; with a line's `offset` it names the
    /// line everywhere (the archive's dedup key).
    pub source_id: u64,
    /// The `labels` column: a JSON object with sorted keys, `{}` if none.
    pub labels_json: String,
}

impl RowSource {
    /// The columns of `source`; its labels become sorted JSON.
    pub fn new(source: &Source) -> RowSource {
        RowSource {
            host: source.host.clone(),
            job: source.job.clone(),
            instance: source.instance,
            task_id: source.task_id.clone(),
            run: source.run,
            process: source.process.clone(),
            stream: source.stream,
            path: source.path.clone(),
            source_id: source.source_id,
            labels_json: map_json(&source.labels),
        }
    }
}

impl RowSource {
    /// The source of a chunk's lines; empty columns for a chunk without one.
    pub fn of_chunk(chunk: &LogChunk) -> Arc<RowSource> {
        Arc::new(
            chunk
                .source
                .as_ref()
                .map(RowSource::new)
                .unwrap_or_default(),
        )
    }
}

/// One line of a log split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The source columns, shared with the other rows of its chunk.
    pub source: Arc<RowSource>,
    /// Event time, Unix nanoseconds: from the layout's framing, else when the
    /// shipper read the line.
    pub ts_unix_nanos: i64,
    /// Byte offset in the source file of the line's first byte; with
    /// `source_id`, the line's identity.
    pub offset: u64,
    /// Bytes the line took in the file (text, framing, newline): the next line
    /// starts at `offset + raw_len`.
    pub raw_len: u32,
    /// The exact bytes of the line (may be invalid UTF-8).
    pub text: Bytes,
    /// A piece of a line longer than the shipper's limit; the next piece follows.
    pub partial: bool,
    /// Bytes of the line were lost (the file was truncated or deleted before
    /// the shipper read them).
    pub truncated: bool,
    /// No newline had been written when the line was shipped.
    pub unterminated: bool,
}

impl LogRow {
    /// The row of `line` from `source`; the text is shared, not copied.
    pub fn new(source: Arc<RowSource>, line: &Line) -> LogRow {
        LogRow {
            source,
            ts_unix_nanos: line.ts_unix_nanos,
            offset: line.offset,
            raw_len: line.raw_len,
            text: line.text.clone(),
            partial: line.partial,
            truncated: line.truncated,
            unterminated: line.unterminated,
        }
    }

    /// Appends the rows of a chunk's lines to `out`. A chunk without a
    /// source gets empty source columns.
    pub fn extend_from_chunk(out: &mut Vec<LogRow>, chunk: &LogChunk) {
        let source = RowSource::of_chunk(chunk);
        out.extend(
            chunk
                .lines
                .iter()
                .map(|line| LogRow::new(Arc::clone(&source), line)),
        );
    }

    /// The `line` column: the text, invalid UTF-8 replaced by U+FFFD
    /// (borrowed when the text is valid).
    pub fn line(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.text)
    }

    /// The split's sort order: job, instance, ts, source_id, offset, the
    /// ids compared as the file stores them (signed 64-bit).
    pub fn sort_key(&self) -> (&str, u32, i64, i64, i64) {
        (
            &self.source.job,
            self.source.instance,
            self.ts_unix_nanos,
            self.source.source_id as i64,
            self.offset as i64,
        )
    }
}

/// One cluster event of an event split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRow {
    /// Unique per event, chosen by the emitter (`<origin>/<sequence>`); the
    /// archive keeps each id once.
    pub id: String,
    /// When it happened, Unix nanoseconds.
    pub ts_unix_nanos: i64,
    /// `sluice_schema::EventKind` value.
    pub kind: i32,
    /// Job key `role/env/name`; empty for node-wide events.
    pub job: String,
    /// Instance number; `None` when the event is not about one instance.
    pub instance: Option<u32>,
    /// Id of the task concerned; empty when none.
    pub task_id: String,
    /// Run (restart) number of the instance concerned.
    pub run: u32,
    /// Host concerned; empty when none.
    pub host: String,
    /// User or component (e.g. `system:gc`) on whose behalf it happened.
    pub actor: String,
    /// Short machine-readable reason, e.g. `disk_quota_exceeded`.
    pub reason: String,
    /// Human-readable sentence; an event split's `raw_bytes` counts these bytes.
    pub message: String,
    /// Kind-specific details (e.g. `exit_code`, `bytes_freed`), stored as a JSON
    /// object with sorted keys.
    pub attributes: BTreeMap<String, String>,
}

impl EventRow {
    /// The split's sort order: job, instance (none first), ts, id.
    pub fn sort_key(&self) -> (&str, Option<u32>, i64, &str) {
        (&self.job, self.instance, self.ts_unix_nanos, &self.id)
    }
}

impl From<ClusterEvent> for EventRow {
    fn from(e: ClusterEvent) -> EventRow {
        EventRow {
            id: e.id,
            ts_unix_nanos: e.ts_unix_nanos,
            kind: e.kind,
            job: e.job,
            instance: e.instance,
            task_id: e.task_id,
            run: e.run,
            host: e.host,
            actor: e.actor,
            reason: e.reason,
            message: e.message,
            attributes: e.attributes,
        }
    }
}

impl From<EventRow> for ClusterEvent {
    fn from(r: EventRow) -> ClusterEvent {
        ClusterEvent {
            id: r.id,
            ts_unix_nanos: r.ts_unix_nanos,
            kind: r.kind,
            job: r.job,
            instance: r.instance,
            task_id: r.task_id,
            run: r.run,
            host: r.host,
            actor: r.actor,
            reason: r.reason,
            message: r.message,
            attributes: r.attributes,
        }
    }
}

fn map_json(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "{}".to_string();
    }
    // A BTreeMap serializes with sorted keys; string maps cannot fail.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}

fn string_column<'a>(rows: usize, values: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut builder = StringBuilder::with_capacity(rows, rows * 8);
    for value in values {
        builder.append_value(value);
    }
    Arc::new(builder.finish())
}

/// The `ts` column: nanoseconds rounded down to the microsecond (Delta's
/// unit); `ts_nanos` keeps them exactly.
fn ts_column(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(values.map(|ns| ns.div_euclid(1_000)))
            .with_timezone("UTC"),
    )
}

fn i64_column(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

/// The columns [`fields::parse`] fills, built row by row.
struct ParsedColumns {
    level: StringBuilder,
    message: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    fields: MapBuilder<StringBuilder, StringBuilder>,
}

impl ParsedColumns {
    fn new(rows: usize) -> ParsedColumns {
        let names = MapFieldNames {
            entry: schema::FIELDS_ENTRIES.into(),
            key: schema::FIELDS_KEY.into(),
            value: schema::FIELDS_VALUE.into(),
        };
        // The key and value fields as the schema declares them (the value
        // nullable), so the finished map has the schema's type.
        let DataType::Map(entries, _) = schema::fields_type() else {
            unreachable!("fields_type is a map")
        };
        let DataType::Struct(kv) = entries.data_type() else {
            unreachable!("map entries are a struct")
        };
        ParsedColumns {
            level: StringBuilder::with_capacity(rows, rows * 4),
            message: StringBuilder::with_capacity(rows, 0),
            trace_id: StringBuilder::with_capacity(rows, 0),
            span_id: StringBuilder::with_capacity(rows, 0),
            fields: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
                .with_keys_field(kv[0].clone())
                .with_values_field(kv[1].clone()),
        }
    }

    fn push(&mut self, parsed: Option<&Parsed>) -> Result<()> {
        let Some(p) = parsed else {
            self.level.append_null();
            self.message.append_null();
            self.trace_id.append_null();
            self.span_id.append_null();
            self.fields.append(false)?;
            return Ok(());
        };
        self.level.append_option(p.level.map(|l| l.as_str()));
        self.message.append_option(p.message.as_deref());
        self.trace_id.append_option(p.trace_id.as_deref());
        self.span_id.append_option(p.span_id.as_deref());
        for (key, value) in &p.fields {
            self.fields.keys().append_value(key);
            self.fields.values().append_value(value);
        }
        self.fields.append(p.format != Format::Plain)?;
        Ok(())
    }

    fn finish(mut self, columns: &mut Vec<ArrayRef>) -> Result<()> {
        columns.push(Arc::new(self.level.finish()));
        columns.push(Arc::new(self.message.finish()));
        columns.push(Arc::new(self.trace_id.finish()));
        columns.push(Arc::new(self.span_id.finish()));
        columns.push(Arc::new(self.fields.finish()));
        Ok(())
    }
}

/// The Arrow batch of `rows`, in order, in [`schema::logs_schema`]. The
/// `line` values are also handed to `on_line` in row order, with what
/// [`fields::parse`] read in them when `parse_fields` (the same parse
/// fills the batch's `level` … `fields` columns; without it they are null),
/// so the caller can index them without converting the text twice.
pub fn log_batch(
    rows: &[LogRow],
    parse_fields: bool,
    mut on_line: impl FnMut(&str, Option<&Parsed>),
) -> Result<RecordBatch> {
    let n = rows.len();
    let src = || rows.iter().map(|r| r.source.as_ref());
    let jobs = || src().map(|s| split_job(&s.job));
    let text_bytes: usize = rows.iter().map(|r| r.text.len()).sum();
    let mut line = StringBuilder::with_capacity(n, text_bytes);
    let mut line_bytes = BinaryBuilder::with_capacity(n, 0);
    let mut parsed_columns = ParsedColumns::new(n);
    for row in rows {
        let text = row.line();
        // Parsed from `line` as stored, so a query re-reading the column
        // (`search(line, 'level:error')`) reads exactly what was parsed.
        let parsed = parse_fields.then(|| fields::parse(text.as_bytes()));
        parsed_columns.push(parsed.as_ref())?;
        match &text {
            Cow::Borrowed(text) => {
                line.append_value(text);
                line_bytes.append_null();
            }
            Cow::Owned(text) => {
                line.append_value(text);
                line_bytes.append_value(&row.text);
            }
        }
        on_line(&text, parsed.as_ref());
    }
    let columns: Vec<ArrayRef> = vec![
        ts_column(rows.iter().map(|r| r.ts_unix_nanos)),
        i64_column(rows.iter().map(|r| r.ts_unix_nanos)),
        string_column(n, src().map(|s| s.host.as_str())),
        string_column(n, src().map(|s| s.job.as_str())),
        string_column(n, jobs().map(|j| j.0)),
        string_column(n, jobs().map(|j| j.1)),
        string_column(n, jobs().map(|j| j.2)),
        i64_column(src().map(|s| i64::from(s.instance))),
        string_column(n, src().map(|s| s.task_id.as_str())),
        i64_column(src().map(|s| i64::from(s.run))),
        string_column(n, src().map(|s| s.process.as_str())),
        string_column(n, src().map(|s| schema::stream_name(s.stream))),
        string_column(n, src().map(|s| s.path.as_str())),
        // The u64 fingerprint's bits (see the schema's "Types" section).
        i64_column(src().map(|s| s.source_id as i64)),
        i64_column(rows.iter().map(|r| r.offset as i64)),
        i64_column(rows.iter().map(|r| i64::from(r.raw_len))),
        Arc::new(line.finish()),
        Arc::new(line_bytes.finish()),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.partial)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.truncated)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.unterminated)),
        )),
        string_column(n, src().map(|s| s.labels_json.as_str())),
    ];
    let mut columns = columns;
    parsed_columns.finish(&mut columns)?;
    Ok(RecordBatch::try_new(schema::logs_schema_ref(), columns)?)
}

/// The Arrow batch of `rows`, in order, in [`schema::events_schema`].
pub fn event_batch(rows: &[EventRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let jobs = || rows.iter().map(|r| split_job(&r.job));
    let kinds: Vec<String> = rows
        .iter()
        .map(|r| schema::event_kind_name(r.kind))
        .collect();
    let attributes: Vec<String> = rows.iter().map(|r| map_json(&r.attributes)).collect();
    let columns: Vec<ArrayRef> = vec![
        ts_column(rows.iter().map(|r| r.ts_unix_nanos)),
        i64_column(rows.iter().map(|r| r.ts_unix_nanos)),
        string_column(n, rows.iter().map(|r| r.id.as_str())),
        string_column(n, kinds.iter().map(String::as_str)),
        string_column(n, rows.iter().map(|r| r.job.as_str())),
        string_column(n, jobs().map(|j| j.0)),
        string_column(n, jobs().map(|j| j.1)),
        string_column(n, jobs().map(|j| j.2)),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.instance.map(i64::from)),
        )),
        string_column(n, rows.iter().map(|r| r.task_id.as_str())),
        i64_column(rows.iter().map(|r| i64::from(r.run))),
        string_column(n, rows.iter().map(|r| r.host.as_str())),
        string_column(n, rows.iter().map(|r| r.actor.as_str())),
        string_column(n, rows.iter().map(|r| r.reason.as_str())),
        string_column(n, rows.iter().map(|r| r.message.as_str())),
        string_column(n, attributes.iter().map(String::as_str)),
    ];
    Ok(RecordBatch::try_new(schema::events_schema_ref(), columns)?)
}

/// Typed access to a batch's columns by name, with errors that name the
/// column.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get(&self, name: &str) -> Result<&'a dyn Array> {
        self.0
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| SplitError::Schema(format!("missing column {name}")))
    }

    fn wrong(name: &str) -> SplitError {
        SplitError::Schema(format!("column {name} has the wrong type"))
    }

    fn string(&self, name: &str) -> Result<&'a arrow_array::StringArray> {
        self.get(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| Self::wrong(name))
    }

    /// An integer column as written now (Int64) or before Delta Lake
    /// (UInt32, UInt64), or as another engine may rewrite it (Int32).
    fn int(&self, name: &str) -> Result<Ints<'a>> {
        let array = self.get(name)?;
        if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            return Ok(Ints::I64(a));
        }
        if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            return Ok(Ints::U64(a));
        }
        if let Some(a) = array.as_primitive_opt::<UInt32Type>() {
            return Ok(Ints::U32(a));
        }
        if let Some(a) = array.as_primitive_opt::<Int32Type>() {
            return Ok(Ints::I32(a));
        }
        Err(Self::wrong(name))
    }

    /// The rows' instants in Unix nanoseconds: `ts_nanos`, or (in a split
    /// written before Delta Lake) `ts` in nanoseconds.
    fn ts_nanos(&self) -> Result<Ints<'a>> {
        if self.0.column_by_name(schema::COL_TS_NANOS).is_some() {
            return self.int(schema::COL_TS_NANOS);
        }
        let ts = self.get(schema::COL_TS)?;
        if let Some(a) = ts.as_primitive_opt::<TimestampNanosecondType>() {
            return Ok(Ints::Nanos(a));
        }
        if let Some(a) = ts.as_primitive_opt::<TimestampMicrosecondType>() {
            return Ok(Ints::Micros(a));
        }
        Err(Self::wrong(schema::COL_TS))
    }

    fn bool(&self, name: &str) -> Result<&'a BooleanArray> {
        self.get(name)?
            .as_boolean_opt()
            .ok_or_else(|| Self::wrong(name))
    }
}

/// An integer column of any type Sluice has written, read as the
/// shipper's bits (`u64`) or as a signed number.
#[derive(Clone, Copy)]
enum Ints<'a> {
    I64(&'a arrow_array::Int64Array),
    I32(&'a arrow_array::Int32Array),
    U64(&'a arrow_array::UInt64Array),
    U32(&'a arrow_array::UInt32Array),
    Nanos(&'a arrow_array::TimestampNanosecondArray),
    Micros(&'a arrow_array::TimestampMicrosecondArray),
}

impl Ints<'_> {
    fn is_valid(&self, i: usize) -> bool {
        match self {
            Ints::I64(a) => a.is_valid(i),
            Ints::I32(a) => a.is_valid(i),
            Ints::U64(a) => a.is_valid(i),
            Ints::U32(a) => a.is_valid(i),
            Ints::Nanos(a) => a.is_valid(i),
            Ints::Micros(a) => a.is_valid(i),
        }
    }

    /// The value as a signed number (a UInt64 by its bits).
    fn i64(&self, i: usize) -> i64 {
        match self {
            Ints::I64(a) => a.value(i),
            Ints::I32(a) => i64::from(a.value(i)),
            Ints::U64(a) => a.value(i) as i64,
            Ints::U32(a) => i64::from(a.value(i)),
            Ints::Nanos(a) => a.value(i),
            Ints::Micros(a) => a.value(i).saturating_mul(1_000),
        }
    }

    /// The value's bits as the shipper's `u64` (source ids, offsets).
    fn u64(&self, i: usize) -> u64 {
        self.i64(i) as u64
    }

    /// The value as the shipper's `u32` (instances, runs, lengths): an
    /// error names the column when it does not fit.
    fn u32(&self, name: &str, i: usize) -> Result<u32> {
        u32::try_from(self.i64(i)).map_err(|_| {
            SplitError::Schema(format!(
                "column {name} row {i}: {} is not a 32-bit unsigned number",
                self.i64(i)
            ))
        })
    }
}

fn parse_map(name: &str, json: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(json)
        .map_err(|e| SplitError::Schema(format!("column {name} is not a JSON string map: {e}")))
}

/// The log rows of a batch read back from a split (all columns). Rows of
/// one source do not share their [`RowSource`].
pub fn log_rows_from_batch(batch: &RecordBatch) -> Result<Vec<LogRow>> {
    use schema::*;
    let c = Columns(batch);
    let (ts, host, job) = (c.ts_nanos()?, c.string(COL_HOST)?, c.string(COL_JOB)?);
    let (instance, task_id, run) = (
        c.int(COL_INSTANCE)?,
        c.string(COL_TASK_ID)?,
        c.int(COL_RUN)?,
    );
    let (process, stream, path) = (
        c.string(COL_PROCESS)?,
        c.string(COL_STREAM)?,
        c.string(COL_PATH)?,
    );
    let (source_id, offset, raw_len) = (
        c.int(COL_SOURCE_ID)?,
        c.int(COL_OFFSET)?,
        c.int(COL_RAW_LEN)?,
    );
    let line = c.string(COL_LINE)?;
    let line_bytes = c
        .get(COL_LINE_BYTES)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| Columns::wrong(COL_LINE_BYTES))?;
    let (partial, truncated, unterminated) = (
        c.bool(COL_PARTIAL)?,
        c.bool(COL_TRUNCATED)?,
        c.bool(COL_UNTERMINATED)?,
    );
    let labels = c.string(COL_LABELS)?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let source = RowSource {
            host: host.value(i).to_string(),
            job: job.value(i).to_string(),
            instance: instance.u32(COL_INSTANCE, i)?,
            task_id: task_id.value(i).to_string(),
            run: run.u32(COL_RUN, i)?,
            process: process.value(i).to_string(),
            stream: stream_from_name(stream.value(i)),
            path: path.value(i).to_string(),
            source_id: source_id.u64(i),
            labels_json: labels.value(i).to_string(),
        };
        let text = if line_bytes.is_null(i) {
            Bytes::copy_from_slice(line.value(i).as_bytes())
        } else {
            Bytes::copy_from_slice(line_bytes.value(i))
        };
        rows.push(LogRow {
            source: Arc::new(source),
            ts_unix_nanos: ts.i64(i),
            offset: offset.u64(i),
            raw_len: raw_len.u32(COL_RAW_LEN, i)?,
            text,
            partial: partial.value(i),
            truncated: truncated.value(i),
            unterminated: unterminated.value(i),
        });
    }
    Ok(rows)
}

/// The event rows of a batch read back from a split (all columns).
pub fn event_rows_from_batch(batch: &RecordBatch) -> Result<Vec<EventRow>> {
    use schema::*;
    let c = Columns(batch);
    let (ts, id, kind, job) = (
        c.ts_nanos()?,
        c.string(COL_ID)?,
        c.string(COL_KIND)?,
        c.string(COL_JOB)?,
    );
    let (instance, task_id, run, host) = (
        c.int(COL_INSTANCE)?,
        c.string(COL_TASK_ID)?,
        c.int(COL_RUN)?,
        c.string(COL_HOST)?,
    );
    let (actor, reason, message, attributes) = (
        c.string(COL_ACTOR)?,
        c.string(COL_REASON)?,
        c.string(COL_MESSAGE)?,
        c.string(COL_ATTRIBUTES)?,
    );
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let kind = event_kind_from_name(kind.value(i)).ok_or_else(|| {
            SplitError::Schema(format!("column kind has unknown value {:?}", kind.value(i)))
        })?;
        rows.push(EventRow {
            id: id.value(i).to_string(),
            ts_unix_nanos: ts.i64(i),
            kind,
            job: job.value(i).to_string(),
            instance: match instance.is_valid(i) {
                true => Some(instance.u32(COL_INSTANCE, i)?),
                false => None,
            },
            task_id: task_id.value(i).to_string(),
            run: run.u32(COL_RUN, i)?,
            host: host.value(i).to_string(),
            actor: actor.value(i).to_string(),
            reason: reason.value(i).to_string(),
            message: message.value(i).to_string(),
            attributes: parse_map(COL_ATTRIBUTES, attributes.value(i))?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schema::pb::Stream;

    #[test]
    fn rows_of_a_chunk_share_their_source() {
        let chunk = LogChunk {
            source: Some(Source {
                job: "www/prod/api".into(),
                stream: Stream::Stderr as i32,
                labels: [("team".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            lines: vec![
                Line {
                    offset: 0,
                    text: Bytes::from_static(b"a"),
                    ..Default::default()
                },
                Line {
                    offset: 2,
                    text: Bytes::from_static(b"b"),
                    ..Default::default()
                },
            ],
            shipped_at_unix_nanos: 0,
        };
        let mut rows = Vec::new();
        LogRow::extend_from_chunk(&mut rows, &chunk);
        assert_eq!(rows.len(), 2);
        assert!(Arc::ptr_eq(&rows[0].source, &rows[1].source));
        assert_eq!(rows[0].source.labels_json, r#"{"team":"web"}"#);
        let batch = log_batch(&rows, true, |_, _| {}).unwrap();
        assert_eq!(log_rows_from_batch(&batch).unwrap(), rows);
    }

    #[test]
    fn invalid_utf8_is_kept_exactly() {
        let row = LogRow {
            source: Arc::default(),
            ts_unix_nanos: 1,
            offset: 0,
            raw_len: 4,
            text: Bytes::from_static(b"a\xffb"),
            partial: false,
            truncated: false,
            unterminated: true,
        };
        let mut lines = Vec::new();
        let batch = log_batch(std::slice::from_ref(&row), true, |l, _| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(lines, ["a\u{fffd}b"]);
        assert_eq!(log_rows_from_batch(&batch).unwrap(), [row]);
    }

    #[test]
    fn events_convert_both_ways() {
        let event = ClusterEvent {
            id: "a/1-0".into(),
            kind: 99,
            instance: Some(3),
            attributes: [("to".to_string(), "\"x\"".to_string())].into(),
            ..Default::default()
        };
        let row = EventRow::from(event.clone());
        assert_eq!(ClusterEvent::from(row.clone()), event);
        let batch = event_batch(std::slice::from_ref(&row)).unwrap();
        assert_eq!(event_rows_from_batch(&batch).unwrap(), [row]);
    }
}
