//! The Bus contract, run against both implementations: the embedded log and
//! Kafka (a real Kafka-protocol broker, tansu, started per test on loopback).
//!
//! Each check is a function over a [`Harness`]; `conformance!` instantiates
//! every check for each bus.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::kafka::KafkaBus;
use sluice_broker::{Bus, EmbeddedConfig, KafkaConfig, Message, Position, Record, poll_until};
use sluice_testkit::TestKafka;

const WAIT: Duration = Duration::from_secs(60);

enum Harness {
    Embedded(tempfile::TempDir),
    Kafka(TestKafka),
}

impl Harness {
    fn embedded() -> Option<Harness> {
        Some(Harness::Embedded(tempfile::tempdir().unwrap()))
    }

    fn kafka() -> Option<Harness> {
        TestKafka::start().map(Harness::Kafka)
    }

    /// A new handle on the same bus (the previous one must be dropped first
    /// for the embedded bus, which has one writer at a time).
    async fn open(&self) -> Arc<dyn Bus> {
        match self {
            Harness::Embedded(dir) => {
                Arc::new(EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap())
            }
            Harness::Kafka(kafka) => {
                let config = KafkaConfig {
                    timeout_ms: 20_000,
                    ..Default::default()
                };
                Arc::new(KafkaBus::connect(&kafka.bootstrap(), config).await.unwrap())
            }
        }
    }
}

fn payload(key: &str, seq: usize) -> Vec<u8> {
    format!("{key}:{seq}").into_bytes()
}

fn parse(message: &Message) -> (String, usize) {
    let text = std::str::from_utf8(&message.payload).unwrap();
    let (key, seq) = text.rsplit_once(':').unwrap();
    (key.to_string(), seq.parse().unwrap())
}

