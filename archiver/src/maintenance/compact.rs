//! Compaction: which small splits to merge ([`plan_compaction`], pure), and
//! the merge itself: the inputs' rows read back from their Parquet files,
//! written as one split (sorted again, indexed again) under a new id.
//!
//! A merge never crosses a partition: inputs share kind, date and hour, so
//! the merged split lands in their directory and keeps the archive's
//! layout. The catalog commit that swaps inputs for the output is
//! [`Maintenance::compact`](super::Maintenance::compact)'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_schema::archive::{self, Date};

use super::config::CompactionConfig;
use super::io;
use crate::{Error, Result};
use sluice_archive::catalog::{Catalog, SplitEntry, SplitKind};
use sluice_archive::split::rows::{event_rows_from_batch, log_rows_from_batch};
use sluice_archive::split::{self, EventRow, LogRow, RowSource, SplitOptions};
use sluice_archive::store::Store;

const HOUR_NANOS: i64 = 3_600_000_000_000;

/// Splits of one partition to merge into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionJob {
    /// Table of the inputs, and so of the merged split.
    pub kind: SplitKind,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The hour of log splits; `None` for event splits (one per day).
    pub hour: Option<u8>,
    /// At least two live splits of the partition, oldest rows first.
    pub inputs: Vec<SplitEntry>,
}

impl CompactionJob {
    /// Rows of the inputs together; the merged split must hold exactly this many.
    pub fn rows(&self) -> u64 {
        self.inputs.iter().map(|s| s.rows).sum()
    }

    /// Line text (or event message) bytes of the inputs together.
    pub fn raw_bytes(&self) -> u64 {
        self.inputs.iter().map(|s| s.raw_bytes).sum()
    }

    /// Data and index bytes of the inputs.
    pub fn stored_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .map(|s| s.data_bytes + s.index_bytes)
            .sum()
    }

    /// `logs 2026-11-21 07h` or `events 2026-11-21`.
    pub fn partition(&self) -> String {
        match (self.kind, self.hour) {
            (SplitKind::Logs, Some(hour)) => format!("logs {} {hour:02}h", self.date),
            (SplitKind::Logs, None) => format!("logs {}", self.date),
            (SplitKind::Events, _) => format!("events {}", self.date),
        }
    }
}

/// The smallest size class of splits in a partition still being written:
/// line text under 1 MiB (see [`size_class`]).
pub const SIZE_CLASS_BASE: u64 = 1 << 20;

/// The merges due among `splits` (the live splits) at `now_unix_ms`.
///
/// A split is a candidate while it is small (line bytes under
/// `target_raw_bytes`, rows under `max_rows`). Per partition (kind, date,
/// hour), candidates are taken oldest first into groups that stay within
/// both limits; each group of two or more is a job. Which candidates:
///
/// - in a partition still being written (less than `settle_secs` after
///   its end), those of one [`size_class`] once `merge_factor` of that
///   class wait: the archiver adds a split every few seconds, and merging
///   like with like rewrites a row about once per class instead of
///   rewriting the hour's growing split on every pass;
/// - in a settled partition, all of them, except a split more than
///   `merge_factor` times larger than the others together (repeatedly the
///   largest): late lines merge among themselves until they are worth
///   rewriting it.
///
/// Jobs come oldest partition first.
pub fn plan_compaction<'a>(
    splits: impl IntoIterator<Item = &'a SplitEntry>,
    config: &CompactionConfig,
    now_unix_ms: u64,
) -> Vec<CompactionJob> {
    type Partition<'a> = (&'a str, SplitKind, Option<u8>, Vec<&'a str>);
    let mut partitions: BTreeMap<Partition<'a>, Vec<&SplitEntry>> = BTreeMap::new();
    for split in splits {
        // The separate roles it holds, and whether it holds others: only
        // splits alike in this merge, so a role with its own retention
        // stays in splits retention can drop.
        let mut class: Vec<&str> = split
            .roles
            .iter()
            .filter(|r| config.separate_roles.contains(*r))
            .map(String::as_str)
            .collect();
        if !class.is_empty() && class.len() < split.roles.len() {
            // Separate roles mixed with others (written before they were
            // separate): alike only with splits mixed the same way.
            class.push("");
        }
        class.sort_unstable();
        class.dedup();
        let small = split.raw_bytes < config.target_raw_bytes && split.rows < config.max_rows;
        // A log split without an hour is not one the archiver writes.
        let placed = split.kind == SplitKind::Events || split.hour.is_some();
        if small && placed {
            partitions
                .entry((split.date.as_str(), split.kind, split.hour, class))
                .or_default()
                .push(split);
        }
    }
    let factor = config.merge_factor as u64;
    let mut jobs = Vec::new();
    for ((date, kind, hour, _), mut candidates) in partitions {
        if candidates.len() < 2 {
            continue;
        }
        let Some(end_ms) = partition_end_ms(kind, date, hour) else {
            tracing::warn!(
                date,
                ?hour,
                "compaction: a split has an unreadable date; skipped"
            );
            continue;
        };
        candidates.sort_by(|a, b| (a.min_ts_nanos, &a.key).cmp(&(b.min_ts_nanos, &b.key)));
        let settled_ms = end_ms.saturating_add(config.settle_secs as i64 * 1000);
        let groups = if settled_ms <= now_unix_ms as i64 {
            vec![without_outsized(candidates, factor)]
        } else {
            let mut classes: BTreeMap<u32, Vec<&SplitEntry>> = BTreeMap::new();
            for split in candidates {
                classes
                    .entry(size_class(split.raw_bytes, factor))
                    .or_default()
                    .push(split);
            }
            classes
                .into_values()
                .filter(|class| class.len() >= config.merge_factor)
                .collect()
        };
        for group in groups {
            for inputs in pack(&group, config) {
                jobs.push(CompactionJob {
                    kind,
                    date: date.to_string(),
                    hour,
                    inputs,
                });
            }
        }
    }
    jobs
}

