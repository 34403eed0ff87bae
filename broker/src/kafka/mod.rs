//! The Kafka bus: [`KafkaBus`] publishes through an idempotent, `acks=all`,
//! zstd-compressing producer and [`KafkaConsumer`] reads in consumer groups
//! with manual commits.
//!
//! Records are enqueued in the order `send` is called: a full producer queue
//! is waited out with the same record, under a lock, so a later record never
//! overtakes an earlier one. Keys are hashed with Kafka's murmur2
//! partitioner (the Java client's), so records of one key, the empty key
//! included, share a partition. Topics are created on first use with the
//! configured partitions and replication; the names already known are cached
//! so this costs nothing after the first record.
//!
//! Every error names the bootstrap servers. Calls into librdkafka that block
//! (metadata, offsets, commits, flush) run on the blocking thread pool, never
//! on the async runtime's threads.

mod consumer;
#[cfg(test)]
mod tests;

pub use consumer::KafkaConsumer;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::{
    Ack, Bus, BusStatus, Consumer, Delivery, Error, GroupOffset, GroupStatus, KafkaConfig,
    PartitionStatus, Record, Result, TopicStatus,
};

/// How long `send` sleeps before offering a record again to a full queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

/// How often `ensure_topics` looks for a topic it just created.
const TOPIC_VISIBLE_POLL: Duration = Duration::from_millis(100);

