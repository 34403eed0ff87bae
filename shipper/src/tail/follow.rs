//! One `Follow` stream: which sources it selects, where it stands in each,
//! and the loop that turns tap items and file reads into messages.
//!
//! Every selected source has a *position*: the offset of the next line the
//! stream would send. Lines below it are never sent again (a tracker that
//! re-reads after a failed send, a shipper restarted from its checkpoint,
//! a tap item already covered by a file read), and a line at or past it is
//! never skipped: it comes from the tap or, after the stream fell behind,
//! from the file. That is the whole no-gap, no-duplicate argument, and it
//! holds across reconnections because the client sends positions back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sluice_schema::auth::Principal;
use sluice_schema::fields::{self, Level};
use sluice_schema::glob::JobGlob;
use sluice_schema::pb::lifecycle::Kind;
use sluice_schema::pb::tail_message::Kind as Msg;
use sluice_schema::pb::{
    CaughtUp, ClusterEvent, FollowRequest, Heartbeat, Lifecycle, Line, LogChunk, Position, Source,
    TailMessage,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

use super::TailShared;
use super::backfill;
use crate::files::lines::{LineAssembler, LineOut};
use crate::pipeline::Hint;
use crate::pipeline::tap::{SnapshotRequest, SourceView, TapItem};
use sluice_schema::time::now_unix_nanos as now_nanos;

/// A source appearing this close before the resume point counts as new
/// (clocks of one host; this is the slack for the send/receive race).
const RESUME_SLACK_NANOS: i64 = 2_000_000_000;
/// Bytes read from a file per step of a catch-up.
const READ_STEP: usize = 1 << 20;
/// Text per `lines` message.
const MESSAGE_BYTES: usize = 256 << 10;
/// Most bytes of a regular expression once compiled.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) type Out = mpsc::Sender<Result<TailMessage, Status>>;

/// The request, checked.
pub(super) struct Plan {
    pub glob: JobGlob,
    instances: HashSet<u32>,
    streams: HashSet<i32>,
    processes: HashSet<String>,
    regex: Option<regex::bytes::Regex>,
    invert: bool,
    min_level: Option<Level>,
    principal: Arc<Principal>,
    backfill_lines: u32,
    since: Option<i64>,
    resume: HashMap<u64, u64>,
    resume_after: Option<i64>,
    follow: bool,
    heartbeat: Duration,
}

impl Plan {
    pub(super) fn new(request: FollowRequest, principal: Arc<Principal>) -> Result<Plan, Status> {
        let selector = request.selector.unwrap_or_default();
        let glob = JobGlob::parse(&selector.job)
            .map_err(|e| Status::invalid_argument(format!("selector.job: {e}")))?;
        let regex = if selector.regex.is_empty() {
            None
        } else {
            Some(
                regex::bytes::RegexBuilder::new(&selector.regex)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| Status::invalid_argument(format!("selector.regex: {e}")))?,
            )
        };
        let min_level = match selector.min_level.as_str() {
            "" => None,
            text => Some(
                text.parse::<Level>()
                    .map_err(|e| Status::invalid_argument(format!("selector.min_level: {e}")))?,
            ),
        };
        let resuming = !request.resume.is_empty() || request.resume_after_unix_nanos != 0;
        Ok(Plan {
            glob,
            instances: selector.instances.into_iter().collect(),
            streams: selector.streams.into_iter().collect(),
            processes: selector.processes.into_iter().collect(),
            regex,
            invert: selector.invert,
            min_level,
            principal,
            backfill_lines: request.backfill_lines,
            since: (request.since_unix_nanos != 0).then_some(request.since_unix_nanos),
            resume: request
                .resume
                .iter()
                .map(|p| (p.source_id, p.offset))
                .collect(),
            resume_after: resuming.then_some(request.resume_after_unix_nanos),
            follow: !request.no_follow,
            heartbeat: Duration::from_millis(match request.heartbeat_ms {
                0 => 1000,
                ms => u64::from(ms).clamp(50, 60_000),
            }),
        })
    }

    /// Whether the stream follows this source (identity and permission).
    fn selects(&self, s: &Source) -> bool {
        self.selects_job(&s.job, Some(s.instance))
            && (self.streams.is_empty() || self.streams.contains(&s.stream))
            && (self.processes.is_empty() || self.processes.contains(&s.process))
    }

    fn selects_job(&self, job: &str, instance: Option<u32>) -> bool {
        let role = job.split('/').next().unwrap_or_default();
        self.glob.matches(job)
            && self.principal.may_read(role)
            && (self.instances.is_empty() || instance.is_none_or(|i| self.instances.contains(&i)))
    }

    fn selects_event(&self, e: &ClusterEvent) -> bool {
        !e.job.is_empty() && self.selects_job(&e.job, e.instance)
    }

    /// Whether a line's text passes the regular expression and the level.
    fn passes(&self, text: &[u8]) -> bool {
        self.regex
            .as_ref()
            .is_none_or(|r| r.is_match(text) != self.invert)
            && self.min_level.is_none_or(|min| {
                // Read as the archive reads it: the text with invalid
                // UTF-8 replaced.
                fields::level(String::from_utf8_lossy(text).as_bytes()).is_some_and(|l| l >= min)
            })
    }

    fn filter(&self) -> Box<dyn Fn(&Source) -> bool + Send> {
        let plan = Plan {
            glob: self.glob.clone(),
            instances: self.instances.clone(),
            streams: self.streams.clone(),
            processes: self.processes.clone(),
            regex: None,
            invert: false,
            min_level: None,
            principal: self.principal.clone(),
            backfill_lines: 0,
            since: None,
            resume: HashMap::new(),
            resume_after: None,
            follow: false,
            heartbeat: self.heartbeat,
        };
        Box::new(move |s| plan.selects(s))
    }
}

