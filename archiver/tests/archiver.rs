//! The archiver between a real (embedded) bus and a real (local) store:
//! every line exactly once in the splits, whatever is sent twice or read
//! again, events once per id, and splits that land in their hour.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use prost::Message as _;
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archive::split::rows::{event_rows_from_batch, log_rows_from_batch};
use sluice_archive::store::{Store, StoreUrl};
use sluice_archiver::{Archiver, ArchiverConfig};
use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, EmbeddedConfig, Record};
use sluice_schema::pb::{ClusterEvent, EventKind, Line, LogChunk, Source};
use sluice_schema::topics;

const HOUR: i64 = 3600 * 1_000_000_000;
/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400 * 1_000_000_000;

fn chunk(source_id: u64, instance: u32, lines: &[(u64, &str, i64)]) -> LogChunk {
    LogChunk {
        source: Some(Source {
            host: "node-1".into(),
            job: "www/prod/web".into(),
            instance,
            task_id: format!("t-{instance}"),
            process: "main".into(),
            stream: 1,
            source_id,
            ..Default::default()
        }),
        lines: lines
            .iter()
            .map(|(offset, text, ts)| Line {
                offset: *offset,
                raw_len: text.len() as u32 + 1,
                ts_unix_nanos: *ts,
                text: Bytes::copy_from_slice(text.as_bytes()),
                ..Default::default()
            })
            .collect(),
        shipped_at_unix_nanos: T0,
    }
}

/// Consecutive lines of one source from `first` (offsets follow the text).
fn lines(prefix: &str, range: std::ops::Range<usize>, ts: i64) -> Vec<(u64, String, i64)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for i in 0..range.end {
        let text = format!("{prefix} {i}");
        if i >= range.start {
            out.push((offset, text.clone(), ts + i as i64));
        }
        offset += text.len() as u64 + 1;
    }
    out
}

async fn publish(bus: &Arc<dyn Bus>, chunk: &LogChunk) {
    let record = Record::new(topics::chunk_key(chunk), chunk.encode_to_vec(), 0);
    bus.send(topics::LOGS, record).await.unwrap().await.unwrap();
}

