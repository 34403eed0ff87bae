//! The archive's split format: the unit the archiver writes and the query
//! engine reads.
//!
//! A log *split* is one Parquet file of rows sorted by `job`, `instance`,
//! `ts` (then `source_id`, `offset`), and a tantivy index of its `line`
//! column in which document N is row N of the file, packed into one blob
//! stored beside it (`<id>.parquet`, `<id>.index`; the columns and keys are
//! in [`sluice_schema::archive`]). An event split is a Parquet file only.
//!
//! - [`rows`]: [`LogRow`] and [`EventRow`], what a split is made of, and
//!   their conversion from bus records and to and from Arrow batches.
//! - [`writer`]: [`write_log_split`] and [`write_event_split`].
//! - [`index`]: the line index: building it, the `SLUICEIX` container that
//!   makes it one object, [`open_index`].
//! - [`search`]: the `search(line, '…')` query language.
//! - [`reader`]: [`search_rows`] (query → sorted row ids) and
//!   [`row_group_selections`] (row ids → Parquet row selections).
//!
//! # Choices, with the measurements behind them
//!
//! Measured by `split::measure` (release build, 2-core machine): 240,000
//! lines, 28.9 MB of line text, the loghub samples repeated ten times with
//! their numbers changed per repetition.
//!
//! Index, by what it records (no stored fields, no field norms in all):
//!
//! | postings    | blob (v2, zstd) | % of raw | unpacked MB | % of raw | build    | open (v2) |
//! |-------------|-----------------|----------|-------------|----------|----------|-----------|
//! | doc ids     | 2.97 MB         | 10.3 %   | 6.53        | 22.6 %   | 26 ms/MB | 9.1 ms    |
//! | + freqs     | 3.22 MB         | 11.2 %   | 7.40        | 25.6 %   | 30 ms/MB | 16.1 ms   |
//! | + positions | 4.37 MB         | 15.1 %   | 10.96       | 38.0 %   | 29 ms/MB | 20.6 ms   |
//!
//! Queries on the opened index take 14–340 µs (a block id 14 µs; `INFO`,
//! 72,630 hits, 160–340 µs); phrases take 2–6× longer with positions
//! than their doc-id superset. On this corpus every superset was exact: an
//! IP address, `"Receiving block"`, `"session opened"`, `blk_-877…`,
//! `dfs.DataNode$PacketResponder` returned no extra row without positions.
//!
//! - The index records doc ids only ([`IndexPostings::DocIds`], the
//!   default): positions would add 47 % to the index (the larger half of a
//!   split) to make phrases exact, and a superset costs next to nothing,
//!   since the rows are decoded anyway and re-checked with
//!   [`SearchQuery::matches`]. Frequencies serve ranking, which splits do
//!   not do.
//! - No stored fields and no field norms: the Parquet file is the
//!   document store and results are not ranked. Tantivy still writes a
//!   store entry per document, about 2 bytes each (0.49 MB above).
//! - Parquet at zstd level 6, the default:
//!
//! | zstd | Parquet MB | % of raw | write  | 24k lines once, % of raw |
//! |------|------------|----------|--------|--------------------------|
//! | 1    | 3.41       | 11.8 %   | 0.23 s | 14.0 %                   |
//! | 3    | 3.59       | 12.4 %   | 0.25 s | 14.5 %                   |
//! | 6    | 3.11       | 10.8 %   | 0.49 s | 12.7 %                   |
//! | 9    | 2.94       | 10.2 %   | 0.60 s | 12.2 %                   |
//!
//!   Level 3 is both larger and slower than 1 here; 6 is 13 % smaller than
//!   3 for 0.25 s more per 29 MB, while indexing the same lines takes
//!   0.76 s, and decompression does not depend on the level. Reading all
//!   columns back takes 0.04 s at every level.

pub mod error;
pub mod index;
pub mod reader;
pub mod rows;
pub mod search;
pub mod terms;
mod tokenizer;
pub mod writer;

#[cfg(test)]
mod measure;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use error::{Result, SplitError};
pub use index::{IndexPostings, build_index, open_index};
pub use reader::{
    RowGroupSelection, SearchHits, reader_selection, recheck_mask, row_group_row_counts,
    row_group_selections, search_rows,
};
pub use rows::{EventRow, LogRow, RowSource};
pub use search::SearchQuery;
pub use writer::{write_event_split, write_log_split};

