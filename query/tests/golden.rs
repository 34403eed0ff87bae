//! Golden SQL tests: each `tests/golden/NAME.sql` runs through the
//! [`QueryEngine`] over a fixture archive, and its result, pretty-printed,
//! must equal `tests/golden/NAME.expected` (a query that fails prints
//! `error: …` instead). `SLUICE_BLESS=1` rewrites the expected files.
//!
//! The fixture is built the way a cluster builds an archive: the generated
//! corpus (`sluice-corpus`, seed 1) gives seven jobs of four roles, one log
//! format each, two instances a job, one event every 9 s from 2026-11-21
//! 07:00 UTC (two and a half hours), with some cluster events, committed to
//! the catalog as the archiver commits them: a split per job and hour (so a
//! job's rows are in splits of their own), the events in one split. Besides the
//! blessed files, the corpus's own truths (lines per job and hour, words,
//! needles) are checked against the engine's answers, so a wrong answer
//! cannot be blessed in unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use sluice_archive::split::{EventRow, LogRow, RowSource};
use sluice_archive::store::{Store, StoreUrl};
use sluice_corpus::{Cluster, ClusterSpec, Format, Truths};
use sluice_query::{EngineConfig, QueryEngine, QueryOutput, QueryRequest};
use sluice_schema::pb::{ClusterEvent, EventKind};
use sluice_testkit::archive::{add_event_split, add_split};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400 * SECOND;

/// The jobs of the fixture and the format each one logs.
const JOBS: [(&str, Format); 7] = [
    ("infra/dev/blobs", Format::Raw),
    ("infra/prod/bastion", Format::Syslog),
    ("shop/dev/indexer", Format::Logfmt),
    ("shop/prod/orders", Format::Java),
    ("storage/prod/hdfs", Format::Hdfs),
    ("web/prod/api", Format::Json),
    ("web/prod/frontend", Format::Access),
];

/// The words whose lines the truths count (the golden queries search them).
const WORDS: [&str; 9] = [
    "error",
    "exception",
    "warn",
    "failed",
    "invalid user",
    "connection",
    "caused by",
    "terminating",
    "info",
];

