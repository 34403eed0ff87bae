//! The archive's metrics (archiver and maintenance) in the Prometheus text
//! format. Names are constants here so dashboards and docs have one place
//! to look.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::archiver::ArchiverMetrics;
use crate::maintenance::MaintenanceMetrics;
use crate::sql::{QueryError, QueryMetrics};
use sluice_schema::metrics::{Exposition, Kind};

pub const LINES_ARCHIVED: &str = "sluice_archiver_lines_total";
pub const EVENTS_ARCHIVED: &str = "sluice_archiver_events_total";
pub const DUPLICATES_DROPPED: &str = "sluice_archiver_duplicates_dropped_total";
pub const CORRUPT_RECORDS: &str = "sluice_archiver_corrupt_records_total";
pub const SPLITS_WRITTEN: &str = "sluice_archiver_splits_written_total";
pub const BYTES_UPLOADED: &str = "sluice_archiver_bytes_uploaded_total";
pub const COMMITS: &str = "sluice_archiver_commits_total";
pub const ARCHIVER_CONFLICTS: &str = "sluice_archiver_conflicts_total";
pub const ARCHIVER_ERRORS: &str = "sluice_archiver_errors_total";
pub const LAST_COMMIT: &str = "sluice_archiver_last_commit_unix_seconds";
pub const FRESHNESS: &str = "sluice_archiver_freshness_seconds";

pub const COMPACTIONS: &str = "sluice_compaction_merges_total";
pub const SPLITS_MERGED: &str = "sluice_compaction_splits_merged_total";
pub const ROWS_MERGED: &str = "sluice_compaction_rows_total";
pub const COMPACTION_BYTES_IN: &str = "sluice_compaction_bytes_in_total";
pub const COMPACTION_BYTES_OUT: &str = "sluice_compaction_bytes_out_total";
pub const LAST_COMPACTION: &str = "sluice_compaction_last_run_unix_seconds";
pub const RETENTION_SPLITS: &str = "sluice_retention_splits_removed_total";
pub const RETENTION_ROWS: &str = "sluice_retention_rows_removed_total";
pub const RETENTION_BYTES: &str = "sluice_retention_bytes_removed_total";
pub const LAST_RETENTION: &str = "sluice_retention_last_run_unix_seconds";
pub const MAINTENANCE_CONFLICTS: &str = "sluice_maintenance_conflicts_total";
pub const MAINTENANCE_ERRORS: &str = "sluice_maintenance_errors_total";
pub const JANITOR_DELETED: &str = "sluice_janitor_objects_deleted_total";
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
    fn render(&self) -> String {
        match self {
            Value::Count(v) => v.load(Ordering::Relaxed).to_string(),
            Value::Nanos(v) => format!("{:.3}", v.load(Ordering::Relaxed) as f64 / 1e9),
            Value::Millis(v) => format!("{:.3}", v.load(Ordering::Relaxed) as f64 / 1e3),
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
        out.add(name, kind, help, &[], value.render());
    }
}

pub const QUERIES: &str = "sluice_query_queries_total";
pub const QUERY_ERRORS: &str = "sluice_query_errors_total";
pub const QUERY_SECONDS: &str = "sluice_query_seconds_total";
pub const QUERY_ROWS: &str = "sluice_query_rows_returned_total";
pub const QUERY_SPLITS_PRUNED: &str = "sluice_query_splits_pruned_total";
pub const QUERY_SPLITS_SEARCHED: &str = "sluice_query_splits_searched_total";
pub const QUERY_SPLITS_SKIPPED_BY_TERMS: &str = "sluice_query_splits_skipped_by_terms_total";
pub const QUERY_SPLITS_READ: &str = "sluice_query_splits_read_total";
pub const QUERY_ROWS_READ: &str = "sluice_query_split_rows_read_total";
pub const QUERY_ROWS_BY_INDEX: &str = "sluice_query_rows_selected_by_index_total";

/// Adds the query engine's metrics to `out`.
pub fn write_query(out: &mut Exposition, m: &QueryMetrics) {
    let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
    out.counter(QUERIES, "queries answered or failed", &[], get(&m.queries));
    for (kind, n) in QueryError::KINDS.iter().zip(&m.errors) {
        out.counter(
            QUERY_ERRORS,
            "failed queries, by kind (sql, forbidden, timeout, memory, corrupt_split, …)",
            &[("kind", kind)],
            get(n),
        );
    }
    out.counter(
        QUERY_SECONDS,
        "time spent answering queries",
        &[],
        format!("{:.3}", get(&m.micros) as f64 / 1e6),
    );
    for (name, help, v) in [
        (QUERY_ROWS, "rows returned", &m.rows_returned),
        (
            QUERY_SPLITS_PRUNED,
            "splits dropped by time, job or role before any object was read",
            &m.splits_pruned,
        ),
        (
            QUERY_SPLITS_SEARCHED,
            "splits whose full-text index answered a search()",
            &m.splits_searched,
        ),
        (
            QUERY_SPLITS_SKIPPED_BY_TERMS,
            "splits a search skipped on their term filter, without fetching their index",
            &m.splits_skipped_by_terms,
        ),
        (
            QUERY_SPLITS_READ,
            "splits whose Parquet data was read",
            &m.splits_read,
        ),
        (
            QUERY_ROWS_READ,
            "rows of the splits read (before index selection and filters)",
            &m.rows_in_splits_read,
        ),
        (
            QUERY_ROWS_BY_INDEX,
            "rows selected by full-text indexes",
            &m.rows_selected_by_index,
        ),
    ] {
        out.counter(name, help, &[], get(v));
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
            format!("{FRESHNESS} 1.500\n"),
            format!("{LAST_COMMIT} 2.000\n"),
            format!("{COMPACTIONS} 3\n"),
            format!("{LIVE_SPLITS} 12\n"),
            format!("{LAST_RETENTION} 1.500\n"),
            format!("# TYPE {LIVE_SPLITS} gauge\n"),
        ] {
            assert!(text.contains(&want), "{want:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE").count(), 25);
        assert_eq!(render(None, Some(&m)).matches("# TYPE").count(), 14);
        assert!(render(None, None).is_empty());
    }
}
