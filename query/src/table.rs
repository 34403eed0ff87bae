//! The `logs` and `events` tables: DataFusion table providers over the
//! splits of one catalog snapshot.
//!
//! A scan:
//! 1. drops the splits the catalog's metadata rules out (time range, jobs,
//!    roles the caller may read) before reading any object;
//! 2. for `logs`, asks each remaining split's index for the rows of every
//!    `search(line, '…')` conjunct and drops the splits with none; the others
//!    are read with that row selection (a `ParquetRowSelection`), so only
//!    matching rows are decoded;
//! 3. reads the rest with DataFusion's Parquet scan, which prunes row groups
//!    and pages by their statistics and applies the filters while decoding;
//! 4. enforces the caller's restrictions (roles, `--since`/`--from`/`--to`)
//!    with a filter of its own, whatever the SQL says.
//!
//! Filters are reported `Inexact`: DataFusion filters the rows again, which
//! makes `search()` exact for phrases and keeps every other filter correct.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sluice_schema::archive as schema;

use super::cache::IndexCache;
use super::prune::{Pruning, TimeRange};
use sluice_archive::catalog::{SplitEntry, SplitKind};
use sluice_archive::split::index::{TermsAt, locate_terms};
use sluice_archive::split::search::intersection;
use sluice_archive::split::terms::TermFilter;
use sluice_archive::split::{SearchQuery, open_index, search_rows};
use sluice_archive::store::Store;

/// What one query may read, whatever its SQL says.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    /// Rows with `ts` in this range only (`--since`, `--from`, `--to`).
    pub time: TimeRange,
    /// Rows of these roles only; `None`: every role.
    pub roles: Option<BTreeSet<String>>,
    /// Splits not to read (found corrupt; `--skip-corrupt`).
    pub skip: BTreeSet<String>,
}

/// What the scans of one query did, for `EXPLAIN`-like reporting, metrics
/// and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Splits of the scanned tables in the catalog snapshot.
    pub splits_total: u64,
    /// Splits dropped by time, job or role before any object was read.
    pub splits_pruned: u64,
    /// Splits whose index was read for a `search()`.
    pub splits_searched: u64,
    /// Of those, the splits with no matching row (not read).
    pub splits_without_hits: u64,
    /// Of those, the splits whose term filter ruled a search out, so their
    /// index was not fetched.
    pub splits_skipped_by_terms: u64,
    /// Splits handed to the Parquet scan, by key.
    pub splits_read: Vec<String>,
    /// Rows of the splits read.
    pub rows_in_splits_read: u64,
    /// Rows selected by indexes (in splits read through a search).
    pub rows_selected_by_index: u64,
}

/// The state every table of one query shares.
#[derive(Debug)]
pub struct QueryScope {
    /// The archive's object store, which the splits are read from.
    pub store: Store,
    /// The URL `store` is registered under in the query's session.
    pub url: ObjectStoreUrl,
    /// The catalog's live splits when the query started.
    pub splits: Vec<SplitEntry>,
    /// What the caller may read; every scan enforces it.
    pub restrictions: Restrictions,
    /// What the scans did so far; the engine reads it when the query ends.
    pub stats: Mutex<ScanStats>,
    /// Indexes opened by earlier queries of the engine.
    pub indexes: Arc<IndexCache>,
}

