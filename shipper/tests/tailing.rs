//! The shipper against real files and a real (embedded) bus: every line
//! written arrives with its identity, exactly once after de-duplication by
//! `(source_id, offset)`, whatever happens to the files.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, Consumer, EmbeddedConfig};
use sluice_schema::pb::{ClusterEvent, EventKind, LogChunk, Stream};
use sluice_schema::topics;
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig};

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    bus: Arc<dyn Bus>,
    logs: Box<dyn Consumer>,
    events: Box<dyn Consumer>,
    /// (source_id, offset) → line, as received.
    lines: BTreeMap<(u64, u64), Got>,
    received_events: Vec<ClusterEvent>,
    duplicates: usize,
}

#[derive(Debug, Clone)]
struct Got {
    text: Vec<u8>,
    job: String,
    instance: u32,
    run: u32,
    process: String,
    stream: Stream,
    partial: bool,
    unterminated: bool,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        let bus: Arc<dyn Bus> = Arc::new(
            EmbeddedBus::open(&dir.path().join("bus"), EmbeddedConfig::default()).unwrap(),
        );
        let logs = bus.consumer("test-logs", &[topics::LOGS]).await.unwrap();
        let events = bus
            .consumer("test-events", &[topics::EVENTS])
            .await
            .unwrap();
        World {
            _dir: dir,
            root,
            state,
            bus,
            logs,
            events,
            lines: BTreeMap::new(),
            received_events: Vec::new(),
            duplicates: 0,
        }
    }

    fn config(&self) -> ShipperConfig {
        let mut c = ShipperConfig::new("node-t", LayoutKind::Native, &self.root, &self.state);
        c.quiet_ms = 300;
        c.poll_ms = 50;
        c.rescan_ms = 500;
        c.rotated_grace_ms = 500;
        c.checkpoint_ms = 100;
        c
    }

    fn start(&self) -> Shipper {
        self.start_with(self.config())
    }

    fn start_with(&self, config: ShipperConfig) -> Shipper {
        Shipper::start(config, self.bus.clone()).unwrap()
    }

    /// A native sandbox with its manifest; returns the run-0 log directory.
    fn sandbox(&self, task_id: &str, job: &str, instance: u32, processes: &[&str]) -> PathBuf {
        sluice_testkit::native_sandbox(&self.root, task_id, job, instance, processes)
    }

    async fn pump(&mut self) {
        loop {
            let batch = self
                .logs
                .poll(1000, Duration::from_millis(20))
                .await
                .unwrap();
            if batch.is_empty() {
                break;
            }
            for m in batch {
                let chunk = LogChunk::decode(m.payload).unwrap();
                let s = chunk.source.unwrap();
                for l in chunk.lines {
                    let got = Got {
                        text: l.text.to_vec(),
                        job: s.job.clone(),
                        instance: s.instance,
                        run: s.run,
                        process: s.process.clone(),
                        stream: Stream::try_from(s.stream).unwrap(),
                        partial: l.partial,
                        unterminated: l.unterminated,
                    };
                    if let Some(old) = self.lines.insert((s.source_id, l.offset), got.clone()) {
                        assert_eq!(
                            old.text, got.text,
                            "same (source_id, offset), different text"
                        );
                        self.duplicates += 1;
                    }
                }
            }
        }
        for m in self
            .events
            .poll(1000, Duration::from_millis(1))
            .await
            .unwrap()
        {
            self.received_events
                .push(ClusterEvent::decode(m.payload).unwrap());
        }
    }

    /// Waits until `want` (as a multiset of texts) has arrived, or fails
    /// listing what is missing.
    async fn expect_texts(&mut self, want: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.pump().await;
            let got = self.texts();
            if multiset(want) == multiset(&got) {
                return;
            }
            if Instant::now() > deadline {
                let g = multiset(&got);
                let w = multiset(want);
                let missing: Vec<_> = w
                    .iter()
                    .filter(|(k, n)| g.get(*k) != Some(n))
                    .take(5)
                    .collect();
                let extra: Vec<_> = g
                    .iter()
                    .filter(|(k, n)| w.get(*k) != Some(n))
                    .take(5)
                    .collect();
                panic!(
                    "got {} lines, want {}; missing/short {missing:?}; extra {extra:?}",
                    got.len(),
                    want.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn texts(&self) -> Vec<String> {
        self.lines
            .values()
            .map(|g| String::from_utf8_lossy(&g.text).into_owned())
            .collect()
    }

    fn events_of(&self, kind: EventKind) -> Vec<&ClusterEvent> {
        self.received_events
            .iter()
            .filter(|e| e.kind == kind as i32)
            .collect()
    }
}

fn multiset(v: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in v {
        *m.entry(s.clone()).or_default() += 1;
    }
    m
}

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i}")).collect()
}

