//! Compaction and retention on real stores (local files, memory, and S3
//! through moto where installed): every row survives a merge exactly once
//! and stays searchable, a crash leaves only what the janitor removes, two
//! maintainers racing never double or lose a row, retention removes old
//! splits only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prost::Message as _;
use sluice_archive::catalog::{Catalog, SplitEntry, SplitKind};
use sluice_archive::split::{self, LogRow, SearchQuery, SplitOptions};
use sluice_archive::store::{Store, StoreUrl};
use sluice_archiver::maintenance::{
    CompactionJob, Maintenance, MaintenanceConfig, MergeOutcome, RetentionConfig, Step,
};
use sluice_archiver::{Archiver, ArchiverConfig};
use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, EmbeddedConfig, Record};
use sluice_schema::pb::{ClusterEvent, EventKind, Line, LogChunk, Source};
use sluice_schema::topics;

use sluice_testkit::archive::{add_split, catalog, memory_store, now_nanos, rows, table};

const HOUR: i64 = 3600 * 1_000_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400 * 1_000_000_000;
const GRACE: Duration = Duration::from_secs(2 * 3600);

/// Every live log row, sorted by (source_id, offset); panics on a row
/// archived twice.
async fn live_rows(store: &Store) -> Vec<LogRow> {
    let (mut rows, _) = sluice_archive::scan::rows(store, SplitKind::Logs)
        .await
        .unwrap();
    rows.sort_by_key(|r| (r.source.source_id, r.offset));
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (a.source.source_id, a.offset) != (b.source.source_id, b.offset),
            "row {} {} twice",
            a.source.source_id,
            a.offset
        );
    }
    rows
}

/// Every data object (files and indexes; not the Delta logs or Sluice's
/// state caches), relative to the prefix.
async fn objects(store: &Store) -> BTreeSet<String> {
    let listed: Vec<_> = store
        .store
        .list(Some(&store.prefix))
        .try_collect()
        .await
        .unwrap();
    listed
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|k| !k.contains("/_delta_log/") && !k.contains("/_sluice/"))
        .map(|k| {
            k.strip_prefix(&format!("{}/", store.prefix))
                .unwrap_or(&k)
                .to_string()
        })
        .collect()
}

/// Object keys of live splits and of removed ones.
fn referenced(catalog: &Catalog) -> (BTreeSet<String>, BTreeSet<String>) {
    let state = catalog.state();
    let live = state
        .splits()
        .values()
        .flat_map(|s| s.object_keys().map(String::from))
        .collect();
    let removed = state
        .removed_splits()
        .values()
        .flat_map(|s| s.object_keys().map(String::from))
        .collect();
    (live, removed)
}

fn config() -> MaintenanceConfig {
    MaintenanceConfig::default()
}

/// `n` splits of 20 rows each in the hour of T0, sources 1 and 2.
async fn seed_hour(store: &Store, n: u64) -> Vec<SplitEntry> {
    let mut out = Vec::new();
    for i in 0..n {
        let source = 1 + i % 2;
        out.push(
            add_split(
                store,
                rows(source, "www/prod/web", i * 20..(i + 1) * 20, T0),
            )
            .await,
        );
    }
    out
}

async fn log_splits_of(store: &Store, hour: u8) -> Vec<SplitEntry> {
    catalog(store)
        .await
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs && s.hour == Some(hour))
        .cloned()
        .collect()
}