impl QueryScope {
    fn stats(&self) -> std::sync::MutexGuard<'_, ScanStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The schema queries see: a split's, with the short, repetitive text
/// columns (job, host, role, …) read as `Utf8View`. Their dictionary pages
/// decode into views of the dictionary without copying each row's string,
/// and grouping or comparing them looks at the inline 12 bytes first. The
/// texts that are searched, matched and shown (`line`, `message`, …) stay
/// `Utf8`.
fn query_schema(split: &Schema) -> SchemaRef {
    const VIEWED: [&str; 12] = [
        schema::COL_HOST,
        schema::COL_JOB,
        schema::COL_ROLE,
        schema::COL_ENV,
        schema::COL_NAME,
        schema::COL_TASK_ID,
        schema::COL_PROCESS,
        schema::COL_STREAM,
        schema::COL_PATH,
        schema::COL_KIND,
        schema::COL_ACTOR,
        schema::COL_REASON,
    ];
    let fields: Vec<Field> = split
        .fields()
        .iter()
        .map(|f| {
            if VIEWED.contains(&f.name().as_str()) && f.data_type() == &DataType::Utf8 {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, split.metadata().clone()))
}

/// The `logs` or the `events` table of one query: a DataFusion table
/// provider over the scope's splits of that kind.
#[derive(Debug)]
pub struct ArchiveTable {
    kind: SplitKind,
    /// The files' columns as read.
    file_schema: SchemaRef,
    /// The partition columns (`date`, and `hour` for logs), from each
    /// split's Delta `partitionValues`.
    partition_fields: Vec<datafusion::arrow::datatypes::FieldRef>,
    /// Both: the table's columns, as other engines see them.
    schema: SchemaRef,
    scope: Arc<QueryScope>,
}

impl ArchiveTable {
    /// The table of `kind`'s splits in `scope`, its short text columns read as
    /// `Utf8View`.
    pub fn new(kind: SplitKind, scope: Arc<QueryScope>) -> ArchiveTable {
        let logs = kind == SplitKind::Logs;
        let file_schema = match kind {
            SplitKind::Logs => query_schema(&schema::logs_schema()),
            SplitKind::Events => query_schema(&schema::events_schema()),
        };
        let partition_fields: Vec<_> = schema::partition_fields(logs)
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut fields: Vec<_> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ));
        ArchiveTable {
            kind,
            file_schema,
            partition_fields,
            schema,
            scope,
        }
    }

    /// A split's partition values, in the order of `partition_fields`.
    fn partition_values(&self, split: &SplitEntry) -> Vec<ScalarValue> {
        let days = schema::Date::parse(&split.date)
            .ok()
            .and_then(|d| d.start_unix_nanos())
            .map(|n| n.div_euclid(86_400_000_000_000) as i32);
        let mut values = vec![ScalarValue::Date32(days)];
        if self.kind == SplitKind::Logs {
            values.push(ScalarValue::Int32(split.hour.map(i32::from)));
        }
        values
    }

    /// The term filter in a split's index blob, from two range reads
    /// (cached). `None` when it has none or it cannot be read: the index is
    /// then opened as a whole, which reports any damage.
    async fn term_filter(&self, split: &SplitEntry, index_key: &str) -> Option<Arc<TermFilter>> {
        let cache = &self.scope.indexes;
        if let Some(known) = cache.filter(&split.key) {
            return known;
        }
        let store = &self.scope.store.store;
        let path = self.scope.store.object_path(index_key);
        let size = split.index_bytes;
        let mut want = 4096u64;
        let filter = loop {
            let head = store.get_range(&path, 0..want.min(size)).await.ok()?;
            match locate_terms(&head).ok()? {
                TermsAt::NeedBytes(n) if (n as u64) > want && want < size => want = n as u64,
                TermsAt::NeedBytes(_) | TermsAt::Absent => break None,
                TermsAt::At { offset, len } => {
                    let end = offset.checked_add(len).filter(|&end| end <= size)?;
                    let bytes = store.get_range(&path, offset..end).await.ok()?;
                    break TermFilter::decode(&bytes).ok().map(Arc::new);
                }
            }
        };
        let bytes = filter.as_ref().map_or(0, |f| f.size_bytes());
        cache.insert_filter(&split.key, filter.clone(), bytes);
        filter
    }

