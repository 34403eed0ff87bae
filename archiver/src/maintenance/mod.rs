//! Archive maintenance in the background: compaction merges the small
//! splits of an hour, retention removes splits older than their roles'
//! retention, the janitor deletes the objects nothing references any more.
//!
//! ```text
//! every 30 s   plan_compaction ─▶ read inputs ─▶ write one split ─▶ upload
//!                  ─▶ one commit: add the merged split, remove the inputs
//! every 5 min  plan_retention ─▶ one commit: remove the expired splits
//! every hour   janitor: delete orphans and removed splits older than the grace
//! ```
//!
//! What it guarantees, and why:
//!
//! - **Readers see the inputs or the merged split, never both or
//!   neither:** the swap is one Delta commit of the table (`remove` of the
//!   inputs and `add` of the output, all `dataChange: false`), so every
//!   engine reading any version sees each row once. The merged split holds
//!   exactly the inputs' rows (checked against the table's row counts) and
//!   its tags hold their lines; the archived line ranges are not touched.
//! - **Retention is a Delta `remove`**; files are deleted only after the
//!   janitor's grace period, as `vacuum` would.
//! - **A crash at any point loses and doubles nothing.** Before the commit
//!   the inputs are still live and the uploaded objects are orphans, which
//!   the janitor deletes after its grace period (an upload that fails is
//!   deleted at once). After it, the inputs are removed splits, whose
//!   objects the janitor deletes after the same grace period (queries
//!   planned before the commit may still read them). Stopping the task
//!   mid-merge is such a crash.
//! - **Two maintainers never commit conflicting state.** A commit that
//!   removes a split another commit since its base removed conflicts
//!   ([`CommitDraft::conflicts_with`](sluice_archive::catalog::CommitDraft::conflicts_with)):
//!   of two merges (or a merge and a retention) sharing an input, one
//!   commits, the other is dropped and its objects deleted. Archiver
//!   commits only add splits, so maintenance rebases over them.
//! - **One bad split does not stop maintenance:** a merge that fails for
//!   good is counted and logged, and its inputs are left out of merges for
//!   an hour.

mod compact;
mod config;
mod io;
mod retention;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::path::Path;

pub use compact::{CompactionJob, SIZE_CLASS_BASE, partition_end_ms, plan_compaction, size_class};
pub use config::{
    CompactionConfig, MAX_RETENTION_SECS, MIN_RETENTION_SECS, MaintenanceConfig, RetentionConfig,
    format_age, parse_age, parse_duration, parse_role_age,
};
pub use retention::{is_expired, plan_retention};

use crate::{Error, Result};
use sluice_archive::catalog::{Catalog, CommitDraft, CommitOutcome, SplitEntry, SplitKind};
use sluice_archive::store::Store;

/// How long the inputs of a merge that failed for good are left out.
const QUARANTINE: Duration = Duration::from_secs(3600);
/// Attempts of a catalog commit that fails transiently.
const COMMIT_ATTEMPTS: u32 = 5;

/// What maintenance has done, for metrics (see [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct MaintenanceMetrics {
    /// Merges committed.
    pub compactions: AtomicU64,
    /// Splits those merges removed.
    pub splits_merged: AtomicU64,
    /// Rows rewritten into merged splits.
    pub rows_merged: AtomicU64,
    /// Data and index bytes of the merged inputs, and of the outputs.
    pub compaction_bytes_in: AtomicU64,
    /// Data and index bytes of the merged splits committed.
    pub compaction_bytes_out: AtomicU64,
    /// Merges or retention commits dropped for a conflicting commit.
    pub conflicts: AtomicU64,
    /// Splits removed by retention commits.
    pub retention_splits_removed: AtomicU64,
    /// Rows of the splits retention removed.
    pub retention_rows_removed: AtomicU64,
    /// Data and index bytes of the splits retention removed.
    pub retention_bytes_removed: AtomicU64,
    /// Objects the maintenance janitor deleted: orphans and removed splits'
    /// objects past their grace period.
    pub janitor_objects_deleted: AtomicU64,
    /// Failed merges, passes and janitor runs.
    pub errors: AtomicU64,
    /// Live splits after the last pass.
    pub live_splits: AtomicU64,
    /// Unix milliseconds at the end of the last compaction and retention
    /// passes.
    pub last_compaction_unix_ms: AtomicU64,
    /// Unix milliseconds at the end of the last retention pass (0: none yet).
    pub last_retention_unix_ms: AtomicU64,
}

