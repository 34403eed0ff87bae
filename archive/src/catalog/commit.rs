//! What a catalog commit says: the splits it adds and removes, the Bus
//! positions and the line ranges and event ids it archives; and the draft an
//! archiver, compactor or retention pass fills before committing it.
//!
//! A commit is one Delta commit of its table (see [`delta`](super::delta)
//! for the actions); the catalog is the sequence of commits 1, 2, 3, …
//! after the table's creation (version 0) and its state is their replay.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_schema::topics::Position;

use super::held::Held;
use super::ranges::RangeSet;
use super::state::CatalogState;

/// The format of Sluice's state cache (`_sluice/state/`) this build writes
/// and the newest it reads. Bump it when a change alters what the state
/// means; fields that only add information may be added without a bump
/// (readers ignore unknown fields). Format 1 was the catalog before Delta
/// Lake (`_catalog/`), which only `sluice archive migrate` reads.
pub const FORMAT: u32 = 2;

/// Which table a split belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Log lines: a Parquet file and its line index, partitioned by UTC date and hour.
    Logs,
    /// Cluster events: a Parquet file only, partitioned by UTC date.
    Events,
}

impl SplitKind {
    /// Both tables, in the order of [`Catalog::open_tables`](super::Catalog::open_tables).
    pub const ALL: [SplitKind; 2] = [SplitKind::Logs, SplitKind::Events];

    /// This table's place in [`SplitKind::ALL`].
    pub fn slot(self) -> usize {
        match self {
            SplitKind::Logs => 0,
            SplitKind::Events => 1,
        }
    }
}

/// One split of the archive: a Parquet data object and, for logs, its
/// tantivy index, with the statistics the query layer prunes by. Keys are
/// relative to the archive's prefix (see [`Catalog::object_path`](super::Catalog::object_path)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitEntry {
    /// The data object (Parquet), e.g. `logs/date=2026-11-03/hour=07/<id>.parquet`.
    pub key: String,
    /// The full-text index object, if the split has one.
    #[serde(default)]
    pub index_key: Option<String>,
    /// The table of its rows; a `Logs` split has an index, an `Events` split none.
    pub kind: SplitKind,
    /// UTC day of the split's rows, `YYYY-MM-DD`.
    pub date: String,
    /// UTC hour of the split's rows (logs); `None` for day-wide splits.
    #[serde(default)]
    pub hour: Option<u8>,
    /// Number of rows (lines or events) in the data object.
    pub rows: u64,
    /// Bytes of the rows' content before encoding.
    pub raw_bytes: u64,
    /// Size of the data object.
    pub data_bytes: u64,
    /// Size of the index object (0 without one).
    #[serde(default)]
    pub index_bytes: u64,
    /// `ts` of the oldest row, Unix nanoseconds; queries prune by this and `max_ts_nanos`.
    pub min_ts_nanos: i64,
    /// `ts` of the newest row, Unix nanoseconds; retention expires the split by it.
    pub max_ts_nanos: i64,
    /// Job keys (`role/env/name`) with rows in the split, sorted.
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Roles with rows in the split, sorted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Levels of the split's rows (`level` column values, sorted; a split
    /// whose rows name none has an empty list); `None` when unknown (a
    /// split written before levels, an events split): queries filtering on
    /// `level` skip a split whose list holds none of the levels asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<String>>,
    /// When the writer made this entry, Unix milliseconds (writer's clock).
    pub created_unix_ms: u64,
    /// The lines and events the split holds, as its `add` action's tags
    /// carry them. Filled for the splits of a draft and of a decoded
    /// commit; the state's live splits drop it (the state keeps the union).
    #[serde(skip)]
    pub held: Held,
}

impl SplitEntry {
    /// The objects of the split: the data object and the index, if any.
    pub fn object_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.index_key.as_deref())
    }
}

/// A consumer group's positions (next offsets to read) as of a commit, keyed
/// `topic/partition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusCheckpoint {
    /// The consumer group these positions belong to (the archivers' `sluice-archiver`).
    pub group: String,
    /// `topic/partition` (see [`partition_key`]) → next offset the group reads there.
    pub positions: BTreeMap<String, u64>,
}

impl BusCheckpoint {
    /// The positions of `group`, keyed by [`partition_key`].
    pub fn new(group: impl Into<String>, positions: &[Position]) -> Self {
        BusCheckpoint {
            group: group.into(),
            positions: positions
                .iter()
                .map(|p| (partition_key(&p.topic, p.partition), p.offset))
                .collect(),
        }
    }

