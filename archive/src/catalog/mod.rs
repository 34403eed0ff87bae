//! The archive's catalog: each table's Delta Lake log, kept in the object
//! store with the splits. An append-only log of commits, each adding and
//! removing splits and carrying the Bus positions (`txn`) and, in its
//! splits' `add` tags, the line ranges and event ids it archived.
//!
//! ```text
//! <prefix>/logs/_delta_log/00000000000000000000.json        the table's creation
//! <prefix>/logs/_delta_log/00000000000000000001.json        commit 1, 2, 3, … (put-if-absent)
//! <prefix>/logs/_delta_log/00000000000000000050.checkpoint.parquet   Delta checkpoint (delta-rs)
//! <prefix>/logs/_sluice/state/00000000000000000050.json     Sluice's state as of 50
//! <prefix>/logs/date=…/hour=…/<id>.parquet, logs/_index/…    split objects
//! <prefix>/events/…                                          the same for events
//! ```
//!
//! - [`Catalog::open`] loads the latest state cache and replays the Delta
//!   commits after it; [`Catalog::refresh`] follows new ones.
//!   [`CatalogState`] is the result: live splits, Bus positions, archived
//!   `(source_id, offset)` ranges ([`RangeSet`]), recent event ids. Other
//!   engines read the same log: the same files are live for them.
//! - [`Catalog::commit`] writes a [`CommitDraft`] as the next version. Two
//!   writers on one base: one wins, the other gets
//!   [`CommitOutcome::Conflict`] and decides with
//!   [`CommitDraft::conflicts_with`] (or uses [`Catalog::commit_rebasing`]).
//!   A compaction or retention commit removes and adds splits in one commit,
//!   so readers see the old splits or the new ones, never both or neither.
//! - The janitor ([`Catalog::delete_orphans`]) deletes objects of failed
//!   attempts and of removed splits after a grace period.
//!
//! How an archiver stays exact across crashes: it drops lines whose
//! `(source_id, offset)` the state (or its draft) already has, uploads the
//! split objects, commits, and only then commits its Bus positions. A crash
//! before the commit leaves only unreferenced objects (the janitor's); a
//! crash after it means the Bus delivers again what the catalog already
//! holds, which dedup drops.

mod checkpoint;
mod commit;
mod config;
pub mod delta;
mod entry;
mod error;
mod held;
mod janitor;
pub mod legacy;
mod log;
mod ranges;
mod state;
mod store;

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod tests;

pub use commit::{
    BusCheckpoint, Commit, CommitDraft, CommitOutcome, FORMAT, SplitEntry, SplitKind, partition_key,
};
pub use config::CatalogConfig;
pub use entry::split_entry;
pub use error::{Error, Result};
pub use held::{Held, IdSet};
pub use log::{Catalog, MAX_PARALLEL_READS};
pub use ranges::RangeSet;
pub use state::{
    CatalogState, EVENT_ID_RETENTION_MS, EventBatch, MAX_EVENT_IDS, REMOVED_RETENTION_MS,
    RemovedSplit, SOURCE_RETENTION_MS, SourceRanges,
};
