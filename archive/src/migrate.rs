//! `sluice archive migrate`: an archive in the format before Delta Lake (a
//! `_catalog/` log, unsigned columns, nanosecond `ts`, indexes beside their
//! files) into the two Delta tables.
//!
//! Every live split of the old catalog is read, written again in today's
//! types (a new file and, for logs, a new index: rows sort differently now
//! that `source_id` is signed) and committed to its table. Progress is a
//! Delta application transaction committed with the splits, app id
//! `sluice-migrate/legacy-splits/0` whose version is how many of the old
//! table's splits (in key order) are in the new one, so a migration
//! stopped anywhere, even by `kill -9`, resumes exactly where its last
//! commit left it: nothing is migrated twice, nothing skipped. The new
//! objects of a batch that did not commit are orphans for the janitor.
//!
//! When both tables hold every split, one last commit per table records the
//! old catalog's bus positions (so the archiver resumes where it was), a
//! marker `_catalog/MIGRATED` is put, and the old objects are deleted: the
//! old splits, then the old catalog, the marker last. Until the marker
//! exists every other reader and writer refuses the archive.

use std::time::Instant;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use sluice_schema::archive::{self as keys, Date};

use crate::catalog::{
    BusCheckpoint, Catalog, CatalogConfig, CommitOutcome, SplitEntry, SplitKind,
    legacy::LegacyCatalog, split_entry,
};
use crate::scan::split_rows;
use crate::split::{self, SplitOptions};
use crate::store::Store;
use crate::{Error, Result};

/// The txn group of the migration's progress.
pub const MIGRATE_GROUP: &str = "sluice-migrate";
const PROGRESS_TOPIC: &str = "legacy-splits";
/// The archivers' consumer group, whose old positions move to the tables.
const ARCHIVER_GROUP: &str = "sluice-archiver";
/// How a migration writes.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// How the new splits are written.
    pub split: SplitOptions,
    /// Bytes of old splits per commit at most (a commit takes at least
    /// one split).
    pub batch_bytes: u64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            split: SplitOptions::default(),
            batch_bytes: 256 << 20,
        }
    }
}

/// What a migration did (this run), for its report.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    /// Old live splits, per table: logs, events.
    pub splits: [usize; 2],
    /// Of those, migrated by earlier runs (resumed after them).
    pub already: [usize; 2],
    /// Rows rewritten by this run.
    pub rows: u64,
    /// Bytes of old data and index objects read (this run).
    pub bytes_read: u64,
    /// Bytes of new data and index objects written (this run).
    pub bytes_written: u64,
    /// Commits this run made.
    pub commits: usize,
    /// Old objects deleted at the end.
    pub deleted: usize,
    /// Wall time of this run.
    pub elapsed: std::time::Duration,
    /// False when there was no old catalog (nothing to do).
    pub found: bool,
}

/// A line of progress, after each commit.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The table being filled.
    pub kind: SplitKind,
    /// Old splits of that table in the new one so far.
    pub done: usize,
    /// Old splits of that table in all.
    pub total: usize,
    /// Bytes of old objects read so far by this run.
    pub bytes_read: u64,
}

