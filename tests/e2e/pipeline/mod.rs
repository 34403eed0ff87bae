//! The whole pipeline on loopback, checked line by line: tasks of a job on
//! three nodes write numbered lines (multi-byte UTF-8, invalid UTF-8, empty
//! lines, 1 MiB lines), the shippers publish them, the archiver writes them
//! to the store, and the archive is compared with the files the tasks wrote,
//! per instance: how many lines, rows and bytes, and a hash of the content
//! in (file, offset) order, and each row against the file's bytes at its
//! offset. Then the same through `kill -9` of `sluice up`, of nodes and of
//! the archiver, through 30 s without the bus (Kafka, tansu) and 30 s
//! without the store (S3, moto behind a proxy that refuses and drops
//! connections, or answers 403).
//!
//! The rule the comparison follows (shipper `files/lines.rs`,
//! `sluice_schema::archive`): a row is one line of a file, or one piece of a
//! line longer than `max_line_bytes` (256 KiB by default), cut at byte
//! boundaries; every piece but the last is `partial`. `offset` is where the
//! row's bytes start in the file and `raw_len` how many bytes of the file it
//! took (its newline included), so a file's rows, ordered by offset, tile it
//! from 0 to its end. `line` is the text with invalid UTF-8 replaced by
//! U+FFFD; `line_bytes` holds the exact bytes when, and only when, that
//! replacement changed something.

mod check;
mod job;
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt as _;
use serde_json::Value;
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archive::store::Store;

use crate::harness::{SLUICE, kill_tasks_under, sluice};
use check::*;
use job::*;
use proxy::*;

const JOB: &str = "e2e/prod/gen";
/// The shipper's default `max_line_bytes`: longer lines are cut in pieces.
const MAX_LINE_BYTES: usize = 256 << 10;
/// Garbage collection sees the nodes' disks as this large (in MiB) and
/// nearly empty, so it keeps the finished sandboxes the test reads,
/// however full the machine's disk is.
const GC_CAPACITY_MB: &str = "1000000000";

