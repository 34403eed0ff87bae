//! The archive's contract: the columns and Arrow types of the `logs` and
//! `events` tables, the tantivy field of the line index, and every key the
//! archive writes. Writers (the archiver), readers (the query engine, the
//! catalog) and outside engines (DuckDB, Trino, Spark, Athena) all follow
//! this module; it does no I/O.
//!
//! # Tables and keys
//!
//! The archive is two Delta Lake tables, `logs` and `events`, under the
//! archive's root. A *split* is one Parquet data file of a table, and for
//! logs a tantivy index of its `line` column stored as one object under the
//! table's `_index/` folder, which Delta tools leave alone (row N of the
//! file is document N of the index). Keys are relative to the archive's
//! root; data files are Hive-partitioned by the UTC date (and hour, for
//! logs) of the rows' `ts`:
//!
//! ```text
//! logs/_delta_log/00000000000000000007.json         Delta commit 7 of `logs`
//! logs/_delta_log/00000000000000000100.checkpoint.parquet
//! logs/_sluice/state/00000000000000000100.json       Sluice's cache of the replayed log
//! logs/date=2026-11-21/hour=07/<split id>.parquet     a data file (Delta `add` path
//!                                                      `date=2026-11-21/hour=07/<id>.parquet`)
//! logs/_index/date=2026-11-21/hour=07/<split id>.index
//! events/_delta_log/…, events/date=2026-11-21/<split id>.parquet
//! ```
//!
//! The partition columns `date` (Delta `date`) and `hour` (Delta `integer`,
//! 0–23) are in the Delta log's `partitionValues` (and the path), never in
//! the file, as Delta requires. A log split holds only rows whose `ts`
//! falls in its date and hour; an event split only rows of its date.
//!
//! A split id is 16 hex digits of its creation time in Unix nanoseconds, a
//! `-`, and 16 hex digits of randomness (`0187a3f0c2d4e5f6-9c1e2a7b3d4f5a6b`):
//! ids sort by creation time, never collide in practice, and are safe in any
//! object store.
//!
//! # Types other engines read
//!
//! Delta has no unsigned integers and keeps timestamps in microseconds, so:
//! - `ts` is a Delta `timestamp` (microseconds, UTC): every engine reads it
//!   as a time. `ts_nanos` (BIGINT) keeps the exact nanoseconds Sluice
//!   orders and prunes by; `ts` is `ts_nanos` rounded down to the
//!   microsecond.
//! - `source_id` is the shipper's 64-bit fingerprint stored as the BIGINT
//!   with the same bits: values of 2^63 and above read as negative numbers.
//!   Compare ids by equality, or print them as hex
//!   (`printf('%016x', source_id)` in DuckDB) to see the shipper's value.
//! - `offset`, `instance`, `run` and `raw_len` are BIGINT (the shipper's
//!   values are unsigned and far below 2^63).
//!
//! # The `logs` table
//!
//! One row per shipped line (a piece of a long line is its own row). Rows
//! are sorted by `job`, `instance`, `ts_nanos`, `source_id`, `offset`.
//!
//! | column         | Arrow type                 | null | what it holds |
//! |----------------|----------------------------|------|---------------|
//! | `ts`           | Timestamp(µs, "UTC")       | no   | event time of the line (framing time, else read time) |
//! | `ts_nanos`     | Int64                      | no   | the same instant in Unix nanoseconds, exact |
//! | `host`         | Utf8                       | no   | host the shipper runs on |
//! | `job`          | Utf8                       | no   | job key `role/env/name` |
//! | `role`         | Utf8                       | no   | first segment of `job` |
//! | `env`          | Utf8                       | no   | second segment of `job` |
//! | `name`         | Utf8                       | no   | rest of `job` after the second `/` |
//! | `instance`     | Int64                      | no   | instance number |
//! | `task_id`      | Utf8                       | no   | task id |
//! | `run`          | Int64                      | no   | run (restart) number, from 0 |
//! | `process`      | Utf8                       | no   | process or container |
//! | `stream`       | Utf8                       | no   | `stdout`, `stderr` or empty |
//! | `path`         | Utf8                       | no   | file path on the host |
//! | `source_id`    | Int64                      | no   | file generation (bits of the u64); `(source_id, offset)` names a line |
//! | `offset`       | Int64                      | no   | byte offset of the line in its file |
//! | `raw_len`      | Int64                      | no   | bytes the line took in the file (framing, newline) |
//! | `line`         | Utf8                       | no   | the text, invalid UTF-8 replaced by U+FFFD |
//! | `line_bytes`   | Binary                     | yes  | the exact bytes, only when `line` had to replace some |
//! | `partial`      | Boolean                    | no   | a piece of a longer line, continued by the next row |
//! | `truncated`    | Boolean                    | no   | bytes of this line were lost |
//! | `unterminated` | Boolean                    | no   | no newline had been written when shipped |
//! | `labels`       | Utf8                       | no   | source labels as a JSON object with sorted keys, `{}` if none |
//! | `level`        | Utf8                       | yes  | `trace`, `debug`, `info`, `warn`, `error` or `fatal`; null when the line names none |
//! | `message`      | Utf8                       | yes  | a JSON or logfmt line's message field |
//! | `trace_id`     | Utf8                       | yes  | a JSON or logfmt line's trace id, as written |
//! | `span_id`      | Utf8                       | yes  | a JSON or logfmt line's span id, as written |
//! | `fields`       | Map(Utf8, Utf8)            | yes  | a JSON or logfmt line's other fields (nested keys joined by `.`); null for plain text |
//! | `date`         | Date32 (partition)         | no   | UTC date of `ts` |
//! | `hour`         | Int32 (partition)          | no   | UTC hour of `ts`, 0–23 |
//!
//! `level`, `message`, `trace_id`, `span_id` and `fields` are what
//! [`crate::fields::parse`] reads in the `line` column (of a multi-line
//! event, the level of its first line); they are derived, so a file
//! written before they existed reads them as null and a compaction fills
//! them in. `fields` is a Parquet `MAP` (groups `key_value`, `key`,
//! `value`), which DuckDB (`fields['user']`), Trino, Spark and Athena read.
//!
//! `role`, `env` and `name` repeat `job` so that filters on one segment are
//! plain equality on a dictionary-encoded column. `labels` is JSON text
//! rather than a Parquet map so every reader can read it
//! (`json_extract_string(labels, '$.team')` in DuckDB).
//!
//! # The `events` table
//!
//! One row per cluster event, sorted by `job`, `instance` (null first),
//! `ts_nanos`, `id`.
//!
//! | column       | Arrow type           | null | what it holds |
//! |--------------|----------------------|------|---------------|
//! | `ts`         | Timestamp(µs, "UTC") | no   | when it happened |
//! | `ts_nanos`   | Int64                | no   | the same instant in Unix nanoseconds, exact |
//! | `id`         | Utf8                 | no   | unique id (`<origin>/<start>-<seq>`) |
//! | `kind`       | Utf8                 | no   | snake_case kind: `task_state`, `quota_kill`, … (see [`event_kind_name`]) |
//! | `job`        | Utf8                 | no   | job key, empty for node-wide events |
//! | `role`       | Utf8                 | no   | first segment of `job` |
//! | `env`        | Utf8                 | no   | second segment of `job` |
//! | `name`       | Utf8                 | no   | rest of `job` |
//! | `instance`   | Int64                | yes  | instance, null when the event is not about one |
//! | `task_id`    | Utf8                 | no   | task id or empty |
//! | `run`        | Int64                | no   | run number |
//! | `host`       | Utf8                 | no   | host or empty |
//! | `actor`      | Utf8                 | no   | user or component on whose behalf it happened |
//! | `reason`     | Utf8                 | no   | short machine-readable reason |
//! | `message`    | Utf8                 | no   | human-readable sentence |
//! | `attributes` | Utf8                 | no   | attributes as a JSON object with sorted keys, `{}` if none |
//! | `date`       | Date32 (partition)   | no   | UTC date of `ts` |
//!
//! In Parquet, `ts` is INT64 `TIMESTAMP(MICROS, isAdjustedToUTC=true)`, the
//! integers are plain INT64, strings are `BYTE_ARRAY` `STRING`, `fields` is
//! a `MAP` of strings; no other logical types are used.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::pb::{EventKind, Stream};

