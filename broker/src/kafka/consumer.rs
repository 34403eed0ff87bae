//! [`KafkaConsumer`]: one member of a Kafka consumer group, committing by
//! hand.
//!
//! Joining waits (at most the configured timeout) for the group's first
//! assignment, so `assignment` and `seek` work right after
//! [`Bus::consumer`](crate::Bus::consumer) returns. Records that arrive
//! meanwhile are kept for the first `poll`. Commits are checked against the
//! current assignment: a partition this member no longer holds is refused
//! with [`Error::Rebalanced`] if it returned records of it, with
//! [`Error::NotAssigned`] otherwise, and so is a commit Kafka rejects because
//! the group moved on.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{blocking, client_config, kafka_error, log_client_error, log_librdkafka};
use crate::{Consumer, Error, KafkaConfig, Message, Position, Result, TopicPartition};

/// How long `seek` waits before trying again on a partition whose fetcher
/// has not started yet.
const SEEK_RETRY: Duration = Duration::from_millis(50);

/// A member of a Kafka consumer group.
pub struct KafkaConsumer {
    servers: Arc<str>,
    group: String,
    timeout: Duration,
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// Records received while waiting for the first assignment.
    buffered: VecDeque<Message>,
    /// An error met after a batch had records: the next `poll` returns it.
    pending_error: Option<Error>,
    /// Partitions this member returned records of.
    delivered: Vec<TopicPartition>,
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("servers", &self.servers)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins `group` reading `topics`, which must exist.
    pub(super) async fn join(
        servers: &Arc<str>,
        config: &KafkaConfig,
        group: &str,
        topics: &[&str],
    ) -> Result<KafkaConsumer> {
        let (assigned, mut assignments) = watch::channel(0u64);
        let context = GroupContext {
            servers: servers.clone(),
            group: group.to_string(),
            assigned,
        };
        let settings = [
            ("group.id", group.to_string()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("enable.partition.eof", "false".into()),
        ];
        let consumer: StreamConsumer<GroupContext> = client_config(servers, config, &settings)
            .create_with_context(context)
            .map_err(|e| kafka_error(servers, e))?;
        consumer
            .subscribe(topics)
            .map_err(|e| kafka_error(servers, e))?;
        let mut member = KafkaConsumer {
            servers: servers.clone(),
            group: group.to_string(),
            timeout: config.timeout(),
            consumer: Arc::new(consumer),
            buffered: VecDeque::new(),
            pending_error: None,
            delivered: Vec::new(),
        };
        member.await_assignment(&mut assignments).await?;
        Ok(member)
    }

    /// Polls until the group assigns this member its partitions (none is an
    /// answer too), keeping records that arrive meanwhile.
    async fn await_assignment(&mut self, assignments: &mut watch::Receiver<u64>) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let consumer = self.consumer.clone();
        loop {
            let assigned = *assignments.borrow_and_update() > 0;
            if assigned {
                return Ok(());
            }
            tokio::select! {
                changed = assignments.changed() => {
                    if changed.is_err() {
                        return Err(Error::Closed);
                    }
                }
                received = consumer.recv() => match received {
                    Ok(message) => self.buffered.push_back(detach(&message)),
                    Err(e) => self.consumption_error(e)?,
                },
                () = tokio::time::sleep_until(deadline) => {
                    warn!(
                        servers = %self.servers,
                        group = %self.group,
                        timeout = ?self.timeout,
                        "kafka consumer group assigned no partitions in time; polling keeps trying"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Transient errors (a broker away, a leader moving) are logged and
    /// librdkafka recovers from them; others are returned.
    fn consumption_error(&self, source: KafkaError) -> Result<()> {
        let error = kafka_error(&self.servers, source);
        if error.is_retryable() {
            warn!(servers = %self.servers, group = %self.group, error = %error, "kafka consumer error; retrying");
            Ok(())
        } else {
            Err(error)
        }
    }

    /// The partitions this member holds now; none once librdkafka considers
    /// the assignment lost.
    fn held(&self) -> Result<Vec<TopicPartition>> {
        if self.consumer.assignment_lost() {
            return Ok(Vec::new());
        }
        self.assignment()
    }

    fn not_held(&self, topic: &str, partition: u32) -> Error {
        let delivered = self
            .delivered
            .iter()
            .any(|tp| tp.topic == topic && tp.partition == partition);
        if delivered {
            Error::Rebalanced {
                group: self.group.clone(),
                topic: topic.to_string(),
                partition,
            }
        } else {
            Error::NotAssigned {
                topic: topic.to_string(),
                partition,
            }
        }
    }

    fn note_delivered(&mut self, batch: &[Message]) {
        for message in batch {
            let known = self
                .delivered
                .iter()
                .any(|tp| tp.topic == message.topic && tp.partition == message.partition);
            if !known {
                self.delivered.push(TopicPartition {
                    topic: message.topic.clone(),
                    partition: message.partition,
                });
            }
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.buffered.pop_front() {
                Some(message) => batch.push(message),
                None => break,
            }
        }
        let consumer = self.consumer.clone();
        if batch.is_empty() && max > 0 {
            let deadline = Instant::now() + timeout;
            loop {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Err(_) => return Ok(batch),
                    Ok(Ok(message)) => {
                        batch.push(detach(&message));
                        break;
                    }
                    Ok(Err(e)) => self.consumption_error(e)?,
                }
            }
        }
        // Take what librdkafka already fetched, without waiting.
        while batch.len() < max {
            match consumer.recv().now_or_never() {
                None => break,
                Some(Ok(message)) => batch.push(detach(&message)),
                Some(Err(e)) => {
                    if let Err(error) = self.consumption_error(e) {
                        self.pending_error = Some(error);
                        break;
                    }
                }
            }
        }
        self.note_delivered(&batch);
        Ok(batch)
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<()> {
        let Some(first) = positions.first() else {
            return Ok(());
        };
        let held = self.held()?;
        let mut list = TopicPartitionList::with_capacity(positions.len());
        for position in positions {
            if !holds(&held, &position.topic, position.partition) {
                return Err(self.not_held(&position.topic, position.partition));
            }
            list.add_partition_offset(
                &position.topic,
                position.partition as i32,
                Offset::Offset(position.offset as i64),
            )
            .map_err(|e| kafka_error(&self.servers, e))?;
        }
        let consumer = self.consumer.clone();
        let committed = blocking(move || Ok(consumer.commit(&list, CommitMode::Sync))).await?;
        match committed {
            Ok(()) => {
                debug!(servers = %self.servers, group = %self.group, positions = positions.len(), "committed kafka offsets");
                Ok(())
            }
            Err(e) => match e.rdkafka_error_code() {
                Some(
                    RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::FencedInstanceId,
                ) => Err(Error::Rebalanced {
                    group: self.group.clone(),
                    topic: first.topic.clone(),
                    partition: first.partition,
                }),
                _ => Err(kafka_error(&self.servers, e)),
            },
        }
    }

    async fn seek(&mut self, position: &Position) -> Result<()> {
        if !holds(&self.held()?, &position.topic, position.partition) {
            return Err(Error::NotAssigned {
                topic: position.topic.clone(),
                partition: position.partition,
            });
        }
        self.buffered
            .retain(|m| m.topic != position.topic || m.partition != position.partition);
        let deadline = Instant::now() + self.timeout;
        loop {
            let consumer = self.consumer.clone();
            let target = position.clone();
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            match blocking(move || Ok(seek_once(&consumer, &target, wait))).await? {
                Seek::Done => {
                    debug!(servers = %self.servers, group = %self.group, topic = %position.topic, partition = position.partition, offset = position.offset, "kafka consumer seeked");
                    return Ok(());
                }
                // Just assigned: librdkafka is still looking up where to
                // start fetching, and refuses to seek until it knows.
                Seek::NotStarted if Instant::now() < deadline => {
                    tokio::time::sleep(SEEK_RETRY).await;
                }
                Seek::NotStarted => {
                    return Err(Error::Unavailable {
                        servers: self.servers.to_string(),
                        detail: format!(
                            "failed to seek {}/{}: fetching did not start within {:?}",
                            position.topic, position.partition, self.timeout
                        ),
                    });
                }
                Seek::Failed(e) => return Err(kafka_error(&self.servers, e)),
            }
        }
    }

    fn assignment(&self) -> Result<Vec<TopicPartition>> {
        let list = self
            .consumer
            .assignment()
            .map_err(|e| kafka_error(&self.servers, e))?;
        let mut assigned: Vec<TopicPartition> = list
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_string(),
                partition: e.partition() as u32,
            })
            .collect();
        assigned.sort();
        Ok(assigned)
    }

    async fn committed(&mut self) -> Result<Vec<Position>> {
        let consumer = self.consumer.clone();
        let timeout = self.timeout;
        let list = blocking(move || Ok(consumer.committed(timeout)))
            .await?
            .map_err(|e| kafka_error(&self.servers, e))?;
        let mut positions: Vec<Position> = list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) if offset >= 0 => Some(Position::new(
                    e.topic(),
                    e.partition() as u32,
                    offset as u64,
                )),
                _ => None,
            })
            .collect();
        positions.sort();
        Ok(positions)
    }
}

