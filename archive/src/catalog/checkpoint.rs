//! Delta checkpoints, written by delta-rs: `<table>/_delta_log/<v>.checkpoint.parquet`
//! and `_last_checkpoint`, so that any engine opening a table with months of
//! commits reads one Parquet file and the commits after it. (Sluice itself
//! opens from its own state cache, written at the same versions.)
//!
//! delta-rs reads the table through the archive's own object store, rooted
//! where the archive's keys start, under a `memory:///` URL of the table's
//! path: the URL only names the path inside that store. delta-rs takes a
//! listing of `_delta_log/` to be in key order, as S3's is; a local
//! directory lists in no order, so listings are sorted on the way ([`Sorted`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deltalake_core::DeltaTable;
use deltalake_core::logstore::{StorageConfig, default_logstore};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

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
    // The log store reads through the table's root; delta kernel through the
    // store's root with full paths: both listings sorted.
    let root: Arc<dyn ObjectStore> = Arc::new(Sorted(store));
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root.clone(), table.clone()));
    let log_store = default_logstore(prefixed, root, &url, &StorageConfig::default());
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

/// A store whose listings come in key order (the order delta-rs expects).
#[derive(Debug)]
struct Sorted(Arc<dyn ObjectStore>);

impl std::fmt::Display for Sorted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sorted({})", self.0)
    }
}

/// Collects a listing and yields it in key order.
fn in_key_order(
    listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    futures::stream::once(async move {
        let mut all: Vec<ObjectMeta> = listing.try_collect().await?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok::<_, object_store::Error>(futures::stream::iter(all.into_iter().map(Ok)))
    })
    .try_flatten()
    .boxed()
}

type Fut<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

// `ObjectStore` is an `async_trait`; these are its methods spelled out.
impl ObjectStore for Sorted {
    fn put_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Fut<'at, PutResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.0.put_opts(location, payload, opts)
    }

    fn put_multipart_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        opts: PutMultipartOptions,
    ) -> Fut<'at, Box<dyn MultipartUpload>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.0.put_multipart_opts(location, opts)
    }

    fn get_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        options: GetOptions,
    ) -> Fut<'at, GetResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.0.get_opts(location, options)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        in_key_order(self.0.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        in_key_order(self.0.list_with_offset(prefix, offset))
    }

    fn list_with_delimiter<'l0, 'l1, 'at>(
        &'l0 self,
        prefix: Option<&'l1 Path>,
    ) -> Fut<'at, ListResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.0.list_with_delimiter(prefix)
    }

    fn copy_opts<'l0, 'l1, 'l2, 'at>(
        &'l0 self,
        from: &'l1 Path,
        to: &'l2 Path,
        options: CopyOptions,
    ) -> Fut<'at, ()>
    where
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        self.0.copy_opts(from, to, options)
    }

    fn rename_opts<'l0, 'l1, 'l2, 'at>(
        &'l0 self,
        from: &'l1 Path,
        to: &'l2 Path,
        options: RenameOptions,
    ) -> Fut<'at, ()>
    where
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        self.0.rename_opts(from, to, options)
    }
}
