//! Catalog tests on `InMemory` and `LocalFileSystem`, and on `Flaky`, an
//! `InMemory` that fails chosen calls (some after performing them).

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sluice_schema::topics::Position;

use super::*;

fn split(name: &str) -> SplitEntry {
    let dir = "logs/date=2026-11-03/hour=07";
    SplitEntry {
        key: format!("{dir}/{name}.parquet"),
        index_key: Some(format!("{dir}/{name}.index")),
        kind: SplitKind::Logs,
        date: "2026-11-03".into(),
        hour: Some(7),
        rows: 10,
        raw_bytes: 1_000,
        data_bytes: 300,
        index_bytes: 200,
        min_ts_nanos: 1_000,
        max_ts_nanos: 2_000,
        jobs: vec!["www/prod/web".into()],
        roles: vec!["www".into()],
        created_unix_ms: 1,
        held: Held::default(),
        levels: None,
    }
}

/// Lines `[start, end)` of `source`, held by the draft's last split (what
/// an archiver's split holds) and so archived by the draft.
fn hold_lines(draft: &mut CommitDraft, source: u64, start: u64, end: u64) {
    let last = draft.added.last_mut().expect("a split to hold the lines");
    last.held
        .lines
        .entry(source)
        .or_default()
        .insert(start, end);
    draft.archive_lines(source, start, end);
}

/// An event held by the draft's last split.
fn hold_event(draft: &mut CommitDraft, id: impl Into<String>) -> bool {
    let id = id.into();
    let last = draft.added.last_mut().expect("a split to hold the event");
    last.held.events.insert(&id);
    draft.archive_event(id)
}

fn bus(group: &str, positions: &[(u32, u64)]) -> BusCheckpoint {
    let positions: Vec<Position> = positions
        .iter()
        .map(|&(p, o)| Position::new("sluice.logs", p, o))
        .collect();
    BusCheckpoint::new(group, &positions)
}

fn memory() -> Arc<dyn ObjectStore> {
    Arc::new(InMemory::new())
}

fn root() -> Path {
    Path::default()
}

