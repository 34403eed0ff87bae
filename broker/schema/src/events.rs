//! Cluster events leave the component that sees them through an
//! [`EventSink`]: the scheduler core and the shipper emit, the shipper's sink
//! publishes to `sluice.events`. Tests pass a [`VecSink`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pb::ClusterEvent;

/// Where cluster events go. Emitting never blocks on the bus: the sink
/// queues and retries.
pub trait EventSink: Send + Sync {
    /// Hands one event to the sink; returns at once, without reporting whether it was delivered.
    fn emit(&self, event: ClusterEvent);
}

/// Unique event ids: `<origin>/<start nanos>-<sequence>`, so a re-sent
/// event keeps its id and two runs of one origin never collide.
#[derive(Debug)]
pub struct EventIds {
    prefix: String,
    next: AtomicU64,
}

impl EventIds {
    /// Ids for `origin` (a host or component name) whose process started at
    /// `start_unix_nanos`; the sequence starts at 0.
    pub fn new(origin: &str, start_unix_nanos: i64) -> Self {
        EventIds {
            prefix: format!("{origin}/{start_unix_nanos}"),
            next: AtomicU64::new(0),
        }
    }

    /// The next id, `<origin>/<start>-<n>`, with `n` counting up from 0; safe to call from many
    /// threads.
    pub fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Keeps events in memory, for tests.
#[derive(Debug, Default)]
pub struct VecSink(pub Mutex<Vec<ClusterEvent>>);

impl VecSink {
    /// A copy of the events emitted so far, oldest first.
    pub fn events(&self) -> Vec<ClusterEvent> {
        self.0.lock().unwrap().clone()
    }
}

impl EventSink for VecSink {
    fn emit(&self, event: ClusterEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_per_origin_and_start() {
        let ids = EventIds::new("node-1", 42);
        assert_eq!(ids.next(), "node-1/42-0");
        assert_eq!(ids.next(), "node-1/42-1");
    }
}
