//! A catalog commit as a Delta Lake commit, and back.
//!
//! Each catalog commit is one Delta commit of its table, the JSON lines of
//! `<table>/_delta_log/<version:020>.json`:
//!
//! - `commitInfo`: when, which operation (`WRITE`, `OPTIMIZE`, `DELETE`),
//!   and Sluice's `sluiceCommitId` (tells a writer whether an ambiguous put
//!   of its own landed) and `sluiceWriter`;
//! - `add` per split made live: its path relative to the table root,
//!   `partitionValues` (`date`, and `hour` for logs), size, `stats`
//!   (`numRecords` and the min/max of `ts` and `ts_nanos`, which other
//!   engines skip files by), `dataChange` (false for a compaction's merged
//!   split), and the tags Sluice reads back: `sluice.index` (the index, under
//!   `_index/`), `sluice.index_bytes`, `sluice.raw_bytes`, `sluice.min_ts` and
//!   `sluice.max_ts` (Unix nanoseconds), `sluice.jobs`, `sluice.roles` and
//!   `sluice.levels` (JSON arrays; levels of a log split's rows), `sluice.lines` and `sluice.events` (what the split holds,
//!   see [`Held`]);
//! - `remove` per split removed, with `dataChange` false for a compaction
//!   and true for retention;
//! - `txn` per bus partition consumed: app id `<group>/<topic>/<partition>`,
//!   version = the next offset to read, so a table's consumed positions are
//!   committed with the data, atomically, as Delta streaming writers do.
//!
//! Version 0 creates the table: `protocol` (reader 1, writer 2: no table
//! features, so every engine reads it) and `metaData` (schema with the
//! partition columns, `delta.checkpointInterval`).
//!
//! Decoding reads any Delta commit: actions it does not know are skipped,
//! and an `add` without Sluice's tags (a file another engine added) becomes a
//! split without an index that pruning never rules out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deltalake_core::kernel::{Add, CommitInfo, Remove, Transaction};
use object_store::path::Path;
use serde_json::{Value, json};
use sluice_schema::archive::{self as schema, Date};

use super::commit::{BusCheckpoint, Commit, SplitEntry, SplitKind, partition_key};
use super::error::{Error, Result};
use super::held::{Held, IdSet};

/// Delta's reader and writer protocol versions of Sluice's tables.
pub const MIN_READER_VERSION: i32 = 1;
/// See [`MIN_READER_VERSION`].
pub const MIN_WRITER_VERSION: i32 = 2;

const TAG_INDEX: &str = "sluice.index";
const TAG_INDEX_BYTES: &str = "sluice.index_bytes";
const TAG_RAW_BYTES: &str = "sluice.raw_bytes";
const TAG_MIN_TS: &str = "sluice.min_ts";
const TAG_MAX_TS: &str = "sluice.max_ts";
const TAG_JOBS: &str = "sluice.jobs";
const TAG_ROLES: &str = "sluice.roles";
const TAG_LEVELS: &str = "sluice.levels";
const TAG_LINES: &str = "sluice.lines";
const TAG_EVENTS: &str = "sluice.events";
const INFO_COMMIT_ID: &str = "sluiceCommitId";
const INFO_WRITER: &str = "sluiceWriter";
const INFO_FORMAT: &str = "sluiceFormat";

/// The table name of a split kind (`logs`, `events`).
pub fn table_name(kind: SplitKind) -> &'static str {
    match kind {
        SplitKind::Logs => "logs",
        SplitKind::Events => "events",
    }
}

fn is_logs(kind: SplitKind) -> bool {
    kind == SplitKind::Logs
}

/// The Delta type of an Arrow type of the archive's schema.
fn delta_type(data_type: &arrow_schema::DataType) -> Value {
    use arrow_schema::DataType::*;
    match data_type {
        Timestamp(..) => json!("timestamp"),
        Int64 => json!("long"),
        Int32 => json!("integer"),
        Date32 => json!("date"),
        Boolean => json!("boolean"),
        Binary => json!("binary"),
        Map(entries, _) => {
            let Struct(kv) = entries.data_type() else {
                unreachable!("the archive's maps have struct entries")
            };
            json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type()),
                "valueType": delta_type(kv[1].data_type()),
                "valueContainsNull": kv[1].is_nullable(),
            })
        }
        _ => json!("string"),
    }
}

