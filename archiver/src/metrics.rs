//! The archiver's and maintenance's metrics in the Prometheus text
//! format. Names are constants here so dashboards and docs have one place
//! to look.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::archiver::ArchiverMetrics;
use crate::maintenance::MaintenanceMetrics;
use sluice_schema::metrics::{Exposition, Kind, Number};

/// Counter: lines the archiver committed to the catalog.
pub const LINES_ARCHIVED: &str = "sluice_archiver_lines_total";
/// Counter: cluster events the archiver committed to the catalog.
pub const EVENTS_ARCHIVED: &str = "sluice_archiver_events_total";
/// Counter: lines and events the archiver dropped as already archived.
pub const DUPLICATES_DROPPED: &str = "sluice_archiver_duplicates_dropped_total";
/// Counter: bus records that did not decode, skipped by the archiver.
pub const CORRUPT_RECORDS: &str = "sluice_archiver_corrupt_records_total";
/// Counter: splits the archiver uploaded, including attempts dropped for a conflict.
pub const SPLITS_WRITTEN: &str = "sluice_archiver_splits_written_total";
/// Counter: bytes of split objects (Parquet and index) the archiver uploaded.
pub const BYTES_UPLOADED: &str = "sluice_archiver_bytes_uploaded_total";
/// Counter: the archiver's catalog commits that landed.
pub const COMMITS: &str = "sluice_archiver_commits_total";
/// Counter: archiver attempts dropped because another commit claimed the
/// same partitions or lines.
pub const ARCHIVER_CONFLICTS: &str = "sluice_archiver_conflicts_total";
/// Counter: failed archiver steps (retryable ones are retried).
pub const ARCHIVER_ERRORS: &str = "sluice_archiver_errors_total";
/// Gauge: Unix seconds of the archiver's last catalog commit (0: none yet).
pub const LAST_COMMIT: &str = "sluice_archiver_last_commit_unix_seconds";
/// Gauge: seconds from shipping to catalog commit of the newest line in the
/// archiver's last commit.
pub const FRESHNESS: &str = "sluice_archiver_freshness_seconds";

/// Counter: merges compaction committed.
pub const COMPACTIONS: &str = "sluice_compaction_merges_total";
/// Counter: input splits compaction replaced by merged ones.
pub const SPLITS_MERGED: &str = "sluice_compaction_splits_merged_total";
/// Counter: rows compaction rewrote into merged splits.
pub const ROWS_MERGED: &str = "sluice_compaction_rows_total";
/// Counter: data and index bytes of the splits compaction merged.
pub const COMPACTION_BYTES_IN: &str = "sluice_compaction_bytes_in_total";
/// Counter: data and index bytes of the merged splits compaction wrote.
pub const COMPACTION_BYTES_OUT: &str = "sluice_compaction_bytes_out_total";
/// Gauge: Unix seconds at the end of the last compaction pass (0: none yet).
pub const LAST_COMPACTION: &str = "sluice_compaction_last_run_unix_seconds";
/// Counter: splits retention removed from the catalog.
pub const RETENTION_SPLITS: &str = "sluice_retention_splits_removed_total";
/// Counter: rows of the splits retention removed.
pub const RETENTION_ROWS: &str = "sluice_retention_rows_removed_total";
/// Counter: data and index bytes of the splits retention removed.
pub const RETENTION_BYTES: &str = "sluice_retention_bytes_removed_total";
/// Gauge: Unix seconds at the end of the last retention pass (0: none yet).
pub const LAST_RETENTION: &str = "sluice_retention_last_run_unix_seconds";
/// Counter: merges and retention commits dropped for a conflicting commit.
pub const MAINTENANCE_CONFLICTS: &str = "sluice_maintenance_conflicts_total";
/// Counter: failed merges, maintenance passes and janitor runs.
pub const MAINTENANCE_ERRORS: &str = "sluice_maintenance_errors_total";
/// Counter: unreferenced objects the maintenance janitor deleted.
pub const JANITOR_DELETED: &str = "sluice_janitor_objects_deleted_total";
/// Gauge: live splits in the catalog after the last maintenance pass.
pub const LIVE_SPLITS: &str = "sluice_archive_live_splits";

