//! One `Tail.Follow` stream per node, kept alive for as long as the node is
//! followed.
//!
//! The follower remembers, per source, the next offset it expects (from
//! the lines it received, `SOURCE_APPEARED` and the positions heartbeats
//! carry for lines the node's filter left out) and the server time of the
//! last message. A stream that breaks (the node restarted, the network
//! failed, five seconds without a heartbeat) is opened again with those
//! positions and that time: the node continues each known source where it
//! stopped and sends sources that appeared since from their first line, so
//! nothing is missed and nothing is shown twice. Lines below a source's
//! position are dropped here as well, so a duplicate from the node cannot
//! reach the screen either.
//!
//! A node that stays unreachable is reported once (after five seconds) and
//! again when it is back; the follower keeps trying, with backoff, at the
//! address the scheduler gives for the node (a restarted node listens on a
//! new port).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_schema::pb::lifecycle::Kind as LifecycleKind;
use sluice_schema::pb::tail_client::TailClient;
use sluice_schema::pb::tail_message::Kind as Msg;
use sluice_schema::pb::{
    ClusterEvent, FollowRequest, Line, Position, Selector, Source, TailMessage,
};
use tokio::sync::{mpsc, watch};

use crate::client;
use crate::cluster::{is_fatal, status_error};
use crate::render::Notice;

/// Heartbeat period asked of the node.
const HEARTBEAT_MS: u32 = 1000;
/// A stream without a message this long is broken.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A node unreachable this long is reported.
pub const DOWN_REPORT_AFTER: Duration = Duration::from_secs(5);
/// With `--no-follow`, a node unreachable this long is given up.
const NO_FOLLOW_GIVE_UP: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Largest message accepted (a node sends at most 256 KiB of text in one).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What every stream of the session asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which lines the nodes send: job glob, instances, streams, processes and
    /// `--grep`, applied on the nodes.
    pub selector: Selector,
    /// Backfill asked of each node: the last N lines of each source; 0: none,
    /// or with `since_unix_nanos` every line since then.
    pub backfill_lines: u32,
    /// Backfill only lines read since this time, in Unix nanoseconds; 0: no
    /// time bound.
    pub since_unix_nanos: i64,
    /// `--no-follow`: each node sends its backfill, then ends the stream.
    pub no_follow: bool,
    /// Keep only the last this-many backfill lines per instance (0: all).
    pub trim: usize,
    /// Bearer token sent to the nodes' Tail services.
    pub token: String,
    /// PEM of the CA the nodes' certificates are checked against.
    pub ca: Option<String>,
}

/// How a node's first stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the backfill asked for (nodes known when tailll started).
    Backfill,
    /// Sources that appeared since this time, from their first line (nodes
    /// an instance moved to later).
    NewSince(i64),
}

/// Where the session stands on one node; kept when the node is no longer
/// followed, in case it is followed again.
#[derive(Debug, Clone)]
pub struct HostState {
    positions: HashMap<u64, u64>,
    last_ts: i64,
    start: Start,
    caught_up: bool,
}

impl HostState {
    /// A node not read yet, whose first stream starts as `start` says.
    pub fn new(start: Start) -> Self {
        HostState {
            positions: HashMap::new(),
            last_ts: 0,
            start,
            caught_up: false,
        }
    }
}

/// What followers tell the session.
#[derive(Debug)]
pub enum Feed {
    /// Lines of one source from a node, in offset order, none sent before.
    Lines {
        /// Name of the node they came from.
        host: Arc<str>,
        /// The file generation they are in (job, instance, run, stream, …).
        source: Arc<Source>,
        /// The lines; never empty.
        lines: Vec<Line>,
    },
    /// A cluster event of a selected job, sent by the node; the session shows
    /// each event id once.
    Event(ClusterEvent),
    /// A lifecycle line of the node (a truncated file).
    Notice(Notice),
    /// For stderr, always: a node down or back, lines lost.
    Warning(String),
    /// The node's backfill is done.
    CaughtUp(Arc<str>),
    /// The stream broke: the scheduler may know better where the node is.
    Broken(Arc<str>),
    /// `--no-follow`: the node sent everything (`ok`) or was given up.
    Done {
        /// The node whose stream ended.
        host: Arc<str>,
        /// Whether the node sent its whole backfill (`false`: given up as
        /// unreachable).
        ok: bool,
    },
    /// A stopped follower's state.
    Parked {
        /// The node let go of.
        host: Arc<str>,
        /// Its positions, so that following it again resumes without a gap or
        /// duplicate.
        state: HostState,
    },
    /// The node refused the stream for good (token, permission); the session
    /// ends with this error.
    Fatal(anyhow::Error),
}

