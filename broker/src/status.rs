//! What `sluice bus status` reports, for either bus.

use serde::Serialize;

/// A snapshot of a bus from [`Bus::status`](crate::Bus::status): its topics and the
/// consumer groups that committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BusStatus {
    /// The URL the bus was opened with, as [`Bus::url`](crate::Bus::url) gives it.
    pub url: String,
    /// Every topic the bus holds, with its partitions.
    pub topics: Vec<TopicStatus>,
    /// Consumer groups that committed: those the bus lists, those this handle
    /// joined, and those asked for by name.
    pub groups: Vec<GroupStatus>,
}

/// One topic's partitions and their offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicStatus {
    /// Topic name, such as `sluice.logs`.
    pub topic: String,
    /// One entry per partition, in the order the bus reports them.
    pub partitions: Vec<PartitionStatus>,
}

/// The offsets (and size, where known) of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// Partition number within the topic, from 0.
    pub partition: u32,
    /// Offset of the oldest record still kept.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
    /// Bytes on disk, where the bus knows them.
    pub bytes: Option<u64>,
}

/// How far one consumer group has read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The consumer group's name.
    pub group: String,
    /// One entry per partition of each topic the group committed on, sorted by topic and partition.
    pub offsets: Vec<GroupOffset>,
    /// Records not yet committed by the group, over all partitions.
    pub lag: u64,
}

/// How far one consumer group has read one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    /// Topic of the partition.
    pub topic: String,
    /// Partition number within the topic.
    pub partition: u32,
    /// Next offset the group will read; `None` when it never committed.
    pub committed: Option<u64>,
    /// Offset the next record of the partition will get (its end when the status was taken).
    pub end_offset: u64,
    /// Records the group has still to read: `end_offset` minus the committed
    /// offset, counted from the oldest kept record when the group never committed
    /// or its commit fell behind retention.
    pub lag: u64,
}

impl GroupStatus {
    /// Builds a group's status from its commits and the partitions' ends.
    pub fn new(group: String, mut offsets: Vec<GroupOffset>) -> Self {
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let lag = offsets.iter().map(|o| o.lag).sum();
        GroupStatus {
            group,
            offsets,
            lag,
        }
    }
}

impl GroupOffset {
    /// The offsets of `topic`/`partition` for a group whose commit is `committed`
    /// (`None`: never committed), the partition now holding offsets `start..end`;
    /// computes [`lag`](Self::lag).
    pub fn new(topic: &str, partition: u32, committed: Option<u64>, start: u64, end: u64) -> Self {
        let from = committed.unwrap_or(start).max(start);
        GroupOffset {
            topic: topic.to_string(),
            partition,
            committed,
            end_offset: end,
            lag: end.saturating_sub(from),
        }
    }
}
