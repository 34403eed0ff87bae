//! Archives for tests: stores, rows, and splits committed as an archiver
//! would (without a bus).

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sluice_archive::catalog::{Catalog, CommitOutcome, SplitEntry, SplitKind, split_entry};
use sluice_archive::split::{self, EventRow, LogRow, RowSource, SplitOptions};
use sluice_archive::store::{Store, StoreUrl};
use sluice_schema::archive::{self, Date};

/// An empty in-memory object store with no prefix; each call is a new, separate store.
pub fn memory_store() -> Store {
    Store {
        url: StoreUrl::Memory,
        store: Arc::new(InMemory::new()),
        prefix: Path::default(),
    }
}

pub use sluice_schema::time::now_unix_nanos as now_nanos;

/// Opens the `logs` table's catalog under `store`'s prefix; panics if it
/// cannot.
pub async fn catalog(store: &Store) -> Catalog {
    table(store, SplitKind::Logs).await
}

/// Opens `kind`'s table's catalog under `store`'s prefix; panics if it cannot.
pub async fn table(store: &Store, kind: SplitKind) -> Catalog {
    Catalog::open(store.store.clone(), &store.prefix, kind)
        .await
        .unwrap()
}

/// The live splits of both tables.
pub async fn live_splits(store: &Store) -> Vec<SplitEntry> {
    let mut splits = Vec::new();
    for kind in SplitKind::ALL {
        splits.extend(table(store, kind).await.state().splits().values().cloned());
    }
    splits
}

/// Rows `offsets` of one source, one line per offset, at `ts` onwards.
pub fn rows(source_id: u64, job: &str, offsets: std::ops::Range<u64>, ts: i64) -> Vec<LogRow> {
    let source = Arc::new(RowSource {
        host: "node-1".into(),
        job: job.into(),
        instance: source_id as u32,
        task_id: format!("t-{source_id}"),
        process: "main".into(),
        stream: 1,
        path: "/x/main.stdout".into(),
        source_id,
        labels_json: "{}".into(),
        ..RowSource::default()
    });
    offsets
        .map(|o| LogRow {
            source: source.clone(),
            ts_unix_nanos: ts + o as i64,
            offset: o * 100,
            raw_len: 100,
            text: Bytes::from(format!("source {source_id} line {o} job {job}")),
            partial: false,
            truncated: false,
            unterminated: false,
        })
        .collect()
}

/// Writes `rows` (all in one hour) as a split and commits it as an archiver
/// would: the split and the lines' ranges in one commit.
pub async fn add_split(store: &Store, rows: Vec<LogRow>) -> SplitEntry {
    add_split_as(store, rows, |parquet| parquet).await
}

/// [`add_split`], with the Parquet file as `rewrite` makes it (a file as an
/// older build or another engine wrote it: when the bytes change, the
/// entry knows nothing of the rows' levels, as such a writer's would not).
pub async fn add_split_as(
    store: &Store,
    rows: Vec<LogRow>,
    rewrite: impl FnOnce(Bytes) -> Bytes,
) -> SplitEntry {
    let ts = rows[0].ts_unix_nanos;
    let (date, hour) = (Date::from_unix_nanos(ts), archive::hour_of(ts));
    let mut catalog = catalog(store).await;
    let mut draft = catalog.draft("test-archiver");
    let mut split = split::write_log_split(rows, &SplitOptions::default()).unwrap();
    let written = split.parquet.clone();
    split.parquet = rewrite(split.parquet);
    if split.parquet != written {
        split.stats.levels = None;
    }
    split.stats.parquet_bytes = split.parquet.len() as u64;
    let id = archive::split_id_new(now_nanos());
    let key = archive::log_split_key(date, hour, &id);
    let index_key = archive::log_index_key(date, hour, &id);
    for (k, bytes) in [(&key, &split.parquet), (&index_key, &split.index)] {
        store
            .store
            .put(
                &catalog.object_path(k),
                PutPayload::from_bytes(bytes.clone()),
            )
            .await
            .unwrap();
    }
    let mut entry = split_entry(
        key,
        Some(index_key),
        SplitKind::Logs,
        date,
        Some(hour),
        &split.stats,
    );
    entry.created_unix_ms = 1;
    draft.add_split(entry.clone());
    assert!(matches!(
        catalog.commit_rebasing(&mut draft).await.unwrap(),
        CommitOutcome::Committed(_)
    ));
    // As the table's state keeps it (what it holds is in the state's ranges).
    entry.held = Default::default();
    entry
}

/// Writes `events` (all of one day) as an event split and commits it.
pub async fn add_event_split(store: &Store, events: Vec<EventRow>) -> SplitEntry {
    let date = Date::from_unix_nanos(events[0].ts_unix_nanos);
    let mut catalog = table(store, SplitKind::Events).await;
    let mut draft = catalog.draft("test-archiver");
    let split = split::write_event_split(events, &SplitOptions::default()).unwrap();
    let key = archive::event_split_key(date, &archive::split_id_new(now_nanos()));
    store
        .store
        .put(
            &catalog.object_path(&key),
            PutPayload::from_bytes(split.parquet.clone()),
        )
        .await
        .unwrap();
    let mut entry = split_entry(key, None, SplitKind::Events, date, None, &split.stats);
    draft.add_split(entry.clone());
    assert!(matches!(
        catalog.commit_rebasing(&mut draft).await.unwrap(),
        CommitOutcome::Committed(_)
    ));
    entry.held = Default::default();
    entry
}