/// Version of the archive layout, in each file's key-value metadata under
/// [`FORMAT_VERSION_KEY`]. Bumped only for a change readers must know of.
pub const FORMAT_VERSION: &str = "2";
/// Key of [`FORMAT_VERSION`] in the Arrow schema (and Parquet) metadata.
pub const FORMAT_VERSION_KEY: &str = "sluice.archive.version";

/// Column of both tables: event time as Timestamp(µs, "UTC"), never null.
pub const COL_TS: &str = "ts";
/// Column of both tables: event time in Unix nanoseconds (Int64), exact;
/// `ts` is this rounded down to the microsecond.
pub const COL_TS_NANOS: &str = "ts_nanos";
/// Column of both tables: host the shipper runs on (`logs`), or host or empty (`events`).
pub const COL_HOST: &str = "host";
/// Column of both tables: job key `role/env/name`, empty for node-wide events.
pub const COL_JOB: &str = "job";
/// Column of both tables: first segment of the job key (see [`split_job`]).
pub const COL_ROLE: &str = "role";
/// Column of both tables: second segment of the job key (see [`split_job`]).
pub const COL_ENV: &str = "env";
/// Column of both tables: rest of the job key after its second `/` (see [`split_job`]).
pub const COL_NAME: &str = "name";
/// Column of both tables: instance number (UInt32); nullable only in `events`.
pub const COL_INSTANCE: &str = "instance";
/// Column of both tables: task id, empty in `events` when there is none.
pub const COL_TASK_ID: &str = "task_id";
/// Column of both tables: run (restart) number, counted from 0.
pub const COL_RUN: &str = "run";
/// Column of `logs`: process or container that wrote the line.
pub const COL_PROCESS: &str = "process";
/// Column of `logs`: `stdout`, `stderr` or empty (see [`stream_name`]).
pub const COL_STREAM: &str = "stream";
/// Column of `logs`: file path on the host.
pub const COL_PATH: &str = "path";
/// Column of `logs`: file generation (UInt64); with [`COL_OFFSET`] it names a line.
pub const COL_SOURCE_ID: &str = "source_id";
/// Column of `logs`: byte offset of the line in its file (UInt64).
pub const COL_OFFSET: &str = "offset";
/// Column of `logs`: bytes the line took in the file, framing and newline included (UInt32).
pub const COL_RAW_LEN: &str = "raw_len";
/// Column of `logs`: the line's text, invalid UTF-8 replaced by U+FFFD; also the indexed field.
pub const COL_LINE: &str = "line";
/// Column of `logs`: the line's exact bytes (Binary), null unless [`COL_LINE`] had to replace some.
pub const COL_LINE_BYTES: &str = "line_bytes";
/// Column of `logs`: true when the row is a piece of a longer line, continued by the next row.
pub const COL_PARTIAL: &str = "partial";
/// Column of `logs`: true when bytes of this line were lost.
pub const COL_TRUNCATED: &str = "truncated";
/// Column of `logs`: true when no newline had been written when the line was shipped.
pub const COL_UNTERMINATED: &str = "unterminated";
/// Column of `logs`: source labels as a JSON object with sorted keys, `{}` if none.
pub const COL_LABELS: &str = "labels";
/// `logs` column: the line's level (see [`crate::fields::Level`]).
pub const COL_LEVEL: &str = "level";
/// `logs` column: a structured line's trace id.
pub const COL_TRACE_ID: &str = "trace_id";
/// `logs` column: a structured line's span id.
pub const COL_SPAN_ID: &str = "span_id";
/// `logs` column: a structured line's other fields.
pub const COL_FIELDS: &str = "fields";
/// The `logs` columns [`crate::fields::parse`] fills from `line`: a
/// reader that rebuilds rows from `line` (compaction) need not decode them.
pub const PARSED_COLUMNS: [&str; 5] = [
    COL_LEVEL,
    COL_MESSAGE,
    COL_TRACE_ID,
    COL_SPAN_ID,
    COL_FIELDS,
];
/// Column of `events`: unique event id, `<origin>/<start>-<seq>`.
pub const COL_ID: &str = "id";
/// Column of `events`: snake_case event kind (see [`event_kind_name`]).
pub const COL_KIND: &str = "kind";
/// Column of `events`: user or component on whose behalf the event happened.
pub const COL_ACTOR: &str = "actor";
/// Column of `events`: short machine-readable reason.
pub const COL_REASON: &str = "reason";
/// Column of `events` (a human-readable sentence) and of `logs` (a structured
/// line's message field).
pub const COL_MESSAGE: &str = "message";
/// Column of `events`: attributes as a JSON object with sorted keys, `{}` if none.
pub const COL_ATTRIBUTES: &str = "attributes";

