//! Tests against librdkafka's in-process mock cluster.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use rdkafka::mocking::MockCluster;

use super::*;
use crate::{Message, Position, poll_until};

const KEYS: [&str; 4] = ["node-a", "node-b", "node-c", ""];

fn config(timeout_ms: u64) -> KafkaConfig {
    // The mock cluster keeps a group whose last member left rebalancing for
    // the session timeout less a second before it admits a new member.
    let properties = [("session.timeout.ms".to_string(), "6000".to_string())];
    KafkaConfig {
        partitions: 3,
        replication: 1,
        timeout_ms,
        linger_ms: 5,
        properties: properties.into(),
        ..KafkaConfig::default()
    }
}

/// The `seq`th record of `key`; the payload says both.
fn record(key: &str, seq: u64) -> Record {
    Record::new(
        key.to_string(),
        format!("{key}#{seq}"),
        1_700_000_000_000 + seq as i64,
    )
}

fn sequence_of(message: &Message) -> u64 {
    let payload = std::str::from_utf8(&message.payload).expect("utf-8 payload");
    let (key, seq) = payload.rsplit_once('#').expect("key#seq payload");
    assert_eq!(key.as_bytes(), &message.key[..], "{message:?}");
    seq.parse().expect("sequence number")
}

/// Every key's records, in the order read, must be 0, 1, 2, … `count - 1`.
fn assert_each_key_in_order(messages: &[Message], keys: &[&str], count: u64) {
    let mut by_key: BTreeMap<&[u8], Vec<u64>> = BTreeMap::new();
    for message in messages {
        by_key
            .entry(&message.key[..])
            .or_default()
            .push(sequence_of(message));
    }
    for key in keys {
        let read = by_key.get(key.as_bytes()).cloned().unwrap_or_default();
        assert_eq!(
            read,
            (0..count).collect::<Vec<_>>(),
            "records of key {key:?} missing, repeated or out of order"
        );
    }
}