    /// The positions as the Bus takes them (entries that do not parse as
    /// `topic/partition` are left out).
    pub fn to_positions(&self) -> Vec<Position> {
        to_positions(&self.positions)
    }
}

/// `topic/partition`, the key of a partition in commits.
pub fn partition_key(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

pub(crate) fn to_positions(positions: &BTreeMap<String, u64>) -> Vec<Position> {
    positions
        .iter()
        .filter_map(|(key, &offset)| {
            let (topic, partition) = key.rsplit_once('/')?;
            Some(Position::new(topic, partition.parse().ok()?, offset))
        })
        .collect()
}

/// One entry of the catalog log, stored as
/// `<prefix>/_catalog/commits/<version:020>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// 1, 2, 3, …: the object's name; contiguous.
    pub version: u64,
    /// Always `version - 1`: the state the writer committed on.
    pub parent: u64,
    /// Unique per draft: tells a writer whether an ambiguous put of its own
    /// landed.
    pub commit_id: String,
    /// Who wrote it (archiver id, `compactor`, `retention`, …).
    pub writer: String,
    /// When the commit was written, Unix milliseconds (writer's clock); the
    /// state's retention bounds take "now" from the latest of these.
    pub created_unix_ms: u64,
    /// Splits this commit makes live.
    #[serde(default)]
    pub added: Vec<SplitEntry>,
    /// Keys of splits no longer live.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Bus positions of the writer's consumer group after this commit; `None`
    /// for commits that consumed nothing (compaction, retention).
    #[serde(default)]
    pub bus: Option<BusCheckpoint>,
    /// Per `source_id`, the line offsets newly archived, as `[start, end)`
    /// pairs (a line is archived iff its start offset lies in one).
    #[serde(default)]
    pub archived: BTreeMap<u64, RangeSet>,
    /// Ids of cluster events newly archived.
    #[serde(default)]
    pub event_ids: Vec<String>,
    /// False for a commit that only rearranges data (a compaction): its
    /// actions say `dataChange: false` and it archives nothing.
    #[serde(default = "yes")]
    pub data_change: bool,
}

fn yes() -> bool {
    true
}

/// The result of [`Catalog::commit`](super::Catalog::commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The draft is in the log as this commit.
    Committed(Commit),
    /// Others committed since the draft's base; the draft is not (and never
    /// will be) in the log. The caller decides with
    /// [`CommitDraft::conflicts_with`]: drop the draft, or
    /// [`rebase`](CommitDraft::rebase) it and commit again.
    Conflict {
        /// Every commit after the draft's base, in version order.
        theirs: Vec<Commit>,
    },
}

/// A commit being prepared, on top of the state at `base_version`.
#[derive(Debug, Clone)]
pub struct CommitDraft {
    /// The writer's name, copied into [`Commit::writer`] (archiver id,
    /// `<id>/compaction`, `<id>/retention`).
    pub writer: String,
    /// Splits the commit makes live; their objects must be uploaded before committing.
    pub added: Vec<SplitEntry>,
    /// Keys of splits the commit removes; each must be live at the base and named once.
    pub removed: Vec<String>,
    /// Bus positions to record with the commit; `None` leaves the catalog's as they are.
    pub bus: Option<BusCheckpoint>,
    /// Per `source_id`, the line offsets this draft archives (see
    /// [`archive_lines`](Self::archive_lines)).
    pub archived: BTreeMap<u64, RangeSet>,
    /// Ids of the cluster events this draft archives.
    pub event_ids: BTreeSet<String>,
    /// False for a draft that only rearranges data (see [`Commit::data_change`]).
    pub data_change: bool,
    commit_id: String,
    base_version: u64,
    /// The catalog's bus positions at the base, per group.
    base_bus: BTreeMap<String, BTreeMap<String, u64>>,
    started_unix_ms: u64,
}

impl CommitDraft {
    pub(crate) fn new(writer: String, base: &CatalogState) -> Self {
        CommitDraft {
            writer,
            added: Vec::new(),
            removed: Vec::new(),
            bus: None,
            archived: BTreeMap::new(),
            event_ids: BTreeSet::new(),
            data_change: true,
            commit_id: unique_id(),
            base_version: base.version(),
            base_bus: base.bus().clone(),
            started_unix_ms: now_unix_ms(),
        }
    }