/// A Kafka cluster used as the bus.
pub struct KafkaBus {
    servers: Arc<str>,
    config: KafkaConfig,
    producer: FutureProducer<KafkaContext>,
    /// Creates topics and answers metadata queries; it never auto-creates a
    /// topic by asking about it.
    admin: Arc<AdminClient<KafkaContext>>,
    known_topics: Mutex<HashSet<String>>,
    /// Groups this handle joined: reported by `status` even where the broker
    /// does not list groups (tansu drops ListGroups).
    joined_groups: Mutex<std::collections::BTreeSet<String>>,
    /// Held while a record is enqueued, so records keep the order of `send`.
    enqueue: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBus")
            .field("servers", &self.servers)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaBus {
    /// Connects to the cluster at `servers` (`host:port,host:port`). Fails
    /// within `config.timeout()` with an error naming `servers` when no
    /// broker answers.
    pub async fn connect(servers: &str, config: KafkaConfig) -> Result<KafkaBus> {
        config.validate()?;
        let servers: Arc<str> = Arc::from(servers);
        let timeout = config.timeout();
        let context = KafkaContext {
            servers: servers.clone(),
        };
        let producer: FutureProducer<KafkaContext> =
            client_config(&servers, &config, &producer_settings(&config))
                .create_with_context(context.clone())
                .map_err(|e| kafka_error(&servers, e))?;
        let admin: AdminClient<KafkaContext> = client_config(
            &servers,
            &config,
            &[("allow.auto.create.topics", "false".into())],
        )
        .create_with_context(context)
        .map_err(|e| kafka_error(&servers, e))?;
        let admin = Arc::new(admin);

        let metadata = {
            let admin = admin.clone();
            let fetch = blocking(move || Ok(admin.inner().fetch_metadata(None, timeout)));
            // librdkafka bounds the fetch itself; this bounds a fetch that hangs.
            match tokio::time::timeout(timeout + Duration::from_secs(1), fetch).await {
                Ok(result) => result?,
                Err(_) => Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::OperationTimedOut,
                )),
            }
        };
        let metadata = metadata.map_err(|e| match e.rdkafka_error_code() {
            Some(code) if is_unreachable(code) => Error::Unavailable {
                servers: servers.to_string(),
                detail: format!("no broker answered within {timeout:?} ({e})"),
            },
            _ => kafka_error(&servers, e),
        })?;
        let known: HashSet<String> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name().to_string())
            .collect();
        info!(
            servers = %servers,
            brokers = metadata.brokers().len(),
            topics = known.len(),
            "connected to kafka"
        );
        Ok(KafkaBus {
            servers,
            config,
            producer,
            admin,
            joined_groups: Mutex::default(),
            known_topics: Mutex::new(known),
            enqueue: tokio::sync::Mutex::new(()),
        })
    }

    fn kafka(&self, source: KafkaError) -> Error {
        kafka_error(&self.servers, source)
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known_topics
            .lock()
            .expect("topic cache poisoned")
            .contains(topic)
    }

    /// Creates the topics of `topics` the cluster does not have yet and
    /// waits until its metadata shows them.
    async fn ensure(&self, topics: &[&str]) -> Result<()> {
        let unknown: Vec<String> = {
            let known = self.known_topics.lock().expect("topic cache poisoned");
            topics
                .iter()
                .filter(|t| !known.contains(**t))
                .map(|t| t.to_string())
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let mut missing = Vec::new();
        for topic in unknown {
            if self.topic_exists(&topic).await? {
                self.remember(&topic);
            } else {
                missing.push(topic);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }

        let timeout = self.config.timeout();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    self.config.partitions as i32,
                    TopicReplication::Fixed(self.config.replication as i32),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results: Vec<(String, Option<RDKafkaErrorCode>)> =
            match self.admin.create_topics(&new_topics, &options).await {
                Ok(results) => results
                    .into_iter()
                    .map(|result| match result {
                        Ok(topic) => (topic, None),
                        Err((topic, code)) => (topic, Some(code)),
                    })
                    .collect(),
                // The whole request failed, for instance timed out.
                Err(KafkaError::AdminOp(code)) => {
                    missing.iter().map(|t| (t.clone(), Some(code))).collect()
                }
                Err(e) => return Err(self.kafka(e)),
            };
        for (topic, error) in results {
            match error {
                None => {
                    info!(
                        servers = %self.servers,
                        topic = %topic,
                        partitions = self.config.partitions,
                        replication = self.config.replication,
                        "created kafka topic"
                    );
                    self.wait_visible(&topic).await?;
                }
                Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                    debug!(servers = %self.servers, topic = %topic, "kafka topic already exists");
                }
                Some(code) => return Err(self.creation_failed(&topic, code)),
            }
            self.remember(&topic);
        }
        Ok(())
    }

    /// An error naming the topic, retryable when the cause is.
    fn creation_failed(&self, topic: &str, code: RDKafkaErrorCode) -> Error {
        let detail = format!("failed to create topic {topic}: {code}");
        // `KafkaError::AdminOp` hides its code from `rdkafka_error_code`,
        // which `is_retryable` reads; `Global` shows it.
        if self.kafka(KafkaError::Global(code)).is_retryable() {
            Error::Unavailable {
                servers: self.servers.to_string(),
                detail,
            }
        } else {
            self.kafka(KafkaError::AdminOpCreation(detail))
        }
    }

    fn remember(&self, topic: &str) {
        self.known_topics
            .lock()
            .expect("topic cache poisoned")
            .insert(topic.to_string());
    }

    /// Whether the cluster has `topic`, asking without creating it.
    async fn topic_exists(&self, topic: &str) -> Result<bool> {
        let admin = self.admin.clone();
        let metadata = fetch_topic_metadata(admin, topic, self.config.timeout()).await?;
        let metadata = metadata.map_err(|e| self.kafka(e))?;
        Ok(has_topic(&metadata, topic))
    }

    async fn wait_visible(&self, topic: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.timeout();
        loop {
            if self.topic_exists(topic).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    servers = %self.servers,
                    topic = %topic,
                    "created kafka topic is not in the cluster metadata yet"
                );
                return Ok(());
            }
            tokio::time::sleep(TOPIC_VISIBLE_POLL).await;
        }
    }

    /// Offers `record` to the producer queue until it is accepted.
    async fn enqueue(
        &self,
        topic: &str,
        record: &Record,
    ) -> Result<rdkafka::producer::DeliveryFuture> {
        let _order = self.enqueue.lock().await;
        let mut pending = FutureRecord::to(topic)
            .key(&record.key[..])
            .payload(&record.payload[..])
            .timestamp(record.timestamp_ms);
        let deadline = tokio::time::Instant::now() + self.config.timeout();
        loop {
            match self.producer.send_result(pending) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Unavailable {
                            servers: self.servers.to_string(),
                            detail: format!(
                                "producer queue stayed full for {:?} sending to topic {topic}",
                                self.config.timeout()
                            ),
                        });
                    }
                    pending = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), _)) => {
                    let reason = self
                        .producer
                        .client()
                        .fatal_error()
                        .map(|(code, reason)| format!("{code}: {reason}"))
                        .unwrap_or_else(|| "unknown fatal error".into());
                    return Err(Error::Unavailable {
                        servers: self.servers.to_string(),
                        detail: format!("producer failed and must be recreated: {reason}"),
                    });
                }
                Err((e, _)) => return Err(self.kafka(e)),
            }
        }
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn url(&self) -> String {
        format!("kafka://{}", self.servers)
    }

    async fn send(&self, topic: &str, record: Record) -> Result<Ack> {
        if !self.is_known(topic) {
            self.ensure(&[topic]).await?;
        }
        let delivery = self.enqueue(topic, &record).await?;
        let servers = self.servers.clone();
        let ack: Ack = Box::pin(async move {
            match delivery.await {
                Ok(Ok(delivered)) => Ok(Delivery {
                    partition: delivered.partition as u32,
                    offset: delivered.offset as u64,
                }),
                Ok(Err((source, _))) => Err(kafka_error(&servers, source)),
                // The producer was dropped before it learnt the outcome.
                Err(_) => Err(Error::Closed),
            }
        });
        Ok(ack)
    }

    async fn ensure_topics(&self, topics: &[&str]) -> Result<()> {
        self.ensure(topics).await
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> Result<Box<dyn Consumer>> {
        self.ensure(topics).await?;
        let consumer = KafkaConsumer::join(&self.servers, &self.config, group, topics).await?;
        self.joined_groups.lock().unwrap().insert(group.to_string());
        Ok(Box::new(consumer))
    }

    async fn status(&self, groups: &[&str]) -> Result<BusStatus> {
        let mut wanted = self.joined_groups.lock().unwrap().clone();
        wanted.extend(groups.iter().map(|g| g.to_string()));
        let servers = self.servers.clone();
        let config = self.config.clone();
        let admin = self.admin.clone();
        let url = self.url();
        let (topics, groups) =
            blocking(move || read_status(&servers, &config, admin.inner(), wanted)).await?;
        Ok(BusStatus {
            url,
            topics,
            groups,
        })
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.producer.clone();
        let flushed = blocking(move || Ok(producer.flush(timeout))).await?;
        match flushed {
            Ok(()) => Ok(()),
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => {
                Err(Error::Unavailable {
                    servers: self.servers.to_string(),
                    detail: format!(
                        "{} records still unacknowledged after {timeout:?}",
                        self.producer.in_flight_count()
                    ),
                })
            }
            Err(e) => Err(self.kafka(e)),
        }
    }
}

