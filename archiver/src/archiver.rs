//! The archiver: the bus, exactly once, into splits on object storage.
//!
//! ```text
//! sluice.logs, sluice.events ──consumer group──▶ batches per (date, hour)
//!     ──every cut_ms or cut_bytes──▶ splits (Parquet + index) uploaded
//!     ──▶ one Delta commit per table: `logs` (its splits, archived ranges in
//!         their tags, the sluice.logs positions as `txn`s), then `events`
//!         (the same for sluice.events)
//!     ──▶ bus offsets committed
//! ```
//!
//! Each topic feeds one table, and a table's commit records the positions of
//! its topic, so the two commits need not be atomic together: each table
//! is exact on its own.
//!
//! What it guarantees, and why:
//!
//! - **Nothing lost.** Bus offsets are committed only after the table
//!   commits that hold their lines; a crash before it re-reads them, from
//!   each table's `txn` positions or the group's, whichever is further.
//! - **Nothing doubled.** A line is archived at most once per
//!   `(source_id, offset)`: the `logs` table records the offset ranges each
//!   split holds, and a line already in the table (or in the commit being
//!   built) is dropped — re-sends by a shipper after a crash, records read
//!   again after an archiver crash between a table commit and the bus
//!   commit, Kafka duplicates. Events are archived once per id.
//! - **Crash at any point.** Before upload: nothing happened. After upload,
//!   before a table commit: the objects are orphans, deleted by the janitor
//!   after a grace period. After a table commit, before the bus commit: the
//!   records are read again and dropped as archived.
//! - **Two archivers in one group** never commit conflicting state: a commit
//!   is put-if-absent, and one that lost the race to a commit claiming the
//!   same partitions or lines is discarded (objects deleted) and its records
//!   read again from the table's positions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sluice_broker::{Bus, Consumer, Message, Position};
use sluice_schema::archive::{self, Date};
use sluice_schema::pb::{ClusterEvent, LogChunk};
use sluice_schema::topics;

use sluice_archive::catalog::{
    BusCheckpoint, Catalog, CatalogConfig, CommitDraft, CommitOutcome, SplitKind, split_entry,
};
use sluice_archive::split::{self, EventRow, LogRow, RowSource, SplitOptions};
use sluice_archive::store::Store;

use crate::{Error, Result};

/// The archivers' consumer group.
pub const GROUP: &str = "sluice-archiver";

/// Settings of an [`Archiver`]. Unknown fields are refused, missing ones
/// take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    /// This archiver's name in catalog commits.
    pub id: String,
    /// Cut splits when the oldest buffered record is this old…
    pub cut_ms: u64,
    /// …or this many bytes of lines are buffered.
    pub cut_bytes: usize,
    /// Orphaned objects (failed attempts) and removed splits are deleted
    /// this long after they were written or removed.
    pub janitor_grace_secs: u64,
    /// Roles whose lines go into splits of their own (one per role and
    /// hour): the roles with a retention of their own, so retention can
    /// drop their splits without waiting for every other role's.
    pub separate_roles: BTreeSet<String>,
    /// How the archiver writes splits.
    pub split: SplitOptions,
    /// Settings of the archive's catalog: retries, checkpoints, draft age.
    pub catalog: CatalogConfig,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            id: "archiver".into(),
            // Queryable within ~10 s of being shipped: 5 s of batching plus
            // writing, uploading and committing.
            cut_ms: 5_000,
            cut_bytes: 64 << 20,
            janitor_grace_secs: 2 * 3600,
            separate_roles: BTreeSet::new(),
            split: SplitOptions::default(),
            catalog: CatalogConfig::default(),
        }
    }
}

impl ArchiverConfig {
    /// Checks every field, naming the bad one; `janitor_grace_secs` must be at
    /// least twice `catalog.max_draft_age_secs`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::config(format!("{field}: {why}")));
        if self.id.is_empty() {
            return bad("id", "must not be empty");
        }
        if !(100..=3_600_000).contains(&self.cut_ms) {
            return bad("cut_ms", "must be between 100 and 3600000");
        }
        if !(1 << 10..=1 << 30).contains(&self.cut_bytes) {
            return bad("cut_bytes", "must be between 1 KiB and 1 GiB");
        }
        if self.janitor_grace_secs < 2 * self.catalog.max_draft_age_secs {
            return bad(
                "janitor_grace_secs",
                "must be at least twice catalog.max_draft_age_secs",
            );
        }
        self.split
            .validate()
            .map_err(|e| Error::config(format!("split: {e}")))
    }
}

