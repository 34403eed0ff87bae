//! Reading a whole archive back, row by row: for tools, checks and the
//! migration (the query engine reads selectively instead).

use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::{Catalog, SplitKind};
use crate::split::rows::{event_rows_from_batch, log_rows_from_batch};
use crate::split::{EventRow, LogRow};
use crate::store::Store;
use crate::{Error, Result};

/// Every row of every live split of `kind`'s table, split by split.
pub async fn rows(store: &Store, kind: SplitKind) -> Result<(Vec<LogRow>, Vec<EventRow>)> {
    let catalog = Catalog::open(store.store.clone(), &store.prefix, kind).await?;
    let (mut logs, mut events) = (Vec::new(), Vec::new());
    for split in catalog.state().splits().values() {
        let (l, e) = split_rows(store, &split.key, kind).await?;
        logs.extend(l);
        events.extend(e);
    }
    Ok((logs, events))
}

/// The rows of the split whose data object is `key` (in the format of now
/// or of before Delta Lake), and its size in bytes.
pub async fn split_rows(
    store: &Store,
    key: &str,
    kind: SplitKind,
) -> Result<(Vec<LogRow>, Vec<EventRow>)> {
    let path = store.object_path(key);
    let bytes = store
        .store
        .get(&path)
        .await
        .map_err(|e| Error::store(format!("failed to read split {path}"), e))?
        .bytes()
        .await
        .map_err(|e| Error::store(format!("failed to read split {path}"), e))?;
    let corrupt = |e: &dyn std::fmt::Display| Error::Corrupt(format!("split {path}: {e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(&e))?
        .build()
        .map_err(|e| corrupt(&e))?;
    let (mut logs, mut events) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(&e))?;
        match kind {
            SplitKind::Logs => logs.extend(log_rows_from_batch(&batch).map_err(|e| corrupt(&e))?),
            SplitKind::Events => {
                events.extend(event_rows_from_batch(&batch).map_err(|e| corrupt(&e))?)
            }
        }
    }
    Ok((logs, events))
}