    /// The rows of `split` matching every search, ascending; `None` when the
    /// split has no index (every row is a candidate).
    async fn index_rows(
        &self,
        split: &SplitEntry,
        searches: &[SearchQuery],
    ) -> Result<Option<Vec<u32>>> {
        let Some(index_key) = &split.index_key else {
            return Ok(None);
        };
        let cached = self.scope.indexes.get(&split.key);
        if cached.is_none()
            && let Some(filter) = self.term_filter(split, index_key).await
            && searches
                .iter()
                .any(|q| !q.may_match(&|term| filter.may_contain(term.as_bytes())))
        {
            self.scope.stats().splits_skipped_by_terms += 1;
            return Ok(Some(Vec::new()));
        }
        let blob = match cached {
            Some(_) => None,
            None => {
                let path = self.scope.store.object_path(index_key);
                let blob = async { self.scope.store.store.get(&path).await?.bytes().await }.await;
                match blob {
                    Ok(blob) => Some(blob),
                    // The index is Sluice's own, beside the table: without
                    // it the split is read whole and every row re-checked.
                    Err(object_store::Error::NotFound { .. }) => {
                        tracing::warn!(split = %split.key, index = %index_key, "query: a split's index is missing; reading the split whole");
                        return Ok(None);
                    }
                    Err(e) => {
                        return Err(corrupt(
                            &split.key,
                            format!("cannot read its index {index_key}: {e}"),
                        ));
                    }
                }
            }
        };
        let cache = self.scope.indexes.clone();
        let searches = searches.to_vec();
        let key = split.key.clone();
        let rows = tokio::task::spawn_blocking(move || -> Result<Vec<u32>> {
            let index = match (cached, blob) {
                (Some(index), _) => index,
                (None, Some(blob)) => {
                    let bytes = blob.len() as u64;
                    let index =
                        open_index(blob).map_err(|e| corrupt(&key, format!("its index: {e}")))?;
                    cache.insert(&key, index.clone(), bytes);
                    index
                }
                (None, None) => unreachable!("fetched when not cached"),
            };
            let mut selected: Option<Vec<u32>> = None;
            for query in &searches {
                let hits = search_rows(&index, query)
                    .map_err(|e| corrupt(&key, format!("searching its index: {e}")))?;
                selected = Some(match selected {
                    None => hits.rows,
                    Some(previous) => intersection(&previous, &hits.rows),
                });
                if selected.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
            }
            Ok(selected.unwrap_or_default())
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        if rows
            .last()
            .is_some_and(|&last| u64::from(last) >= split.rows)
        {
            return Err(corrupt(
                &split.key,
                format!(
                    "its index names row {} of {}",
                    rows[rows.len() - 1],
                    split.rows
                ),
            ));
        }
        Ok(Some(rows))
    }

    /// The predicate of the caller's restrictions, if any: times on
    /// `ts_nanos`, exact to the nanosecond.
    fn restriction(&self) -> Option<Expr> {
        let r = &self.scope.restrictions;
        let ts = |v: i64| lit(ScalarValue::Int64(Some(v)));
        let mut parts = Vec::new();
        if let Some(from) = r.time.from {
            parts.push(col(schema::COL_TS_NANOS).gt_eq(ts(from)));
        }
        if let Some(to) = r.time.to {
            parts.push(col(schema::COL_TS_NANOS).lt(ts(to)));
        }
        if let Some(roles) = &r.roles {
            parts.push(col(schema::COL_ROLE).in_list(roles.iter().map(lit).collect(), false));
        }
        parts.into_iter().reduce(Expr::and)
    }
}

fn corrupt(key: &str, problem: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("split {key}: {problem}"))
}

/// The selection of `rows` (ascending) out of `total`.
fn row_selection(rows: &[u32], total: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0u64;
    let mut i = 0;
    while i < rows.len() {
        let start = u64::from(rows[i]);
        let mut end = start + 1;
        i += 1;
        while i < rows.len() && u64::from(rows[i]) == end {
            end += 1;
            i += 1;
        }
        if start > at {
            selectors.push(RowSelector::skip((start - at) as usize));
        }
        selectors.push(RowSelector::select((end - start) as usize));
        at = end;
    }
    if total > at {
        selectors.push(RowSelector::skip((total - at) as usize));
    }
    RowSelection::from(selectors)
}

#[async_trait]
impl TableProvider for ArchiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let scope = &self.scope;
        let pruning = Pruning::from_filters(filters);
        let time = pruning.time.and(scope.restrictions.time);
        let roles = scope.restrictions.roles.as_ref();
        let of_kind: Vec<&SplitEntry> = scope
            .splits
            .iter()
            .filter(|s| s.kind == self.kind)
            .collect();
        let candidates: Vec<&SplitEntry> = of_kind
            .iter()
            .copied()
            .filter(|s| {
                pruning.keeps(s)
                    && time.overlaps(s.min_ts_nanos, s.max_ts_nanos)
                    && roles.is_none_or(|r| s.roles.iter().any(|role| r.contains(role)))
                    && !scope.restrictions.skip.contains(&s.key)
            })
            .collect();
        {
            let mut stats = scope.stats();
            stats.splits_total += of_kind.len() as u64;
            stats.splits_pruned += (of_kind.len() - candidates.len()) as u64;
        }