/// Partition column of both tables (Delta `date`; in the log and the key,
/// not the file).
pub const PARTITION_DATE: &str = "date";
/// Partition column of `logs` (Delta `integer`, 0–23; in the log and the
/// key, not the file).
pub const PARTITION_HOUR: &str = "hour";

/// The one field of a log split's tantivy index: the `line` column.
pub const INDEX_FIELD_LINE: &str = "line";
/// Name under which the line tokenizer is registered in a split index:
/// split on every character that is not alphanumeric, drop tokens longer
/// than [`INDEX_MAX_TOKEN_BYTES`], lowercase.
pub const INDEX_TOKENIZER: &str = "sluice_line";
/// Longest token (in UTF-8 bytes) a split index holds.
pub const INDEX_MAX_TOKEN_BYTES: usize = 128;

/// Key prefix of the `logs` table (its Delta table root).
pub const LOGS_PREFIX: &str = "logs/";
/// Key prefix of the `events` table (its Delta table root).
pub const EVENTS_PREFIX: &str = "events/";
/// Folder of a table's Delta log, under the table root.
pub const DELTA_LOG_DIR: &str = "_delta_log";
/// Folder of the log splits' indexes, under the `logs` table root; Delta
/// tools (vacuum included) leave `_`-prefixed folders alone.
pub const INDEX_DIR: &str = "_index";
/// Folder of Sluice's own cache of a table's replayed log, under the table
/// root: `state/<version:020>.json`.
pub const SLUICE_DIR: &str = "_sluice";
/// Folder of the catalog before Delta Lake (`sluice archive migrate` reads
/// it), under the archive root.
pub const LEGACY_CATALOG_DIR: &str = "_catalog";
/// Suffix of a split's Parquet file.
pub const PARQUET_SUFFIX: &str = ".parquet";
/// Suffix of a log split's index.
pub const INDEX_SUFFIX: &str = ".index";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn with_version(fields: Vec<Field>) -> Schema {
    Schema::new_with_metadata(
        fields,
        [(FORMAT_VERSION_KEY.to_string(), FORMAT_VERSION.to_string())].into(),
    )
}

/// The Arrow schema of a `logs` split (see the module documentation).
pub fn logs_schema() -> Schema {
    with_version(vec![
        Field::new(COL_TS, ts_type(), false),
        int64(COL_TS_NANOS),
        utf8(COL_HOST),
        utf8(COL_JOB),
        utf8(COL_ROLE),
        utf8(COL_ENV),
        utf8(COL_NAME),
        int64(COL_INSTANCE),
        utf8(COL_TASK_ID),
        int64(COL_RUN),
        utf8(COL_PROCESS),
        utf8(COL_STREAM),
        utf8(COL_PATH),
        int64(COL_SOURCE_ID),
        int64(COL_OFFSET),
        int64(COL_RAW_LEN),
        utf8(COL_LINE),
        Field::new(COL_LINE_BYTES, DataType::Binary, true),
        Field::new(COL_PARTIAL, DataType::Boolean, false),
        Field::new(COL_TRUNCATED, DataType::Boolean, false),
        Field::new(COL_UNTERMINATED, DataType::Boolean, false),
        utf8(COL_LABELS),
        Field::new(COL_LEVEL, DataType::Utf8, true),
        Field::new(COL_MESSAGE, DataType::Utf8, true),
        Field::new(COL_TRACE_ID, DataType::Utf8, true),
        Field::new(COL_SPAN_ID, DataType::Utf8, true),
        Field::new(COL_FIELDS, fields_type(), true),
    ])
}