/// The client went away (or the shipper is stopping): end the stream.
struct Gone;

struct Session {
    shared: Arc<TailShared>,
    plan: Plan,
    out: Out,
    /// Next offset to send, per selected source.
    positions: HashMap<u64, u64>,
    /// Sources seen, selected or not (a tap chunk of an unseen source is
    /// decoded once to find out).
    seen: HashMap<u64, bool>,
    /// Sources whose position moved past lines the regex left out, since
    /// the last heartbeat.
    moved: HashSet<u64>,
}

pub(super) async fn run(shared: Arc<TailShared>, plan: Plan, out: Out) {
    shared.metrics.tail_streams.inc();
    let metrics = shared.metrics.clone();
    stream(shared, plan, out).await;
    metrics.tail_streams.sub(1);
}

async fn stream(shared: Arc<TailShared>, plan: Plan, out: Out) {
    let mut tap = shared.tap.subscribe();
    let follow = plan.follow;
    let heartbeat = plan.heartbeat;
    let mut session = Session {
        shared,
        plan,
        out,
        positions: HashMap::new(),
        seen: HashMap::new(),
        moved: HashSet::new(),
    };
    if session.sync(true).await.is_err() || session.send(Msg::CaughtUp(CaughtUp {})).await.is_err()
    {
        return;
    }
    if !follow {
        return;
    }
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            item = tap.recv() => match item {
                Ok(item) => session.tap(item).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "tail follower fell behind; catching up from the files");
                    session.shared.metrics.tail_catch_ups.inc();
                    session.sync(false).await
                }
                Err(broadcast::error::RecvError::Closed) => Err(Gone),
            },
            _ = ticks.tick() => session.heartbeat().await,
            () = session.out.closed() => Err(Gone),
        };
        if step.is_err() {
            return;
        }
    }
}

impl Session {
    async fn send(&self, kind: Msg) -> Result<(), Gone> {
        let message = TailMessage {
            ts_unix_nanos: now_nanos(),
            kind: Some(kind),
        };
        self.out.send(Ok(message)).await.map_err(|_| Gone)
    }

