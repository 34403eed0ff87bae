use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Ack, BusStatus, Consumer, EmbeddedConfig};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use super::*;

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}

fn record(body: &str, severity: i32, time: u64) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        severity_number: severity,
        severity_text: "Warning".into(),
        body: s(body),
        attributes: vec![
            kv("user", s("bob")),
            kv(
                "http",
                Some(AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![kv(
                            "code",
                            Some(AnyValue {
                                value: Some(any_value::Value::IntValue(503)),
                            }),
                        )],
                    })),
                }),
            ),
            kv("message", s("an attribute named like the body")),
        ],
        trace_id: vec![0x4b; 16],
        span_id: vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        ..Default::default()
    }
}

fn request(namespace: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.namespace", s(namespace)),
                    kv("deployment.environment.name", s("prod")),
                    kv("service.name", s("checkout")),
                    kv("service.instance.id", s("3")),
                    kv("host.name", s("pod-7")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app.orders".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn writer(role: &str) -> Principal {
    Principal::new("app", [role], Vec::<String>::new())
}

/// A bus whose sends fail while `failing` is above zero (each failure
/// counts it down), for the retry tests.
#[derive(Debug)]
struct Flaky {
    inner: EmbeddedBus,
    failing: AtomicU32,
}

#[async_trait]
impl Bus for Flaky {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn send(&self, topic: &str, record: Record) -> sluice_broker::Result<Ack> {
        if self
            .failing
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Stored, but the answer is lost: the worst case for doubles.
            let _ = self.inner.publish(topic, record).await;
            return Err(sluice_broker::Error::ReadOnly("injected failure".into()));
        }
        self.inner.send(topic, record).await
    }
    async fn ensure_topics(&self, topics: &[&str]) -> sluice_broker::Result<()> {
        self.inner.ensure_topics(topics).await
    }
    async fn consumer(
        &self,
        group: &str,
        topics: &[&str],
    ) -> sluice_broker::Result<Box<dyn Consumer>> {
        self.inner.consumer(group, topics).await
    }
    async fn status(&self, groups: &[&str]) -> sluice_broker::Result<BusStatus> {
        self.inner.status(groups).await
    }
    async fn flush(&self, timeout: Duration) -> sluice_broker::Result<()> {
        self.inner.flush(timeout).await
    }
}

async fn setup() -> (tempfile::TempDir, Arc<Flaky>, Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(Flaky {
        inner: EmbeddedBus::open(dir.path(), EmbeddedConfig::default()).unwrap(),
        failing: AtomicU32::new(0),
    });
    let receiver = Receiver::new(bus.clone(), OtlpConfig::new("node-1"));
    (dir, bus, receiver)
}

/// Every chunk on the logs topic; `(source_id, offset)` → text, and how
/// many lines arrived in all (duplicates included).
async fn on_the_bus(bus: &Flaky) -> (Vec<LogChunk>, BTreeMap<(u64, u64), String>, usize) {
    let mut consumer = bus.consumer("t", &[topics::LOGS]).await.unwrap();
    let mut chunks = Vec::new();
    loop {
        let batch = consumer
            .poll(1000, Duration::from_millis(50))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        for m in batch {
            chunks.push(LogChunk::decode(m.payload).unwrap());
        }
    }
    let mut lines = BTreeMap::new();
    let mut all = 0;
    for c in &chunks {
        let id = c.source.as_ref().unwrap().source_id;
        for l in &c.lines {
            all += 1;
            let text = String::from_utf8(l.text.to_vec()).unwrap();
            if let Some(old) = lines.insert((id, l.offset), text.clone()) {
                assert_eq!(old, text, "one name, one record");
            }
        }
    }
    (chunks, lines, all)
}

use std::collections::BTreeMap;

