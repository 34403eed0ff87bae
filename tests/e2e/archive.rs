//! The archive as other engines see it: `sluice up` archives what a node's
//! tasks wrote, and DuckDB reads the `logs` Delta table (`delta_scan`) and
//! finds exactly those lines; the archiver killed at each step of a commit.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::Up;

#[test]
fn duckdb_reads_exactly_the_archived_lines() {
    let Some(python) = crate::delta::delta_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let root = dir.join("nodes/node-0/sandboxes");
    let mut expected = std::collections::BTreeMap::new();
    for instance in 0..3u32 {
        let logs = sluice_testkit::native_sandbox(
            &root,
            &format!("t-{instance}"),
            "www/prod/web",
            instance,
            &["main"],
        );
        let mut f = std::fs::File::create(logs.join("main.stdout")).unwrap();
        let mut lines = Vec::new();
        for i in 0..500 {
            let line = format!("instance {instance} line {i} ünïcode ✓");
            writeln!(f, "{line}").unwrap();
            lines.push(line);
        }
        // Not UTF-8: kept exactly in line_bytes, lossy in line.
        f.write_all(b"bad \xff\xfe bytes\n").unwrap();
        expected.insert(instance, lines);
    }
    let want_rows = 3 * 501;
    let status = up.wait_for_rows(want_rows);
    assert!(
        status["logs"]["index_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );

    let sql = r#"
  SELECT instance, job, role, date, hour, count(*) AS n,
         string_agg(line, chr(10) ORDER BY "offset") FILTER (WHERE line_bytes IS NULL) AS text,
         count(line_bytes) AS binary
  FROM logs GROUP BY ALL ORDER BY instance"#;
    let out = crate::delta::readers(&python, &dir.join("archive"), &["--sql".into(), sql.into()]);
    let rows: Vec<Vec<String>> = serde_json::from_value(out).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, (instance, lines)) in rows.iter().zip(&expected) {
        assert_eq!(row[0], instance.to_string());
        assert_eq!(row[1], "www/prod/web");
        assert_eq!(row[2], "www");
        assert!(row[3].starts_with("20"), "date from the Delta log: {row:?}");
        assert_eq!(row[5], "501");
        assert_eq!(row[6], lines.join("\n"), "instance {instance}");
        assert_eq!(row[7], "1", "the invalid UTF-8 line keeps its bytes");
    }
    assert!(up.stop().success());
}

/// Lines `range` (offsets `i * stride`, `raw_len` = stride) of source
/// `source_id`, recorded in `want` as `(source_id, offset)`.
fn numbered_chunk(
    source_id: u64,
    job: String,
    range: std::ops::Range<u64>,
    stride: u64,
    want: &mut std::collections::BTreeSet<(u64, u64)>,
) -> sluice_schema::pb::LogChunk {
    use sluice_schema::pb::{Line, LogChunk, Source};
    let lines: Vec<Line> = range
        .map(|i| Line {
            offset: i * stride,
            raw_len: stride as u32,
            ts_unix_nanos: 1_795_244_400_000_000_000 + i as i64,
            text: bytes::Bytes::from(format!("source {source_id} line {i}")),
            ..Default::default()
        })
        .collect();
    for l in &lines {
        want.insert((source_id, l.offset));
    }
    LogChunk {
        source: Some(Source {
            job,
            instance: source_id as u32,
            source_id,
            ..Default::default()
        }),
        lines,
        shipped_at_unix_nanos: 1,
    }
}

/// `sluice archiver` killed (abort, as `kill -9`) at each step of a commit,
/// many times over, while more records arrive between runs: the archive
/// ends with every line once and every event once.
#[test]
fn the_archiver_killed_at_each_step_of_a_commit_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("archive").display());
    killed_at_each_step(tmp.path(), &url, &[]);
}