    /// Brings every selected source up to what the tracker has sent, from
    /// the files: the first time, by the request's backfill or resume
    /// points; after falling behind, from the stream's own positions.
    async fn sync(&mut self, first: bool) -> Result<(), Gone> {
        let (reply, views) = oneshot::channel();
        let request = SnapshotRequest {
            filter: self.plan.filter(),
            reply,
        };
        if self.shared.hints.send(Hint::Snapshot(request)).is_err() {
            return Err(Gone);
        }
        let mut views = views.await.map_err(|_| Gone)?;
        views.sort_by(|a, b| {
            (&a.source.job, a.source.instance, &a.source.path).cmp(&(
                &b.source.job,
                b.source.instance,
                &b.source.path,
            ))
        });
        for view in views {
            let id = view.source.source_id;
            self.seen.insert(id, true);
            let start = match self.positions.get(&id) {
                Some(at) => *at,
                None => {
                    let start = self.start(&view, first).await;
                    let announced = !(first && self.plan.resume.contains_key(&id));
                    if announced {
                        self.appeared(&view.source, start).await?;
                    }
                    start
                }
            };
            self.positions.insert(id, start);
            if start < view.read_end {
                self.read_back(view, start).await?;
            }
        }
        Ok(())
    }

    /// Where a source the stream does not know yet starts.
    async fn start(&self, view: &SourceView, first: bool) -> u64 {
        let id = view.source.source_id;
        if !first {
            // Appeared while the stream was behind: all of it.
            return 0;
        }
        if let Some(at) = self.plan.resume.get(&id) {
            return *at;
        }
        if let Some(after) = self.plan.resume_after {
            return if view.first_seen_nanos >= after - RESUME_SLACK_NANOS {
                0
            } else {
                view.read_end
            };
        }
        if self.plan.backfill_lines == 0 && self.plan.since.is_none() {
            return view.read_end;
        }
        let Some(file) = self.open(view) else {
            return view.read_end;
        };
        let (lines, since, end) = (self.plan.backfill_lines, self.plan.since, view.read_end);
        let samples = view.samples.clone();
        tokio::task::spawn_blocking(move || {
            let by_lines = (lines > 0).then(|| backfill::last_lines_start(&file, end, lines));
            let by_time = since.map(|t| backfill::since_start(&file, &samples, end, t));
            let start = match (by_lines, by_time) {
                (Some(a), Some(b)) => a?.max(b?),
                (Some(a), None) | (None, Some(a)) => a?,
                (None, None) => end,
            };
            Ok::<_, std::io::Error>(start)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(end)
    }

    /// The tracker's descriptor, or the file at its path if it is still
    /// the same file.
    fn open(&self, view: &SourceView) -> Option<std::fs::File> {
        if let Some(file) = &view.file {
            return file.try_clone().ok();
        }
        let file = std::fs::File::open(&view.path).ok()?;
        let meta = file.metadata().ok()?;
        (crate::files::source::FileKey::of(&meta) == view.key).then_some(file)
    }

    /// Sends the lines of `view` from `start` to what the tracker has sent.
    async fn read_back(&mut self, view: SourceView, start: u64) -> Result<(), Gone> {
        let id = view.source.source_id;
        let Some(file) = self.open(&view) else {
            self.send(Msg::Lifecycle(Lifecycle {
                kind: Kind::Gap as i32,
                source: Some(view.source.clone()),
                offset: start,
                message: format!(
                    "bytes {start}..{} of {} cannot be read back: the file is gone",
                    view.read_end, view.source.path
                ),
            }))
            .await?;
            self.positions.insert(id, view.read_end);
            return Ok(());
        };
        let file = Arc::new(file);
        let (framing, max_line_bytes) = (self.shared.framing, self.shared.max_line_bytes);
        let mut assembler = LineAssembler::new(framing, max_line_bytes, start);
        let end = view.read_end;
        loop {
            let f = file.clone();
            let step = tokio::task::spawn_blocking(move || {
                let mut lines = Vec::new();
                let done = backfill::read_some(&f, &mut assembler, end, READ_STEP, &mut lines);
                (assembler, lines, done)
            })
            .await;
            let Ok((back, lines, done)) = step else {
                return Err(Gone);
            };
            assembler = back;
            let samples = &view.samples;
            let lines: Vec<Line> = lines
                .into_iter()
                .map(|l| {
                    let ts = l
                        .ts_unix_nanos
                        .unwrap_or_else(|| sample_time(samples, l.offset));
                    to_line(l, ts)
                })
                .collect();
            self.deliver(&view.source, lines).await?;
            match done {
                Ok(false) => continue,
                Ok(true) => break,
                Err(e) => {
                    tracing::warn!(path = %view.path.display(), error = %e, "tail: failed to read back");
                    break;
                }
            }
        }
        let at = self.positions.entry(id).or_default();
        *at = (*at).max(end);
        Ok(())
    }

    /// Sends the lines at or past the source's position that pass the
    /// regex, and moves the position past all of them.
    async fn deliver(&mut self, source: &Source, lines: Vec<Line>) -> Result<(), Gone> {
        let id = source.source_id;
        let position = self.positions.get(&id).copied().unwrap_or(0);
        let mut next = position;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for line in lines {
            if line.offset < position {
                continue;
            }
            next = next.max(line.offset + u64::from(line.raw_len));
            if !self.plan.passes(&line.text) {
                continue;
            }
            bytes += line.text.len();
            batch.push(line);
            if bytes >= MESSAGE_BYTES {
                self.positions.insert(id, next);
                self.send_lines(source, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        self.positions.insert(id, next);
        if batch.is_empty() {
            if next > position {
                self.moved.insert(id);
            }
            return Ok(());
        }
        self.moved.remove(&id);
        self.send_lines(source, batch).await
    }

    async fn send_lines(&self, source: &Source, lines: Vec<Line>) -> Result<(), Gone> {
        self.send(Msg::Lines(LogChunk {
            source: Some(source.clone()),
            lines,
            shipped_at_unix_nanos: 0,
        }))
        .await
    }

    async fn appeared(&self, source: &Source, offset: u64) -> Result<(), Gone> {
        self.send(Msg::Lifecycle(Lifecycle {
            kind: Kind::SourceAppeared as i32,
            source: Some(source.clone()),
            offset,
            message: format!("following {} from byte {offset}", source.path),
        }))
        .await
    }

    async fn tap(&mut self, item: TapItem) -> Result<(), Gone> {
        match item {
            TapItem::Chunk { source_id, payload } => {
                if self.seen.get(&source_id) == Some(&false) {
                    return Ok(());
                }
                let Ok(chunk) = LogChunk::decode(payload) else {
                    return Ok(());
                };
                let Some(source) = chunk.source else {
                    return Ok(());
                };
                if !self.seen.contains_key(&source_id) {
                    let selected = self.plan.selects(&source);
                    self.seen.insert(source_id, selected);
                    if !selected {
                        return Ok(());
                    }
                    // New since the stream began: from its first line.
                    let first = chunk.lines.first().map_or(0, |l| l.offset);
                    self.positions.insert(source_id, first);
                    self.appeared(&source, first).await?;
                }
                self.deliver(&source, chunk.lines).await
            }
            TapItem::Lifecycle {
                kind,
                source,
                offset,
                message,
            } => {
                if self.seen.get(&source.source_id) != Some(&true) {
                    return Ok(());
                }
                self.send(Msg::Lifecycle(Lifecycle {
                    kind: kind as i32,
                    source: Some((*source).clone()),
                    offset,
                    message,
                }))
                .await
            }
            TapItem::Event(event) => {
                if !self.plan.selects_event(&event) {
                    return Ok(());
                }
                self.send(Msg::Event((*event).clone())).await
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), Gone> {
        let positions = self
            .moved
            .drain()
            .filter_map(|id| {
                self.positions.get(&id).map(|offset| Position {
                    source_id: id,
                    offset: *offset,
                })
            })
            .collect();
        self.send(Msg::Heartbeat(Heartbeat {
            host: self.shared.host.clone(),
            positions,
        }))
        .await
    }
}

fn to_line(l: LineOut, ts_unix_nanos: i64) -> Line {
    Line {
        offset: l.offset,
        raw_len: l.raw_len,
        ts_unix_nanos,
        text: l.text,
        partial: l.partial,
        truncated: false,
        unterminated: l.unterminated,
    }
}

/// About when the tracker read the line at `offset`, from its samples:
/// the last sample taken at or before it (reads between samples are up to
/// a second later).
fn sample_time(samples: &[(u64, i64)], offset: u64) -> i64 {
    samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= offset)
        .or(samples.first())
        .map_or_else(now_nanos, |(_, ts)| *ts)
}