/// The Arrow type of the `fields` column: a map of strings, its groups
/// named as the Parquet specification names them.
pub fn fields_type() -> DataType {
    let entries = Field::new(
        FIELDS_ENTRIES,
        DataType::Struct(
            vec![
                Field::new(FIELDS_KEY, DataType::Utf8, false),
                Field::new(FIELDS_VALUE, DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// Name of the `fields` map's entries group.
pub const FIELDS_ENTRIES: &str = "key_value";
/// Name of the `fields` map's key field.
pub const FIELDS_KEY: &str = "key";
/// Name of the `fields` map's value field.
pub const FIELDS_VALUE: &str = "value";

/// The Arrow schema of an `events` split (see the module documentation).
pub fn events_schema() -> Schema {
    with_version(vec![
        Field::new(COL_TS, ts_type(), false),
        int64(COL_TS_NANOS),
        utf8(COL_ID),
        utf8(COL_KIND),
        utf8(COL_JOB),
        utf8(COL_ROLE),
        utf8(COL_ENV),
        utf8(COL_NAME),
        Field::new(COL_INSTANCE, DataType::Int64, true),
        utf8(COL_TASK_ID),
        int64(COL_RUN),
        utf8(COL_HOST),
        utf8(COL_ACTOR),
        utf8(COL_REASON),
        utf8(COL_MESSAGE),
        utf8(COL_ATTRIBUTES),
    ])
}

/// The partition columns of `kind`'s table as queries see them: `date`
/// (Date32) and, for logs, `hour` (Int32).
pub fn partition_fields(logs: bool) -> Vec<Field> {
    let mut fields = vec![Field::new(PARTITION_DATE, DataType::Date32, false)];
    if logs {
        fields.push(Field::new(PARTITION_HOUR, DataType::Int32, false));
    }
    fields
}

/// A table's full schema: the file's columns, then the partition columns
/// (what Delta's `metaData` declares and every engine reads).
pub fn table_schema(logs: bool) -> Schema {
    let file = if logs { logs_schema() } else { events_schema() };
    let mut fields: Vec<Field> = file.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(partition_fields(logs));
    Schema::new_with_metadata(fields, file.metadata().clone())
}

/// [`logs_schema`] behind an `Arc`, as Arrow APIs take it.
pub fn logs_schema_ref() -> Arc<Schema> {
    Arc::new(logs_schema())
}

/// [`events_schema`] behind an `Arc`, as Arrow APIs take it.
pub fn events_schema_ref() -> Arc<Schema> {
    Arc::new(events_schema())
}

/// The `role`, `env` and `name` columns of a job key `role/env/name`:
/// the text before the first `/`, between the first and second, and the
/// rest. Missing segments are empty (`""` gives three empty strings).
pub fn split_job(job: &str) -> (&str, &str, &str) {
    let mut parts = job.splitn(3, '/');
    let role = parts.next().unwrap_or("");
    let env = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    (role, env, name)
}

/// The `stream` column of a [`Stream`] value: `stdout`, `stderr`, or empty
/// for unspecified and unknown values.
pub fn stream_name(stream: i32) -> &'static str {
    match Stream::try_from(stream) {
        Ok(Stream::Stdout) => "stdout",
        Ok(Stream::Stderr) => "stderr",
        _ => "",
    }
}

/// The [`Stream`] value of a `stream` column.
pub fn stream_from_name(name: &str) -> i32 {
    match name {
        "stdout" => Stream::Stdout as i32,
        "stderr" => Stream::Stderr as i32,
        _ => Stream::Unspecified as i32,
    }
}

const EVENT_KIND_PREFIX: &str = "EVENT_KIND_";
const UNKNOWN_KIND_PREFIX: &str = "unknown_";

/// The `kind` column of an [`EventKind`] value: the protobuf name without
/// `EVENT_KIND_`, lowercased (`task_state`, `quota_kill`, `unspecified`). A
/// value this build does not know (from a newer emitter) is `unknown_<n>`.
pub fn event_kind_name(kind: i32) -> String {
    match EventKind::try_from(kind) {
        Ok(known) => known
            .as_str_name()
            .trim_start_matches(EVENT_KIND_PREFIX)
            .to_ascii_lowercase(),
        Err(_) => format!("{UNKNOWN_KIND_PREFIX}{kind}"),
    }
}

/// The [`EventKind`] value of a `kind` column, the inverse of
/// [`event_kind_name`]; `None` for text it never produces.
pub fn event_kind_from_name(name: &str) -> Option<i32> {
    if let Some(n) = name.strip_prefix(UNKNOWN_KIND_PREFIX) {
        let n: i32 = n.parse().ok()?;
        return EventKind::try_from(n).is_err().then_some(n);
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let upper = format!("{EVENT_KIND_PREFIX}{}", name.to_ascii_uppercase());
    EventKind::from_str_name(&upper).map(|k| k as i32)
}

/// Why a key, date or split id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid archive key {key:?}: {problem}")]
pub struct KeyError {
    /// The text that was parsed, shortened to 200 bytes.
    pub key: String,
    /// What is wrong with it, a fixed phrase such as `"no such date"`.
    pub problem: &'static str,
}

impl KeyError {
    fn new(key: &str, problem: &'static str) -> KeyError {
        let mut end = key.len().min(200);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        KeyError {
            key: key[..end].to_string(),
            problem,
        }
    }
}

/// A UTC calendar date, the `date` partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Calendar year, four digits in the key (`2026`).
    pub year: u16,
    /// Month of the year, 1 to 12.
    pub month: u8,
    /// Day of the month, from 1.
    pub day: u8,
}

impl Date {
    /// The UTC date of an instant.
    pub fn from_unix_nanos(unix_nanos: i64) -> Date {
        // Every i64 instant falls in years 1677 to 2262.
        let (year, month, day) = crate::time::utc_date(unix_nanos);
        Date {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        }
    }

    /// Parses `YYYY-MM-DD`, checking that the day exists.
    pub fn parse(text: &str) -> Result<Date, KeyError> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(KeyError::new(text, "date is not YYYY-MM-DD"));
        }
        let num = |range: std::ops::Range<usize>| -> Result<u16, KeyError> {
            let part = &b[range];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(KeyError::new(text, "date is not YYYY-MM-DD"));
            }
            Ok(part.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let date = Date {
            year,
            month: month as u8,
            day: day as u8,
        };
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if day == 0 || day > days_in_month {
            return Err(KeyError::new(text, "no such date"));
        }
        Ok(date)
    }

    /// Unix nanoseconds of this date's midnight UTC, `None` outside the
    /// range of `i64` nanoseconds.
    pub fn start_unix_nanos(self) -> Option<i64> {
        crate::time::parse_rfc3339_nanos(&format!("{self}T00:00:00Z")).ok()
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The UTC hour (0–23) of an instant, the `hour` partition.
pub fn hour_of(unix_nanos: i64) -> u8 {
    (unix_nanos.div_euclid(3_600_000_000_000).rem_euclid(24)) as u8
}

/// Where a log split lives: its date and hour partition and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogSplitKey {
    /// UTC date of the split's rows, the `date=` directory.
    pub date: Date,
    /// UTC hour (0–23) of the split's rows, the `hour=` directory.
    pub hour: u8,
    /// File name without suffix, normally made by [`split_id_new`].
    pub split_id: String,
}

impl LogSplitKey {
    /// The key of a split whose rows fall in the hour of `ts_unix_nanos`.
    pub fn for_ts(ts_unix_nanos: i64, split_id: &str) -> LogSplitKey {
        LogSplitKey {
            date: Date::from_unix_nanos(ts_unix_nanos),
            hour: hour_of(ts_unix_nanos),
            split_id: split_id.to_string(),
        }
    }

    /// `logs/date=YYYY-MM-DD/hour=HH/<id>.parquet`.
    pub fn parquet_key(&self) -> String {
        log_split_key(self.date, self.hour, &self.split_id)
    }

    /// `logs/date=YYYY-MM-DD/hour=HH/<id>.index`.
    pub fn index_key(&self) -> String {
        log_index_key(self.date, self.hour, &self.split_id)
    }
}

/// Where an event split lives: its date partition and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventSplitKey {
    /// UTC date of the split's rows, the `date=` directory.
    pub date: Date,
    /// File name without suffix, normally made by [`split_id_new`].
    pub split_id: String,
}

impl EventSplitKey {
    /// `events/date=YYYY-MM-DD/<id>.parquet`.
    pub fn parquet_key(&self) -> String {
        event_split_key(self.date, &self.split_id)
    }
}

/// The directory of one hour of log splits:
/// `logs/date=YYYY-MM-DD/hour=HH/`.
pub fn log_partition_prefix(date: Date, hour: u8) -> String {
    format!("{LOGS_PREFIX}{PARTITION_DATE}={date}/{PARTITION_HOUR}={hour:02}/")
}

/// The directory of one day of event splits: `events/date=YYYY-MM-DD/`.
pub fn event_partition_prefix(date: Date) -> String {
    format!("{EVENTS_PREFIX}{PARTITION_DATE}={date}/")
}

/// `logs/date=YYYY-MM-DD/hour=HH/<split_id>.parquet`.
pub fn log_split_key(date: Date, hour: u8, split_id: &str) -> String {
    format!(
        "{}{split_id}{PARQUET_SUFFIX}",
        log_partition_prefix(date, hour)
    )
}

/// `logs/_index/date=YYYY-MM-DD/hour=HH/<split_id>.index`: the index of
/// the split `log_split_key(date, hour, split_id)`.
pub fn log_index_key(date: Date, hour: u8, split_id: &str) -> String {
    format!(
        "{LOGS_PREFIX}{INDEX_DIR}/{}{split_id}{INDEX_SUFFIX}",
        &log_partition_prefix(date, hour)[LOGS_PREFIX.len()..]
    )
}

/// `logs/` or `events/`: the root of a table (`logs` true for `logs`).
pub fn table_prefix(logs: bool) -> &'static str {
    if logs { LOGS_PREFIX } else { EVENTS_PREFIX }
}

/// `<table>/_delta_log/<version:020>.json`: Delta commit `version`.
pub fn delta_commit_key(logs: bool, version: u64) -> String {
    format!("{}{DELTA_LOG_DIR}/{version:020}.json", table_prefix(logs))
}

/// `<table>/_delta_log/`: the folder of a table's Delta log.
pub fn delta_log_prefix(logs: bool) -> String {
    format!("{}{DELTA_LOG_DIR}/", table_prefix(logs))
}

/// `<table>/_sluice/state/`: the folder of Sluice's state caches.
pub fn state_cache_prefix(logs: bool) -> String {
    format!("{}{SLUICE_DIR}/state/", table_prefix(logs))
}

/// `<table>/_sluice/state/<version:020>.json`: Sluice's state of the
/// table as of `version`, a cache of replaying its Delta log.
pub fn state_cache_key(logs: bool, version: u64) -> String {
    format!("{}{version:020}.json", state_cache_prefix(logs))
}

/// Generation of the tables' schemas: bumped when this build adds columns
/// a table created by an earlier build lacks (1: `level`, `message`,
/// `trace_id`, `span_id`, `fields` in `logs`).
pub const SCHEMA_GENERATION: u32 = 1;

/// `<table>/_sluice/schema-<generation>`: present once the table's Delta
/// schema is that generation's (written after the `metaData` commit that
/// made it so).
pub fn schema_marker_key(logs: bool, generation: u32) -> String {
    format!("{}{SLUICE_DIR}/schema-{generation}", table_prefix(logs))
}

/// The version a `<version:020>.json` key (commit or state cache) stands
/// for; `None` for any other name.
pub fn parse_version_key(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A data file's key as the Delta `add` path (relative to its table root);
/// `None` when `key` is not under `table`'s root.
pub fn delta_path(logs: bool, key: &str) -> Option<&str> {
    key.strip_prefix(table_prefix(logs))
}

/// The archive key of a Delta `add`/`remove` path of `table` (the inverse
/// of [`delta_path`]).
pub fn key_of_delta_path(logs: bool, path: &str) -> String {
    format!("{}{path}", table_prefix(logs))
}

/// `events/date=YYYY-MM-DD/<split_id>.parquet`.
pub fn event_split_key(date: Date, split_id: &str) -> String {
    format!("{}{split_id}{PARQUET_SUFFIX}", event_partition_prefix(date))
}

/// The index key beside a log split's Parquet key, `None` if `parquet_key`
/// is not a log split's Parquet key.
pub fn index_key_for(parquet_key: &str) -> Option<String> {
    let key = parse_log_split_key(parquet_key).ok()?;
    parquet_key
        .ends_with(PARQUET_SUFFIX)
        .then(|| key.index_key())
}

/// Parses a log split's Parquet or index key back into its parts.
pub fn parse_log_split_key(key: &str) -> Result<LogSplitKey, KeyError> {
    let rest = key
        .strip_prefix(LOGS_PREFIX)
        .ok_or_else(|| KeyError::new(key, "does not start with logs/"))?;
    let (rest, index) = match rest
        .strip_prefix(INDEX_DIR)
        .and_then(|r| r.strip_prefix('/'))
    {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (date, rest) = partition(key, rest, PARTITION_DATE)?;
    let date = Date::parse(date).map_err(|e| KeyError::new(key, e.problem))?;
    let (hour, file) = partition(key, rest, PARTITION_HOUR)?;
    if hour.len() != 2 || !hour.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyError::new(key, "hour is not two digits"));
    }
    let hour: u8 = hour.parse().map_err(|_| KeyError::new(key, "bad hour"))?;
    if hour > 23 {
        return Err(KeyError::new(key, "hour out of range"));
    }
    let split_id = if index {
        file.strip_suffix(INDEX_SUFFIX)
            .ok_or_else(|| KeyError::new(key, "a file under _index/ is not .index"))?
    } else {
        file.strip_suffix(PARQUET_SUFFIX)
            .ok_or_else(|| KeyError::new(key, "file is not .parquet"))?
    };
    check_split_id(key, split_id)?;
    Ok(LogSplitKey {
        date,
        hour,
        split_id: split_id.to_string(),
    })
}

/// Parses an event split's key back into its parts.
pub fn parse_event_split_key(key: &str) -> Result<EventSplitKey, KeyError> {
    let rest = key
        .strip_prefix(EVENTS_PREFIX)
        .ok_or_else(|| KeyError::new(key, "does not start with events/"))?;
    let (date, file) = partition(key, rest, PARTITION_DATE)?;
    let date = Date::parse(date).map_err(|e| KeyError::new(key, e.problem))?;
    let split_id = file
        .strip_suffix(PARQUET_SUFFIX)
        .ok_or_else(|| KeyError::new(key, "file is not .parquet"))?;
    check_split_id(key, split_id)?;
    Ok(EventSplitKey {
        date,
        split_id: split_id.to_string(),
    })
}

/// Splits `name=value/rest` off `text`.
fn partition<'a>(key: &str, text: &'a str, name: &str) -> Result<(&'a str, &'a str), KeyError> {
    let (segment, rest) = text
        .split_once('/')
        .ok_or_else(|| KeyError::new(key, "missing a partition directory"))?;
    let value = segment
        .strip_prefix(name)
        .and_then(|s| s.strip_prefix('='))
        .ok_or_else(|| KeyError::new(key, "partition directories out of order"))?;
    Ok((value, rest))
}

fn check_split_id(key: &str, id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyError::new(
            key,
            "split id must be 1 to 128 of [A-Za-z0-9_-]",
        ))
    }
}