/// Topics with their watermarks, then the consumer groups (those the broker
/// lists, and `wanted`) that committed on them. Blocking.
fn read_status(
    servers: &str,
    config: &KafkaConfig,
    client: &Client<KafkaContext>,
    mut wanted: std::collections::BTreeSet<String>,
) -> Result<(Vec<TopicStatus>, Vec<GroupStatus>)> {
    let timeout = config.timeout();
    let metadata = client
        .fetch_metadata(None, timeout)
        .map_err(|e| kafka_error(servers, e))?;
    let mut topics = Vec::new();
    for topic in metadata.topics() {
        if topic.name().starts_with("__") {
            continue;
        }
        if let Some(error) = topic.error() {
            warn!(servers, topic = topic.name(), error = ?error, "kafka topic metadata has an error");
            continue;
        }
        let mut partitions = Vec::new();
        for partition in topic.partitions() {
            let (low, high) = client
                .fetch_watermarks(topic.name(), partition.id(), timeout)
                .map_err(|e| kafka_error(servers, e))?;
            partitions.push(PartitionStatus {
                partition: partition.id() as u32,
                start_offset: low.max(0) as u64,
                end_offset: high.max(0) as u64,
                bytes: None,
            });
        }
        partitions.sort_by_key(|p| p.partition);
        topics.push(TopicStatus {
            topic: topic.name().to_string(),
            partitions,
        });
    }
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));

    match client.fetch_group_list(None, timeout) {
        Ok(list) => wanted.extend(
            list.groups()
                .iter()
                .filter(|g| g.protocol_type().is_empty() || g.protocol_type() == "consumer")
                .map(|g| g.name().to_string()),
        ),
        // Old brokers, tansu, librdkafka's mock cluster and clusters that
        // deny describing groups: report the groups asked for by name.
        Err(e) => warn!(
            servers,
            error = %e,
            "kafka did not list consumer groups; reporting the groups named or joined"
        ),
    }
    let mut groups = Vec::new();
    for name in wanted {
        match group_status(servers, config, &name, &topics) {
            Ok(Some(status)) => groups.push(status),
            Ok(None) => {}
            Err(e) => warn!(
                servers,
                group = %name,
                error = %e,
                "failed to read kafka consumer group offsets"
            ),
        }
    }
    Ok((topics, groups))
}

