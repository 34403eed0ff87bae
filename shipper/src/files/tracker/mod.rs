//! The tracker: one thread that owns every tailed file.
//!
//! It discovers log files (inotify hints and periodic rescans), reads new
//! bytes with `pread`, turns them into chunks for the publisher and turns
//! the bus's acknowledgements into checkpoints and ship progress. What it
//! guarantees, file by file:
//!
//! - **Nothing lost while the file exists.** A file is read to its end
//!   before it is let go, also after a rename (rotation) or deletion (the
//!   descriptor stays open until the file has been quiet for
//!   `rotated_grace` and everything read was acknowledged).
//! - **Nothing acknowledged twice under different names.** A chunk's lines
//!   carry `(source_id, offset)`; after a failed send or a restart, reading
//!   resumes at the last acknowledged line, so re-sent lines carry the same
//!   names and the archive drops them.
//! - **Truncation** (`size < offset`) starts a new generation (new
//!   `source_id`), reports a `file_truncated` event, and a `data_loss` event
//!   for bytes written but never read — unless a copy of the file
//!   (copytruncate) holds them: a new file beside it whose first bytes match
//!   is read from where the original stopped.
//! - **Inode reuse** is a new generation: the birth time (or, where the
//!   filesystem has none, the first bytes) differ from the checkpoint's.
//! - **Back-pressure**: past `max_inflight_bytes` read but unacknowledged,
//!   nothing is read; the files are the buffer. A failed send rewinds the
//!   source to its last acknowledged line and retries with backoff.
//! - **Bounded descriptors**: past `max_open_files`, idle files that are read
//!   to the end are closed and reopened by path when they grow.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use sluice_schema::events::{EventIds, EventSink};

/// How often the jobs held are measured for the node directory.
const JOBS_EVERY: Duration = Duration::from_secs(1);
use sluice_schema::multiline::Grouping;
use sluice_schema::pb::lifecycle::Kind as Lifecycle;
use sluice_schema::pb::{ClusterEvent, EventKind, Source};

use crate::checkpoint::{Checkpoint, CheckpointStore, TruncationRecord};
use crate::files::chunk::{self, ChunkEncoder, EncodedChunk};
use crate::files::lines::LineAssembler;
use crate::files::source::{self, FileKey, Prefix};
use crate::layout::{Framing, Identity, Layout};
use crate::metrics::Metrics;
use crate::pipeline::tap::{SnapshotRequest, SourceView, Tap, TapItem};
pub(crate) use crate::pipeline::{AckNote, ChunkOut, Hint};
use crate::progress::Progress;
use crate::{Result, ShipperConfig};

mod acks;
mod discovery;
mod reading;
mod truncation;

use discovery::dir_id;
use reading::Behind;
use truncation::{CopyOf, same_start, still_starts};

#[cfg(test)]
mod tests;

/// Most bytes read from one file in one pass, for fairness between files.
const READ_BYTES: usize = 1 << 20;
/// How long a copy that matches a live file waits for that file's
/// truncation before it is shipped as a file of its own.
const COPY_WAIT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Tracked {
    key: FileKey,
    path: PathBuf,
    /// Hash of `path`'s directory: finding a file's neighbours is a scan
    /// of integers, not of paths.
    dir_id: u64,
    sandbox: PathBuf,
    source: Source,
    birth: Option<i64>,
    generation: u32,
    prefix: Prefix,
    file: Option<File>,
    lines: LineAssembler,
    /// The source's multi-line rule, compiled.
    grouping: Option<Arc<Grouping>>,
    /// Recorded line and event ends after `acked` (the checkpoint's `cuts`).
    cuts: Vec<u64>,
    /// Fingerprint of the bytes before `lines.next_offset()`.
    read_tail: Prefix,
    acked: u64,
    /// Fingerprint of the bytes before `acked`, for the checkpoint.
    acked_tail: Prefix,
    /// Bumped on rewind: acknowledgements of older epochs move nothing.
    epoch: u64,
    /// Chunks sent: their resume end and whether acknowledged, in order.
    inflight: VecDeque<(u64, bool)>,
    size: u64,
    /// Modification time at the last poll: when it moves, the first bytes
    /// are checked again (a file truncated and refilled past its old size
    /// looks like growth otherwise).
    mtime: (i64, i64),
    last_growth: Instant,
    /// This generation is in the checkpoint file on disk. No line with its
    /// `source_id` is sent before, so a restart never reuses a `source_id`.
    registered: bool,
    /// Renamed away or deleted: read to the end, then let go.
    gone: bool,
    ended: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// When this generation was first seen, then when it was first read
    /// (Tail: which sources are new to a resuming follower).
    first_seen_nanos: i64,
    /// Where reading stood when, about once a second (Tail: `since`).
    samples: Vec<(u64, i64)>,
}

/// Time samples kept per source; past it every other one is dropped, so
/// the samples still cover the file's whole life, more coarsely.
const MAX_SAMPLES: usize = 1024;

