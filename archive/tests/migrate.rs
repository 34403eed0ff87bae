//! `sluice archive migrate` on an archive the build before Delta Lake wrote
//! (`fixtures/legacy-v1`: that build's archiver and compactor, with the
//! truths it recorded): the tables hold every row once with the same bytes,
//! the old bus positions move to the tables, the old objects go, and a
//! migration stopped after any commit resumes to the same result.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_archive::catalog::{Catalog, SplitKind};
use sluice_archive::migrate::{MIGRATE_GROUP, MigrateOptions, migrate};
use sluice_archive::store::{Store, StoreUrl};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy-v1");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the fixture's archive, and its truths.
fn fixture() -> (tempfile::TempDir, Store, Value) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(FIXTURE).join("archive"),
        &dir.path().join("archive"),
    );
    let store = StoreUrl::File(dir.path().join("archive"))
        .open(&[])
        .unwrap();
    let truths = std::fs::read(Path::new(FIXTURE).join("truths.json")).unwrap();
    (dir, store, serde_json::from_slice(&truths).unwrap())
}

fn digest(mut rows: Vec<String>) -> Value {
    rows.sort();
    let mut h = Sha256::new();
    for r in &rows {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"rows": rows.len(), "sha256": hex})
}

/// What the tables hold, as the fixture's truths say it: per job, rows and
/// a hash of `(source_id, offset, bytes)`; the events' ids.
async fn holdings(store: &Store) -> (Value, Value) {
    let (logs, _) = sluice_archive::scan::rows(store, SplitKind::Logs)
        .await
        .unwrap();
    let (_, events) = sluice_archive::scan::rows(store, SplitKind::Events)
        .await
        .unwrap();
    let mut per_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in logs {
        let hex: String = row.text.iter().map(|b| format!("{b:02x}")).collect();
        per_job
            .entry(row.source.job.clone())
            .or_default()
            .push(format!("{}\t{}\t{hex}", row.source.source_id, row.offset));
    }
    let logs: serde_json::Map<String, Value> = per_job
        .into_iter()
        .map(|(job, rows)| (job, digest(rows)))
        .collect();
    (
        Value::Object(logs),
        digest(events.into_iter().map(|e| e.id).collect()),
    )
}

async fn check_migrated(store: &Store, truths: &Value) {
    let (logs, events) = holdings(store).await;
    assert_eq!(logs, truths["logs"]);
    assert_eq!(events, truths["events"]);
    // The archivers' positions moved into the tables' txns.
    let logs_table = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs)
        .await
        .unwrap();
    assert!(
        !logs_table
            .state()
            .bus_positions("sluice-archiver")
            .is_empty()
    );
    assert_eq!(
        logs_table.state().bus_positions(MIGRATE_GROUP)[0].offset as usize,
        logs_table.state().splits().len(),
        "progress counts every old log split"
    );
    // The old catalog and files are gone.
    let root = match &store.url {
        StoreUrl::File(path) => path.clone(),
        other => panic!("{other}"),
    };
    let left = if root.join("_catalog").exists() {
        walk(&root.join("_catalog"))
    } else {
        vec![]
    };
    assert!(left.is_empty(), "old catalog objects left: {left:?}");
    let live: Vec<String> = logs_table
        .state()
        .splits()
        .values()
        .flat_map(|s| s.object_keys().map(String::from))
        .collect();
    for entry in walk(&root.join("logs")) {
        let key = entry
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if key.contains("/_delta_log/") || key.contains("/_sluice/") {
            continue;
        }
        assert!(live.contains(&key), "{key}: an old or stray object left");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_archive_becomes_two_delta_tables_with_every_row_once() {
    let (_dir, store, truths) = fixture();
    // Before: every reader and writer refuses it, naming the command.
    let e = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sluice archive migrate"), "{e}");

    let report = migrate(&store, Default::default(), &Default::default(), |_| {})
        .await
        .unwrap();
    assert!(report.found);
    assert_eq!(
        report.splits[0] + report.splits[1],
        truths["splits"].as_u64().unwrap() as usize
    );
    assert!(report.bytes_read > 0 && report.bytes_written > 0 && report.deleted > 0);
    check_migrated(&store, &truths).await;
    // Again: nothing to do.
    let again = migrate(&store, Default::default(), &Default::default(), |_| {})
        .await
        .unwrap();
    assert!(!again.found && again.commits == 0);
}

/// Stopped after each commit in turn (the progress callback panics, as a
/// crash would stop it there), then run to the end: the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_stopped_after_any_commit_resumes_exactly() {
    let one_per_commit = MigrateOptions {
        batch_bytes: 1,
        ..MigrateOptions::default()
    };
    let (_full_dir, full, truths) = fixture();
    let report = migrate(&full, Default::default(), &one_per_commit, |_| {})
        .await
        .unwrap();
    // One split per commit, so there is a commit to stop after for every
    // split.
    let commits = report.splits[0] + report.splits[1];
    check_migrated(&full, &truths).await;
    for stop_after in [1, commits / 2, commits] {
        let (_dir, store, _) = fixture();
        let stopping = store.clone();
        let options = one_per_commit.clone();
        let task = tokio::spawn(async move {
            let mut seen = 0;
            migrate(&stopping, Default::default(), &options, |_| {
                seen += 1;
                if seen == stop_after {
                    panic!("stopped after commit {seen}");
                }
            })
            .await
        });
        assert!(task.await.unwrap_err().is_panic());
        let resumed = migrate(&store, Default::default(), &one_per_commit, |_| {})
            .await
            .unwrap();
        assert_eq!(
            resumed.already[0] + resumed.already[1],
            stop_after,
            "resumed where its last commit left it"
        );
        check_migrated(&store, &truths).await;
    }
}