/// The size class of a split of `raw_bytes`: 0 under [`SIZE_CLASS_BASE`],
/// then one more per `factor` times more.
pub fn size_class(raw_bytes: u64, factor: u64) -> u32 {
    let mut class = 0;
    let mut bound = SIZE_CLASS_BASE;
    while raw_bytes >= bound {
        class += 1;
        bound = bound.saturating_mul(factor.max(2));
    }
    class
}

/// `candidates` less, repeatedly, the largest while it is more than
/// `factor` times the others together.
fn without_outsized(mut candidates: Vec<&SplitEntry>, factor: u64) -> Vec<&SplitEntry> {
    while candidates.len() >= 2 {
        let total: u64 = candidates.iter().map(|s| s.raw_bytes).sum();
        let (i, largest) = candidates
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.raw_bytes)
            .expect("two candidates");
        if largest.raw_bytes <= factor.saturating_mul(total - largest.raw_bytes) {
            break;
        }
        candidates.remove(i);
    }
    candidates
}

/// `splits` (oldest first) in consecutive groups within the limits; the
/// groups of two or more.
fn pack(splits: &[&SplitEntry], config: &CompactionConfig) -> Vec<Vec<SplitEntry>> {
    let mut out = Vec::new();
    let mut group: Vec<SplitEntry> = Vec::new();
    let (mut raw, mut rows) = (0u64, 0u64);
    for split in splits {
        let fits = raw + split.raw_bytes <= config.target_raw_bytes
            && rows + split.rows <= config.max_rows;
        if !fits {
            if group.len() >= 2 {
                out.push(std::mem::take(&mut group));
            }
            group.clear();
            (raw, rows) = (0, 0);
        }
        raw += split.raw_bytes;
        rows += split.rows;
        group.push((*split).clone());
    }
    if group.len() >= 2 {
        out.push(group);
    }
    out
}

/// Unix milliseconds at which a partition ends: the end of its hour (logs)
/// or day (events, and logs without an hour).
pub fn partition_end_ms(kind: SplitKind, date: &str, hour: Option<u8>) -> Option<i64> {
    let start = Date::parse(date).ok()?.start_unix_nanos()?;
    let end = match (kind, hour) {
        (SplitKind::Logs, Some(hour)) => start + (i64::from(hour) + 1) * HOUR_NANOS,
        _ => start + 24 * HOUR_NANOS,
    };
    Some(end / 1_000_000)
}

/// A merged split, written and not yet uploaded.
pub(crate) struct Merged {
    pub(crate) entry: SplitEntry,
    pub(crate) parquet: Bytes,
    pub(crate) index: Option<Bytes>,
}

impl Merged {
    /// Its objects: `(key, bytes)`.
    pub(crate) fn objects(&self) -> Vec<(&str, Bytes)> {
        let mut out = vec![(self.entry.key.as_str(), self.parquet.clone())];
        if let (Some(key), Some(index)) = (&self.entry.index_key, &self.index) {
            out.push((key.as_str(), index.clone()));
        }
        out
    }
}

enum Rows {
    Logs(Vec<LogRow>),
    Events(Vec<EventRow>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Logs(rows) => rows.len(),
            Rows::Events(rows) => rows.len(),
        }
    }
}

