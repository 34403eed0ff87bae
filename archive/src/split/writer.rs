//! Writing splits: rows in, sorted, out as Parquet bytes (and, for logs, the
//! index blob), with the stats the catalog keeps.
//!
//! Parquet settings, chosen for readers that prune (DataFusion, DuckDB,
//! Athena) and for plain types every reader knows:
//!
//! - zstd at [`SplitOptions::zstd_level`];
//! - dictionary encoding for every column except `ts`, `ts_nanos`,
//!   `offset`, `line` and `line_bytes`, which are mostly distinct (a dictionary would be built,
//!   overflow and be dropped);
//! - statistics per page (column and offset indexes) for every column
//!   except `line`, `line_bytes` and the parsed `message`, `trace_id`,
//!   `span_id` and `fields`, whose min/max prune nothing (`level` has them);
//! - no dictionary for `trace_id` and `span_id` (random ids), and zstd
//!   level 1 for the parsed `message`, `trace_id`, `span_id` and `fields`
//!   (their text is in `line` too);
//! - row groups of [`SplitOptions::row_group_rows`] rows and data pages of
//!   at most [`SplitOptions::page_rows`] rows, so a filter on `job`,
//!   `instance` or `ts` skips most pages of a row group;
//! - the sort order recorded as the row groups' sorting columns;
//! - `ts`, `ts_nanos` and `offset` delta-encoded (DELTA_BINARY_PACKED) and `line`
//!   prefix-encoded (DELTA_BYTE_ARRAY): both read by DuckDB, Trino/Athena,
//!   Spark and arrow; data page v1.

use std::collections::BTreeSet;

use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use sluice_schema::archive::{self as schema};
use sluice_schema::fields::Parsed;

use super::error::{Result, SplitError};
use super::index::IndexBuilder;
use super::rows::{EventRow, LogRow, event_batch, log_batch};
use super::{EventSplit, LogSplit, SplitOptions, SplitStats};

/// Rows converted to Arrow (and indexed) at a time: one row group.
fn batch_rows(options: &SplitOptions) -> usize {
    options.row_group_rows
}

fn column_index(schema: &arrow_schema::Schema, name: &str) -> i32 {
    schema
        .index_of(name)
        .expect("sort columns are in the archive schema") as i32
}

fn sorting(schema: &arrow_schema::Schema, names: &[&str]) -> Vec<SortingColumn> {
    names
        .iter()
        .map(|name| SortingColumn {
            column_idx: column_index(schema, name),
            descending: false,
            nulls_first: true,
        })
        .collect()
}

fn properties(
    options: &SplitOptions,
    sorting_columns: Vec<SortingColumn>,
) -> Result<WriterPropertiesBuilder> {
    let level = ZstdLevel::try_new(options.zstd_level)?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(options.row_group_rows))
        .set_data_page_row_count_limit(options.page_rows)
        .set_write_batch_size(options.page_rows.min(1024))
        .set_sorting_columns(Some(sorting_columns))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            schema::FORMAT_VERSION_KEY.to_string(),
            schema::FORMAT_VERSION.to_string(),
        )])))
}

fn no_dictionary(builder: WriterPropertiesBuilder, names: &[&str]) -> WriterPropertiesBuilder {
    names.iter().fold(builder, |b, name| {
        b.set_column_dictionary_enabled(ColumnPath::from(*name), false)
    })
}

fn no_statistics(builder: WriterPropertiesBuilder, names: &[&str]) -> WriterPropertiesBuilder {
    names.iter().fold(builder, |b, name| {
        b.set_column_statistics_enabled(ColumnPath::from(*name), EnabledStatistics::None)
    })
}

pub(crate) fn log_properties(options: &SplitOptions) -> Result<WriterProperties> {
    use schema::*;
    let arrow = logs_schema();
    let sort = sorting(
        &arrow,
        &[
            COL_JOB,
            COL_INSTANCE,
            COL_TS_NANOS,
            COL_SOURCE_ID,
            COL_OFFSET,
        ],
    );
    let builder = properties(options, sort)?;
    // Trace and span ids are random: a dictionary would overflow.
    let builder = no_dictionary(
        builder,
        &[
            COL_TS,
            COL_TS_NANOS,
            COL_OFFSET,
            COL_LINE,
            COL_LINE_BYTES,
            COL_TRACE_ID,
            COL_SPAN_ID,
        ],
    );
    // Sorted by time within an instance, offsets growing: small deltas.
    let builder = [COL_TS, COL_TS_NANOS, COL_OFFSET]
        .iter()
        .fold(builder, |b, name| {
            b.set_column_encoding(ColumnPath::from(*name), Encoding::DELTA_BINARY_PACKED)
        });
    // Neighbouring lines of a source share prefixes (timestamps, levels,
    // logger names): stored once, the rest compresses 8 % smaller and
    // faster than plain (measure_parquet_columns).
    let builder =
        builder.set_column_encoding(ColumnPath::from(COL_LINE), Encoding::DELTA_BYTE_ARRAY);
    // `level` keeps its statistics (`level IN (…)` skips pages); the other
    // parsed columns' min/max skip nothing and cost a comparison a value.
    let builder = no_statistics(
        builder,
        &[
            COL_LINE,
            COL_LINE_BYTES,
            COL_MESSAGE,
            COL_TRACE_ID,
            COL_SPAN_ID,
        ],
    );
    let builder = [FIELDS_KEY, FIELDS_VALUE].iter().fold(builder, |b, leaf| {
        b.set_column_statistics_enabled(fields_leaf(leaf), EnabledStatistics::None)
    });
    // Field values are as often distinct (times, durations, ids) as not: a
    // dictionary is built, overflows and is dropped.
    let builder = builder.set_column_dictionary_enabled(fields_leaf(FIELDS_VALUE), false);
    // What the parsed columns hold is also in `line` (compressed at the
    // split's level): zstd level 1 keeps the cost of parsing within 15 %
    // of the archiver's CPU on most corpora (docs/PERFORMANCE.md).
    let fast = Compression::ZSTD(ZstdLevel::try_new(1)?);
    let builder = [COL_MESSAGE, COL_TRACE_ID, COL_SPAN_ID]
        .iter()
        .map(|c| ColumnPath::from(*c))
        .chain([fields_leaf(FIELDS_KEY), fields_leaf(FIELDS_VALUE)])
        .fold(builder, |b, path| b.set_column_compression(path, fast));
    Ok(builder.build())
}