/// The committed offsets of `group` on the partitions of `topics`, or
/// `None` when it committed on none of them. Blocking.
fn group_status(
    servers: &str,
    config: &KafkaConfig,
    group: &str,
    topics: &[TopicStatus],
) -> Result<Option<GroupStatus>> {
    let context = KafkaContext {
        servers: Arc::from(servers),
    };
    let consumer: BaseConsumer<KafkaContext> =
        client_config(servers, config, &[("group.id", group.to_string())])
            .create_with_context(context)
            .map_err(|e| kafka_error(servers, e))?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for partition in &topic.partitions {
            list.add_partition(&topic.topic, partition.partition as i32);
        }
    }
    let committed = consumer
        .committed_offsets(list, config.timeout())
        .map_err(|e| kafka_error(servers, e))?;
    let mut offsets = Vec::new();
    for element in committed.elements() {
        let Offset::Offset(offset) = element.offset() else {
            continue;
        };
        let partition = topics
            .iter()
            .find(|t| t.topic == element.topic())
            .and_then(|t| {
                t.partitions
                    .iter()
                    .find(|p| p.partition == element.partition() as u32)
            });
        if let Some(partition) = partition {
            offsets.push(GroupOffset::new(
                element.topic(),
                partition.partition,
                Some(offset.max(0) as u64),
                partition.start_offset,
                partition.end_offset,
            ));
        }
    }
    if offsets.is_empty() {
        return Ok(None);
    }
    Ok(Some(GroupStatus::new(group.to_string(), offsets)))
}

/// Logs librdkafka's messages and client errors with the servers they
/// concern.
#[derive(Clone)]
pub(crate) struct KafkaContext {
    servers: Arc<str>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(&self.servers, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.servers, &error, reason);
    }
}

impl ConsumerContext for KafkaContext {}

pub(crate) fn log_librdkafka(servers: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", servers, facility, "{message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", servers, facility, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", servers, facility, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", servers, facility, "{message}")
        }
    }
}

/// librdkafka reports connection trouble here and keeps retrying on its
/// own; operations that fail because of it return their own errors.
pub(crate) fn log_client_error(servers: &str, error: &KafkaError, reason: &str) {
    warn!(target: "librdkafka", servers, error = %error, "kafka client error: {reason}");
}

fn producer_settings(config: &KafkaConfig) -> Vec<(&'static str, String)> {
    vec![
        ("enable.idempotence", "true".into()),
        ("acks", "all".into()),
        ("compression.type", "zstd".into()),
        // zstd's fastest level: log lines compress well at any level, the
        // archive compresses again, and level 3 (the default) costs the
        // shipping node about twice the CPU. `--kafka-property` overrides it.
        ("compression.level", "1".into()),
        ("linger.ms", config.linger_ms.to_string()),
        ("batch.size", config.batch_bytes.to_string()),
        ("message.timeout.ms", config.timeout_ms.to_string()),
        ("partitioner", "murmur2_random".into()),
    ]
}

/// The settings every client shares, then `settings`, then the user's
/// properties, which win.
pub(crate) fn client_config(
    servers: &str,
    config: &KafkaConfig,
    settings: &[(&'static str, String)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", servers);
    client.set("client.id", "sluice");
    for (key, value) in settings {
        client.set(*key, value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

pub(crate) fn kafka_error(servers: &str, source: KafkaError) -> Error {
    Error::Kafka {
        servers: servers.to_string(),
        source,
    }
}

/// Runs a blocking librdkafka call on the blocking thread pool.
pub(crate) async fn blocking<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Closed),
    }
}

async fn fetch_topic_metadata(
    admin: Arc<AdminClient<KafkaContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<rdkafka::error::KafkaResult<Metadata>> {
    let topic = topic.to_string();
    blocking(move || Ok(admin.inner().fetch_metadata(Some(&topic), timeout))).await
}

fn has_topic(metadata: &Metadata, topic: &str) -> bool {
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

fn is_unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
    )
}