fn holds(held: &[TopicPartition], topic: &str, partition: u32) -> bool {
    held.iter()
        .any(|tp| tp.topic == topic && tp.partition == partition)
}

enum Seek {
    Done,
    NotStarted,
    Failed(KafkaError),
}

/// Blocking.
fn seek_once(consumer: &StreamConsumer<GroupContext>, target: &Position, wait: Duration) -> Seek {
    let mut list = TopicPartitionList::with_capacity(1);
    if let Err(e) = list.add_partition_offset(
        &target.topic,
        target.partition as i32,
        Offset::Offset(target.offset as i64),
    ) {
        return Seek::Failed(e);
    }
    let list = match consumer.seek_partitions(list, wait) {
        Ok(list) => list,
        Err(e) => return Seek::Failed(e),
    };
    for element in list.elements() {
        // rdkafka reports a partition's error as an offset fetch error.
        if let Err(KafkaError::OffsetFetch(code)) = element.error() {
            if code == RDKafkaErrorCode::State {
                return Seek::NotStarted;
            }
            return Seek::Failed(KafkaError::Seek(code.to_string()));
        }
    }
    Seek::Done
}

fn detach(message: &BorrowedMessage<'_>) -> Message {
    Message {
        topic: message.topic().to_string(),
        partition: message.partition() as u32,
        offset: message.offset() as u64,
        key: message
            .key()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
        payload: message
            .payload()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
    }
}

/// Logs with the servers and group, and counts assignments so joining can
/// wait for the first.
struct GroupContext {
    servers: Arc<str>,
    group: String,
    assigned: watch::Sender<u64>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(&self.servers, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.servers, &error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                debug!(servers = %self.servers, group = %self.group, partitions = partitions.count(), "kafka consumer group assigned partitions");
                self.assigned.send_modify(|count| *count += 1);
            }
            Rebalance::Revoke(partitions) => {
                debug!(servers = %self.servers, group = %self.group, partitions = partitions.count(), "kafka consumer group revoked partitions");
            }
            Rebalance::Error(error) => {
                warn!(servers = %self.servers, group = %self.group, error = %error, "kafka consumer group rebalance failed");
            }
        }
    }
}