/// The Delta schema (`schemaString`) of a table: the file's columns and the
/// partition columns.
pub fn schema_string(kind: SplitKind) -> String {
    let fields: Vec<Value> = schema::table_schema(is_logs(kind))
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": delta_type(f.data_type()),
                "nullable": f.is_nullable(),
                "metadata": {},
            })
        })
        .collect();
    json!({"type": "struct", "fields": fields}).to_string()
}

/// The JSON lines of version 0, which creates `kind`'s table.
pub fn create_table(kind: SplitKind, checkpoint_interval: u64, now_unix_ms: u64) -> Vec<u8> {
    let partitions: Vec<&str> = schema::partition_fields(is_logs(kind))
        .iter()
        .map(|f| match f.name().as_str() {
            schema::PARTITION_DATE => schema::PARTITION_DATE,
            _ => schema::PARTITION_HOUR,
        })
        .collect();
    let lines = [
        json!({"commitInfo": {
            "timestamp": now_unix_ms,
            "operation": "CREATE TABLE",
            "operationParameters": {"mode": "ErrorIfExists"},
            "engineInfo": engine_info(),
            INFO_FORMAT: schema::FORMAT_VERSION,
        }}),
        json!({"protocol": {
            "minReaderVersion": MIN_READER_VERSION,
            "minWriterVersion": MIN_WRITER_VERSION,
        }}),
        json!({"metaData": {
            "id": uuid_v4(),
            "name": table_name(kind),
            "description": format!("Sluice's {} table", table_name(kind)),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(kind),
            "partitionColumns": partitions,
            "configuration": {
                "delta.checkpointInterval": checkpoint_interval.to_string(),
                // Sluice reads every commit of its own (its state cache
                // covers the rest): keep them.
                "delta.logRetentionDuration": "interval 3650 days",
            },
            "createdTime": now_unix_ms,
        }}),
    ];
    json_lines(&lines)
}

/// Checks version 0 of a table: it must be a Sluice table of `kind` whose
/// protocol this build reads.
pub fn check_created(path: &Path, kind: SplitKind, bytes: &[u8]) -> Result<()> {
    let mut partitions = None;
    for line in lines(path, bytes)? {
        if let Some(p) = line.get("protocol") {
            check_protocol(path, p)?;
        }
        if let Some(m) = line.get("metaData") {
            partitions = Some(m["partitionColumns"].clone());
        }
    }
    let want = match kind {
        SplitKind::Logs => json!([schema::PARTITION_DATE, schema::PARTITION_HOUR]),
        SplitKind::Events => json!([schema::PARTITION_DATE]),
    };
    match partitions {
        Some(p) if p == want => Ok(()),
        Some(p) => Err(Error::corrupt(
            path,
            format!(
                "metaData.partitionColumns is {p}, not {want}: not Sluice's {} table",
                table_name(kind)
            ),
        )),
        None => Err(Error::corrupt(path, "version 0 has no metaData action")),
    }
}

/// The `metaData` of version 0 with this build's schema, when version 0's
/// is an earlier one (a table created before columns were added); `None`
/// when it is already this build's.
pub fn metadata_to_upgrade(path: &Path, kind: SplitKind, bytes: &[u8]) -> Result<Option<Value>> {
    let Some(mut metadata) = lines(path, bytes)?
        .into_iter()
        .find_map(|mut line| line.get_mut("metaData").map(Value::take))
    else {
        return Err(Error::corrupt(path, "version 0 has no metaData action"));
    };
    let current: Value = serde_json::from_str(&schema_string(kind)).expect("our schema is JSON");
    let theirs: Option<Value> = metadata["schemaString"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok());
    if theirs.as_ref() == Some(&current) {
        return Ok(None);
    }
    metadata["schemaString"] = Value::String(schema_string(kind));
    Ok(Some(metadata))
}

/// The JSON lines of a commit that changes the table's schema to
/// `metadata`'s (Delta's `ADD COLUMNS`: older files read the new columns
/// as null).
pub fn add_columns(metadata: &Value, commit_id: &str, now_unix_ms: u64) -> Vec<u8> {
    json_lines(&[
        json!({"commitInfo": {
            "timestamp": now_unix_ms,
            "operation": "ADD COLUMNS",
            "operationParameters": {},
            "engineInfo": engine_info(),
            INFO_COMMIT_ID: commit_id,
            INFO_FORMAT: schema::FORMAT_VERSION,
        }}),
        json!({"metaData": metadata}),
    ])
}