fn lines_text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_with_their_identity_and_the_last_line_after_a_quiet_period() {
    let mut w = World::new().await;
    let logs = w.sandbox(
        "www-prod-api-3-abc",
        "www/prod/api",
        3,
        &["server", "sidecar"],
    );
    let shipper = w.start();
    append(&logs.join("server.stdout"), "GET /a 200\nGET /b 500\n");
    append(&logs.join("server.stderr"), "panic: boom\nno newline yet");
    append(&logs.join("sidecar.stdout"), "tick\n");
    let want: Vec<String> = [
        "GET /a 200",
        "GET /b 500",
        "panic: boom",
        "no newline yet",
        "tick",
    ]
    .map(String::from)
    .to_vec();
    w.expect_texts(&want).await;
    let by_text: BTreeMap<String, Got> = w
        .lines
        .values()
        .map(|g| (String::from_utf8_lossy(&g.text).into_owned(), g.clone()))
        .collect();
    let boom = &by_text["panic: boom"];
    assert_eq!(
        (
            boom.job.as_str(),
            boom.instance,
            boom.run,
            boom.process.as_str(),
            boom.stream
        ),
        ("www/prod/api", 3, 0, "server", Stream::Stderr)
    );
    assert!(by_text["no newline yet"].unterminated);
    assert_eq!(by_text["tick"].process, "sidecar");
    // Progress follows the acknowledgements (the tracker takes them on its next pass).
    let sandbox = w.root.join("www-prod-api-3-abc");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut progress = shipper.progress().sandbox(&sandbox);
    while !progress.fully_shipped && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress = shipper.progress().sandbox(&sandbox);
    }
    assert!(progress.fully_shipped, "{progress:?}");
    assert_eq!(
        (progress.written, progress.acked, progress.files.len()),
        (53, 53, 3)
    );
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_reads_the_old_file_to_its_end() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-rot", "a/b/c", 0, &["p"]);
    let shipper = w.start();
    let path = logs.join("p.stdout");
    let first = numbered("first", 0..100);
    append(&path, &lines_text(&first));
    w.expect_texts(&first).await;
    // The writer keeps its descriptor across the rename and writes a little more.
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::fs::rename(&path, logs.join("p.stdout.1")).unwrap();
    let late = numbered("late", 0..20);
    writer.write_all(lines_text(&late).as_bytes()).unwrap();
    let second = numbered("second", 0..100);
    append(&path, &lines_text(&second));
    let all: Vec<String> = [first, late, second].concat();
    w.expect_texts(&all).await;
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_ships_each_line_once_and_reports_no_loss() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-copy", "a/b/c", 0, &["p"]);
    let path = logs.join("p.stdout");
    let first = numbered("before", 0..200);
    append(&path, &lines_text(&first[..100]));
    let shipper = w.start();
    w.expect_texts(&first[..100]).await;
    // More lines, then copy and truncate at once: the shipper may not have
    // read the last ones from the original.
    append(&path, &lines_text(&first[100..]));
    std::fs::copy(&path, logs.join("p.stdout.1")).unwrap();
    truncate(&path);
    let after = numbered("after", 0..50);
    append(&path, &lines_text(&after));
    let all: Vec<String> = [first, after].concat();
    w.expect_texts(&all).await;
    assert!(
        w.events_of(EventKind::DataLoss).is_empty(),
        "no loss reported: {:?}",
        w.events_of(EventKind::DataLoss)
    );
    assert!(!w.events_of(EventKind::FileTruncated).is_empty());
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_starts_a_new_generation() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-trunc", "a/b/c", 0, &["p"]);
    let shipper = w.start();
    let path = logs.join("p.stdout");
    let old = numbered("old", 0..50);
    append(&path, &lines_text(&old));
    w.expect_texts(&old).await;
    truncate(&path);
    let new = numbered("new", 0..50);
    append(&path, &lines_text(&new));
    let all: Vec<String> = [old, new].concat();
    w.expect_texts(&all).await;
    let ids: BTreeSet<u64> = w.lines.keys().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 2, "one source_id per generation");
    let truncated = w.events_of(EventKind::FileTruncated);
    assert_eq!(truncated.len(), 1);
    assert_eq!(truncated[0].job, "a/b/c");
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_while_open_is_read_to_its_end() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-del", "a/b/c", 0, &["p"]);
    let shipper = w.start();
    let path = logs.join("p.stdout");
    let first = numbered("a", 0..10);
    append(&path, &lines_text(&first));
    w.expect_texts(&first).await;
    let rest = numbered("b", 0..5000);
    append(&path, &lines_text(&rest));
    std::fs::remove_file(&path).unwrap();
    let all: Vec<String> = [first, rest].concat();
    w.expect_texts(&all).await;
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_where_acknowledgements_stopped() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-restart", "a/b/c", 0, &["p"]);
    let path = logs.join("p.stdout");
    let one = numbered("one", 0..300);
    append(&path, &lines_text(&one));
    let shipper = w.start();
    w.expect_texts(&one).await;
    shipper.shutdown().await;
    let two = numbered("two", 0..300);
    append(&path, &lines_text(&two));
    let shipper = w.start();
    let all: Vec<String> = [one, two].concat();
    w.expect_texts(&all).await;
    assert_eq!(
        w.duplicates, 0,
        "a clean shutdown checkpoints everything acknowledged"
    );
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_binary_and_invalid_utf8_lines_are_kept() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-bin", "a/b/c", 0, &["p"]);
    let mut config = w.config();
    config.max_line_bytes = 4096;
    let shipper = w.start_with(config);
    let path = logs.join("p.stdout");
    let long = "x".repeat(10_000);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(format!("{long}\n").as_bytes()).unwrap();
    f.write_all(b"\xff\xfe\x00bin\n").unwrap();
    f.write_all("ünïcødé ✓\n".as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.lines.len() < 5 && Instant::now() < deadline {
        w.pump().await;
    }
    let got: Vec<&Got> = w.lines.values().collect();
    assert_eq!(
        got.len(),
        5,
        "three pieces of the long line, then two lines"
    );
    let rebuilt: Vec<u8> = got[..3].iter().flat_map(|g| g.text.clone()).collect();
    assert_eq!(rebuilt, long.as_bytes());
    assert_eq!(
        got[..3].iter().map(|g| g.partial).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(got[3].text, b"\xff\xfe\x00bin");
    assert_eq!(got[4].text, "ünïcødé ✓".as_bytes());
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_files_with_few_descriptors() {
    let mut w = World::new().await;
    let mut want = Vec::new();
    for s in 0..40 {
        let processes: Vec<String> = (0..25).map(|p| format!("p{p}")).collect();
        let refs: Vec<&str> = processes.iter().map(String::as_str).collect();
        let logs = w.sandbox(&format!("task-{s}"), "many/files/job", s, &refs);
        for p in &processes {
            let line = format!("{s} {p} hello");
            append(&logs.join(format!("{p}.stdout")), &format!("{line}\n"));
            want.push(line);
        }
    }
    let mut config = w.config();
    config.max_open_files = 64;
    let shipper = w.start_with(config);
    w.expect_texts(&want).await;
    // Files grow again after being closed for the descriptor budget.
    for s in 0..40 {
        let line = format!("{s} again");
        append(
            &w.root.join(format!("task-{s}/logs/run-0/p7.stdout")),
            &format!("{line}\n"),
        );
        want.push(line);
    }
    w.expect_texts(&want).await;
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_in_place_of_a_deleted_one_is_a_new_source() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-reuse", "a/b/c", 0, &["p"]);
    let shipper = w.start();
    let path = logs.join("p.stdout");
    append(&path, "first file\n");
    w.expect_texts(&["first file".to_string()]).await;
    std::fs::remove_file(&path).unwrap();
    // Likely reuses the inode.
    append(&path, "second file\n");
    w.expect_texts(&["first file".to_string(), "second file".to_string()])
        .await;
    let ids: BTreeSet<u64> = w.lines.keys().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 2);
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_without_a_manifest_is_skipped_not_fatal() {
    let mut w = World::new().await;
    let bad = w.root.join("no-manifest/logs/run-0");
    std::fs::create_dir_all(&bad).unwrap();
    append(&bad.join("p.stdout"), "orphan\n");
    let logs = w.sandbox("t-good", "a/b/c", 0, &["p"]);
    let shipper = w.start();
    append(&logs.join("p.stdout"), "fine\n");
    w.expect_texts(&["fine".to_string()]).await;
    assert!(
        !shipper
            .progress()
            .sandbox(&w.root.join("no-manifest"))
            .fully_shipped,
        "unshipped bytes are counted"
    );
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_the_shipper_is_down_is_a_new_generation() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-down", "a/b/c", 0, &["p"]);
    let path = logs.join("p.stdout");
    let old = numbered("old", 0..40);
    append(&path, &lines_text(&old));
    let shipper = w.start();
    w.expect_texts(&old).await;
    shipper.shutdown().await;
    // Truncated and refilled past the checkpoint while nobody watched.
    truncate(&path);
    let new = numbered("new", 0..80);
    append(&path, &lines_text(&new));
    let shipper = w.start();
    let all: Vec<String> = [old, new].concat();
    w.expect_texts(&all).await;
    let ids: BTreeSet<u64> = w.lines.keys().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 2, "one source_id per generation");
    shipper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_while_the_shipper_is_down_loses_and_doubles_nothing() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-down-copy", "a/b/c", 0, &["p"]);
    let path = logs.join("p.stdout");
    let first = numbered("first", 0..60);
    append(&path, &lines_text(&first[..30]));
    let shipper = w.start();
    w.expect_texts(&first[..30]).await;
    shipper.shutdown().await;
    append(&path, &lines_text(&first[30..]));
    std::fs::copy(&path, logs.join("p.stdout.1")).unwrap();
    truncate(&path);
    let after = numbered("after", 0..10);
    append(&path, &lines_text(&after));
    let shipper = w.start();
    let all: Vec<String> = [first, after].concat();
    w.expect_texts(&all).await;
    shipper.shutdown().await;
}

/// Writes that land within `coalesce_ms` of each other are read together:
/// one bus record for many small writes, every line still once and in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_close_together_share_a_read_and_a_record() {
    let mut w = World::new().await;
    let logs = w.sandbox("t-chatty", "www/prod/chatty", 0, &["main"]);
    let mut config = w.config();
    config.coalesce_ms = 200;
    let shipper = w.start_with(config);
    let file = logs.join("main.stdout");
    append(&file, "first\n");
    w.expect_texts(&["first".to_string()]).await;
    let before = shipper.metrics().chunks_acked.get();
    let want = numbered("w", 0..20);
    for line in &want {
        append(&file, &format!("{line}\n"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut all = vec!["first".to_string()];
    all.extend(want);
    w.expect_texts(&all).await;
    let chunks = shipper.metrics().chunks_acked.get() - before;
    assert!(chunks <= 4, "20 writes within 40 ms took {chunks} records");
    assert_eq!(w.duplicates, 0);
    shipper.shutdown().await;
}

/// A rule from the shipper's configuration (as for layouts whose sandboxes
/// carry none) groups the jobs its glob matches: a stack trace arrives as
/// one line, newlines kept; another job's lines are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_multiline_rule_ships_a_trace_as_one_line() {
    use sluice_schema::multiline::{Multiline, Rule};
    use sluice_shipper::JobMultiline;
    let mut w = World::new().await;
    let java = w
        .sandbox("t-java", "pay/prod/api", 0, &["p"])
        .join("p.stdout");
    let plain = w
        .sandbox("t-plain", "web/prod/x", 0, &["p"])
        .join("p.stdout");
    let trace = "ERROR batch 28 failed\njava.lang.OutOfMemoryError: heap\n\tat a.B.c(B.java:1)\n\t... 3 more";
    let text = format!("INFO start\n{trace}\nINFO done\n");
    append(&java, &text);
    append(&plain, &text);
    let mut config = w.config();
    config.multiline = vec![JobMultiline {
        job: "pay/*".into(),
        rule: Multiline {
            rule: Rule::Java,
            timeout_ms: 200,
        },
    }];
    config.validate().unwrap();
    let shipper = w.start_with(config);
    let mut want: Vec<String> = ["INFO start", trace, "INFO done"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.extend(text.lines().map(str::to_string));
    w.expect_texts(&want).await;
    assert_eq!(w.duplicates, 0);
    shipper.shutdown().await;
}