/// The tasks' program: `gen.py INSTANCE LINES BATCH PAUSE` writes LINES
/// lines to stdout, BATCH at a time with PAUSE seconds between batches.
/// The content depends only on the instance and the line number.
const GENERATOR: &str = r#"
import sys, time
inst, n, batch, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out = sys.stdout.buffer
big = {n // 4, n // 2, (3 * n) // 4}
buf = []
for i in range(n):
    if i in big:
        # Over 1 MiB of 3-byte characters: of the cuts at 256, 512 and
        # 768 KiB, two fall inside a character, whatever the prefix.
        line = (("%d:%d:" % (inst, i)) + "日本" * 180000).encode()[: 1048576 + 1000 + i % 7]
    elif i % 997 == 0:
        line = b"bad \xff\xfe\x80 bytes %d %d \xc3(" % (inst, i)
    elif i % 13 == 0:
        line = ("ünïcödé ✓ 日本語 🚀 %d %d" % (inst, i)).encode()
    elif i % 101 == 0:
        line = b""
    else:
        line = b"instance %d line %d %s" % (inst, i, b"x" * (i % 61))
    buf.append(line)
    if len(buf) >= batch:
        out.write(b"\n".join(buf) + b"\n")
        out.flush()
        buf = []
        if pause:
            time.sleep(pause)
if buf:
    out.write(b"\n".join(buf) + b"\n")
    out.flush()
"#;

// ---------------------------------------------------------------------------
// The tests

/// `sluice up --nodes 3`, a job of 5 instances writing 1,000,000 lines in
/// all: the archive holds each line of each file once, byte for byte.
#[test]
fn a_job_s_lines_reach_the_archive_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--nodes",
            "3",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 200_000,
            batch: 5000,
            pause_s: 0.0,
        },
    );
    submit(&data, &spec);
    let finished = await_instances(&data, "finished", 180, &|| up.log());
    let hosts: BTreeSet<&str> = finished
        .iter()
        .map(|i| i["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "spread over the 3 nodes: {finished:#?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    let verdict = await_exactly_once(&rt, &store, &data, 180, &|| up.log());
    assert_generated(&verdict, 200_000);
    assert_eq!(
        verdict.expected.values().map(|s| s.lines).sum::<u64>(),
        1_000_000
    );
    assert_query_agrees(
        &["--data-dir", data.to_str().unwrap()],
        &[],
        &verdict.expected,
    );
    up.assert_running();
    assert!(up.stop().success(), "{}", up.log());
}

/// `kill -9` at random moments, at least 20 times: of a whole `sluice up`
/// (embedded bus) in a loop, and on Kafka of `sluice node` processes
/// (shipper and agent; their tasks live on under their executors and are
/// adopted) and of `sluice archiver`. Each archive holds every line once.
#[test]
fn kill_9_of_up_archiver_and_nodes_loses_and_doubles_nothing() {
    let mut rng = Rng::new("kill -9 test");
    let kafka = sluice_testkit::TestKafka::start();
    let mut kills = 0;
    // Without a Kafka broker (and not required), all the kills go to `up`.
    kills += kill_9_loop_of_up(&mut rng, if kafka.is_some() { 8 } else { 20 });
    if let Some(kafka) = kafka {
        kills += kill_9_of_nodes_and_archiver_on_kafka(&mut rng, &kafka, 12);
    }
    eprintln!("kill -9: {kills} in all");
    assert!(kills >= 20, "only {kills} kills");
}

/// `sluice up --nodes 3` on the embedded bus, killed `n` times while its
/// tasks write; returns the number of kills.
fn kill_9_loop_of_up(rng: &mut Rng, n: u32) -> u32 {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            d,
            "--nodes",
            "3",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.5,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| up.log());
    let mut kills = 0;
    for _ in 0..n {
        // Now and then during start-up, else once it serves.
        if rng.below(4) == 0 {
            std::thread::sleep(rng.millis(100, 1500));
        } else {
            up.await_client_toml(&data);
            std::thread::sleep(rng.millis(500, 3000));
        }
        up.kill9();
        kills += 1;
        std::thread::sleep(rng.millis(0, 500));
        up.restart();
    }
    up.await_client_toml(&data);
    eprintln!("kill -9 of sluice up: {kills} times");
    await_instances(&data, "finished", 120, &|| up.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    let verdict = await_exactly_once(&rt, &store, &data, 120, &|| up.log());
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--data-dir", d], &[], &verdict.expected);
    kills
}

/// `sluice scheduler`, three `sluice node` and a `sluice archiver` on Kafka;
/// `n` kills while the tasks write: one of the archiver, the rest of random
/// nodes (each restarted at once; its tasks are adopted).
fn kill_9_of_nodes_and_archiver_on_kafka(
    rng: &mut Rng,
    kafka: &sluice_testkit::TestKafka,
    n: u32,
) -> u32 {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let bus = kafka.url();
    let (store_url, store) = file_store(&data);
    // A long agent timeout: a node killed and restarted keeps its tasks
    // rather than have them placed again.
    let mut scheduler = Daemon::start(
        tmp.path(),
        "scheduler",
        &[
            "scheduler",
            "--data-dir",
            d,
            "--bus",
            &bus,
            "--agent-timeout-ms",
            "120000",
        ],
        &[],
    );
    scheduler.await_client_toml(&data);
    let mut nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let name = format!("node-{i}");
            Daemon::start(
                tmp.path(),
                &name,
                &[
                    "node",
                    "--data-dir",
                    d,
                    "--bus",
                    &bus,
                    "--name",
                    &name,
                    "--gc-capacity-mb",
                    GC_CAPACITY_MB,
                ],
                &[],
            )
        })
        .collect();
    let mut archiver = Daemon::start(
        tmp.path(),
        "archiver",
        &[
            "archiver",
            "--data-dir",
            d,
            "--bus",
            &bus,
            "--store",
            &store_url,
            "--cut-ms",
            "1000",
        ],
        &[],
    );
    let logs = |nodes: &[Daemon], archiver: &Daemon, scheduler: &Daemon| {
        let mut all: Vec<&Daemon> = nodes.iter().collect();
        all.push(archiver);
        all.push(scheduler);
        format!(
            "{}\n--- tansu:\n{}",
            logs_of(&all),
            tail(&kafka.log(), 8000)
        )
    };
    await_nodes(&data, 3, &|| logs(&nodes, &archiver, &scheduler));
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.5,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let version = || {
        rt.block_on(Catalog::open(
            store.store.clone(),
            &store.prefix,
            SplitKind::Logs,
        ))
        .map_or(0, |c| c.version())
    };
    // The archiver is killed once, when it works (it has committed), and
    // stays down longer than the consumer session timeout (librdkafka's
    // 45 s): tansu expires a dead member only when another member's request
    // arrives after its session ran out, and a successor that joined sooner
    // was seen to get no partitions for minutes.
    let session = Duration::from_secs(47);
    let mut archiver_down: Option<Instant> = None;
    let mut archiver_kills = 0;
    let mut kills = 0;
    for _ in 0..n {
        std::thread::sleep(rng.millis(500, 2500));
        if archiver_down.is_some_and(|t| t.elapsed() >= session) {
            archiver.restart();
            archiver_down = None;
        }
        if archiver_kills == 0 && version() > 0 {
            archiver.kill9();
            archiver_down = Some(Instant::now());
            archiver_kills += 1;
            kills += 1;
            eprintln!("kill -9 of the archiver");
            continue;
        }
        let node = &mut nodes[rng.below(3) as usize];
        node.kill9();
        kills += 1;
        eprintln!("kill -9 of {}", node.name);
        std::thread::sleep(rng.millis(100, 1500));
        node.restart();
    }
    if let Some(t) = archiver_down {
        std::thread::sleep(session.saturating_sub(t.elapsed()));
        archiver.restart();
    }
    assert!(
        archiver_kills > 0,
        "the archiver never committed, so was never killed"
    );
    eprintln!(
        "kill -9 of nodes and archiver on Kafka: {kills} times ({archiver_kills} of the archiver)"
    );
    await_instances(&data, "finished", 120, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    let verdict = await_exactly_once(&rt, &store, &data, 180, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--store", &store_url], &[], &verdict.expected);
    for daemon in nodes.iter_mut().chain([&mut archiver, &mut scheduler]) {
        daemon.assert_running();
    }
    kills
}

/// Kafka (tansu, SQLite storage) stopped for 30 s while the tasks write and
/// the archiver runs, then started again on the same file and port: every
/// line arrives, once.
///
/// The producers' delivery timeout (`message.timeout.ms`, 30 s by default
/// in Sluice) is raised above the outage: when records time out, librdkafka
/// bumps the idempotent producer's epoch, and tansu 0.6 answers the next
/// produce with a panic of its storage task (`lite.rs:503`, "more or less
/// than one row") after which it fails every request. Real Kafka handles
/// the bump; so the shipper's re-reading after a delivery timeout is not
/// exercised here.
#[test]
fn the_bus_down_for_30_s() {
    let Some(mut kafka) = sluice_testkit::TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            d,
            "--nodes",
            "3",
            "--bus",
            &kafka.url(),
            "--kafka-property",
            "message.timeout.ms=120000",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.75,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| up.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    // The pipeline works before the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(archived_row_count(&store)) == 0 {
        assert!(Instant::now() < deadline, "nothing archived:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(500));
    }

    let written = |files: &BTreeMap<String, LogFile>| -> u64 {
        files.values().map(|f| f.bytes.len() as u64).sum()
    };
    let before = written(&sandbox_files(&data));
    kafka.kill();
    eprintln!("tansu stopped");
    std::thread::sleep(Duration::from_secs(30));
    up.assert_running();
    let during = written(&sandbox_files(&data));
    kafka.restart();
    eprintln!("tansu started again");
    assert!(
        during > before,
        "the tasks wrote while the bus was down ({before} → {during} bytes)"
    );
    await_instances(&data, "finished", 120, &|| up.log());
    let logs = || format!("{}\n--- tansu:\n{}", up.log(), tail(&kafka.log(), 8000));
    let verdict = await_exactly_once(&rt, &store, &data, 180, &logs);
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--data-dir", d], &[], &verdict.expected);
    up.assert_running();
}

/// `sluice up --nodes 3` archiving to S3 (moto) through a [`Proxy`], with
/// the job submitted and its first lines archived. Fields drop in order:
/// `up` first, the tasks, then the proxy and moto.
struct S3Cluster {
    up: Daemon,
    _tasks: Tasks,
    proxy: Proxy,
    s3: sluice_testkit::TestS3,
    /// The archive read directly from moto, not through the proxy.
    store: Store,
    rt: tokio::runtime::Runtime,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

const S3_STORE: &str = "s3://archive/sluice";

impl S3Cluster {
    fn start(w: Workload) -> Option<S3Cluster> {
        let s3 = sluice_testkit::TestS3::start()?;
        s3.create_bucket("archive");
        let proxy = Proxy::start(s3.endpoint().trim_start_matches("http://"));
        let envs: Vec<(String, String)> = s3
            .settings()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "aws_endpoint" {
                    format!("http://127.0.0.1:{}", proxy.port)
                } else {
                    v
                };
                (k.to_ascii_uppercase(), v)
            })
            .collect();
        let store = S3_STORE
            .parse::<sluice_archive::store::StoreUrl>()
            .unwrap()
            .open(&s3.settings())
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        std::fs::create_dir(&data).unwrap();
        let tasks = Tasks(data.clone());
        let mut up = Daemon::start(
            tmp.path(),
            "up",
            &[
                "up",
                "--data-dir",
                data.to_str().unwrap(),
                "--nodes",
                "3",
                "--store",
                S3_STORE,
                "--gc-capacity-mb",
                GC_CAPACITY_MB,
            ],
            &envs,
        );
        up.await_client_toml(&data);
        submit(&data, &write_job(tmp.path(), w));
        await_instances(&data, "running", 60, &|| up.log());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while rt.block_on(archived_row_count(&store)) == 0 {
            assert!(Instant::now() < deadline, "nothing archived:\n{}", up.log());
            std::thread::sleep(Duration::from_millis(500));
        }
        Some(S3Cluster {
            up,
            _tasks: tasks,
            proxy,
            s3,
            store,
            rt,
            data,
            _tmp: tmp,
        })
    }

    fn catalog_version(&self) -> u64 {
        self.rt
            .block_on(Catalog::open(
                self.store.store.clone(),
                &self.store.prefix,
                SplitKind::Logs,
            ))
            .unwrap()
            .version()
    }

    /// Once the tasks have finished: every line in the archive once, also
    /// as `sluice query` (reading moto directly) counts them.
    fn assert_exactly_once(&mut self, w: Workload, secs: u64) {
        await_instances(&self.data, "finished", 120, &|| self.up.log());
        let verdict =
            await_exactly_once(&self.rt, &self.store, &self.data, secs, &|| self.up.log());
        assert_generated(&verdict, w.lines);
        let direct: Vec<(String, String)> = self
            .s3
            .settings()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        assert_query_agrees(&["--store", S3_STORE], &direct, &verdict.expected);
        self.up.assert_running();
    }
}

/// The archive on S3 (moto) behind a proxy that, for 30 s while the tasks
/// write, first refuses connections (15 s) and then accepts and drops them
/// (15 s), having cut the open ones: the archiver retries, and every line
/// arrives once.
#[test]
fn the_store_down_for_30_s() {
    let w = Workload {
        lines: 60_000,
        batch: 1000,
        pause_s: 0.75,
    };
    let Some(mut c) = S3Cluster::start(w) else {
        return;
    };
    c.proxy.set(Mode::Refuse);
    eprintln!("store: refusing connections");
    // A request already past the proxy may still land: let it.
    std::thread::sleep(Duration::from_secs(1));
    let paused_at = c.catalog_version();
    std::thread::sleep(Duration::from_secs(14));
    c.proxy.set(Mode::Drop);
    eprintln!("store: dropping connections");
    std::thread::sleep(Duration::from_secs(15));
    c.up.assert_running();
    assert_eq!(
        c.catalog_version(),
        paused_at,
        "no catalog commit reached the store while it was unreachable"
    );
    let dropped = c.proxy.dropped.load(Ordering::Relaxed);
    c.proxy.set(Mode::Forward);
    eprintln!("store: back ({dropped} connections dropped)");
    assert!(
        dropped > 0,
        "the archiver tried the store while it was down"
    );
    c.assert_exactly_once(w, 240);
}

/// The store answering every request `403 AccessDenied` for 30 s (as S3
/// does while credentials are rotated or a policy propagates) while the
/// tasks write: the archiver keeps running and retries, and once the store
/// accepts again every line arrives, once.
///
/// The archiver gives up on an upload after 8 attempts (about 13 s of
/// backoff) and goes on; it used to go on polling with the batch it held
/// dropped, so the next commit moved the bus positions past lines that were
/// never archived (8,000 lines of each instance here). It now reads again
/// from its last commit first (`Archiver::run`, archiver/src/archiver.rs).
#[test]
fn the_store_answering_403_for_30_s() {
    let w = Workload {
        lines: 50_000,
        batch: 1000,
        pause_s: 0.75,
    };
    let Some(mut c) = S3Cluster::start(w) else {
        return;
    };
    c.proxy.set(Mode::Forbid);
    eprintln!("store: 403 to every request");
    std::thread::sleep(Duration::from_secs(30));
    c.up.assert_running();
    let forbidden = c.proxy.forbidden.load(Ordering::Relaxed);
    c.proxy.set(Mode::Forward);
    eprintln!("store: back ({forbidden} requests refused with 403)");
    assert!(forbidden > 0, "the archiver tried the store meanwhile");
    c.assert_exactly_once(w, 120);
}

/// The checker itself: rows made from a file by the rule compare equal to
/// it, and a lost row, a row archived twice, a changed byte or an uncut
/// long line are each reported, naming the instance.
#[test]
fn the_comparison_finds_lost_doubled_and_changed_lines() {
    let mut bytes = Vec::new();
    for line in [
        "plain".as_bytes(),
        "ünïcödé ✓".as_bytes(),
        b"bad \xff\xfe",
        b"",
        "日".repeat(200_000).as_bytes(),
        b"last",
    ] {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    let path = "/sandboxes/t/logs/run-0/main.stdout".to_string();
    let files = BTreeMap::from([(path.clone(), LogFile { instance: 2, bytes })]);
    let by_the_rule = || {
        let file = &files[&path];
        let mut rows = Vec::new();
        let mut offset = 0u64;
        for line in file.bytes[..file.bytes.len() - 1].split(|b| *b == b'\n') {
            let n = line.len().div_ceil(MAX_LINE_BYTES).max(1);
            for (i, piece) in pieces(line).enumerate() {
                let last = i + 1 == n;
                let raw_len = piece.len() as u32 + u32::from(last);
                rows.push(Row {
                    source_id: 7,
                    offset,
                    raw_len,
                    partial: !last,
                    unterminated: false,
                    truncated: false,
                    binary: std::str::from_utf8(piece).is_err(),
                    text: piece.to_vec(),
                });
                offset += u64::from(raw_len);
            }
        }
        rows
    };
    let check = |rows: Vec<Row>| {
        let archived = Archived {
            by_path: BTreeMap::from([(path.clone(), (2, rows))]),
            ..Archived::default()
        };
        compare(&files, archived)
    };
    let good = check(by_the_rule());
    assert!(good.ok(), "{}", good.describe());
    assert_eq!(good.archived, good.expected);
    assert_eq!(good.expected[&2].rows, 6 + 2, "the long line is 3 pieces");
    // 600,000 bytes of 3-byte characters: each piece starts or ends
    // inside one.
    assert_eq!(good.expected[&2].binary, 1 + 3, "cuts inside characters");

    let mut lost = by_the_rule();
    lost.remove(1);
    let v = check(lost);
    assert!(!v.ok() && v.doubled == 0);
    assert!(
        v.describe().contains("instance 2: MISMATCH"),
        "{}",
        v.describe()
    );
    assert!(
        v.describe().contains("missing at offset 6"),
        "{}",
        v.describe()
    );

    let mut doubled = by_the_rule();
    doubled.push(doubled[3].clone());
    let v = check(doubled);
    assert_eq!(v.doubled, 1);
    assert!(
        v.describe().contains("1 rows archived twice"),
        "{}",
        v.describe()
    );

    let mut changed = by_the_rule();
    changed[2].text[1] = b'A';
    let v = check(changed);
    assert!(
        !v.ok() && v.describe().contains("break the rule"),
        "{}",
        v.describe()
    );

    let mut uncut = by_the_rule();
    let whole: Vec<Row> = uncut.drain(4..7).collect();
    uncut.insert(
        4,
        Row {
            partial: false,
            raw_len: whole.iter().map(|r| r.raw_len).sum(),
            text: whole.iter().flat_map(|r| r.text.clone()).collect(),
            ..whole[0].clone()
        },
    );
    let v = check(uncut);
    assert!(
        v.describe().contains("not a whole line of at most"),
        "{}",
        v.describe()
    );
}