/// The fixture's logs.
fn corpus() -> Cluster {
    Cluster::generate(&ClusterSpec {
        seed: 1,
        jobs: JOBS.iter().map(|(j, f)| (j.to_string(), *f)).collect(),
        instances: 2,
        start_unix_nanos: T0,
        every_nanos: 9 * SECOND,
        events: 1000,
        needle_every: 150,
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    lines: u64,
}

impl Fixture {
    async fn engine(&self) -> QueryEngine {
        QueryEngine::open(self.store.clone(), EngineConfig::default())
            .await
            .unwrap()
    }
}

/// The cluster's events: submissions, starts, a failure and restart, a
/// quota kill, a node's disk pressure, a kill and an API call.
fn events() -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    let event = |id: String, ts: i64, kind: EventKind, job: &str| ClusterEvent {
        id,
        ts_unix_nanos: ts,
        kind: kind as i32,
        job: job.into(),
        ..Default::default()
    };
    for (j, (job, _)) in JOBS.iter().enumerate() {
        let actor = if job.starts_with("shop/") {
            "bob"
        } else {
            "alice"
        };
        let mut e = event(
            format!("scheduler/{j:02}"),
            T0 - 2 * MINUTE + j as i64 * SECOND,
            EventKind::JobSubmitted,
            job,
        );
        e.actor = actor.into();
        e.message = format!("{job} submitted with 2 instances");
        out.push(e);
        for instance in 0..2u32 {
            let mut e = event(
                format!("node-{}/{j:02}{instance}", (2 * j + instance as usize) % 3),
                T0 - MINUTE + j as i64 * SECOND + i64::from(instance) * SECOND / 2,
                EventKind::TaskState,
                job,
            );
            e.instance = Some(instance);
            e.task_id = task_id(job, instance);
            e.host = format!("node-{}", (2 * j + instance as usize) % 3);
            e.actor = "system:scheduler".into();
            e.reason = "started".into();
            e.attributes = BTreeMap::from([
                ("from".into(), "pending".into()),
                ("to".into(), "running".into()),
            ]);
            out.push(e);
        }
    }
    let spark = "shop/prod/orders";
    let mut failed = event(
        "node-1/failed".into(),
        T0 + HOUR + 20 * MINUTE,
        EventKind::TaskState,
        spark,
    );
    failed.instance = Some(1);
    failed.task_id = task_id(spark, 1);
    failed.host = "node-1".into();
    failed.actor = "system:agent".into();
    failed.reason = "exited".into();
    failed.message = "task exited with status 1".into();
    failed.attributes = BTreeMap::from([
        ("exit_code".into(), "1".into()),
        ("from".into(), "running".into()),
        ("to".into(), "failed".into()),
    ]);
    out.push(failed.clone());
    let mut restarted = failed;
    restarted.id = "node-1/restarted".into();
    restarted.ts_unix_nanos += 5 * SECOND;
    restarted.run = 1;
    restarted.reason = "restarted".into();
    restarted.message = "task restarted (run 1)".into();
    restarted.attributes = BTreeMap::from([
        ("from".into(), "failed".into()),
        ("to".into(), "running".into()),
    ]);
    out.push(restarted);
    let zookeeper = "infra/dev/blobs";
    let mut kill = event(
        "node-2/quota".into(),
        T0 + 2 * HOUR,
        EventKind::QuotaKill,
        zookeeper,
    );
    kill.instance = Some(0);
    kill.task_id = task_id(zookeeper, 0);
    kill.host = "node-2".into();
    kill.actor = "system:agent".into();
    kill.reason = "disk_quota_exceeded".into();
    kill.message = "sandbox used 2.1 GiB of its 2 GiB disk quota".into();
    out.push(kill);
    let mut pressure = event(
        "node-2/pressure".into(),
        T0 + 2 * HOUR - 3 * MINUTE,
        EventKind::DiskPressure,
        "",
    );
    pressure.host = "node-2".into();
    pressure.actor = "system:gc".into();
    pressure.reason = "high_mark".into();
    pressure.attributes = BTreeMap::from([
        ("capacity_bytes".into(), "107374182400".into()),
        ("used_bytes".into(), "96636764160".into()),
    ]);
    out.push(pressure);
    let mut killed = event(
        "scheduler/killed".into(),
        T0 + 2 * HOUR + 30 * MINUTE,
        EventKind::JobKilled,
        spark,
    );
    killed.actor = "bob".into();
    killed.message = "shop/prod/orders killed".into();
    out.push(killed);
    let mut call = event(
        "scheduler/api".into(),
        T0 + 45 * MINUTE,
        EventKind::ApiCall,
        "",
    );
    call.actor = "alice".into();
    call.attributes = BTreeMap::from([("method".into(), "/sluice.v1.Scheduler/ListJobs".into())]);
    out.push(call);
    out
}

fn task_id(job: &str, instance: u32) -> String {
    format!("{}-{instance}-0", job.replace('/', "-"))
}

/// Archives the fixture into a local store: each job's lines split by hour,
/// one split and one commit each, as the archiver commits them; the events
/// in one split of their day.
async fn fixture(corpus: &Cluster) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreUrl::File(dir.path().join("archive"))
        .open(&[])
        .unwrap();
    let mut sent = 0u64;
    for (j, (job, _)) in JOBS.iter().enumerate() {
        let mut by_hour: BTreeMap<i64, Vec<LogRow>> = BTreeMap::new();
        for stream in corpus.streams.iter().filter(|s| s.job == *job) {
            let instance = stream.instance;
            let source = Arc::new(RowSource {
                host: format!("node-{}", (2 * j + instance as usize) % 3),
                job: job.to_string(),
                instance,
                task_id: task_id(job, instance),
                process: "main".into(),
                stream: 1,
                path: format!(
                    "/var/lib/sluice/sandboxes/{}/stdout",
                    task_id(job, instance)
                ),
                source_id: (2 * j) as u64 + u64::from(instance) + 1,
                labels_json: "{}".into(),
                ..RowSource::default()
            });
            let mut offset = 0u64;
            for (ts, text) in stream.lines() {
                let raw_len = text.len() as u32 + 1;
                by_hour
                    .entry(ts - ts.rem_euclid(HOUR))
                    .or_default()
                    .push(LogRow {
                        source: source.clone(),
                        ts_unix_nanos: ts,
                        offset,
                        raw_len,
                        text: Bytes::copy_from_slice(text),
                        partial: false,
                        truncated: false,
                        unterminated: false,
                    });
                offset += u64::from(raw_len);
            }
        }
        for rows in by_hour.into_values() {
            sent += rows.len() as u64;
            add_split(&store, rows).await;
        }
    }
    add_event_split(&store, events().into_iter().map(EventRow::from).collect()).await;
    Fixture {
        _dir: dir,
        store,
        lines: sent,
    }
}