    /// Adds a split to make live; upload its objects before committing.
    /// What it holds is archived by the draft (unless the draft only
    /// rearranges data).
    pub fn add_split(&mut self, entry: SplitEntry) {
        if self.data_change {
            for (source, ranges) in &entry.held.lines {
                self.archived.entry(*source).or_default().extend(ranges);
            }
            self.event_ids.extend(entry.held.events.ids());
        }
        self.added.push(entry);
    }

    /// Marks the draft as one that only rearranges data (a compaction): it
    /// must archive nothing and record no Bus positions.
    pub fn rearranges_only(&mut self) {
        self.data_change = false;
    }

    /// Removes the live split with data object `key`; the janitor deletes its
    /// objects once `removed_grace_secs` has passed.
    pub fn remove_split(&mut self, key: impl Into<String>) {
        self.removed.push(key.into());
    }

    /// Records lines `[start, end)` of `source_id` as archived by this draft.
    pub fn archive_lines(&mut self, source_id: u64, start: u64, end: u64) {
        if start < end {
            self.archived
                .entry(source_id)
                .or_default()
                .insert(start, end);
        }
    }

    /// Records an event as archived; false if the draft already has it.
    pub fn archive_event(&mut self, id: impl Into<String>) -> bool {
        self.event_ids.insert(id.into())
    }

    /// Records the consumer group's positions to commit, replacing any set before.
    pub fn set_bus(&mut self, bus: BusCheckpoint) {
        self.bus = Some(bus);
    }

    /// Whether this draft already archives the line at `offset`.
    pub fn has_line(&self, source_id: u64, offset: u64) -> bool {
        self.archived
            .get(&source_id)
            .is_some_and(|r| r.contains(offset))
    }

    /// Whether this draft already archives the event `id`.
    pub fn has_event(&self, id: &str) -> bool {
        self.event_ids.contains(id)
    }

