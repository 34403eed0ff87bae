//! One table's state: the replay of its Delta log. Live splits, Bus
//! positions (the `txn` versions), archived line ranges per source,
//! recently archived event ids and recently removed splits.
//!
//! Replay is a pure function of the commit sequence (time comes from the
//! commits, never from the clock), so a checkpoint plus the commits after it
//! gives exactly the state a full replay gives. Three things are bounded, by
//! constants of the format:
//! - event ids: those of the last [`EVENT_ID_RETENTION_MS`] (7 days), at most
//!   [`MAX_EVENT_IDS`] (1M; the oldest commits' ids go first). An event
//!   re-sent later than that is archived again.
//! - archived ranges: a source whose lines were last archived more than
//!   [`SOURCE_RETENTION_MS`] (30 days) ago is forgotten. Dedup is exact for
//!   any line the Bus or a shipper can deliver again within that time, which
//!   is far beyond Bus retention and a shipper's resend window.
//! - removed splits are remembered [`REMOVED_RETENTION_MS`] (30 days), for
//!   the janitor's grace period.
//!
//! "Now" for these bounds is the latest `created_unix_ms` of any commit.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_schema::topics::Position;

use super::commit::{Commit, SplitEntry, to_positions};
use super::ranges::RangeSet;

const DAY_MS: u64 = 24 * 3600 * 1000;
const HOUR_MS: u64 = 3600 * 1000;
/// How long an archived event id is remembered, in milliseconds of commit
/// time (7 days); an event re-sent later is archived again.
pub const EVENT_ID_RETENTION_MS: u64 = 7 * DAY_MS;
/// Most event ids remembered; past it the ids of the oldest commits go first.
pub const MAX_EVENT_IDS: usize = 1_000_000;
/// How long a source's archived ranges are kept after its last archived
/// line, in milliseconds of commit time (30 days).
pub const SOURCE_RETENTION_MS: u64 = 30 * DAY_MS;
/// How long a removed split is remembered after its removal, in
/// milliseconds of commit time (30 days), for the janitor's grace period.
pub const REMOVED_RETENTION_MS: u64 = 30 * DAY_MS;

/// A split no longer live, kept so the janitor spares its objects for a
/// grace period (a running query may still read them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedSplit {
    /// Key of its data object, relative to the archive prefix.
    pub key: String,
    /// Key of its index object, if it had one.
    #[serde(default)]
    pub index_key: Option<String>,
    /// `created_unix_ms` of the commit that removed it; the janitor spares its
    /// objects until `removed_grace_secs` after this.
    pub removed_unix_ms: u64,
    /// Version of the commit that removed it.
    pub version: u64,
}

impl RemovedSplit {
    /// The objects of the removed split: its data object and its index, if any.
    pub fn object_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.index_key.as_deref())
    }
}

/// A source's archived line offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRanges {
    /// Offsets of the source's lines already archived, as `[start, end)` intervals.
    pub ranges: RangeSet,
    /// `created_unix_ms` of the last commit that archived lines of it.
    pub last_unix_ms: u64,
}

/// Event ids archived by one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Version of the commit that archived the ids.
    pub version: u64,
    /// `created_unix_ms` of that commit; the ids are forgotten
    /// [`EVENT_ID_RETENTION_MS`] after it.
    pub unix_ms: u64,
    /// The event ids, as the commit lists them.
    pub ids: Vec<String>,
}

/// The state as of `version`. Serializes deterministically (ordered maps):
/// this is what a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StateRepr")]
pub struct CatalogState {
    version: u64,
    clock_unix_ms: u64,
    splits: BTreeMap<String, SplitEntry>,
    removed: BTreeMap<String, RemovedSplit>,
    /// group → `topic/partition` → next offset.
    bus: BTreeMap<String, BTreeMap<String, u64>>,
    sources: BTreeMap<u64, SourceRanges>,
    events: VecDeque<EventBatch>,
    /// id → version of the batch holding it; derived from `events`.
    #[serde(skip)]
    event_index: HashMap<String, u64>,
    #[serde(skip)]
    event_count: usize,
}

/// The serialized fields; the derived index is rebuilt on load.
#[derive(Deserialize)]
struct StateRepr {
    version: u64,
    clock_unix_ms: u64,
    splits: BTreeMap<String, SplitEntry>,
    removed: BTreeMap<String, RemovedSplit>,
    bus: BTreeMap<String, BTreeMap<String, u64>>,
    sources: BTreeMap<u64, SourceRanges>,
    events: VecDeque<EventBatch>,
}

impl From<StateRepr> for CatalogState {
    fn from(r: StateRepr) -> Self {
        let mut state = CatalogState {
            version: r.version,
            clock_unix_ms: r.clock_unix_ms,
            splits: r.splits,
            removed: r.removed,
            bus: r.bus,
            sources: r.sources,
            events: r.events,
            event_index: HashMap::new(),
            event_count: 0,
        };
        for batch in &state.events {
            state.event_count += batch.ids.len();
            for id in &batch.ids {
                state.event_index.insert(id.clone(), batch.version);
            }
        }
        state
    }
}