fn assert_read_once(messages: &[Message]) {
    let mut seen = HashSet::new();
    for message in messages {
        assert!(
            seen.insert((message.partition, message.offset)),
            "read twice: {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_in_key_order_and_commits_resume() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("sluice.logs", 3, 1)
        .expect("create topic");
    let servers = cluster.bootstrap_servers();
    let bus = KafkaBus::connect(&servers, config(10_000))
        .await
        .expect("connect");
    assert_eq!(bus.url(), format!("kafka://{servers}"));

    // Publish interleaved keys and keep every ack with its record.
    let per_key = 40;
    let mut sent = Vec::new();
    for seq in 0..per_key {
        for key in KEYS {
            let record = record(key, seq);
            let ack = bus.send("sluice.logs", record.clone()).await.expect("send");
            sent.push((record, ack));
        }
    }
    let mut delivered = Vec::new();
    for (record, ack) in sent {
        let delivery = tokio::time::timeout(Duration::from_secs(30), ack)
            .await
            .expect("ack within 30s")
            .expect("record acknowledged");
        delivered.push((record, delivery));
    }
    for key in KEYS {
        let of_key: Vec<Delivery> = delivered
            .iter()
            .filter(|(r, _)| r.key == key.as_bytes())
            .map(|(_, d)| *d)
            .collect();
        assert!(
            of_key.iter().all(|d| d.partition == of_key[0].partition),
            "key {key:?} spread over partitions: {of_key:?}"
        );
        assert!(
            of_key.windows(2).all(|w| w[0].offset < w[1].offset),
            "key {key:?} stored out of send order: {of_key:?}"
        );
    }

    let mut consumer = bus
        .consumer("archivers", &["sluice.logs"])
        .await
        .expect("join group");
    assert_eq!(
        consumer.assignment().expect("assignment").len(),
        3,
        "the only member holds every partition"
    );
    let total = per_key as usize * KEYS.len();
    let messages = poll_until(consumer.as_mut(), total, Duration::from_secs(30))
        .await
        .expect("poll");
    assert_eq!(messages.len(), total);
    assert_read_once(&messages);
    assert_each_key_in_order(&messages, &KEYS, per_key);
    for (record, delivery) in &delivered {
        let message = messages
            .iter()
            .find(|m| m.partition == delivery.partition && m.offset == delivery.offset)
            .expect("acknowledged record is read");
        assert_eq!(
            (&message.key, &message.payload),
            (&record.key, &record.payload)
        );
        assert_eq!(message.timestamp_ms, record.timestamp_ms);
        assert_eq!(message.topic, "sluice.logs");
    }

    // Commit everything read on each partition but the last record of one.
    let mut positions: BTreeMap<u32, Position> = BTreeMap::new();
    for message in &messages {
        positions.insert(message.partition, message.next_position());
    }
    let (&held_back, last) = positions.iter_mut().next().expect("a partition");
    last.offset -= 1;
    let positions: Vec<Position> = positions.into_values().collect();
    consumer.commit(&positions).await.expect("commit");
    assert_eq!(consumer.committed().await.expect("committed"), positions);

    let foreign = Position::new("sluice.logs", 7, 1);
    match consumer.commit(&[foreign]).await {
        Err(Error::NotAssigned {
            topic,
            partition: 7,
        }) if topic == "sluice.logs" => {}
        other => panic!("commit of a partition never assigned: {other:?}"),
    }

    // Seek back to the start of a partition: its records come again.
    consumer
        .seek(&Position::new("sluice.logs", held_back, 0))
        .await
        .expect("seek");
    let again = poll_until(consumer.as_mut(), 1, Duration::from_secs(30))
        .await
        .expect("poll after seek");
    assert_eq!(
        (again[0].partition, again[0].offset),
        (held_back, 0),
        "{again:?}"
    );
    drop(consumer);

    // A new member of the group resumes after the commits: only the record
    // held back comes again.
    let mut resumed = bus
        .consumer("archivers", &["sluice.logs"])
        .await
        .expect("rejoin group");
    let rest = poll_until(resumed.as_mut(), 1, Duration::from_secs(30))
        .await
        .expect("poll");
    let tail = resumed
        .poll(100, Duration::from_millis(500))
        .await
        .expect("poll");
    assert!(tail.is_empty(), "read beyond the commits: {tail:?}");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].partition, held_back);
    assert_eq!(rest[0].offset, positions[0].offset);

    // Status: watermarks and the group's lag of one record.
    let status = bus.status(&[]).await.expect("status");
    let logs = status
        .topics
        .iter()
        .find(|t| t.topic == "sluice.logs")
        .expect("topic in status");
    assert_eq!(logs.partitions.len(), 3);
    assert_eq!(
        logs.partitions
            .iter()
            .map(|p| p.end_offset - p.start_offset)
            .sum::<u64>(),
        total as u64
    );
    let (servers2, config2, topics) = (servers.clone(), config(10_000), status.topics.clone());
    let group = tokio::task::spawn_blocking(move || {
        super::group_status(&servers2, &config2, "archivers", &topics)
    })
    .await
    .expect("join")
    .expect("group offsets")
    .expect("the group committed");
    assert_eq!(group.lag, 1, "{group:?}");
    assert_eq!(group.offsets.len(), positions.len());
}

/// A topic the cluster has is found by asking, not created: the mock
/// cluster cannot create topics, so creating would fail after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topics_are_found_not_created() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let servers = cluster.bootstrap_servers();
    let bus = KafkaBus::connect(&servers, config(5_000))
        .await
        .expect("connect");
    cluster
        .create_topic("sluice.late", 2, 1)
        .expect("create topic");
    assert!(!bus.is_known("sluice.late"), "created after connecting");
    let started = Instant::now();
    bus.ensure_topics(&["sluice.late"]).await.expect("ensure");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(bus.is_known("sluice.late"));
    let delivery = bus
        .publish("sluice.late", record("node-a", 0))
        .await
        .expect("publish");
    assert_eq!(delivery.offset, 0);
    let status = bus.status(&[]).await.expect("status");
    let late = status
        .topics
        .iter()
        .find(|t| t.topic == "sluice.late")
        .expect("topic in status");
    assert_eq!(late.partitions.len(), 2);
    assert!(status.groups.is_empty(), "{status:?}");
}

