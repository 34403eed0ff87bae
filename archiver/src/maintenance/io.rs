//! Reading and writing split objects, retrying what may go away by itself
//! (timeouts, 5xx answers) a few times with backoff.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::{Error, Result};
use sluice_archive::store::Store;

const ATTEMPTS: u32 = 5;

async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                let e = Error::store(what, e);
                if !e.is_retryable() || attempt >= ATTEMPTS {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "maintenance: store call failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

/// The bytes of an object.
pub(crate) async fn get(store: &Store, path: &Path) -> Result<Bytes> {
    retry(&format!("failed to read {path}"), || async {
        store.store.get(path).await?.bytes().await
    })
    .await
}

/// Writes an object.
pub(crate) async fn put(store: &Store, path: &Path, bytes: Bytes) -> Result<()> {
    retry(&format!("failed to upload {path}"), || async {
        store
            .store
            .put(path, PutPayload::from_bytes(bytes.clone()))
            .await
            .map(|_| ())
    })
    .await
}