/// Publishes `per_key` records for each key, pipelined, and returns the
/// deliveries by (key, seq).
async fn publish(
    bus: &dyn Bus,
    topic: &str,
    keys: &[&str],
    per_key: usize,
) -> BTreeMap<(String, usize), Position> {
    let mut acks = Vec::new();
    for seq in 0..per_key {
        for key in keys {
            let record = Record::new(
                key.to_string(),
                payload(key, seq),
                1_700_000_000_000 + seq as i64,
            );
            acks.push((
                (key.to_string(), seq),
                bus.send(topic, record).await.unwrap(),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (id, ack) in acks {
        let d = ack.await.unwrap();
        out.insert(id, Position::new(topic, d.partition, d.offset));
    }
    out
}

async fn order_per_key(h: &Harness) {
    let bus = h.open().await;
    let keys = [
        "www/prod/api/0",
        "www/prod/api/1",
        "db/prod/pg/0",
        "a",
        "b",
        "c",
        "d",
        "e",
    ];
    let delivered = publish(bus.as_ref(), "conf.order", &keys, 250).await;
    assert_eq!(delivered.len(), 2000);
    let mut consumer = bus.consumer("g-order", &["conf.order"]).await.unwrap();
    let messages = poll_until(consumer.as_mut(), 2000, WAIT).await.unwrap();
    assert_eq!(messages.len(), 2000, "every record once");
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    for m in &messages {
        let (key, seq) = parse(m);
        assert_eq!(&m.key[..], key.as_bytes());
        let expected = next.entry(key.clone()).or_default();
        assert_eq!(seq, *expected, "key {key} out of order");
        *expected += 1;
        assert_eq!(
            delivered[&(key, seq)],
            Position::new("conf.order", m.partition, m.offset)
        );
    }
    assert!(next.values().all(|n| *n == 250));
}

async fn acked_records_survive_reopen(h: &Harness) {
    let delivered = {
        let bus = h.open().await;
        publish(bus.as_ref(), "conf.reopen", &["k1", "k2", "k3"], 100).await
    };
    let bus = h.open().await;
    let mut consumer = bus.consumer("g-reopen", &["conf.reopen"]).await.unwrap();
    let messages = poll_until(consumer.as_mut(), 300, WAIT).await.unwrap();
    let found: BTreeMap<(String, usize), Position> = messages
        .iter()
        .map(|m| {
            (
                parse(m),
                Position::new("conf.reopen", m.partition, m.offset),
            )
        })
        .collect();
    assert_eq!(messages.len(), 300);
    assert_eq!(found, delivered);
}

async fn commit_and_resume(h: &Harness) {
    let bus = h.open().await;
    publish(bus.as_ref(), "conf.commit", &["k1", "k2", "k3", "k4"], 75).await;
    let mut first = bus.consumer("g-commit", &["conf.commit"]).await.unwrap();
    let messages = poll_until(first.as_mut(), 300, WAIT).await.unwrap();
    assert_eq!(messages.len(), 300);
    // Commit the first half of what each partition delivered.
    let mut by_partition: BTreeMap<u32, Vec<&Message>> = BTreeMap::new();
    for m in &messages {
        by_partition.entry(m.partition).or_default().push(m);
    }
    let commits: Vec<Position> = by_partition
        .values()
        .map(|ms| ms[ms.len() / 2 - 1].next_position())
        .collect();
    first.commit(&commits).await.unwrap();
    let mut committed = first.committed().await.unwrap();
    committed.sort();
    let mut expected_commits = commits.clone();
    expected_commits.sort();
    assert_eq!(committed, expected_commits);
    drop(first);

    let expected: BTreeSet<(u32, u64)> = messages
        .iter()
        .filter(|m| {
            commits
                .iter()
                .any(|c| c.partition == m.partition && m.offset >= c.offset)
        })
        .map(|m| (m.partition, m.offset))
        .collect();
    let mut second = bus.consumer("g-commit", &["conf.commit"]).await.unwrap();
    let rest = poll_until(second.as_mut(), expected.len(), WAIT)
        .await
        .unwrap();
    let got: BTreeSet<(u32, u64)> = rest.iter().map(|m| (m.partition, m.offset)).collect();
    assert_eq!(rest.len(), expected.len(), "no duplicates after resume");
    assert_eq!(got, expected, "resumed exactly after the commits");
}

async fn groups_are_independent(h: &Harness) {
    let bus = h.open().await;
    publish(bus.as_ref(), "conf.groups", &["k"], 100).await;
    let mut a = bus.consumer("g-a", &["conf.groups"]).await.unwrap();
    let read_a = poll_until(a.as_mut(), 100, WAIT).await.unwrap();
    assert_eq!(read_a.len(), 100);
    a.commit(&[read_a.last().unwrap().next_position()])
        .await
        .unwrap();
    let mut b = bus.consumer("g-b", &["conf.groups"]).await.unwrap();
    let read_b = poll_until(b.as_mut(), 100, WAIT).await.unwrap();
    assert_eq!(read_b.len(), 100, "group b starts from the beginning");
    drop(a);
    let mut a_again = bus.consumer("g-a", &["conf.groups"]).await.unwrap();
    let more = poll_until(a_again.as_mut(), 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        more.is_empty(),
        "group a resumes after its commit: {more:?}"
    );
}

async fn uncommitted_records_are_redelivered(h: &Harness) {
    let bus = h.open().await;
    publish(bus.as_ref(), "conf.redeliver", &["k1", "k2"], 50).await;
    let mut crashed = bus
        .consumer("g-redeliver", &["conf.redeliver"])
        .await
        .unwrap();
    let first = poll_until(crashed.as_mut(), 100, WAIT).await.unwrap();
    assert_eq!(first.len(), 100);
    drop(crashed);
    let mut again = bus
        .consumer("g-redeliver", &["conf.redeliver"])
        .await
        .unwrap();
    let second = poll_until(again.as_mut(), 100, WAIT).await.unwrap();
    let ids = |ms: &[Message]| {
        ms.iter()
            .map(|m| (m.partition, m.offset))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(ids(&second), ids(&first));
}

async fn seek_rereads_from_an_offset(h: &Harness) {
    let bus = h.open().await;
    publish(bus.as_ref(), "conf.seek", &["k"], 50).await;
    let mut consumer = bus.consumer("g-seek", &["conf.seek"]).await.unwrap();
    let all = poll_until(consumer.as_mut(), 50, WAIT).await.unwrap();
    assert_eq!(all.len(), 50);
    let target = &all[20];
    consumer
        .seek(&Position::new("conf.seek", target.partition, target.offset))
        .await
        .unwrap();
    let again = poll_until(consumer.as_mut(), 30, WAIT).await.unwrap();
    assert_eq!(again.len(), 30);
    assert_eq!(again[0].offset, target.offset);
    assert_eq!(parse(&again[0]), parse(target));
}

async fn status_reports_offsets_and_lag(h: &Harness) {
    let bus = h.open().await;
    publish(bus.as_ref(), "conf.status", &["k"], 40).await;
    let mut consumer = bus.consumer("g-status", &["conf.status"]).await.unwrap();
    let messages = poll_until(consumer.as_mut(), 40, WAIT).await.unwrap();
    consumer
        .commit(&[messages[9].next_position()])
        .await
        .unwrap();
    let status = bus.status(&[]).await.unwrap();
    let topic = status
        .topics
        .iter()
        .find(|t| t.topic == "conf.status")
        .expect("topic listed");
    let records: u64 = topic
        .partitions
        .iter()
        .map(|p| p.end_offset - p.start_offset)
        .sum();
    assert_eq!(records, 40);
    let group = status
        .groups
        .iter()
        .find(|g| g.group == "g-status")
        .expect("group listed");
    assert_eq!(group.lag, 30, "{group:?}");
}

macro_rules! conformance {
    ($bus:ident, $harness:expr) => {
        mod $bus {
            use super::*;

            async fn run<F: std::future::Future<Output = ()>>(check: impl FnOnce(Harness) -> F) {
                if let Some(h) = $harness {
                    check(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn order_per_key() {
                run(|h| async move { super::order_per_key(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn acked_records_survive_reopen() {
                run(|h| async move { super::acked_records_survive_reopen(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_and_resume() {
                run(|h| async move { super::commit_and_resume(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn groups_are_independent() {
                run(|h| async move { super::groups_are_independent(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uncommitted_records_are_redelivered() {
                run(|h| async move { super::uncommitted_records_are_redelivered(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn seek_rereads_from_an_offset() {
                run(|h| async move { super::seek_rereads_from_an_offset(&h).await }).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn status_reports_offsets_and_lag() {
                run(|h| async move { super::status_reports_offsets_and_lag(&h).await }).await
            }
        }
    };
}

conformance!(embedded, Harness::embedded());
conformance!(kafka, Harness::kafka());

/// Kafka only: acknowledged records survive the broker itself being killed
/// (SIGKILL) and restarted on its storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_acked_records_survive_a_broker_kill() {
    let Some(mut h) = Harness::kafka() else {
        return;
    };
    let delivered = {
        let bus = h.open().await;
        publish(bus.as_ref(), "conf.broker-kill", &["k1", "k2"], 100).await
    };
    if let Harness::Kafka(kafka) = &mut h {
        kafka.restart();
    }
    let bus = h.open().await;
    let mut consumer = bus
        .consumer("g-broker-kill", &["conf.broker-kill"])
        .await
        .unwrap();
    let messages = poll_until(consumer.as_mut(), 200, WAIT).await.unwrap();
    let found: BTreeMap<(String, usize), Position> = messages
        .iter()
        .map(|m| {
            (
                parse(m),
                Position::new("conf.broker-kill", m.partition, m.offset),
            )
        })
        .collect();
    assert_eq!(messages.len(), 200);
    assert_eq!(found, delivered);
}