impl Tracked {
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            key: self.key,
            birth: self.birth,
            generation: self.generation,
            source_id: self.source.source_id,
            prefix: self.prefix,
            offset: self.acked,
            tail: self.acked_tail,
            path: self.path.clone(),
            cuts: self.cuts.clone(),
        }
    }

    /// A line assembler for this source from `offset`, with its multi-line
    /// rule and recorded cuts.
    fn assembler(&self, framing: Framing, max_line_bytes: usize, offset: u64) -> LineAssembler {
        LineAssembler::new(framing, max_line_bytes, offset)
            .with_grouping(self.grouping.clone(), &self.cuts)
    }

    fn caught_up(&self) -> bool {
        self.lines.next_offset() >= self.size && self.lines.held_bytes() == 0
    }
}

pub(crate) struct Tracker {
    config: ShipperConfig,
    layout: Arc<dyn Layout>,
    framing: Framing,
    files: HashMap<FileKey, Tracked>,
    /// Where each tracked file was last seen, for inotify hints.
    by_path: HashMap<PathBuf, FileKey>,
    /// Files named by hints since the last pass.
    dirty: std::collections::HashSet<FileKey>,
    checkpoints: CheckpointStore,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    out: tokio::sync::mpsc::UnboundedSender<ChunkOut>,
    /// Where file events (truncation, data loss) go.
    events: Arc<dyn EventSink>,
    hints: Receiver<Hint>,
    event_ids: Arc<EventIds>,
    tap: Tap,
    inflight_bytes: usize,
    open_files: usize,
    /// Paths whose identity failed, reported once each.
    reported: HashMap<PathBuf, String>,
    /// Copies waiting for their original's truncation.
    waiting_copies: HashMap<PathBuf, (FileKey, Instant)>,
    /// Checkpointed files the last rescan did not find.
    missed: std::collections::HashSet<FileKey>,
    buf: Vec<u8>,
    /// Files that still had unread bytes when last polled: read again as
    /// soon as the in-flight budget allows.
    behind: Behind,
    /// When [`Metrics::jobs`] was last measured.
    jobs_measured: std::cell::Cell<Instant>,
    /// Tests: runs right after a read returns, to put a change to the file
    /// (a rotation, a truncation) between the read and what follows it.
    #[cfg(test)]
    after_read: Option<Box<dyn FnMut() + Send>>,
}

pub(crate) struct TrackerParts {
    pub config: ShipperConfig,
    pub layout: Arc<dyn Layout>,
    pub progress: Arc<Progress>,
    pub metrics: Arc<Metrics>,
    pub out: tokio::sync::mpsc::UnboundedSender<ChunkOut>,
    pub events: Arc<dyn EventSink>,
    pub hints: Receiver<Hint>,
    pub event_ids: Arc<EventIds>,
    pub tap: Tap,
}

impl Tracker {
    pub(crate) fn new(parts: TrackerParts) -> Result<Self> {
        let checkpoints = CheckpointStore::open(&parts.config.state_dir)?;
        Ok(Tracker {
            framing: parts.layout.framing(),
            layout: parts.layout,
            config: parts.config,
            files: HashMap::new(),
            by_path: HashMap::new(),
            dirty: std::collections::HashSet::new(),
            checkpoints,
            progress: parts.progress,
            metrics: parts.metrics,
            out: parts.out,
            events: parts.events,
            hints: parts.hints,
            event_ids: parts.event_ids,
            tap: parts.tap,
            inflight_bytes: 0,
            open_files: 0,
            reported: HashMap::new(),
            waiting_copies: HashMap::new(),
            missed: std::collections::HashSet::new(),
            buf: vec![0; READ_BYTES],
            behind: Behind::default(),
            // Measured at the first pass.
            jobs_measured: std::cell::Cell::new(
                Instant::now()
                    .checked_sub(JOBS_EVERY)
                    .unwrap_or_else(Instant::now),
            ),
            #[cfg(test)]
            after_read: None,
        })
    }