        // The index of each split answers the searches.
        let searches = if self.kind == SplitKind::Logs {
            pruning.searches.clone()
        } else {
            Vec::new()
        };
        let mut files: Vec<(SplitEntry, Option<RowSelection>)> = Vec::new();
        if searches.is_empty() {
            files = candidates.iter().map(|s| ((*s).clone(), None)).collect();
        } else {
            let searches = &searches;
            let owned: Vec<SplitEntry> = candidates.iter().map(|s| (*s).clone()).collect();
            let looked_up: Vec<(SplitEntry, Option<Vec<u32>>)> = futures::stream::iter(owned)
                .map(|split| async move {
                    let rows = self.index_rows(&split, searches).await?;
                    Ok::<_, DataFusionError>((split, rows))
                })
                .buffered(8)
                .try_collect()
                .await?;
            let mut stats = scope.stats();
            for (split, rows) in looked_up {
                if split.index_key.is_some() {
                    stats.splits_searched += 1;
                }
                match rows {
                    Some(rows) if rows.is_empty() => stats.splits_without_hits += 1,
                    Some(rows) => {
                        stats.rows_selected_by_index += rows.len() as u64;
                        let selection = row_selection(&rows, split.rows);
                        files.push((split, Some(selection)));
                    }
                    None => files.push((split, None)),
                }
            }
        }
        {
            let mut stats = scope.stats();
            for (split, _) in &files {
                stats.splits_read.push(split.key.clone());
                stats.rows_in_splits_read += split.rows;
            }
        }

        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let restriction = self.restriction();
        let predicate = filters
            .iter()
            .cloned()
            .chain(restriction.clone())
            .reduce(Expr::and)
            .map(|e| state.create_physical_expr(e, &df_schema))
            .transpose()?;
        let table_schema =
            datafusion::datasource::table_schema::TableSchema::builder(self.file_schema.clone())
                .with_table_partition_cols(self.partition_fields.clone())
                .build();
        let mut source = ParquetSource::new(table_schema)
            .with_pushdown_filters(true)
            .with_reorder_filters(true)
            .with_enable_page_index(true);
        if let Some(predicate) = predicate {
            source = source.with_predicate(predicate);
        }
        // A restriction needs its columns from the scan, projected away after.
        let wanted: Option<Vec<usize>> = projection.cloned();
        let scan_projection = match (&wanted, &restriction) {
            (Some(wanted), Some(_)) => {
                let mut cols = wanted.clone();
                for name in [schema::COL_TS_NANOS, schema::COL_ROLE] {
                    let i = self.schema.index_of(name)?;
                    if !cols.contains(&i) {
                        cols.push(i);
                    }
                }
                Some(cols)
            }
            _ => wanted.clone(),
        };
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<Vec<PartitionedFile>> =
            vec![Vec::new(); partitions.min(files.len().max(1))];
        let group_count = groups.len();
        for (i, (split, selection)) in files.into_iter().enumerate() {
            let path = scope.store.object_path(&split.key);
            let mut file = PartitionedFile::new(path.to_string(), split.data_bytes)
                .with_partition_values(self.partition_values(&split));
            if let Some(selection) = selection {
                file = file.with_extension(ParquetRowSelection::new(selection));
            }
            groups[i % group_count].push(file);
        }
        let config = FileScanConfigBuilder::new(scope.url.clone(), Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(scan_projection.clone())?
            .with_limit(if filters.is_empty() && restriction.is_none() {
                limit
            } else {
                None
            })
            .build();
        let mut plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        if let Some(restriction) = restriction {
            let scanned = plan.schema();
            let scanned_df = DFSchema::try_from(scanned.as_ref().clone())?;
            let predicate = state.create_physical_expr(restriction, &scanned_df)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
            if let Some(wanted) = wanted {
                let exprs = wanted.iter().map(|&i| {
                    let name = self.schema.field(i).name();
                    let at = scanned.index_of(name).expect("scanned column");
                    ProjectionExpr::new(Arc::new(Column::new(name, at)), name.clone())
                });
                plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_selection_selects_exactly_the_rows() {
        let selection = row_selection(&[0, 1, 5, 9], 12);
        let selected: Vec<usize> = selection
            .iter()
            .scan(0usize, |at, s| {
                let start = *at;
                *at += s.row_count;
                Some((start, s.row_count, s.skip))
            })
            .filter(|(_, _, skip)| !skip)
            .flat_map(|(start, n, _)| start..start + n)
            .collect();
        assert_eq!(selected, [0, 1, 5, 9]);
        assert_eq!(selection.iter().map(|s| s.row_count).sum::<usize>(), 12);
    }
}