/// A metric's value as Prometheus text.
enum Value<'a> {
    Count(&'a AtomicU64),
    /// Unix nanoseconds, shown in seconds (0 stays 0: never).
    Nanos(&'a AtomicI64),
    /// Milliseconds (a time or a delay), shown in seconds.
    Millis(&'a AtomicU64),
}

impl Value<'_> {
    fn number(&self) -> Number {
        match self {
            Value::Count(v) => v.load(Ordering::Relaxed).into(),
            Value::Nanos(v) => (v.load(Ordering::Relaxed) as f64 / 1e9).into(),
            Value::Millis(v) => (v.load(Ordering::Relaxed) as f64 / 1e3).into(),
        }
    }
}

type Row<'a> = (&'static str, &'static str, &'static str, Value<'a>);

/// Adds the metrics given to `out`.
pub fn write(
    out: &mut Exposition,
    archiver: Option<&ArchiverMetrics>,
    maintenance: Option<&MaintenanceMetrics>,
) {
    let mut rows: Vec<Row<'_>> = Vec::new();
    if let Some(a) = archiver {
        use Value::Count;
        rows.extend([
            (
                LINES_ARCHIVED,
                "counter",
                "lines archived",
                Count(&a.lines_archived),
            ),
            (
                EVENTS_ARCHIVED,
                "counter",
                "cluster events archived",
                Count(&a.events_archived),
            ),
            (
                DUPLICATES_DROPPED,
                "counter",
                "lines and events dropped as already archived",
                Count(&a.duplicates_dropped),
            ),
            (
                CORRUPT_RECORDS,
                "counter",
                "bus records that do not decode (skipped)",
                Count(&a.corrupt_records),
            ),
            (
                SPLITS_WRITTEN,
                "counter",
                "splits written by the archiver",
                Count(&a.splits_written),
            ),
            (
                BYTES_UPLOADED,
                "counter",
                "bytes of split objects uploaded by the archiver",
                Count(&a.bytes_uploaded),
            ),
            (
                COMMITS,
                "counter",
                "catalog commits of the archiver",
                Count(&a.commits),
            ),
            (
                ARCHIVER_CONFLICTS,
                "counter",
                "archiver commits dropped for a conflicting commit",
                Count(&a.conflicts),
            ),
            (
                ARCHIVER_ERRORS,
                "counter",
                "archiver errors (retried)",
                Count(&a.errors),
            ),
            (
                LAST_COMMIT,
                "gauge",
                "time of the archiver's last catalog commit",
                Value::Nanos(&a.last_commit_unix_nanos),
            ),
            (
                FRESHNESS,
                "gauge",
                "shipped-to-committed delay of the newest line of the last commit",
                Value::Millis(&a.last_freshness_ms),
            ),
        ]);
    }
    if let Some(m) = maintenance {
        use Value::Count;
        rows.extend([
            (
                COMPACTIONS,
                "counter",
                "merges committed by compaction",
                Count(&m.compactions),
            ),
            (
                SPLITS_MERGED,
                "counter",
                "splits replaced by merged ones",
                Count(&m.splits_merged),
            ),
            (
                ROWS_MERGED,
                "counter",
                "rows rewritten by compaction",
                Count(&m.rows_merged),
            ),
            (
                COMPACTION_BYTES_IN,
                "counter",
                "data and index bytes of the splits compaction merged",
                Count(&m.compaction_bytes_in),
            ),
            (
                COMPACTION_BYTES_OUT,
                "counter",
                "data and index bytes of the splits compaction wrote",
                Count(&m.compaction_bytes_out),
            ),
            (
                LAST_COMPACTION,
                "gauge",
                "end of the last compaction pass",
                Value::Millis(&m.last_compaction_unix_ms),
            ),
            (
                RETENTION_SPLITS,
                "counter",
                "splits removed by retention",
                Count(&m.retention_splits_removed),
            ),
            (
                RETENTION_ROWS,
                "counter",
                "rows of the splits retention removed",
                Count(&m.retention_rows_removed),
            ),
            (
                RETENTION_BYTES,
                "counter",
                "data and index bytes of the splits retention removed",
                Count(&m.retention_bytes_removed),
            ),
            (
                LAST_RETENTION,
                "gauge",
                "end of the last retention pass",
                Value::Millis(&m.last_retention_unix_ms),
            ),
            (
                MAINTENANCE_CONFLICTS,
                "counter",
                "merges and retention commits dropped for a conflicting commit",
                Count(&m.conflicts),
            ),
            (
                MAINTENANCE_ERRORS,
                "counter",
                "failed merges and maintenance passes",
                Count(&m.errors),
            ),
            (
                JANITOR_DELETED,
                "counter",
                "unreferenced objects deleted by the maintenance janitor",
                Count(&m.janitor_objects_deleted),
            ),
            (
                LIVE_SPLITS,
                "gauge",
                "live splits after the last maintenance pass",
                Count(&m.live_splits),
            ),
        ]);
    }
    for (name, kind, help, value) in rows {
        let kind = if kind == "counter" {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        out.add(name, kind, help, &[], value.number());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        archiver: Option<&ArchiverMetrics>,
        maintenance: Option<&MaintenanceMetrics>,
    ) -> String {
        let mut out = Exposition::new();
        write(&mut out, archiver, maintenance);
        out.render()
    }

    #[test]
    fn renders_every_metric() {
        let a = ArchiverMetrics::default();
        a.lines_archived.store(7, Ordering::Relaxed);
        a.last_freshness_ms.store(1_500, Ordering::Relaxed);
        a.last_commit_unix_nanos
            .store(2_000_000_000, Ordering::Relaxed);
        let m = MaintenanceMetrics::default();
        m.compactions.store(3, Ordering::Relaxed);
        m.live_splits.store(12, Ordering::Relaxed);
        m.last_retention_unix_ms.store(1_500, Ordering::Relaxed);
        let text = render(Some(&a), Some(&m));
        for want in [
            format!("{LINES_ARCHIVED} 7\n"),
            format!("{FRESHNESS} 1.5\n"),
            format!("{LAST_COMMIT} 2.0\n"),
            format!("{COMPACTIONS} 3\n"),
            format!("{LIVE_SPLITS} 12\n"),
            format!("{LAST_RETENTION} 1.5\n"),
            format!("# TYPE {LIVE_SPLITS} gauge\n"),
        ] {
            assert!(text.contains(&want), "{want:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE").count(), 25);
        assert_eq!(render(None, Some(&m)).matches("# TYPE").count(), 14);
        assert!(render(None, None).is_empty());
    }
}