/// What the archiver has done, for metrics and status.
#[derive(Debug, Default)]
pub struct ArchiverMetrics {
    /// Lines in catalog commits that landed.
    pub lines_archived: AtomicU64,
    /// Cluster events in catalog commits that landed.
    pub events_archived: AtomicU64,
    /// Lines and events dropped because the catalog or the pending draft
    /// already had them.
    pub duplicates_dropped: AtomicU64,
    /// Bus records that did not decode; skipped, they stay on the bus.
    pub corrupt_records: AtomicU64,
    /// Splits uploaded, including those of attempts later dropped for a conflict.
    pub splits_written: AtomicU64,
    /// Bytes of split objects (Parquet and index) uploaded, dropped attempts included.
    pub bytes_uploaded: AtomicU64,
    /// Catalog commits that landed.
    pub commits: AtomicU64,
    /// Attempts dropped because another writer committed the same partitions
    /// or lines first.
    pub conflicts: AtomicU64,
    /// Failed steps of [`Archiver::run`]: retryable ones are retried after
    /// reading again from the last commit, any other stops it.
    pub errors: AtomicU64,
    /// Unix nanoseconds of the last catalog commit.
    pub last_commit_unix_nanos: AtomicI64,
    /// Shipped-to-committed delay of the newest line of the last commit.
    pub last_freshness_ms: AtomicU64,
}

/// Points of a commit where a test may stop the archiver (`kill -9` at
/// each of them must lose and double nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The splits are uploaded; the table commits are next.
    Uploaded,
    /// The `logs` table's commit landed; the `events` table's is next.
    LogsCommitted,
    /// The table commits landed; the bus commit is next.
    Committed,
    /// The bus commit is done.
    BusCommitted,
}

impl std::str::FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uploaded" => Ok(Step::Uploaded),
            "logs-committed" => Ok(Step::LogsCommitted),
            "committed" => Ok(Step::Committed),
            "bus-committed" => Ok(Step::BusCommitted),
            other => Err(format!(
                "{other:?}: expected uploaded, logs-committed, committed or bus-committed"
            )),
        }
    }
}

type StepHook = Arc<dyn Fn(Step) + Send + Sync>;

/// Where a log row goes: its date, hour, and separate role (if any).
type LogPartition = (Date, u8, Option<Arc<str>>);

/// Records read since the last commit.
#[derive(Default)]
struct Pending {
    logs: BTreeMap<LogPartition, Vec<LogRow>>,
    events: BTreeMap<Date, Vec<EventRow>>,
    bytes: usize,
    since: Option<Instant>,
    /// Next offset to read, per (topic, partition) read.
    positions: BTreeMap<(String, u32), u64>,
    /// Newest `shipped_at` among the lines.
    newest_shipped_nanos: i64,
}

/// One table the archiver writes: its catalog and the draft being filled.
struct Table {
    catalog: Catalog,
    draft: CommitDraft,
    /// The bus topic whose records go into this table.
    topic: &'static str,
}

/// Reads `sluice.logs` and `sluice.events` in the [`GROUP`] consumer group
/// and archives every line and event once: splits uploaded, then a commit
/// per table, then the bus offsets.
pub struct Archiver {
    config: ArchiverConfig,
    store: Store,
    /// `logs`, then `events`.
    tables: [Table; 2],
    consumer: Box<dyn Consumer>,
    pending: Pending,
    metrics: Arc<ArchiverMetrics>,
    last_janitor: Instant,
    hook: Option<StepHook>,
}

impl Archiver {
    /// Opens both tables and joins the archivers' consumer group.
    pub async fn open(config: ArchiverConfig, bus: Arc<dyn Bus>, store: Store) -> Result<Archiver> {
        config.validate()?;
        let [mut logs, mut events] = Catalog::open_tables(&store, &config.catalog).await?;
        logs.create_table().await?;
        events.create_table().await?;
        let consumer = bus.consumer(GROUP, &[topics::LOGS, topics::EVENTS]).await?;
        let table = |catalog: Catalog, topic| Table {
            draft: catalog.draft(config.id.clone()),
            catalog,
            topic,
        };
        let tables = [table(logs, topics::LOGS), table(events, topics::EVENTS)];
        let mut archiver = Archiver {
            config,
            store,
            tables,
            consumer,
            pending: Pending::default(),
            metrics: Arc::new(ArchiverMetrics::default()),
            last_janitor: Instant::now(),
            hook: None,
        };
        archiver.rewind().await?;
        Ok(archiver)
    }

