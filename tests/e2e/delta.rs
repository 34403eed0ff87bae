//! The archive as Delta Lake, read by engines nobody here wrote: for every
//! version of both tables, DuckDB's `delta_scan` and the `deltalake` Python
//! package read exactly the rows Sluice's SQL reads at that version (row
//! counts and, per job, a hash of every row's identity and bytes), through
//! archiver commits, several generations of compaction, retention, and an
//! archiver killed (`abort`, as `kill -9`) between its two table commits.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_archive::catalog::{Catalog, CatalogConfig, SplitKind};
use sluice_archive::store::{Store, StoreUrl};
use sluice_archiver::maintenance::{Maintenance, MaintenanceConfig, RetentionConfig};
use sluice_archiver::{Archiver, ArchiverConfig};
use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, EmbeddedConfig, Record};
use sluice_query::{AsOf, EngineConfig, QueryEngine, QueryRequest};
use sluice_schema::pb::{ClusterEvent, EventKind, Line, LogChunk, Source};
use sluice_schema::topics;

const HOUR: i64 = 3_600_000_000_000;
/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400 * 1_000_000_000;
/// 2026-09-01 00:00 UTC: older than the retention below.
const OLD: i64 = 1_788_220_800 * 1_000_000_000;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/delta_readers.py");

/// A Python with DuckDB's delta extension and `deltalake`:
/// `SLUICE_DELTA_PYTHON` (set by scripts/test.sh). `None` (with a message)
/// when there is none, unless `SLUICE_REQUIRE_DELTA=1`.
pub(crate) fn delta_python() -> Option<String> {
    crate::harness::python_with(
        "DELTA",
        "import duckdb, duckdb_extension_delta, deltalake",
        "the Delta readers",
    )
}

