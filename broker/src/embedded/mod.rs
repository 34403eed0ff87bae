//! The embedded bus: a durable log on local disk, the single-machine default.
//!
//! ```text
//! <root>/LOCK                       held (flock) by the one writing process
//! <root>/<topic>/topic.json         {"partitions": N}
//! <root>/<topic>/<partition>/<base offset>.log   segments (see `segment`)
//! <root>/_groups/<group>.json       committed positions of a consumer group
//! ```
//!
//! Guarantees: a record is acknowledged only after it is written (and, with
//! the default `fsync = "batch"`, synced to disk); an acknowledged record
//! survives `kill -9` of the process (and power loss, with `batch`). On open,
//! a torn record at the end of the log is cut and logged; corrupt bytes are
//! moved aside, never dropped silently. Records with the same key go to one
//! partition (CRC-32C of the key) and keep their order.
//!
//! One process writes at a time (`LOCK`); others may open the bus read-only
//! to inspect it ([`EmbeddedBus::open_read_only`]).

mod group;
mod partition;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

pub use group::EmbeddedConsumer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::embedded::group::Groups;
use crate::embedded::partition::Partition;
use crate::embedded::writer::{Append, Command};
use crate::{
    Ack, Bus, BusStatus, Consumer, EmbeddedConfig, Error, GroupOffset, GroupStatus, Record, Result,
    TopicStatus,
};

/// Bytes of records queued for the writer before `send` waits.
const QUEUE_BUDGET: usize = 256 << 20;

pub(crate) struct Topic {
    pub name: String,
    pub partitions: Vec<Arc<Partition>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    partitions: u32,
}

/// State shared by the bus handle, its writer thread and its consumers.
pub(crate) struct Shared {
    root: PathBuf,
    pub(crate) config: EmbeddedConfig,
    pub(crate) read_only: bool,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    pub(crate) groups: Groups,
    /// Bumped after each write, to wake waiting consumers.
    pub(crate) appended: watch::Sender<u64>,
    round_robin: AtomicU64,
}

impl Shared {
    pub(crate) fn topic_if_exists(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap().get(name).cloned()
    }

    pub(crate) fn all_partitions(&self) -> Vec<Arc<Partition>> {
        let topics = self.topics.read().unwrap();
        topics
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(topic) = self.topic_if_exists(name) {
            return Ok(topic);
        }
        if self.read_only {
            return Err(Error::UnknownTopic { topic: name.into() });
        }
        check_name("topic", name)?;
        let mut topics = self.topics.write().unwrap();
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("failed to create topic", &dir, e))?;
        let meta = TopicFile {
            partitions: self.config.partitions,
        };
        let path = dir.join("topic.json");
        let tmp = dir.join("topic.json.tmp");
        let text = serde_json::to_vec(&meta).expect("topic metadata serializes");
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| File::open(&self.root).and_then(|d| d.sync_all()))
            .map_err(|e| Error::io("failed to create topic", &path, e))?;
        let topic = Arc::new(load_topic(&self.root, name, &self.config, false)?);
        tracing::info!(topic = name, partitions = meta.partitions, "created topic");
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }
}

/// The embedded bus. Dropping it finishes queued writes and releases the lock.
pub struct EmbeddedBus {
    shared: Arc<Shared>,
    writer: Option<WriterHandle>,
    budget: Arc<Semaphore>,
}

struct WriterHandle {
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddedBus({})", self.shared.root.display())
    }
}

impl EmbeddedBus {
    /// Opens (creating if needed) the bus at `root` for writing, recovering
    /// from a crash of its previous writer.
    pub fn open(root: &Path, config: EmbeddedConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io("failed to create bus directory", root, e))?;
        let lock = lock(root)?;
        let shared = Arc::new(load(root, config, false)?);
        let (commands, receiver) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-bus-writer".into())
            .spawn(move || writer::run(thread_shared, receiver))
            .map_err(|e| Error::io("failed to start the writer thread for", root, e))?;
        Ok(EmbeddedBus {
            shared,
            writer: Some(WriterHandle {
                commands: Some(commands),
                thread: Some(thread),
                _lock: lock,
            }),
            budget: Arc::new(Semaphore::new(QUEUE_BUDGET)),
        })
    }

    /// Opens the bus at `root` to read and inspect, without the lock: works
    /// while another process writes to it. Sending and committing fail.
    pub fn open_read_only(root: &Path, config: EmbeddedConfig) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::io(
                "no embedded bus at",
                root,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(EmbeddedBus {
            shared: Arc::new(load(root, config, true)?),
            writer: None,
            budget: Arc::new(Semaphore::new(QUEUE_BUDGET)),
        })
    }

    /// The bus directory it was opened at, holding `LOCK`, one directory per
    /// topic and `_groups/`.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    fn commands(&self) -> Result<&mpsc::Sender<Command>> {
        match &self.writer {
            Some(WriterHandle {
                commands: Some(c), ..
            }) => Ok(c),
            Some(_) => Err(Error::Closed),
            None => Err(Error::ReadOnly("opened for inspection".into())),
        }
    }
}