async fn publish_event(bus: &Arc<dyn Bus>, id: &str) {
    let event = ClusterEvent {
        id: id.into(),
        ts_unix_nanos: T0,
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

struct World {
    _dir: tempfile::TempDir,
    bus: Arc<dyn Bus>,
    store: Store,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let bus: Arc<dyn Bus> = Arc::new(
            EmbeddedBus::open(&dir.path().join("bus"), EmbeddedConfig::default()).unwrap(),
        );
        let store = StoreUrl::File(dir.path().join("archive"))
            .open(&[])
            .unwrap();
        World {
            _dir: dir,
            bus,
            store,
        }
    }

    async fn archiver(&self) -> Archiver {
        let config = ArchiverConfig {
            cut_ms: 100,
            ..ArchiverConfig::default()
        };
        Archiver::open(config, self.bus.clone(), self.store.clone())
            .await
            .unwrap()
    }

    /// Polls until nothing new arrives for a while, then commits.
    async fn drain(&self, archiver: &mut Archiver) {
        for _ in 0..10 {
            archiver.step().await.unwrap();
        }
        archiver.flush().await.unwrap();
    }

    /// Every archived line as (source_id, offset) → text, with a count of
    /// duplicates; and the events' ids.
    /// Reads both tables; returns the `logs` table's catalog.
    async fn archived(&self) -> (BTreeMap<(u64, u64), String>, usize, Vec<String>, Catalog) {
        let mut lines = BTreeMap::new();
        let mut duplicates = 0;
        let mut events = Vec::new();
        let events_table = Catalog::open(
            self.store.store.clone(),
            &self.store.prefix,
            SplitKind::Events,
        )
        .await
        .unwrap();
        let catalog = Catalog::open(
            self.store.store.clone(),
            &self.store.prefix,
            SplitKind::Logs,
        )
        .await
        .unwrap();
        let splits: Vec<_> = catalog
            .state()
            .splits()
            .values()
            .chain(events_table.state().splits().values())
            .cloned()
            .collect();
        for split in &splits {
            let bytes = self
                .store
                .store
                .get(&catalog.object_path(&split.key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                match split.kind {
                    SplitKind::Logs => {
                        for row in log_rows_from_batch(&batch).unwrap() {
                            let key = (row.source.source_id, row.offset);
                            let text = String::from_utf8(row.text.to_vec()).unwrap();
                            if lines.insert(key, text).is_some() {
                                duplicates += 1;
                            }
                        }
                    }
                    SplitKind::Events => {
                        for row in event_rows_from_batch(&batch).unwrap() {
                            events.push(ClusterEvent::from(row).id);
                        }
                    }
                }
            }
        }
        (lines, duplicates, events, catalog)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_once_whatever_is_sent_twice() {
    let world = World::new();
    let a = lines("a", 0..100, T0);
    let b = lines("b", 0..50, T0 + HOUR);
    let as_refs = |v: &[(u64, String, i64)]| -> Vec<(u64, String, i64)> { v.to_vec() };
    let to_chunk = |id, instance, v: &[(u64, String, i64)]| {
        let refs: Vec<(u64, &str, i64)> =
            v.iter().map(|(o, t, ts)| (*o, t.as_str(), *ts)).collect();
        chunk(id, instance, &refs)
    };
    publish(&world.bus, &to_chunk(1, 0, &as_refs(&a[..60]))).await;
    publish(&world.bus, &to_chunk(2, 1, &b)).await;
    // A shipper restarted from an older checkpoint sends lines again.
    publish(&world.bus, &to_chunk(1, 0, &a[40..])).await;
    publish_event(&world.bus, "n1/1").await;
    publish_event(&world.bus, "n1/1").await;
    let mut archiver = world.archiver().await;
    world.drain(&mut archiver).await;

    // Sent again after they were archived, and the same records read again
    // by a new archiver (as after a crash before the bus commit).
    publish(&world.bus, &to_chunk(2, 1, &b[10..20])).await;
    publish_event(&world.bus, "n1/1").await;
    world.drain(&mut archiver).await;
    drop(archiver);
    let mut again = world.archiver().await;
    world.drain(&mut again).await;

    let (archived, duplicates, events, catalog) = world.archived().await;
    assert_eq!(duplicates, 0);
    assert_eq!(archived.len(), 150);
    for (offset, text, _) in &a {
        assert_eq!(archived.get(&(1, *offset)), Some(text));
    }
    for (offset, text, _) in &b {
        assert_eq!(archived.get(&(2, *offset)), Some(text));
    }
    assert_eq!(events, ["n1/1"]);
    // Lines of two hours, in splits of their own hour.
    let hours: std::collections::BTreeSet<Option<u8>> = catalog
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs)
        .map(|s| s.hour)
        .collect();
    assert_eq!(hours.len(), 2, "{hours:?}");
    for split in catalog.state().splits().values() {
        assert!(
            split.key.starts_with(match split.kind {
                SplitKind::Logs => "logs/date=2026-11-21/hour=0",
                SplitKind::Events => "events/date=2026-11-21/",
            }),
            "{}",
            split.key
        );
    }
}

/// Two archivers of one group, stepping at the same time while lines and
/// events arrive, their commits racing for the same table versions: a
/// commit that loses the put-if-absent race is rebased, so every line and
/// event lands once and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_side_by_side_lose_and_double_nothing() {
    let world = World::new();
    let open = |id: &str| {
        let config = ArchiverConfig {
            id: id.into(),
            cut_ms: 100,
            ..ArchiverConfig::default()
        };
        Archiver::open(config, world.bus.clone(), world.store.clone())
    };
    let (mut a, mut b) = (
        open("archiver-a").await.unwrap(),
        open("archiver-b").await.unwrap(),
    );
    let mut sent = BTreeMap::new();
    for round in 0..12u64 {
        let source = round % 3 + 1;
        let batch = lines(&format!("r{round}"), 0..20, T0 + round as i64);
        // Each source's rounds at offsets of their own.
        let first = round / 3 * 100_000;
        let refs: Vec<(u64, &str, i64)> = batch
            .iter()
            .map(|(o, t, ts)| (first + o, t.as_str(), *ts))
            .collect();
        for (offset, text, _) in &refs {
            sent.insert((source, *offset), text.to_string());
        }
        publish(&world.bus, &chunk(source, source as u32, &refs)).await;
        publish_event(&world.bus, &format!("n1/{round}")).await;
        let (x, y) = tokio::join!(a.step(), b.step());
        x.unwrap();
        y.unwrap();
    }
    for _ in 0..2 {
        tokio::join!(world.drain(&mut a), world.drain(&mut b));
    }

    let (archived, duplicates, mut events, _) = world.archived().await;
    assert_eq!(duplicates, 0);
    assert_eq!(archived, sent);
    events.sort();
    let mut expected: Vec<String> = (0..12).map(|r| format!("n1/{r}")).collect();
    expected.sort();
    assert_eq!(events, expected);
    use std::sync::atomic::Ordering::Relaxed;
    let landed =
        a.metrics().lines_archived.load(Relaxed) + b.metrics().lines_archived.load(Relaxed);
    assert_eq!(landed, sent.len() as u64);
    // Both worked: the group gave each its own partitions, and their
    // commits raced for the same table versions.
    assert!(a.metrics().lines_archived.load(Relaxed) > 0);
    assert!(b.metrics().lines_archived.load(Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_filled_later_is_archived_not_dropped() {
    let world = World::new();
    let a = lines("a", 0..30, T0);
    let to_chunk = |v: &[(u64, String, i64)]| {
        let refs: Vec<(u64, &str, i64)> =
            v.iter().map(|(o, t, ts)| (*o, t.as_str(), *ts)).collect();
        chunk(7, 0, &refs)
    };
    // Lines 10..20 failed to reach the bus the first time and come later.
    publish(&world.bus, &to_chunk(&a[..10])).await;
    publish(&world.bus, &to_chunk(&a[20..])).await;
    let mut archiver = world.archiver().await;
    world.drain(&mut archiver).await;
    publish(&world.bus, &to_chunk(&a[5..25])).await;
    world.drain(&mut archiver).await;
    let (archived, duplicates, _, _) = world.archived().await;
    assert_eq!((archived.len(), duplicates), (30, 0));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// One archiver alone never conflicts with itself: each batch's draft is
/// based on the commit of the batch before (a draft based on the version
/// before it claimed the same partitions, conflicted, and the batch was
/// written twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_batches_commit_without_conflicts() {
    let world = World::new();
    let mut archiver = world.archiver().await;
    let metrics = archiver.metrics();
    let all = lines("a", 0..50, T0);
    for batch in all.chunks(10) {
        let refs: Vec<(u64, &str, i64)> = batch
            .iter()
            .map(|(o, t, ts)| (*o, t.as_str(), *ts))
            .collect();
        publish(&world.bus, &chunk(1, 0, &refs)).await;
        world.drain(&mut archiver).await;
    }
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(metrics.conflicts.load(Relaxed), 0);
    assert_eq!(metrics.commits.load(Relaxed), 5);
    assert_eq!(metrics.lines_archived.load(Relaxed), 50);
    let (archived, duplicates, _, catalog) = world.archived().await;
    assert_eq!((archived.len(), duplicates), (50, 0));
    assert_eq!(catalog.version(), 5);
}

/// A role with a retention of its own is archived in splits of its own, so
/// retention can drop them without waiting for the other roles'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_roles_get_splits_of_their_own() {
    let world = World::new();
    let config = ArchiverConfig {
        cut_ms: 100,
        separate_roles: ["batch".to_string()].into(),
        ..ArchiverConfig::default()
    };
    let mut archiver = Archiver::open(config, world.bus.clone(), world.store.clone())
        .await
        .unwrap();
    let mut web = chunk(1, 0, &[(0, "web line", T0)]);
    let mut etl = chunk(2, 0, &[(0, "etl line", T0 + 5)]);
    web.source.as_mut().unwrap().job = "www/prod/web".into();
    etl.source.as_mut().unwrap().job = "batch/dev/etl".into();
    publish(&world.bus, &web).await;
    publish(&world.bus, &etl).await;
    world.drain(&mut archiver).await;
    let (archived, _, _, catalog) = world.archived().await;
    assert_eq!(archived.len(), 2);
    let mut roles: Vec<Vec<String>> = catalog
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs)
        .map(|s| s.roles.clone())
        .collect();
    roles.sort();
    assert_eq!(roles, [vec!["batch".to_string()], vec!["www".to_string()]]);
}