/// Points of a merge where a test may stop maintenance (a crash at each
/// must lose and double nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The merged split is uploaded; the table commit is next.
    Uploaded,
    /// The table commit landed.
    Committed,
}

impl std::str::FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uploaded" => Ok(Step::Uploaded),
            "committed" => Ok(Step::Committed),
            other => Err(format!("{other:?}: expected uploaded or committed")),
        }
    }
}

type StepHook = Arc<dyn Fn(Step) + Send + Sync>;

/// One merge, committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// The partition merged, as [`CompactionJob::partition`] names it
    /// (`logs 2026-11-21 07h`).
    pub partition: String,
    /// Keys of the inputs.
    pub inputs: Vec<String>,
    /// The merged split.
    pub output: SplitEntry,
    /// Rows of the merged split: those of the inputs together.
    pub rows: u64,
    /// Data and index bytes of the inputs, and of the output.
    pub bytes_in: u64,
    /// Data and index bytes of the merged split.
    pub bytes_out: u64,
    /// Wall time of the whole merge: reading, writing, uploading, committing.
    pub elapsed: Duration,
    /// Table version of the commit that swapped the inputs for the output.
    pub version: u64,
}

/// What one attempt at a merge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The merge is committed: the output is live, the inputs removed.
    Merged(Box<MergeReport>),
    /// Another commit removed an input first; the merged split was deleted.
    Conflict,
    /// An input was no longer live when the merge began; nothing was done.
    Stale,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Default)]
pub struct CompactionPass {
    /// Merges due when the pass began.
    pub planned: usize,
    /// Merges committed in this pass.
    pub merged: Vec<MergeReport>,
    /// Merges dropped because another commit removed an input first.
    pub conflicts: usize,
    /// Merges skipped because an input was no longer live when they began.
    pub stale: usize,
    /// Merges that failed: the partition and the error.
    pub failed: Vec<(String, String)>,
    /// Merges left for the next pass (more were due than one pass makes).
    pub more: bool,
}

/// What a retention pass did.
#[derive(Debug, Clone, Default)]
pub struct RetentionPass {
    /// Splits removed, in the order of their commits.
    pub removed: Vec<SplitEntry>,
    /// Retention commits that conflicted with a merge and were planned again.
    pub conflicts: usize,
}

/// Compaction, retention and the janitor on one archive's two tables.
pub struct Maintenance {
    config: MaintenanceConfig,
    store: Store,
    /// `logs`, then `events`.
    catalogs: [Catalog; 2],
    metrics: Arc<MaintenanceMetrics>,
    hook: Option<StepHook>,
    /// Inputs of merges that failed for good, and when.
    quarantine: HashMap<String, Instant>,
}

impl Maintenance {
    /// Checks the configuration and opens both tables.
    pub async fn open(config: MaintenanceConfig, store: Store) -> Result<Maintenance> {
        config.validate()?;
        let catalogs = Catalog::open_tables(&store, &config.catalog).await?;
        Ok(Maintenance {
            config,
            store,
            catalogs,
            metrics: Arc::new(MaintenanceMetrics::default()),
            hook: None,
            quarantine: HashMap::new(),
        })
    }

    /// Counters of what maintenance has done, shared with the metrics endpoint.
    pub fn metrics(&self) -> Arc<MaintenanceMetrics> {
        self.metrics.clone()
    }

    /// The configuration maintenance was opened with.
    pub fn config(&self) -> &MaintenanceConfig {
        &self.config
    }

    /// `kind`'s table as maintenance last read or committed it.
    pub fn catalog(&self, kind: SplitKind) -> &Catalog {
        &self.catalogs[kind.slot()]
    }

    async fn refresh(&mut self) -> Result<()> {
        for catalog in &mut self.catalogs {
            catalog.refresh().await?;
        }
        Ok(())
    }

    fn live_splits(&self) -> impl Iterator<Item = &SplitEntry> {
        self.catalogs
            .iter()
            .flat_map(|c| c.state().splits().values())
    }