/// The same on S3 (moto's server on loopback).
#[test]
fn the_same_on_s3() {
    let Some(s3) = sluice_testkit::TestS3::start() else {
        return;
    };
    s3.create_bucket("archive");
    let tmp = tempfile::tempdir().unwrap();
    killed_at_each_step(tmp.path(), "s3://archive/sluice", &s3.settings());
}

fn killed_at_each_step(dir: &std::path::Path, store_url: &str, s3: &[(String, String)]) {
    use prost::Message as _;
    use sluice_broker::{Bus, EmbeddedConfig, Record};
    use sluice_schema::pb::ClusterEvent;
    use sluice_schema::topics;

    let bus_dir = dir.join("bus");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut want = std::collections::BTreeSet::new();
    // Publishes round `r`: 5 sources × 40 lines (continuing each source),
    // a line resent from the previous round, and 2 events (one resent).
    let publish = |r: u64, want: &mut std::collections::BTreeSet<(u64, u64)>| {
        runtime.block_on(async {
            let bus =
                sluice_broker::embedded::EmbeddedBus::open(&bus_dir, EmbeddedConfig::default())
                    .unwrap();
            for s in 0..5u64 {
                let first = if r == 0 { 0 } else { r * 40 - 1 };
                let chunk =
                    numbered_chunk(s + 1, "www/prod/web".into(), first..(r + 1) * 40, 100, want);
                let record = Record::new(topics::chunk_key(&chunk), chunk.encode_to_vec(), 0);
                bus.send(topics::LOGS, record).await.unwrap().await.unwrap();
            }
            for id in [format!("e/{r}"), format!("e/{}", r.saturating_sub(1))] {
                let event = ClusterEvent {
                    id,
                    ts_unix_nanos: 1_795_244_400_000_000_000,
                    ..Default::default()
                };
                let record = Record::new(topics::event_key(&event), event.encode_to_vec(), 0);
                bus.send(topics::EVENTS, record)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            bus.flush(std::time::Duration::from_secs(5)).await.unwrap();
        })
    };
    let archiver = |extra: &[&str]| {
        let mut args = vec![
            "archiver".to_string(),
            "--bus".into(),
            format!("embedded://{}", bus_dir.display()),
            "--store".into(),
            store_url.to_string(),
            "--cut-ms".into(),
            "100".into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(crate::harness::SLUICE)
            .args(&args)
            .envs(s3.iter().map(|(k, v)| (k.to_ascii_uppercase(), v)))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let steps = ["uploaded", "logs-committed", "committed", "bus-committed"];
    let mut round = 0;
    for repeat in 0..3 {
        for step in steps {
            publish(round, &mut want);
            round += 1;
            let out = archiver(&["--crash-at", &format!("{step}:1")])
                .wait_with_output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("crashing at"),
                "round {repeat}/{step} did not crash: {err}"
            );
        }
    }
    // A clean run to the end: everything archived, then stopped.
    let mut last = archiver(&[]);
    let store = store_url
        .parse::<sluice_archive::store::StoreUrl>()
        .unwrap()
        .open(s3)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (logs, events) = loop {
        let (logs, _) = runtime
            .block_on(sluice_archive::scan::rows(
                &store,
                sluice_archive::catalog::SplitKind::Logs,
            ))
            .unwrap();
        let (_, events) = runtime
            .block_on(sluice_archive::scan::rows(
                &store,
                sluice_archive::catalog::SplitKind::Events,
            ))
            .unwrap();
        if logs.len() >= want.len() || Instant::now() > deadline {
            break (logs, events);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status();
    let _ = last.wait();
    let mut seen = std::collections::BTreeSet::new();
    for row in &logs {
        assert!(
            seen.insert((row.source.source_id, row.offset)),
            "archived twice: {} {}",
            row.source.source_id,
            row.offset
        );
    }
    assert_eq!(seen, want, "every line once");
    let mut ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
    ids.sort();
    let mut want_ids: Vec<String> = (0..round).map(|r| format!("e/{r}")).collect();
    want_ids.sort();
    assert_eq!(ids, want_ids, "every event once");
}

/// Two `sluice archiver` processes in one consumer group over Kafka
/// (tansu), one store: they share the partitions, never commit conflicting
/// state, and the archive holds every line once — also after one of them
/// stops and the other takes over its partitions. (After a `kill -9` the
/// takeover waits for the broker to expire the member's session; tansu did
/// not within 90 s, so that case is left to the per-step fault test.)
#[test]
fn two_archivers_side_by_side_archive_every_line_once() {
    use prost::Message as _;
    use sluice_broker::{BusConfig, BusUrl, Record};
    use sluice_schema::topics;

    let Some(kafka) = sluice_testkit::TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store_url = format!("file://{}", tmp.path().join("archive").display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url: BusUrl = kafka.url().parse().unwrap();
    let bus = runtime
        .block_on(sluice_broker::open(&BusConfig::new(url)))
        .unwrap();
    runtime.block_on(bus.ensure_topics(&topics::ALL)).unwrap();
    let mut want = std::collections::BTreeSet::new();
    let mut publish = |round: u64| {
        runtime.block_on(async {
            for s in 0..8u64 {
                let chunk = numbered_chunk(
                    s + 1,
                    format!("www/prod/web{s}"),
                    round * 50..(round + 1) * 50,
                    10,
                    &mut want,
                );
                let record = Record::new(topics::chunk_key(&chunk), chunk.encode_to_vec(), 0);
                bus.send(topics::LOGS, record).await.unwrap().await.unwrap();
            }
        })
    };
    let archiver = |id: &str| {
        Command::new(crate::harness::SLUICE)
            .args([
                "archiver",
                "--bus",
                &kafka.url(),
                "--store",
                &store_url,
                "--cut-ms",
                "200",
                "--id",
                id,
                "--data-dir",
                &tmp.path().display().to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join(format!("{id}.log"))).unwrap())
            .spawn()
            .unwrap()
    };
    let mut a = archiver("a");
    let mut b = archiver("b");
    publish(0);
    std::thread::sleep(Duration::from_secs(3));
    publish(1);
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    // A clean stop leaves the group, also when the signal comes while `a`
    // is still joining it (its handler is installed first): otherwise its
    // partitions would wait for a session expiry tansu does not do.
    let stopped = a.wait().unwrap();
    assert!(
        stopped.success(),
        "{stopped}\n{}",
        std::fs::read_to_string(tmp.path().join("a.log")).unwrap()
    );
    publish(2);
    let store = store_url
        .parse::<sluice_archive::store::StoreUrl>()
        .unwrap()
        .open(&[])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let logs = loop {
        let (logs, _) = runtime
            .block_on(sluice_archive::scan::rows(
                &store,
                sluice_archive::catalog::SplitKind::Logs,
            ))
            .unwrap();
        if logs.len() >= want.len() || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = b.kill();
    let _ = b.wait();
    let log = |id: &str| std::fs::read_to_string(tmp.path().join(format!("{id}.log"))).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for row in &logs {
        assert!(
            seen.insert((row.source.source_id, row.offset)),
            "archived twice: {} {}\n{}\n{}",
            row.source.source_id,
            row.offset,
            log("a"),
            log("b")
        );
    }
    if seen.len() != want.len() {
        let missing: Vec<_> = want.difference(&seen).collect();
        eprintln!(
            "missing {} e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        // The logs table's commits: who wrote each and the bus positions.
        let commits = tmp.path().join("archive/logs/_delta_log");
        let mut paths: Vec<_> = std::fs::read_dir(&commits)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let actions: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("\"txn\"") || l.contains("\"commitInfo\""))
                .collect();
            eprintln!("{}: {}", path.display(), actions.join(" "));
        }
    }
    assert_eq!(seen.len(), want.len(), "{}\n{}", log("a"), log("b"));
    assert_eq!(seen, want);
}
