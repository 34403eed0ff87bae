//! What the tracker tells Tail followers: every chunk it sends, file
//! lifecycle, cluster events, and on request a snapshot of its sources.
//!
//! The tap is a broadcast channel that costs nothing while nobody follows
//! (the tracker checks for receivers before cloning anything). A follower
//! that falls behind loses tap items, notices (`Lagged`), and catches up
//! from the files, which are the buffer here as everywhere in the shipper.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use sluice_schema::pb::lifecycle::Kind;
use sluice_schema::pb::{ClusterEvent, Source};
use tokio::sync::{broadcast, oneshot};

use crate::files::source::FileKey;

#[derive(Debug, Clone)]
pub(crate) enum TapItem {
    /// An encoded `LogChunk`, exactly as sent to the bus.
    Chunk {
        source_id: u64,
        payload: Bytes,
    },
    Lifecycle {
        kind: Kind,
        source: Arc<Source>,
        offset: u64,
        message: String,
    },
    Event(Arc<ClusterEvent>),
}

#[derive(Clone)]
pub(crate) struct Tap {
    tx: broadcast::Sender<TapItem>,
}

impl Tap {
    /// `capacity`: items kept for a slow follower before it must catch up
    /// from the files.
    pub(crate) fn new(capacity: usize) -> Tap {
        Tap {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Someone follows: worth building items for.
    pub(crate) fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn send(&self, item: TapItem) {
        if self.active() {
            let _ = self.tx.send(item);
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<TapItem> {
        self.tx.subscribe()
    }
}

/// One tracked source as a follower needs it to read back what was sent.
#[derive(Debug)]
pub(crate) struct SourceView {
    pub source: Source,
    /// A duplicate of the tracker's descriptor (the same file even if it was
    /// renamed or deleted), or none if the tracker had closed it.
    pub file: Option<File>,
    pub path: PathBuf,
    pub key: FileKey,
    /// Every line before this offset was handed to the tap; the lines from
    /// here on will be.
    pub read_end: u64,
    /// When the tracker started on this generation, or, once it read from
    /// it, when it first did: before that no follower was told of it.
    pub first_seen_nanos: i64,
    /// `(offset, time)`: where reading stood at those times, for `since`.
    pub samples: Vec<(u64, i64)>,
}

/// Asks the tracker for the sources `filter` accepts.
pub(crate) struct SnapshotRequest {
    pub filter: Box<dyn Fn(&Source) -> bool + Send>,
    pub reply: oneshot::Sender<Vec<SourceView>>,
}

impl std::fmt::Debug for SnapshotRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotRequest")
    }
}
