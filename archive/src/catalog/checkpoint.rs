//! Delta checkpoints, written by delta-rs: `<table>/_delta_log/<v>.checkpoint.parquet`
//! and `_last_checkpoint`, so that any engine opening a table with months of
//! commits reads one Parquet file and the commits after it. (Sluice itself
//! opens from its own state cache, written at the same versions.)
//!
//! delta-rs reads the table through the archive's own object store, rooted
//! where the archive's keys start, under a `memory:///` URL of the table's
//! path: the URL only names the path inside that store.

use std::sync::Arc;

use deltalake_core::DeltaTable;
use deltalake_core::logstore::{StorageConfig, default_logstore};
use object_store::ObjectStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;

use super::commit::SplitKind;
use super::error::{Error, Result};

/// Writes the Delta checkpoint of `version` of `kind`'s table under
/// `prefix` in `store`.
pub async fn write_delta_checkpoint(
    store: Arc<dyn ObjectStore>,
    prefix: &Path,
    kind: SplitKind,
    version: u64,
) -> Result<()> {
    let table = table_path(prefix, kind);
    let url = url::Url::parse(&format!("memory:///{table}"))
        .map_err(|e| Error::Config(format!("table path {table}: {e}")))?;
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(store.clone(), table.clone()));
    let log_store = default_logstore(prefixed, store, &url, &StorageConfig::default());
    let mut delta = DeltaTable::new(log_store);
    let failed = |e: deltalake_core::DeltaTableError| Error::Delta {
        what: format!("checkpoint of {table} version {version}"),
        detail: e.to_string(),
    };
    delta.load_version(version).await.map_err(failed)?;
    deltalake_core::checkpoints::create_checkpoint(&delta, None)
        .await
        .map_err(failed)
}

/// The store path of `kind`'s table root.
pub fn table_path(prefix: &Path, kind: SplitKind) -> Path {
    let root = sluice_schema::archive::table_prefix(kind == SplitKind::Logs);
    crate::store::object_path(prefix, root)
}
