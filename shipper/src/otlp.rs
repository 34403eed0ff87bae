//! OpenTelemetry logs in: the OTLP `LogsService` (gRPC) and the request
//! and response bodies of OTLP/HTTP (`POST /v1/logs`, protobuf or JSON),
//! turned into the same `LogChunk`s the file tracker ships.
//!
//! # Who
//!
//! The caller's token (checked by the server before a request gets here)
//! must be one that may write the role of every resource in the request;
//! otherwise nothing of it is taken. A resource's job is
//! `service.namespace/deployment.environment.name/service.name` (also
//! `deployment.environment`), defaulting to [`DEFAULT_ROLE`],
//! [`DEFAULT_ENV`] and `unknown_service` as the SDKs do; a segment that is
//! not a valid name is refused, naming the attribute.
//!
//! # What
//!
//! Each log record becomes one line whose text is a JSON object the
//! archive's parser ([`sluice_schema::fields`]) reads back: `level` (from
//! the severity number, else the severity text), `message` (the body; a
//! structured body as JSON), `trace_id` and `span_id` (hex), the record's
//! attributes (an attribute whose name the parser would take for one of
//! those goes under `attributes`), `severity_text` and `scope`. The line's
//! time is the record's time, else its observed time, else now. Resource
//! attributes become the source's labels. `service.instance.id` is the
//! task id, and the instance when it is a number.
//!
//! # Delivery
//!
//! An export is answered OK only once all its records are on the bus.
//! OTLP has no batch id: a client that lost an answer sends the same
//! records again. Records are known by a digest of their resource, scope,
//! time, severity, body, ids and attributes for [`OtlpConfig::dedup_window_secs`]:
//! one seen and stored is dropped, one seen whose send failed is sent again
//! under the same `(source_id, offset)`, so the archive keeps it once
//! however its first send ended. The window is in memory: a retry that
//! reaches a restarted receiver is stored again.
//!
//! Each resource of a receiver is one source (`layout` OTLP) whose offsets
//! count the bytes of the lines accepted, so the archive's ranges stay
//! contiguous; a receiver's sources are new each time it starts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sluice_broker::{Bus, Record};
use sluice_schema::auth::Principal;
use sluice_schema::fields::{self, Level};
use sluice_schema::pb::{Layout, Line, LogChunk, Source, Stream};
use sluice_schema::topics;
use tonic::{Request, Response, Status};

/// Role of a resource without `service.namespace`.
pub const DEFAULT_ROLE: &str = "otel";
/// Env of a resource without `deployment.environment.name`.
pub const DEFAULT_ENV: &str = "default";
/// Name of a resource without `service.name`.
pub const DEFAULT_NAME: &str = "unknown_service";
/// `Content-Type` of OTLP/HTTP protobuf bodies.
pub const PROTOBUF: &str = "application/x-protobuf";
/// `Content-Type` of OTLP/HTTP JSON bodies.
pub const JSON: &str = "application/json";
/// Text bytes per bus record at most (a larger export is split).
const CHUNK_BYTES: usize = 1 << 20;

/// How a receiver takes OTLP logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// This node's name, the lines' `host`.
    pub host: String,
    /// How long a record's digest is remembered (seconds).
    pub dedup_window_secs: u64,
    /// Most records a window remembers; the oldest are forgotten first.
    pub dedup_max_records: usize,
}

impl OtlpConfig {
    /// The defaults: a 10-minute window of at most a million records.
    pub fn new(host: impl Into<String>) -> OtlpConfig {
        OtlpConfig {
            host: host.into(),
            dedup_window_secs: 600,
            dedup_max_records: 1_000_000,
        }
    }
}

/// What became of one export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// Records stored now.
    pub stored: u64,
    /// Records dropped as already stored (a retried export).
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Its send failed or is in flight: sent again under this name.
    Pending {
        source_id: u64,
        offset: u64,
    },
    Stored,
}

#[derive(Default)]
struct State {
    /// Per resource identity: its source id and next offset.
    sources: HashMap<String, (u64, u64)>,
    seen: HashMap<[u8; 16], Seen>,
    /// Digests by when they were first seen, for forgetting.
    order: VecDeque<(i64, [u8; 16])>,
}