/// The column path of a leaf of the `fields` map.
fn fields_leaf(leaf: &str) -> ColumnPath {
    use schema::*;
    ColumnPath::new(vec![
        COL_FIELDS.to_string(),
        FIELDS_ENTRIES.to_string(),
        leaf.to_string(),
    ])
}

fn event_properties(options: &SplitOptions) -> Result<WriterProperties> {
    use schema::*;
    let arrow = events_schema();
    let sort = sorting(&arrow, &[COL_JOB, COL_INSTANCE, COL_TS_NANOS, COL_ID]);
    let builder = properties(options, sort)?;
    let builder = no_dictionary(builder, &[COL_TS, COL_TS_NANOS, COL_ID, COL_MESSAGE]);
    Ok(no_statistics(builder, &[COL_MESSAGE, COL_ATTRIBUTES]).build())
}

/// Writes a log split: sorts `rows` by job, instance, ts, source_id,
/// offset, encodes them as Parquet and indexes their lines, row N as
/// document N. Rows are kept as given: duplicates (a re-sent line) are the
/// caller's to drop.
pub fn write_log_split(mut rows: Vec<LogRow>, options: &SplitOptions) -> Result<LogSplit> {
    options.validate()?;
    if rows.is_empty() {
        return Err(SplitError::Empty);
    }
    rows.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut stats = SplitStats {
        rows: rows.len() as u64,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        ..Default::default()
    };
    let mut jobs = BTreeSet::new();
    for row in &rows {
        stats.raw_bytes += row.text.len() as u64;
        stats.min_ts = stats.min_ts.min(row.ts_unix_nanos);
        stats.max_ts = stats.max_ts.max(row.ts_unix_nanos);
        jobs.insert(row.source.job.as_str());
        stats
            .held
            .add_line(row.source.source_id, row.offset, row.raw_len);
    }
    stats.jobs = jobs.into_iter().map(str::to_string).collect();

    let mut index = IndexBuilder::new(options.index_postings, options.index_memory_bytes)?;
    let mut index_error = None;
    let mut levels = BTreeSet::new();
    let parquet = encode_log_parquet(&rows, options, |line, parsed| {
        if let Some(level) = parsed.and_then(|p| p.level) {
            levels.insert(level.as_str());
        }
        if index_error.is_none()
            && let Err(e) = index.add_line(line)
        {
            index_error = Some(e);
        }
    })?;
    if let Some(e) = index_error {
        return Err(e);
    }
    let index = index.finish()?;
    stats.levels = Some(levels.into_iter().map(str::to_string).collect());
    stats.parquet_bytes = parquet.len() as u64;
    stats.index_bytes = index.len() as u64;
    Ok(LogSplit {
        parquet,
        index,
        stats,
    })
}

/// The Parquet file of `rows`, in the order given, handing each row's
/// `line` to `on_line` in row order.
pub(crate) fn encode_log_parquet(
    rows: &[LogRow],
    options: &SplitOptions,
    on_line: impl FnMut(&str, Option<&Parsed>),
) -> Result<Bytes> {
    encode_log_parquet_with(rows, options, log_properties(options)?, on_line)
}

/// [`encode_log_parquet`] with the given writer properties.
pub(crate) fn encode_log_parquet_with(
    rows: &[LogRow],
    options: &SplitOptions,
    properties: WriterProperties,
    mut on_line: impl FnMut(&str, Option<&Parsed>),
) -> Result<Bytes> {
    let mut writer = ArrowWriter::try_new(Vec::new(), schema::logs_schema_ref(), Some(properties))?;
    for chunk in rows.chunks(batch_rows(options)) {
        let batch = log_batch(chunk, options.parse_fields, &mut on_line)?;
        writer.write(&batch)?;
    }
    Ok(Bytes::from(writer.into_inner()?))
}

/// Writes an event split: sorts `rows` by job, instance (none first), ts,
/// id and encodes them as Parquet. `raw_bytes` in its stats counts message
/// bytes.
pub fn write_event_split(mut rows: Vec<EventRow>, options: &SplitOptions) -> Result<EventSplit> {
    options.validate()?;
    if rows.is_empty() {
        return Err(SplitError::Empty);
    }
    rows.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut stats = SplitStats {
        rows: rows.len() as u64,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        ..Default::default()
    };
    for row in &rows {
        stats.raw_bytes += row.message.len() as u64;
        stats.min_ts = stats.min_ts.min(row.ts_unix_nanos);
        stats.max_ts = stats.max_ts.max(row.ts_unix_nanos);
        stats.jobs.insert(row.job.clone());
        stats.held.events.insert(&row.id);
    }
    let mut writer = ArrowWriter::try_new(
        Vec::new(),
        schema::events_schema_ref(),
        Some(event_properties(options)?),
    )?;
    for chunk in rows.chunks(batch_rows(options)) {
        writer.write(&event_batch(chunk)?)?;
    }
    let parquet = Bytes::from(writer.into_inner()?);
    stats.parquet_bytes = parquet.len() as u64;
    Ok(EventSplit { parquet, stats })
}