impl CatalogState {
    /// The version of the last commit applied (0: none).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The latest `created_unix_ms` of the commits applied.
    pub fn clock_unix_ms(&self) -> u64 {
        self.clock_unix_ms
    }

    /// Live splits by key.
    pub fn splits(&self) -> &BTreeMap<String, SplitEntry> {
        &self.splits
    }

    /// The live split whose data object is `key`, if any.
    pub fn split(&self, key: &str) -> Option<&SplitEntry> {
        self.splits.get(key)
    }

    /// Splits removed within the last [`REMOVED_RETENTION_MS`].
    pub fn removed_splits(&self) -> &BTreeMap<String, RemovedSplit> {
        &self.removed
    }

    /// Bus positions per consumer group (`topic/partition` → next offset),
    /// each the value of the latest commit that mentions it.
    pub fn bus(&self) -> &BTreeMap<String, BTreeMap<String, u64>> {
        &self.bus
    }

    /// A group's positions as the Bus takes them (e.g. to seek a consumer
    /// past what is already archived).
    pub fn bus_positions(&self, group: &str) -> Vec<Position> {
        self.bus.get(group).map(to_positions).unwrap_or_default()
    }

    /// The archived line offsets of a source.
    pub fn archived(&self, source_id: u64) -> Option<&RangeSet> {
        self.sources.get(&source_id).map(|s| &s.ranges)
    }

    /// Whether the line of `source_id` starting at `offset` is archived.
    pub fn is_line_archived(&self, source_id: u64, offset: u64) -> bool {
        self.archived(source_id).is_some_and(|r| r.contains(offset))
    }

    /// Whether the event is archived (within the bounds above).
    pub fn has_event(&self, id: &str) -> bool {
        self.event_index.contains_key(id)
    }

    /// Number of event ids remembered.
    pub fn event_id_count(&self) -> usize {
        self.event_count
    }

    /// Number of sources with archived ranges.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Applies the next commit. The caller checked that `commit.version` is
    /// `version + 1`. Inconsistencies a correct writer never produces
    /// (removing a split that is not live, adding one twice) are logged and
    /// applied as far as they make sense, so one bad commit does not stop
    /// every reader.
    pub(crate) fn apply(&mut self, commit: &Commit) {
        debug_assert_eq!(commit.version, self.version + 1);
        let previous_clock = self.clock_unix_ms;
        self.version = commit.version;
        self.clock_unix_ms = self.clock_unix_ms.max(commit.created_unix_ms);
        for key in &commit.removed {
            match self.splits.remove(key) {
                Some(entry) => {
                    self.removed.insert(
                        key.clone(),
                        RemovedSplit {
                            key: key.clone(),
                            index_key: entry.index_key,
                            removed_unix_ms: commit.created_unix_ms,
                            version: commit.version,
                        },
                    );
                }
                None => tracing::warn!(
                    version = commit.version,
                    split = %key,
                    "catalog commit removes a split that is not live"
                ),
            }
        }
        for entry in &commit.added {
            // What it holds is in `sources` and `events` below (for the
            // splits that change data): not kept twice.
            let live = SplitEntry {
                held: Default::default(),
                ..entry.clone()
            };
            if self.splits.insert(entry.key.clone(), live).is_some() {
                tracing::warn!(
                    version = commit.version,
                    split = %entry.key,
                    "catalog commit adds a split that is already live"
                );
            }
        }
        if let Some(bus) = &commit.bus {
            let group = self.bus.entry(bus.group.clone()).or_default();
            for (partition, &position) in &bus.positions {
                group.insert(partition.clone(), position);
            }
        }
        for (&source, ranges) in &commit.archived {
            let entry = self.sources.entry(source).or_default();
            entry.ranges.extend(ranges);
            entry.last_unix_ms = entry.last_unix_ms.max(commit.created_unix_ms);
        }
        if !commit.event_ids.is_empty() {
            for id in &commit.event_ids {
                self.event_index.insert(id.clone(), commit.version);
            }
            self.event_count += commit.event_ids.len();
            self.events.push_back(EventBatch {
                version: commit.version,
                unix_ms: commit.created_unix_ms,
                ids: commit.event_ids.clone(),
            });
        }
        self.prune(previous_clock);
    }

    fn prune(&mut self, previous_clock: u64) {
        let now = self.clock_unix_ms;
        while let Some(front) = self.events.front() {
            let expired = front.unix_ms.saturating_add(EVENT_ID_RETENTION_MS) < now;
            if !expired && self.event_count <= MAX_EVENT_IDS {
                break;
            }
            let batch = self.events.pop_front().expect("front exists");
            self.event_count -= batch.ids.len();
            for id in batch.ids {
                if self.event_index.get(&id) == Some(&batch.version) {
                    self.event_index.remove(&id);
                }
            }
        }
        // Sources and removed splits are scanned once per hour of commit
        // time, not on every commit.
        if now / HOUR_MS != previous_clock / HOUR_MS {
            self.sources
                .retain(|_, s| s.last_unix_ms.saturating_add(SOURCE_RETENTION_MS) >= now);
            self.removed
                .retain(|_, r| r.removed_unix_ms.saturating_add(REMOVED_RETENTION_MS) >= now);
        }
    }
}
