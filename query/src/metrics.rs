//! The query engine's metrics in the Prometheus text format. Names are
//! constants here so dashboards and docs have one place to look.

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_schema::metrics::Exposition;

use crate::{QueryError, QueryMetrics};

/// Counter: queries answered or failed.
pub const QUERIES: &str = "sluice_query_queries_total";
/// Counter: failed queries, labelled `kind` by [`QueryError::kind`].
pub const QUERY_ERRORS: &str = "sluice_query_errors_total";
/// Counter: seconds spent answering queries, summed.
pub const QUERY_SECONDS: &str = "sluice_query_seconds_total";
/// Counter: rows returned by successful queries.
pub const QUERY_ROWS: &str = "sluice_query_rows_returned_total";
/// Counter: splits dropped by time, job or role before any object was read.
pub const QUERY_SPLITS_PRUNED: &str = "sluice_query_splits_pruned_total";
/// Counter: splits whose full-text index answered a `search()`.
pub const QUERY_SPLITS_SEARCHED: &str = "sluice_query_splits_searched_total";
/// Counter: splits a search skipped on their term filter, without fetching
/// their index.
pub const QUERY_SPLITS_SKIPPED_BY_TERMS: &str = "sluice_query_splits_skipped_by_terms_total";
/// Counter: splits whose Parquet data was read.
pub const QUERY_SPLITS_READ: &str = "sluice_query_splits_read_total";
/// Counter: rows of the splits read, before index selection and filters.
pub const QUERY_ROWS_READ: &str = "sluice_query_split_rows_read_total";
/// Counter: rows selected by full-text indexes.
pub const QUERY_ROWS_BY_INDEX: &str = "sluice_query_rows_selected_by_index_total";

/// Adds the query engine's metrics to `out`.
pub fn write(out: &mut Exposition, m: &QueryMetrics) {
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
        get(&m.micros) as f64 / 1e6,
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
