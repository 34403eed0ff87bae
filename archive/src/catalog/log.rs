//! [`Catalog`]: opening the log (latest checkpoint, then the commits after
//! it), following it, and committing to it.
//!
//! Commit `v` is written with put-if-absent at `v = base + 1`, so of two
//! writers on the same base exactly one wins; the other gets
//! [`CommitOutcome::Conflict`] with the commits it missed. A put that fails
//! transiently may still have landed (object_store also retries a 5xx
//! itself, so even `AlreadyExists` may be our own write): the writer then
//! reads commit `v` back and compares its `commit_id`, and only puts again
//! when `v` is absent. The tail of the log is read by GET-ing `v + 1`,
//! `v + 2`, … until one is absent, never by listing.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use super::commit::{Commit, CommitDraft, CommitOutcome, FORMAT, now_unix_ms};
use super::config::CatalogConfig;
use super::error::{Error, Result, is_transient};
use super::state::CatalogState;
use super::store::{Io, Layout, Put, parse_version};

/// Commits kept in memory to answer [`CommitOutcome::Conflict`] without
/// reading them again.
const RECENT_COMMITS: usize = 256;

/// Commits read at once when catching up.
pub const MAX_PARALLEL_READS: u64 = 32;

/// A checkpoint object: the state as of `state.version`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    format: u32,
    created_unix_ms: u64,
    state: CatalogState,
}

/// One reader or writer of the catalog under an archive prefix.
#[derive(Debug)]
pub struct Catalog {
    pub(crate) io: Io,
    pub(crate) layout: Layout,
    state: CatalogState,
    recent: VecDeque<Commit>,
}

impl Catalog {
    /// Opens the catalog under `prefix` with the default configuration.
    pub async fn open(store: Arc<dyn ObjectStore>, prefix: &Path) -> Result<Catalog> {
        Catalog::open_with(store, prefix, CatalogConfig::default()).await
    }

    /// Loads the latest readable checkpoint and replays the commits after
    /// it. An empty store is an empty catalog (version 0).
    pub async fn open_with(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        config: CatalogConfig,
    ) -> Result<Catalog> {
        config.validate()?;
        let mut catalog = Catalog {
            io: Io { store, config },
            layout: Layout::new(prefix),
            state: CatalogState::default(),
            recent: VecDeque::new(),
        };
        if let Some(state) = catalog.load_latest_checkpoint().await? {
            catalog.state = state;
        }
        catalog.refresh().await?;
        Ok(catalog)
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

    /// The store path of the checkpoint of `version`.
    pub fn checkpoint_path(&self, version: u64) -> Path {
        self.layout.checkpoint(version)
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
        let mut applied = 0;
        let mut batch = 1;
        loop {
            let next = self.state.version() + 1;
            let reads = (next..next + batch).map(|v| self.read_commit(v));
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

        let commit = draft.to_commit(now_unix_ms());
        let path = self.layout.commit(commit.version);
        let bytes = Bytes::from(serde_json::to_vec_pretty(&commit).map_err(|e| {
            Error::InvalidDraft(format!("cannot encode commit {}: {e}", commit.version))
        })?);
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

    /// Writes the checkpoint of the current version (if absent).
    pub async fn write_checkpoint(&self) -> Result<()> {
        let checkpoint = Checkpoint {
            format: FORMAT,
            created_unix_ms: now_unix_ms(),
            state: self.state.clone(),
        };
        let path = self.layout.checkpoint(self.state.version());
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| Error::corrupt(&path, format!("cannot encode checkpoint: {e}")))?;
        if self.io.put_idempotent(&path, bytes.into()).await? == Put::Exists {
            tracing::debug!(key = %path, "catalog checkpoint already written");
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
        decode_commit(&path, version, &bytes).map(Some)
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

    /// The newest checkpoint that parses; an unreadable one is logged and
    /// the one before it used (commits are the truth, so this only costs
    /// replay time).
    async fn load_latest_checkpoint(&self) -> Result<Option<CatalogState>> {
        let listed = self.io.list(self.layout.checkpoints_dir()).await?;
        let mut versions: Vec<(u64, Path)> = listed
            .into_iter()
            .filter_map(|meta| parse_version(&meta.location).map(|v| (v, meta.location)))
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

/// Commit `version` from the bytes of its object at `path`, checked. An
/// error names the object and, when the JSON is well formed, the field
/// (`added[0].rows`).
pub(crate) fn decode_commit(path: &Path, version: u64, bytes: &[u8]) -> Result<Commit> {
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
