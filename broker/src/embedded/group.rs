//! Consumer groups of the embedded bus.
//!
//! A group's committed positions live in `_groups/<group>.json`, replaced
//! atomically (write, fsync, rename, fsync the directory) on every commit.
//! Members of a group within this process share its partitions: each
//! partition of a subscribed topic belongs to one member, round robin over
//! the members sorted by join order; a join or leave starts a new generation,
//! and a commit for a partition the member no longer owns is refused, so the
//! new owner receives again whatever was not committed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::embedded::Shared;
use crate::embedded::partition::Cursor;
use crate::{Consumer, Error, Message, Position, Result, TopicPartition};

type Offsets = BTreeMap<(String, u32), u64>;
/// A generation and the member's partitions with their committed offsets.
type Assignment = (u64, Vec<(TopicPartition, Option<u64>)>);

#[derive(Default)]
struct Group {
    generation: u64,
    /// Member id to subscribed topics; ids grow, so the order is join order.
    members: BTreeMap<u64, Vec<String>>,
    committed: Option<Offsets>,
}

pub(crate) struct Groups {
    dir: PathBuf,
    read_only: bool,
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct OffsetsFile {
    group: String,
    offsets: Vec<Position>,
}

impl Groups {
    pub(crate) fn new(dir: PathBuf, read_only: bool) -> Self {
        Groups {
            dir,
            read_only,
            groups: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
        }
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.json"))
    }

    fn with_group<T>(&self, group: &str, f: impl FnOnce(&mut Group) -> Result<T>) -> Result<T> {
        let mut groups = self.groups.lock().unwrap();
        let entry = groups.entry(group.to_string()).or_default();
        if entry.committed.is_none() {
            entry.committed = Some(read_offsets(&self.path(group))?);
        }
        f(entry)
    }

    fn join(&self, group: &str, topics: Vec<String>) -> Result<u64> {
        let member = self.next_member.fetch_add(1, Ordering::Relaxed);
        self.with_group(group, |g| {
            g.members.insert(member, topics);
            g.generation += 1;
            Ok(member)
        })
    }

    fn leave(&self, group: &str, member: u64) {
        let mut groups = self.groups.lock().unwrap();
        if let Some(g) = groups.get_mut(group) {
            g.members.remove(&member);
            g.generation += 1;
        }
    }

    /// The member's partitions in the group's current generation.
    fn assignment(
        &self,
        group: &str,
        member: u64,
        partitions_of: impl Fn(&str) -> u32,
    ) -> Result<Assignment> {
        self.with_group(group, |g| {
            let mut mine = Vec::new();
            let topics = g.members.get(&member).cloned().unwrap_or_default();
            for topic in topics {
                let peers: Vec<u64> = g
                    .members
                    .iter()
                    .filter(|(_, t)| t.contains(&topic))
                    .map(|(id, _)| *id)
                    .collect();
                let Some(rank) = peers.iter().position(|id| *id == member) else {
                    continue;
                };
                for partition in 0..partitions_of(&topic) {
                    if partition as usize % peers.len() == rank {
                        let committed = g
                            .committed
                            .as_ref()
                            .and_then(|c| c.get(&(topic.clone(), partition)).copied());
                        mine.push((
                            TopicPartition {
                                topic: topic.clone(),
                                partition,
                            },
                            committed,
                        ));
                    }
                }
            }
            Ok((g.generation, mine))
        })
    }

    fn generation(&self, group: &str) -> u64 {
        self.groups
            .lock()
            .unwrap()
            .get(group)
            .map_or(0, |g| g.generation)
    }

    fn commit(&self, group: &str, generation: u64, positions: &[Position]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(
                "commits need the bus opened for writing".into(),
            ));
        }
        let path = self.path(group);
        self.with_group(group, |g| {
            if g.generation != generation
                && let Some(p) = positions.first()
            {
                return Err(Error::Rebalanced {
                    group: group.to_string(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                });
            }
            let mut offsets = g.committed.clone().unwrap_or_default();
            for p in positions {
                offsets.insert((p.topic.clone(), p.partition), p.offset);
            }
            write_offsets(&self.dir, &path, group, &offsets)?;
            g.committed = Some(offsets);
            Ok(())
        })
    }

    /// Every group with commits, on disk or in memory.
    pub(crate) fn all_committed(&self) -> Result<BTreeMap<String, Offsets>> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(group) = name.strip_suffix(".json") {
                    out.insert(group.to_string(), read_offsets(&entry.path())?);
                }
            }
        }
        for (name, g) in self.groups.lock().unwrap().iter() {
            if let Some(c) = &g.committed
                && !c.is_empty()
            {
                out.insert(name.clone(), c.clone());
            }
        }
        Ok(out)
    }
}

fn read_offsets(path: &Path) -> Result<Offsets> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Offsets::new()),
        Err(e) => return Err(Error::io("failed to read group offsets", path, e)),
    };
    let file: OffsetsFile = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        problem: format!("group offsets are not valid: {e}"),
    })?;
    Ok(file
        .offsets
        .into_iter()
        .map(|p| ((p.topic, p.partition), p.offset))
        .collect())
}