/// Takes OTLP exports and publishes their records to the bus.
pub struct Receiver {
    bus: Arc<dyn Bus>,
    config: OtlpConfig,
    epoch: u64,
    state: Mutex<State>,
}

/// One resource's lines, on their way to the bus.
struct Batch {
    source: Source,
    lines: Vec<(Line, [u8; 16])>,
}

impl Receiver {
    /// A receiver publishing to `bus`.
    pub fn new(bus: Arc<dyn Bus>, config: OtlpConfig) -> Receiver {
        Receiver {
            bus,
            config,
            epoch: sluice_schema::random_u64(),
            state: Mutex::new(State::default()),
        }
    }

    /// The gRPC service (put the server's auth interceptor in front of it).
    pub fn grpc(self: &Arc<Self>) -> LogsServiceServer<Grpc> {
        LogsServiceServer::new(Grpc(self.clone()))
            .max_decoding_message_size(crate::otlp::MAX_REQUEST_BYTES)
    }

    /// Takes one export from `principal`: checks every resource's role,
    /// drops records already stored, publishes the rest and returns once
    /// the bus holds them.
    pub async fn export(
        &self,
        principal: &Principal,
        request: ExportLogsServiceRequest,
    ) -> Result<Exported, Status> {
        let now = sluice_schema::time::now_unix_nanos();
        let mut batches: Vec<Batch> = Vec::new();
        for resource_logs in &request.resource_logs {
            let attributes = resource_logs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            let who = Who::of(attributes)?;
            principal.require_write(&who.role).map_err(|s| {
                Status::permission_denied(format!(
                    "{} (the role comes from the resource attribute service.namespace)",
                    s.message()
                ))
            })?;
            let mut lines = Vec::new();
            for scope_logs in &resource_logs.scope_logs {
                let scope = scope_logs
                    .scope
                    .as_ref()
                    .map(|s| s.name.as_str())
                    .unwrap_or_default();
                for record in &scope_logs.log_records {
                    let text = render(record, scope);
                    let ts = [record.time_unix_nano, record.observed_time_unix_nano]
                        .into_iter()
                        .find(|&t| t > 0 && t <= i64::MAX as u64)
                        .map_or(now, |t| t as i64);
                    let digest = digest(&who.key, attributes, scope, record);
                    lines.push((
                        Line {
                            ts_unix_nanos: ts,
                            raw_len: u32::try_from(text.len() + 1).unwrap_or(u32::MAX),
                            text: text.into(),
                            ..Default::default()
                        },
                        digest,
                    ));
                }
            }
            if !lines.is_empty() {
                batches.push(Batch {
                    source: who.source(&self.config.host, attributes),
                    lines,
                });
            }
        }
        let mut exported = Exported::default();
        let chunks = self.name_and_drop(now, &mut batches, &mut exported);
        for (chunk, digests) in chunks {
            let key = topics::chunk_key(&chunk);
            let ts_ms = chunk.lines.first().map_or(now, |l| l.ts_unix_nanos) / 1_000_000;
            let record = Record::new(key.into_bytes(), chunk.encode_to_vec(), ts_ms);
            if let Err(e) = self.bus.publish(topics::LOGS, record).await {
                tracing::warn!(error = %e, "an OTLP export could not be put on the bus");
                return Err(Status::unavailable(format!(
                    "the bus did not take the records ({e}); send the export again"
                )));
            }
            let mut state = self.state.lock().unwrap();
            for d in digests {
                state.seen.insert(d, Seen::Stored);
            }
        }
        Ok(exported)
    }

