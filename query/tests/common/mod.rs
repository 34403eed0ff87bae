//! Helpers the archive's integration tests share: stores, rows, and
//! splits committed as an archiver would.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sluice_query::catalog::{Catalog, CommitOutcome, SplitEntry, SplitKind};
use sluice_query::split::{self, LogRow, RowSource, SplitOptions};
use sluice_query::store::{Store, StoreUrl};
use sluice_schema::archive::{self, Date};

pub fn memory_store() -> Store {
    Store {
        url: StoreUrl::Memory,
        store: Arc::new(InMemory::new()),
        prefix: Path::default(),
    }
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

pub async fn catalog(store: &Store) -> Catalog {
    Catalog::open(store.store.clone(), &store.prefix)
        .await
        .unwrap()
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
    let ts = rows[0].ts_unix_nanos;
    let (date, hour) = (Date::from_unix_nanos(ts), archive::hour_of(ts));
    let mut catalog = catalog(store).await;
    let mut draft = catalog.draft("test-archiver");
    for row in &rows {
        draft.archive_lines(
            row.source.source_id,
            row.offset,
            row.offset + u64::from(row.raw_len),
        );
    }
    let split = split::write_log_split(rows, &SplitOptions::default()).unwrap();
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
    let roles: BTreeSet<String> = split
        .stats
        .jobs
        .iter()
        .map(|j| archive::split_job(j).0.to_string())
        .collect();
    let entry = SplitEntry {
        key,
        index_key: Some(index_key),
        kind: SplitKind::Logs,
        date: date.to_string(),
        hour: Some(hour),
        rows: split.stats.rows,
        raw_bytes: split.stats.raw_bytes,
        data_bytes: split.stats.parquet_bytes,
        index_bytes: split.stats.index_bytes,
        min_ts_nanos: split.stats.min_ts,
        max_ts_nanos: split.stats.max_ts,
        jobs: split.stats.jobs.iter().cloned().collect(),
        roles: roles.into_iter().collect(),
        created_unix_ms: 1,
    };
    draft.add_split(entry.clone());
    assert!(matches!(
        catalog.commit_rebasing(&mut draft).await.unwrap(),
        CommitOutcome::Committed(_)
    ));
    entry
}