async fn query(engine: &QueryEngine, sql: &str) -> QueryOutput {
    let request = QueryRequest {
        sql: sql.into(),
        ..Default::default()
    };
    engine
        .query(&request)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A query's result as the golden files hold it.
async fn render(engine: &QueryEngine, sql: &str) -> String {
    let request = QueryRequest {
        sql: sql.into(),
        ..Default::default()
    };
    match engine.query(&request).await {
        Ok(output) => {
            let table = pretty_format_batches_with_schema(output.schema.clone(), &output.batches)
                .unwrap_or_else(|e| panic!("cannot print the result of {sql}: {e}"));
            format!("{table}\n")
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_queries() {
    let corpus = corpus();
    let fixture = fixture(&corpus).await;
    let engine = fixture.engine().await;
    let bless = std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "golden files missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let sql = std::fs::read_to_string(file).unwrap();
        let actual = render(&engine, &sql).await;
        let expected_path = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}+++ actual\n{actual}",
                file.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (SLUICE_BLESS=1 writes it)",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden queries differ (SLUICE_BLESS=1 rewrites the expected files):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The first needle the corpus planted in `job` twice.
fn needle_of(truths: &Truths, job: &str) -> String {
    truths
        .needles
        .iter()
        .find(|(_, hits)| hits.len() == 2 && hits.iter().all(|h| h.job == job))
        .map(|(needle, _)| needle.clone())
        .unwrap_or_else(|| panic!("no needle planted twice in {job}"))
}

/// A needle is answered by the indexes: only its rows are decoded, and the
/// splits without it are not read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_needle_reads_only_its_rows() {
    let corpus = corpus();
    let truths = corpus.truths(&[]);
    let fixture = fixture(&corpus).await;
    let engine = fixture.engine().await;
    let needle = needle_of(&truths, "storage/prod/hdfs");
    let output = query(
        &engine,
        &format!("SELECT job, instance, line FROM logs WHERE search(line, '{needle}')"),
    )
    .await;
    assert_eq!(output.num_rows(), 2);
    let stats = &output.stats;
    assert!(stats.splits_total >= 10, "{stats:?}");
    assert_eq!(stats.splits_searched, stats.splits_total, "{stats:?}");
    assert!(
        stats.splits_without_hits > 0 && stats.splits_read.len() <= 2,
        "{stats:?}"
    );
    assert_eq!(stats.rows_selected_by_index, 2, "{stats:?}");
    assert!(
        stats.rows_in_splits_read >= 100 * stats.rows_selected_by_index,
        "{stats:?}"
    );

    // Without an index to ask, LIKE reads every row of every split.
    let output = query(
        &engine,
        &format!("SELECT count(*) FROM logs WHERE line LIKE '%{needle}%'"),
    )
    .await;
    assert_eq!(output.stats.rows_in_splits_read, fixture.lines);
    assert_eq!(output.stats.splits_searched, 0);
}

/// Filters on time and job drop splits before any object is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_job_filters_prune_splits() {
    let corpus = corpus();
    let truths = corpus.truths(&[]);
    let fixture = fixture(&corpus).await;
    let engine = fixture.engine().await;
    let output = query(
        &engine,
        "SELECT count(*) FROM logs WHERE ts >= '2026-11-21T08:00:00Z' AND ts < '2026-11-21T09:00:00Z'",
    )
    .await;
    let stats = &output.stats;
    assert!(stats.splits_pruned > 0, "{stats:?}");
    assert_eq!(
        stats.splits_pruned + stats.splits_read.len() as u64,
        stats.splits_total
    );
    assert!(stats.rows_in_splits_read < fixture.lines, "{stats:?}");

    let output = query(
        &engine,
        "SELECT count(*) FROM logs WHERE job = 'web/prod/frontend'",
    )
    .await;
    // Each job's lines were committed on their own: only its splits are read.
    let stats = &output.stats;
    assert_eq!(
        stats.rows_in_splits_read, truths.lines["web/prod/frontend"],
        "{stats:?}"
    );
    assert_eq!(
        stats.splits_pruned + stats.splits_read.len() as u64,
        stats.splits_total
    );
}

/// The rows of a query's first column as strings and its other columns as
/// integers (counts, instances, nanoseconds).
fn keyed_counts(output: &QueryOutput) -> Vec<(String, Vec<i64>)> {
    let mut rows = Vec::new();
    for batch in &output.batches {
        let key = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let key = key.as_string::<i32>();
        for row in 0..batch.num_rows() {
            let values = (1..batch.num_columns())
                .map(|c| integer(batch.column(c).as_ref(), row))
                .collect();
            rows.push((key.value(row).to_string(), values));
        }
    }
    rows
}

fn integer(column: &dyn Array, row: usize) -> i64 {
    match column.as_primitive_opt::<Int64Type>() {
        Some(a) => a.value(row),
        None => panic!("not a BIGINT column: {:?}", column.data_type()),
    }
}

/// The engine's answers equal what the corpus knows of its own logs: lines
/// per job, per hour, per word and phrase, time spans, and every needle's
/// rows, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_the_corpus_truths() {
    let corpus = corpus();
    let truths = corpus.truths(&WORDS);
    let fixture = fixture(&corpus).await;
    let engine = fixture.engine().await;
    assert_eq!(fixture.lines, truths.total_lines());

    let per_job = query(
        &engine,
        "SELECT job, count(*), count(DISTINCT instance), min(ts_nanos), max(ts_nanos) FROM logs GROUP BY job ORDER BY job",
    )
    .await;
    let expected: Vec<(String, Vec<i64>)> = truths
        .lines
        .iter()
        .map(|(job, lines)| {
            let (first, last) = truths.span[job];
            (
                job.clone(),
                vec![*lines as i64, i64::from(truths.instances[job]), first, last],
            )
        })
        .collect();
    assert_eq!(keyed_counts(&per_job), expected);

    let per_hour = query(
        &engine,
        // `ts` is in microseconds, the truths' hours in nanoseconds.
        "SELECT concat(job, ' ', CAST(date_trunc('hour', ts) AS BIGINT) * 1000), count(*) FROM logs GROUP BY 1 ORDER BY 1",
    )
    .await;
    let mut expected: Vec<(String, Vec<i64>)> = truths
        .lines_per_hour
        .iter()
        .map(|((job, hour), n)| (format!("{job} {hour}"), vec![*n as i64]))
        .collect();
    expected.sort();
    assert_eq!(keyed_counts(&per_hour), expected);

    for word in WORDS {
        let search = if word.contains(' ') {
            format!("\"{word}\"")
        } else {
            word.to_string()
        };
        let output = query(
            &engine,
            &format!(
                "SELECT job, count(*) FROM logs WHERE search(line, '{search}') GROUP BY job ORDER BY job"
            ),
        )
        .await;
        let expected: Vec<(String, Vec<i64>)> = truths
            .lines
            .keys()
            .map(|job| (job.clone(), vec![truths.lines_with_word(word, job) as i64]))
            .filter(|(_, n)| n[0] > 0)
            .collect();
        assert!(
            !expected.is_empty(),
            "no line holds {word:?}: pick another word"
        );
        assert_eq!(keyed_counts(&output), expected, "search(line, '{search}')");
    }

    // Every needle of two jobs, found by search and by LIKE.
    let needles: Vec<_> = truths
        .needles
        .iter()
        .filter(|(_, hits)| ["storage/prod/hdfs", "web/prod/api"].contains(&hits[0].job.as_str()))
        .collect();
    assert!(needles.len() >= 8, "{}", needles.len());
    for (needle, hits) in needles {
        for filter in [
            format!("search(line, '{needle}')"),
            format!("line LIKE '%{needle}%'"),
        ] {
            let output = query(
                &engine,
                &format!(
                    "SELECT ts_nanos, job, instance, \"offset\", line FROM logs WHERE {filter} ORDER BY ts_nanos"
                ),
            )
            .await;
            let mut found = Vec::new();
            for batch in &output.batches {
                let jobs = datafusion::arrow::compute::cast(
                    batch.column(1),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let lines = datafusion::arrow::compute::cast(
                    batch.column(4),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                for row in 0..batch.num_rows() {
                    found.push((
                        integer(batch.column(0).as_ref(), row),
                        jobs.as_string::<i32>().value(row).to_string(),
                        integer(batch.column(2).as_ref(), row) as u32,
                        integer(batch.column(3).as_ref(), row) as u64,
                        lines.as_string::<i32>().value(row).to_string(),
                    ));
                }
            }
            let expected: Vec<_> = hits
                .iter()
                .map(|h| {
                    let line = String::from_utf8(h.line.clone()).expect("ASCII needles");
                    (h.ts, h.job.clone(), h.instance, h.offset, line)
                })
                .collect();
            assert_eq!(found, expected, "{filter}");
        }
    }
}