    /// Gives each new record its `(source_id, offset)`, reuses the name of
    /// one whose earlier send did not complete, drops the stored ones, and
    /// cuts the rest into chunks.
    fn name_and_drop(
        &self,
        now: i64,
        batches: &mut [Batch],
        exported: &mut Exported,
    ) -> Vec<(LogChunk, Vec<[u8; 16]>)> {
        let mut state = self.state.lock().unwrap();
        let window = self.config.dedup_window_secs as i64 * 1_000_000_000;
        while let Some(&(at, d)) = state.order.front() {
            if now - at <= window && state.order.len() <= self.config.dedup_max_records {
                break;
            }
            state.order.pop_front();
            state.seen.remove(&d);
        }
        let mut chunks = Vec::new();
        for batch in batches.iter_mut() {
            let identity = batch.source.task_id.clone() + "\n" + &batch.source.job;
            let epoch = self.epoch;
            let host = self.config.host.clone();
            let (source_id, _) = *state
                .sources
                .entry(identity.clone())
                .or_insert_with(|| (source_id(&host, &identity, epoch), 0));
            batch.source.source_id = source_id;
            let mut chunk = LogChunk {
                source: Some(batch.source.clone()),
                lines: Vec::new(),
                shipped_at_unix_nanos: now,
            };
            let mut digests = Vec::new();
            let mut here = HashSet::new();
            let mut bytes = 0;
            for (mut line, digest) in std::mem::take(&mut batch.lines) {
                // The same record twice in one export (or in the window) is
                // one record: nothing tells the two apart.
                if !here.insert(digest) {
                    exported.duplicates += 1;
                    continue;
                }
                let offset = match state.seen.get(&digest).copied() {
                    Some(Seen::Stored) => {
                        exported.duplicates += 1;
                        continue;
                    }
                    Some(Seen::Pending {
                        source_id: s,
                        offset,
                    }) if s == source_id => offset,
                    _ => {
                        let entry = state.sources.get_mut(&identity).expect("inserted above");
                        let offset = entry.1;
                        entry.1 += u64::from(line.raw_len);
                        state
                            .seen
                            .insert(digest, Seen::Pending { source_id, offset });
                        state.order.push_back((now, digest));
                        offset
                    }
                };
                line.offset = offset;
                exported.stored += 1;
                bytes += line.text.len();
                chunk.lines.push(line);
                digests.push(digest);
                if bytes >= CHUNK_BYTES {
                    let next = LogChunk {
                        lines: Vec::new(),
                        ..chunk.clone()
                    };
                    chunks.push((
                        std::mem::replace(&mut chunk, next),
                        std::mem::take(&mut digests),
                    ));
                    bytes = 0;
                }
            }
            if !chunk.lines.is_empty() {
                chunks.push((chunk, digests));
            }
        }
        chunks
    }
}

/// Largest OTLP request accepted, in bytes (gRPC message or HTTP body).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

fn source_id(host: &str, identity: &str, epoch: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(b"otlp\0");
    h.update(host.as_bytes());
    h.update([0]);
    h.update(identity.as_bytes());
    h.update(epoch.to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// The job and task a resource's attributes name.
struct Who {
    role: String,
    key: String,
    task_id: String,
    instance: u32,
}

impl Who {
    fn of(attributes: &[KeyValue]) -> Result<Who, Status> {
        let get = |name: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == name)
                .and_then(|kv| kv.value.as_ref())
                .map(text_of)
                .filter(|v| !v.is_empty())
        };
        let role = get("service.namespace").unwrap_or_else(|| DEFAULT_ROLE.into());
        let env = get("deployment.environment.name")
            .or_else(|| get("deployment.environment"))
            .unwrap_or_else(|| DEFAULT_ENV.into());
        let name = get("service.name").unwrap_or_else(|| DEFAULT_NAME.into());
        for (attribute, value) in [
            ("service.namespace", &role),
            ("deployment.environment.name", &env),
            ("service.name", &name),
        ] {
            if value.len() > 64 || !sluice_schema::auth::is_valid_role(value) {
                return Err(Status::invalid_argument(format!(
                    "resource attribute {attribute} = {value:?} is not a valid job key segment \
                     (letters, digits, '_', '.', '-'; at most 64 bytes)"
                )));
            }
        }
        let task_id = get("service.instance.id").unwrap_or_default();
        Ok(Who {
            instance: task_id.parse().unwrap_or(0),
            key: format!("{role}/{env}/{name}"),
            role,
            task_id,
        })
    }

    fn source(&self, host: &str, attributes: &[KeyValue]) -> Source {
        Source {
            host: host.to_string(),
            job: self.key.clone(),
            instance: self.instance,
            task_id: self.task_id.clone(),
            run: 0,
            process: "otlp".into(),
            stream: Stream::Unspecified as i32,
            path: String::new(),
            layout: Layout::Otlp as i32,
            labels: attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), text_of(kv.value.as_ref()?))))
                .collect(),
            source_id: 0,
        }
    }
}

