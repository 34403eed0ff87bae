//! [`Catalog`]: one table's Delta log. Opening it (Sluice's latest state
//! cache, then the commits after it), following it, and committing to it.
//!
//! Commit `v` is written with put-if-absent at `v = base + 1` (on local
//! files and on S3, whose conditional put needs no lock table), so of two
//! writers on the same base exactly one wins; the other gets
//! [`CommitOutcome::Conflict`] with the commits it missed. A put that fails
//! transiently may still have landed (object_store also retries a 5xx
//! itself, so even `AlreadyExists` may be our own write): the writer then
//! reads commit `v` back and compares its `sluiceCommitId`, and only puts
//! again when `v` is absent. The tail of the log is read by GET-ing `v + 1`,
//! `v + 2`, … until one is absent, never by listing.
//!
//! Version 0 creates the table; the first writer puts it (put-if-absent,
//! so racing writers agree on one) before its first commit.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use super::commit::{
    Commit, CommitDraft, CommitOutcome, FORMAT, SplitEntry, SplitKind, now_unix_ms,
};
use super::config::CatalogConfig;
use super::delta;
use super::error::{Error, Result, is_transient};
use super::state::CatalogState;
use super::store::{Io, Layout, Put, parse_version};

/// Commits kept in memory to answer [`CommitOutcome::Conflict`] without
/// reading them again.
const RECENT_COMMITS: usize = 256;

/// Commits read at once when catching up.
pub const MAX_PARALLEL_READS: u64 = 32;

/// A state cache object: the state as of `state.version`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    format: u32,
    created_unix_ms: u64,
    state: CatalogState,
}

/// One reader or writer of one table's catalog under an archive prefix.
#[derive(Debug)]
pub struct Catalog {
    pub(crate) io: Io,
    pub(crate) layout: Layout,
    kind: SplitKind,
    state: CatalogState,
    recent: VecDeque<Commit>,
    /// Version 0 (the table's creation) is known to exist.
    created: bool,
}

