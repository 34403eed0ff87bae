//! Reading a split by its index: [`search_rows`] turns a query into the
//! sorted row numbers that match, and [`row_group_selections`] turns those
//! into a Parquet `RowSelection` per row group, so only matching rows are
//! decoded (DataFusion's `ParquetAccessPlan` takes exactly that:
//! `RowGroupAccess::Selection` per row group, `Skip` for the others).

use arrow_array::{BooleanArray, StringArray};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::file::metadata::ParquetMetaData;
use tantivy::query::{EnableScoring, Query};
use tantivy::{DocId, Index, ReloadPolicy};

use super::error::{Result, SplitError};
use super::index::{IndexPostings, line_field};
use super::search::SearchQuery;

/// The rows of a split a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHits {
    /// Row numbers in the split's Parquet file, ascending, no repeats.
    pub rows: Vec<u32>,
    /// True when `rows` are exactly the matching rows. False when the index
    /// has no positions (the default) and the query has a phrase (quoted,
    /// or a word of several tokens such as `10.0.0.7`): `rows` is then a
    /// superset, and the caller keeps the decoded rows for which
    /// [`SearchQuery::matches`] holds on the `line` column
    /// ([`recheck_mask`]).
    pub exact: bool,
}

fn search_error(e: impl std::fmt::Display) -> SplitError {
    SplitError::Search(e.to_string())
}

/// The rows of the split whose index is `index` matching `query` (see
/// [`super::search`] for the language).
pub fn search_rows(index: &Index, query: &SearchQuery) -> Result<SearchHits> {
    let (field, postings) = line_field(index)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(search_error)?;
    let searcher = reader.searcher();
    let segments = searcher.segment_readers();
    if segments.len() != 1 {
        return Err(SplitError::CorruptIndex(format!(
            "{} segments, a split index has exactly one",
            segments.len()
        )));
    }
    let segment = &segments[0];
    let mut run = |query: &dyn Query| -> Result<Vec<u32>> {
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(search_error)?;
        let mut rows: Vec<DocId> = Vec::new();
        weight
            .for_each_no_score(segment, &mut |docs| rows.extend_from_slice(docs))
            .map_err(search_error)?;
        // Doc sets come in doc order; this only guards that assumption.
        if !rows.is_sorted_by(|a, b| a < b) {
            rows.sort_unstable();
            rows.dedup();
        }
        Ok(rows)
    };
    let (rows, exact) = query.evaluate(
        field,
        postings == IndexPostings::Positions,
        segment.max_doc(),
        &mut run,
    )?;
    Ok(SearchHits { rows, exact })
}

/// Which of `lines` (the `line` column of rows decoded from inexact
/// [`SearchHits`]) really match `query`: the mask to filter them with
/// (`arrow::compute::filter_record_batch`). A null line never matches.
pub fn recheck_mask(lines: &StringArray, query: &SearchQuery) -> BooleanArray {
    lines
        .iter()
        .map(|line| Some(line.is_some_and(|l| query.matches(l))))
        .collect()
}

/// The row count of each row group of a Parquet file, from its metadata.
pub fn row_group_row_counts(metadata: &ParquetMetaData) -> Vec<usize> {
    metadata
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as usize)
        .collect()
}

/// The rows to read of one row group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupSelection {
    /// Index of the row group in the file.
    pub row_group: usize,
    /// Covers the row group's rows exactly (selects and skips add up to
    /// its row count).
    pub selection: RowSelection,
    /// How many rows `selection` selects.
    pub selected: usize,
}

/// The selection of each row group holding at least one of `rows` (sorted
/// ascending, no repeats, as [`search_rows`] returns them), given the row
/// count of every row group of the file ([`row_group_row_counts`]).
/// Row groups without a selected row are left out.
pub fn row_group_selections(
    rows: &[u32],
    row_group_rows: &[usize],
) -> Result<Vec<RowGroupSelection>> {
    let total: usize = row_group_rows.iter().sum();
    if let Some(pair) = rows.windows(2).find(|w| w[0] >= w[1]) {
        return Err(SplitError::Selection(format!(
            "row ids are not strictly ascending: {} then {}",
            pair[0], pair[1]
        )));
    }
    if let Some(&last) = rows.last()
        && last as usize >= total
    {
        return Err(SplitError::Selection(format!(
            "row {last} is beyond the file's {total} rows"
        )));
    }
    let mut out = Vec::new();
    let mut rows = rows.iter().map(|&r| r as usize).peekable();
    let mut group_start = 0;
    for (row_group, &count) in row_group_rows.iter().enumerate() {
        let group_end = group_start + count;
        let mut selectors = Vec::new();
        let mut at = group_start;
        let mut selected = 0;
        while let Some(row) = rows.next_if(|&r| r < group_end) {
            if row > at {
                selectors.push(RowSelector::skip(row - at));
            }
            // Extend over the run of consecutive rows.
            let mut end = row + 1;
            while end < group_end && rows.next_if_eq(&end).is_some() {
                end += 1;
            }
            selectors.push(RowSelector::select(end - row));
            selected += end - row;
            at = end;
        }
        if selected > 0 {
            if group_end > at {
                selectors.push(RowSelector::skip(group_end - at));
            }
            out.push(RowGroupSelection {
                row_group,
                selection: RowSelection::from(selectors),
                selected,
            });
        }
        group_start = group_end;
    }
    Ok(out)
}

/// For `ParquetRecordBatchReaderBuilder` / `ParquetRecordBatchStreamBuilder`:
/// the row groups to read (`with_row_groups`) and one selection over their
/// rows concatenated (`with_row_selection`).
pub fn reader_selection(groups: &[RowGroupSelection]) -> (Vec<usize>, RowSelection) {
    let row_groups = groups.iter().map(|g| g.row_group).collect();
    let selectors: Vec<RowSelector> = groups
        .iter()
        .flat_map(|g| g.selection.iter().copied())
        .collect();
    (row_groups, RowSelection::from(selectors))
}