    /// True when the draft adds, removes and records nothing; committing it
    /// fails with [`Error::InvalidDraft`](super::Error::InvalidDraft).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.bus.is_none()
            && self.archived.is_empty()
            && self.event_ids.is_empty()
    }

    /// The catalog version this draft was prepared on.
    pub fn base_version(&self) -> u64 {
        self.base_version
    }

    /// Unique to this draft, kept across retries and rebases.
    pub fn commit_id(&self) -> &str {
        &self.commit_id
    }

    /// When the draft was started (before any of its objects was uploaded).
    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    /// The objects of the splits this draft adds: what to delete when the
    /// draft is dropped after a [`CommitOutcome::Conflict`].
    pub fn added_object_keys(&self) -> impl Iterator<Item = &str> {
        self.added.iter().flat_map(SplitEntry::object_keys)
    }

    /// Whether `theirs`, committed after this draft's base, makes the draft
    /// wrong. True when `theirs`:
    /// - moved a Bus partition this draft also claims (same group) past the
    ///   position it had at the draft's base: someone else consumed it;
    /// - archived a line offset or an event id this draft archives;
    /// - removed a split this draft removes (compaction vs retention);
    /// - added a split under a key this draft adds.
    ///
    /// A commit at or below the base is part of it and never conflicts.
    pub fn conflicts_with(&self, theirs: &Commit) -> bool {
        if theirs.version <= self.base_version {
            return false;
        }
        if let (Some(mine), Some(their)) = (&self.bus, &theirs.bus)
            && mine.group == their.group
        {
            let base = self.base_bus.get(&mine.group);
            let moved = their.positions.iter().any(|(partition, &position)| {
                mine.positions.contains_key(partition)
                    && position > base.and_then(|b| b.get(partition)).copied().unwrap_or(0)
            });
            if moved {
                return true;
            }
        }
        let lines = theirs.archived.iter().any(|(source, ranges)| {
            self.archived
                .get(source)
                .is_some_and(|mine| mine.overlaps(ranges))
        });
        lines
            || theirs
                .event_ids
                .iter()
                .any(|id| self.event_ids.contains(id))
            || theirs.removed.iter().any(|key| self.removed.contains(key))
            || theirs
                .added
                .iter()
                .any(|s| self.added.iter().any(|m| m.key == s.key))
    }

    /// Moves the draft's base to `state` (after checking with
    /// [`conflicts_with`](Self::conflicts_with) that nothing since conflicts).
    pub fn rebase(&mut self, state: &CatalogState) {
        self.base_version = state.version();
        self.base_bus = state.bus().clone();
    }

    #[cfg(test)]
    pub(crate) fn set_started_unix_ms(&mut self, unix_ms: u64) {
        self.started_unix_ms = unix_ms;
    }

    pub(crate) fn to_commit(&self, created_unix_ms: u64) -> Commit {
        Commit {
            format: FORMAT,
            version: self.base_version + 1,
            parent: self.base_version,
            commit_id: self.commit_id.clone(),
            writer: self.writer.clone(),
            created_unix_ms,
            added: self.added.clone(),
            removed: self.removed.clone(),
            bus: self.bus.clone(),
            archived: self.archived.clone(),
            // In the order the table gives them back (see `IdSet::ids`).
            event_ids: self
                .event_ids
                .iter()
                .map(String::as_str)
                .collect::<super::IdSet>()
                .ids()
                .collect(),
            data_change: self.data_change,
        }
    }

    /// Checks the draft against the state it is about to be committed on:
    /// what a correct caller never does (the conflicts with concurrent
    /// writers are found by [`conflicts_with`](Self::conflicts_with)).
    pub(crate) fn validate(&self, state: &CatalogState) -> Result<(), String> {
        if self.is_empty() {
            return Err("nothing to commit".into());
        }
        if !self.data_change
            && (self.bus.is_some() || !self.archived.is_empty() || !self.event_ids.is_empty())
        {
            return Err(
                "a draft that only rearranges data archives lines, events or Bus positions".into(),
            );
        }
        // What the draft archives must be held by its splits: the table
        // keeps it in their `add` tags, nowhere else.
        let mut held = Held::default();
        for entry in &self.added {
            held.extend(&entry.held);
        }
        for (source, ranges) in &self.archived {
            let covered = held.lines.get(source);
            if let Some((s, e)) = ranges
                .iter()
                .find(|&(s, e)| !covered.is_some_and(|c| within(c, s, e)))
            {
                return Err(format!(
                    "lines [{s}, {e}) of source {source} are archived by no split of the draft"
                ));
            }
        }
        if let Some(id) = self.event_ids.iter().find(|id| !held.events.contains(id)) {
            return Err(format!("event {id} is archived by no split of the draft"));
        }
        let mut removed = BTreeSet::new();
        for key in &self.removed {
            if !removed.insert(key.as_str()) {
                return Err(format!("split {key} is removed twice"));
            }
            if state.split(key).is_none() {
                return Err(format!("split {key} is not live"));
            }
        }
        let mut objects = BTreeSet::new();
        for entry in &self.added {
            for key in entry.object_keys() {
                if key.is_empty() {
                    return Err("a split has an empty object key".into());
                }
                if !objects.insert(key) {
                    return Err(format!("object {key} is added twice"));
                }
            }
            if state.split(&entry.key).is_some() || removed.contains(entry.key.as_str()) {
                return Err(format!("split {} is already in the catalog", entry.key));
            }
            if entry.hour.is_some_and(|h| h > 23) {
                return Err(format!("split {} has hour {:?}", entry.key, entry.hour));
            }
        }
        for (source, ranges) in &self.archived {
            if let Some(archived) = state.archived(*source)
                && archived.overlaps(ranges)
            {
                return Err(format!(
                    "lines of source {source} in {:?} are already archived",
                    ranges.to_vec()
                ));
            }
        }
        if let Some(id) = self.event_ids.iter().find(|id| state.has_event(id)) {
            return Err(format!("event {id} is already archived"));
        }
        Ok(())
    }
}

/// Whether `[start, end)` lies inside one range of `set` (its ranges are
/// maximal, so inside the set means inside one of them).
fn within(set: &RangeSet, start: u64, end: u64) -> bool {
    set.iter().any(|(s, e)| s <= start && end <= e)
}

pub(crate) use sluice_schema::time::now_unix_ms;

/// 128 random bits as hex.
pub(crate) fn unique_id() -> String {
    format!(
        "{:016x}{:016x}",
        sluice_schema::random_u64(),
        sluice_schema::random_u64()
    )
}

/// A random fraction in [0, 1), for backoff jitter.
pub(crate) fn jitter() -> f64 {
    (sluice_schema::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}
