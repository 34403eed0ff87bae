//! Tests of what only the embedded bus does: recovery, locking, segments,
//! retention, read-only inspection. The shared contract is in
//! `tests/conformance.rs`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::{Record, poll_until};

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        partitions: 1,
        ..Default::default()
    }
}

async fn publish_n(bus: &EmbeddedBus, topic: &str, n: usize, size: usize) {
    let mut acks = Vec::new();
    for i in 0..n {
        let payload = format!("{i:08}")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(size.max(8))
            .collect::<Vec<_>>();
        acks.push(
            bus.send(topic, Record::new("k", payload, i as i64))
                .await
                .unwrap(),
        );
    }
    for (i, ack) in acks.into_iter().enumerate() {
        assert_eq!(ack.await.unwrap().offset, i as u64);
    }
}

async fn read_all(bus: &EmbeddedBus, topic: &str, group: &str, want: usize) -> Vec<crate::Message> {
    let mut consumer = bus.consumer(group, &[topic]).await.unwrap();
    poll_until(consumer.as_mut(), want, Duration::from_secs(10))
        .await
        .unwrap()
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
        publish_n(&bus, "t", 10, 100).await;
    }
    let segment = segment_files(&dir.path().join("t/0")).pop().unwrap();
    let good_len = std::fs::metadata(&segment).unwrap().len();
    // Half a record: the frame says 500 bytes follow, 10 do.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    f.write_all(&500u32.to_le_bytes()).unwrap();
    f.write_all(&[7; 10]).unwrap();
    drop(f);

    let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    let delivery = bus
        .publish("t", Record::new("k", "after", 0))
        .await
        .unwrap();
    assert_eq!(delivery.offset, 10);
    let messages = read_all(&bus, "t", "g", 11).await;
    assert_eq!(messages.len(), 11);
    assert_eq!(&messages[10].payload[..], b"after");
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, m)| m.offset == i as u64)
    );
}

#[tokio::test]
async fn corrupt_bytes_are_moved_aside_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
        publish_n(&bus, "t", 3, 50).await;
    }
    let segment = segment_files(&dir.path().join("t/0")).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
    let messages = read_all(&bus, "t", "g", 2).await;
    assert_eq!(messages.len(), 2);
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("t/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "corrupt bytes saved");
    assert_eq!(
        std::fs::metadata(&aside[0]).unwrap().len(),
        segment::encoded_len(1, 50)
    );
}

#[tokio::test]
async fn a_second_writer_is_refused_and_told_who_holds_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedBus::open(dir.path(), config()).unwrap();
    let err = EmbeddedBus::open(dir.path(), config())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is in use by another process"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // Inspection still works.
    EmbeddedBus::open_read_only(dir.path(), config()).unwrap();
}

#[tokio::test]
async fn segments_roll_and_retention_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        partitions: 1,
        segment_bytes: 64 << 10,
        retention_bytes: 128 << 10,
        ..Default::default()
    };
    let bus = EmbeddedBus::open(dir.path(), config.clone()).unwrap();
    publish_n(&bus, "t", 100, 4000).await;
    let files = segment_files(&dir.path().join("t/0"));
    assert!(files.len() >= 6, "{} segments", files.len());
    // Every record readable across segment boundaries, in order.
    let messages = read_all(&bus, "t", "all", 100).await;
    assert_eq!(messages.len(), 100);
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, m)| m.offset == i as u64)
    );

    let partition = bus.shared.all_partitions().pop().unwrap();
    let freed = partition.apply_retention(
        config.retention_bytes,
        config.retention_age(),
        SystemTime::now(),
    );
    assert!(freed > 0);
    let status = partition.status();
    assert!(status.bytes.unwrap() <= config.retention_bytes);
    assert!(status.start_offset > 0 && status.end_offset == 100);
    // A new group starts at the oldest record kept.
    let messages = read_all(&bus, "t", "late", (100 - status.start_offset) as usize).await;
    assert_eq!(messages.first().unwrap().offset, status.start_offset);
    assert_eq!(messages.last().unwrap().offset, 99);
}

#[tokio::test]
async fn retention_by_age_spares_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        partitions: 1,
        segment_bytes: 64 << 10,
        ..Default::default()
    };
    let bus = EmbeddedBus::open(dir.path(), config.clone()).unwrap();
    publish_n(&bus, "t", 40, 4000).await;
    let partition = bus.shared.all_partitions().pop().unwrap();
    let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
    partition.apply_retention(config.retention_bytes, config.retention_age(), later);
    assert_eq!(segment_files(&dir.path().join("t/0")).len(), 1);
    assert_eq!(partition.status().end_offset, 40);
}

#[tokio::test]
async fn read_only_inspection_sees_new_records_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let writer = EmbeddedBus::open(dir.path(), config()).unwrap();
    publish_n(&writer, "t", 5, 10).await;
    let reader = EmbeddedBus::open_read_only(dir.path(), config()).unwrap();
    let mut consumer = reader.consumer("inspect", &["t"]).await.unwrap();
    let first = poll_until(consumer.as_mut(), 5, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    writer
        .publish("t", Record::new("k", "six", 0))
        .await
        .unwrap();
    let next = poll_until(consumer.as_mut(), 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&next[0].payload[..], b"six");

    let err = reader
        .publish("t", Record::new("k", "x", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReadOnly(_)), "{err}");
    let err = consumer
        .commit(&[next[0].next_position()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReadOnly(_)), "{err}");
    let status = reader.status(&[]).await.unwrap();
    assert_eq!(status.topics[0].partitions[0].end_offset, 6);
}

#[tokio::test]
async fn limits_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(
        dir.path(),
        EmbeddedConfig {
            max_record_bytes: 1000,
            ..config()
        },
    )
    .unwrap();
    let err = bus
        .publish("t", Record::new("k", vec![0; 1001], 0))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record of 1002 bytes is larger than the bus limit of 1000 bytes"
    );
    for topic in ["../escape", "_groups", "a/b", ""] {
        let err = bus
            .publish(topic, Record::new("k", "x", 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("topic name"), "{topic}: {err}");
    }
    let err = bus.consumer("../g", &["t"]).await.err().unwrap();
    assert!(err.to_string().contains("consumer group name"), "{err}");
    assert!(!dir.path().join("../escape").exists());
}

#[tokio::test]
async fn corrupt_group_offsets_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
    publish_n(&bus, "t", 1, 10).await;
    std::fs::create_dir_all(dir.path().join("_groups")).unwrap();
    std::fs::write(dir.path().join("_groups/g.json"), "{not json").unwrap();
    let err = bus.consumer("g", &["t"]).await.err().unwrap().to_string();
    assert!(
        err.contains("_groups/g.json") && err.contains("group offsets are not valid"),
        "{err}"
    );
}