impl Catalog {
    /// Opens `kind`'s table under `prefix` with the default configuration.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        kind: SplitKind,
    ) -> Result<Catalog> {
        Catalog::open_with(store, prefix, kind, CatalogConfig::default()).await
    }

    /// Opens both tables of the archive in `store`, in the order of
    /// [`SplitKind::ALL`].
    pub async fn open_tables(
        store: &crate::store::Store,
        config: &CatalogConfig,
    ) -> Result<[Catalog; 2]> {
        let open =
            |kind| Catalog::open_with(store.store.clone(), &store.prefix, kind, config.clone());
        Ok([open(SplitKind::Logs).await?, open(SplitKind::Events).await?])
    }

    /// Loads the latest readable state cache and replays the commits after
    /// it. A table that does not exist yet is an empty catalog (version 0);
    /// an archive in the format before Delta Lake is an error
    /// ([`Error::Legacy`]).
    pub async fn open_with(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        kind: SplitKind,
        config: CatalogConfig,
    ) -> Result<Catalog> {
        Catalog::open_at(store, prefix, kind, config, None).await
    }

    /// [`open_with`](Self::open_with) as of `version` (a time-travel read:
    /// the state after commit `version`, or the latest if it is beyond it).
    pub async fn open_at(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        kind: SplitKind,
        config: CatalogConfig,
        version: Option<u64>,
    ) -> Result<Catalog> {
        Catalog::open_inner(store, prefix, kind, config, version, false).await
    }

    /// Opens a table that `sluice archive migrate` is filling from the
    /// catalog before Delta Lake (which every other open refuses until the
    /// migration is done).
    pub(crate) async fn open_migrating(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        kind: SplitKind,
        config: CatalogConfig,
    ) -> Result<Catalog> {
        Catalog::open_inner(store, prefix, kind, config, None, true).await
    }

    async fn open_inner(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        kind: SplitKind,
        config: CatalogConfig,
        version: Option<u64>,
        migrating: bool,
    ) -> Result<Catalog> {
        config.validate()?;
        let mut catalog = Catalog {
            io: Io { store, config },
            layout: Layout::new(prefix, kind),
            kind,
            state: CatalogState::default(),
            recent: VecDeque::new(),
            created: false,
        };
        if let Some(state) = catalog.load_latest_checkpoint(version).await? {
            catalog.state = state;
            catalog.created = true;
        }
        if !catalog.created {
            catalog.created = catalog.read_created().await?;
        }
        // An archive in the format before Delta Lake, not (fully) migrated:
        // reading or writing the tables now would miss its splits, and the
        // janitor would take them for orphans.
        if !migrating
            && catalog
                .io
                .exists(&catalog.layout.legacy_first_commit())
                .await?
            && !catalog.io.exists(&catalog.layout.legacy_migrated()).await?
        {
            return Err(Error::Legacy {
                key: catalog.layout.legacy_first_commit().to_string(),
            });
        }
        match version {
            Some(v) => catalog.refresh_to(v).await?,
            None => catalog.refresh().await?,
        };
        Ok(catalog)
    }

    /// Which table this is.
    pub fn kind(&self) -> SplitKind {
        self.kind
    }

    /// The store path of the table's root.
    pub fn table_path(&self) -> Path {
        self.layout.table()
    }

    /// Whether version 0 exists and is Sluice's table of this kind.
    async fn read_created(&self) -> Result<bool> {
        let path = self.layout.commit(0);
        match self.io.get(&path).await? {
            Some(bytes) => {
                delta::check_created(&path, self.kind, &bytes)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Creates the table (version 0: its protocol and schema) if it does
    /// not exist yet, so that other engines can read it even while it is
    /// empty. Writers call it when they open; a commit does it too.
    ///
    /// A table an earlier build created gets this build's schema first
    /// (see [`upgrade_schema`](Self::upgrade_schema)).
    pub async fn create_table(&mut self) -> Result<()> {
        self.ensure_created().await?;
        self.upgrade_schema().await.map(|_| ())
    }

    /// Brings the schema of a table created by an earlier build up to this
    /// build's: one commit whose `metaData` adds the new columns (Delta's
    /// `ADD COLUMNS`; files written before read them as null), then the
    /// table's `_sluice/schema-N` marker so later opens need one HEAD.
    /// Returns whether it committed. Two writers upgrading at once may both
    /// commit; the second `metaData` is the same schema again.
    pub async fn upgrade_schema(&mut self) -> Result<bool> {
        let marker = self.layout.schema_marker();
        if self.io.exists(&marker).await? {
            return Ok(false);
        }
        let first = self.layout.commit(0);
        let Some(bytes) = self.io.get(&first).await? else {
            return Ok(false);
        };
        let Some(metadata) = delta::metadata_to_upgrade(&first, self.kind, &bytes)? else {
            return Ok(false);
        };
        let commit_id = format!("{:016x}", sluice_schema::random_u64());
        let mut attempt = 1;
        loop {
            self.refresh().await?;
            let path = self.layout.commit(self.state.version() + 1);
            let bytes = delta::add_columns(&metadata, &commit_id, now_unix_ms());
            match self.io.put_create(&path, bytes.into()).await {
                Ok(()) => break,
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) if is_transient(&e) && attempt < self.io.config.retry_attempts => {
                    tokio::time::sleep(self.io.config.backoff(attempt)).await;
                }
                Err(e) => return Err(Error::store(format!("failed to write {path}"), e)),
            }
            attempt += 1;
            if attempt > 100 {
                return Err(Error::Delta {
                    what: format!(
                        "failed to add this build's columns to {}",
                        self.layout.table()
                    ),
                    detail: "every one of 100 versions tried was taken by another writer".into(),
                });
            }
        }
        self.refresh().await?;
        tracing::info!(
            table = delta::table_name(self.kind),
            "added this build's columns to the table's schema"
        );
        self.io
            .put_idempotent(&marker, Bytes::from_static(b"{}\n"))
            .await?;
        Ok(true)
    }

    /// Puts version 0 if it is not there: the table's protocol and schema.
    async fn ensure_created(&mut self) -> Result<()> {
        if self.created {
            return Ok(());
        }
        let bytes =
            delta::create_table(self.kind, self.io.config.checkpoint_interval, now_unix_ms());
        self.io
            .put_idempotent(&self.layout.commit(0), bytes.into())
            .await?;
        // Ours or a racing writer's: either way check what is there.
        self.created = self.read_created().await?;
        Ok(())
    }

    /// The state as of the last commit read.
    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    /// The version of the last commit read or written (0: an empty catalog).
    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// The configuration the catalog was opened with.
    pub fn config(&self) -> &CatalogConfig {
        &self.io.config
    }

    /// The store path of an object key (relative to the archive prefix).
    pub fn object_path(&self, key: &str) -> Path {
        self.layout.object(key)
    }

    /// The store path of commit `version`.
    pub fn commit_path(&self, version: u64) -> Path {
        self.layout.commit(version)
    }

    /// The store path of the state cache of `version`.
    pub fn checkpoint_path(&self, version: u64) -> Path {
        self.layout.state_cache(version)
    }

    /// A new draft on top of the current state.
    pub fn draft(&self, writer: impl Into<String>) -> CommitDraft {
        CommitDraft::new(writer.into(), &self.state)
    }

    /// Reads and applies the commits after the current version; returns how
    /// many. A missing commit followed by a present one is an error
    /// ([`Error::Gap`]), as is a commit that does not parse.
    ///
    /// Reads one commit, then (while every read finds one) 2, 4, … up to
    /// [`MAX_PARALLEL_READS`] at a time: a follower that is up to date pays
    /// one GET, one that is far behind does not pay a round trip per commit.
    pub async fn refresh(&mut self) -> Result<u64> {
        self.refresh_to(u64::MAX).await
    }

    /// [`refresh`](Self::refresh), stopping after commit `last`.
    pub async fn refresh_to(&mut self, last: u64) -> Result<u64> {
        let mut applied = 0;
        let mut batch = 1;
        loop {
            let next = self.state.version() + 1;
            if next > last {
                return Ok(applied);
            }
            let end = (next + batch).min(last.saturating_add(1));
            let reads = (next..end).map(|v| self.read_commit(v));
            let results = futures::future::join_all(reads).await;
            for (version, result) in (next..).zip(results) {
                match result? {
                    Some(commit) => {
                        self.apply(commit);
                        applied += 1;
                    }
                    None => {
                        self.check_no_gap(version).await?;
                        return Ok(applied);
                    }
                }
            }
            batch = (batch * 2).min(MAX_PARALLEL_READS);
        }
    }

    /// The commits after `version` up to the current one.
    pub async fn commits_since(&self, version: u64) -> Result<Vec<Commit>> {
        let mut out = Vec::new();
        for v in version + 1..=self.state.version() {
            match self.recent.iter().find(|c| c.version == v) {
                Some(commit) => out.push(commit.clone()),
                None => match self.read_commit(v).await? {
                    Some(commit) => out.push(commit),
                    None => {
                        return Err(Error::Gap {
                            missing: v,
                            key: self.layout.commit(v).to_string(),
                        });
                    }
                },
            }
        }
        Ok(out)
    }

    /// Commits `draft` as the version after its base.
    ///
    /// - [`CommitOutcome::Committed`]: it is in the log (possibly by an
    ///   earlier call for the same draft whose answer was lost).
    /// - [`CommitOutcome::Conflict`]: others committed after the draft's base
    ///   and the draft is not in the log, nor can an earlier attempt of it
    ///   land later (its version is taken). Its objects may be deleted.
    /// - `Err`: the outcome may be unknown (a transient error that outlasted
    ///   the retries): call again with the same draft, or leave its objects
    ///   to the janitor, but never delete them.
    pub async fn commit(&mut self, draft: &CommitDraft) -> Result<CommitOutcome> {
        if draft.base_version() > self.state.version() {
            self.refresh().await?;
            if draft.base_version() > self.state.version() {
                return Err(Error::InvalidDraft(format!(
                    "its base version {} is beyond the catalog's {}",
                    draft.base_version(),
                    self.state.version()
                )));
            }
        }
        if draft.base_version() < self.state.version() {
            return self.behind(draft).await;
        }
        let age_ms = now_unix_ms().saturating_sub(draft.started_unix_ms());
        let max = self.io.config.max_draft_age();
        if u128::from(age_ms) > max.as_millis() {
            return Err(Error::DraftExpired {
                age_secs: age_ms / 1000,
                max_secs: max.as_secs(),
            });
        }
        draft.validate(&self.state).map_err(Error::InvalidDraft)?;
        if let Some(entry) = draft.added.iter().find(|e| e.kind != self.kind) {
            return Err(Error::InvalidDraft(format!(
                "split {} is not of the {} table",
                entry.key,
                delta::table_name(self.kind)
            )));
        }
        self.ensure_created().await?;

        let commit = draft.to_commit(now_unix_ms());
        let path = self.layout.commit(commit.version);
        let removed: Vec<SplitEntry> = commit
            .removed
            .iter()
            .filter_map(|key| self.state.split(key).cloned())
            .collect();
        let bytes = Bytes::from(delta::encode(self.kind, &commit, &removed)?);
        let mut attempt = 1;
        loop {
            let put = self.io.put_create(&path, bytes.clone()).await;
            let failure = match put {
                Ok(()) => {
                    self.committed(commit.clone()).await;
                    return Ok(CommitOutcome::Committed(commit));
                }
                Err(e @ object_store::Error::AlreadyExists { .. }) => e,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, key = %path, attempt, "catalog commit put failed, checking whether it landed");
                    e
                }
                Err(e) => {
                    return Err(Error::store(format!("failed to write {path}"), e));
                }
            };
            // Taken, or unknown: read it back.
            match self.read_commit(commit.version).await? {
                Some(found) if found.commit_id == commit.commit_id => {
                    tracing::info!(key = %path, "catalog commit landed despite the error");
                    self.committed(found.clone()).await;
                    return Ok(CommitOutcome::Committed(found));
                }
                Some(_) => {
                    self.refresh().await?;
                    return self.behind(draft).await;
                }
                None if attempt < self.io.config.retry_attempts => {
                    // Not there (a failed put, or a 409 of a concurrent
                    // conditional write that did not complete): put again;
                    // put-if-absent cannot write it twice.
                    tokio::time::sleep(self.io.config.backoff(attempt)).await;
                    attempt += 1;
                }
                None => return Err(Error::store(format!("failed to write {path}"), failure)),
            }
        }
    }

    /// [`commit`](Self::commit), rebasing the draft over commits that do not
    /// [conflict](CommitDraft::conflicts_with) with it. Returns `Conflict`
    /// only when one does (with every commit since the draft's base).
    pub async fn commit_rebasing(&mut self, draft: &mut CommitDraft) -> Result<CommitOutcome> {
        loop {
            match self.commit(draft).await? {
                CommitOutcome::Committed(commit) => return Ok(CommitOutcome::Committed(commit)),
                CommitOutcome::Conflict { theirs } => {
                    if theirs.iter().any(|c| draft.conflicts_with(c)) {
                        return Ok(CommitOutcome::Conflict { theirs });
                    }
                    draft.rebase(&self.state);
                }
            }
        }
    }

    /// When commit `version` was written (its `commitInfo` timestamp, Unix
    /// milliseconds); version 0 is the table's creation.
    pub async fn commit_time(&self, version: u64) -> Result<u64> {
        match self.read_commit(version).await? {
            Some(commit) => Ok(commit.created_unix_ms),
            None => Err(Error::Gap {
                missing: version,
                key: self.layout.commit(version).to_string(),
            }),
        }
    }

    /// The last version committed at or before `unix_ms` (0 when even the
    /// first commit is later), among the versions read so far: a binary
    /// search over the commits' times.
    pub async fn version_at(&self, unix_ms: u64) -> Result<u64> {
        let (mut low, mut high) = (0, self.state.version());
        if high == 0 || self.commit_time(1).await? > unix_ms {
            return Ok(0);
        }
        // Invariant: commit `low` (or the table's start) is at or before
        // `unix_ms`; every version after `high` is later.
        low = low.max(1);
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            if self.commit_time(mid).await? <= unix_ms {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(low)
    }

    /// Writes the state cache of the current version (if absent), and the
    /// Delta checkpoint of that version for other engines.
    pub async fn write_checkpoint(&self) -> Result<()> {
        self.write_state_cache().await?;
        super::checkpoint::write_delta_checkpoint(
            self.io.store.clone(),
            &self.layout.object(""),
            self.kind,
            self.state.version(),
        )
        .await
    }

    /// Writes Sluice's state cache of the current version (if absent).
    pub async fn write_state_cache(&self) -> Result<()> {
        let checkpoint = Checkpoint {
            format: FORMAT,
            created_unix_ms: now_unix_ms(),
            state: self.state.clone(),
        };
        let path = self.layout.state_cache(self.state.version());
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| Error::corrupt(&path, format!("cannot encode state cache: {e}")))?;
        if self.io.put_idempotent(&path, bytes.into()).await? == Put::Exists {
            tracing::debug!(key = %path, "catalog state cache already written");
        }
        Ok(())
    }

    /// The draft's base is behind: it is either already in the log (an
    /// earlier call's answer was lost) or in conflict with what came since.
    async fn behind(&mut self, draft: &CommitDraft) -> Result<CommitOutcome> {
        let theirs = self.commits_since(draft.base_version()).await?;
        if let Some(mine) = theirs.iter().find(|c| c.commit_id == draft.commit_id()) {
            return Ok(CommitOutcome::Committed(mine.clone()));
        }
        Ok(CommitOutcome::Conflict { theirs })
    }

    /// Applies our own commit and writes a checkpoint when it is due. A
    /// failed checkpoint is logged: the next one is due `interval` later and
    /// replay just reads more commits until then.
    async fn committed(&mut self, commit: Commit) {
        let version = commit.version;
        self.apply(commit);
        if version.is_multiple_of(self.io.config.checkpoint_interval)
            && let Err(e) = self.write_checkpoint().await
        {
            tracing::warn!(error = %e, version, "failed to write a catalog checkpoint");
        }
    }

    fn apply(&mut self, commit: Commit) {
        self.state.apply(&commit);
        self.recent.push_back(commit);
        if self.recent.len() > RECENT_COMMITS {
            self.recent.pop_front();
        }
    }

    /// Commit `version`, checked, or `None` if absent.
    pub(crate) async fn read_commit(&self, version: u64) -> Result<Option<Commit>> {
        let path = self.layout.commit(version);
        let Some(bytes) = self.io.get(&path).await? else {
            return Ok(None);
        };
        delta::decode(&path, self.kind, version, &bytes).map(Some)
    }

    /// `version` is absent: fine if `version + 1` is too. If it is present,
    /// `version` may have landed in between (another writer), so look again
    /// before calling it a gap.
    async fn check_no_gap(&self, version: u64) -> Result<()> {
        if !self.io.exists(&self.layout.commit(version + 1)).await? {
            return Ok(());
        }
        if self.io.exists(&self.layout.commit(version)).await? {
            return Ok(()); // the next refresh reads both
        }
        Err(Error::Gap {
            missing: version,
            key: self.layout.commit(version).to_string(),
        })
    }

    /// The newest state cache (at or before `at`, if given) that parses; an
    /// unreadable one is logged and the one before it used (commits are the
    /// truth, so this only costs replay time).
    async fn load_latest_checkpoint(&self, at: Option<u64>) -> Result<Option<CatalogState>> {
        let listed = self.io.list(&self.layout.state_caches()).await?;
        let mut versions: Vec<(u64, Path)> = listed
            .into_iter()
            .filter_map(|meta| parse_version(&meta.location).map(|v| (v, meta.location)))
            .filter(|(v, _)| at.is_none_or(|at| *v <= at))
            .collect();
        versions.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        for (version, path) in versions {
            match self.read_checkpoint(version, &path).await {
                Ok(Some(state)) => return Ok(Some(state)),
                Ok(None) => {}
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, key = %path, "skipping an unreadable catalog checkpoint");
                }
            }
        }
        Ok(None)
    }

    async fn read_checkpoint(&self, version: u64, path: &Path) -> Result<Option<CatalogState>> {
        let Some(bytes) = self.io.get(path).await? else {
            return Ok(None);
        };
        decode_checkpoint(path, version, &bytes).map(Some)
    }
}

