//! Wire compatibility: the checked-in fixtures are the v1 encoding of a
//! canonical chunk and event. If an edit to the `.proto` files changes how
//! either encodes or decodes, these tests fail; a deliberate, compatible
//! change re-blesses them with `SLUICE_BLESS=1 cargo test -p sluice-schema`.

use std::path::PathBuf;

use proptest::prelude::*;
use prost::Message;
use sluice_schema::pb::{ClusterEvent, EventKind, Layout, Line, LogChunk, Source, Stream};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn canonical_chunk() -> LogChunk {
    LogChunk {
        source: Some(Source {
            host: "node-1".into(),
            job: "www/prod/api".into(),
            instance: 3,
            task_id: "www-prod-api-3-0a1b".into(),
            run: 2,
            process: "server".into(),
            stream: Stream::Stderr as i32,
            path: "/var/lib/sluice/sandboxes/www/prod/api/3/run-2/server.stderr".into(),
            layout: Layout::Native as i32,
            labels: [
                ("zone".to_string(), "b".to_string()),
                ("tier".into(), "web".into()),
            ]
            .into(),
            source_id: 0x0123_4567_89ab_cdef,
        }),
        lines: vec![
            Line {
                offset: 0,
                raw_len: 28,
                ts_unix_nanos: 1_763_700_000_123_456_789,
                text: "GET /health 200 0.4ms ünï".into(),
                ..Default::default()
            },
            Line {
                offset: 28,
                raw_len: 5,
                ts_unix_nanos: 1_763_700_000_223_456_789,
                text: vec![0xff, 0xfe, b'x', 0x00].into(),
                partial: true,
                truncated: true,
                unterminated: true,
            },
        ],
        shipped_at_unix_nanos: 1_763_700_001_000_000_000,
    }
}

fn canonical_event() -> ClusterEvent {
    ClusterEvent {
        id: "node-1/42".into(),
        ts_unix_nanos: 1_763_700_002_000_000_000,
        kind: EventKind::QuotaKill as i32,
        job: "www/prod/api".into(),
        instance: Some(3),
        task_id: "www-prod-api-3-0a1b".into(),
        run: 2,
        host: "node-1".into(),
        actor: "system:disk-watch".into(),
        reason: "disk_quota_exceeded".into(),
        message: "sandbox uses 1100 MiB of its 1024 MiB quota".into(),
        attributes: [("used_bytes".to_string(), "1153433600".to_string())].into(),
    }
}

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, value: &M) {
    let path = fixture(name);
    let encoded = value.encode_to_vec();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &encoded).unwrap();
    }
    let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    assert_eq!(
        M::decode(stored.as_slice()).unwrap(),
        *value,
        "{name} decodes differently"
    );
    assert_eq!(encoded, stored, "{name} encodes differently");
}

#[test]
fn log_chunk_v1_wire_format_is_stable() {
    check("log_chunk.v1.bin", &canonical_chunk());
}

#[test]
fn cluster_event_v1_wire_format_is_stable() {
    check("cluster_event.v1.bin", &canonical_event());
}

#[test]
fn unknown_fields_from_a_newer_writer_are_skipped() {
    let mut bytes = canonical_event().encode_to_vec();
    // Field 99, varint 7: what a later version might add.
    bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
    assert_eq!(
        ClusterEvent::decode(bytes.as_slice()).unwrap(),
        canonical_event()
    );
}

#[test]
fn an_event_without_instance_is_not_instance_zero() {
    let event = ClusterEvent {
        instance: None,
        ..canonical_event()
    };
    let back = ClusterEvent::decode(event.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.instance, None);
}

proptest! {
    #[test]
    fn chunks_round_trip(
        texts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        offset in any::<u64>(),
        labels in prop::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..4),
    ) {
        let mut chunk = canonical_chunk();
        chunk.source.as_mut().unwrap().labels = labels;
        chunk.lines = texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| Line {
                offset: offset.wrapping_add(i as u64 * 1000),
                raw_len: text.len() as u32 + 1,
                text: text.into(),
                partial: i % 3 == 0,
                ..Default::default()
            })
            .collect();
        let back = LogChunk::decode(chunk.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(back, chunk);
    }
}
