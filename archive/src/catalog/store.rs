//! The catalog's objects in the store and the calls that read and write
//! them, with retries of transient errors.
//!
//! Keys, under the archive prefix:
//! - `_catalog/commits/<version:020>.json`: commit `version` (1, 2, 3, …);
//! - `_catalog/checkpoints/<version:020>.json`: the state as of `version`.
//!
//! Both are written with put-if-absent and never overwritten. Only reads
//! and idempotent writes are retried here; the put of a commit is not (see
//! `log.rs`: a put that failed may have landed).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::config::CatalogConfig;
use super::error::{Error, Result, is_transient};

const CATALOG_DIR: &str = "_catalog";
const COMMITS_DIR: &str = "commits";
const CHECKPOINTS_DIR: &str = "checkpoints";

/// Where the catalog's objects are.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: Path,
    commits: Path,
    checkpoints: Path,
}

impl Layout {
    pub(crate) fn new(prefix: &Path) -> Self {
        let catalog = prefix.clone().join(CATALOG_DIR);
        Layout {
            prefix: prefix.clone(),
            commits: catalog.clone().join(COMMITS_DIR),
            checkpoints: catalog.join(CHECKPOINTS_DIR),
        }
    }

    pub(crate) fn checkpoints_dir(&self) -> &Path {
        &self.checkpoints
    }

    pub(crate) fn commit(&self, version: u64) -> Path {
        self.commits.clone().join(file_name(version).as_str())
    }

    pub(crate) fn checkpoint(&self, version: u64) -> Path {
        self.checkpoints.clone().join(file_name(version).as_str())
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

fn file_name(version: u64) -> String {
    format!("{version:020}.json")
}

/// The version a catalog object's name stands for.
pub(crate) fn parse_version(path: &Path) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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
        let layout = Layout::new(&Path::default());
        assert_eq!(
            layout.commit(7).as_ref(),
            "_catalog/commits/00000000000000000007.json"
        );
        assert_eq!(parse_version(&layout.commit(7)), Some(7));
        assert_eq!(parse_version(&layout.checkpoint(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_version(&Path::from("_catalog/commits/7.json")), None);
        assert_eq!(parse_version(&Path::from("_catalog/commits/x.tmp")), None);

        let layout = Layout::new(&Path::from("archive/a"));
        assert_eq!(
            layout.checkpoint(50).as_ref(),
            "archive/a/_catalog/checkpoints/00000000000000000050.json"
        );
        let object = layout.object("logs/date=2026-11-03/x.parquet");
        assert_eq!(object.as_ref(), "archive/a/logs/date=2026-11-03/x.parquet");
        assert_eq!(
            layout.relative(&object).as_deref(),
            Some("logs/date=2026-11-03/x.parquet")
        );
        assert_eq!(layout.relative(&Path::from("other/logs/x")), None);
    }
}