async fn committed(catalog: &mut Catalog, draft: &CommitDraft) -> Commit {
    match catalog.commit(draft).await.unwrap() {
        CommitOutcome::Committed(commit) => commit,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Commits `n` archiver drafts, each one split, a range of source 1 and an
/// event, with Bus positions.
async fn commit_many(catalog: &mut Catalog, n: u64) {
    for _ in 0..n {
        let v = catalog.version();
        let mut draft = catalog.draft("archiver-a");
        draft.add_split(split(&format!("s{v}")));
        hold_lines(&mut draft, 1, v * 10, v * 10 + 10);
        hold_event(&mut draft, format!("node-1/{v}"));
        draft.set_bus(bus("archiver", &[(0, v + 1)]));
        committed(catalog, &draft).await;
    }
}

async fn round_trip(store: Arc<dyn ObjectStore>, prefix: Path) {
    let mut catalog = Catalog::open(store.clone(), &prefix, SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(catalog.version(), 0);

    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    draft.add_split(split("b"));
    hold_lines(&mut draft, 42, 0, 100);
    hold_lines(&mut draft, 7, 10, 20);
    hold_event(&mut draft, "node-1/1");
    draft.set_bus(bus("archiver", &[(0, 5), (1, 9)]));
    let first = committed(&mut catalog, &draft).await;
    assert_eq!((first.version, first.parent), (1, 0));
    assert_eq!(first.commit_id, draft.commit_id());

    // Compaction: remove both, add their merge, in one commit.
    let mut draft = catalog.draft("compactor");
    draft.rearranges_only();
    draft.remove_split(split("a").key);
    draft.remove_split(split("b").key);
    draft.add_split(split("ab"));
    committed(&mut catalog, &draft).await;

    let reopened = Catalog::open(store.clone(), &prefix, SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(reopened.state(), catalog.state());
    let state = reopened.state();
    assert_eq!(state.version(), 2);
    assert_eq!(
        state.splits().keys().cloned().collect::<Vec<_>>(),
        vec![split("ab").key]
    );
    assert_eq!(state.split(&split("ab").key), Some(&split("ab")));
    assert!(state.removed_splits().contains_key(&split("a").key));
    assert!(state.is_line_archived(42, 0) && state.is_line_archived(42, 99));
    assert!(!state.is_line_archived(42, 100) && !state.is_line_archived(7, 9));
    assert!(state.has_event("node-1/1") && !state.has_event("node-1/2"));
    assert_eq!(
        state.bus_positions("archiver"),
        vec![
            Position::new("sluice.logs", 0, 5),
            Position::new("sluice.logs", 1, 9)
        ]
    );

    // The object is a Delta commit: JSON lines of actions.
    let bytes = store
        .get(&catalog.commit_path(1))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let actions: Vec<serde_json::Value> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |name: &str| -> Vec<&serde_json::Value> {
        actions.iter().filter_map(|a| a.get(name)).collect()
    };
    let info = of("commitInfo")[0];
    assert_eq!(info["sluiceCommitId"], first.commit_id.as_str());
    assert_eq!(info["sluiceWriter"], "archiver-a");
    assert_eq!(info["operation"], "WRITE");
    let adds = of("add");
    assert_eq!(adds.len(), 2);
    assert_eq!(adds[0]["path"], "date=2026-11-03/hour=07/a.parquet");
    assert_eq!(
        adds[0]["partitionValues"],
        serde_json::json!({"date": "2026-11-03", "hour": "7"})
    );
    assert_eq!(adds[0]["dataChange"], true);
    assert_eq!(
        adds[0]["tags"]["sluice.index"],
        "date=2026-11-03/hour=07/a.index"
    );
    let stats: serde_json::Value =
        serde_json::from_str(adds[0]["stats"].as_str().unwrap()).unwrap();
    assert_eq!(stats["numRecords"], 10);
    assert_eq!(stats["minValues"]["ts_nanos"], 1_000);
    assert_eq!(stats["maxValues"]["ts"], "1970-01-01T00:00:00.000002Z");
    // What the draft archived is in its splits' tags.
    let lines: Vec<&str> = adds
        .iter()
        .filter_map(|a| a["tags"]["sluice.lines"].as_str())
        .collect();
    assert_eq!(
        lines,
        [r#"{"0000000000000007":[[10,20]],"000000000000002a":[[0,100]]}"#]
    );
    let txns = of("txn");
    assert_eq!(txns.len(), 2);
    assert_eq!(txns[1]["appId"], "archiver/sluice.logs/1");
    assert_eq!(txns[1]["version"], 9);
    let parsed = delta::decode(&catalog.commit_path(1), SplitKind::Logs, 1, &bytes).unwrap();
    assert_eq!(parsed, first);
    // The compaction's actions change no data.
    let bytes = store
        .get(&catalog.commit_path(2))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(r#""operation":"OPTIMIZE""#), "{text}");
    assert_eq!(text.matches(r#""dataChange":false"#).count(), 3, "{text}");
}

#[tokio::test]
async fn commits_replay_in_memory() {
    round_trip(memory(), root()).await;
    round_trip(memory(), Path::from("archive/prod")).await;
}

#[tokio::test]
async fn commits_replay_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    round_trip(store, root()).await;
    assert!(
        dir.path()
            .join("logs/_delta_log/00000000000000000002.json")
            .is_file()
    );
}

/// Local directories list in no particular order; Delta checkpoints are
/// still written there (delta-rs expects a store's listing sorted).
#[tokio::test]
async fn delta_checkpoints_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let config = CatalogConfig {
        checkpoint_interval: 10,
        ..CatalogConfig::default()
    };
    let mut catalog = Catalog::open_with(store, &root(), SplitKind::Logs, config)
        .await
        .unwrap();
    commit_many(&mut catalog, 61).await;
    let log = dir.path().join("logs/_delta_log");
    for v in (10..=60).step_by(10) {
        let name = format!("{v:020}.checkpoint.parquet");
        assert!(log.join(&name).is_file(), "{name}");
    }
    let last = std::fs::read_to_string(log.join("_last_checkpoint")).unwrap();
    assert!(last.contains("\"version\":60"), "{last}");
}

#[tokio::test]
async fn checkpoint_and_tail_equal_a_full_replay() {
    let store = memory();
    let config = CatalogConfig {
        checkpoint_interval: 5,
        ..CatalogConfig::default()
    };
    let mut catalog = Catalog::open_with(store.clone(), &root(), SplitKind::Logs, config.clone())
        .await
        .unwrap();
    commit_many(&mut catalog, 13).await;
    for v in [5, 10] {
        assert!(store.head(&catalog.checkpoint_path(v)).await.is_ok(), "{v}");
    }
    assert!(store.head(&catalog.checkpoint_path(13)).await.is_err());

    // Delta checkpoints for other engines, at the same versions.
    let table = Path::from("logs/_delta_log");
    for name in [
        "00000000000000000005.checkpoint.parquet",
        "00000000000000000010.checkpoint.parquet",
        "_last_checkpoint",
    ] {
        assert!(
            store.head(&table.clone().join(name)).await.is_ok(),
            "{name}"
        );
    }

    // Only the commits: a full replay.
    let commits_only = memory();
    for v in 0..=13 {
        let path = catalog.commit_path(v);
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        commits_only.put(&path, bytes.into()).await.unwrap();
    }
    let full = Catalog::open(commits_only, &root(), SplitKind::Logs)
        .await
        .unwrap();
    let from_checkpoint = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(full.state(), catalog.state());
    assert_eq!(from_checkpoint.state(), catalog.state());

    // The checkpoint is really used: commits up to 10 are not needed.
    for v in 1..=10 {
        store.delete(&catalog.commit_path(v)).await.unwrap();
    }
    let reopened = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(reopened.state(), catalog.state());
}

#[tokio::test]
async fn a_follower_catches_up_with_refresh() {
    let store = memory();
    let mut writer = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut follower = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap();
    commit_many(&mut writer, 70).await;
    assert_eq!(follower.refresh().await.unwrap(), 70);
    assert_eq!(follower.state(), writer.state());
    assert_eq!(follower.refresh().await.unwrap(), 0);
    commit_many(&mut writer, 1).await;
    assert_eq!(follower.refresh().await.unwrap(), 1);
    assert_eq!(follower.version(), 71);
}

#[tokio::test]
async fn an_unreadable_checkpoint_falls_back_to_an_older_one() {
    let store = memory();
    let config = CatalogConfig {
        checkpoint_interval: 2,
        ..CatalogConfig::default()
    };
    let mut catalog = Catalog::open_with(store.clone(), &root(), SplitKind::Logs, config)
        .await
        .unwrap();
    commit_many(&mut catalog, 5).await;
    let latest = catalog.checkpoint_path(4);
    store.delete(&latest).await.unwrap();
    store.put(&latest, "{not json".into()).await.unwrap();
    let reopened = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(reopened.state(), catalog.state());
}

#[tokio::test]
async fn racing_writers_one_wins_the_other_conflicts() {
    let store = memory();
    let mut a = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut b = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();

    let mut mine = a.draft("archiver-a");
    mine.add_split(split("a"));
    hold_lines(&mut mine, 1, 0, 100);
    mine.set_bus(bus("archiver", &[(0, 100)]));

    // b consumed the same partition (a rebalance) and archived overlapping lines.
    let mut same_partition = b.draft("archiver-b");
    same_partition.add_split(split("b"));
    hold_lines(&mut same_partition, 1, 50, 150);
    same_partition.set_bus(bus("archiver", &[(0, 150)]));

    // b also has a draft on another partition and another source.
    let mut other_partition = b.draft("archiver-b");
    other_partition.add_split(split("c"));
    hold_lines(&mut other_partition, 2, 0, 10);
    other_partition.set_bus(bus("archiver", &[(1, 10)]));

    let won = committed(&mut a, &mine).await;
    assert_eq!(won.version, 1);

    let CommitOutcome::Conflict { theirs } = b.commit(&same_partition).await.unwrap() else {
        panic!("b must lose the race");
    };
    assert_eq!(theirs, vec![won.clone()]);
    assert!(same_partition.conflicts_with(&theirs[0]));
    assert!(!other_partition.conflicts_with(&theirs[0]));
    assert_eq!(b.version(), 1);

    // The losing draft is never committed, even by commit_rebasing.
    let mut again = same_partition.clone();
    assert!(matches!(
        b.commit_rebasing(&mut again).await.unwrap(),
        CommitOutcome::Conflict { .. }
    ));
    // The disjoint one is rebased and committed.
    let mut disjoint = other_partition.clone();
    let CommitOutcome::Committed(commit) = b.commit_rebasing(&mut disjoint).await.unwrap() else {
        panic!("a disjoint draft commits after a rebase");
    };
    assert_eq!((commit.version, commit.parent), (2, 1));
    a.refresh().await.unwrap();
    assert_eq!(a.state(), b.state());
    assert!(a.state().split(&split("b").key).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_one_version_make_one_commit() {
    let store = memory();
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut catalog = Catalog::open(store, &root(), SplitKind::Logs)
                .await
                .unwrap();
            let mut draft = catalog.draft(format!("archiver-{i}"));
            draft.add_split(split(&format!("s{i}")));
            hold_lines(&mut draft, 1, 0, 10);
            barrier.wait().await;
            catalog.commit(&draft).await.unwrap()
        }));
    }
    let mut wins = 0;
    for task in tasks {
        if let CommitOutcome::Committed(c) = task.await.unwrap() {
            assert_eq!(c.version, 1);
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    let catalog = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(catalog.version(), 1);
    assert_eq!(catalog.state().splits().len(), 1);
}

fn commit_of(version: u64, f: impl FnOnce(&mut Commit)) -> Commit {
    let mut commit = Commit {
        format: FORMAT,
        version,
        parent: version - 1,
        commit_id: format!("c{version}"),
        writer: "other".into(),
        created_unix_ms: 1,
        added: vec![],
        removed: vec![],
        bus: None,
        archived: BTreeMap::new(),
        event_ids: vec![],
        data_change: true,
    };
    f(&mut commit);
    commit
}

#[tokio::test]
async fn the_conflict_rule() {
    let mut catalog = Catalog::open(memory(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut seed = catalog.draft("seed");
    seed.add_split(split("old"));
    seed.set_bus(bus("archiver", &[(0, 100), (1, 50)]));
    committed(&mut catalog, &seed).await;

    let mut draft = catalog.draft("archiver-a");
    draft.set_bus(bus("archiver", &[(0, 200)]));
    draft.remove_split(split("old").key);
    draft.add_split(split("new"));
    hold_lines(&mut draft, 9, 100, 200);
    hold_event(&mut draft, "node-1/7");
    let after = |f: fn(&mut Commit)| commit_of(2, f);

    // Bus: the same partition moved past the base → conflict; not moved,
    // another partition, another group → none.
    assert!(draft.conflicts_with(&after(|c| c.bus = Some(bus("archiver", &[(0, 101)])))));
    assert!(!draft.conflicts_with(&after(|c| c.bus = Some(bus("archiver", &[(0, 100)])))));
    assert!(!draft.conflicts_with(&after(|c| c.bus = Some(bus("archiver", &[(1, 60)])))));
    assert!(!draft.conflicts_with(&after(|c| c.bus = Some(bus("other", &[(0, 500)])))));
    // Lines: overlapping ranges of the same source only.
    let ranges = |pairs: &[(u64, u64)]| pairs.iter().copied().collect::<RangeSet>();
    assert!(draft.conflicts_with(&after(|c| {
        c.archived.insert(9, [(150, 151)].into_iter().collect());
    })));
    assert!(!draft.conflicts_with(&commit_of(2, |c| {
        c.archived.insert(9, ranges(&[(0, 100), (200, 300)]));
        c.archived.insert(8, ranges(&[(100, 200)]));
    })));
    // Events, removals, added keys.
    assert!(draft.conflicts_with(&after(|c| c.event_ids = vec!["node-1/7".into()])));
    assert!(!draft.conflicts_with(&after(|c| c.event_ids = vec!["node-1/8".into()])));
    assert!(draft.conflicts_with(&after(|c| c.removed = vec![split("old").key])));
    assert!(draft.conflicts_with(&after(|c| c.added = vec![split("new")])));
    assert!(!draft.conflicts_with(&after(|c| c.added = vec![split("other")])));
    // A commit the draft was based on never conflicts.
    assert!(!draft.conflicts_with(&commit_of(1, |c| c.removed = vec![split("old").key])));
}

#[tokio::test]
async fn a_put_that_landed_despite_an_error_is_recognized() {
    let (flaky, faults) = Flaky::with_faults();
    let mut catalog = Catalog::open(flaky.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    catalog.create_table().await.unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    faults.land_then_fail.store(1, SeqCst);
    let commit = committed(&mut catalog, &draft).await;
    assert_eq!(commit.version, 1);
    assert_eq!(faults.land_then_fail.load(SeqCst), 0, "the fault fired");
    // One commit, not two.
    let reopened = Catalog::open(flaky, &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(reopened.version(), 1);
    assert_eq!(reopened.state(), catalog.state());
}

#[tokio::test]
async fn a_put_that_failed_is_put_again() {
    let (flaky, faults) = Flaky::with_faults();
    let mut catalog = Catalog::open(flaky.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    catalog.create_table().await.unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    faults.fail_before.store(2, SeqCst);
    assert_eq!(committed(&mut catalog, &draft).await.version, 1);
    assert_eq!(faults.fail_before.load(SeqCst), 0);
    assert_eq!(
        Catalog::open(flaky, &root(), SplitKind::Logs)
            .await
            .unwrap()
            .version(),
        1
    );
}

#[tokio::test]
async fn a_lost_answer_is_found_by_the_next_call() {
    let (flaky, faults) = Flaky::with_faults();
    let config = CatalogConfig {
        retry_attempts: 2,
        retry_initial_backoff_ms: 1,
        retry_max_backoff_ms: 2,
        ..CatalogConfig::default()
    };
    let mut catalog = Catalog::open_with(flaky.clone(), &root(), SplitKind::Logs, config.clone())
        .await
        .unwrap();
    catalog.create_table().await.unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    // The put lands but fails, and reading it back fails too: unknown.
    faults.land_then_fail.store(1, SeqCst);
    faults.fail_gets.store(100, SeqCst);
    let e = catalog.commit(&draft).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    faults.fail_gets.store(0, SeqCst);
    // Same draft again: found in the log, not committed twice.
    assert_eq!(committed(&mut catalog, &draft).await.version, 1);
    assert_eq!(catalog.version(), 1);

    // Another writer moved on meanwhile: still recognized as ours.
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("b"));
    faults.land_then_fail.store(1, SeqCst);
    faults.fail_gets.store(100, SeqCst);
    assert!(catalog.commit(&draft).await.is_err());
    faults.fail_gets.store(0, SeqCst);
    let mut other = Catalog::open_with(flaky.clone(), &root(), SplitKind::Logs, config)
        .await
        .unwrap();
    let mut theirs = other.draft("archiver-b");
    theirs.add_split(split("c"));
    committed(&mut other, &theirs).await;
    catalog.refresh().await.unwrap();
    assert_eq!(catalog.version(), 3);
    assert_eq!(committed(&mut catalog, &draft).await.version, 2);
}

#[tokio::test]
async fn a_failed_checkpoint_is_harmless() {
    let (flaky, faults) = Flaky::with_faults();
    faults.fail_checkpoints.store(true, SeqCst);
    let config = CatalogConfig {
        checkpoint_interval: 2,
        retry_attempts: 2,
        retry_initial_backoff_ms: 1,
        retry_max_backoff_ms: 2,
        ..CatalogConfig::default()
    };
    let mut catalog = Catalog::open_with(flaky.clone(), &root(), SplitKind::Logs, config)
        .await
        .unwrap();
    commit_many(&mut catalog, 5).await;
    assert!(flaky.head(&catalog.checkpoint_path(2)).await.is_err());
    let reopened = Catalog::open(flaky, &root(), SplitKind::Logs)
        .await
        .unwrap();
    assert_eq!(reopened.state(), catalog.state());
}

#[tokio::test]
async fn a_corrupt_commit_is_an_error_naming_it() {
    let store = memory();
    let mut catalog = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    commit_many(&mut catalog, 1).await;
    let path = catalog.commit_path(2);
    store.put(&path, "{\"version\": 2,".into()).await.unwrap();
    let e = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("logs/_delta_log/00000000000000000002.json"),
        "{e}"
    );
    assert!(catalog.refresh().await.is_err());
    // An add with a bad tag is corrupt too, naming the line and the tag.
    store.delete(&path).await.unwrap();
    let bad = r#"{"add":{"path":"date=2026-11-03/hour=07/x.parquet","partitionValues":{"date":"2026-11-03","hour":"7"},"size":1,"modificationTime":1,"dataChange":true,"tags":{"sluice.min_ts":"soon"}}}"#;
    store.put(&path, bad.into()).await.unwrap();
    let e = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("00000000000000000002.json"), "{e}");
    assert!(
        e.to_string().contains("line 1") && e.to_string().contains("sluice.min_ts"),
        "{e}"
    );
}

#[tokio::test]
async fn a_gap_in_versions_is_an_error_naming_it() {
    let store = memory();
    let mut catalog = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    commit_many(&mut catalog, 3).await;
    store.delete(&catalog.commit_path(2)).await.unwrap();
    let e = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Gap { missing: 2, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("logs/_delta_log/00000000000000000002.json"),
        "{e}"
    );
}

#[tokio::test]
async fn a_newer_protocol_is_refused() {
    let store = memory();
    let mut catalog = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    commit_many(&mut catalog, 1).await;
    // Another engine turned on deletion vectors: its files no longer mean
    // what they say without them.
    let upgrade = r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}"#;
    store
        .put(&catalog.commit_path(2), upgrade.into())
        .await
        .unwrap();
    let e = Catalog::open(store, &root(), SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedFormat { format: 3, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn a_table_of_another_kind_or_an_old_archive_is_refused() {
    let store = memory();
    let mut logs = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    logs.create_table().await.unwrap();
    // The events table's folder holding a logs table.
    let bytes = store
        .get(&logs.commit_path(0))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store
        .put(
            &Path::from("events/_delta_log/00000000000000000000.json"),
            bytes.into(),
        )
        .await
        .unwrap();
    let e = Catalog::open(store, &root(), SplitKind::Events)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not Sluice's events table"), "{e}");

    let old = memory();
    old.put(
        &Path::from("_catalog/commits/00000000000000000001.json"),
        "{}".into(),
    )
    .await
    .unwrap();
    let e = Catalog::open(old.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Legacy { .. }), "{e}");
    assert!(e.to_string().contains("sluice archive migrate"), "{e}");
    old.put(&Path::from("_catalog/MIGRATED"), "done".into())
        .await
        .unwrap();
    Catalog::open(old, &root(), SplitKind::Logs).await.unwrap();
}

#[tokio::test]
async fn drafts_are_checked_against_the_state() {
    let mut catalog = Catalog::open(memory(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    hold_lines(&mut draft, 1, 0, 100);
    hold_lines(&mut draft, 1, 200, 300);
    hold_event(&mut draft, "e1");
    committed(&mut catalog, &draft).await;

    let invalid = |f: fn(&mut CommitDraft)| {
        let mut d = catalog.draft("archiver-a");
        f(&mut d);
        d
    };
    for (draft, why) in [
        (invalid(|_| {}), "nothing to commit"),
        (invalid(|d| d.remove_split("logs/nope")), "not live"),
        (
            invalid(|d| d.add_split(split("a"))),
            "already in the catalog",
        ),
        (
            invalid(|d| {
                d.add_split(split("c"));
                hold_lines(d, 1, 99, 101);
            }),
            "already archived",
        ),
        (
            invalid(|d| {
                d.add_split(split("d"));
                hold_event(d, "e1");
            }),
            "event e1",
        ),
        (
            invalid(|d| d.archive_lines(5, 0, 10)),
            "archived by no split",
        ),
    ] {
        let e = catalog.commit(&draft).await.unwrap_err();
        assert!(matches!(e, Error::InvalidDraft(_)), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    // The gap [100, 200) is filled later: exact dedup, not a high-water mark.
    let mut fill = catalog.draft("archiver-a");
    fill.add_split(split("fill"));
    hold_lines(&mut fill, 1, 100, 200);
    committed(&mut catalog, &fill).await;
    assert_eq!(
        catalog.state().archived(1).unwrap().to_vec(),
        vec![(0, 300)]
    );
}

#[tokio::test]
async fn an_old_draft_is_refused() {
    let mut catalog = Catalog::open(memory(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(split("a"));
    draft.set_started_unix_ms(draft.started_unix_ms() - 31 * 60 * 1000);
    let e = catalog.commit(&draft).await.unwrap_err();
    assert!(matches!(e, Error::DraftExpired { .. }), "{e}");
    assert_eq!(catalog.version(), 0);
}

#[test]
fn event_ids_and_idle_sources_are_forgotten_in_time() {
    const DAY: u64 = 24 * 3600 * 1000;
    let mut state = CatalogState::default();
    let t0 = 1_800_000_000_000;
    state.apply(&commit_of(1, |c| {
        c.created_unix_ms = t0;
        c.event_ids = vec!["old".into()];
        c.archived.insert(1, [(0, 10)].into_iter().collect());
    }));
    state.apply(&commit_of(2, |c| {
        c.created_unix_ms = t0 + 6 * DAY;
        c.event_ids = vec!["new".into()];
        c.archived.insert(2, [(0, 10)].into_iter().collect());
    }));
    assert!(state.has_event("old") && state.has_event("new"));
    state.apply(&commit_of(3, |c| c.created_unix_ms = t0 + 8 * DAY));
    assert!(!state.has_event("old") && state.has_event("new"));
    assert_eq!(state.event_id_count(), 1);
    assert!(state.is_line_archived(1, 5));
    // A checkpoint of this state loads the same (the id index is rebuilt).
    let json = serde_json::to_string(&state).unwrap();
    let back: CatalogState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    assert!(back.has_event("new") && !back.has_event("old"));
    state.apply(&commit_of(4, |c| c.created_unix_ms = t0 + 31 * DAY));
    assert!(!state.is_line_archived(1, 5), "idle 31 days");
    assert!(state.is_line_archived(2, 5), "idle 25 days");
    assert_eq!(state.event_id_count(), 0);
}

#[tokio::test]
async fn orphans_are_deleted_and_needed_objects_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let prefix = Path::from("archive");
    let mut catalog = Catalog::open(store.clone(), &prefix, SplitKind::Logs)
        .await
        .unwrap();
    let hours_ago = |h: u64| SystemTime::now() - Duration::from_secs(h * 3600);
    let write = |key: &str, modified: SystemTime| {
        let path = dir.path().join("archive").join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    };
    let live = split("live");
    let removed = split("removed");
    for key in live.object_keys().chain(removed.object_keys()) {
        write(key, hours_ago(3));
    }
    write(
        "logs/date=2026-11-03/hour=07/failed-attempt.parquet",
        hours_ago(3),
    );
    write(
        "events/date=2026-11-03/failed-attempt.parquet",
        hours_ago(3),
    );
    write(
        "logs/date=2026-11-03/hour=07/in-flight.parquet",
        hours_ago(0),
    );
    write("tmp/not-a-split", hours_ago(3));

    let mut draft = catalog.draft("archiver-a");
    draft.add_split(live.clone());
    draft.add_split(removed.clone());
    committed(&mut catalog, &draft).await;
    let mut retention = catalog.draft("retention");
    retention.remove_split(&removed.key);
    committed(&mut catalog, &retention).await;

    let grace = Duration::from_secs(3600);
    let orphans: Vec<String> = catalog
        .orphans(grace)
        .await
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    // Each table's janitor looks after its own folder only.
    assert_eq!(
        orphans,
        vec!["archive/logs/date=2026-11-03/hour=07/failed-attempt.parquet"]
    );
    let deleted = catalog.delete_orphans(grace).await.unwrap();
    assert_eq!(deleted.len(), 1);
    let mut events = Catalog::open(store.clone(), &prefix, SplitKind::Events)
        .await
        .unwrap();
    let deleted = events.delete_orphans(grace).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert!(
        !dir.path()
            .join("archive/events/date=2026-11-03/failed-attempt.parquet")
            .exists()
    );

    assert!(
        dir.path()
            .join("archive/logs/date=2026-11-03/hour=07/in-flight.parquet")
            .exists()
    );

    // Twenty minutes later the removed split is past `removed_grace_secs`
    // (its objects were written long ago), as `vacuum` would see it.
    let soon = SystemTime::now() + Duration::from_secs(20 * 60);
    let deleted = catalog.delete_orphans_at(soon, grace).await.unwrap();
    let deleted: Vec<String> = deleted.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        deleted,
        vec![
            "archive/logs/date=2026-11-03/hour=07/removed.index".to_string(),
            "archive/logs/date=2026-11-03/hour=07/removed.parquet".to_string(),
        ]
    );

    // Two hours later the object of the draft that never committed is old;
    // the live split, the Delta log, Sluice's state cache and what is
    // outside the table stay.
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let deleted = catalog.delete_orphans_at(later, grace).await.unwrap();
    let deleted: Vec<String> = deleted.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        deleted,
        vec!["archive/logs/date=2026-11-03/hour=07/in-flight.parquet".to_string()]
    );
    for key in live.object_keys() {
        assert!(dir.path().join("archive").join(key).exists(), "{key}");
    }
    assert!(dir.path().join("archive/tmp/not-a-split").exists());
    assert!(
        dir.path()
            .join("archive/logs/_delta_log/00000000000000000001.json")
            .exists()
    );
    // A grace period shorter than twice the draft age is refused.
    let e = catalog.orphans(Duration::from_secs(600)).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[tokio::test]
async fn a_conflicting_drafts_objects_are_discarded() {
    let store = memory();
    let mut a = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut b = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    let mut lost = b.draft("archiver-b");
    lost.add_split(split("b"));
    hold_lines(&mut lost, 1, 0, 10);
    for key in lost.added_object_keys() {
        store.put(&b.object_path(key), "x".into()).await.unwrap();
    }
    let mut won = a.draft("archiver-a");
    won.add_split(split("w"));
    hold_lines(&mut won, 1, 5, 15);
    committed(&mut a, &won).await;
    let CommitOutcome::Conflict { theirs } = b.commit_rebasing(&mut lost).await.unwrap() else {
        panic!("overlapping lines conflict");
    };
    assert!(lost.conflicts_with(&theirs[0]));
    b.discard(&lost).await.unwrap();
    for key in lost.added_object_keys() {
        assert!(store.head(&b.object_path(key)).await.is_err(), "{key}");
    }
}

// ---- Flaky: InMemory with injected transient failures ----

#[derive(Debug, Default)]
struct Faults {
    /// Commit puts that are performed, then reported as failed.
    land_then_fail: AtomicU32,
    /// Commit puts refused without being performed.
    fail_before: AtomicU32,
    /// Gets (and heads) that fail.
    fail_gets: AtomicU32,
    /// Every checkpoint put fails.
    fail_checkpoints: AtomicBool,
}

#[derive(Debug)]
struct Flaky {
    inner: InMemory,
    faults: Arc<Faults>,
}

impl Flaky {
    /// The store and the switches of its faults.
    fn with_faults() -> (Arc<dyn ObjectStore>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let store = Flaky {
            inner: InMemory::new(),
            faults: faults.clone(),
        };
        (Arc::new(store), faults)
    }
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "Flaky",
        source: "injected transient failure".into(),
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

type Fut<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

// `ObjectStore` is an `async_trait`; these are its methods spelled out.
impl ObjectStore for Flaky {
    fn put_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Fut<'at, PutResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            let key = location.as_ref();
            let checkpoint = key.contains("_sluice/state/")
                || key.contains(".checkpoint.")
                || key.ends_with("_last_checkpoint");
            if checkpoint && self.faults.fail_checkpoints.load(SeqCst) {
                return Err(injected());
            }
            // Commits after the table's creation.
            if key.contains("_delta_log/")
                && key.ends_with(".json")
                && !key.ends_with(&format!("{:020}.json", 0))
            {
                if take(&self.faults.fail_before) {
                    return Err(injected());
                }
                if take(&self.faults.land_then_fail) {
                    self.inner.put_opts(location, payload, opts).await?;
                    return Err(injected());
                }
            }
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        opts: PutMultipartOptions,
    ) -> Fut<'at, Box<dyn MultipartUpload>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'l0, 'l1, 'at>(
        &'l0 self,
        location: &'l1 Path,
        options: GetOptions,
    ) -> Fut<'at, GetResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            if take(&self.faults.fail_gets) {
                return Err(injected());
            }
            self.inner.get_opts(location, options).await
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'l0, 'l1, 'at>(
        &'l0 self,
        prefix: Option<&'l1 Path>,
    ) -> Fut<'at, ListResult>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'l0, 'l1, 'l2, 'at>(
        &'l0 self,
        from: &'l1 Path,
        to: &'l2 Path,
        options: CopyOptions,
    ) -> Fut<'at, ()>
    where
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        self.inner.copy_opts(from, to, options)
    }
}

/// A `logs` table created by a build before the parsed columns: the first
/// writer to open it adds them with one `metaData` commit, once.
#[tokio::test]
async fn a_table_of_an_earlier_schema_gets_the_new_columns_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let layout = super::store::Layout::new(&root(), SplitKind::Logs);
    let old_schema = {
        let mut schema: serde_json::Value =
            serde_json::from_str(&delta::schema_string(SplitKind::Logs)).unwrap();
        let fields = schema["fields"].as_array_mut().unwrap();
        fields.retain(|f| {
            !["level", "message", "trace_id", "span_id", "fields"]
                .contains(&f["name"].as_str().unwrap())
        });
        schema.to_string()
    };
    let v0 = String::from_utf8(delta::create_table(SplitKind::Logs, 50, 1)).unwrap();
    let v0 = v0.replace(
        &serde_json::to_string(&delta::schema_string(SplitKind::Logs)).unwrap(),
        &serde_json::to_string(&old_schema).unwrap(),
    );
    assert!(!v0.contains("trace_id"), "the old schema lacks the columns");
    store
        .put(&layout.commit(0), v0.clone().into_bytes().into())
        .await
        .unwrap();

    let mut catalog = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    catalog.create_table().await.unwrap();
    assert_eq!(catalog.version(), 1);
    let v1 = store
        .get(&layout.commit(1))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v1 = std::str::from_utf8(&v1).unwrap();
    assert!(v1.contains(r#""operation":"ADD COLUMNS""#), "{v1}");
    let metadata: serde_json::Value = v1
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|l| l.get("metaData").cloned())
        .unwrap();
    assert_eq!(
        metadata["schemaString"].as_str().unwrap(),
        delta::schema_string(SplitKind::Logs)
    );
    // The table's identity and settings are kept.
    assert!(v0.contains(metadata["id"].as_str().unwrap()));
    assert_eq!(
        metadata["partitionColumns"],
        serde_json::json!(["date", "hour"])
    );
    assert!(store.head(&layout.schema_marker()).await.is_ok());

    // The next writer finds the marker: no second commit.
    let mut again = Catalog::open(store.clone(), &root(), SplitKind::Logs)
        .await
        .unwrap();
    again.create_table().await.unwrap();
    assert!(!again.upgrade_schema().await.unwrap());
    assert_eq!(again.version(), 1);
    // A table this build created needs nothing.
    let fresh: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for kind in SplitKind::ALL {
        let mut catalog = Catalog::open(fresh.clone(), &root(), kind).await.unwrap();
        catalog.create_table().await.unwrap();
        assert_eq!(catalog.version(), 0, "{kind:?}");
    }
    // And it still commits on top of the upgrade.
    let mut draft = again.draft("archiver-a");
    draft.add_split(split("a"));
    assert_eq!(committed(&mut again, &draft).await.version, 2);
}
