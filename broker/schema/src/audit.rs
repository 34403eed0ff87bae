//! The API's audit trail: every call that changes something (submit,
//! update, kill, gc) and every call that reads logs (query, context, Tail)
//! is an `api_call` [`ClusterEvent`] with who asked, what for, how it ended
//! and from where. Calls refused before a handler runs (a missing or wrong
//! token) are recorded too, but at most [`REFUSALS_PER_WINDOW`] a minute per
//! service, so a flood of bad tokens cannot flood the bus; the next one
//! recorded says how many were left out.
//!
//! Servers add [`CallPathLayer`] so that handlers (and the auth interceptor)
//! know the full method name (`/sluice.v1.Scheduler/Submit`) of the call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status};

use crate::events::{EventIds, EventSink};
use crate::pb::{ClusterEvent, EventKind};

/// Refused calls recorded per service and minute; the rest are counted.
pub const REFUSALS_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);

/// The actor of a call that carried no valid token.
pub const ANONYMOUS: &str = "anonymous";

/// The gRPC path of a call (`/sluice.v1.Query/Query`), put in the request's
/// extensions by [`CallPathLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPath(pub String);

/// The method of `request`: its [`CallPath`], or `fallback` when the server
/// runs without [`CallPathLayer`] (as in-process tests do).
pub fn method_of<T>(request: &Request<T>, fallback: &str) -> String {
    request
        .extensions()
        .get::<CallPath>()
        .map_or_else(|| fallback.to_string(), |p| p.0.clone())
}

/// Records calls of one server as `api_call` events.
pub struct Audit {
    sink: Arc<dyn EventSink>,
    ids: EventIds,
    host: String,
    refusals: Mutex<Refusals>,
    /// Calls recorded, and refusals left out by the rate limit.
    pub recorded: AtomicU64,
    /// Refused calls not recorded because [`REFUSALS_PER_WINDOW`] was reached; never reset.
    pub refusals_dropped: AtomicU64,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("host", &self.host).finish()
    }
}

#[derive(Debug)]
struct Refusals {
    started: Instant,
    recorded: u32,
    dropped: u64,
}

/// One call as the trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The user, or [`ANONYMOUS`].
    pub actor: String,
    /// `/sluice.v1.Scheduler/Submit`.
    pub method: String,
    /// What it was about: a job, a job glob, a node, or `sql:<digest>`.
    pub target: String,
    /// The job the call was about, when it names exactly one (so that
    /// `sluice events --job` finds it).
    pub job: String,
    /// `ok`, or the gRPC code in snake case (`permission_denied`, …).
    pub outcome: String,
    /// Client address from `Request::remote_addr`, the `peer` attribute; `None` when the transport
    /// has none.
    pub peer: Option<SocketAddr>,
}

impl Audit {
    /// `host` names the server in the events (`sluice up`, a node, …).
    pub fn new(sink: Arc<dyn EventSink>, host: &str, start_unix_nanos: i64) -> Audit {
        Audit {
            sink,
            ids: EventIds::new(&format!("{host}/audit"), start_unix_nanos),
            host: host.to_string(),
            refusals: Mutex::new(Refusals {
                started: Instant::now(),
                recorded: 0,
                dropped: 0,
            }),
            recorded: AtomicU64::new(0),
            refusals_dropped: AtomicU64::new(0),
        }
    }

    /// Records `call` at `now` (Unix nanoseconds).
    pub fn record(&self, call: Call, now: i64) {
        self.emit(call, now, None);
    }

    /// Records a call refused before it reached a handler, unless this
    /// minute's refusals were recorded already.
    pub fn refused(&self, call: Call, now: i64) {
        let dropped_before = {
            let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
            if r.started.elapsed() >= WINDOW {
                r.started = Instant::now();
                r.recorded = 0;
            }
            if r.recorded >= REFUSALS_PER_WINDOW {
                r.dropped += 1;
                self.refusals_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            r.recorded += 1;
            std::mem::take(&mut r.dropped)
        };
        self.emit(call, now, Some(dropped_before));
    }

    fn emit(&self, call: Call, now: i64, dropped_before: Option<u64>) {
        let mut attributes = std::collections::BTreeMap::from([
            ("method".to_string(), call.method.clone()),
            ("target".to_string(), call.target.clone()),
            ("outcome".to_string(), call.outcome.clone()),
        ]);
        if let Some(peer) = call.peer {
            attributes.insert("peer".into(), peer.to_string());
        }
        if let Some(n) = dropped_before.filter(|n| *n > 0) {
            attributes.insert("refusals_not_recorded".into(), n.to_string());
        }
        let target = if call.target.is_empty() {
            String::new()
        } else {
            format!(" {}", call.target)
        };
        self.sink.emit(ClusterEvent {
            id: self.ids.next(),
            ts_unix_nanos: now,
            kind: EventKind::ApiCall as i32,
            job: call.job,
            host: self.host.clone(),
            actor: call.actor,
            reason: call.outcome.clone(),
            message: format!("{}{target}: {}", call.method, call.outcome),
            attributes,
            ..Default::default()
        });
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a call ended, as the trail writes it: `ok` or the code's name
/// (`permission_denied`, `resource_exhausted`, …).
pub fn outcome<T>(result: &Result<T, Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(status) => code_name(status.code()),
    }
}

/// `PermissionDenied` as `permission_denied`.
pub fn code_name(code: Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The target of a query: `sql:` and the first 16 hex digits of the SHA-256
/// of its text (the trail names the query without keeping what it says).
pub fn sql_target(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sql:{hex}")
}

/// A tower layer that puts each request's gRPC path in its extensions as a
/// [`CallPath`], for the interceptors and handlers behind it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallPathLayer;

impl<S> tower_layer::Layer<S> for CallPathLayer {
    type Service = CallPathService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallPathService { inner }
    }
}

/// The service of [`CallPathLayer`].
#[derive(Debug, Clone)]
pub struct CallPathService<S> {
    inner: S,
}

type Mapped<R, E> = fn(Result<http::Response<R>, E>) -> Result<http::Response<R>, E>;

impl<S, B, R> tower_service::Service<http::Request<B>> for CallPathService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Map<S::Future, Mapped<R, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use futures::FutureExt as _;
        let path = CallPath(request.uri().path().to_string());
        request.extensions_mut().insert(path);
        self.inner
            .call(request)
            .map(oversized_is_resource_exhausted as Mapped<R, S::Error>)
    }
}

