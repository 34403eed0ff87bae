//! The `Bus` and `Consumer` traits every implementation keeps.
//!
//! Offsets follow Kafka: a partition's records have consecutive offsets from
//! its start; a committed position is the offset of the *next* record to read.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::{BusStatus, Result};

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Records with equal keys go to one partition and keep their order.
    pub key: Bytes,
    /// The record's body, opaque to the bus (on Sluice's topics, a protobuf `LogChunk` or
    /// `ClusterEvent`).
    pub payload: Bytes,
    /// Milliseconds since the Unix epoch; the time of the record's content.
    pub timestamp_ms: i64,
}

impl Record {
    /// A record with `key`, `payload` and `timestamp_ms` (milliseconds since the Unix epoch).
    pub fn new(key: impl Into<Bytes>, payload: impl Into<Bytes>, timestamp_ms: i64) -> Self {
        Record {
            key: key.into(),
            payload: payload.into(),
            timestamp_ms,
        }
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Delivery {
    /// Partition the record went to, chosen from its key.
    pub partition: u32,
    /// Offset the record got in that partition.
    pub offset: u64,
}

/// Resolves once the bus holds a record durably (see each implementation
/// for what durable means there), or fails. A failed record may still have
/// been stored (Kafka: a delivery timeout while the request was in flight),
/// so sending it again can store it twice: consumers drop such duplicates by
/// the record's own identity (`(source_id, offset)` for log lines).
pub type Ack = Pin<Box<dyn std::future::Future<Output = Result<Delivery>> + Send + 'static>>;

/// A consumed record.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic the record was read from.
    pub topic: String,
    /// Partition of the topic it was read from.
    pub partition: u32,
    /// Its offset in the partition; commit [`next_position`](Self::next_position), one past it.
    pub offset: u64,
    /// The key it was published with (see [`Record::key`]).
    pub key: Bytes,
    /// The body it was published with.
    pub payload: Bytes,
    /// Milliseconds since the Unix epoch, as published; 0 when Kafka returns no timestamp.
    pub timestamp_ms: i64,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("payload_len", &self.payload.len())
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

impl Message {
    /// The position to commit once this message is processed.
    pub fn next_position(&self) -> Position {
        Position {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset + 1,
        }
    }
}

pub use sluice_schema::topics::{Position, TopicPartition};

/// A message bus: publishes records to topics and hands out consumers in groups.
/// Implemented by [`KafkaBus`](crate::kafka::KafkaBus) and
/// [`EmbeddedBus`](crate::embedded::EmbeddedBus); [`open`](crate::open) picks one from a bus URL.
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug {
    /// The URL this bus was opened with, for messages and status.
    fn url(&self) -> String;

    /// Queues `record` on `topic` (created on first use) and returns its
    /// acknowledgement. Waits only while the bus pushes back (a full queue).
    /// Records queued one after another by one caller with the same key are
    /// stored in that order.
    async fn send(&self, topic: &str, record: Record) -> Result<Ack>;

    /// Sends and waits for the acknowledgement.
    async fn publish(&self, topic: &str, record: Record) -> Result<Delivery> {
        self.send(topic, record).await?.await
    }

    /// Creates topics that do not exist yet.
    async fn ensure_topics(&self, topics: &[&str]) -> Result<()>;

    /// Joins consumer group `group` reading `topics`. Each partition is read
    /// by one member of a group at a time, from the group's committed
    /// position, or from the oldest record when the group has none.
    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>>;

    /// Topics, partitions, offsets and the lag of consumer groups that
    /// committed: every group the bus can list, those this handle joined,
    /// and `groups` (for brokers that do not list groups, such as tansu).
    async fn status(&self, groups: &[&str]) -> Result<BusStatus>;

    /// Waits until every record sent so far is acknowledged or failed.
    async fn flush(&self, timeout: Duration) -> Result<()>;
}

/// One member of a consumer group, made by [`Bus::consumer`]: reads its assigned partitions and
/// commits how far it got.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records, waiting at most `timeout` for the first; an empty
    /// batch when none arrived. Records of one partition come in offset order.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>>;

    /// Commits positions (next offsets to read) for assigned partitions.
    async fn commit(&mut self, positions: &[Position]) -> Result<()>;

    /// Makes the next `poll` of `topic/partition` start at `offset`.
    async fn seek(&mut self, position: &Position) -> Result<()>;

    /// Partitions currently assigned to this member.
    fn assignment(&self) -> Result<Vec<TopicPartition>>;

    /// The group's committed positions for the assigned partitions.
    async fn committed(&mut self) -> Result<Vec<Position>>;
}

/// Polls until `want` messages arrived or `deadline` passed. For tools and
/// tests that read a known amount.
pub async fn poll_until(
    consumer: &mut dyn Consumer,
    want: usize,
    deadline: Duration,
) -> Result<Vec<Message>> {
    let start = tokio::time::Instant::now();
    let mut out = Vec::with_capacity(want);
    while out.len() < want && start.elapsed() < deadline {
        let batch = consumer
            .poll(want - out.len(), Duration::from_millis(200))
            .await?;
        out.extend(batch);
    }
    Ok(out)
}
