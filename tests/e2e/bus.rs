//! `sluice bus status` and `sluice bus dump` on both buses.

use std::sync::Arc;

use prost::Message as _;
use serde_json::Value;
use sluice_broker::{Bus, BusConfig, BusUrl, Record};
use sluice_schema::pb::{ClusterEvent, EventKind, Layout, Line, LogChunk, Source, Stream};
use sluice_schema::topics;
use sluice_testkit::TestKafka;

use crate::harness::{Up, sluice_ok};

fn chunk() -> LogChunk {
    LogChunk {
        source: Some(Source {
            host: "node-1".into(),
            job: "www/prod/api".into(),
            instance: 3,
            task_id: "www-prod-api-3".into(),
            run: 1,
            process: "server".into(),
            stream: Stream::Stdout as i32,
            path: "/sandboxes/www/prod/api/3/run-1/server.stdout".into(),
            layout: Layout::Native as i32,
            labels: [("zone".to_string(), "b".to_string())].into(),
            source_id: 0xfeed,
        }),
        lines: vec![
            Line {
                offset: 0,
                raw_len: 12,
                ts_unix_nanos: 1_763_708_820_000_000_000,
                text: "GET / 200 1".into(),
                ..Default::default()
            },
            Line {
                offset: 12,
                raw_len: 9,
                ts_unix_nanos: 1_763_708_820_500_000_000,
                text: "héllo 🌍".into(),
                ..Default::default()
            },
            Line {
                offset: 21,
                raw_len: 4,
                ts_unix_nanos: 1_763_708_821_000_000_000,
                text: vec![0xc3, 0x28, b'!'].into(),
                ..Default::default()
            },
        ],
        shipped_at_unix_nanos: 1_763_708_822_000_000_000,
    }
}

fn event() -> ClusterEvent {
    ClusterEvent {
        id: "scheduler/1".into(),
        ts_unix_nanos: 1_763_708_830_000_000_000,
        kind: EventKind::JobKilled as i32,
        job: "www/prod/api".into(),
        host: "node-1".into(),
        actor: "alice".into(),
        reason: "user_request".into(),
        message: "killed by alice".into(),
        ..Default::default()
    }
}

async fn publish_samples(bus: &dyn Bus) {
    let c = chunk();
    bus.publish(
        topics::LOGS,
        Record::new(topics::chunk_key(&c), c.encode_to_vec(), 0),
    )
    .await
    .unwrap();
    let e = event();
    bus.publish(
        topics::EVENTS,
        Record::new(topics::event_key(&e), e.encode_to_vec(), 0),
    )
    .await
    .unwrap();
    bus.publish(
        topics::LOGS,
        Record::new(topics::chunk_key(&c), "not a protobuf \u{1}\u{2}", 0),
    )
    .await
    .unwrap();
}

fn check_dump(bus_flag: &[&str]) {
    let mut args = vec![
        "bus",
        "dump",
        "--topic",
        "sluice.logs",
        "--from-beginning",
        "--json",
    ];
    args.extend(bus_flag);
    let out = sluice_ok(&args);
    let mut lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    // The undecodable record was published last with the same key.
    lines.sort_by_key(|l| l.get("error").is_some());
    let first = &lines[0];
    for (field, value) in [
        ("job", "www/prod/api"),
        ("host", "node-1"),
        ("process", "server"),
        ("stream", "stdout"),
        ("source_id", "000000000000feed"),
        ("ts", "2025-11-21T07:07:00.000000000Z"),
        ("line", "GET / 200 1"),
    ] {
        assert_eq!(first[field], value, "{field} in {first}");
    }
    assert_eq!(first["instance"], 3);
    assert_eq!(first["run"], 1);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["labels"]["zone"], "b");
    assert_eq!(lines[1]["line"], "héllo 🌍");
    assert_eq!(lines[1]["offset"], 12);
    assert_eq!(lines[2]["invalid_utf8"], true);
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("not a LogChunk"),
        "{}",
        lines[3]
    );

    let mut args = vec![
        "bus",
        "dump",
        "--topic",
        "sluice.events",
        "--from-beginning",
        "--json",
    ];
    args.extend(bus_flag);
    let out = sluice_ok(&args);
    // `up` put its own events there too (its nodes' registrations in the
    // node directory are audited): the sample is the one job_killed.
    let killed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "job_killed")
        .collect();
    assert_eq!(killed.len(), 1, "{out}");
    let event = &killed[0];
    assert_eq!(event["actor"], "alice");
    assert_eq!(event["reason"], "user_request");

    let mut args = vec![
        "bus",
        "dump",
        "--topic",
        "sluice.logs",
        "--from-beginning",
        "--max",
        "1",
    ];
    args.extend(bus_flag);
    let text = sluice_ok(&args);
    assert_eq!(
        text,
        "2025-11-21T07:07:00.000000000Z node-1 www/prod/api/3[1] server stdout: GET / 200 1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_decodes_records_of_the_embedded_bus() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let url = BusUrl::Embedded(dir.join("bus"));
        let bus = sluice_broker::open(&BusConfig::new(url)).await.unwrap();
        publish_samples(bus.as_ref()).await;
    }
    check_dump(&["--data-dir", dir.to_str().unwrap()]);
}

#[test]
fn dump_works_while_up_holds_the_bus() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let out = sluice_ok(&[
        "bus",
        "dump",
        "--topic",
        "sluice.logs",
        "--from-beginning",
        "--json",
        "--data-dir",
        up.data_dir(),
    ]);
    assert_eq!(out, "");
    assert!(up.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_dump_work_on_kafka() {
    let Some(kafka) = TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let url = kafka.url();
    let up = Up::start(&dir, &["--bus", &url]);
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "bus",
        "status",
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap();
    let topics: Vec<&str> = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert!(
        topics.contains(&"sluice.logs") && topics.contains(&"sluice.events"),
        "{status}"
    );
    drop(up);

    let bus: Arc<dyn Bus> = sluice_broker::open(&BusConfig::new(url.parse().unwrap()))
        .await
        .unwrap();
    publish_samples(bus.as_ref()).await;
    check_dump(&["--bus", &url, "--data-dir", dir.to_str().unwrap()]);

    // A group's lag, by name: tansu does not list groups.
    let mut consumer = bus.consumer("e2e-lag", &[topics::LOGS]).await.unwrap();
    let read = sluice_broker::poll_until(consumer.as_mut(), 2, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(read.len(), 2, "both records of the one key");
    consumer.commit(&[read[0].next_position()]).await.unwrap();
    drop(consumer);
    let args = [
        "bus",
        "status",
        "--bus",
        &url,
        "--group",
        "e2e-lag",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    let status: Value = serde_json::from_str(&sluice_ok(&args)).unwrap();
    let group = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "e2e-lag")
        .expect("group reported");
    assert_eq!(group["lag"], 1, "{group}");
}