/// tonic refuses a message over the server's limit with `out_of_range`;
/// Sluice's limits all answer `resource_exhausted`, so that one does too
/// (its message already names the limit).
fn oversized_is_resource_exhausted<R, E>(
    response: Result<http::Response<R>, E>,
) -> Result<http::Response<R>, E> {
    response.map(|mut response| {
        let headers = response.headers_mut();
        // grpc-message is percent-encoded.
        let oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
            && headers.get("grpc-message").is_some_and(|m| {
                let m = m.as_bytes();
                m.starts_with(b"Error, decoded message length too large")
                    || m.starts_with(b"Error,%20decoded%20message%20length%20too%20large")
            });
        if oversized {
            headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::VecSink;

    fn call(outcome: &str) -> Call {
        Call {
            actor: "alice".into(),
            method: "/sluice.v1.Scheduler/Kill".into(),
            target: "www/prod/web".into(),
            job: "www/prod/web".into(),
            outcome: outcome.into(),
            peer: Some("10.0.0.7:50000".parse().unwrap()),
        }
    }

    #[test]
    fn a_call_is_an_api_call_event_with_who_what_how_and_where() {
        let sink = Arc::new(VecSink::default());
        let audit = Audit::new(sink.clone(), "up", 7);
        audit.record(call("ok"), 42);
        let events = sink.events();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventKind::ApiCall as i32);
        assert_eq!(
            (e.actor.as_str(), e.job.as_str(), e.ts_unix_nanos),
            ("alice", "www/prod/web", 42)
        );
        assert_eq!(e.attributes["method"], "/sluice.v1.Scheduler/Kill");
        assert_eq!(e.attributes["outcome"], "ok");
        assert_eq!(e.attributes["peer"], "10.0.0.7:50000");
        assert_eq!(e.message, "/sluice.v1.Scheduler/Kill www/prod/web: ok");
        assert_eq!(e.id, "up/audit/7-0");
    }

    #[test]
    fn refusals_are_rate_limited_and_the_next_one_says_how_many_were_left_out() {
        let sink = Arc::new(VecSink::default());
        let audit = Audit::new(sink.clone(), "up", 7);
        for _ in 0..1000 {
            audit.refused(call("unauthenticated"), 1);
        }
        assert_eq!(sink.events().len(), REFUSALS_PER_WINDOW as usize);
        assert_eq!(
            audit.refusals_dropped.load(Ordering::Relaxed),
            1000 - u64::from(REFUSALS_PER_WINDOW)
        );
        // Accepted calls are never limited.
        audit.record(call("ok"), 2);
        assert_eq!(sink.events().len(), REFUSALS_PER_WINDOW as usize + 1);
        // A new window records again and reports the gap.
        audit.refusals.lock().unwrap().started -= WINDOW;
        audit.refused(call("unauthenticated"), 3);
        let last = sink.events().pop().unwrap();
        assert_eq!(last.attributes["refusals_not_recorded"], "990");
    }

    #[test]
    fn outcomes_and_sql_targets() {
        assert_eq!(outcome::<()>(&Ok(())), "ok");
        assert_eq!(
            outcome::<()>(&Err(Status::permission_denied("x"))),
            "permission_denied"
        );
        assert_eq!(code_name(Code::ResourceExhausted), "resource_exhausted");
        assert_eq!(sql_target("SELECT 1"), sql_target("SELECT 1"));
        assert_ne!(sql_target("SELECT 1"), sql_target("SELECT 2"));
        assert!(
            sql_target("SELECT secret").starts_with("sql:")
                && !sql_target("SELECT secret").contains("secret")
        );
    }
}