#[tokio::test]
async fn records_become_lines_the_archive_parses_into_the_same_columns() {
    let (_dir, bus, receiver) = setup().await;
    let t = 1_795_244_400_000_000_000;
    let got = receiver
        .export(
            &writer("shop"),
            request(
                "shop",
                vec![record("batch 28 failed", 17, t), record("slow", 13, 0)],
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        Exported {
            stored: 2,
            duplicates: 0
        }
    );
    let (chunks, lines, _) = on_the_bus(&bus).await;
    let source = chunks[0].source.clone().unwrap();
    assert_eq!(source.job, "shop/prod/checkout");
    assert_eq!((source.instance, source.task_id.as_str()), (3, "3"));
    assert_eq!(source.layout, Layout::Otlp as i32);
    assert_eq!(source.labels["host.name"], "pod-7");
    assert_eq!(chunks[0].lines[0].ts_unix_nanos, t as i64);
    assert!(chunks[0].lines[1].ts_unix_nanos > t as i64, "no time: now");
    let texts: Vec<&String> = lines.values().collect();
    let parsed = fields::parse(texts[0].as_bytes());
    assert_eq!(parsed.level, Some(Level::Error));
    assert_eq!(parsed.message.as_deref(), Some("batch 28 failed"));
    assert_eq!(parsed.trace_id.as_deref(), Some("4b".repeat(16).as_str()));
    assert_eq!(parsed.span_id.as_deref(), Some("00f067aa0ba902b7"));
    let field = |k: &str| parsed.field(k);
    assert_eq!(field("user"), Some("bob"));
    assert_eq!(field("http.code"), Some("503"));
    assert_eq!(field("severity_text"), Some("Warning"));
    assert_eq!(field("scope"), Some("app.orders"));
    assert_eq!(
        field("attributes.message"),
        Some("an attribute named like the body")
    );
    assert_eq!(fields::parse(texts[1].as_bytes()).level, Some(Level::Warn));
    // Offsets count the bytes accepted: contiguous ranges in the archive.
    let offsets: Vec<u64> = chunks[0].lines.iter().map(|l| l.offset).collect();
    assert_eq!(offsets, [0, u64::from(chunks[0].lines[0].raw_len)]);
}

#[tokio::test]
async fn a_token_that_may_not_write_the_role_is_refused_and_nothing_is_stored() {
    let (_dir, bus, receiver) = setup().await;
    let mut both = request("shop", vec![record("mine", 9, 1)]);
    both.resource_logs
        .extend(request("payments", vec![record("not mine", 9, 1)]).resource_logs);
    let err = receiver.export(&writer("shop"), both).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("payments") && err.message().contains("service.namespace"),
        "{}",
        err.message()
    );
    let bad = request("../etc", vec![record("x", 9, 1)]);
    let err = receiver.export(&writer("shop"), bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("service.namespace"),
        "{}",
        err.message()
    );
    assert_eq!(on_the_bus(&bus).await.2, 0);
    // No namespace: the default role, which this token may not write either.
    let mut anonymous = request("x", vec![record("y", 9, 1)]);
    anonymous.resource_logs[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .retain(|kv| kv.key != "service.namespace");
    let err = receiver
        .export(&writer("shop"), anonymous.clone())
        .await
        .unwrap_err();
    assert!(err.message().contains(DEFAULT_ROLE), "{}", err.message());
    receiver
        .export(&writer(DEFAULT_ROLE), anonymous)
        .await
        .unwrap();
    let (chunks, _, _) = on_the_bus(&bus).await;
    assert_eq!(chunks[0].source.as_ref().unwrap().job, "otel/prod/checkout");
}

/// A client that lost the answer sends the export again: its records are
/// dropped by digest. An export whose send failed (its records may still
/// be on the bus) is sent again under the same names, so the archive's
/// de-duplication by `(source_id, offset)` keeps each record once.
#[tokio::test]
async fn retried_exports_are_stored_once() {
    let (_dir, bus, receiver) = setup().await;
    let first = request(
        "shop",
        (0..5)
            .map(|i| record(&format!("r{i}"), 9, 10 + i))
            .collect(),
    );
    receiver
        .export(&writer("shop"), first.clone())
        .await
        .unwrap();
    let again = receiver
        .export(&writer("shop"), first.clone())
        .await
        .unwrap();
    assert_eq!(
        again,
        Exported {
            stored: 0,
            duplicates: 5
        }
    );
    // Half old, half new, one of the new twice.
    let mut mixed = request(
        "shop",
        (3..8)
            .map(|i| record(&format!("r{i}"), 9, 10 + i))
            .collect(),
    );
    mixed.resource_logs[0].scope_logs[0]
        .log_records
        .push(record("r7", 9, 17));
    let got = receiver.export(&writer("shop"), mixed).await.unwrap();
    assert_eq!(
        got,
        Exported {
            stored: 3,
            duplicates: 3
        }
    );

    bus.failing.store(1, SeqCst);
    let lost = request("shop", vec![record("lost answer", 9, 99)]);
    let err = receiver
        .export(&writer("shop"), lost.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let retried = receiver.export(&writer("shop"), lost).await.unwrap();
    assert_eq!(retried.stored, 1);
    let (_, lines, all) = on_the_bus(&bus).await;
    assert_eq!(
        lines.len(),
        9,
        "r0..r7 and the lost answer, each once by name"
    );
    assert_eq!(
        all, 10,
        "the lost answer's record is on the bus twice, under one name"
    );
}

#[test]
fn http_bodies_decode_in_both_encodings_and_bad_ones_are_named() {
    let req = request("shop", vec![record("x", 9, 5)]);
    let proto = req.encode_to_vec();
    assert_eq!(decode_http("application/x-protobuf", &proto).unwrap(), req);
    let json = br#"{"resourceLogs":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"checkout"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1795244400000000000",
        "severityNumber":17,"body":{"stringValue":"boom"},
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
    let decoded = decode_http("application/json; charset=utf-8", json).unwrap();
    let r = &decoded.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(r.time_unix_nano, 1_795_244_400_000_000_000);
    assert_eq!(hex(&r.trace_id), "5b8efff798038103d269b633813fc60c");
    let text = render(r, "");
    assert!(
        text.contains(r#""n":42"#) && text.contains(r#""level":"error""#),
        "{text}"
    );
    let err = decode_http("text/plain", b"x").unwrap_err();
    assert!(err.contains("application/x-protobuf"), "{err}");
    let err = decode_http(JSON, br#"{"resourceLogs":[{"scopeLogs":7}]}"#).unwrap_err();
    assert!(err.contains("resourceLogs[0].scopeLogs"), "{err}");
    assert!(decode_http(PROTOBUF, b"\xff\xff\xff").is_err());
    assert_eq!(encode_http_response(JSON), (JSON, b"{}".to_vec()));
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        for content_type in [PROTOBUF, JSON] {
            if let Ok(req) = decode_http(content_type, &body) {
                for r in &req.resource_logs {
                    for s in &r.scope_logs {
                        for l in &s.log_records {
                            let text = render(l, "");
                            prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
                        }
                    }
                }
            }
        }
    }
}