/// Migrates the archive of `store` (see the module documentation),
/// reporting each commit to `progress`.
pub async fn migrate(
    store: &Store,
    config: CatalogConfig,
    options: &MigrateOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<Migration> {
    let started = Instant::now();
    let mut report = Migration::default();
    let marker = store.object_path(&format!("{}/MIGRATED", keys::LEGACY_CATALOG_DIR));
    let migrated = store.store.head(&marker).await.is_ok();
    let legacy = match LegacyCatalog::open(store.store.clone(), &store.prefix).await {
        Ok(legacy) => legacy,
        // The old catalog is being deleted: the splits are done.
        Err(e) if migrated => {
            tracing::debug!(error = %e, "old catalog partly deleted");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let Some(legacy) = legacy else {
        if migrated {
            report.deleted += delete_old_catalog(store).await?;
        }
        report.found = migrated;
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    report.found = true;
    let old: Vec<SplitEntry> = legacy.state().splits().values().cloned().collect();
    if !migrated {
        for (slot, kind) in SplitKind::ALL.into_iter().enumerate() {
            let mut splits: Vec<&SplitEntry> = old.iter().filter(|s| s.kind == kind).collect();
            splits.sort_by(|a, b| a.key.cmp(&b.key));
            report.splits[slot] = splits.len();
            migrate_table(
                store,
                &config,
                options,
                kind,
                &splits,
                &legacy,
                slot,
                &mut report,
                &mut progress,
            )
            .await?;
        }
        put_marker(store, &marker).await?;
    }
    // The old splits (live, and removed but not yet deleted by the old
    // janitor), then the old catalog (its first commit and the marker last:
    // until then, an interrupted run resumes here).
    let removed = legacy.state().removed_splits().values();
    let old_keys: Vec<String> = old
        .iter()
        .flat_map(|s| s.object_keys().map(String::from))
        .chain(removed.flat_map(|r| r.object_keys().map(String::from)))
        .collect();
    for key in old_keys {
        delete(store, &key).await?;
        report.deleted += 1;
    }
    report.deleted += delete_old_catalog(store).await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn migrate_table(
    store: &Store,
    config: &CatalogConfig,
    options: &MigrateOptions,
    kind: SplitKind,
    splits: &[&SplitEntry],
    legacy: &LegacyCatalog,
    slot: usize,
    report: &mut Migration,
    progress: &mut impl FnMut(&Progress),
) -> Result<()> {
    let mut catalog =
        Catalog::open_migrating(store.store.clone(), &store.prefix, kind, config.clone()).await?;
    let done = |catalog: &Catalog| {
        catalog
            .state()
            .bus_positions(MIGRATE_GROUP)
            .first()
            .map_or(0, |p| p.offset as usize)
    };
    let mut at = done(&catalog);
    report.already[slot] = at;
    while at < splits.len() {
        let mut draft = catalog.draft("sluice-migrate");
        let mut batch_bytes = 0;
        let mut next = at;
        while next < splits.len()
            && (next == at || batch_bytes + splits[next].data_bytes <= options.batch_bytes)
        {
            let old = splits[next];
            batch_bytes += old.data_bytes + old.index_bytes;
            let (entry, written) = rewrite(store, &options.split, old).await?;
            report.bytes_read += old.data_bytes + old.index_bytes;
            report.bytes_written += written;
            report.rows += entry.rows;
            draft.add_split(entry);
            next += 1;
        }
        draft.set_bus(BusCheckpoint::new(
            MIGRATE_GROUP,
            &[sluice_schema::topics::Position::new(
                PROGRESS_TOPIC,
                0,
                next as u64,
            )],
        ));
        commit(&mut catalog, &mut draft).await?;
        report.commits += 1;
        at = next;
        progress(&Progress {
            kind,
            done: at,
            total: splits.len(),
            bytes_read: report.bytes_read,
        });
    }
    // The archivers' positions in the old catalog, for this table's topic.
    let topic = match kind {
        SplitKind::Logs => sluice_schema::topics::LOGS,
        SplitKind::Events => sluice_schema::topics::EVENTS,
    };
    let positions: Vec<_> = legacy
        .state()
        .bus_positions(ARCHIVER_GROUP)
        .into_iter()
        .filter(|p| p.topic == topic)
        .collect();
    let recorded = catalog.state().bus_positions(ARCHIVER_GROUP);
    if !positions.is_empty() && positions.iter().any(|p| !recorded.contains(p)) {
        let mut draft = catalog.draft("sluice-migrate");
        draft.set_bus(BusCheckpoint::new(ARCHIVER_GROUP, &positions));
        commit(&mut catalog, &mut draft).await?;
        report.commits += 1;
    }
    if let Err(e) = catalog.write_checkpoint().await {
        tracing::warn!(error = %e, "migrate: checkpoint failed (the next one is written later)");
    }
    Ok(())
}

async fn commit(catalog: &mut Catalog, draft: &mut crate::catalog::CommitDraft) -> Result<()> {
    match catalog.commit_rebasing(draft).await? {
        CommitOutcome::Committed(_) => Ok(()),
        CommitOutcome::Conflict { .. } => Err(Error::Corrupt(format!(
            "another `sluice archive migrate` (or writer) committed to {} meanwhile; run it again alone",
            catalog.table_path()
        ))),
    }
}

/// Reads an old split and writes it again in today's format under a new
/// id: its entry (with what it holds) and the bytes written.
async fn rewrite(
    store: &Store,
    options: &SplitOptions,
    old: &SplitEntry,
) -> Result<(SplitEntry, u64)> {
    let (logs, events) = split_rows(store, &old.key, old.kind).await?;
    let date =
        Date::parse(&old.date).map_err(|e| Error::Corrupt(format!("split {}: {e}", old.key)))?;
    let id = keys::split_id_new(sluice_schema::time::now_unix_nanos());
    let options = options.clone();
    let old_key = old.key.clone();
    let (kind, hour) = (old.kind, old.hour);
    let written = tokio::task::spawn_blocking(move || -> Result<_> {
        let corrupt = |e: split::SplitError| Error::Corrupt(format!("split {old_key}: {e}"));
        Ok(match (kind, hour) {
            (SplitKind::Logs, Some(hour)) => {
                let split = split::write_log_split(logs, &options).map_err(corrupt)?;
                let key = keys::log_split_key(date, hour, &id);
                let index = keys::log_index_key(date, hour, &id);
                let entry = split_entry(
                    key.clone(),
                    Some(index.clone()),
                    kind,
                    date,
                    Some(hour),
                    &split.stats,
                );
                (entry, vec![(key, split.parquet), (index, split.index)])
            }
            (SplitKind::Logs, None) => {
                return Err(Error::Corrupt(format!("log split {old_key} has no hour")));
            }
            (SplitKind::Events, _) => {
                let split = split::write_event_split(events, &options).map_err(corrupt)?;
                let key = keys::event_split_key(date, &id);
                let entry = split_entry(key.clone(), None, kind, date, None, &split.stats);
                (entry, vec![(key, split.parquet)])
            }
        })
    })
    .await
    .map_err(|e| Error::Corrupt(format!("split writer panicked: {e}")))??;
    let (entry, objects) = written;
    if entry.rows != old.rows {
        return Err(Error::Corrupt(format!(
            "split {}: the old catalog says {} rows, its file holds {}",
            old.key, old.rows, entry.rows
        )));
    }
    let mut bytes = 0;
    for (key, data) in objects {
        bytes += data.len() as u64;
        put(store, &key, data).await?;
    }
    Ok((entry, bytes))
}

async fn put(store: &Store, key: &str, data: Bytes) -> Result<()> {
    let path = store.object_path(key);
    store
        .store
        .put(&path, PutPayload::from_bytes(data))
        .await
        .map(|_| ())
        .map_err(|e| Error::store(format!("failed to write {path}"), e))
}

async fn put_marker(store: &Store, marker: &object_store::path::Path) -> Result<()> {
    store
        .store
        .put(
            marker,
            PutPayload::from_static(b"every split of this catalog is in the Delta tables\n"),
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::store(format!("failed to write {marker}"), e))
}

async fn delete(store: &Store, key: &str) -> Result<()> {
    let path = store.object_path(key);
    match store.store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(format!("failed to delete {path}"), e)),
    }
}

/// Deletes `_catalog/`: checkpoints, then commits from the last, the
/// first commit and the marker last. Returns how many objects it deleted.
async fn delete_old_catalog(store: &Store) -> Result<usize> {
    use futures::TryStreamExt;
    let root = store.object_path(keys::LEGACY_CATALOG_DIR);
    let mut objects: Vec<object_store::path::Path> = store
        .store
        .list(Some(&root))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("failed to list {root}"), e))?;
    // Order: everything else (later commits first), then commit 1, then
    // the marker.
    objects.sort_by_key(|p| {
        let text = p.as_ref();
        let marker = text.ends_with("MIGRATED");
        let first_commit = text.ends_with(&format!("commits/{:020}.json", 1));
        (marker, first_commit, std::cmp::Reverse(text.to_string()))
    });
    for path in &objects {
        match store.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store(format!("failed to delete {path}"), e)),
        }
    }
    Ok(objects.len())
}