/// Commit `version` of the catalog before Delta Lake (`_catalog/`, its
/// format one) from the bytes of its object at `path`, checked. An error
/// names the object and, when the JSON is well formed, the field
/// (`added[0].rows`).
pub(crate) fn decode_legacy_commit(path: &Path, version: u64, bytes: &[u8]) -> Result<Commit> {
    let commit: Commit = decode_json(path, bytes)?;
    if commit.format > FORMAT {
        return Err(Error::UnsupportedFormat {
            key: path.to_string(),
            format: commit.format,
            supported: FORMAT,
        });
    }
    if commit.version != version || commit.parent.checked_add(1) != Some(version) {
        return Err(Error::corrupt(
            path,
            format!(
                "it says version {} with parent {}",
                commit.version, commit.parent
            ),
        ));
    }
    Ok(commit)
}

/// The state in checkpoint `version` from the bytes of its object at
/// `path`, checked; errors as [`decode_commit`]'s.
pub(crate) fn decode_checkpoint(path: &Path, version: u64, bytes: &[u8]) -> Result<CatalogState> {
    let checkpoint: Checkpoint = decode_json(path, bytes)?;
    if checkpoint.format > FORMAT {
        return Err(Error::UnsupportedFormat {
            key: path.to_string(),
            format: checkpoint.format,
            supported: FORMAT,
        });
    }
    if checkpoint.state.version() != version {
        return Err(Error::corrupt(
            path,
            format!("it holds version {}", checkpoint.state.version()),
        ));
    }
    if version == u64::MAX {
        // No commit can follow it: replaying after it would overflow.
        return Err(Error::corrupt(
            path,
            format!("state.version: {version} leaves no room for another commit"),
        ));
    }
    Ok(checkpoint.state)
}

/// Deserializes a catalog object; the error names the object and the path
/// of the field that failed, if any.
fn decode_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        match field.as_str() {
            "." => Error::corrupt(path, e.into_inner()),
            _ => Error::corrupt(path, format!("{field}: {}", e.into_inner())),
        }
    })?;
    de.end().map_err(|e| Error::corrupt(path, e))?;
    Ok(value)
}
