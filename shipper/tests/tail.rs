//! The Tail service over real files, a real (embedded) bus and real gRPC on
//! loopback: backfill, live lines, filters on the node, authorisation,
//! resumption without gap or duplicate (after a disconnect, after a shipper
//! restart, after falling behind), lifecycle messages and events.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::embedded::EmbeddedBus;
use sluice_broker::{Bus, EmbeddedConfig};
use sluice_schema::auth::{self, AuthInterceptor, BearerInterceptor, Tokens};
use sluice_schema::pb::lifecycle::Kind;
use sluice_schema::pb::tail_client::TailClient;
use sluice_schema::pb::tail_message::Kind as Msg;
use sluice_schema::pb::tail_server::TailServer;
use sluice_schema::pb::{ClusterEvent, EventKind, FollowRequest, Position, Selector, Stream};
use sluice_schema::sandbox;
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";

type Client = TailClient<InterceptedService<Channel, BearerInterceptor>>;
type Follow = tonic::Streaming<sluice_schema::pb::TailMessage>;

struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    bus: Arc<dyn Bus>,
    shipper: Option<Shipper>,
    addr: SocketAddr,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    async fn new() -> Node {
        Node::with(|_| {}).await
    }

    async fn with(tune: impl Fn(&mut ShipperConfig)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        let bus: Arc<dyn Bus> = Arc::new(
            EmbeddedBus::open(&dir.path().join("bus"), EmbeddedConfig::default()).unwrap(),
        );
        let mut node = Node {
            _dir: dir,
            root,
            state,
            bus,
            shipper: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            stop_server: None,
        };
        node.start(tune).await;
        node
    }

    fn config(&self) -> ShipperConfig {
        let mut c = ShipperConfig::new("node-t", LayoutKind::Native, &self.root, &self.state);
        c.quiet_ms = 300;
        c.poll_ms = 50;
        c.rescan_ms = 300;
        c.checkpoint_ms = 100;
        c
    }

    async fn start(&mut self, tune: impl Fn(&mut ShipperConfig)) {
        let mut config = self.config();
        tune(&mut config);
        let shipper = Shipper::start(config, self.bus.clone()).unwrap();
        let tokens = Tokens::parse(&format!(
            "{}\n{}",
            auth::token_file_entry("admin", ADMIN, &[auth::ANY_ROLE]),
            auth::token_file_entry("alice", ALICE, &["a"]),
        ))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let service =
            TailServer::with_interceptor(shipper.tail_service(), AuthInterceptor::new(tokens));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        self.shipper = Some(shipper);
        self.stop_server = Some(stop);
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(shipper) = self.shipper.take() {
            shipper.shutdown().await;
        }
    }

    async fn client(&self, token: &str) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TailClient::with_interceptor(channel, BearerInterceptor::new(token).unwrap())
    }

    /// A native sandbox; returns the path of its `main.stdout`.
    fn sandbox(&self, task_id: &str, job: &str, instance: u32) -> PathBuf {
        sluice_testkit::native_sandbox(&self.root, task_id, job, instance, &["main"])
            .join(sandbox::log_file("main", false))
    }

    /// Waits until the shipper has read `lines` lines in all.
    async fn read_lines(&self, lines: u64) {
        let metrics = self.shipper.as_ref().unwrap().metrics();
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.lines_read.get() < lines {
            assert!(
                Instant::now() < deadline,
                "shipper read {} of {lines} lines",
                metrics.lines_read.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i}")).collect()
}

fn request(job: &str, backfill: u32) -> FollowRequest {
    FollowRequest {
        selector: Some(Selector {
            job: job.into(),
            ..Default::default()
        }),
        backfill_lines: backfill,
        heartbeat_ms: 100,
        ..Default::default()
    }
}

/// What a client saw, as `tailll` would keep it.
#[derive(Default)]
struct Seen {
    /// Per source: (offset, text) in arrival order.
    lines: BTreeMap<u64, Vec<(u64, String)>>,
    /// Per source: (job, instance).
    who: HashMap<u64, (String, u32)>,
    lifecycle: Vec<(Kind, u64, u64)>,
    events: Vec<ClusterEvent>,
    caught_up: bool,
    positions: HashMap<u64, u64>,
    last_ts: i64,
    heartbeats: usize,
}

impl Seen {
    fn texts(&self, job: &str, instance: u32) -> Vec<String> {
        self.who
            .iter()
            .filter(|(_, w)| w.0 == job && w.1 == instance)
            .flat_map(|(id, _)| self.lines.get(id).into_iter().flatten())
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn count(&self) -> usize {
        self.lines.values().map(Vec::len).sum()
    }

    fn resume(&self, mut request: FollowRequest) -> FollowRequest {
        request.backfill_lines = 0;
        request.resume = self
            .positions
            .iter()
            .map(|(id, offset)| Position {
                source_id: *id,
                offset: *offset,
            })
            .collect();
        request.resume_after_unix_nanos = self.last_ts;
        request
    }

    fn take(&mut self, message: sluice_schema::pb::TailMessage) {
        self.last_ts = message.ts_unix_nanos;
        match message.kind.unwrap() {
            Msg::Lines(chunk) => {
                let source = chunk.source.unwrap();
                let id = source.source_id;
                self.who.insert(id, (source.job, source.instance));
                for line in chunk.lines {
                    let end = line.offset + u64::from(line.raw_len);
                    let at = self.positions.entry(id).or_default();
                    *at = (*at).max(end);
                    self.lines
                        .entry(id)
                        .or_default()
                        .push((line.offset, String::from_utf8_lossy(&line.text).into()));
                }
            }
            Msg::Lifecycle(l) => {
                let source = l.source.unwrap();
                if l.kind == Kind::SourceAppeared as i32 {
                    self.who
                        .insert(source.source_id, (source.job, source.instance));
                    self.positions.entry(source.source_id).or_insert(l.offset);
                }
                self.lifecycle
                    .push((Kind::try_from(l.kind).unwrap(), source.source_id, l.offset));
            }
            Msg::Heartbeat(h) => {
                self.heartbeats += 1;
                for p in h.positions {
                    let at = self.positions.entry(p.source_id).or_default();
                    *at = (*at).max(p.offset);
                }
            }
            Msg::Event(e) => self.events.push(e),
            Msg::CaughtUp(_) => self.caught_up = true,
        }
    }

    /// Reads until `done` holds; panics after 20 s.
    async fn until(&mut self, stream: &mut Follow, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.message()).await {
                Ok(Ok(Some(message))) => self.take(message),
                Ok(Ok(None)) => panic!("stream ended early"),
                Ok(Err(status)) => panic!("stream failed: {status}"),
                Err(_) => panic!(
                    "timed out; saw {} lines, caught up {}",
                    self.count(),
                    self.caught_up
                ),
            }
        }
    }

    /// No source saw a line twice or out of order.
    fn assert_once_in_order(&self) {
        for (id, lines) in &self.lines {
            for pair in lines.windows(2) {
                assert!(
                    pair[0].0 < pair[1].0,
                    "source {id:016x}: offset {} then {}",
                    pair[0].0,
                    pair[1].0
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_then_live_lines_each_once_in_order() {
    let mut node = Node::new().await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    let a1 = node.sandbox("t-a1", "a/prod/web", 1);
    let b0 = node.sandbox("t-b0", "b/prod/db", 0);
    append(&a0, &numbered("a0", 0..20));
    append(&a1, &numbered("a1", 0..20));
    append(&b0, &numbered("b0", 0..20));
    node.read_lines(60).await;

    let mut client = node.client(ADMIN).await;
    let mut stream = client
        .follow(request("a/prod/*", 5))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 15..20));
    assert_eq!(seen.texts("a/prod/web", 1), numbered("a1", 15..20));
    assert!(seen.texts("b/prod/db", 0).is_empty());
    let appeared = seen
        .lifecycle
        .iter()
        .filter(|l| l.0 == Kind::SourceAppeared)
        .count();
    assert_eq!(appeared, 2);

    // Live: written after the stream began.
    append(&a0, &numbered("a0", 20..30));
    append(&b0, &numbered("b0", 20..30));
    append(&a1, &numbered("a1", 20..30));
    seen.until(&mut stream, |s| s.count() >= 30).await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 15..30));
    assert_eq!(seen.texts("a/prod/web", 1), numbered("a1", 15..30));
    // A new instance appears while following.
    let a2 = node.sandbox("t-a2", "a/prod/web", 2);
    append(&a2, &numbered("a2", 0..3));
    seen.until(&mut stream, |s| s.count() >= 33).await;
    assert_eq!(seen.texts("a/prod/web", 2), numbered("a2", 0..3));
    assert!(seen.texts("b/prod/db", 0).is_empty());
    seen.assert_once_in_order();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_on_the_node_and_heartbeats_carry_skipped_positions() {
    let mut node = Node::new().await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    let a1 = node.sandbox("t-a1", "a/prod/web", 1);
    let mixed = |p: &str| -> Vec<String> {
        (0..30)
            .map(|i| {
                if i % 3 == 0 {
                    format!("{p} ERROR {i}")
                } else {
                    format!("{p} ok {i}")
                }
            })
            .collect()
    };
    append(&a0, &mixed("a0"));
    append(&a1, &mixed("a1"));
    node.read_lines(60).await;
    let mut client = node.client(ADMIN).await;

    let mut req = request("a", 100);
    let selector = req.selector.as_mut().unwrap();
    selector.instances = vec![1];
    selector.regex = "ERROR".into();
    let mut stream = client.follow(req.clone()).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;
    let errors: Vec<String> = (0..30)
        .step_by(3)
        .map(|i| format!("a1 ERROR {i}"))
        .collect();
    assert_eq!(seen.texts("a/prod/web", 1), errors);
    assert!(seen.texts("a/prod/web", 0).is_empty());
    // Lines the regex leaves out still move the position, reported by
    // heartbeats: a resume would not read them again.
    append(&a1, &["a1 ok live".to_string()]);
    let size = std::fs::metadata(&a1).unwrap().len();
    seen.until(&mut stream, |s| s.positions.values().any(|p| *p == size))
        .await;

    // Inverted: the other lines. On the stderr stream only: nothing (all
    // lines are stdout).
    req.selector.as_mut().unwrap().invert = true;
    let mut stream = client.follow(req.clone()).await.unwrap().into_inner();
    let mut inverted = Seen::default();
    inverted.until(&mut stream, |s| s.caught_up).await;
    assert_eq!(inverted.texts("a/prod/web", 1).len(), 21);
    assert!(
        inverted
            .texts("a/prod/web", 1)
            .iter()
            .all(|t| !t.contains("ERROR"))
    );
    req.selector.as_mut().unwrap().streams = vec![Stream::Stderr as i32];
    let mut stream = client.follow(req).await.unwrap().into_inner();
    let mut none = Seen::default();
    none.until(&mut stream, |s| s.caught_up).await;
    assert_eq!(none.count(), 0);
    node.stop().await;
}

/// `min_level` runs on the node with the archive's parser: JSON, logfmt
/// and plain lines at the level or above pass; lines without a level and
/// lower ones do not, and still move the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_level_filter_runs_on_the_node_with_the_archive_s_parser() {
    let mut node = Node::new().await;
    let log = node.sandbox("t-l0", "l/prod/api", 0);
    let lines: Vec<String> = [
        r#"{"level":"error","msg":"json error"}"#,
        r#"{"severity":"INFO","msg":"json info"}"#,
        "ts=1 level=warn msg=\"logfmt warn\"",
        "ts=2 level=debug msg=\"logfmt debug\"",
        "2026-12-07 10:00:00 WARN plain warn",
        "E1207 10:00:00.000000 1 x.go:1] glog error",
        "panic: plain fatal",
        "no level at all",
        "an error in prose",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    append(&log, &lines);
    node.read_lines(lines.len() as u64).await;
    let mut client = node.client(ADMIN).await;
    let mut req = request("l", 100);
    req.selector.as_mut().unwrap().min_level = "WARNING".into();
    let mut stream = client.follow(req.clone()).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;
    let want: Vec<String> = [0, 2, 4, 5, 6].iter().map(|&i| lines[i].clone()).collect();
    assert_eq!(seen.texts("l/prod/api", 0), want);
    // Lines left out still move the position.
    append(&log, &["no level, live".to_string()]);
    let size = std::fs::metadata(&log).unwrap().len();
    seen.until(&mut stream, |s| s.positions.values().any(|p| *p == size))
        .await;

    req.selector.as_mut().unwrap().min_level = "loud".into();
    let err = match client.follow(req).await {
        Ok(mut stream) => stream.get_mut().message().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("selector.min_level: unknown level"),
        "{}",
        err.message()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_see_only_roles_they_may_read() {
    let mut node = Node::new().await;
    append(
        &node.sandbox("t-a0", "a/prod/web", 0),
        &numbered("a0", 0..5),
    );
    append(&node.sandbox("t-b0", "b/prod/db", 0), &numbered("b0", 0..5));
    node.read_lines(10).await;

    let mut anonymous = TailClient::new(
        Channel::from_shared(format!("http://{}", node.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let refused = anonymous.follow(request("*", 5)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut alice = node.client(ALICE).await;
    let refused = alice.follow(request("b/prod/db", 5)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("alice"), "{refused}");

    let mut stream = alice.follow(request("*", 5)).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 0..5));
    assert!(seen.texts("b/prod/db", 0).is_empty());
    assert!(seen.who.values().all(|w| w.0.starts_with("a/")));

    let bad = alice
        .follow(FollowRequest {
            selector: Some(Selector {
                job: "a".into(),
                regex: "(unclosed".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("selector.regex"), "{bad}");
    let bad = alice.follow(request("a/b/c/d", 0)).await.unwrap_err();
    assert!(bad.message().contains("selector.job"), "{bad}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_has_no_gap_and_no_duplicate() {
    let mut node = Node::new().await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    append(&a0, &numbered("a0", 0..10));
    node.read_lines(10).await;
    let mut client = node.client(ADMIN).await;
    let req = request("a/prod/web", 1000);
    let mut stream = client.follow(req.clone()).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.count() >= 10 && s.caught_up)
        .await;
    drop(stream);

    // Written while disconnected, including a whole new source.
    append(&a0, &numbered("a0", 10..25));
    let a1 = node.sandbox("t-a1", "a/prod/web", 1);
    append(&a1, &numbered("a1", 0..7));
    node.read_lines(32).await;

    let mut stream = client
        .follow(seen.resume(req.clone()))
        .await
        .unwrap()
        .into_inner();
    seen.until(&mut stream, |s| s.count() >= 32 && s.caught_up)
        .await;
    append(&a0, &numbered("a0", 25..30));
    seen.until(&mut stream, |s| s.count() >= 37).await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 0..30));
    assert_eq!(seen.texts("a/prod/web", 1), numbered("a1", 0..7));
    seen.assert_once_in_order();
    drop(stream);

    // Across a shipper restart: the tracker re-reads from its checkpoint,
    // the positions keep what was already seen out.
    node.stop().await;
    append(&a0, &numbered("a0", 30..40));
    node.start(|_| {}).await;
    let mut client = node.client(ADMIN).await;
    let mut stream = client.follow(seen.resume(req)).await.unwrap().into_inner();
    seen.until(&mut stream, |s| s.count() >= 47).await;
    append(&a1, &numbered("a1", 7..9));
    seen.until(&mut stream, |s| s.count() >= 49).await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 0..40));
    assert_eq!(seen.texts("a/prod/web", 1), numbered("a1", 0..9));
    seen.assert_once_in_order();
    node.stop().await;
}

/// A file that was still empty when the stream broke (a task's stderr
/// before its first error) was never announced to the client, so it is not
/// among the positions the client resumes with, although the shipper had
/// found it long before: the lines written to it meanwhile come from its
/// start, not from where the shipper's reading stood at the reconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_empty_when_the_stream_broke_is_resumed_from_its_start() {
    let mut node = Node::new().await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    append(&a0, &numbered("a0", 0..3));
    node.read_lines(3).await;
    let mut client = node.client(ADMIN).await;
    let req = request("a/prod/web", 100);
    let mut stream = client.follow(req.clone()).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up && s.count() >= 3)
        .await;

    let a1 = node.sandbox("t-a1", "a/prod/web", 1);
    std::fs::File::create(&a1).unwrap();
    let metrics = node.shipper.as_ref().unwrap().metrics();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.files_tracked.get() < 2 {
        assert!(Instant::now() < deadline, "the empty file is not tracked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Followed well past the resume slack (2 s) after the file was found.
    let found = Instant::now();
    seen.until(&mut stream, move |_| {
        found.elapsed() > Duration::from_secs(3)
    })
    .await;
    drop(stream);

    append(&a1, &numbered("a1", 0..5));
    node.read_lines(8).await;
    let mut stream = client.follow(seen.resume(req)).await.unwrap().into_inner();
    seen.until(&mut stream, |s| s.count() >= 8).await;
    assert_eq!(seen.texts("a/prod/web", 1), numbered("a1", 0..5));
    seen.assert_once_in_order();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_falls_behind_catches_up_from_the_files() {
    // Reads not coalesced: each append is its own chunk.
    let mut node = Node::with(|c| {
        c.tail_buffer = 1;
        c.coalesce_ms = 0;
    })
    .await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    let mut client = node.client(ADMIN).await;
    let mut stream = client.follow(request("a", 0)).await.unwrap().into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;
    // Many small appends, each its own chunk, while the client reads
    // nothing: the tap overflows.
    for i in 0..200 {
        append(&a0, &numbered("a0", i * 50..(i + 1) * 50));
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    node.read_lines(10_000).await;
    seen.until(&mut stream, |s| s.count() >= 10_000).await;
    let metrics = node.shipper.as_ref().unwrap().metrics();
    assert!(metrics.tail_catch_ups.get() > 0, "the tap never overflowed");
    assert_eq!(metrics.tail_streams.get(), 1);
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 0..10_000));
    seen.assert_once_in_order();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_messages_and_cluster_events_of_selected_jobs() {
    let mut node = Node::new().await;
    let a0 = node.sandbox("t-a0", "a/prod/web", 0);
    append(&a0, &numbered("a0", 0..5));
    node.read_lines(5).await;
    let mut client = node.client(ADMIN).await;
    let mut stream = client
        .follow(request("a/prod/web", 0))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    seen.until(&mut stream, |s| s.caught_up).await;

    let sink = node.shipper.as_ref().unwrap().event_sink();
    for (job, instance) in [("b/prod/db", 0), ("a/prod/web", 0)] {
        sink.emit(ClusterEvent {
            id: format!("test/{job}"),
            ts_unix_nanos: 1,
            kind: EventKind::TaskState as i32,
            job: job.into(),
            instance: Some(instance),
            reason: "restarted".into(),
            ..Default::default()
        });
    }
    seen.until(&mut stream, |s| !s.events.is_empty()).await;
    assert_eq!(seen.events[0].job, "a/prod/web");

    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&a0)
        .unwrap();
    append(&a0, &numbered("new", 0..2));
    seen.until(&mut stream, |s| {
        s.lifecycle.iter().any(|l| l.0 == Kind::SourceTruncated) && s.count() >= 2
    })
    .await;
    assert_eq!(seen.texts("a/prod/web", 0), numbered("new", 0..2));
    assert_eq!(seen.events.len(), 1, "the other job's event is not shown");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_follow_ends_after_the_backfill() {
    let mut node = Node::new().await;
    append(
        &node.sandbox("t-a0", "a/prod/web", 0),
        &numbered("a0", 0..50),
    );
    node.read_lines(50).await;
    let mut client = node.client(ADMIN).await;
    let mut req = request("a", 7);
    req.no_follow = true;
    let mut stream = client.follow(req).await.unwrap().into_inner();
    let mut seen = Seen::default();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        seen.take(message);
    }
    assert!(seen.caught_up);
    assert_eq!(seen.texts("a/prod/web", 0), numbered("a0", 43..50));
    node.stop().await;
}
