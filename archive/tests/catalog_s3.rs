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
    BusCheckpoint, Catalog, CatalogConfig, CommitOutcome, SplitEntry, SplitKind,
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
    }
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
    let mut a = Catalog::open_with(store.clone(), &prefix, config.clone())
        .await
        .unwrap();
    let mut b = Catalog::open_with(store.clone(), &prefix, config.clone())
        .await
        .unwrap();
    assert_eq!(a.version(), 0);

    let mut mine = a.draft("archiver-a");
    mine.add_split(split("a"));
    mine.archive_lines(1, 0, 100);
    mine.set_bus(bus(0, 100));
    let mut same_partition = b.draft("archiver-b");
    same_partition.add_split(split("b"));
    same_partition.archive_lines(1, 50, 150);
    same_partition.set_bus(bus(0, 150));
    let mut other_partition = b.draft("archiver-b");
    other_partition.add_split(split("c"));
    other_partition.archive_lines(2, 0, 10);
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
    compaction.remove_split(split("a").key);
    compaction.remove_split(split("c").key);
    compaction.add_split(split("ac"));
    assert!(matches!(
        a.commit(&compaction).await.unwrap(),
        CommitOutcome::Committed(_)
    ));

    let reopened = Catalog::open_with(store.clone(), &prefix, config)
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
        "checkpoint of version 2"
    );
    let listed: Vec<_> = store
        .list_with_delimiter(Some(&Path::from("archive/_catalog/commits")))
        .await
        .unwrap()
        .objects;
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn the_janitor_on_s3() {
    let Some(moto) = Moto::start() else { return };
    let store = moto.store("sluice-janitor");
    let prefix = Path::default();
    let mut catalog = Catalog::open(store.clone(), &prefix).await.unwrap();
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