fn write_offsets(dir: &Path, path: &Path, group: &str, offsets: &Offsets) -> Result<()> {
    let file = OffsetsFile {
        group: group.to_string(),
        offsets: offsets
            .iter()
            .map(|((topic, partition), offset)| Position::new(topic, *partition, *offset))
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&file).expect("offsets serialize");
    let tmp = path.with_extension("json.tmp");
    let io = |e| Error::io("failed to write group offsets", path, e);
    std::fs::create_dir_all(dir).map_err(io)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// A member of an embedded consumer group.
pub struct EmbeddedConsumer {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    generation: u64,
    cursors: BTreeMap<TopicPartition, Cursor>,
    appended: watch::Receiver<u64>,
    /// Where the next poll starts, for fairness between partitions.
    turn: usize,
}

impl EmbeddedConsumer {
    pub(crate) fn join(shared: Arc<Shared>, group: &str, topics: Vec<String>) -> Result<Self> {
        let member = shared.groups.join(group, topics)?;
        let appended = shared.appended.subscribe();
        let mut consumer = EmbeddedConsumer {
            shared,
            group: group.to_string(),
            member,
            generation: 0,
            cursors: BTreeMap::new(),
            appended,
            turn: 0,
        };
        consumer.rebalance()?;
        Ok(consumer)
    }

    /// Takes up the member's current partitions if the generation changed.
    fn rebalance(&mut self) -> Result<()> {
        if self.shared.groups.generation(&self.group) == self.generation {
            return Ok(());
        }
        let shared = self.shared.clone();
        let (generation, assigned) =
            shared
                .groups
                .assignment(&self.group, self.member, |topic| {
                    shared
                        .topic_if_exists(topic)
                        .map_or(0, |t| t.partitions.len() as u32)
                })?;
        let mut cursors = BTreeMap::new();
        for (tp, committed) in assigned {
            let cursor = match self.cursors.remove(&tp) {
                Some(cursor) => cursor,
                None => {
                    let start = shared
                        .topic_if_exists(&tp.topic)
                        .map_or(0, |t| t.partitions[tp.partition as usize].start_offset());
                    Cursor::at(committed.unwrap_or(start))
                }
            };
            cursors.insert(tp, cursor);
        }
        self.cursors = cursors;
        self.generation = generation;
        Ok(())
    }

    fn read_available(&mut self, max: usize) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let n = self.cursors.len();
        if n == 0 {
            return Ok(out);
        }
        let start = self.turn % n;
        self.turn = self.turn.wrapping_add(1);
        let keys: Vec<TopicPartition> = self.cursors.keys().cloned().collect();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let tp = &keys[(start + i) % n];
            let Some(topic) = self.shared.topic_if_exists(&tp.topic) else {
                continue;
            };
            let partition = &topic.partitions[tp.partition as usize];
            let cursor = self.cursors.get_mut(tp).unwrap();
            partition.read(cursor, max - out.len(), &mut out)?;
        }
        Ok(out)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.rebalance()?;
            self.appended.borrow_and_update();
            let out = self.read_available(max.max(1))?;
            if !out.is_empty() {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            if self.shared.read_only {
                // Another process writes: look again shortly.
                tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
            } else {
                // New records, or a membership change noticed on the next turn.
                let wake = deadline.min(now + Duration::from_millis(500));
                let _ = tokio::time::timeout_at(wake, self.appended.changed()).await;
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<()> {
        self.rebalance()?;
        for p in positions {
            let tp = TopicPartition {
                topic: p.topic.clone(),
                partition: p.partition,
            };
            if !self.cursors.contains_key(&tp) {
                return Err(Error::Rebalanced {
                    group: self.group.clone(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                });
            }
        }
        self.shared
            .groups
            .commit(&self.group, self.generation, positions)
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        self.rebalance()?;
        let tp = TopicPartition {
            topic: position.topic.clone(),
            partition: position.partition,
        };
        match self.cursors.get_mut(&tp) {
            Some(cursor) => {
                *cursor = Cursor::at(position.offset);
                Ok(())
            }
            None => Err(Error::NotAssigned {
                topic: tp.topic,
                partition: tp.partition,
            }),
        }
    }

    fn assignment(&self) -> Result<Vec<TopicPartition>> {
        Ok(self.cursors.keys().cloned().collect())
    }

    async fn committed(&mut self) -> Result<Vec<Position>> {
        self.rebalance()?;
        let shared = self.shared.clone();
        let (_, assigned) = shared
            .groups
            .assignment(&self.group, self.member, |topic| {
                shared
                    .topic_if_exists(topic)
                    .map_or(0, |t| t.partitions.len() as u32)
            })?;
        Ok(assigned
            .into_iter()
            .filter_map(|(tp, c)| c.map(|offset| Position::new(tp.topic, tp.partition, offset)))
            .collect())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.shared.groups.leave(&self.group, self.member);
    }
}