/// Checks a split's index against its rows: the rows a search returns are
/// exactly those whose line matches.
async fn assert_index_finds(store: &Store, split: &SplitEntry, query: &str) -> usize {
    let catalog = catalog(store).await;
    let get = |key: String| {
        let path = catalog.object_path(&key);
        let store = store.store.clone();
        async move { store.get(&path).await.unwrap().bytes().await.unwrap() }
    };
    let index = split::open_index(get(split.index_key.clone().unwrap()).await).unwrap();
    let query = SearchQuery::parse(query).unwrap();
    let hits = split::search_rows(&index, &query).unwrap();
    assert!(hits.exact);
    let data = get(split.key.clone()).await;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let mut lines = Vec::new();
    for batch in reader {
        for row in split::rows::log_rows_from_batch(&batch.unwrap()).unwrap() {
            lines.push(row.line().into_owned());
        }
    }
    let matching: Vec<u32> = (0..lines.len() as u32)
        .filter(|&i| query.matches(&lines[i as usize]))
        .collect();
    assert!(!matching.is_empty(), "{query:?} matches nothing");
    assert_eq!(hits.rows, matching);
    matching.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archivers_small_splits_of_an_hour_become_one() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> =
        Arc::new(EmbeddedBus::open(&dir.path().join("bus"), EmbeddedConfig::default()).unwrap());
    let store = StoreUrl::File(dir.path().join("archive"))
        .open(&[])
        .unwrap();
    let mut archiver = Archiver::open(
        ArchiverConfig {
            cut_ms: 100,
            ..ArchiverConfig::default()
        },
        bus.clone(),
        store.clone(),
    )
    .await
    .unwrap();
    // Twelve rounds, each cut into its own splits: hour 07 of two sources
    // and, every third round, hour 08 and an event.
    for round in 0..12u64 {
        for source in [1u64, 2] {
            let ts = T0 + (round as i64) * 60_000_000_000;
            let mut lines: Vec<Line> = (round * 10..(round + 1) * 10)
                .map(|i| Line {
                    offset: i * 50,
                    raw_len: 50,
                    ts_unix_nanos: ts + i as i64,
                    text: Bytes::from(format!("source {source} line {i} round{round}")),
                    ..Default::default()
                })
                .collect();
            if round % 3 == 0 {
                lines.push(Line {
                    offset: 1_000_000 + round,
                    raw_len: 1,
                    ts_unix_nanos: T0 + HOUR + round as i64,
                    text: Bytes::from(format!("late hour round{round}")),
                    ..Default::default()
                });
            }
            let chunk = LogChunk {
                source: Some(Source {
                    host: "node-1".into(),
                    job: format!("role{source}/prod/web"),
                    instance: source as u32,
                    source_id: source,
                    ..Default::default()
                }),
                lines,
                shipped_at_unix_nanos: T0,
            };
            let record = Record::new(topics::chunk_key(&chunk), chunk.encode_to_vec(), 0);
            bus.send(topics::LOGS, record).await.unwrap().await.unwrap();
        }
        if round % 3 == 0 {
            // Of the day before: a day still being written waits for
            // more splits than four.
            let event = ClusterEvent {
                id: format!("e/{round}"),
                ts_unix_nanos: T0 - DAY,
                kind: EventKind::TaskState as i32,
                job: "role1/prod/web".into(),
                ..Default::default()
            };
            let record = Record::new(topics::event_key(&event), event.encode_to_vec(), 0);
            bus.send(topics::EVENTS, record)
                .await
                .unwrap()
                .await
                .unwrap();
        }
        for _ in 0..3 {
            archiver.step().await.unwrap();
        }
        archiver.flush().await.unwrap();
    }
    drop(archiver);

    let before = live_rows(&store).await;
    assert_eq!(before.len(), 12 * 2 * 10 + 4 * 2);
    let (_, events_before) = sluice_archive::scan::rows(&store, SplitKind::Events)
        .await
        .unwrap();
    assert_eq!(events_before.len(), 4);
    let small = log_splits_of(&store, 7).await;
    assert!(small.len() >= 6, "{} splits", small.len());
    let version_before = catalog(&store).await.version();
    let events_version_before = table(&store, SplitKind::Events).await.version();

    let mut maintenance = Maintenance::open(config(), store.clone()).await.unwrap();
    let pass = maintenance.compact_pass().await.unwrap();
    assert!(pass.failed.is_empty(), "{:?}", pass.failed);
    assert_eq!((pass.conflicts, pass.stale, pass.more), (0, 0, false));
    // Hour 07, hour 08 and the events of the day before: one merge each.
    assert_eq!(pass.merged.len(), 3, "{:?}", pass.merged);

    let after = live_rows(&store).await;
    assert_eq!(after, before, "every row, every column, once");
    let (_, events_after) = sluice_archive::scan::rows(&store, SplitKind::Events)
        .await
        .unwrap();
    let ids =
        |e: &[split::EventRow]| -> BTreeSet<String> { e.iter().map(|e| e.id.clone()).collect() };
    assert_eq!(ids(&events_after), ids(&events_before));
    assert_eq!(events_after.len(), 4);

    let merged = log_splits_of(&store, 7).await;
    assert_eq!(merged.len(), 1);
    let merged = &merged[0];
    assert_eq!(merged.rows, 240);
    assert_eq!(
        merged.raw_bytes,
        small.iter().map(|s| s.raw_bytes).sum::<u64>()
    );
    assert_eq!(
        merged.min_ts_nanos,
        small.iter().map(|s| s.min_ts_nanos).min().unwrap()
    );
    assert_eq!(
        merged.max_ts_nanos,
        small.iter().map(|s| s.max_ts_nanos).max().unwrap()
    );
    assert_eq!(merged.roles, ["role1", "role2"]);
    assert!(merged.key.starts_with("logs/date=2026-11-21/hour=07/"));
    // The new index finds lines that came from different inputs.
    assert_eq!(assert_index_finds(&store, merged, "round5").await, 20);
    assert_eq!(
        assert_index_finds(&store, merged, "source 2 AND round11").await,
        10
    );

    // One Delta commit per merge: two in `logs`, one in `events`.
    let mut catalog = catalog(&store).await;
    assert_eq!(catalog.version(), version_before + 2);
    assert_eq!(
        table(&store, SplitKind::Events).await.version(),
        events_version_before + 1
    );
    assert!(catalog.state().is_line_archived(1, 0), "ranges untouched");
    for split in &small {
        assert!(catalog.state().removed_splits().contains_key(&split.key));
    }
    let metrics = maintenance.metrics();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&metrics.compactions), 3);
    assert_eq!(load(&metrics.rows_merged), 252);
    assert_eq!(load(&metrics.live_splits), 3);

    // Nothing left to merge; the inputs' objects stay for the grace
    // period, then the janitor deletes them and only the live ones remain.
    assert!(maintenance.plan_compaction().await.unwrap().is_empty());
    let mut events = table(&store, SplitKind::Events).await;
    let later = SystemTime::now() + GRACE + Duration::from_secs(60);
    let mut all_live = BTreeSet::new();
    for table in [&mut catalog, &mut events] {
        assert!(table.delete_orphans(GRACE).await.unwrap().is_empty());
        let deleted = table.delete_orphans_at(later, GRACE).await.unwrap();
        let (live, removed) = referenced(table);
        assert_eq!(deleted.len(), removed.len());
        all_live.extend(live);
    }
    assert_eq!(objects(&store).await, all_live);
    assert_eq!(live_rows(&store).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_either_step_loses_and_doubles_nothing() {
    for step in [Step::Uploaded, Step::Committed] {
        let store = memory_store();
        seed_hour(&store, 5).await;
        let before = live_rows(&store).await;
        let objects_before = objects(&store).await;

        let mut maintenance = Maintenance::open(config(), store.clone()).await.unwrap();
        maintenance.on_step(move |at| {
            if at == step {
                panic!("crash at {at:?}");
            }
        });
        let crashed = tokio::spawn(async move { maintenance.compact_pass().await }).await;
        assert!(crashed.unwrap_err().is_panic());
        // Readers see the old splits or the merged one: the same rows.
        assert_eq!(live_rows(&store).await, before, "{step:?}");
        let mut catalog = catalog(&store).await;
        let (live, removed) = referenced(&catalog);
        let now = objects(&store).await;
        match step {
            Step::Uploaded => {
                assert_eq!(live, objects_before);
                assert_eq!(
                    now.difference(&live).count(),
                    2,
                    "the merged split's objects"
                );
            }
            Step::Committed => {
                assert_eq!(log_splits_of(&store, 7).await.len(), 1);
                assert_eq!(removed, objects_before);
            }
        }
        // The janitor spares them within the grace period, then removes
        // exactly what nothing live references.
        assert!(catalog.delete_orphans(GRACE).await.unwrap().is_empty());
        let later = SystemTime::now() + GRACE + Duration::from_secs(60);
        catalog.delete_orphans_at(later, GRACE).await.unwrap();
        let (live, _) = referenced(&catalog);
        assert_eq!(objects(&store).await, live);
        assert_eq!(live_rows(&store).await, before);

        // A fresh run finishes the work.
        let mut again = Maintenance::open(config(), store.clone()).await.unwrap();
        again.compact_pass().await.unwrap();
        assert_eq!(log_splits_of(&store, 7).await.len(), 1);
        assert_eq!(live_rows(&store).await, before);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compactors_and_retention_never_double_or_lose_a_row() {
    let store = memory_store();
    seed_hour(&store, 6).await;
    let before = live_rows(&store).await;
    let mut a = Maintenance::open(config(), store.clone()).await.unwrap();
    let mut b = Maintenance::open(config(), store.clone()).await.unwrap();

    // The same job planned by both: one merges, the other finds its input
    // gone (at commit, or already when it starts).
    let jobs_a = a.plan_compaction().await.unwrap();
    let jobs_b = b.plan_compaction().await.unwrap();
    assert_eq!(jobs_a, jobs_b);
    assert_eq!(jobs_a.len(), 1);
    let (ra, rb) = tokio::join!(a.compact(&jobs_a[0]), b.compact(&jobs_b[0]));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    let merged = outcomes
        .iter()
        .filter(|o| matches!(o, MergeOutcome::Merged(_)))
        .count();
    assert_eq!(merged, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, MergeOutcome::Conflict | MergeOutcome::Stale))
    );
    assert_eq!(live_rows(&store).await, before);
    let catalog_now = catalog(&store).await;
    let (live, removed) = referenced(&catalog_now);
    let all: BTreeSet<String> = live.union(&removed).cloned().collect();
    assert_eq!(
        objects(&store).await,
        all,
        "the loser's objects are deleted"
    );

    // Overlapping jobs (built by hand, as two maintainers with different
    // limits would plan them) while retention removes every batch split.
    let mut more = Vec::new();
    let mut rows_of: BTreeMap<String, BTreeSet<(u64, u64)>> = BTreeMap::new();
    for i in 0..4 {
        let split = add_split(&store, rows(3, "batch/prod/x", i * 20..(i + 1) * 20, T0)).await;
        rows_of.insert(
            split.key.clone(),
            (i * 20..(i + 1) * 20).map(|o| (3, o * 100)).collect(),
        );
        more.push(split);
    }
    let key = |r: &LogRow| (r.source.source_id, r.offset);
    let before: BTreeSet<(u64, u64)> = live_rows(&store).await.iter().map(key).collect();
    let job = |inputs: &[SplitEntry]| CompactionJob {
        kind: SplitKind::Logs,
        date: "2026-11-21".into(),
        hour: Some(7),
        inputs: inputs.to_vec(),
    };
    let mut retention = Maintenance::open(
        MaintenanceConfig {
            retention: RetentionConfig {
                roles: [("batch".to_string(), 3600)].into(),
                ..RetentionConfig::default()
            },
            ..config()
        },
        store.clone(),
    )
    .await
    .unwrap();
    let (job_a, job_b) = (job(&more[0..3]), job(&more[2..4]));
    let (ra, rb, rr) = tokio::join!(
        a.compact(&job_a),
        b.compact(&job_b),
        retention.retention_pass()
    );
    let (ra, rb, rr) = (ra.unwrap(), rb.unwrap(), rr.unwrap());
    assert!(
        !matches!(
            (&ra, &rb),
            (MergeOutcome::Merged(_), MergeOutcome::Merged(_))
        ),
        "two merges sharing an input both committed: {ra:?} {rb:?}"
    );
    for outcome in [&ra, &rb] {
        if let MergeOutcome::Merged(report) = outcome {
            let rows: BTreeSet<(u64, u64)> = report
                .inputs
                .iter()
                .flat_map(|k| rows_of[k].iter().copied())
                .collect();
            rows_of.insert(report.output.key.clone(), rows);
        }
    }
    // Exactly the rows before, less those of the splits retention removed
    // (inputs, or a merged split as a whole): none twice, none revived.
    let gone: BTreeSet<(u64, u64)> = rr
        .removed
        .iter()
        .flat_map(|s| rows_of[&s.key].iter().copied())
        .collect();
    let after: Vec<(u64, u64)> = live_rows(&store).await.iter().map(key).collect();
    let want: Vec<(u64, u64)> = before.difference(&gone).copied().collect();
    assert_eq!(after, want);
    let catalog_now = catalog(&store).await;
    let (live, removed) = referenced(&catalog_now);
    let all: BTreeSet<String> = live.union(&removed).cloned().collect();
    assert_eq!(
        objects(&store).await,
        all,
        "dropped merges leave no objects"
    );
}

/// The loser of a race found out at its commit: its inputs were live when
/// it started, another merge committed while it uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merge_that_loses_at_commit_deletes_its_objects() {
    let store = memory_store();
    seed_hour(&store, 4).await;
    let before = live_rows(&store).await;
    let objects_before = objects(&store).await;
    let mut winner = Maintenance::open(config(), store.clone()).await.unwrap();
    let mut loser = Maintenance::open(config(), store.clone()).await.unwrap();
    let job = loser.plan_compaction().await.unwrap().remove(0);
    let (uploaded, mut has_uploaded) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    loser.on_step(move |step| {
        if step == Step::Uploaded {
            uploaded.send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
    });
    let metrics = loser.metrics();
    let losing_job = job.clone();
    let losing = tokio::spawn(async move { loser.compact(&losing_job).await });
    has_uploaded.recv().await.unwrap();
    assert_eq!(objects(&store).await.len(), objects_before.len() + 2);
    assert!(matches!(
        winner.compact(&job).await.unwrap(),
        MergeOutcome::Merged(_)
    ));
    release.send(()).unwrap();
    assert_eq!(losing.await.unwrap().unwrap(), MergeOutcome::Conflict);
    assert_eq!(
        metrics.conflicts.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(live_rows(&store).await, before);
    let (live, removed) = referenced(&catalog(&store).await);
    assert_eq!(removed, objects_before);
    let all: BTreeSet<String> = live.union(&removed).cloned().collect();
    assert_eq!(
        objects(&store).await,
        all,
        "the loser's objects are deleted"
    );
}

#[tokio::test]
async fn retention_removes_old_splits_only() {
    let store = memory_store();
    let now = now_nanos();
    let www_40d = add_split(&store, rows(1, "www/prod/web", 0..10, now - 40 * DAY)).await;
    let www_20d = add_split(&store, rows(2, "www/prod/web", 0..10, now - 20 * DAY)).await;
    let batch_8d = add_split(&store, rows(3, "batch/prod/x", 0..10, now - 8 * DAY)).await;
    let batch_6d = add_split(&store, rows(4, "batch/prod/x", 0..10, now - 6 * DAY)).await;
    let mut mixed = rows(5, "batch/prod/x", 0..10, now - 40 * DAY);
    mixed.extend(rows(6, "www/prod/web", 0..10, now - 40 * DAY));
    let mixed_40d = add_split(&store, mixed).await;
    let mut mixed = rows(7, "batch/prod/x", 0..10, now - 10 * DAY);
    mixed.extend(rows(8, "www/prod/web", 0..10, now - 10 * DAY));
    let mixed_10d = add_split(&store, mixed).await;
    let fresh = add_split(&store, rows(9, "batch/prod/x", 0..10, now - HOUR)).await;

    let mut retention = RetentionConfig::with_max_age(Duration::from_secs(30 * 86_400));
    retention.roles.insert("batch".into(), 7 * 86_400);
    let mut maintenance = Maintenance::open(
        MaintenanceConfig {
            retention,
            ..config()
        },
        store.clone(),
    )
    .await
    .unwrap();
    let planned: BTreeSet<String> = maintenance
        .plan_retention()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    let want: BTreeSet<String> = [&www_40d, &batch_8d, &mixed_40d]
        .iter()
        .map(|s| s.key.clone())
        .collect();
    assert_eq!(planned, want);
    let pass = maintenance.retention_pass().await.unwrap();
    let removed: BTreeSet<String> = pass.removed.iter().map(|s| s.key.clone()).collect();
    assert_eq!(removed, want);
    let mut catalog = catalog(&store).await;
    let live: BTreeSet<String> = catalog.state().splits().keys().cloned().collect();
    let kept: BTreeSet<String> = [&www_20d, &batch_6d, &mixed_10d, &fresh]
        .iter()
        .map(|s| s.key.clone())
        .collect();
    assert_eq!(live, kept);
    // The lines stay archived: a resend is still dropped, not re-archived.
    assert!(catalog.state().is_line_archived(1, 0));
    let sources: BTreeSet<u64> = live_rows(&store)
        .await
        .iter()
        .map(|r| r.source.source_id)
        .collect();
    assert_eq!(sources, [2, 4, 7, 8, 9].into());
    let metrics = maintenance.metrics();
    assert_eq!(
        metrics
            .retention_splits_removed
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // Nothing more to do; the objects go after the grace period.
    assert!(
        maintenance
            .retention_pass()
            .await
            .unwrap()
            .removed
            .is_empty()
    );
    let later = SystemTime::now() + GRACE + Duration::from_secs(60);
    let deleted = catalog.delete_orphans_at(later, GRACE).await.unwrap();
    assert_eq!(deleted.len(), 6);
    let (live, _) = referenced(&catalog);
    assert_eq!(objects(&store).await, live);
}

#[tokio::test]
async fn maintenance_runs_in_the_background_until_stopped() {
    let store = memory_store();
    seed_hour(&store, 4).await;
    let old = add_split(&store, rows(9, "www/prod/web", 0..5, T0 - 60 * DAY)).await;
    let before = live_rows(&store).await;
    let mut config = config();
    config.compaction.interval_secs = 1;
    config.retention = RetentionConfig::with_max_age(Duration::from_secs(30 * 86_400));
    let maintenance = Maintenance::open(config, store.clone()).await.unwrap();
    let metrics = maintenance.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(maintenance.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    while load(&metrics.compactions) < 1 || load(&metrics.retention_splits_removed) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "{metrics:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let after = live_rows(&store).await;
    let want: Vec<LogRow> = before
        .into_iter()
        .filter(|r| r.source.source_id != 9)
        .collect();
    assert_eq!(after, want);
    let splits = catalog(&store).await.state().splits().clone();
    assert_eq!(splits.len(), 1);
    assert!(!splits.contains_key(&old.key));
}

/// One compaction and the janitor after it against an S3-compatible
/// server (moto), as on local files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_on_s3() {
    let Some(s3) = sluice_testkit::TestS3::start() else {
        return;
    };
    s3.create_bucket("archive");
    let store = StoreUrl::S3 {
        bucket: "archive".into(),
        prefix: "sluice".into(),
    }
    .open(&s3.settings())
    .unwrap();
    let inputs = seed_hour(&store, 5).await;
    let before = live_rows(&store).await;
    assert_eq!(before.len(), 100);
    let mut maintenance = Maintenance::open(config(), store.clone()).await.unwrap();
    let pass = maintenance.compact_pass().await.unwrap();
    assert_eq!(pass.merged.len(), 1, "{:?}", pass.failed);
    assert_eq!(pass.merged[0].inputs.len(), 5);
    assert_eq!(live_rows(&store).await, before);
    let merged = log_splits_of(&store, 7).await;
    assert_eq!(merged.len(), 1);
    assert_eq!(assert_index_finds(&store, &merged[0], "line 42").await, 1);
    let mut catalog = catalog(&store).await;
    let later = SystemTime::now() + GRACE + Duration::from_secs(60);
    let deleted = catalog.delete_orphans_at(later, GRACE).await.unwrap();
    assert_eq!(deleted.len(), 2 * inputs.len());
    let (live, _) = referenced(&catalog);
    assert_eq!(objects(&store).await, live);
    assert_eq!(live_rows(&store).await, before);
}

#[tokio::test]
async fn a_split_that_does_not_hold_its_rows_is_not_merged() {
    let store = memory_store();
    let splits = seed_hour(&store, 3).await;
    // Damage one input: its file no longer holds what the catalog says.
    let catalog = catalog(&store).await;
    let damaged =
        split::write_log_split(rows(1, "www/prod/web", 0..5, T0), &SplitOptions::default())
            .unwrap();
    store
        .store
        .put(
            &catalog.object_path(&splits[1].key),
            PutPayload::from_bytes(damaged.parquet),
        )
        .await
        .unwrap();
    let mut maintenance = Maintenance::open(config(), store.clone()).await.unwrap();
    let pass = maintenance.compact_pass().await.unwrap();
    assert!(pass.merged.is_empty());
    assert_eq!(pass.failed.len(), 1);
    assert!(
        pass.failed[0].1.contains(&splits[1].key) && pass.failed[0].1.contains("20 rows"),
        "{:?}",
        pass.failed
    );
    // Left alone afterwards (not retried on every pass), nothing uploaded.
    assert!(maintenance.plan_compaction().await.unwrap().is_empty());
    let (live, _) = referenced(&catalog);
    assert_eq!(objects(&store).await, live);
}