/// Reads the job's inputs and writes them as one split (not uploaded).
/// Every input must hold exactly the rows its catalog entry says.
pub(crate) async fn merge(
    store: &Store,
    catalog: &Catalog,
    job: &CompactionJob,
    options: &SplitOptions,
) -> Result<Merged> {
    let date = Date::parse(&job.date)
        .map_err(|e| Error::corrupt(format!("compaction of {}: {e}", job.partition())))?;
    let mut rows = match job.kind {
        SplitKind::Logs => Rows::Logs(Vec::with_capacity(job.rows() as usize)),
        SplitKind::Events => Rows::Events(Vec::with_capacity(job.rows() as usize)),
    };
    let mut sources = Sources::default();
    for input in &job.inputs {
        let path = catalog.object_path(&input.key);
        let bytes = io::get(store, &path).await?;
        let expected = input.rows;
        let key = input.key.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            let before = rows.len();
            decode(bytes, &mut rows, &mut sources)
                .map_err(|e| Error::corrupt(format!("split {key}: {e}")))?;
            let read = (rows.len() - before) as u64;
            if read != expected {
                return Err(Error::corrupt(format!(
                    "split {key}: the catalog says {expected} rows, its file holds {read}"
                )));
            }
            Ok((rows, sources))
        })
        .await
        .map_err(|e| Error::corrupt(format!("split reader panicked: {e}")))??;
        (rows, sources) = decoded;
    }
    let options = options.clone();
    let id = archive::split_id_new(now_nanos());
    let hour = job.hour;
    let written = tokio::task::spawn_blocking(move || match (rows, hour) {
        (Rows::Logs(_), None) => Err(split::SplitError::Options(
            "a log split needs an hour".into(),
        )),
        (Rows::Logs(rows), Some(hour)) => {
            let split = split::write_log_split(rows, &options)?;
            let key = archive::log_split_key(date, hour, &id);
            let index_key = archive::log_index_key(date, hour, &id);
            let entry = sluice_archive::catalog::split_entry(
                key,
                Some(index_key),
                SplitKind::Logs,
                date,
                Some(hour),
                &split.stats,
            );
            Ok(Merged {
                entry,
                parquet: split.parquet,
                index: Some(split.index),
            })
        }
        (Rows::Events(rows), _) => {
            let split = split::write_event_split(rows, &options)?;
            let key = archive::event_split_key(date, &id);
            let entry = sluice_archive::catalog::split_entry(
                key,
                None,
                SplitKind::Events,
                date,
                None,
                &split.stats,
            );
            Ok(Merged {
                entry,
                parquet: split.parquet,
                index: None,
            })
        }
    })
    .await
    .map_err(|e| Error::corrupt(format!("split writer panicked: {e}")))?
    .map_err(|e: split::SplitError| {
        Error::corrupt(format!(
            "failed to write the merged split of {}: {e}",
            job.partition()
        ))
    })?;
    if written.entry.rows != job.rows() {
        return Err(Error::corrupt(format!(
            "merged split of {} has {} rows, its inputs {}",
            job.partition(),
            written.entry.rows,
            job.rows()
        )));
    }
    Ok(written)
}

/// Appends the rows of one Parquet file to `rows`.
fn decode(bytes: Bytes, rows: &mut Rows, sources: &mut Sources) -> Result<(), String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    // The parsed columns are not read: the merged split parses `line` again
    // (decoding the `fields` map costs about what parsing does).
    let builder = match rows {
        Rows::Logs(_) => {
            let roots = builder
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| !archive::PARSED_COLUMNS.contains(&f.name().as_str()))
                .map(|(i, _)| i);
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder.with_projection(mask)
        }
        Rows::Events(_) => builder,
    };
    let reader = builder.build().map_err(|e| e.to_string())?;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        match rows {
            Rows::Logs(rows) => {
                for mut row in log_rows_from_batch(&batch).map_err(|e| e.to_string())? {
                    row.source = sources.intern(row.source);
                    rows.push(row);
                }
            }
            Rows::Events(rows) => {
                rows.extend(event_rows_from_batch(&batch).map_err(|e| e.to_string())?);
            }
        }
    }
    Ok(())
}

/// Rows read back each get a source of their own; sharing equal ones
/// keeps a merge's memory near its line bytes.
#[derive(Default)]
struct Sources(HashMap<u64, Vec<Arc<RowSource>>>);

impl Sources {
    fn intern(&mut self, source: Arc<RowSource>) -> Arc<RowSource> {
        let known = self.0.entry(source.source_id).or_default();
        if let Some(same) = known.iter().find(|s| ***s == *source) {
            return same.clone();
        }
        known.push(source.clone());
        source
    }
}

use sluice_schema::time::now_unix_nanos as now_nanos;
