//! The janitor: deletes split objects nothing needs any more.
//!
//! An object under the table's root (data files and `_index/`; never the
//! `_delta_log/` or Sluice's `_sluice/`) is an orphan when no live split
//! references it, no split removed within `removed_grace_secs` does (a
//! query that planned before the removal may still read it), and it was
//! last modified before the grace period. That covers the objects of
//! failed attempts (uploaded, never committed) and of splits that
//! compaction or retention removed: Delta's `vacuum`, with the indexes
//! Delta tools do not know about.
//!
//! Safety rests on one rule: a draft is committed within `max_draft_age`
//! of its start (`commit` refuses older ones), and the grace period is at
//! least twice that, so the objects of a draft that may still commit are
//! never old enough to be taken.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectMeta;
use object_store::path::Path;

use super::error::{Error, Result};
use super::log::Catalog;
use super::state::REMOVED_RETENTION_MS;

impl Catalog {
    /// Orphaned objects older than `grace` (after reading the latest
    /// commits).
    pub async fn orphans(&mut self, grace: Duration) -> Result<Vec<Path>> {
        let found = self.orphans_at(SystemTime::now(), grace).await?;
        Ok(found.into_iter().map(|meta| meta.location).collect())
    }

    /// [`orphans`](Self::orphans) as of `now`, with their metadata.
    pub async fn orphans_at(
        &mut self,
        now: SystemTime,
        grace: Duration,
    ) -> Result<Vec<ObjectMeta>> {
        self.check_grace(grace)?;
        self.refresh().await?;
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let grace_ms = grace.as_millis() as i64;
        let cutoff_ms = now_ms - grace_ms;
        let removed_cutoff_ms = now_ms - self.io.config.removed_grace_secs as i64 * 1000;
        let referenced = self.referenced(removed_cutoff_ms.max(cutoff_ms));
        let mut orphans = Vec::new();
        let table = self.layout.table();
        for meta in self.io.list(&table).await? {
            if meta.last_modified.timestamp_millis() > cutoff_ms {
                continue;
            }
            let Some(key) = self.layout.relative(&meta.location) else {
                continue;
            };
            let within: Vec<&str> = key.split('/').skip(1).collect();
            if within.first().is_some_and(|top| {
                *top == sluice_schema::archive::DELTA_LOG_DIR
                    || *top == sluice_schema::archive::SLUICE_DIR
            }) {
                continue;
            }
            if !is_referenced(&referenced, &key) {
                orphans.push(meta);
            }
        }
        orphans.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(orphans)
    }

    /// Deletes the orphans older than `grace`; returns what it deleted.
    pub async fn delete_orphans(&mut self, grace: Duration) -> Result<Vec<Path>> {
        self.delete_orphans_at(SystemTime::now(), grace).await
    }

    /// [`delete_orphans`](Self::delete_orphans) as of `now`.
    pub async fn delete_orphans_at(
        &mut self,
        now: SystemTime,
        grace: Duration,
    ) -> Result<Vec<Path>> {
        let orphans = self.orphans_at(now, grace).await?;
        let mut deleted = Vec::with_capacity(orphans.len());
        for meta in orphans {
            self.io.delete(&meta.location).await?;
            tracing::info!(key = %meta.location, "deleted an orphaned archive object");
            deleted.push(meta.location);
        }
        Ok(deleted)
    }

    /// Deletes the objects of a draft that ended in
    /// [`CommitOutcome::Conflict`](super::CommitOutcome::Conflict) (never
    /// after an error: the draft may have landed).
    pub async fn discard(&self, draft: &super::CommitDraft) -> Result<()> {
        for key in draft.added_object_keys() {
            self.io.delete(&self.layout.object(key)).await?;
        }
        Ok(())
    }

    fn check_grace(&self, grace: Duration) -> Result<()> {
        let min = self.io.config.max_draft_age() * 2;
        if grace < min {
            return Err(Error::Config(format!(
                "janitor grace period {} s: must be at least twice catalog.max_draft_age_secs ({} s)",
                grace.as_secs(),
                min.as_secs()
            )));
        }
        if grace.as_millis() >= u128::from(REMOVED_RETENTION_MS) {
            return Err(Error::Config(format!(
                "janitor grace period {} s: must be shorter than the {} s removed splits are remembered",
                grace.as_secs(),
                REMOVED_RETENTION_MS / 1000
            )));
        }
        Ok(())
    }

    /// Object keys (as the store spells them, relative to the prefix) of live
    /// splits and of splits removed after `cutoff_ms`.
    fn referenced(&self, cutoff_ms: i64) -> BTreeSet<String> {
        let state = self.state();
        let live = state.splits().values().flat_map(|s| s.object_keys());
        let recently_removed = state
            .removed_splits()
            .values()
            .filter(|r| r.removed_unix_ms as i64 > cutoff_ms)
            .flat_map(|r| r.object_keys());
        live.chain(recently_removed)
            .filter_map(|key| self.layout.relative(&self.layout.object(key)))
            .collect()
    }
}

/// `key` is referenced itself, or lies under a referenced key used as a
/// folder (an index stored as several objects).
fn is_referenced(referenced: &BTreeSet<String>, key: &str) -> bool {
    if referenced.contains(key) {
        return true;
    }
    let mut end = key.len();
    while let Some(slash) = key[..end].rfind('/') {
        if referenced.contains(&key[..slash]) {
            return true;
        }
        end = slash;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_as_object_or_folder() {
        let set: BTreeSet<String> = ["logs/a.parquet", "logs/idx/a"]
            .into_iter()
            .map(String::from)
            .collect();
        assert!(is_referenced(&set, "logs/a.parquet"));
        assert!(is_referenced(&set, "logs/idx/a/meta.json"));
        assert!(!is_referenced(&set, "logs/idx/ab"));
        assert!(!is_referenced(&set, "logs/b.parquet"));
        assert!(!is_referenced(&set, "logs"));
    }
}