/// How splits are written. The archiver's configuration embeds this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitOptions {
    /// zstd level of the Parquet pages, 1 to 22 (see the module
    /// documentation for sizes).
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Rows per Parquet data page at most, so page statistics can skip
    /// most of a row group for a selective filter.
    pub page_rows: usize,
    /// What the line index records for each term.
    pub index_postings: IndexPostings,
    /// Memory the index builder may use. A split whose index outgrows it
    /// is refused (one index segment is what keeps doc N = row N). With
    /// doc ids, 240,000 lines (28.9 MB) needed more than 15 MB and less
    /// than 30 MB: about one byte per byte of line text.
    pub index_memory_bytes: usize,
    /// Fill the `level`, `message`, `trace_id`, `span_id` and `fields`
    /// columns from each line ([`sluice_schema::fields::parse`]); off, they
    /// are null (for measuring what parsing costs).
    pub parse_fields: bool,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            zstd_level: 6,
            row_group_rows: 65_536,
            page_rows: 8_192,
            index_postings: IndexPostings::DocIds,
            index_memory_bytes: 512 << 20,
            parse_fields: true,
        }
    }
}

impl SplitOptions {
    /// Checks every field, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, problem: &str| Err(SplitError::Options(format!("{field}: {problem}")));
        if !(1..=22).contains(&self.zstd_level) {
            return bad("zstd_level", "must be between 1 and 22");
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows", "must be at least 1");
        }
        if self.page_rows == 0 || self.page_rows > self.row_group_rows {
            return bad("page_rows", "must be between 1 and row_group_rows");
        }
        if !(index::MIN_MEMORY_BYTES..=index::MAX_MEMORY_BYTES).contains(&self.index_memory_bytes) {
            return bad(
                "index_memory_bytes",
                &format!(
                    "must be between {} and {}",
                    index::MIN_MEMORY_BYTES,
                    index::MAX_MEMORY_BYTES
                ),
            );
        }
        Ok(())
    }
}

/// What a split holds, for the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitStats {
    /// Rows written: lines or events.
    pub rows: u64,
    /// Bytes of line text (logs) or of messages (events), as shipped.
    pub raw_bytes: u64,
    /// Size of the Parquet file, in bytes.
    pub parquet_bytes: u64,
    /// Bytes of the index blob; 0 for event splits.
    pub index_bytes: u64,
    /// Smallest and largest `ts`, Unix nanoseconds.
    pub min_ts: i64,
    /// Largest `ts`, Unix nanoseconds.
    pub max_ts: i64,
    /// Every `job` in the split.
    pub jobs: BTreeSet<String>,
    /// Every `level` of a log split's rows (see `SplitEntry::levels`).
    #[serde(default)]
    pub levels: Option<BTreeSet<String>>,
    /// Its lines and events by identity, for the split's Delta `add` tags.
    #[serde(skip)]
    pub held: crate::catalog::Held,
}

impl SplitStats {
    /// The `(date, hour)` partition of a log split whose rows all fall in
    /// one UTC hour, `None` if they span more than one.
    pub fn log_partition(&self) -> Option<(sluice_schema::archive::Date, u8)> {
        use sluice_schema::archive::{Date, hour_of};
        let hour = |ts| (Date::from_unix_nanos(ts), hour_of(ts));
        (hour(self.min_ts) == hour(self.max_ts)).then(|| hour(self.min_ts))
    }

    /// The date partition of an event split whose rows all fall in one UTC
    /// day, `None` if they span more than one.
    pub fn event_partition(&self) -> Option<sluice_schema::archive::Date> {
        use sluice_schema::archive::Date;
        let (min, max) = (
            Date::from_unix_nanos(self.min_ts),
            Date::from_unix_nanos(self.max_ts),
        );
        (min == max).then_some(min)
    }
}

/// A written log split: the Parquet file and its index, ready to upload.
#[derive(Debug, Clone)]
pub struct LogSplit {
    /// The Parquet file, rows sorted by job, instance, ts, source_id, offset.
    pub parquet: Bytes,
    /// The `SLUICEIX` index blob; document N is row N of `parquet`.
    pub index: Bytes,
    /// What the split holds, for its catalog entry
    /// ([`split_entry`](crate::catalog::split_entry)).
    pub stats: SplitStats,
}

/// A written event split.
#[derive(Debug, Clone)]
pub struct EventSplit {
    /// The Parquet file, rows sorted by job, instance (none first), ts, id.
    pub parquet: Bytes,
    /// What the split holds, for its catalog entry; `raw_bytes` counts message
    /// bytes and `index_bytes` is 0.
    pub stats: SplitStats,
}