/// Runs the reader script; its JSON.
pub(crate) fn readers(python: &str, archive: &std::path::Path, args: &[String]) -> Value {
    let out = Command::new(python)
        .arg(SCRIPT)
        .arg(archive)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "delta_readers.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn digest(mut items: Vec<String>) -> (usize, String) {
    items.sort();
    let mut h = Sha256::new();
    for item in &items {
        h.update(item.as_bytes());
        h.update(b"\n");
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (items.len(), hex)
}

/// What Sluice's SQL reads of `table` at `version`, summarized as the
/// script summarizes the other engines' reads.
async fn sluice_reads(engine: &QueryEngine, table: SplitKind, version: u64) -> Value {
    let (sql, as_of) = match table {
        SplitKind::Logs => (
            "SELECT job, source_id, \"offset\", line, line_bytes FROM logs",
            AsOf::Tables {
                logs: version,
                events: 0,
            },
        ),
        SplitKind::Events => (
            "SELECT id FROM events",
            AsOf::Tables {
                logs: 0,
                events: version,
            },
        ),
    };
    let output = engine
        .query(&QueryRequest {
            sql: sql.into(),
            as_of: Some(as_of),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for batch in &output.batches {
        let text =
            |i: usize| datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
        match table {
            SplitKind::Logs => {
                let (job, line) = (text(0), text(3));
                let (job, line) = (job.as_string::<i32>(), line.as_string::<i32>());
                let source = batch.column(1).as_primitive::<Int64Type>();
                let offset = batch.column(2).as_primitive::<Int64Type>();
                let bytes = batch.column(4).as_binary::<i32>();
                for i in 0..batch.num_rows() {
                    let raw = if bytes.is_null(i) {
                        line.value(i).as_bytes()
                    } else {
                        bytes.value(i)
                    };
                    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                    jobs.entry(job.value(i).to_string())
                        .or_default()
                        .push(format!(
                            "{}\t{}\t{hex}",
                            source.value(i) as u64,
                            offset.value(i)
                        ));
                }
            }
            SplitKind::Events => {
                let id = text(0);
                let id = id.as_string::<i32>();
                let all = jobs.entry("*".into()).or_default();
                all.extend((0..batch.num_rows()).map(|i| id.value(i).to_string()));
            }
        }
    }
    if table == SplitKind::Events {
        jobs.entry("*".into()).or_default();
    }
    let rows: usize = jobs.values().map(Vec::len).sum();
    let jobs: serde_json::Map<String, Value> = jobs
        .into_iter()
        .map(|(job, items)| {
            let (n, hash) = digest(items);
            (job, json!([n, hash]))
        })
        .collect();
    json!({"rows": rows, "jobs": jobs})
}

/// One round of lines: three jobs, two instances each, `n` lines per
/// source continuing where the last round left off, at `ts`; in round 1 one
/// line not UTF-8. `batch/prod/etl` logs JSON, `db/staging/pg` logfmt every
/// other line, so the parsed columns (`level`, `message`, `trace_id`,
/// `fields`) are read by every engine too.
fn round(offsets: &mut BTreeMap<u64, u64>, r: u64, n: u64, ts: i64) -> Vec<LogChunk> {
    let mut chunks = Vec::new();
    for (j, job) in ["www/prod/web", "batch/prod/etl", "db/staging/pg"]
        .iter()
        .enumerate()
    {
        for instance in 0..2u32 {
            // Half of the ids at or above 2^63: signed in the table.
            let source_id =
                (0x9e37_79b9_7f4a_7c15u64).wrapping_mul(j as u64 * 2 + u64::from(instance) + 1);
            let at = offsets.entry(source_id).or_default();
            let mut lines = Vec::new();
            for i in 0..n {
                let mut text = match (j, i % 2) {
                    (1, _) => format!(
                        r#"{{"level":"{}","msg":"{job} {instance} round {r} line {i}","trace_id":"{r:016x}{i:016x}","user":"u{}","http":{{"code":{}}}}}"#,
                        ["info", "warn", "error"][i as usize % 3],
                        i % 4,
                        200 + i % 3 * 100
                    ),
                    (2, 1) => format!(
                        r#"ts={r} level=debug msg="{job} {instance} round {r} line {i}" user=u{}"#,
                        i % 4
                    ),
                    _ => format!("{job} {instance} round {r} line {i}"),
                }
                .into_bytes();
                if r == 1 && i == 3 && j == 0 {
                    text = b"not \xff utf-8".to_vec();
                }
                lines.push(Line {
                    offset: *at,
                    raw_len: text.len() as u32 + 1,
                    ts_unix_nanos: ts + i as i64 * 1_001 + i64::from(instance),
                    text: bytes::Bytes::from(text),
                    ..Default::default()
                });
                *at += lines.last().unwrap().raw_len as u64;
            }
            chunks.push(LogChunk {
                source: Some(Source {
                    host: "node-1".into(),
                    job: (*job).into(),
                    instance,
                    source_id,
                    ..Default::default()
                }),
                lines,
                shipped_at_unix_nanos: ts,
            });
        }
    }
    chunks
}

async fn publish(bus: &Arc<dyn Bus>, chunks: &[LogChunk], events: &[String], ts: i64) {
    for chunk in chunks {
        let record = Record::new(topics::chunk_key(chunk), chunk.encode_to_vec(), 0);
        bus.send(topics::LOGS, record.clone())
            .await
            .unwrap()
            .await
            .unwrap();
        // Every chunk twice, as a shipper restarted from an old checkpoint
        // sends it: the archive keeps one.
        bus.send(topics::LOGS, record).await.unwrap().await.unwrap();
    }
    for id in events {
        let event = ClusterEvent {
            id: id.clone(),
            ts_unix_nanos: ts,
            kind: EventKind::TaskState as i32,
            job: "www/prod/web".into(),
            actor: "alice".into(),
            ..Default::default()
        };
        let record = Record::new(topics::event_key(&event), event.encode_to_vec(), 0);
        bus.send(topics::EVENTS, record)
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

async fn drain(archiver: &mut Archiver) {
    for _ in 0..6 {
        archiver.step().await.unwrap();
    }
    archiver.flush().await.unwrap();
}

fn version(store: &Store, rt: &tokio::runtime::Runtime, kind: SplitKind) -> u64 {
    rt.block_on(Catalog::open(store.store.clone(), &store.prefix, kind))
        .unwrap()
        .version()
}

#[test]
fn other_engines_read_exactly_what_sluice_reads_at_every_version() {
    let Some(python) = delta_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let bus_dir = tmp.path().join("bus");
    let store = StoreUrl::File(archive.clone()).open(&[]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut offsets = BTreeMap::new();
    let mut merges = 0;
    rt.block_on(async {
        let bus: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(&bus_dir, EmbeddedConfig::default()).unwrap());
        // A Delta checkpoint every third commit, so that the engines also
        // read versions through checkpoints delta-rs wrote for Sluice.
        let config = ArchiverConfig {
            cut_ms: 100,
            catalog: CatalogConfig {
                checkpoint_interval: 3,
                ..CatalogConfig::default()
            },
            ..ArchiverConfig::default()
        };
        let mut archiver = Archiver::open(config, bus.clone(), store.clone())
            .await
            .unwrap();
        let mut maintenance = Maintenance::open(
            MaintenanceConfig {
                retention: RetentionConfig::with_max_age(Duration::from_secs(40 * 86_400)),
                ..MaintenanceConfig::default()
            },
            store.clone(),
        )
        .await
        .unwrap();
        // Rounds into one hour (and an old one), compacted after every
        // round from the second on: the merged split is merged again with
        // each round's new split, generation after generation.
        for r in 0..6u64 {
            let ts = if r == 2 {
                OLD
            } else {
                T0 + (r as i64 % 2) * HOUR
            };
            let events = vec![
                format!("node-1/{T0}-{r}"),
                format!("node-1/{T0}-{}", r.saturating_sub(1)),
            ];
            publish(&bus, &round(&mut offsets, r, 40, ts), &events, ts).await;
            drain(&mut archiver).await;
            if r >= 1 {
                let pass = maintenance.compact_pass().await.unwrap();
                assert!(pass.failed.is_empty(), "{:?}", pass.failed);
                merges += pass.merged.len();
            }
        }
        // The old hour goes.
        let pass = maintenance.retention_pass().await.unwrap();
        assert!(!pass.removed.is_empty(), "retention removed the old hour");
    });
    assert!(merges >= 4, "several generations of merges: {merges}");

    // An archiver killed between its two table commits, then a clean one.
    let more = round(&mut offsets, 6, 25, T0 + 3 * HOUR);
    rt.block_on(async {
        let bus: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(&bus_dir, EmbeddedConfig::default()).unwrap());
        publish(&bus, &more, &[format!("node-1/{T0}-6")], T0 + 3 * HOUR).await;
        bus.flush(Duration::from_secs(5)).await.unwrap();
    });
    let archiver = |extra: &[&str]| {
        Command::new(crate::harness::SLUICE)
            .args(["archiver", "--bus"])
            .arg(format!("embedded://{}", bus_dir.display()))
            .arg("--store")
            .arg(format!("file://{}", archive.display()))
            .args(["--cut-ms", "100", "--no-compaction", "--data-dir"])
            .arg(tmp.path())
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let logs_before = version(&store, &rt, SplitKind::Logs);
    let events_before = version(&store, &rt, SplitKind::Events);
    let crashed = archiver(&["--crash-at", "logs-committed"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        !crashed.status.success() && err.contains("crashing at"),
        "{err}"
    );
    assert_eq!(version(&store, &rt, SplitKind::Logs), logs_before + 1);
    assert_eq!(
        version(&store, &rt, SplitKind::Events),
        events_before,
        "died before events"
    );
    let mut clean = archiver(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while version(&store, &rt, SplitKind::Events) == events_before {
        assert!(
            Instant::now() < deadline,
            "the clean archiver committed the events"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &clean.id().to_string()])
        .status();
    let _ = clean.wait();

    for table in ["logs", "events"] {
        let last = archive.join(table).join("_delta_log/_last_checkpoint");
        assert!(last.is_file(), "{}", last.display());
    }

    // Every version of both tables, by every engine.
    let logs_latest = version(&store, &rt, SplitKind::Logs);
    let events_latest = version(&store, &rt, SplitKind::Events);
    let list = |n: u64| (0..=n).map(|v| v.to_string()).collect::<Vec<_>>().join(",");
    let theirs = readers(
        &python,
        &archive,
        &[
            "--logs-versions".into(),
            list(logs_latest),
            "--events-versions".into(),
            list(events_latest),
        ],
    );
    let engine = rt
        .block_on(QueryEngine::open(store.clone(), EngineConfig::default()))
        .unwrap();
    let mut final_rows = 0;
    for (table, name, latest) in [
        (SplitKind::Logs, "logs", logs_latest),
        (SplitKind::Events, "events", events_latest),
    ] {
        for v in 0..=latest {
            let ours = rt.block_on(sluice_reads(&engine, table, v));
            for reader in ["duckdb", "deltalake"] {
                assert_eq!(
                    theirs[name][v.to_string()][reader],
                    ours,
                    "{name} version {v}: {reader} reads other rows than Sluice"
                );
            }
            if table == SplitKind::Logs && v == latest {
                final_rows = ours["rows"].as_u64().unwrap();
            }
        }
    }
    // 7 rounds × 6 sources, less the old hour retention removed; each line once.
    assert_eq!(final_rows, 6 * (40 * 6 + 25) - 6 * 40);

    // The columns parsed from the lines, as DuckDB reads them (the map
    // too) and as deltalake reads them, equal Sluice's.
    let order = "ORDER BY job, source_id, \"offset\"";
    let parsed = format!(
        "SELECT job, \"offset\", level, message, trace_id, span_id, fields['user'], \
         fields['http.code'] FROM logs {order}"
    );
    let ours = rt.block_on(sluice_rows(&engine, &parsed));
    assert_eq!(ours.len() as u64, final_rows);
    assert!(
        ours.iter()
            .any(|r| r[2] == "warn" && r[6] == "u1" && r[7] == "300")
    );
    assert!(ours.iter().any(|r| r[2] == "debug" && r[6] == "u3"));
    assert_eq!(sql_rows(&python, &archive, "duckdb", &parsed), ours);
    let plain = format!("SELECT job, \"offset\", level, message, trace_id FROM logs {order}");
    let ours: Vec<Vec<String>> = ours.iter().map(|r| r[..5].to_vec()).collect();
    assert_eq!(sql_rows(&python, &archive, "deltalake", &plain), ours);
}

/// Rows of `sql` in Sluice's engine, each value as text (`None` for null,
/// as Python prints it).
async fn sluice_rows(engine: &QueryEngine, sql: &str) -> Vec<Vec<String>> {
    let output = engine
        .query(&QueryRequest {
            sql: sql.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut rows = Vec::new();
    for batch in &output.batches {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        if c.is_null(i) {
                            "None".to_string()
                        } else {
                            c.value(i).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Rows of `sql` as `engine` (`duckdb`, `deltalake`) reads the archive's
/// tables.
fn sql_rows(python: &str, archive: &std::path::Path, engine: &str, sql: &str) -> Vec<Vec<String>> {
    let out = readers(
        python,
        archive,
        &["--sql".into(), sql.into(), "--engine".into(), engine.into()],
    );
    serde_json::from_value(out).unwrap()
}

/// `sluice archive migrate`, aborted (as `kill -9`) after every second
/// commit and run again until done, on an archive the build before Delta
/// Lake wrote: DuckDB, deltalake and `sluice query` all read exactly the
/// rows that archive held (its recorded per-job hashes).
#[test]
fn an_old_archive_migrated_through_kill_9s_reads_the_same_everywhere() {
    let Some(python) = delta_python() else {
        return;
    };
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("archive/tests/fixtures/legacy-v1");
    let truths: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("truths.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("archive");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(fixture.join("archive"))
        .arg(&archive)
        .status()
        .unwrap();
    assert!(copy.success());
    let store = format!("file://{}", archive.display());
    let sluice = |args: &[&str]| {
        Command::new(crate::harness::SLUICE)
            .args(args)
            .args(["--store", &store, "--data-dir"])
            .arg(tmp.path())
            .output()
            .unwrap()
    };
    let refused = sluice(&["archive", "status"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("sluice archive migrate"),
        "{err}"
    );

    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 100, "the migration makes progress");
        let out = sluice(&[
            "archive",
            "migrate",
            "--batch-mib",
            "0",
            "--crash-after",
            "2",
        ]);
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("per GiB"), "{text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !err.contains("buoyant_kernel") && !err.contains("deltalake"),
                "the Delta libraries' info lines stay out of the terminal: {err}"
            );
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("crashing after commit 2"), "{err}");
    }
    assert!(runs >= 3, "it was stopped and resumed: {runs} runs");
    let again = sluice(&["archive", "migrate"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to migrate"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let theirs = readers(&python, &archive, &[]);
    let mut total = 0;
    for engine in ["duckdb", "deltalake"] {
        let logs = &theirs["logs"]["latest"][engine];
        for (job, want) in truths["logs"].as_object().unwrap() {
            assert_eq!(
                logs["jobs"][job],
                json!([want["rows"], want["sha256"]]),
                "{engine}: {job}"
            );
        }
        assert_eq!(
            logs["jobs"].as_object().unwrap().len(),
            truths["logs"].as_object().unwrap().len()
        );
        let events = &theirs["events"]["latest"][engine]["jobs"]["*"];
        assert_eq!(
            events,
            &json!([truths["events"]["rows"], truths["events"]["sha256"]])
        );
        total = logs["rows"].as_u64().unwrap();
    }
    let counted = sluice(&["query", "--format", "csv", "SELECT count(*) AS n FROM logs"]);
    let text = String::from_utf8_lossy(&counted.stdout);
    assert!(
        text.lines().any(|l| l.trim() == total.to_string()),
        "{text}"
    );
}