    fn table(&mut self, kind: SplitKind) -> &mut Table {
        &mut self.tables[kind.slot()]
    }

    /// Counters of what this archiver has done, shared with the metrics endpoint.
    pub fn metrics(&self) -> Arc<ArchiverMetrics> {
        self.metrics.clone()
    }

    /// Calls `hook` at each [`Step`] of every commit (fault tests).
    pub fn on_step(&mut self, hook: impl Fn(Step) + Send + Sync + 'static) {
        self.hook = Some(Arc::new(hook));
    }

    fn reached(&self, step: Step) {
        if let Some(hook) = &self.hook {
            hook(step);
        }
    }

    /// Archives until `stop` resolves, then commits what it holds.
    ///
    /// After a failed step, the records read since the last commit are read
    /// again from the bus before anything else: a failed flush has dropped
    /// the batch it held, and a later commit must not move the bus
    /// positions past records that are not archived.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut rewind = false;
        loop {
            tokio::select! {
                () = &mut stop => break,
                step = self.step_after_rewind(&mut rewind) => {
                    if let Err(e) = step {
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        tracing::warn!(error = %e, "archiver: retrying after an error");
                        rewind = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        self.flush().await
    }

    /// [`step`](Self::step), after reading again from the last commit if
    /// `rewind` says the previous step failed.
    async fn step_after_rewind(&mut self, rewind: &mut bool) -> Result<()> {
        if *rewind {
            self.rewind().await?;
            *rewind = false;
        }
        self.step().await
    }

    /// One poll, and a flush if a cut is due.
    pub async fn step(&mut self) -> Result<()> {
        let messages = self.consumer.poll(2000, Duration::from_millis(200)).await?;
        for message in &messages {
            self.take(message);
        }
        let due = self.pending.bytes >= self.config.cut_bytes
            || self
                .pending
                .since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.config.cut_ms));
        if due {
            self.flush().await?;
        }
        if self.last_janitor.elapsed() >= Duration::from_secs(600) {
            self.last_janitor = Instant::now();
            let grace = Duration::from_secs(self.config.janitor_grace_secs);
            for table in &mut self.tables {
                match table.catalog.delete_orphans(grace).await {
                    Ok(deleted) if !deleted.is_empty() => {
                        tracing::info!(
                            objects = deleted.len(),
                            table = %table.catalog.table_path(),
                            "archiver: deleted orphaned objects"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "archiver: janitor failed"),
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, message: &Message) {
        let pending = &mut self.pending;
        pending.positions.insert(
            (message.topic.clone(), message.partition),
            message.offset + 1,
        );
        pending.since.get_or_insert_with(Instant::now);
        let [logs, events] = &mut self.tables;
        match message.topic.as_str() {
            topics::LOGS => {
                let Ok(chunk) = LogChunk::decode(message.payload.clone()) else {
                    Self::corrupt(&self.metrics, message);
                    return;
                };
                pending.newest_shipped_nanos = pending
                    .newest_shipped_nanos
                    .max(chunk.shipped_at_unix_nanos);
                let source = RowSource::of_chunk(&chunk);
                let id = source.source_id;
                let role = archive::split_job(&source.job).0;
                let own = self
                    .config
                    .separate_roles
                    .contains(role)
                    .then(|| Arc::<str>::from(role));
                for line in &chunk.lines {
                    if logs.catalog.state().is_line_archived(id, line.offset)
                        || logs.draft.has_line(id, line.offset)
                    {
                        self.metrics
                            .duplicates_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    logs.draft.archive_lines(
                        id,
                        line.offset,
                        line.offset + u64::from(line.raw_len.max(1)),
                    );
                    pending.bytes += line.text.len() + 64;
                    let ts = line.ts_unix_nanos;
                    pending
                        .logs
                        .entry((Date::from_unix_nanos(ts), archive::hour_of(ts), own.clone()))
                        .or_default()
                        .push(LogRow::new(source.clone(), line));
                }
            }
            topics::EVENTS => {
                let Ok(event) = ClusterEvent::decode(message.payload.clone()) else {
                    Self::corrupt(&self.metrics, message);
                    return;
                };
                if events.catalog.state().has_event(&event.id)
                    || !events.draft.archive_event(event.id.clone())
                {
                    self.metrics
                        .duplicates_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                pending.bytes += event.message.len() + 128;
                let date = Date::from_unix_nanos(event.ts_unix_nanos);
                pending
                    .events
                    .entry(date)
                    .or_default()
                    .push(EventRow::from(event));
            }
            other => tracing::warn!(
                topic = other,
                "archiver: record of an unexpected topic skipped"
            ),
        }
    }

    fn corrupt(metrics: &ArchiverMetrics, message: &Message) {
        metrics.corrupt_records.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            "archiver: a record does not decode; skipped (it stays on the bus)"
        );
    }

    /// Writes the pending records as splits, commits them to their tables,
    /// then commits the bus offsets.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.positions.is_empty() {
            return Ok(());
        }
        let result = self.commit_pending().await;
        // The next batch builds on what this one committed: a draft based on
        // the version before would claim the same partitions, conflict with
        // this commit and be written again.
        for table in &mut self.tables {
            table.draft = table.catalog.draft(self.config.id.clone());
        }
        result
    }

    async fn commit_pending(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let positions: Vec<Position> = pending
            .positions
            .iter()
            .map(|((topic, partition), offset)| Position::new(topic, *partition, *offset))
            .collect();
        let (lines, events) = (
            pending.logs.values().map(Vec::len).sum::<usize>() as u64,
            pending.events.values().map(Vec::len).sum::<usize>() as u64,
        );
        if lines + events == 0 {
            // Only records already archived: nothing to add, just move on.
            self.consumer.commit(&positions).await?;
            return Ok(());
        }
        let id = self.config.id.clone();
        let mut drafts = SplitKind::ALL.map(|kind| {
            let table = self.table(kind);
            let fresh = table.catalog.draft(id.clone());
            std::mem::replace(&mut table.draft, fresh)
        });
        self.write_splits(pending.logs, pending.events, &mut drafts)
            .await?;
        self.reached(Step::Uploaded);
        let mut conflict = false;
        for (kind, mut draft) in SplitKind::ALL.into_iter().zip(drafts) {
            if draft.added.is_empty() {
                // Its records were all archived already: the bus commit
                // below moves past them.
                continue;
            }
            let topic = self.table(kind).topic;
            let mine: Vec<Position> = positions
                .iter()
                .filter(|p| p.topic == topic)
                .cloned()
                .collect();
            draft.set_bus(BusCheckpoint::new(GROUP, &mine));
            let catalog = &mut self.tables[kind.slot()].catalog;
            let outcome = loop {
                match catalog.commit_rebasing(&mut draft).await {
                    Ok(outcome) => break outcome,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "archiver: table commit failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match outcome {
                CommitOutcome::Committed(commit) => {
                    self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                    let (counter, n) = match kind {
                        SplitKind::Logs => (&self.metrics.lines_archived, lines),
                        SplitKind::Events => (&self.metrics.events_archived, events),
                    };
                    counter.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(
                        table = %catalog.table_path(),
                        version = commit.version,
                        rows = n,
                        "archiver: committed"
                    );
                    if kind == SplitKind::Logs {
                        self.reached(Step::LogsCommitted);
                    }
                }
                CommitOutcome::Conflict { theirs } => {
                    self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        commits = theirs.len(),
                        table = %catalog.table_path(),
                        "archiver: another archiver committed the same records; discarding this attempt"
                    );
                    catalog.discard(&draft).await?;
                    conflict = true;
                }
            }
        }
        if conflict {
            // What landed stays; the rest is read again from the tables'
            // positions (what landed is then dropped as archived).
            return self.rewind().await;
        }
        let now = now_nanos();
        self.metrics
            .last_commit_unix_nanos
            .store(now, Ordering::Relaxed);
        if pending.newest_shipped_nanos > 0 {
            self.metrics.last_freshness_ms.store(
                ((now - pending.newest_shipped_nanos) / 1_000_000).max(0) as u64,
                Ordering::Relaxed,
            );
        }
        self.reached(Step::Committed);
        if let Err(e) = self.consumer.commit(&positions).await {
            // Harmless: the records are read again and dropped as archived.
            tracing::warn!(error = %e, "archiver: bus commit failed after the table commits");
        }
        self.reached(Step::BusCommitted);
        Ok(())
    }

    async fn write_splits(
        &mut self,
        logs: BTreeMap<LogPartition, Vec<LogRow>>,
        events: BTreeMap<Date, Vec<EventRow>>,
        drafts: &mut [CommitDraft; 2],
    ) -> Result<()> {
        let options = self.config.split.clone();
        for ((date, hour, _), rows) in logs {
            let opts = options.clone();
            let split = tokio::task::spawn_blocking(move || split::write_log_split(rows, &opts))
                .await
                .map_err(|e| Error::corrupt(format!("split writer panicked: {e}")))?
                .map_err(|e| Error::corrupt(format!("failed to write a log split: {e}")))?;
            let id = archive::split_id_new(now_nanos());
            let key = archive::log_split_key(date, hour, &id);
            let index_key = archive::log_index_key(date, hour, &id);
            self.upload(&key, split.parquet.clone()).await?;
            self.upload(&index_key, split.index.clone()).await?;
            drafts[SplitKind::Logs.slot()].add_split(split_entry(
                key,
                Some(index_key),
                SplitKind::Logs,
                date,
                Some(hour),
                &split.stats,
            ));
            self.metrics.splits_written.fetch_add(1, Ordering::Relaxed);
        }
        for (date, rows) in events {
            let opts = options.clone();
            let split = tokio::task::spawn_blocking(move || split::write_event_split(rows, &opts))
                .await
                .map_err(|e| Error::corrupt(format!("split writer panicked: {e}")))?
                .map_err(|e| Error::corrupt(format!("failed to write an event split: {e}")))?;
            let id = archive::split_id_new(now_nanos());
            let key = archive::event_split_key(date, &id);
            self.upload(&key, split.parquet.clone()).await?;
            drafts[SplitKind::Events.slot()].add_split(split_entry(
                key,
                None,
                SplitKind::Events,
                date,
                None,
                &split.stats,
            ));
            self.metrics.splits_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Puts an object, retrying transient errors with backoff.
    async fn upload(&mut self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.store.object_path(key);
        let mut backoff = Duration::from_millis(100);
        for attempt in 1.. {
            match self
                .store
                .store
                .put(&path, PutPayload::from_bytes(bytes.clone()))
                .await
            {
                Ok(_) => {
                    self.metrics
                        .bytes_uploaded
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    let e = Error::store(format!("failed to upload {path}"), e);
                    if !e.is_retryable() || attempt >= 8 {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "archiver: upload failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Reads again from the tables' positions (or the group's, if ahead):
    /// what was read and not committed is read again.
    async fn rewind(&mut self) -> Result<()> {
        self.pending = Pending::default();
        let mut in_tables: HashMap<(String, u32), u64> = HashMap::new();
        for table in &mut self.tables {
            table.catalog.refresh().await?;
            table.draft = table.catalog.draft(self.config.id.clone());
            for p in table.catalog.state().bus_positions(GROUP) {
                // A table holds the positions of its own topic only.
                if p.topic == table.topic {
                    in_tables.insert((p.topic, p.partition), p.offset);
                }
            }
        }
        let committed: HashMap<(String, u32), u64> = self
            .consumer
            .committed()
            .await?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect();
        // Every assigned partition, including those nobody has committed
        // yet: records read and discarded must be read again.
        for tp in self.consumer.assignment()? {
            let key = (tp.topic.clone(), tp.partition);
            let at = in_tables
                .get(&key)
                .copied()
                .unwrap_or(0)
                .max(committed.get(&key).copied().unwrap_or(0));
            self.consumer
                .seek(&Position::new(&tp.topic, tp.partition, at))
                .await?;
        }
        Ok(())
    }

    /// The catalog of `kind`'s table as this archiver last read or committed it.
    pub fn catalog(&self, kind: SplitKind) -> &Catalog {
        &self.tables[kind.slot()].catalog
    }
}

use sluice_schema::time::now_unix_nanos as now_nanos;