/// A new split id created at `now_unix_nanos`, with 64 random bits.
pub fn split_id_new(now_unix_nanos: i64) -> String {
    split_id_with(now_unix_nanos, crate::random_u64())
}

/// The split id of `now_unix_nanos` and `random`: 16 hex digits of the
/// time (negative times as 0), `-`, 16 hex digits of `random`.
pub fn split_id_with(now_unix_nanos: i64, random: u64) -> String {
    format!("{:016x}-{random:016x}", now_unix_nanos.max(0))
}

/// The parts of a split id made by [`split_id_new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitIdParts {
    /// When the split was created, Unix nanoseconds (the first 16 hex digits).
    pub created_unix_nanos: i64,
    /// The 64 random bits after the `-`.
    pub random: u64,
}

/// Parses a split id made by [`split_id_new`] back into its parts.
pub fn parse_split_id(id: &str) -> Result<SplitIdParts, KeyError> {
    let hex16 = |s: &str| -> Option<u64> {
        (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    let (time, random) = id
        .split_once('-')
        .ok_or_else(|| KeyError::new(id, "split id is not <16 hex>-<16 hex>"))?;
    let (Some(time), Some(random)) = (hex16(time), hex16(random)) else {
        return Err(KeyError::new(id, "split id is not <16 hex>-<16 hex>"));
    };
    let created_unix_nanos =
        i64::try_from(time).map_err(|_| KeyError::new(id, "split id time out of range"))?;
    Ok(SplitIdParts {
        created_unix_nanos,
        random,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schemas_have_the_documented_columns() {
        let logs: Vec<String> = logs_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(logs.len(), 27);
        assert_eq!(logs[..2], [COL_TS, COL_TS_NANOS]);
        // The parsed columns come last, nullable (Delta adds only those).
        assert_eq!(
            logs[21..],
            [
                COL_LABELS,
                COL_LEVEL,
                COL_MESSAGE,
                COL_TRACE_ID,
                COL_SPAN_ID,
                COL_FIELDS
            ]
        );
        for name in &logs[22..] {
            assert!(logs_schema().field_with_name(name).unwrap().is_nullable());
        }
        let events = events_schema();
        assert_eq!(events.fields().len(), 16);
        assert!(events.field_with_name(COL_INSTANCE).unwrap().is_nullable());
        for schema in [logs_schema(), events_schema()] {
            assert!(schema.field_with_name(PARTITION_DATE).is_err());
            assert!(schema.field_with_name(PARTITION_HOUR).is_err());
            assert_eq!(schema.metadata()[FORMAT_VERSION_KEY], FORMAT_VERSION);
            // Delta has neither unsigned integers nor nanosecond timestamps.
            for field in schema.fields() {
                assert!(!field.data_type().is_unsigned_integer(), "{field}");
                if let DataType::Timestamp(unit, _) = field.data_type() {
                    assert_eq!(*unit, TimeUnit::Microsecond);
                }
            }
        }
        let table = table_schema(true);
        assert_eq!(table.fields().len(), 29);
        assert_eq!(
            table.field_with_name(PARTITION_HOUR).unwrap().data_type(),
            &DataType::Int32
        );
        assert_eq!(table_schema(false).fields().len(), 17);
    }

    #[test]
    fn job_segments() {
        assert_eq!(split_job("www/prod/api"), ("www", "prod", "api"));
        assert_eq!(split_job("www/prod/api/v2"), ("www", "prod", "api/v2"));
        assert_eq!(split_job("www"), ("www", "", ""));
        assert_eq!(split_job(""), ("", "", ""));
    }

    #[test]
    fn kind_and_stream_names() {
        assert_eq!(event_kind_name(EventKind::TaskState as i32), "task_state");
        assert_eq!(event_kind_name(EventKind::QuotaKill as i32), "quota_kill");
        assert_eq!(event_kind_name(0), "unspecified");
        assert_eq!(event_kind_name(999), "unknown_999");
        for kind in -2..40 {
            assert_eq!(event_kind_from_name(&event_kind_name(kind)), Some(kind));
        }
        assert_eq!(event_kind_from_name("TASK_STATE"), None);
        assert_eq!(event_kind_from_name("unknown_1"), None);
        assert_eq!(event_kind_from_name("nope"), None);
        for stream in 0..3 {
            assert_eq!(stream_from_name(stream_name(stream)), stream);
        }
    }

    #[test]
    fn keys_look_as_documented() {
        let date = Date::parse("2026-11-21").unwrap();
        let id = split_id_with(0x0187_a3f0_c2d4_e5f6, 0x9c1e_2a7b_3d4f_5a6b);
        assert_eq!(id, "0187a3f0c2d4e5f6-9c1e2a7b3d4f5a6b");
        assert_eq!(
            log_split_key(date, 7, &id),
            format!("logs/date=2026-11-21/hour=07/{id}.parquet")
        );
        assert_eq!(
            log_index_key(date, 7, &id),
            format!("logs/_index/date=2026-11-21/hour=07/{id}.index")
        );
        assert_eq!(
            delta_commit_key(true, 7),
            "logs/_delta_log/00000000000000000007.json"
        );
        assert_eq!(
            state_cache_key(false, 100),
            "events/_sluice/state/00000000000000000100.json"
        );
        assert_eq!(parse_version_key(&delta_commit_key(false, 42)), Some(42));
        assert_eq!(
            parse_version_key("logs/_delta_log/00000000000000000100.checkpoint.parquet"),
            None
        );
        let key = log_split_key(date, 7, &id);
        assert_eq!(delta_path(true, &key), Some(&key["logs/".len()..]));
        assert_eq!(
            key_of_delta_path(true, delta_path(true, &key).unwrap()),
            key
        );
        assert_eq!(delta_path(false, &key), None);
        assert_eq!(
            event_split_key(date, &id),
            format!("events/date=2026-11-21/{id}.parquet")
        );
        assert_eq!(
            index_key_for(&log_split_key(date, 7, &id)),
            Some(log_index_key(date, 7, &id))
        );
        assert_eq!(index_key_for(&event_split_key(date, &id)), None);
    }

    #[test]
    fn bad_keys_name_the_problem() {
        let cases = [
            (
                "events/date=2026-11-21/a.parquet",
                "does not start with logs/",
            ),
            (
                "logs/hour=07/date=2026-11-21/a.parquet",
                "partition directories out of order",
            ),
            ("logs/date=2026-02-30/hour=07/a.parquet", "no such date"),
            (
                "logs/date=2026-11-21/hour=24/a.parquet",
                "hour out of range",
            ),
            (
                "logs/date=2026-11-21/hour=7/a.parquet",
                "hour is not two digits",
            ),
            (
                "logs/date=2026-11-21/hour=07/a.json",
                "file is not .parquet",
            ),
            (
                "logs/date=2026-11-21/hour=07/a.index",
                "file is not .parquet",
            ),
            (
                "logs/_index/date=2026-11-21/hour=07/a.parquet",
                "a file under _index/ is not .index",
            ),
            (
                "logs/date=2026-11-21/hour=07/.parquet",
                "split id must be 1 to 128 of [A-Za-z0-9_-]",
            ),
            (
                "logs/date=2026-11-21/hour=07/x/y.parquet",
                "split id must be 1 to 128 of [A-Za-z0-9_-]",
            ),
            ("logs/date=2026-11-21", "missing a partition directory"),
        ];
        for (key, problem) in cases {
            assert_eq!(
                parse_log_split_key(key).unwrap_err().problem,
                problem,
                "{key}"
            );
        }
        assert!(parse_event_split_key("events/date=2026-11-21/hour=07/a.parquet").is_err());
        assert!(parse_split_id("0187a3f0c2d4e5f6-9C1E2A7B3D4F5A6B").is_err());
        assert!(parse_split_id("8000000000000000-0000000000000000").is_err());
    }

    #[test]
    fn split_ids_sort_by_time_and_differ() {
        let a = split_id_new(1_000);
        let b = split_id_new(1_000);
        let c = split_id_new(2_000);
        assert_ne!(a, b);
        assert!(a < c && b < c);
        assert_eq!(parse_split_id(&a).unwrap().created_unix_nanos, 1_000);
        assert_eq!(
            parse_split_id(&split_id_new(-5))
                .unwrap()
                .created_unix_nanos,
            0
        );
    }

    #[test]
    fn dates_and_hours_of_instants() {
        let ts = crate::time::parse_rfc3339_nanos("2026-11-21T07:59:59.999999999Z").unwrap();
        assert_eq!(Date::from_unix_nanos(ts).to_string(), "2026-11-21");
        assert_eq!(hour_of(ts), 7);
        assert_eq!(hour_of(ts + 1), 8);
        assert_eq!(hour_of(-1), 23);
        assert_eq!(Date::from_unix_nanos(-1).to_string(), "1969-12-31");
        let key = LogSplitKey::for_ts(ts, "x");
        assert_eq!(key.parquet_key(), "logs/date=2026-11-21/hour=07/x.parquet");
        assert_eq!(
            Date::parse("2026-11-21").unwrap().start_unix_nanos(),
            Some(ts - ts.rem_euclid(86_400_000_000_000))
        );
    }

    proptest! {
        #[test]
        fn log_keys_round_trip(ts in any::<i64>(), random in any::<u64>(), created in 0i64..i64::MAX) {
            let id = split_id_with(created, random);
            let key = LogSplitKey::for_ts(ts, &id);
            prop_assert_eq!(parse_log_split_key(&key.parquet_key()).unwrap(), key.clone());
            prop_assert_eq!(parse_log_split_key(&key.index_key()).unwrap(), key.clone());
            let parts = parse_split_id(&id).unwrap();
            prop_assert_eq!(parts, SplitIdParts { created_unix_nanos: created, random });
        }

        #[test]
        fn event_keys_round_trip(ts in any::<i64>(), id in "[A-Za-z0-9_-]{1,128}") {
            let key = EventSplitKey { date: Date::from_unix_nanos(ts), split_id: id };
            prop_assert_eq!(parse_event_split_key(&key.parquet_key()).unwrap(), key);
        }

        #[test]
        fn date_is_the_rendered_date(ts in any::<i64>()) {
            let text = crate::time::rfc3339_nanos(ts);
            prop_assert_eq!(Date::from_unix_nanos(ts).to_string(), &text[..10]);
        }

        #[test]
        fn parsing_never_panics(key in "\\PC{0,80}") {
            let _ = parse_log_split_key(&key);
            let _ = parse_event_split_key(&key);
            let _ = parse_split_id(&key);
            let _ = Date::parse(&key);
        }
    }
}
