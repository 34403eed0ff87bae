//! `kill -9` of a process writing to the embedded bus loses no acknowledged
//! record.
//!
//! The test re-runs its own binary as the child (`child_publisher`, inert
//! unless `SLUICE_CRASH_CHILD` names a bus directory). The child publishes as
//! fast as it can and prints `ACK <seq> <partition> <offset>` once each
//! record is acknowledged; the parent kills it with SIGKILL after a random
//! number of acknowledgements, several times, and at the end finds every
//! acknowledged record at its offset, with nothing duplicated.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, EmbeddedConfig, FsyncPolicy, Record, poll_until};

const TOPIC: &str = "crash.test";

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        partitions: 3,
        // Small segments so kills also land around segment rolls.
        segment_bytes: 256 << 10,
        // Interval acknowledges once written: kill -9 must not lose those.
        fsync: FsyncPolicy::Interval,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_publisher() {
    let Some(dir) = std::env::var_os("SLUICE_CRASH_CHILD") else {
        return;
    };
    let start: usize = std::env::var("SLUICE_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let bus = EmbeddedBus::open(Path::new(&dir), config()).unwrap();
    let mut pending = std::collections::VecDeque::new();
    for seq in start.. {
        let key = format!("key-{}", seq % 7);
        let payload = format!("{seq}:")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(100 + seq % 900)
            .collect::<Vec<u8>>();
        pending.push_back((
            seq,
            bus.send(TOPIC, Record::new(key, payload, seq as i64))
                .await
                .unwrap(),
        ));
        if pending.len() >= 64 {
            let (seq, ack) = pending.pop_front().unwrap();
            let d = ack.await.unwrap();
            println!("ACK {seq} {} {}", d.partition, d.offset);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_record() {
    if std::env::var_os("SLUICE_CRASH_CHILD").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<usize, (u32, u64)> = BTreeMap::new();
    let mut next_seq = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 200 + (rng % 3000) as usize;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_publisher",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SLUICE_CRASH_CHILD", dir.path())
            .env("SLUICE_CRASH_START", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let parts: Vec<u64> = rest.split(' ').map(|p| p.parse().unwrap()).collect();
            acked.insert(parts[0] as usize, (parts[1] as u32, parts[2]));
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            seen == kill_after,
            "round {round}: child ended early with {status} after {seen} acks"
        );
        // Unacknowledged sequence numbers are not reused: a record the child
        // sent but never saw acknowledged may or may not be stored.
        next_seq = acked.keys().last().unwrap() + 100_000;
    }

    let bus = EmbeddedBus::open(dir.path(), config()).unwrap();
    let status = bus.status(&[]).await.unwrap();
    let total: u64 = status.topics[0]
        .partitions
        .iter()
        .map(|p| p.end_offset)
        .sum();
    let mut consumer = bus.consumer("verify", &[TOPIC]).await.unwrap();
    let messages = poll_until(consumer.as_mut(), total as usize, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(messages.len() as u64, total);
    let mut stored: BTreeMap<usize, (u32, u64)> = BTreeMap::new();
    for m in &messages {
        let text = String::from_utf8_lossy(&m.payload);
        let seq: usize = text.split(':').next().unwrap().parse().unwrap();
        assert!(
            stored.insert(seq, (m.partition, m.offset)).is_none(),
            "seq {seq} stored twice"
        );
        assert_eq!(m.timestamp_ms, seq as i64);
    }
    for (seq, place) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(place),
            "acknowledged record {seq} lost or moved"
        );
    }
    assert!(acked.len() >= 20 * 200);
}