    /// Calls `hook` at each [`Step`] of every merge (fault tests).
    pub fn on_step(&mut self, hook: impl Fn(Step) + Send + Sync + 'static) {
        self.hook = Some(Arc::new(hook));
    }

    fn reached(&self, step: Step) {
        if let Some(hook) = &self.hook {
            hook(step);
        }
    }

    /// The merges due now (after reading the latest commits), leaving out
    /// inputs of recently failed merges.
    pub async fn plan_compaction(&mut self) -> Result<Vec<CompactionJob>> {
        self.refresh().await?;
        self.quarantine.retain(|_, at| at.elapsed() < QUARANTINE);
        let quarantine = &self.quarantine;
        let splits = self
            .live_splits()
            .filter(|s| !quarantine.contains_key(&s.key));
        Ok(plan_compaction(
            splits,
            &self.config.compaction,
            now_unix_ms(),
        ))
    }

    /// The splits retention would remove now (after reading the latest
    /// commits).
    pub async fn plan_retention(&mut self) -> Result<Vec<SplitEntry>> {
        self.refresh().await?;
        let splits = self.live_splits();
        Ok(
            plan_retention(splits, &self.config.retention, now_unix_ms())
                .into_iter()
                .cloned()
                .collect(),
        )
    }

    /// Merges the due partitions, at most `max_merges_per_pass` of them.
    /// A merge that fails is reported in the pass, not as an error.
    pub async fn compact_pass(&mut self) -> Result<CompactionPass> {
        let jobs = self.plan_compaction().await?;
        let max = self.config.compaction.max_merges_per_pass;
        let mut pass = CompactionPass {
            planned: jobs.len(),
            more: jobs.len() > max,
            ..CompactionPass::default()
        };
        for job in jobs.iter().take(max) {
            match self.compact(job).await {
                Ok(MergeOutcome::Merged(report)) => pass.merged.push(*report),
                Ok(MergeOutcome::Conflict) => pass.conflicts += 1,
                Ok(MergeOutcome::Stale) => pass.stale += 1,
                Err(e) => {
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        partition = %job.partition(),
                        inputs = job.inputs.len(),
                        error = %e,
                        "compaction: merge failed"
                    );
                    if !e.is_retryable() {
                        for input in &job.inputs {
                            self.quarantine.insert(input.key.clone(), Instant::now());
                        }
                    }
                    pass.failed.push((job.partition(), e.to_string()));
                }
            }
        }
        self.metrics
            .last_compaction_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        self.count_live();
        Ok(pass)
    }

    /// Merges `job`'s inputs into one split and swaps them in one commit.
    /// `Err` leaves the catalog as it was, or (after an ambiguous commit
    /// error) possibly committed; uploaded objects are then the janitor's.
    pub async fn compact(&mut self, job: &CompactionJob) -> Result<MergeOutcome> {
        let started = Instant::now();
        let kind = job.kind;
        let catalog = &mut self.catalogs[kind.slot()];
        catalog.refresh().await?;
        let state = catalog.state();
        if job.inputs.iter().any(|s| state.split(&s.key) != Some(s)) {
            return Ok(MergeOutcome::Stale);
        }
        let merged = compact::merge(&self.store, catalog, job, &self.config.split).await?;
        // The draft starts before the upload: the janitor spares objects
        // younger than twice the age a draft may commit at.
        let mut draft = catalog.draft(format!("{}/compaction", self.config.id));
        draft.rearranges_only();
        for input in &job.inputs {
            draft.remove_split(&input.key);
        }
        draft.add_split(merged.entry.clone());
        for (key, bytes) in merged.objects() {
            let path = self.store.object_path(key);
            if let Err(e) = io::put(&self.store, &path, bytes).await {
                self.discard(&draft, kind).await;
                return Err(e);
            }
        }
        self.reached(Step::Uploaded);
        let commit = match self.commit(&mut draft, kind).await? {
            CommitOutcome::Committed(commit) => commit,
            CommitOutcome::Conflict { theirs } => {
                self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    partition = %job.partition(),
                    commits = theirs.len(),
                    "compaction: an input was removed by another commit; dropping this merge"
                );
                self.discard(&draft, kind).await;
                return Ok(MergeOutcome::Conflict);
            }
        };
        let output = merged.entry;
        let report = MergeReport {
            partition: job.partition(),
            inputs: job.inputs.iter().map(|s| s.key.clone()).collect(),
            rows: output.rows,
            bytes_in: job.stored_bytes(),
            bytes_out: output.data_bytes + output.index_bytes,
            output,
            elapsed: started.elapsed(),
            version: commit.version,
        };
        let m = &self.metrics;
        m.compactions.fetch_add(1, Ordering::Relaxed);
        m.splits_merged
            .fetch_add(report.inputs.len() as u64, Ordering::Relaxed);
        m.rows_merged.fetch_add(report.rows, Ordering::Relaxed);
        m.compaction_bytes_in
            .fetch_add(report.bytes_in, Ordering::Relaxed);
        m.compaction_bytes_out
            .fetch_add(report.bytes_out, Ordering::Relaxed);
        tracing::info!(
            partition = %report.partition,
            inputs = report.inputs.len(),
            rows = report.rows,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            split = %report.output.key,
            version = report.version,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "compaction: merged splits"
        );
        self.reached(Step::Committed);
        Ok(MergeOutcome::Merged(Box::new(report)))
    }

    /// Removes the splits retention says are expired, in commits of at
    /// most `max_splits_per_commit`. A commit that conflicts (a merge
    /// removed one of them first) is planned again, twice at most.
    pub async fn retention_pass(&mut self) -> Result<RetentionPass> {
        let mut pass = RetentionPass::default();
        for _ in 0..3 {
            let expired = self.plan_retention().await?;
            let mut conflicted = false;
            let chunks = SplitKind::ALL.iter().flat_map(|&kind| {
                let of_kind: Vec<SplitEntry> =
                    expired.iter().filter(|s| s.kind == kind).cloned().collect();
                of_kind
                    .chunks(self.config.retention.max_splits_per_commit)
                    .map(|c| (kind, c.to_vec()))
                    .collect::<Vec<_>>()
            });
            for (kind, chunk) in chunks.collect::<Vec<_>>() {
                let chunk = chunk.as_slice();
                let mut draft =
                    self.catalogs[kind.slot()].draft(format!("{}/retention", self.config.id));
                for split in chunk {
                    draft.remove_split(&split.key);
                }
                match self.commit(&mut draft, kind).await? {
                    CommitOutcome::Committed(commit) => {
                        self.removed(chunk, commit.version);
                        pass.removed.extend(chunk.iter().cloned());
                    }
                    CommitOutcome::Conflict { .. } => {
                        self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                        pass.conflicts += 1;
                        conflicted = true;
                        break;
                    }
                }
            }
            if !conflicted {
                break;
            }
        }
        self.metrics
            .last_retention_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        self.count_live();
        Ok(pass)
    }

    fn removed(&self, splits: &[SplitEntry], version: u64) {
        let rows: u64 = splits.iter().map(|s| s.rows).sum();
        let bytes: u64 = splits.iter().map(|s| s.data_bytes + s.index_bytes).sum();
        let m = &self.metrics;
        m.retention_splits_removed
            .fetch_add(splits.len() as u64, Ordering::Relaxed);
        m.retention_rows_removed.fetch_add(rows, Ordering::Relaxed);
        m.retention_bytes_removed
            .fetch_add(bytes, Ordering::Relaxed);
        tracing::info!(
            splits = splits.len(),
            rows,
            bytes,
            oldest = splits
                .iter()
                .map(|s| s.min_ts_nanos)
                .min()
                .map(sluice_schema::time::rfc3339_nanos),
            newest = splits
                .iter()
                .map(|s| s.max_ts_nanos)
                .max()
                .map(sluice_schema::time::rfc3339_nanos),
            version,
            "retention: removed expired splits"
        );
    }

    /// Deletes orphaned objects and those of splits removed more than the
    /// grace period ago.
    pub async fn janitor_pass(&mut self) -> Result<Vec<Path>> {
        let grace = Duration::from_secs(self.config.janitor_grace_secs);
        let mut deleted = Vec::new();
        for catalog in &mut self.catalogs {
            deleted.extend(catalog.delete_orphans(grace).await?);
        }
        self.metrics
            .janitor_objects_deleted
            .fetch_add(deleted.len() as u64, Ordering::Relaxed);
        if !deleted.is_empty() {
            tracing::info!(
                objects = deleted.len(),
                "janitor: deleted unreferenced objects"
            );
        }
        Ok(deleted)
    }

    /// Commits, rebasing over commits that do not conflict and retrying
    /// transient errors. `Err`: the outcome is unknown.
    async fn commit(&mut self, draft: &mut CommitDraft, kind: SplitKind) -> Result<CommitOutcome> {
        let mut attempt = 1;
        loop {
            match self.catalogs[kind.slot()].commit_rebasing(draft).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if e.is_retryable() && attempt < COMMIT_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "maintenance: catalog commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the objects of a draft that will never be committed; what
    /// cannot be deleted now is left to the janitor.
    async fn discard(&self, draft: &CommitDraft, kind: SplitKind) {
        if let Err(e) = self.catalogs[kind.slot()].discard(draft).await {
            tracing::warn!(error = %e, "maintenance: failed to delete the objects of a dropped merge; the janitor will");
        }
    }

    fn count_live(&self) {
        self.metrics
            .live_splits
            .store(self.live_splits().count() as u64, Ordering::Relaxed);
    }

    /// Runs compaction, retention (when configured) and the janitor on
    /// their intervals until `stop` resolves. Errors are logged and
    /// counted, never fatal. Stopping mid-merge is safe (see the module
    /// documentation).
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let start = tokio::time::Instant::now();
        let compaction = self
            .config
            .compaction
            .enabled
            .then(|| Duration::from_secs(self.config.compaction.interval_secs));
        let retention = self
            .config
            .retention
            .is_enabled()
            .then(|| Duration::from_secs(self.config.retention.interval_secs));
        let janitor = (self.config.janitor_interval_secs > 0)
            .then(|| Duration::from_secs(self.config.janitor_interval_secs));
        let mut next_compaction = compaction.map(|_| start);
        let mut next_retention = retention.map(|_| start);
        let mut next_janitor = janitor.map(|every| start + every);
        tracing::info!(
            compaction = compaction.is_some(),
            target_raw_bytes = self.config.compaction.target_raw_bytes,
            retention = %self.retention_summary(),
            "archive maintenance started"
        );
        loop {
            let Some(due) = [next_compaction, next_retention, next_janitor]
                .into_iter()
                .flatten()
                .min()
            else {
                stop.await;
                return;
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep_until(due) => {}
            }
            let now = tokio::time::Instant::now();
            if let (Some(at), Some(every)) = (next_retention, retention)
                && at <= now
            {
                tokio::select! {
                    () = &mut stop => return,
                    result = self.retention_pass() => {
                        if let Err(e) = result {
                            self.failed("retention", &e);
                        }
                    }
                }
                next_retention = Some(now + every);
            }
            if let (Some(at), Some(every)) = (next_compaction, compaction)
                && at <= now
            {
                let more = tokio::select! {
                    () = &mut stop => return,
                    result = self.compact_pass() => match result {
                        // Straight on only while merges succeed.
                        Ok(pass) => pass.more && pass.failed.is_empty(),
                        Err(e) => {
                            self.failed("compaction", &e);
                            false
                        }
                    }
                };
                let after = tokio::time::Instant::now();
                next_compaction = Some(if more { after } else { after + every });
            }
            if let (Some(at), Some(every)) = (next_janitor, janitor)
                && at <= now
            {
                tokio::select! {
                    () = &mut stop => return,
                    result = self.janitor_pass() => {
                        if let Err(e) = result {
                            self.failed("janitor", &e);
                        }
                    }
                }
                next_janitor = Some(now + every);
            }
        }
    }

    fn failed(&self, what: &str, e: &Error) {
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "maintenance: {what} pass failed; trying again later");
    }

    /// `30d, batch=7d` or `off`.
    pub fn retention_summary(&self) -> String {
        let r = &self.config.retention;
        let mut parts: Vec<String> = r.max_age_secs.map(format_age).into_iter().collect();
        parts.extend(
            r.roles
                .iter()
                .map(|(role, age)| format!("{role}={}", format_age(*age))),
        );
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join(", ")
        }
    }
}

use sluice_schema::time::now_unix_ms;
