//! What `sluice bus status` reports, for either bus.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BusStatus {
    pub url: String,
    pub topics: Vec<TopicStatus>,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicStatus {
    pub topic: String,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Offset of the oldest record still kept.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
    /// Bytes on disk, where the bus knows them.
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub offsets: Vec<GroupOffset>,
    /// Records not yet committed by the group, over all partitions.
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    /// Next offset the group will read; `None` when it never committed.
    pub committed: Option<u64>,
    pub end_offset: u64,
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
