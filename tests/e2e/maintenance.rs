//! Archive maintenance as operators run it: `sluice archive compact` (dry
//! run, a crash between upload and commit, for real), compaction in the
//! background of `sluice archiver` with its metrics, and `sluice archive
//! retention`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{SLUICE, scrape, sluice, sluice_ok};

/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400_000_000_000;

struct Archive {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Archive {
    fn store(&self) -> String {
        format!("file://{}", self.dir.path().join("archive").display())
    }

    fn bus(&self) -> String {
        format!("embedded://{}", self.dir.path().join("bus").display())
    }

    /// Publishes lines `range` of source `source_id` (hour 07 of T0's day).
    fn publish(&self, source_id: u64, range: std::ops::Range<u64>) {
        use prost::Message as _;
        use sluice_broker::{Bus, EmbeddedConfig, Record};
        use sluice_schema::pb::{Line, LogChunk, Source};
        let chunk = LogChunk {
            source: Some(Source {
                job: "www/prod/web".into(),
                instance: source_id as u32,
                source_id,
                ..Default::default()
            }),
            lines: range
                .map(|i| Line {
                    offset: i * 100,
                    raw_len: 100,
                    ts_unix_nanos: T0 + i as i64,
                    text: bytes::Bytes::from(format!("source {source_id} line {i}")),
                    ..Default::default()
                })
                .collect(),
            shipped_at_unix_nanos: 1,
        };
        let bus_dir = self.dir.path().join("bus");
        self.runtime.block_on(async {
            let bus =
                sluice_broker::embedded::EmbeddedBus::open(&bus_dir, EmbeddedConfig::default())
                    .unwrap();
            let record = Record::new(
                sluice_schema::topics::chunk_key(&chunk),
                chunk.encode_to_vec(),
                0,
            );
            bus.send(sluice_schema::topics::LOGS, record)
                .await
                .unwrap()
                .await
                .unwrap();
            bus.flush(Duration::from_secs(5)).await.unwrap();
        });
    }

    fn archiver(&self, extra: &[&str], log: &str) -> Child {
        let data_dir = self.dir.path().display().to_string();
        let (bus, store) = (self.bus(), self.store());
        let mut args = vec![
            "archiver",
            "--bus",
            &bus,
            "--store",
            &store,
            "--cut-ms",
            "100",
            "--data-dir",
            &data_dir,
        ];
        args.extend(extra);
        Command::new(SLUICE)
            .args(&args)
            .env_remove("SLUICE_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    }

    fn archive(&self, args: &[&str]) -> std::process::Output {
        let store = self.store();
        let data_dir = self.dir.path().display().to_string();
        let mut all = vec!["archive"];
        all.extend(args);
        all.extend(["--store", &store, "--data-dir", &data_dir]);
        sluice(&all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.archive(args);
        assert!(
            out.status.success(),
            "sluice archive {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn status(&self) -> Value {
        self.json(&["status", "--json"])
    }

    /// Waits until `check` holds for `status`.
    fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every archived line, checking none is there twice.
    fn lines(&self) -> std::collections::BTreeSet<(u64, u64)> {
        let store = self
            .store()
            .parse::<sluice_archive::store::StoreUrl>()
            .unwrap()
            .open(&[])
            .unwrap();
        let (rows, _) = self
            .runtime
            .block_on(sluice_archive::scan::rows(
                &store,
                sluice_archive::catalog::SplitKind::Logs,
            ))
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for row in rows {
            assert!(
                seen.insert((row.source.source_id, row.offset)),
                "archived twice: {} {}",
                row.source.source_id,
                row.offset
            );
        }
        seen
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn compaction_and_retention_from_the_command_line() {
    let archive = Archive {
        dir: tempfile::tempdir().unwrap(),
        runtime: tokio::runtime::Runtime::new().unwrap(),
    };
    // Five archiver runs, one round of lines each: five small splits of
    // one hour.
    let mut want = std::collections::BTreeSet::new();
    for round in 0..5u64 {
        let source = 1 + round % 2;
        archive.publish(source, round * 30..(round + 1) * 30);
        want.extend((round * 30..(round + 1) * 30).map(|i| (source, i * 100)));
        let archiver = archive.archiver(&["--no-compaction"], "archiver.log");
        archive.wait_for("archived", |s| {
            s["logs"]["rows"].as_u64() == Some(want.len() as u64)
        });
        stop(archiver);
    }
    let status = archive.status();
    assert_eq!(status["logs"]["splits"], 5, "{status}");
    assert_eq!(archive.lines(), want);

    // A dry run says what it would do and does nothing.
    let plan = archive.json(&["compact", "--dry-run", "--json"]);
    assert_eq!(plan["merges"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["merges"][0]["inputs"], 5);
    assert_eq!(plan["merges"][0]["rows"], 150);
    assert_eq!(plan["merges"][0]["partition"], "logs 2026-11-21 07h");
    let text = archive.archive(&["compact", "--dry-run"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("would merge 5 splits of logs 2026-11-21 07h: 150 rows"),
        "{text}"
    );
    assert_eq!(archive.status()["logs"]["splits"], 5);

    // Killed between upload and commit: the archive is as it was.
    let crashed = archive.archive(&["compact", "--crash-at", "uploaded"]);
    assert!(!crashed.status.success());
    assert!(String::from_utf8_lossy(&crashed.stderr).contains("crashing at Uploaded"));
    assert_eq!(archive.status()["logs"]["splits"], 5);
    assert_eq!(archive.lines(), want);

    // The archiver's background compaction merges them on start.
    let archiver = archive.archiver(&["--metrics-listen", "127.0.0.1:0"], "maintained.log");
    let status = archive.wait_for("compacted", |s| s["logs"]["splits"] == 1);
    assert_eq!(status["logs"]["rows"], 150);
    assert_eq!(status["removed_splits"], 5);
    let log = || std::fs::read_to_string(archive.dir.path().join("maintained.log")).unwrap();
    let metrics = scrape(&crate::harness::metrics_addr(&log()));
    assert!(
        metrics.contains("\nsluice_compaction_merges_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nsluice_compaction_splits_merged_total 5\n"));
    assert!(metrics.contains("\nsluice_archive_live_splits 1\n"));
    assert!(log().contains("compaction: merged splits"), "{}", log());
    stop(archiver);
    assert_eq!(archive.lines(), want);
    let again = archive.json(&["compact", "--json"]);
    assert_eq!(again["merges"].as_array().unwrap().len(), 0, "{again}");

    // Retention: a month keeps everything; a role's hour removes it.
    let kept = archive.json(&["retention", "--retention", "30d", "--json"]);
    assert_eq!(kept["removed"].as_array().unwrap().len(), 0, "{kept}");
    let dry = archive.json(&[
        "retention",
        "--retention",
        "30d",
        "--retention-role",
        "www=1h",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["rows"], 150);
    assert_eq!(archive.status()["logs"]["rows"], 150);
    let text = sluice_ok(&[
        "archive",
        "retention",
        "--retention-role",
        "www=1h",
        "--store",
        &archive.store(),
        "--data-dir",
        &archive.dir.path().display().to_string(),
    ]);
    assert!(text.contains("removed 1 splits, 150 rows"), "{text}");
    let status = archive.status();
    assert_eq!(status["logs"]["splits"], 0, "{status}");
    assert_eq!(status["removed_splits"], 6);
}
