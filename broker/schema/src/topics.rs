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