/// Refuses a `protocol` this build cannot read correctly: reader version
/// 2 (column mapping) or 3 (reader features such as deletion vectors) would
/// change which rows and columns a file means.
fn check_protocol(path: &Path, protocol: &Value) -> Result<()> {
    let reader = protocol["minReaderVersion"].as_i64().unwrap_or(i64::MAX);
    if reader > i64::from(MIN_READER_VERSION) {
        return Err(Error::UnsupportedFormat {
            key: path.to_string(),
            format: reader.clamp(0, i64::from(u32::MAX)) as u32,
            supported: MIN_READER_VERSION as u32,
        });
    }
    Ok(())
}

fn engine_info() -> String {
    format!("sluice/{}", env!("CARGO_PKG_VERSION"))
}

fn uuid_v4() -> String {
    let (a, b) = (sluice_schema::random_u64(), sluice_schema::random_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn json_lines(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        serde_json::to_writer(&mut out, v).expect("JSON values serialize");
        out.push(b'\n');
    }
    out
}

/// RFC 3339 with microseconds, how Delta stats spell a `timestamp`.
fn stats_time(unix_nanos: i64) -> String {
    let text = sluice_schema::time::rfc3339_nanos(unix_nanos);
    // `…T07:00:00.123456789Z` → `…T07:00:00.123456Z`.
    match text.split_once('.') {
        Some((seconds, fraction)) => format!("{seconds}.{:.6}Z", fraction.trim_end_matches('Z')),
        None => text,
    }
}

/// The `add` action of a split entry.
fn add_action(kind: SplitKind, entry: &SplitEntry, data_change: bool) -> Result<Add> {
    let logs = is_logs(kind);
    let path = schema::delta_path(logs, &entry.key).ok_or_else(|| {
        Error::InvalidDraft(format!(
            "split {} is not under the {} table",
            entry.key,
            table_name(kind)
        ))
    })?;
    let mut partition_values = HashMap::new();
    partition_values.insert(schema::PARTITION_DATE.to_string(), Some(entry.date.clone()));
    if logs {
        let hour = entry
            .hour
            .ok_or_else(|| Error::InvalidDraft(format!("log split {} has no hour", entry.key)))?;
        partition_values.insert(schema::PARTITION_HOUR.to_string(), Some(hour.to_string()));
    }
    let stats = json!({
        "numRecords": entry.rows,
        "minValues": {
            schema::COL_TS: stats_time(entry.min_ts_nanos),
            schema::COL_TS_NANOS: entry.min_ts_nanos,
        },
        "maxValues": {
            schema::COL_TS: stats_time(entry.max_ts_nanos),
            schema::COL_TS_NANOS: entry.max_ts_nanos,
        },
        "nullCount": {schema::COL_TS: 0, schema::COL_TS_NANOS: 0},
    });
    let mut tags: HashMap<String, Option<String>> = HashMap::new();
    let mut tag = |k: &str, v: String| {
        tags.insert(k.to_string(), Some(v));
    };
    if let Some(index) = &entry.index_key {
        let relative = schema::delta_path(logs, index)
            .ok_or_else(|| Error::InvalidDraft(format!("index {index} is not under the table")))?;
        tag(TAG_INDEX, relative.to_string());
        tag(TAG_INDEX_BYTES, entry.index_bytes.to_string());
    }
    tag(TAG_RAW_BYTES, entry.raw_bytes.to_string());
    tag(TAG_MIN_TS, entry.min_ts_nanos.to_string());
    tag(TAG_MAX_TS, entry.max_ts_nanos.to_string());
    tag(
        TAG_JOBS,
        serde_json::to_string(&entry.jobs).expect("strings"),
    );
    tag(
        TAG_ROLES,
        serde_json::to_string(&entry.roles).expect("strings"),
    );
    if let Some(levels) = &entry.levels {
        tag(TAG_LEVELS, serde_json::to_string(levels).expect("strings"));
    }
    if !entry.held.lines.is_empty() {
        tag(TAG_LINES, entry.held.lines_tag());
    }
    if !entry.held.events.is_empty() {
        tag(TAG_EVENTS, entry.held.events.tag());
    }
    Ok(Add {
        path: path.to_string(),
        partition_values,
        size: entry.data_bytes as i64,
        modification_time: entry.created_unix_ms as i64,
        data_change,
        stats: Some(stats.to_string()),
        tags: Some(tags),
        ..Default::default()
    })
}

/// The JSON lines of `commit` in `kind`'s table.
pub fn encode(kind: SplitKind, commit: &Commit, removed: &[SplitEntry]) -> Result<Vec<u8>> {
    let logs = is_logs(kind);
    let operation = match (commit.data_change, commit.added.is_empty()) {
        (false, _) => "OPTIMIZE",
        (true, true) if !commit.removed.is_empty() => "DELETE",
        _ => "WRITE",
    };
    let mut info = HashMap::new();
    info.insert(INFO_COMMIT_ID.to_string(), json!(commit.commit_id));
    info.insert(INFO_WRITER.to_string(), json!(commit.writer));
    info.insert(INFO_FORMAT.to_string(), json!(schema::FORMAT_VERSION));
    let commit_info = CommitInfo {
        timestamp: Some(commit.created_unix_ms as i64),
        operation: Some(operation.to_string()),
        operation_parameters: Some(HashMap::from([("mode".to_string(), json!("Append"))])),
        read_version: Some(commit.parent),
        is_blind_append: Some(commit.removed.is_empty()),
        engine_info: Some(engine_info()),
        info,
        ..Default::default()
    };
    let mut values = vec![json!({"commitInfo": commit_info})];
    for entry in &commit.added {
        values.push(json!({"add": add_action(kind, entry, commit.data_change)?}));
    }
    for key in &commit.removed {
        let entry = removed.iter().find(|e| &e.key == key);
        let path = schema::delta_path(logs, key).ok_or_else(|| {
            Error::InvalidDraft(format!(
                "split {key} is not under the {} table",
                table_name(kind)
            ))
        })?;
        let remove = Remove {
            path: path.to_string(),
            data_change: commit.data_change,
            deletion_timestamp: Some(commit.created_unix_ms as i64),
            extended_file_metadata: Some(entry.is_some()),
            partition_values: entry.map(|e| {
                let mut values = HashMap::new();
                values.insert(schema::PARTITION_DATE.to_string(), Some(e.date.clone()));
                if let Some(hour) = e.hour {
                    values.insert(schema::PARTITION_HOUR.to_string(), Some(hour.to_string()));
                }
                values
            }),
            size: entry.map(|e| e.data_bytes as i64),
            ..Default::default()
        };
        values.push(json!({"remove": remove}));
    }
    if let Some(bus) = &commit.bus {
        for (partition, &offset) in &bus.positions {
            let txn = Transaction {
                app_id: format!("{}/{partition}", bus.group),
                version: offset as i64,
                last_updated: Some(commit.created_unix_ms as i64),
            };
            values.push(json!({"txn": txn}));
        }
    }
    Ok(json_lines(&values))
}

/// The non-empty JSON lines of a Delta log object.
fn lines(path: &Path, bytes: &[u8]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::corrupt(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::corrupt(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Deserializes one action; the error names the line and field.
fn action<T: serde::de::DeserializeOwned>(path: &Path, line: usize, value: &Value) -> Result<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| Error::corrupt(path, format!("line {line}: {}: {}", e.path(), e.inner())))
}

/// Catalog commit `version` of `kind`'s table from its Delta JSON lines.
pub fn decode(path: &Path, kind: SplitKind, version: u64, bytes: &[u8]) -> Result<Commit> {
    let logs = is_logs(kind);
    let mut commit = Commit {
        format: super::FORMAT,
        version,
        parent: version.saturating_sub(1),
        commit_id: String::new(),
        writer: String::new(),
        created_unix_ms: 0,
        added: Vec::new(),
        removed: Vec::new(),
        bus: None,
        archived: BTreeMap::new(),
        event_ids: Vec::new(),
        data_change: false,
    };
    let mut event_ids = IdSet::default();
    let mut positions: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (i, value) in lines(path, bytes)?.into_iter().enumerate() {
        let line = i + 1;
        let Some((name, body)) = value.as_object().and_then(|o| o.iter().next()) else {
            return Err(Error::corrupt(
                path,
                format!("line {line} is not an action"),
            ));
        };
        match name.as_str() {
            "commitInfo" => {
                let info: CommitInfo = action(path, line, body)?;
                commit.created_unix_ms = info.timestamp.unwrap_or(0).max(0) as u64;
                let text = |k: &str| info.info.get(k).and_then(Value::as_str).map(str::to_string);
                commit.commit_id = text(INFO_COMMIT_ID).unwrap_or_default();
                commit.writer = text(INFO_WRITER)
                    .or(info.engine_info.clone())
                    .unwrap_or_default();
            }
            "add" => {
                let add: Add = action(path, line, body)?;
                let (entry, data_change) = split_entry_of(path, line, kind, &add)?;
                if data_change {
                    commit.data_change = true;
                    for (source, ranges) in &entry.held.lines {
                        commit.archived.entry(*source).or_default().extend(ranges);
                    }
                    event_ids.extend(&entry.held.events);
                }
                commit.added.push(entry);
            }
            "remove" => {
                let remove: Remove = action(path, line, body)?;
                commit.data_change |= remove.data_change;
                commit
                    .removed
                    .push(schema::key_of_delta_path(logs, &remove.path));
            }
            "txn" => {
                let txn: Transaction = action(path, line, body)?;
                // `<group>/<topic>/<partition>`; other applications' ids are
                // not Sluice's to read.
                if let Some((group, partition)) = txn.app_id.split_once('/')
                    && partition
                        .rsplit_once('/')
                        .is_some_and(|(_, p)| p.parse::<u32>().is_ok())
                    && txn.version >= 0
                {
                    positions
                        .entry(group.to_string())
                        .or_default()
                        .insert(partition.to_string(), txn.version as u64);
                }
            }
            "protocol" => check_protocol(path, body)?,
            _ => {} // metaData, domainMetadata, cdc, …
        }
    }
    if commit.removed.is_empty() && commit.added.is_empty() {
        commit.data_change = true;
    }
    commit.event_ids = event_ids.ids().collect();
    if let Some((group, positions)) = positions.into_iter().next() {
        commit.bus = Some(BusCheckpoint { group, positions });
    }
    Ok(commit)
}

/// The split entry of an `add`, and whether it changes data.
fn split_entry_of(
    path: &Path,
    line: usize,
    kind: SplitKind,
    add: &Add,
) -> Result<(SplitEntry, bool)> {
    let logs = is_logs(kind);
    let bad = |what: String| Error::corrupt(path, format!("line {line}: add {}: {what}", add.path));
    let partition = |name: &str| add.partition_values.get(name).cloned().flatten();
    let date = partition(schema::PARTITION_DATE).ok_or_else(|| bad("no date partition".into()))?;
    Date::parse(&date).map_err(|e| bad(e.to_string()))?;
    let hour = match partition(schema::PARTITION_HOUR) {
        Some(h) => Some(
            h.parse::<u8>()
                .ok()
                .filter(|h| *h < 24)
                .ok_or_else(|| bad(format!("hour partition {h:?}")))?,
        ),
        None if logs => return Err(bad("no hour partition".into())),
        None => None,
    };
    let tags: HashMap<String, String> = add
        .tags
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    let number = |k: &str| -> Result<Option<i64>> {
        tags.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(format!("tag {k} is {v:?}")))
            })
            .transpose()
    };
    let list = |k: &str| -> Result<Vec<String>> {
        tags.get(k)
            .map(|v| serde_json::from_str(v).map_err(|e| bad(format!("tag {k}: {e}"))))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let rows = add
        .stats
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|s| s["numRecords"].as_u64())
        .unwrap_or(0);
    let mut held = Held::default();
    if let Some(text) = tags.get(TAG_LINES) {
        held.lines = Held::parse_lines_tag(text).map_err(bad)?;
    }
    if let Some(text) = tags.get(TAG_EVENTS) {
        held.events = IdSet::parse_tag(text).map_err(bad)?;
    }
    let entry = SplitEntry {
        key: schema::key_of_delta_path(logs, &add.path),
        index_key: tags
            .get(TAG_INDEX)
            .map(|p| schema::key_of_delta_path(logs, p)),
        kind,
        date,
        hour,
        rows,
        raw_bytes: number(TAG_RAW_BYTES)?.unwrap_or(0).max(0) as u64,
        data_bytes: add.size.max(0) as u64,
        index_bytes: number(TAG_INDEX_BYTES)?.unwrap_or(0).max(0) as u64,
        // A file without Sluice's tags: no bound, never pruned by time.
        min_ts_nanos: number(TAG_MIN_TS)?.unwrap_or(i64::MIN),
        max_ts_nanos: number(TAG_MAX_TS)?.unwrap_or(i64::MAX),
        jobs: list(TAG_JOBS)?,
        roles: list(TAG_ROLES)?,
        created_unix_ms: add.modification_time.max(0) as u64,
        held,
        levels: match tags.get(TAG_LEVELS) {
            Some(_) => Some(list(TAG_LEVELS)?),
            None => None,
        },
    };
    Ok((entry, add.data_change))
}

/// The txn app id of a bus partition of `group`.
pub fn app_id(group: &str, topic: &str, partition: u32) -> String {
    format!("{group}/{}", partition_key(topic, partition))
}

/// The distinct roles of `jobs` (`role/env/name`).
pub fn roles_of<'a>(jobs: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    jobs.into_iter()
        .map(|j| schema::split_job(j).0.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
