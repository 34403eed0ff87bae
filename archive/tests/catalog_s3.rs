//! The catalog against an S3-compatible server: moto's (`moto_server`, PyPI
//! `moto[server]`), started per test on a free loopback port and reached
//! through object_store's `AmazonS3` (custom endpoint, plain HTTP,
//! path-style requests). Where moto is not installed the tests skip with a
//! message, unless `SLUICE_REQUIRE_S3=1` makes that a failure. `SLUICE_MOTO`
//! names the server binary if it is not on the `PATH`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_archive::catalog::{
    BusCheckpoint, Catalog, CatalogConfig, CommitDraft, CommitOutcome, Held, SplitEntry, SplitKind,
};
use sluice_schema::topics::Position;

/// moto's S3 server (`sluice_testkit::TestS3`) and an object_store client
/// for one of its buckets.
struct Moto(sluice_testkit::TestS3);

impl Moto {
    fn start() -> Option<Moto> {
        sluice_testkit::TestS3::start().map(Moto)
    }

    fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        self.0.create_bucket(bucket);
        let s3 = AmazonS3Builder::new()
            .with_endpoint(self.0.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_access_key_id("sluice-test")
            .with_secret_access_key("sluice-test")
            .with_bucket_name(bucket)
            .build()
            .expect("S3 store for moto");
        Arc::new(s3)
    }
}

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

/// `split(name)` holding lines `[start, end)` of `source`, archived by the draft.
fn holding(draft: &mut CommitDraft, name: &str, source: u64, start: u64, end: u64) {
    let mut entry = split(name);
    entry
        .held
        .lines
        .entry(source)
        .or_default()
        .insert(start, end);
    draft.add_split(entry);
}

fn bus(partition: u32, offset: u64) -> BusCheckpoint {
    BusCheckpoint::new(
        "archiver",
        &[Position::new("sluice.logs", partition, offset)],
    )
}

#[tokio::test]
async fn commit_conflict_and_replay_on_s3() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("sluice-catalog");
    let prefix = Path::from("archive");
    let config = CatalogConfig {
        checkpoint_interval: 2,
        ..CatalogConfig::default()
    };
    let mut a = Catalog::open_with(store.clone(), &prefix, SplitKind::Logs, config.clone())
        .await
        .unwrap();
    let mut b = Catalog::open_with(store.clone(), &prefix, SplitKind::Logs, config.clone())
        .await
        .unwrap();
    assert_eq!(a.version(), 0);

    let mut mine = a.draft("archiver-a");
    holding(&mut mine, "a", 1, 0, 100);
    mine.set_bus(bus(0, 100));
    let mut same_partition = b.draft("archiver-b");
    holding(&mut same_partition, "b", 1, 50, 150);
    same_partition.set_bus(bus(0, 150));
    let mut other_partition = b.draft("archiver-b");
    holding(&mut other_partition, "c", 2, 0, 10);
    other_partition.set_bus(bus(1, 10));

    let CommitOutcome::Committed(first) = a.commit(&mine).await.unwrap() else {
        panic!("the first writer commits");
    };
    assert_eq!(first.version, 1);
    // b writes the same version: put-if-absent refuses it (412 from S3).
    let CommitOutcome::Conflict { theirs } = b.commit(&same_partition).await.unwrap() else {
        panic!("the second writer of version 1 conflicts");
    };
    assert_eq!(theirs, vec![first]);
    assert!(same_partition.conflicts_with(&theirs[0]));
    assert!(!other_partition.conflicts_with(&theirs[0]));
    let CommitOutcome::Committed(second) = b.commit_rebasing(&mut other_partition).await.unwrap()
    else {
        panic!("a disjoint draft commits after a rebase");
    };
    assert_eq!(second.version, 2);

    // Compaction: remove two, add one, in one commit.
    a.refresh().await.unwrap();
    let mut compaction = a.draft("compactor");
    compaction.rearranges_only();
    compaction.remove_split(split("a").key);
    compaction.remove_split(split("c").key);
    compaction.add_split(split("ac"));
    assert!(matches!(
        a.commit(&compaction).await.unwrap(),
        CommitOutcome::Committed(_)
    ));

    let reopened = Catalog::open_with(store.clone(), &prefix, SplitKind::Logs, config)
        .await
        .unwrap();
    assert_eq!(reopened.version(), 3);
    assert_eq!(reopened.state(), a.state());
    assert_eq!(
        reopened
            .state()
            .splits()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![split("ac").key]
    );
    assert!(reopened.state().is_line_archived(1, 99));
    assert!(!reopened.state().is_line_archived(1, 100));
    assert!(
        store.head(&a.checkpoint_path(2)).await.is_ok(),
        "state cache of version 2"
    );
    let listed: Vec<String> = store
        .list_with_delimiter(Some(&Path::from("archive/logs/_delta_log")))
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|m| m.location.filename().unwrap_or_default().to_string())
        .collect();
    // The table's creation, three commits, and delta-rs's checkpoint of 2
    // (written through the same S3 store).
    for name in [
        "00000000000000000000.json",
        "00000000000000000003.json",
        "00000000000000000002.checkpoint.parquet",
        "_last_checkpoint",
    ] {
        assert!(listed.iter().any(|l| l == name), "{name} in {listed:?}");
    }
    assert_eq!(listed.iter().filter(|l| l.ends_with(".json")).count(), 4);
}

#[tokio::test]
async fn the_janitor_on_s3() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("sluice-janitor");
    let prefix = Path::default();
    let mut catalog = Catalog::open(store.clone(), &prefix, SplitKind::Logs)
        .await
        .unwrap();
    let live = split("live");
    for key in live.object_keys() {
        store
            .put(&catalog.object_path(key), "x".into())
            .await
            .unwrap();
    }
    let orphan = catalog.object_path("logs/date=2026-11-03/hour=07/failed.parquet");
    store.put(&orphan, "x".into()).await.unwrap();
    let mut draft = catalog.draft("archiver-a");
    draft.add_split(live.clone());
    assert!(matches!(
        catalog.commit(&draft).await.unwrap(),
        CommitOutcome::Committed(_)
    ));

    let grace = Duration::from_secs(3600);
    assert!(
        catalog.orphans(grace).await.unwrap().is_empty(),
        "all young"
    );
    let later = SystemTime::now() + Duration::from_secs(2 * 3600);
    let deleted = catalog.delete_orphans_at(later, grace).await.unwrap();
    assert_eq!(deleted, vec![orphan.clone()]);
    assert!(store.head(&orphan).await.is_err());
    for key in live.object_keys() {
        assert!(store.head(&catalog.object_path(key)).await.is_ok(), "{key}");
    }
}