    /// Runs until shut down or the publisher goes away.
    pub(crate) fn run(mut self) {
        self.rescan();
        let mut last_rescan = Instant::now();
        let mut last_save = Instant::now();
        let mut last_poll = Instant::now();
        loop {
            let mut hints = Vec::new();
            // Behind on a file and within the in-flight budget: no waiting.
            let wait = if self.may_catch_up() {
                Duration::ZERO
            } else {
                self.config.poll()
            };
            match self.hints.recv_timeout(wait) {
                Ok(hint) => hints.push(hint),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // A file grew: let a few more writes land before reading it
            // (not when behind: then every read is a full one anyway).
            if !wait.is_zero() && matches!(hints.first(), Some(Hint::Path(_))) {
                let until = Instant::now() + self.config.coalesce();
                while let Some(left) = until
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                {
                    match self.hints.recv_timeout(left) {
                        Ok(hint) => hints.push(hint),
                        Err(_) => break,
                    }
                }
            }
            hints.extend(self.hints.try_iter());
            let mut shutdown = false;
            // One look per path however many events named it.
            let mut seen = std::collections::HashSet::new();
            hints.retain(|h| !matches!(h, Hint::Path(p) if !seen.insert(p.clone())));
            for hint in hints {
                match hint {
                    Hint::Path(path) => self.hinted(&path),
                    Hint::SandboxEnded(sandbox) => {
                        for t in self.files.values_mut().filter(|t| t.sandbox == sandbox) {
                            t.ended = true;
                        }
                    }
                    Hint::Rescan => last_rescan = Instant::now() - self.config.rescan(),
                    Hint::Acked(note) => self.acked(note),
                    Hint::Snapshot(request) => self.snapshot(request),
                    Hint::Shutdown => shutdown = true,
                }
            }
            if last_rescan.elapsed() >= self.config.rescan() {
                self.rescan();
                last_rescan = Instant::now();
            }
            if shutdown {
                break;
            }
            // Every file each poll interval; between, files named by inotify
            // and files behind, in turn, while the budget has room.
            let alive = if last_poll.elapsed() >= self.config.poll() {
                last_poll = Instant::now();
                self.dirty.clear();
                self.poll_all()
            } else {
                let dirty: Vec<FileKey> = self.dirty.drain().collect();
                dirty.into_iter().all(|key| self.poll_one(key)) && self.catch_up()
            };
            if !alive {
                break;
            }
            self.metrics.inflight_bytes.set(self.inflight_bytes as u64);
            if last_save.elapsed() >= self.config.checkpoint_every() {
                self.save();
                last_save = Instant::now();
            }
        }
        // Wait (a little) for acknowledgements of what was sent, so the
        // last checkpoint is as fresh as it can be.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.inflight_bytes > 0 && Instant::now() < deadline {
            match self.hints.recv_timeout(Duration::from_millis(50)) {
                Ok(Hint::Acked(note)) => self.acked(note),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while let Ok(hint) = self.hints.try_recv() {
            if let Hint::Acked(note) = hint {
                self.acked(note);
            }
        }
        self.save();
    }

    /// A file has unread bytes and the in-flight budget has room for a
    /// chunk of them: read again without waiting.
    fn may_catch_up(&self) -> bool {
        let room = self
            .config
            .max_inflight_bytes
            .saturating_sub(self.inflight_bytes);
        !self.behind.is_empty()
            && room >= self.config.chunk_bytes.min(self.config.max_inflight_bytes)
    }

    /// Reads files that are behind, one after the other, while there is
    /// room in the in-flight budget. Returns false when the publisher is gone.
    fn catch_up(&mut self) -> bool {
        for _ in 0..self.behind.len() {
            if !self.may_catch_up() {
                break;
            }
            let Some(key) = self.behind.pop() else { break };
            if !self.poll_one(key) {
                return false;
            }
        }
        true
    }

    /// Answers a Tail follower: the sources it selects, with what was sent
    /// of them so far.
    fn snapshot(&mut self, request: SnapshotRequest) {
        let views = self
            .files
            .values()
            .filter(|t| (request.filter)(&t.source))
            .map(|t| SourceView {
                source: t.source.clone(),
                file: t.file.as_ref().and_then(|f| f.try_clone().ok()),
                path: t.path.clone(),
                key: t.key,
                read_end: t.lines.resume_offset(),
                first_seen_nanos: t.first_seen_nanos,
                samples: t.samples.clone(),
            })
            .collect();
        let _ = request.reply.send(views);
    }

    fn lifecycle(&self, kind: Lifecycle, source: &Source, offset: u64, message: String) {
        if self.tap.active() {
            self.tap.send(TapItem::Lifecycle {
                kind,
                source: Arc::new(source.clone()),
                offset,
                message,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        kind: EventKind,
        source: Option<&Source>,
        path: &Path,
        reason: &str,
        message: String,
        attrs: &[(&str, String)],
    ) {
        let mut attributes: std::collections::BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        attributes.insert("path".into(), path.to_string_lossy().into_owned());
        let event = ClusterEvent {
            id: self.event_ids.next(),
            ts_unix_nanos: now_nanos(),
            kind: kind as i32,
            job: source.map(|s| s.job.clone()).unwrap_or_default(),
            instance: source.map(|s| s.instance),
            task_id: source.map(|s| s.task_id.clone()).unwrap_or_default(),
            run: source.map_or(0, |s| s.run),
            host: self.config.host.clone(),
            actor: "system:shipper".into(),
            reason: reason.into(),
            message,
            attributes,
        };
        tracing::info!(kind = ?kind, reason, path = %path.display(), "file event");
        self.events.emit(event);
    }
}

pub(crate) use sluice_schema::time::now_unix_nanos as now_nanos;
