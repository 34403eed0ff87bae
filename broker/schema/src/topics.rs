//! Bus topic names and record keys.
//!
//! One bus message is one `LogChunk` (on [`LOGS`]) or one `ClusterEvent` (on
//! [`EVENTS`]), protobuf-encoded. Log chunks are keyed by `job/instance`, so
//! the bus keeps one instance's lines in order; events by job (or host for
//! node-wide events), so a job's history stays in order.

use crate::pb::{ClusterEvent, LogChunk};

/// Topic of `LogChunk` records.
pub const LOGS: &str = "sluice.logs";
/// Topic of `ClusterEvent` records.
pub const EVENTS: &str = "sluice.events";
/// Every topic Sluice creates on first use.
pub const ALL: [&str; 2] = [LOGS, EVENTS];

/// The bus key of a log chunk: `job/instance`.
pub fn chunk_key(chunk: &LogChunk) -> String {
    let source = chunk.source.as_ref();
    let job = source.map_or("", |s| s.job.as_str());
    let instance = source.map_or(0, |s| s.instance);
    format!("{job}/{instance}")
}

/// The bus key of an event: its job, or `host:<host>` for node-wide events.
pub fn event_key(event: &ClusterEvent) -> String {
    if event.job.is_empty() {
        format!("host:{}", event.host)
    } else {
        event.job.clone()
    }
}

/// A topic's partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TopicPartition {
    /// Topic name, such as [`LOGS`] or [`EVENTS`].
    pub topic: String,
    /// Partition number within the topic, from 0.
    pub partition: u32,
}

/// A partition and an offset in it: a commit (the next offset to read) or a
/// seek target. The archive records the positions it consumed with its
/// commits, so the type lives here, shared by the bus and the archive.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    /// Topic name, such as [`LOGS`] or [`EVENTS`].
    pub topic: String,
    /// Partition number within the topic, from 0.
    pub partition: u32,
    /// Record offset in the partition; for a commit, the next offset to read.
    pub offset: u64,
}

impl Position {
    /// A position at `offset` of `topic`'s `partition`; nothing is checked against the bus.
    pub fn new(topic: impl Into<String>, partition: u32, offset: u64) -> Self {
        Position {
            topic: topic.into(),
            partition,
            offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Source;

    #[test]
    fn chunk_key_is_job_and_instance() {
        let chunk = LogChunk {
            source: Some(Source {
                job: "www/prod/api".into(),
                instance: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(chunk_key(&chunk), "www/prod/api/7");
    }

    #[test]
    fn node_events_are_keyed_by_host() {
        let event = ClusterEvent {
            host: "node-2".into(),
            ..Default::default()
        };
        assert_eq!(event_key(&event), "host:node-2");
    }
}
