//! The catalog entry of a split: where it is, what it holds, its size.

use sluice_schema::archive::{self, Date};

use super::{SplitEntry, SplitKind};
use crate::split::SplitStats;

/// The catalog entry of a split just written.
pub fn split_entry(
    key: String,
    index_key: Option<String>,
    kind: SplitKind,
    date: Date,
    hour: Option<u8>,
    stats: &SplitStats,
) -> SplitEntry {
    let roles: std::collections::BTreeSet<String> = stats
        .jobs
        .iter()
        .map(|j| archive::split_job(j).0.to_string())
        .collect();
    SplitEntry {
        key,
        index_key,
        kind,
        date: date.to_string(),
        hour,
        rows: stats.rows,
        raw_bytes: stats.raw_bytes,
        data_bytes: stats.parquet_bytes,
        index_bytes: stats.index_bytes,
        min_ts_nanos: stats.min_ts,
        max_ts_nanos: stats.max_ts,
        jobs: stats.jobs.iter().cloned().collect(),
        roles: roles.into_iter().collect(),
        levels: stats.levels.as_ref().map(|l| l.iter().cloned().collect()),
        created_unix_ms: (now_nanos() / 1_000_000) as u64,
        held: stats.held.clone(),
    }
}

use sluice_schema::time::now_unix_nanos as now_nanos;
