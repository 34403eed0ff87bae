//! The catalog's objects in the store and the calls that read and write
//! them, with retries of transient errors.
//!
//! Keys (from [`sluice_schema::archive`], relative to the archive root):
//! - `<table>/_delta_log/<version:020>.json`: Delta commit `version` (0
//!   creates the table);
//! - `<table>/_sluice/state/<version:020>.json`: Sluice's state as of
//!   `version`, a cache of the replay.
//!
//! Both are written with put-if-absent and never overwritten. Only reads
//! and idempotent writes are retried here; the put of a commit is not (see
//! `log.rs`: a put that failed may have landed).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sluice_schema::archive as keys;

use super::commit::SplitKind;
use super::config::CatalogConfig;
use super::error::{Error, Result, is_transient};

/// Where one table's catalog objects are.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: Path,
    logs: bool,
}

impl Layout {
    pub(crate) fn new(prefix: &Path, kind: SplitKind) -> Self {
        Layout {
            prefix: prefix.clone(),
            logs: kind == SplitKind::Logs,
        }
    }

    /// The table's root folder.
    pub(crate) fn table(&self) -> Path {
        self.object(keys::table_prefix(self.logs))
    }

    pub(crate) fn state_caches(&self) -> Path {
        self.object(&keys::state_cache_prefix(self.logs))
    }

    pub(crate) fn commit(&self, version: u64) -> Path {
        self.object(&keys::delta_commit_key(self.logs, version))
    }

    pub(crate) fn state_cache(&self, version: u64) -> Path {
        self.object(&keys::state_cache_key(self.logs, version))
    }

    /// Commit 1 of the catalog before Delta Lake, if the archive has one.
    pub(crate) fn legacy_first_commit(&self) -> Path {
        self.object(&format!(
            "{}/commits/{:020}.json",
            keys::LEGACY_CATALOG_DIR,
            1
        ))
    }

    /// The marker `sluice archive migrate` puts when every split of the old
    /// catalog is in the tables.
    pub(crate) fn legacy_migrated(&self) -> Path {
        self.object(&format!("{}/MIGRATED", keys::LEGACY_CATALOG_DIR))
    }

    /// The marker of the table's schema being this build's.
    pub(crate) fn schema_marker(&self) -> Path {
        self.object(&keys::schema_marker_key(self.logs, keys::SCHEMA_GENERATION))
    }

    /// A key relative to the prefix as a store path.
    pub(crate) fn object(&self, key: &str) -> Path {
        crate::store::object_path(&self.prefix, key)
    }

    /// A store path as a key relative to the prefix, if it is under it.
    pub(crate) fn relative(&self, path: &Path) -> Option<String> {
        let parts: Vec<String> = path
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }
}

/// The version a commit's or state cache's store path stands for.
pub(crate) fn parse_version(path: &Path) -> Option<u64> {
    keys::parse_version_key(path.as_ref())
}

/// The store, with the retry policy of the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Io {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) config: CatalogConfig,
}

/// What a put-if-absent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Created,
    Exists,
}

impl Io {
    /// Runs `op` until it succeeds, fails for good, or the attempts are
    /// spent. Only for calls that are safe to repeat.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if is_transient(&e) && attempt < self.config.retry_attempts => {
                    let wait = self.config.backoff(attempt);
                    tracing::warn!(error = %e, attempt, ?wait, "{what}: transient store error, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(Error::store(what, e)),
            }
        }
    }

    /// The object's bytes, or `None` where there is none.
    pub(crate) async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        let what = format!("failed to read {path}");
        let got = self
            .retry(&what, || async {
                match self.store.get(path).await {
                    Ok(result) => result.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(got)
    }

    pub(crate) async fn exists(&self, path: &Path) -> Result<bool> {
        let what = format!("failed to look up {path}");
        self.retry(&what, || async {
            match self.store.head(path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Every object under `prefix` (the whole listing is retried).
    pub(crate) async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let what = format!("failed to list {prefix}/");
        self.retry(&what, || self.store.list(Some(prefix)).try_collect())
            .await
    }

    /// Put-if-absent of an object whose content is the same whoever writes
    /// it, so a put that failed but landed is simply found to exist.
    pub(crate) async fn put_idempotent(&self, path: &Path, bytes: Bytes) -> Result<Put> {
        let what = format!("failed to write {path}");
        self.retry(&what, || async {
            match self.put_create(path, bytes.clone()).await {
                Ok(()) => Ok(Put::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Exists),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// One put-if-absent, no retry.
    pub(crate) async fn put_create(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(path, PutPayload::from_bytes(bytes), options)
            .await
            .map(|_| ())
    }

    /// Deletes an object; one that is already gone is fine.
    pub(crate) async fn delete(&self, path: &Path) -> Result<()> {
        let what = format!("failed to delete {path}");
        self.retry(&what, || async {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_versions() {
        let layout = Layout::new(&Path::default(), SplitKind::Logs);
        assert_eq!(
            layout.commit(7).as_ref(),
            "logs/_delta_log/00000000000000000007.json"
        );
        assert_eq!(parse_version(&layout.commit(7)), Some(7));
        assert_eq!(parse_version(&layout.state_cache(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_version(&Path::from("logs/_delta_log/7.json")), None);
        assert_eq!(parse_version(&Path::from("logs/_delta_log/x.tmp")), None);

        let layout = Layout::new(&Path::from("archive/a"), SplitKind::Events);
        assert_eq!(
            layout.state_cache(50).as_ref(),
            "archive/a/events/_sluice/state/00000000000000000050.json"
        );
        assert_eq!(layout.table().as_ref(), "archive/a/events");
        let object = layout.object("events/date=2026-11-03/x.parquet");
        assert_eq!(
            object.as_ref(),
            "archive/a/events/date=2026-11-03/x.parquet"
        );
        assert_eq!(
            layout.relative(&object).as_deref(),
            Some("events/date=2026-11-03/x.parquet")
        );
        assert_eq!(layout.relative(&Path::from("other/logs/x")), None);
        assert_eq!(
            layout.legacy_first_commit().as_ref(),
            "archive/a/_catalog/commits/00000000000000000001.json"
        );
    }
}