/// A value as text: strings as they are, anything else as JSON.
fn text_of(value: &AnyValue) -> String {
    match json_of(value) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// An `AnyValue` as JSON: bytes as hex, maps as objects.
fn json_of(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => json!(d),
        Some(V::BytesValue(b)) => Value::String(hex(b)),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(json_of).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Value::Null, json_of),
                    )
                })
                .collect(),
        ),
        Some(V::StringValueStrindex(i)) => json!(i),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the archive's parser would take `key` for one of the fields
/// the receiver writes itself.
fn reserved(key: &str) -> bool {
    [
        fields::LEVEL_KEYS,
        fields::MESSAGE_KEYS,
        fields::TRACE_ID_KEYS,
        fields::SPAN_ID_KEYS,
    ]
    .iter()
    .any(|keys| keys.iter().any(|k| k.eq_ignore_ascii_case(key)))
        || key == "attributes"
}

/// A record's line: the JSON object the module documentation describes.
pub fn render(record: &LogRecord, scope: &str) -> String {
    let mut out = Map::new();
    let level = match record.severity_number {
        n @ 1..=24 => Level::from_word(&n.to_string()),
        _ => Level::from_word(record.severity_text.trim()),
    };
    if let Some(level) = level {
        out.insert("level".into(), Value::String(level.as_str().into()));
    }
    if !record.severity_text.is_empty() {
        out.insert(
            "severity_text".into(),
            Value::String(record.severity_text.clone()),
        );
    }
    if let Some(body) = &record.body {
        let body = match json_of(body) {
            Value::String(s) => Value::String(s),
            Value::Null => Value::Null,
            other => Value::String(other.to_string()),
        };
        if !body.is_null() {
            out.insert("message".into(), body);
        }
    }
    if record.trace_id.iter().any(|&b| b != 0) {
        out.insert("trace_id".into(), Value::String(hex(&record.trace_id)));
    }
    if record.span_id.iter().any(|&b| b != 0) {
        out.insert("span_id".into(), Value::String(hex(&record.span_id)));
    }
    if !scope.is_empty() {
        out.insert("scope".into(), Value::String(scope.into()));
    }
    let mut nested = Map::new();
    for kv in &record.attributes {
        let value = kv.value.as_ref().map_or(Value::Null, json_of);
        if reserved(&kv.key) || out.contains_key(&kv.key) {
            nested.insert(kv.key.clone(), value);
        } else {
            out.insert(kv.key.clone(), value);
        }
    }
    if !nested.is_empty() {
        out.insert("attributes".into(), Value::Object(nested));
    }
    Value::Object(out).to_string()
}

/// The digest a record is known by: its resource, scope, times, severity,
/// body, ids, attributes and flags, in protobuf form.
fn digest(job: &str, resource: &[KeyValue], scope: &str, record: &LogRecord) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(job.as_bytes());
    h.update([0]);
    for kv in resource {
        h.update(kv.encode_to_vec());
    }
    h.update([0]);
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(record.encode_to_vec());
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// An OTLP/HTTP request body: protobuf, or JSON (the OTLP JSON encoding:
/// lowerCamelCase names, hex ids); the error says what was wrong.
pub fn decode_http(content_type: &str, body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        PROTOBUF => ExportLogsServiceRequest::decode(body).map_err(|e| {
            format!("the body is not an OTLP ExportLogsServiceRequest in protobuf: {e}")
        }),
        JSON => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                format!(
                    "the body is not an OTLP ExportLogsServiceRequest in JSON: at {}: {}",
                    e.path(),
                    e.inner()
                )
            })
        }
        _ => Err(format!(
            "Content-Type {content_type:?}: OTLP/HTTP takes {PROTOBUF} or {JSON}"
        )),
    }
}

/// The OTLP/HTTP answer to a successful export, in the request's encoding.
pub fn encode_http_response(content_type: &str) -> (&'static str, Vec<u8>) {
    let response = ExportLogsServiceResponse::default();
    if content_type.to_ascii_lowercase().starts_with(JSON) {
        (JSON, b"{}".to_vec())
    } else {
        (PROTOBUF, response.encode_to_vec())
    }
}

/// The gRPC `LogsService` of a [`Receiver`].
pub struct Grpc(Arc<Receiver>);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let principal = sluice_schema::auth::principal(&request)?;
        self.0.export(&principal, request.into_inner()).await?;
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[cfg(test)]
mod tests;
