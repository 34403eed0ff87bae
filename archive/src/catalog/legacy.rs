//! The catalog before Delta Lake, read only, for `sluice archive migrate`:
//! `_catalog/commits/<version:020>.json` (put-if-absent JSON commits from
//! version one) and `_catalog/checkpoints/<version:020>.json` (the state
//! every 50 commits), with log splits' indexes beside their Parquet files.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use sluice_schema::archive::LEGACY_CATALOG_DIR;

use super::config::CatalogConfig;
use super::error::{Error, Result};
use super::log::{decode_checkpoint, decode_legacy_commit};
use super::state::CatalogState;
use super::store::{Io, parse_version};

/// The state of an archive's catalog before Delta Lake.
#[derive(Debug)]
pub struct LegacyCatalog {
    state: CatalogState,
    io: Io,
    root: Path,
}

impl LegacyCatalog {
    /// Reads the old catalog under `prefix`: its latest checkpoint and the
    /// commits after it. `None` when there is none.
    pub async fn open(store: Arc<dyn ObjectStore>, prefix: &Path) -> Result<Option<LegacyCatalog>> {
        let io = Io {
            store,
            config: CatalogConfig::default(),
        };
        let root = crate::store::object_path(prefix, LEGACY_CATALOG_DIR);
        let mut catalog = LegacyCatalog {
            state: CatalogState::default(),
            io,
            root,
        };
        let checkpoints = catalog.root.clone().join("checkpoints");
        let mut listed: Vec<(u64, Path)> = catalog
            .io
            .list(&checkpoints)
            .await?
            .into_iter()
            .filter_map(|m| parse_version(&m.location).map(|v| (v, m.location)))
            .collect();
        listed.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        for (version, path) in listed {
            let Some(bytes) = catalog.io.get(&path).await? else {
                continue;
            };
            match decode_checkpoint(&path, version, &bytes) {
                Ok(state) => {
                    catalog.state = state;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable old checkpoint"),
            }
        }
        loop {
            let version = catalog.state.version() + 1;
            let path = catalog.commit_path(version);
            let Some(bytes) = catalog.io.get(&path).await? else {
                break;
            };
            let commit = decode_legacy_commit(&path, version, &bytes)?;
            catalog.state.apply(&commit);
        }
        if catalog.state.version() == 0 {
            return Ok(None);
        }
        if catalog
            .io
            .exists(&catalog.commit_path(catalog.state.version() + 2))
            .await?
        {
            return Err(Error::Gap {
                missing: catalog.state.version() + 1,
                key: catalog.commit_path(catalog.state.version() + 1).to_string(),
            });
        }
        Ok(Some(catalog))
    }

    /// The state after its last commit.
    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    fn commit_path(&self, version: u64) -> Path {
        self.root
            .clone()
            .join("commits")
            .join(format!("{version:020}.json").as_str())
    }

    /// Every object of the old catalog (`_catalog/…`).
    pub async fn objects(&self) -> Result<Vec<Path>> {
        Ok(self
            .io
            .list(&self.root)
            .await?
            .into_iter()
            .map(|m| m.location)
            .collect())
    }
}
