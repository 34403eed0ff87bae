//! Where the archive lives: `file:///PATH`, `s3://BUCKET[/PREFIX]` or
//! `memory://` (tests), opened as an `Arc<dyn ObjectStore>` plus the key
//! prefix under which the archive's objects go.
//!
//! S3 settings (credentials, region, a custom endpoint such as a local
//! S3-compatible server, `allow_http`) are passed in as `(key, value)` pairs
//! with object_store's names (`aws_access_key_id`, `aws_endpoint`,
//! `aws_allow_http`, …): the binary takes them from `AWS_*` variables, the
//! library never reads the environment.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:///PATH`: a local directory, absolute, created when opened.
    File(PathBuf),
    /// `s3://BUCKET[/PREFIX]`: an S3 or S3-compatible bucket.
    S3 {
        /// Bucket name: the URL's first segment.
        bucket: String,
        /// Key prefix of the archive in the bucket, without leading or
        /// trailing `/`; empty for the bucket's root.
        prefix: String,
    },
    /// `memory://`: an in-memory store, empty when opened and gone with the
    /// process (tests).
    Memory,
}

/// A store URL that is not one of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store {url:?}: {reason}")]
pub struct StoreUrlError {
    /// The text as given.
    pub url: String,
    /// Which forms are accepted, or what the text lacks.
    pub reason: &'static str,
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |reason| StoreUrlError {
            url: url.to_string(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(error("a file store needs an absolute path, `file:///PATH`"));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(error("no bucket, expected `s3://BUCKET/PREFIX`"));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        Err(error(
            "expected `file:///PATH`, `s3://BUCKET/PREFIX` or `memory://`",
        ))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(path) => write!(f, "file://{}", path.display()),
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::Memory => f.write_str("memory://"),
        }
    }
}

/// An opened store and the prefix of the archive's keys in it.
#[derive(Clone)]
pub struct Store {
    /// The URL the store was opened from; `Debug` shows only this.
    pub url: StoreUrl,
    /// The opened object store; a file store's root is its directory.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of the archive's keys in `store`: the S3 URL's prefix, empty for
    /// file and memory stores.
    pub prefix: Path,
}

impl Store {
    /// The store path of an object key (relative to the prefix).
    pub fn object_path(&self, key: &str) -> Path {
        object_path(&self.prefix, key)
    }
}

/// The store path of `key` under `prefix`.
pub fn object_path(prefix: &Path, key: &str) -> Path {
    key.split('/')
        .filter(|part| !part.is_empty())
        .fold(prefix.clone(), |path, part| path.join(part))
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl StoreUrl {
    /// Opens the store; a file store's directory is created.
    /// `s3_options` are object_store S3 settings (ignored for other stores).
    pub fn open(&self, s3_options: &[(String, String)]) -> crate::Result<Store> {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match self {
            StoreUrl::File(path) => {
                std::fs::create_dir_all(path).map_err(|e| crate::Error::Store {
                    what: format!("failed to create the archive directory {}", path.display()),
                    source: object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                })?;
                let local = LocalFileSystem::new_with_prefix(path).map_err(|source| {
                    crate::Error::store(format!("failed to open {self}"), source)
                })?;
                (Arc::new(local), Path::default())
            }
            StoreUrl::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
                for (key, value) in s3_options {
                    let key: AmazonS3ConfigKey = key.parse().map_err(|source| {
                        crate::Error::store(format!("S3 setting {key:?}"), source)
                    })?;
                    builder = builder.with_config(key, value);
                }
                let s3 = builder.build().map_err(|source| {
                    crate::Error::store(format!("failed to open {self}"), source)
                })?;
                (Arc::new(s3), Path::from(prefix.as_str()))
            }
            StoreUrl::Memory => (Arc::new(InMemory::new()), Path::default()),
        };
        Ok(Store {
            url: self.clone(),
            store,
            prefix,
        })
    }
}

/// The S3 settings among `vars` (the process's environment, read by the
/// binary): `AWS_*` names that object_store knows, lowercased as its
/// configuration keys.
pub fn s3_options(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        for (text, want) in [
            ("file:///a/b", StoreUrl::File("/a/b".into())),
            (
                "s3://bucket/some/prefix/",
                StoreUrl::S3 {
                    bucket: "bucket".into(),
                    prefix: "some/prefix".into(),
                },
            ),
            (
                "s3://bucket",
                StoreUrl::S3 {
                    bucket: "bucket".into(),
                    prefix: "".into(),
                },
            ),
            ("memory://", StoreUrl::Memory),
        ] {
            let url: StoreUrl = text.parse().unwrap();
            assert_eq!(url, want);
            assert_eq!(url.to_string().parse::<StoreUrl>().unwrap(), want);
        }
        for bad in ["file://relative", "s3://", "ftp://x", "/plain/path"] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn a_file_store_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::File(dir.path().join("archive"));
        url.open(&[]).unwrap();
        assert!(dir.path().join("archive").is_dir());
    }

    #[test]
    fn unknown_s3_settings_are_named() {
        let url: StoreUrl = "s3://b".parse().unwrap();
        let e = url
            .open(&[("aws_no_such_thing".into(), "1".into())])
            .unwrap_err();
        assert!(e.to_string().contains("aws_no_such_thing"), "{e}");
    }
}