impl Drop for EmbeddedBus {
    fn drop(&mut self) {
        if let Some(writer) = &mut self.writer {
            writer.commands.take();
            if let Some(thread) = writer.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn lock(root: &Path) -> Result<File> {
    let path = root.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("failed to open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string());
            return Err(Error::Locked {
                path: root.to_path_buf(),
                holder: holder.filter(|h| !h.is_empty()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("failed to lock", &path, e)),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
        .map_err(|e| Error::io("failed to write lock file", &path, e))?;
    Ok(file)
}

fn load(root: &Path, config: EmbeddedConfig, read_only: bool) -> Result<Shared> {
    let mut topics = BTreeMap::new();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io("failed to list bus", root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("failed to list bus", root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || !entry.path().join("topic.json").is_file() {
            continue;
        }
        topics.insert(
            name.clone(),
            Arc::new(load_topic(root, &name, &config, read_only)?),
        );
    }
    let (appended, _) = watch::channel(0);
    Ok(Shared {
        root: root.to_path_buf(),
        groups: Groups::new(root.join("_groups"), read_only),
        config,
        read_only,
        topics: RwLock::new(topics),
        appended,
        round_robin: AtomicU64::new(0),
    })
}

fn load_topic(root: &Path, name: &str, config: &EmbeddedConfig, read_only: bool) -> Result<Topic> {
    let path = root.join(name).join("topic.json");
    let text = std::fs::read(&path).map_err(|e| Error::io("failed to read topic", &path, e))?;
    let meta: TopicFile = serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        path: path.clone(),
        position: 0,
        problem: format!("topic metadata is not valid: {e}"),
    })?;
    let partitions = (0..meta.partitions)
        .map(|id| {
            let dir = root.join(name).join(id.to_string());
            Partition::open(name, id, &dir, config.max_record_bytes, read_only).map(Arc::new)
        })
        .collect::<Result<_>>()?;
    Ok(Topic {
        name: name.to_string(),
        partitions,
    })
}

/// Topic and group names become file names: `[A-Za-z0-9_.-]`, not starting
/// with `_` or `.`.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['_', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} name {name:?} must be 1-200 characters of [A-Za-z0-9_.-], not starting with `_` or `.`"
        )))
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    fn url(&self) -> String {
        format!("embedded://{}", self.shared.root.display())
    }

    async fn send(&self, topic: &str, record: Record) -> Result<Ack> {
        let commands = self.commands()?;
        let size = record.key.len() + record.payload.len();
        if size > self.shared.config.max_record_bytes {
            return Err(Error::RecordTooLarge {
                size,
                limit: self.shared.config.max_record_bytes,
            });
        }
        let topic = self.shared.topic(topic)?;
        let n = topic.partitions.len() as u64;
        let index = if record.key.is_empty() {
            self.shared.round_robin.fetch_add(1, Ordering::Relaxed) % n
        } else {
            crc32c::crc32c(&record.key) as u64 % n
        };
        let permits = size.clamp(1, QUEUE_BUDGET) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        let (ack, delivered) = oneshot::channel();
        commands
            .send(Command::Append(Append {
                partition: topic.partitions[index as usize].clone(),
                record,
                ack,
                permit,
            }))
            .map_err(|_| Error::Closed)?;
        Ok(Box::pin(async move {
            delivered.await.map_err(|_| Error::Closed)?
        }))
    }

    async fn ensure_topics(&self, topics: &[&str]) -> Result<()> {
        for topic in topics {
            self.shared.topic(topic)?;
        }
        Ok(())
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        check_name("consumer group", group)?;
        if !self.shared.read_only {
            self.ensure_topics(topics).await?;
        }
        let topics = topics.iter().map(|t| t.to_string()).collect();
        Ok(Box::new(EmbeddedConsumer::join(
            self.shared.clone(),
            group,
            topics,
        )?))
    }

    async fn status(&self, _groups: &[&str]) -> Result<BusStatus> {
        // Every group with commits is on disk: nothing to ask by name.
        let topics: Vec<Arc<Topic>> = self
            .shared
            .topics
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut status = BusStatus {
            url: self.url(),
            ..Default::default()
        };
        for topic in &topics {
            status.topics.push(TopicStatus {
                topic: topic.name.clone(),
                partitions: topic.partitions.iter().map(|p| p.status()).collect(),
            });
        }
        for (group, committed) in self.shared.groups.all_committed()? {
            let mut offsets = Vec::new();
            for t in &status.topics {
                if !committed.keys().any(|(topic, _)| *topic == t.topic) {
                    continue;
                }
                for p in &t.partitions {
                    let c = committed.get(&(t.topic.clone(), p.partition)).copied();
                    offsets.push(GroupOffset::new(
                        &t.topic,
                        p.partition,
                        c,
                        p.start_offset,
                        p.end_offset,
                    ));
                }
            }
            status.groups.push(GroupStatus::new(group, offsets));
        }
        Ok(status)
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let (done, flushed) = oneshot::channel();
        self.commands()?
            .send(Command::Flush(done))
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(timeout, flushed).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::io(
                "timed out flushing",
                &self.shared.root,
                std::io::ErrorKind::TimedOut.into(),
            )),
        }
    }
}