/// When a topic cannot be created the error names it and the servers, and
/// asking about it did not make the broker auto-create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_topic_creation_names_the_topic() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let servers = cluster.bootstrap_servers();
    let bus = KafkaBus::connect(&servers, config(1_000))
        .await
        .expect("connect");
    let Err(error) = bus.send("sluice.nowhere", record("node-a", 0)).await else {
        panic!("the mock cluster cannot create topics");
    };
    let message = error.to_string();
    assert!(message.contains("sluice.nowhere"), "{message}");
    assert!(message.contains(&servers), "{message}");
    assert!(error.is_retryable(), "creation timed out: {error:?}");
    assert!(!bus.is_known("sluice.nowhere"));
    let status = bus.status(&[]).await.expect("status");
    assert!(
        status.topics.iter().all(|t| t.topic != "sluice.nowhere"),
        "asking about the topic created it: {status:?}"
    );
}

/// Sends record `seq` of every key for each `seq` of `rounds`.
async fn send_rounds(bus: &KafkaBus, keys: &[&str], rounds: Range<u64>, acks: &mut Vec<Ack>) {
    for seq in rounds {
        for key in keys {
            let ack = bus
                .send("sluice.faults", record(key, seq))
                .await
                .expect("send enqueues while the leader is away");
            acks.push(ack);
        }
    }
}

/// Waits for every ack; each must succeed at a place no other record got.
async fn await_acks(acks: Vec<Ack>, deliveries: &mut HashSet<Delivery>) {
    for ack in acks {
        let delivery = tokio::time::timeout(Duration::from_secs(60), ack)
            .await
            .expect("ack within 60s")
            .expect("record acknowledged after the fault");
        assert!(
            deliveries.insert(delivery),
            "two records stored at {delivery:?}"
        );
    }
}

/// The partition leader goes down mid-stream and comes back: every record
/// is acknowledged once and stored once, in order per key.
///
/// The mock cluster checks producer sequence numbers only for transactional
/// producers, so it cannot show the idempotent producer dropping a batch
/// sent twice (a lost response): a slow-leader phase, where requests time
/// out after being stored, duplicates records there with or without
/// `enable.idempotence`. That property needs a real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_outage_loses_and_duplicates_nothing() {
    const LEADER: i32 = 1;
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster
        .create_topic("sluice.faults", 2, 3)
        .expect("create topic");
    for partition in 0..2 {
        cluster
            .partition_leader("sluice.faults", partition, Some(LEADER))
            .expect("set leader");
    }
    let servers = cluster.bootstrap_servers();
    let bus = KafkaBus::connect(&servers, config(30_000))
        .await
        .expect("connect");

    let per_key = 200;
    let keys = &KEYS[..3];
    let mut acks = Vec::new();
    send_rounds(&bus, keys, 0..50, &mut acks).await;
    cluster.broker_down(LEADER).expect("leader down");
    send_rounds(&bus, keys, 50..100, &mut acks).await;
    // Give the producer time to run into the outage (not an assertion).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let last = acks.last_mut().expect("acks");
    assert!(
        last.now_or_never().is_none(),
        "a record was acknowledged while its leader was down"
    );
    cluster.broker_up(LEADER).expect("leader up");
    let mut deliveries = HashSet::new();
    await_acks(acks, &mut deliveries).await;

    // Publishing goes on after the outage.
    let mut acks = Vec::new();
    send_rounds(&bus, keys, 100..per_key, &mut acks).await;
    await_acks(acks, &mut deliveries).await;

    let total = per_key as usize * keys.len();
    assert_eq!(deliveries.len(), total);
    bus.flush(Duration::from_secs(10)).await.expect("flush");

    // Stored exactly once: the partitions hold as many records as were sent.
    let status = bus.status(&[]).await.expect("status");
    let faults = status
        .topics
        .iter()
        .find(|t| t.topic == "sluice.faults")
        .expect("topic in status");
    assert_eq!(
        faults.partitions.iter().map(|p| p.end_offset).sum::<u64>(),
        total as u64,
        "{faults:?}"
    );

    let mut consumer = bus
        .consumer("faults", &["sluice.faults"])
        .await
        .expect("join group");
    let messages = poll_until(consumer.as_mut(), total, Duration::from_secs(60))
        .await
        .expect("poll");
    let extra = consumer
        .poll(100, Duration::from_millis(500))
        .await
        .expect("poll");
    assert!(extra.is_empty(), "more records than sent: {extra:?}");
    assert_eq!(messages.len(), total);
    assert_read_once(&messages);
    assert_each_key_in_order(&messages, keys, per_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_fails_in_time_naming_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    drop(listener);
    let timeout_ms = 1_000;
    let started = Instant::now();
    let error = KafkaBus::connect(&address, config(timeout_ms))
        .await
        .expect_err("nothing listens there");
    let elapsed = started.elapsed();
    let message = error.to_string();
    assert!(message.contains(&address), "{message}");
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        elapsed < Duration::from_millis(timeout_ms) + Duration::from_secs(2),
        "took {elapsed:?}"
    );
}

