//! What the shipper's stages hand each other: the tracker's chunks to the
//! publisher, acknowledgements back, hints that wake the
//! tracker, and the tap through which Tail streams see what was read. Both
//! `files/` (the tracker) and `tail/` (the Tail service) use this module;
//! neither imports the other.

use std::path::PathBuf;

use crate::files::source::FileKey;
use tap::SnapshotRequest;

pub mod tap;

/// A chunk the tracker hands the publisher.
#[derive(Debug)]
pub(crate) struct ChunkOut {
    pub note: AckNote,
    /// The bus key, `job/instance`.
    pub key: String,
    /// An encoded `LogChunk`.
    pub payload: bytes::Bytes,
}

/// Sent back by the publisher once a chunk is acknowledged or failed.
#[derive(Debug, Clone)]
pub(crate) struct AckNote {
    pub key: FileKey,
    pub source_id: u64,
    pub epoch: u64,
    /// The offset reading may resume from once this chunk is acknowledged.
    pub resume_end: u64,
    pub bytes: usize,
    pub ok: bool,
}

/// Wakes the tracker.
#[derive(Debug)]
pub(crate) enum Hint {
    /// Something changed at this path (inotify).
    Path(PathBuf),
    /// The task of this sandbox ended: ship unterminated lines now.
    SandboxEnded(PathBuf),
    /// The watcher lost events: rescan now.
    Rescan,
    /// The publisher's word on a chunk (here, so it wakes the tracker).
    Acked(AckNote),
    /// A Tail follower wants the tracked sources.
    Snapshot(SnapshotRequest),
    Shutdown,
}