/// Follows one node: a `Tail.Follow` stream, opened again where it stopped
/// whenever it breaks.
pub struct Follower {
    host: Arc<str>,
    endpoint: watch::Receiver<String>,
    plan: Arc<Plan>,
    state: HostState,
    out: mpsc::Sender<Feed>,
    /// Backfill held for trimming (`-n` per instance), per instance, in
    /// arrival order.
    held: HashMap<(String, u32), Held>,
}

/// One instance's held lines, with their sources.
type Held = Vec<(Arc<Source>, Line)>;

/// How one connection ended.
enum Outcome {
    Done,
    Stopped,
    Broken { error: String, lasted: Duration },
    Fatal(anyhow::Error),
}

/// The session stopped listening.
struct Gone;

impl Follower {
    /// A follower of `host` at the address `endpoint` holds (updated as the
    /// scheduler says), starting from `state` and telling the session through
    /// `out`.
    pub fn new(
        host: Arc<str>,
        endpoint: watch::Receiver<String>,
        plan: Arc<Plan>,
        state: HostState,
        out: mpsc::Sender<Feed>,
    ) -> Self {
        Follower {
            host,
            endpoint,
            plan,
            state,
            out,
            held: HashMap::new(),
        }
    }

    /// Follows until `stop` turns true (then parks its state), the stream
    /// is done (`--no-follow`) or refused for good.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        let mut down: Option<Instant> = None;
        let mut reported = false;
        loop {
            if *stop.borrow() {
                return self.park().await;
            }
            let endpoint = self.endpoint.borrow_and_update().clone();
            let outcome = self
                .attempt(&endpoint, &mut stop, &mut down, &mut reported)
                .await;
            let (error, lasted) = match outcome {
                Outcome::Stopped => return self.park().await,
                Outcome::Done => {
                    let _ = self
                        .out
                        .send(Feed::Done {
                            host: self.host.clone(),
                            ok: true,
                        })
                        .await;
                    return;
                }
                Outcome::Fatal(e) => {
                    let _ = self.out.send(Feed::Fatal(e)).await;
                    return;
                }
                Outcome::Broken { error, lasted } => (error, lasted),
            };
            if lasted > Duration::from_secs(1) {
                backoff = MIN_BACKOFF;
            }
            let since = *down.get_or_insert_with(Instant::now);
            if self
                .out
                .send(Feed::Broken(self.host.clone()))
                .await
                .is_err()
            {
                return;
            }
            if !reported && since.elapsed() >= DOWN_REPORT_AFTER {
                reported = true;
                let warning = format!(
                    "{} ({endpoint}) unreachable for {}s: {error}; still trying",
                    self.host,
                    since.elapsed().as_secs()
                );
                if self.out.send(Feed::Warning(warning)).await.is_err() {
                    return;
                }
            }
            if self.plan.no_follow && since.elapsed() >= NO_FOLLOW_GIVE_UP {
                let warning = format!("{} ({endpoint}): gave up: {error}", self.host);
                let _ = self.out.send(Feed::Warning(warning)).await;
                let _ = self
                    .out
                    .send(Feed::Done {
                        host: self.host.clone(),
                        ok: false,
                    })
                    .await;
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
                // A new address: try it now.
                _ = self.endpoint.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn park(self) {
        let _ = self
            .out
            .send(Feed::Parked {
                host: self.host.clone(),
                state: self.state,
            })
            .await;
    }

    fn request(&self) -> FollowRequest {
        let mut request = FollowRequest {
            selector: Some(self.plan.selector.clone()),
            no_follow: self.plan.no_follow,
            heartbeat_ms: HEARTBEAT_MS,
            ..Default::default()
        };
        if self.state.last_ts != 0 {
            request.resume = self
                .state
                .positions
                .iter()
                .map(|(id, offset)| Position {
                    source_id: *id,
                    offset: *offset,
                })
                .collect();
            request.resume_after_unix_nanos = self.state.last_ts;
        } else {
            match self.state.start {
                Start::Backfill => {
                    request.backfill_lines = self.plan.backfill_lines;
                    request.since_unix_nanos = self.plan.since_unix_nanos;
                }
                Start::NewSince(t) => request.resume_after_unix_nanos = t,
            }
        }
        request
    }

    async fn attempt(
        &mut self,
        endpoint: &str,
        stop: &mut watch::Receiver<bool>,
        down: &mut Option<Instant>,
        reported: &mut bool,
    ) -> Outcome {
        let began = Instant::now();
        let broken = |error: String| Outcome::Broken {
            error,
            lasted: began.elapsed(),
        };
        let opened = async {
            let channel =
                client::connect(endpoint, &self.plan.token, self.plan.ca.as_deref()).await?;
            let mut tail = TailClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            Ok::<_, anyhow::Error>(tail.follow(self.request()).await)
        };
        let response = tokio::select! {
            r = opened => r,
            _ = stop.changed() => return Outcome::Stopped,
        };
        let mut stream = match response {
            Err(e) => return broken(format!("{e:#}")),
            Ok(Err(status)) if is_fatal(status.code()) => {
                return Outcome::Fatal(status_error(
                    &format!("the Tail service of {}", self.host),
                    endpoint,
                    &status,
                ));
            }
            Ok(Err(status)) => return broken(format!("{}: {}", status.code(), status.message())),
            Ok(Ok(response)) => response.into_inner(),
        };
        if let Some(since) = down.take()
            && std::mem::take(reported)
        {
            let back = format!(
                "{} ({endpoint}) is back after {}s",
                self.host,
                since.elapsed().as_secs()
            );
            if self.out.send(Feed::Warning(back)).await.is_err() {
                return Outcome::Stopped;
            }
        }
        let mut caught_up = false;
        loop {
            if *self.endpoint.borrow() != endpoint {
                return broken(format!("moved to {}", *self.endpoint.borrow()));
            }
            let message = tokio::select! {
                m = tokio::time::timeout(IDLE_TIMEOUT, stream.message()) => m,
                _ = stop.changed() => return Outcome::Stopped,
                _ = self.endpoint.changed() => continue,
            };
            let Ok(message) = message else {
                return broken(format!("no message for {}s", IDLE_TIMEOUT.as_secs()));
            };
            match message {
                Ok(Some(message)) => {
                    if matches!(message.kind, Some(Msg::CaughtUp(_))) {
                        caught_up = true;
                    }
                    if self.take(message).await.is_err() {
                        return Outcome::Stopped;
                    }
                }
                Ok(None) if self.plan.no_follow && caught_up => return Outcome::Done,
                Ok(None) => return broken("the stream ended".into()),
                Err(status) if is_fatal(status.code()) => {
                    return Outcome::Fatal(status_error(
                        &format!("the Tail service of {}", self.host),
                        endpoint,
                        &status,
                    ));
                }
                Err(status) => {
                    return broken(format!("{}: {}", status.code(), status.message()));
                }
            }
        }
    }

    /// Whether backfill lines are held for trimming now.
    fn holding(&self) -> bool {
        self.plan.trim > 0 && !self.state.caught_up && self.state.start == Start::Backfill
    }

    async fn take(&mut self, message: TailMessage) -> Result<(), Gone> {
        self.state.last_ts = self.state.last_ts.max(message.ts_unix_nanos);
        let Some(kind) = message.kind else {
            return Ok(());
        };
        match kind {
            Msg::Lines(chunk) => {
                let Some(source) = chunk.source else {
                    return Ok(());
                };
                let position = self.state.positions.entry(source.source_id).or_insert(0);
                let mut lines = chunk.lines;
                lines.retain(|line| {
                    let fresh = line.offset >= *position;
                    if fresh {
                        *position = line.offset + u64::from(line.raw_len);
                    }
                    fresh
                });
                if lines.is_empty() {
                    return Ok(());
                }
                let source = Arc::new(source);
                if self.holding() {
                    let held = self
                        .held
                        .entry((source.job.clone(), source.instance))
                        .or_default();
                    held.extend(lines.into_iter().map(|l| (source.clone(), l)));
                    return Ok(());
                }
                self.send(Feed::Lines {
                    host: self.host.clone(),
                    source,
                    lines,
                })
                .await
            }
            Msg::Lifecycle(l) => {
                let Some(source) = l.source else {
                    return Ok(());
                };
                match LifecycleKind::try_from(l.kind) {
                    Ok(LifecycleKind::SourceAppeared) => {
                        self.state
                            .positions
                            .entry(source.source_id)
                            .or_insert(l.offset);
                        Ok(())
                    }
                    Ok(LifecycleKind::SourceTruncated) => {
                        self.send(Feed::Notice(Notice {
                            ts: message.ts_unix_nanos,
                            job: source.job.clone(),
                            instance: Some(source.instance),
                            text: format!(
                                "{} was truncated on {}; it continues from its start",
                                source.path, source.host
                            ),
                        }))
                        .await
                    }
                    Ok(LifecycleKind::Gap) => {
                        self.send(Feed::Warning(format!(
                            "[{} {}] lines lost on {}: {}",
                            source.job, source.instance, source.host, l.message
                        )))
                        .await
                    }
                    _ => Ok(()),
                }
            }
            Msg::Heartbeat(h) => {
                for p in h.positions {
                    let at = self.state.positions.entry(p.source_id).or_insert(0);
                    *at = (*at).max(p.offset);
                }
                Ok(())
            }
            Msg::Event(e) => self.send(Feed::Event(e)).await,
            Msg::CaughtUp(_) => {
                if !self.state.caught_up {
                    self.release_held().await?;
                    self.state.caught_up = true;
                }
                self.send(Feed::CaughtUp(self.host.clone())).await
            }
        }
    }

    /// Sends the last `trim` held lines of each instance (by timestamp),
    /// each source's in order.
    async fn release_held(&mut self) -> Result<(), Gone> {
        let trim = self.plan.trim;
        for (_, lines) in std::mem::take(&mut self.held) {
            let keep = trimmed(&lines, trim);
            let mut batch: Vec<Line> = Vec::new();
            let mut current: Option<Arc<Source>> = None;
            for ((source, line), keep) in lines.into_iter().zip(keep) {
                if !keep {
                    continue;
                }
                if current
                    .as_ref()
                    .is_some_and(|c| c.source_id != source.source_id)
                {
                    let source = current.take().expect("checked");
                    self.send(Feed::Lines {
                        host: self.host.clone(),
                        source,
                        lines: std::mem::take(&mut batch),
                    })
                    .await?;
                }
                current.get_or_insert(source);
                batch.push(line);
            }
            if let Some(source) = current {
                self.send(Feed::Lines {
                    host: self.host.clone(),
                    source,
                    lines: batch,
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn send(&self, feed: Feed) -> Result<(), Gone> {
        self.out.send(feed).await.map_err(|_| Gone)
    }
}

/// Which of `lines` (one instance's, in arrival order) are among the last
/// `n` by timestamp (ties: the later arrival wins).
fn trimmed(lines: &[(Arc<Source>, Line)], n: usize) -> Vec<bool> {
    if lines.len() <= n {
        return vec![true; lines.len()];
    }
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by_key(|&i| (lines[i].1.ts_unix_nanos, i));
    let mut keep = vec![false; lines.len()];
    for &i in &order[lines.len() - n..] {
        keep[i] = true;
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(offset: u64, ts: i64) -> Line {
        Line {
            offset,
            raw_len: 10,
            ts_unix_nanos: ts,
            ..Default::default()
        }
    }

    #[test]
    fn trimming_keeps_the_latest_lines_of_an_instance() {
        let a = Arc::new(Source {
            source_id: 1,
            ..Default::default()
        });
        let b = Arc::new(Source {
            source_id: 2,
            ..Default::default()
        });
        // Run 0 (a) then run 1 (b), as a node sends them: source by source.
        let lines = vec![
            (a.clone(), line(0, 10)),
            (a.clone(), line(10, 20)),
            (a.clone(), line(20, 30)),
            (b.clone(), line(0, 25)),
            (b.clone(), line(10, 40)),
        ];
        assert_eq!(trimmed(&lines, 3), [false, false, true, true, true]);
        assert_eq!(trimmed(&lines, 10), [true; 5]);
        assert_eq!(trimmed(&lines, 0), [false; 5]);
    }

    fn follower(start: Start, trim: usize) -> (Follower, mpsc::Receiver<Feed>) {
        let (tx, rx) = mpsc::channel(64);
        let plan = Plan {
            selector: Selector::default(),
            backfill_lines: 7,
            since_unix_nanos: 0,
            no_follow: false,
            trim,
            token: "t".into(),
            ca: None,
        };
        let (_, endpoint) = watch::channel("http://x".to_string());
        (
            Follower::new(
                "node-0".into(),
                endpoint,
                Arc::new(plan),
                HostState::new(start),
                tx,
            ),
            rx,
        )
    }

    fn message(ts: i64, kind: Msg) -> TailMessage {
        TailMessage {
            ts_unix_nanos: ts,
            kind: Some(kind),
        }
    }

    fn chunk(source_id: u64, offsets: &[u64]) -> Msg {
        Msg::Lines(sluice_schema::pb::LogChunk {
            source: Some(Source {
                source_id,
                job: "a/b/c".into(),
                ..Default::default()
            }),
            lines: offsets.iter().map(|o| line(*o, *o as i64)).collect(),
            shipped_at_unix_nanos: 0,
        })
    }

    fn offsets(feed: Feed) -> Vec<u64> {
        match feed {
            Feed::Lines { lines, .. } => lines.iter().map(|l| l.offset).collect(),
            other => panic!("not lines: {other:?}"),
        }
    }

    #[tokio::test]
    async fn positions_drop_duplicates_and_make_the_resume_request() {
        let (mut f, mut rx) = follower(Start::Backfill, 0);
        let first = f.request();
        assert_eq!(first.backfill_lines, 7);
        assert!(first.resume.is_empty() && first.resume_after_unix_nanos == 0);

        f.take(message(5, chunk(1, &[0, 10, 20])))
            .await
            .ok()
            .unwrap();
        assert_eq!(offsets(rx.recv().await.unwrap()), [0, 10, 20]);
        // A node re-sending lines below the position: dropped.
        f.take(message(6, chunk(1, &[10, 20, 30])))
            .await
            .ok()
            .unwrap();
        assert_eq!(offsets(rx.recv().await.unwrap()), [30]);
        f.take(message(7, chunk(1, &[0]))).await.ok().unwrap();
        assert!(rx.try_recv().is_err(), "all duplicates: nothing sent");
        // A heartbeat moves a position past filtered lines.
        f.take(message(
            9,
            Msg::Heartbeat(sluice_schema::pb::Heartbeat {
                host: "node-0".into(),
                positions: vec![Position {
                    source_id: 2,
                    offset: 500,
                }],
            }),
        ))
        .await
        .ok()
        .unwrap();

        let resume = f.request();
        assert_eq!(resume.backfill_lines, 0, "no backfill twice");
        assert_eq!(resume.resume_after_unix_nanos, 9);
        let mut positions: Vec<(u64, u64)> = resume
            .resume
            .iter()
            .map(|p| (p.source_id, p.offset))
            .collect();
        positions.sort();
        assert_eq!(positions, [(1, 40), (2, 500)]);
    }

    #[tokio::test]
    async fn a_node_found_later_starts_with_sources_new_since_then() {
        let (f, _rx) = follower(Start::NewSince(1234), 0);
        let r = f.request();
        assert_eq!((r.backfill_lines, r.resume_after_unix_nanos), (0, 1234));
        assert!(r.resume.is_empty());
    }

    #[tokio::test]
    async fn backfill_is_trimmed_per_instance_at_caught_up() {
        let (mut f, mut rx) = follower(Start::Backfill, 2);
        f.take(message(1, chunk(1, &[0, 10, 20])))
            .await
            .ok()
            .unwrap();
        f.take(message(1, chunk(2, &[30, 40]))).await.ok().unwrap();
        assert!(rx.try_recv().is_err(), "held until caught up");
        f.take(message(2, Msg::CaughtUp(Default::default())))
            .await
            .ok()
            .unwrap();
        // Timestamps equal offsets: the last two are 30 and 40, of source 2.
        assert_eq!(offsets(rx.recv().await.unwrap()), [30, 40]);
        assert!(matches!(rx.recv().await.unwrap(), Feed::CaughtUp(_)));
        // Live lines pass straight through.
        f.take(message(3, chunk(1, &[30]))).await.ok().unwrap();
        assert_eq!(offsets(rx.recv().await.unwrap()), [30]);
    }
}