/// The same round trip against a real Kafka-protocol broker (tansu), where
/// topics are created through the admin API.
/// Skips when no broker is installed (see `scripts/test.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_creates_topics_and_keeps_group_offsets() {
    let Some(kafka) = sluice_testkit::TestKafka::start() else {
        return;
    };
    let settings = KafkaConfig {
        partitions: 2,
        ..config(30_000)
    };
    let bus = KafkaBus::connect(&kafka.bootstrap(), settings.clone())
        .await
        .expect("connect");
    let per_key = 20;
    let keys = &KEYS[..3];
    let mut acks = Vec::new();
    for seq in 0..per_key {
        for key in keys {
            acks.push(
                bus.send("sluice.real", record(key, seq))
                    .await
                    .expect("send"),
            );
        }
    }
    let mut deliveries = HashSet::new();
    await_acks(acks, &mut deliveries).await;
    let total = per_key as usize * keys.len();

    let mut consumer = bus
        .consumer("real", &["sluice.real"])
        .await
        .expect("join group");
    let messages = poll_until(consumer.as_mut(), total, Duration::from_secs(60))
        .await
        .expect("poll");
    assert_eq!(messages.len(), total);
    assert_read_once(&messages);
    assert_each_key_in_order(&messages, keys, per_key);
    let mut positions: BTreeMap<u32, Position> = BTreeMap::new();
    for message in &messages {
        positions.insert(message.partition, message.next_position());
    }
    let positions: Vec<Position> = positions.into_values().collect();
    consumer.commit(&positions).await.expect("commit");
    assert_eq!(consumer.committed().await.expect("committed"), positions);

    // Created through the admin API with the configured partitions.
    let status = bus.status(&[]).await.expect("status");
    let real = status
        .topics
        .iter()
        .find(|t| t.topic == "sluice.real")
        .expect("topic in status");
    assert_eq!(real.partitions.len(), 2);
    assert_eq!(
        real.partitions.iter().map(|p| p.end_offset).sum::<u64>(),
        total as u64
    );
    // tansu 0.6 drops the connection on ListGroups, so `status` reports no
    // groups there; the offsets of a named group are still readable.
    let (servers, topics) = (kafka.bootstrap(), status.topics.clone());
    let group = tokio::task::spawn_blocking(move || {
        super::group_status(&servers, &settings, "real", &topics)
    })
    .await
    .expect("join")
    .expect("group offsets")
    .expect("the group committed");
    assert_eq!(group.lag, 0, "{group:?}");
    assert_eq!(group.offsets.len(), 2);
}
