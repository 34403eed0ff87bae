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

use sluice_schema::events::EventIds;
use sluice_schema::pb::lifecycle::Kind as Lifecycle;
use sluice_schema::pb::{ClusterEvent, EventKind, Source};

use crate::checkpoint::{Checkpoint, CheckpointStore, TruncationRecord};
use crate::files::chunk::{self, ChunkEncoder, EncodedChunk};
use crate::files::lines::LineAssembler;
use crate::files::source::{self, FileKey, Prefix};
use crate::layout::{Framing, Identity, Layout};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::tail::tap::{SnapshotRequest, SourceView, Tap, TapItem};
use crate::{Result, ShipperConfig};

/// Most bytes read from one file in one pass, for fairness between files.
const READ_BYTES: usize = 1 << 20;
/// How long a copy that matches a live file waits for that file's
/// truncation before it is shipped as a file of its own.
const COPY_WAIT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the tracker hands the publisher.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Chunk(ChunkOut),
    Event(ClusterEvent),
}

#[derive(Debug)]
pub(crate) struct ChunkOut {
    pub note: AckNote,
    /// The bus key, `job/instance`.
    pub key: String,
    /// An encoded `LogChunk`.
    pub payload: bytes::Bytes,
}

/// Sent back by the publisher once a chunk is acknowledged or failed.
#[derive(Debug, Clone)]
pub(crate) struct AckNote {
    pub key: FileKey,
    pub source_id: u64,
    pub epoch: u64,
    /// The offset reading may resume from once this chunk is acknowledged.
    pub resume_end: u64,
    pub bytes: usize,
    pub ok: bool,
}

/// Wakes the tracker.
#[derive(Debug)]
pub(crate) enum Hint {
    /// Something changed at this path (inotify).
    Path(PathBuf),
    /// The task of this sandbox ended: ship unterminated lines now.
    SandboxEnded(PathBuf),
    /// The watcher lost events: rescan now.
    Rescan,
    /// The publisher's word on a chunk (here, so it wakes the tracker).
    Acked(AckNote),
    /// A Tail follower wants the tracked sources.
    Snapshot(SnapshotRequest),
    Shutdown,
}

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
        }
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
    out: tokio::sync::mpsc::UnboundedSender<Outgoing>,
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
    pub out: tokio::sync::mpsc::UnboundedSender<Outgoing>,
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

    /// Writes the checkpoints; returns whether they are on disk.
    fn save(&mut self) -> bool {
        match self.checkpoints.save() {
            Ok(()) => {
                for t in self.files.values_mut() {
                    t.registered = true;
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to save checkpoints; will retry");
                self.metrics.errors.inc();
                false
            }
        }
    }

    fn acked(&mut self, note: AckNote) {
        self.inflight_bytes = self.inflight_bytes.saturating_sub(note.bytes);
        let Some(t) = self.files.get_mut(&note.key) else {
            return;
        };
        if t.source.source_id != note.source_id || t.epoch != note.epoch {
            return;
        }
        if !note.ok {
            // Back to the last acknowledged line: the file is the buffer.
            self.metrics.send_failures.inc();
            t.epoch += 1;
            t.inflight.clear();
            t.lines = LineAssembler::new(self.framing, self.config.max_line_bytes, t.acked);
            t.read_tail = t.acked_tail;
            t.retry_at = Some(Instant::now() + t.backoff);
            t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
            return;
        }
        t.backoff = Duration::from_millis(100);
        if let Some(slot) = t
            .inflight
            .iter_mut()
            .find(|(end, done)| !done && *end == note.resume_end)
        {
            slot.1 = true;
        }
        while let Some((end, true)) = t.inflight.front().copied() {
            t.acked = t.acked.max(end);
            t.inflight.pop_front();
        }
        t.acked_tail = t
            .file
            .as_ref()
            .and_then(|f| source::tail(f, t.acked).ok())
            .unwrap_or_default();
        self.progress.record(t.key, t.acked);
        self.checkpoints.put(t.checkpoint());
    }

    /// Walks the root for log files, and forgets checkpoints of files that
    /// no longer exist.
    fn rescan(&mut self) {
        let root = self.config.root.clone();
        let mut found = Vec::new();
        walk(&root, self.layout.max_depth() + 1, &mut found);
        // Files known from checkpoints first: an original must be known
        // before a copy of it is looked at.
        found.sort_by_cached_key(|p| {
            let known = std::fs::symlink_metadata(p)
                .is_ok_and(|m| self.checkpoints.get(&FileKey::of(&m)).is_some());
            !known
        });
        for path in &found {
            self.consider(path, true);
        }
        let live: std::collections::HashSet<FileKey> = found
            .iter()
            .filter_map(|p| std::fs::symlink_metadata(p).ok().map(|m| FileKey::of(&m)))
            .collect();
        // A file renamed while the directory was being read can be missed
        // by one walk: its checkpoint goes only when two walks in a row
        // miss it, or it would be read again under a new name.
        let mut missing = std::collections::HashSet::new();
        for key in self.checkpoints.keys() {
            if !live.contains(&key) && !self.files.contains_key(&key) {
                if self.missed.contains(&key) {
                    self.checkpoints.remove(&key);
                } else {
                    missing.insert(key);
                }
            }
        }
        self.missed = missing;
        self.metrics.files_tracked.set(self.files.len() as u64);
    }

    fn hinted(&mut self, path: &Path) {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let depth = path
                    .strip_prefix(&self.config.root)
                    .map_or(0, |p| p.components().count());
                let mut found = Vec::new();
                walk(
                    path,
                    (self.layout.max_depth() + 1).saturating_sub(depth),
                    &mut found,
                );
                for p in found {
                    self.consider(&p, false);
                }
            }
            Ok(meta) if meta.is_file() => match self.by_path.get(path) {
                Some(key) if *key == FileKey::of(&meta) => {
                    self.dirty.insert(*key);
                }
                _ => self.consider(path, false),
            },
            _ => {
                if let Some(key) = self.by_path.get(path) {
                    self.dirty.insert(*key);
                }
            }
        }
    }

    /// Starts tracking the file at `path` if it is a log file not tracked yet.
    fn consider(&mut self, path: &Path, rescan: bool) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let key = FileKey::of(&meta);
        if let Some(t) = self.files.get_mut(&key) {
            if t.path != path {
                t.path = path.to_path_buf();
                t.dir_id = dir_id(path);
                self.by_path.insert(path.to_path_buf(), key);
            }
            return;
        }
        if !rescan && self.reported.contains_key(path) {
            return;
        }
        let identity = match self.layout.identify(&self.config.root, path) {
            Ok(Some(identity)) => identity,
            Ok(None) => return,
            Err(e) => {
                let problem = e.to_string();
                if self.reported.get(path) != Some(&problem) {
                    tracing::warn!(error = %problem, "log file skipped: its identity is unknown");
                    self.metrics.errors.inc();
                    self.reported.insert(path.to_path_buf(), problem);
                }
                return;
            }
        };
        self.reported.remove(path);
        let Ok(file) = File::open(path) else { return };
        let birth = source::birth_nanos(&meta);
        let size = meta.len();
        let prefix = source::prefix(&file, size).unwrap_or_default();
        let dir = path.parent().unwrap_or(path).to_path_buf();

        let mut paired = false;
        let (start, generation, source_id) = match self.checkpoints.get(&key).cloned() {
            // The same file generation as before a restart.
            Some(c) if resumes(&c, birth, &file, size) => (c.offset, c.generation, c.source_id),
            // Truncated or rewritten while the shipper was down (same birth),
            // or a new file on a reused inode: the next generation, so its
            // `source_id` is new; old content may have a copy beside it.
            Some(c) => {
                // Wraps rather than panics on a checkpoint file that says
                // u32::MAX (no file is truncated 4 billion times).
                let generation = c.generation.wrapping_add(1);
                if c.birth == birth {
                    self.record_truncation(TruncationRecord {
                        dir: dir.clone(),
                        source_id: c.source_id,
                        prefix: c.prefix,
                        offset: c.offset,
                        at_unix_ms: now_nanos() / 1_000_000,
                    });
                    self.metrics.truncations.inc();
                    self.event(
                        EventKind::FileTruncated,
                        None,
                        path,
                        "truncated",
                        format!(
                            "{} was truncated while the shipper was down (it had read {} bytes)",
                            path.display(),
                            c.offset
                        ),
                        &[("offset", c.offset.to_string())],
                    );
                }
                (
                    0,
                    generation,
                    source::source_id(&self.config.host, key, birth, generation),
                )
            }
            _ => match self.copy_origin(&dir, &key, &file, size, path) {
                // The copy is the truncated generation, byte for byte: it
                // keeps that generation's name, so lines sent from both carry
                // the same (source_id, offset) and the archive keeps one.
                CopyOf::Truncated { source_id, offset } => {
                    self.event(
                        EventKind::FileRotated,
                        None,
                        path,
                        "copytruncate",
                        format!(
                            "{} is a copy of a truncated file (acknowledged up to byte {offset}); its lines continue that file's",
                            path.display()
                        ),
                        &[
                            ("offset", offset.to_string()),
                            ("source_id", format!("{source_id:016x}")),
                        ],
                    );
                    // From the start: what the original already sent is sent
                    // again under the same names and dropped downstream; no
                    // offset bookkeeping can lose a line in a crash.
                    paired = true;
                    (0, 0, source_id)
                }
                CopyOf::Live => return,
                CopyOf::Nothing => (0, 0, source::source_id(&self.config.host, key, birth, 0)),
            },
        };
        self.waiting_copies.remove(path);
        let sandbox = self.layout.sandbox(&self.config.root, path).unwrap_or(dir);
        let source = self.source_proto(&identity, path, source_id);
        self.make_room();
        self.open_files += 1;
        let start_tail = source::tail(&file, start).unwrap_or_default();
        tracing::debug!(path = %path.display(), source_id = format_args!("{source_id:016x}"), start, generation, copy_of_truncated = paired, "tracking file");
        let t = Tracked {
            key,
            path: path.to_path_buf(),
            dir_id: dir_id(path),
            sandbox,
            source,
            birth,
            generation,
            prefix,
            file: Some(file),
            lines: LineAssembler::new(self.framing, self.config.max_line_bytes, start),
            read_tail: start_tail,
            acked: start,
            acked_tail: start_tail,
            epoch: 0,
            inflight: VecDeque::new(),
            size,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            last_growth: Instant::now(),
            registered: false,
            gone: false,
            ended: false,
            retry_at: None,
            backoff: Duration::from_millis(100),
            first_seen_nanos: now_nanos(),
            samples: Vec::new(),
        };
        self.progress.record(key, start);
        self.checkpoints.put(t.checkpoint());
        self.files.insert(key, t);
        self.by_path.insert(path.to_path_buf(), key);
        self.dirty.insert(key);
        self.metrics.files_tracked.set(self.files.len() as u64);
        if paired {
            // The pairing lives only in memory until saved: a restart must
            // find the copy under the name it adopted.
            self.save();
        }
    }

    /// Whether a new file is a copy of a file that was (or is about to be)
    /// truncated: its first bytes match that file's. A copy still being
    /// written (shorter than the prefix) whose bytes so far match waits, as
    /// does a copy of a live file, which may be truncated next; after
    /// `COPY_WAIT` it is shipped as a file of its own.
    fn copy_origin(
        &mut self,
        dir: &Path,
        key: &FileKey,
        file: &File,
        size: u64,
        path: &Path,
    ) -> CopyOf {
        let recent = self.recent_truncations();
        let mut wait = false;
        for t in recent.iter().filter(|t| t.dir == dir && t.prefix.len > 0) {
            if size < t.prefix.len {
                wait = true;
            } else if same_start(
                &t.prefix,
                &source::prefix(file, t.prefix.len).unwrap_or_default(),
            ) {
                return CopyOf::Truncated {
                    source_id: t.source_id,
                    offset: t.offset,
                };
            }
        }
        let dir_id = dir_id(path);
        wait |= self.files.values().any(|t| {
            if t.dir_id != dir_id
                || t.key == *key
                || t.gone
                || t.prefix.len == 0
                || t.path.parent() != Some(dir)
            {
                return false;
            }
            let n = size.min(t.prefix.len);
            let theirs = if n == t.prefix.len {
                Some(t.prefix)
            } else {
                t.file.as_ref().and_then(|f| source::prefix(f, n).ok())
            };
            theirs.is_some_and(|p| same_start(&p, &source::prefix(file, n).unwrap_or_default()))
        });
        if wait {
            let since = self
                .waiting_copies
                .entry(path.to_path_buf())
                .or_insert((*key, Instant::now()))
                .1;
            if since.elapsed() < COPY_WAIT {
                return CopyOf::Live;
            }
        }
        CopyOf::Nothing
    }

    /// Truncations young enough for a copy to still appear (kept in the
    /// checkpoint file, so a copy found after a restart is paired too).
    fn recent_truncations(&mut self) -> Vec<TruncationRecord> {
        let now = now_nanos() / 1_000_000;
        let keep = (COPY_WAIT * 2).as_millis() as i64;
        let recent: Vec<TruncationRecord> = self
            .checkpoints
            .truncations()
            .iter()
            .filter(|t| now.saturating_sub(t.at_unix_ms) < keep)
            .cloned()
            .collect();
        self.checkpoints.set_truncations(recent.clone());
        recent
    }

    fn record_truncation(&mut self, record: TruncationRecord) {
        let mut all = self.recent_truncations();
        all.push(record);
        self.checkpoints.set_truncations(all);
    }

    fn source_proto(&self, identity: &Identity, path: &Path, source_id: u64) -> Source {
        let mut labels = self.config.labels.clone();
        labels.extend(identity.labels.clone());
        Source {
            host: self.config.host.clone(),
            job: identity.job.clone(),
            instance: identity.instance,
            task_id: identity.task_id.clone(),
            run: identity.run,
            process: identity.process.clone(),
            stream: identity.stream as i32,
            path: path.to_string_lossy().into_owned(),
            layout: self.layout.kind() as i32,
            labels,
            source_id,
        }
    }

    /// Closes the longest-idle file that is read to its end, if the budget
    /// of open descriptors is used up.
    fn make_room(&mut self) {
        if self.open_files < self.config.max_open_files {
            return;
        }
        let victim = self
            .files
            .values()
            .filter(|t| t.file.is_some() && !t.gone && t.caught_up())
            .min_by_key(|t| t.last_growth)
            .map(|t| t.key);
        if let Some(key) = victim {
            self.files.get_mut(&key).unwrap().file = None;
            self.open_files -= 1;
        }
    }

    /// One pass over every tracked file. Returns false when the publisher is gone.
    fn poll_all(&mut self) -> bool {
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        let waiting: Vec<PathBuf> = self.waiting_copies.keys().cloned().collect();
        for path in waiting {
            self.consider(&path, false);
        }
        for key in keys {
            if !self.poll_one(key) {
                return false;
            }
        }
        self.measure_lag();
        true
    }

    /// Bytes written and not yet acknowledged, in all and for the sources
    /// most behind (the metrics).
    fn measure_lag(&self) {
        let mut lagging: Vec<(u64, &Tracked)> = self
            .files
            .values()
            .map(|t| (t.size.saturating_sub(t.acked), t))
            .filter(|(lag, _)| *lag > 0)
            .collect();
        self.metrics
            .lag_bytes
            .set(lagging.iter().map(|(lag, _)| lag).sum());
        lagging.sort_by_key(|(lag, _)| std::cmp::Reverse(*lag));
        *self.metrics.source_lag.lock().unwrap() = lagging
            .iter()
            .take(crate::metrics::MAX_LAG_SERIES)
            .map(|(lag, t)| {
                (
                    t.source.job.clone(),
                    t.source.instance,
                    t.path.to_string_lossy().into_owned(),
                    *lag,
                )
            })
            .collect();
    }

    fn poll_one(&mut self, key: FileKey) -> bool {
        let now = Instant::now();
        let Some(t) = self.files.get_mut(&key) else {
            return true;
        };
        // A file backing off after a failed send is still watched (size,
        // first bytes, path): only reading and sending wait.
        let backing_off = t.retry_at.is_some_and(|at| at > now);
        if !backing_off {
            t.retry_at = None;
        }
        // Reopen a closed file by path when it grew.
        if t.file.is_none() {
            match std::fs::symlink_metadata(&t.path) {
                Ok(meta) if FileKey::of(&meta) == key && meta.len() > t.lines.next_offset() => {
                    if let Ok(file) = File::open(&t.path) {
                        t.file = Some(file);
                        self.open_files += 1;
                    }
                }
                Ok(meta) if FileKey::of(&meta) == key => return true,
                _ => {
                    t.gone = true;
                    return self.let_go_if_done(key, now);
                }
            }
        }
        let t = self.files.get_mut(&key).unwrap();
        let Some(file) = &t.file else { return true };
        let Ok(meta) = file.metadata() else {
            return true;
        };
        let size = meta.len();
        if size > t.size {
            t.last_growth = now;
        }
        t.size = size;
        if meta.nlink() == 0 {
            t.gone = true;
        }
        if !t.gone {
            match std::fs::symlink_metadata(&t.path) {
                Ok(m) if FileKey::of(&m) == key => {}
                Ok(_) => {
                    t.gone = true;
                    let (path, source) = (t.path.clone(), t.source.clone());
                    let offset = t.lines.resume_offset();
                    self.metrics.rotations.inc();
                    self.lifecycle(
                        Lifecycle::SourceRotated,
                        &source,
                        offset,
                        format!(
                            "{} was rotated; reading the old file to its end",
                            path.display()
                        ),
                    );
                    self.event(
                        EventKind::FileRotated,
                        Some(&source),
                        &path,
                        "rotated",
                        format!(
                            "{} was replaced by a new file; the old one is read to its end",
                            path.display()
                        ),
                        &[],
                    );
                    self.consider(&path, false);
                }
                Err(_) => self.files.get_mut(&key).unwrap().gone = true,
            }
        }
        let t = self.files.get_mut(&key).unwrap();
        let mtime = (meta.mtime(), meta.mtime_nsec());
        // Content under offsets already read was replaced (truncated and
        // refilled between two looks): its first bytes or the bytes just
        // before the read position changed.
        let rewritten = mtime != t.mtime
            && t.file.as_ref().is_some_and(|f| {
                let head = t.prefix.len > 0
                    && size >= t.prefix.len
                    && source::prefix(f, t.prefix.len).is_ok_and(|p| !same_start(&p, &t.prefix));
                let tail = t.read_tail.len > 0
                    && size >= t.lines.next_offset()
                    && source::tail(f, t.lines.next_offset())
                        .is_ok_and(|p| !same_start(&p, &t.read_tail));
                head || tail
            });
        t.mtime = mtime;
        // Shorter than what was read, or than its recorded first bytes: a
        // file only shrinks by truncation (even when nothing was read yet).
        let shrunk = size < t.lines.next_offset() || size < t.prefix.len;
        if shrunk || rewritten {
            self.truncated(key, size);
            return true;
        }
        if backing_off {
            // Read again when the backoff ends (the poll pass), not before.
            self.behind.remove(&key);
            return true;
        }
        // Read what is new, within the in-flight budget.
        let budget = self
            .config
            .max_inflight_bytes
            .saturating_sub(self.inflight_bytes);
        let t = self.files.get_mut(&key).unwrap();
        let unread = size.saturating_sub(t.lines.next_offset()) as usize;
        // Not a sliver of the budget at a time: small reads make small
        // chunks. Acknowledgements wake the tracker when room is made.
        let want = if budget >= unread.min(self.config.chunk_bytes) {
            unread.min(READ_BYTES).min(budget)
        } else {
            0
        };
        let mut out = ChunkEncoder::new(&t.source, self.config.chunk_bytes, want, now_nanos());
        if want > 0 {
            let now_ns = now_nanos();
            if t.samples
                .last()
                .is_none_or(|(_, at)| now_ns - at >= 1_000_000_000)
            {
                if t.samples.len() >= MAX_SAMPLES {
                    let mut i = 0;
                    t.samples.retain(|_| {
                        i += 1;
                        i % 2 == 0
                    });
                }
                if t.samples.is_empty() {
                    // No follower heard of this generation before its first
                    // read: from now on it is new to a resuming one.
                    t.first_seen_nanos = now_ns;
                }
                t.samples.push((t.lines.resume_offset(), now_ns));
            }
            let at = t.lines.next_offset();
            match t.file.as_ref().unwrap().read_at(&mut self.buf[..want], at) {
                Ok(n) => {
                    #[cfg(test)]
                    if let Some(hook) = self.after_read.as_mut() {
                        hook();
                    }
                    t.lines.push(&self.buf[..n], &mut out);
                    self.metrics.bytes_read.add(n as u64);
                    // The bytes before the new read position are at hand.
                    let tail = source::TAIL_BYTES as usize;
                    t.read_tail = if n >= tail {
                        source::Prefix::of(&self.buf[n - tail..n])
                    } else {
                        source::tail(t.file.as_ref().unwrap(), t.lines.next_offset())
                            .unwrap_or_default()
                    };
                    // The checkpoint must hold the first bytes of what was
                    // sent, or a restart cannot tell this content from what
                    // replaces it, nor pair a copy with it: a grown prefix is
                    // saved before the next send. It grows from the bytes just
                    // read, never from another read of the file: copytruncate
                    // between the two would record the emptied file's
                    // fingerprint for lines sent from the full one, and its
                    // copy would then be shipped again under a name of its own.
                    if let Some(p) = t.prefix.extended(at, &self.buf[..n]) {
                        t.prefix = p;
                        t.registered = false;
                        self.checkpoints.put(t.checkpoint());
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "failed to read log file; will retry");
                    self.metrics.errors.inc();
                    t.retry_at = Some(now + t.backoff);
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if t.lines.next_offset() < size {
            self.behind.push(key);
        } else {
            self.behind.remove(&key);
        }
        let quiet = t.last_growth.elapsed() >= self.config.quiet();
        if t.lines.next_offset() >= size && t.lines.held_bytes() > 0 && (quiet || t.ended || t.gone)
        {
            t.lines.flush(&mut out);
        }
        if !out.is_empty() {
            let chunks = out.finish();
            if !self.send_chunks(key, chunks) {
                return false;
            }
        }
        self.let_go_if_done(key, now)
    }

    /// A gone file that is read, acknowledged and quiet is let go.
    fn let_go_if_done(&mut self, key: FileKey, now: Instant) -> bool {
        let t = &self.files[&key];
        let quiet = now.duration_since(t.last_growth) >= self.config.rotated_grace();
        if !(t.gone && quiet && t.caught_up() && t.inflight.is_empty()) {
            return true;
        }
        let t = self.files.remove(&key).unwrap();
        self.behind.remove(&key);
        if t.file.is_some() {
            self.open_files -= 1;
        }
        if self.by_path.get(&t.path) == Some(&key) {
            self.by_path.remove(&t.path);
        }
        let deleted = t
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_none_or(|m| m.nlink() == 0);
        if deleted {
            self.checkpoints.remove(&key);
            self.progress.forget(&key);
        }
        tracing::debug!(path = %t.path.display(), deleted, "done with file");
        self.lifecycle(
            Lifecycle::SourceEnded,
            &t.source,
            t.lines.resume_offset(),
            format!("{} is gone and was read to its end", t.path.display()),
        );
        true
    }

    /// The file shrank: a new generation starts at 0.
    fn truncated(&mut self, key: FileKey, size: u64) {
        let host = self.config.host.clone();
        let t = self.files.get_mut(&key).unwrap();
        let read = t.lines.next_offset();
        // A copy continues from here: what was read after it may still be
        // unacknowledged, and is sent again from the copy under the same names.
        let acked = t.acked;
        // Bytes the file had that were never read, as far as we saw.
        let unread = t.size.max(read).saturating_sub(read);
        let old_prefix = t.prefix;
        let mut flushed = ChunkEncoder::new(&t.source, self.config.chunk_bytes, 0, now_nanos());
        t.lines.flush(&mut flushed);
        let flushed = flushed.finish();
        let old_source = t.source.clone();
        let path = t.path.clone();
        if !flushed.is_empty() {
            // Lines read before the truncation still ship under the old generation.
            let _ = self.send_chunks(key, flushed);
        }
        let t = self.files.get_mut(&key).unwrap();
        t.generation = t.generation.wrapping_add(1);
        t.source.source_id = source::source_id(&host, key, t.birth, t.generation);
        t.first_seen_nanos = now_nanos();
        t.samples.clear();
        t.epoch += 1;
        t.inflight.clear();
        t.lines = LineAssembler::new(self.framing, self.config.max_line_bytes, 0);
        t.acked = 0;
        t.read_tail = Prefix::default();
        t.acked_tail = Prefix::default();
        t.registered = false;
        t.size = size;
        t.prefix = t
            .file
            .as_ref()
            .map(|f| source::prefix(f, size).unwrap_or_default())
            .unwrap_or_default();
        self.checkpoints.put(t.checkpoint());
        self.progress.record(key, 0);
        self.metrics.truncations.inc();
        let dir = path.parent().unwrap_or(&path).to_path_buf();
        self.record_truncation(TruncationRecord {
            dir: dir.clone(),
            source_id: old_source.source_id,
            prefix: old_prefix,
            offset: acked,
            at_unix_ms: now_nanos() / 1_000_000,
        });
        self.lifecycle(
            Lifecycle::SourceTruncated,
            &old_source,
            read,
            format!("{} was truncated at byte {read}", path.display()),
        );
        self.event(
            EventKind::FileTruncated,
            Some(&old_source),
            &path,
            "truncated",
            format!("{} was truncated at byte {read}", path.display()),
            &[
                ("offset", read.to_string()),
                ("unread_bytes", unread.to_string()),
            ],
        );
        // A copy waiting for this truncation is the rest of the old file.
        let copies: Vec<PathBuf> = self
            .waiting_copies
            .keys()
            .filter(|p| p.parent() == Some(&dir))
            .cloned()
            .collect();
        let mut paired = false;
        for copy in copies {
            self.consider(&copy, false);
            paired |= !self.waiting_copies.contains_key(&copy);
        }
        if unread > 0 && !paired {
            self.metrics.data_loss_bytes.add(unread);
            self.event(
                EventKind::DataLoss,
                Some(&old_source),
                &path,
                "truncated_before_read",
                format!(
                    "{unread} bytes of {} were truncated before they were read",
                    path.display()
                ),
                &[
                    ("bytes", unread.to_string()),
                    ("path", path.to_string_lossy().into_owned()),
                ],
            );
        }
    }

    /// Hands a read's chunks to the publisher. Returns false when it is gone.
    fn send_chunks(&mut self, key: FileKey, chunks: Vec<EncodedChunk>) -> bool {
        if !self.files[&key].registered && !self.save() {
            // Not durable yet: read these bytes again later.
            let t = self.files.get_mut(&key).unwrap();
            t.lines = LineAssembler::new(
                self.framing,
                self.config.max_line_bytes,
                t.inflight.back().map_or(t.acked, |(end, _)| *end),
            );
            t.read_tail = t
                .file
                .as_ref()
                .and_then(|f| source::tail(f, t.lines.next_offset()).ok())
                .unwrap_or_default();
            t.retry_at = Some(Instant::now() + t.backoff);
            return true;
        }
        let t = self.files.get_mut(&key).unwrap();
        let bus_key = chunk::chunk_key(&t.source);
        let mut alive = true;
        for c in chunks {
            self.metrics.lines_read.add(c.lines);
            // A chunk with no resume point moves the checkpoint nowhere.
            let resume_end = c
                .resume_end
                .unwrap_or_else(|| t.inflight.back().map_or(t.acked, |(end, _)| *end));
            t.inflight.push_back((resume_end, false));
            self.inflight_bytes += c.bytes;
            self.tap.send(TapItem::Chunk {
                source_id: t.source.source_id,
                payload: c.payload.clone(),
            });
            alive &= self
                .out
                .send(Outgoing::Chunk(ChunkOut {
                    note: AckNote {
                        key,
                        source_id: t.source.source_id,
                        epoch: t.epoch,
                        resume_end,
                        bytes: c.bytes,
                        ok: false,
                    },
                    key: bus_key.clone(),
                    payload: c.payload,
                }))
                .is_ok();
        }
        self.metrics.framing_errors.set(t.lines.framing_errors);
        alive
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
        let _ = self.out.send(Outgoing::Event(event));
    }
}

/// Files with unread bytes, in the order they are to be read again (each
/// once; removal is lazy).
#[derive(Default)]
struct Behind {
    queue: VecDeque<FileKey>,
    members: std::collections::HashSet<FileKey>,
}

impl Behind {
    fn push(&mut self, key: FileKey) {
        if self.members.insert(key) {
            self.queue.push_back(key);
        }
    }

    fn remove(&mut self, key: &FileKey) {
        self.members.remove(key);
        if self.members.is_empty() {
            self.queue.clear();
        } else if self.queue.len() > 2 * self.members.len() + 64 {
            let mut seen = std::collections::HashSet::new();
            let members = &self.members;
            self.queue
                .retain(|k| members.contains(k) && seen.insert(*k));
        }
    }

    fn pop(&mut self) -> Option<FileKey> {
        while let Some(key) = self.queue.pop_front() {
            if self.members.remove(&key) {
                return Some(key);
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.members.len()
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

enum CopyOf {
    /// A copy of a truncated generation: continue it from `offset`.
    Truncated {
        source_id: u64,
        offset: u64,
    },
    /// May be a copy (of a live file that may be truncated soon, or still
    /// being written): wait.
    Live,
    Nothing,
}

/// Whether `file` (`size` bytes) is still the generation `c` records: same
/// birth, not shorter than what was acknowledged, and the recorded bytes at
/// its start and before the acknowledged offset are still there.
///
/// Without birth times, the first bytes tell a reused inode: the file must
/// still begin with the recorded ones. A file that grew past a recorded
/// prefix shorter than `PREFIX_BYTES` does; its current, longer prefix
/// differs from the recorded one, and is no sign of a new generation.
fn resumes(c: &Checkpoint, birth: Option<i64>, file: &File, size: u64) -> bool {
    c.birth == birth
        && c.offset <= size
        && still_starts(file, &c.prefix)
        && (c.tail.len == 0 || source::tail(file, c.offset).is_ok_and(|t| same_start(&t, &c.tail)))
}

/// Whether `file` still begins with the bytes `prefix` describes.
fn still_starts(file: &File, prefix: &Prefix) -> bool {
    prefix.len == 0 || source::prefix(file, prefix.len).is_ok_and(|p| same_start(&p, prefix))
}

fn same_start(a: &Prefix, b: &Prefix) -> bool {
    a.len == b.len && a.hash == b.hash
}

/// Regular files in `dir` and its subdirectories, `depth` levels in all
/// (1: `dir` itself); symlinks skipped.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() {
            out.push(entry.path());
        } else if kind.is_dir() && depth > 1 {
            walk(&entry.path(), depth - 1, out);
        }
    }
}

fn dir_id(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().unwrap_or(path);
    source::Prefix::of(dir.as_os_str().as_bytes()).hash
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message as _;
    use sluice_schema::pb::LogChunk;
    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::layout::LayoutKind;

    struct Setup {
        _dir: tempfile::TempDir,
        root: PathBuf,
        state: PathBuf,
        logs: PathBuf,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let state = dir.path().join("state");
        let logs = sluice_testkit::native_sandbox(&root, "t-race", "a/b/c", 0, &["main"]);
        Setup {
            _dir: dir,
            root,
            state,
            logs,
        }
    }

    /// A tracker driven by hand (no thread, no watcher, no publisher):
    /// dropping it without a save is a `kill -9`.
    fn tracker(s: &Setup) -> (Tracker, UnboundedReceiver<Outgoing>) {
        let config = ShipperConfig::new("node-t", LayoutKind::Native, &s.root, &s.state);
        let layout: Arc<dyn Layout> = Arc::from(config.layout.layout());
        let (out, sent) = tokio::sync::mpsc::unbounded_channel();
        let (_, hints) = std::sync::mpsc::channel();
        let tracker = Tracker::new(TrackerParts {
            progress: Arc::new(Progress::new(config.root.clone(), layout.clone())),
            metrics: Arc::new(Metrics::default()),
            out,
            hints,
            event_ids: Arc::new(EventIds::new("test", 0)),
            tap: Tap::new(16),
            layout,
            config,
        })
        .unwrap();
        (tracker, sent)
    }

    /// Lines handed to the publisher so far: (source_id, offset, text).
    fn sent(out: &mut UnboundedReceiver<Outgoing>) -> Vec<(u64, u64, String)> {
        let mut lines = Vec::new();
        while let Ok(o) = out.try_recv() {
            if let Outgoing::Chunk(c) = o {
                let chunk = LogChunk::decode(c.payload).unwrap();
                let id = chunk.source.unwrap().source_id;
                for l in chunk.lines {
                    lines.push((id, l.offset, String::from_utf8(l.text.to_vec()).unwrap()));
                }
            }
        }
        lines
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn truncate(path: &Path) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    /// Five short lines, 11 bytes each (as in the soak: far below
    /// `PREFIX_BYTES`).
    fn five_lines() -> Vec<String> {
        (40..45).map(|i| format!("f13-r2-s{i}\n")).collect()
    }

    struct Raced {
        tracker: Tracker,
        out: UnboundedReceiver<Outgoing>,
        key: FileKey,
        original: u64,
        copy: PathBuf,
        sent: Vec<(u64, u64, String)>,
    }

    /// The soak's flake: a generation that began empty (as after a
    /// rotation) gets five lines; `read_before` of them are read first.
    /// Then, as the tracker reads the rest, copytruncate runs: the copy
    /// is made and the original truncated after the read returned and
    /// before the rest of the poll.
    fn copytruncate_during_a_read(s: &Setup, read_before: usize) -> Raced {
        let path = s.logs.join("main.stderr");
        let copy = s.logs.join("main.stderr.3");
        let lines = five_lines();
        append(&path, "");
        let (mut tracker, mut out) = tracker(s);
        tracker.rescan();
        let key = tracker.by_path[&path];
        let original = tracker.files[&key].source.source_id;
        if read_before > 0 {
            append(&path, &lines[..read_before].concat());
            assert!(tracker.poll_one(key));
        }
        append(&path, &lines[read_before..].concat());
        tracker.after_read = Some(Box::new({
            let (path, copy) = (path.clone(), copy.clone());
            move || {
                std::fs::copy(&path, &copy).unwrap();
                truncate(&path);
            }
        }));
        assert!(tracker.poll_one(key));
        tracker.after_read = None;
        let sent = sent(&mut out);
        let want: Vec<(u64, u64, String)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (original, 11 * i as u64, l.trim_end().to_string()))
            .collect();
        assert_eq!(sent, want, "the five lines, sent under the original's name");
        Raced {
            tracker,
            out,
            key,
            original,
            copy,
            sent,
        }
    }

    /// Every text is known by one name (source_id, offset) only: what the
    /// soak checks.
    fn one_name_per_text(lines: &[(u64, u64, String)]) {
        let mut names: HashMap<&str, std::collections::BTreeSet<(u64, u64)>> = HashMap::new();
        for (id, offset, text) in lines {
            names.entry(text).or_default().insert((*id, *offset));
        }
        for (text, names) in names {
            assert_eq!(
                names.len(),
                1,
                "{text} sent under several names: {names:x?}"
            );
        }
    }

    #[test]
    fn a_copy_made_while_its_original_is_read_continues_the_original() {
        for read_before in [0, 3] {
            let s = setup();
            let Raced {
                mut tracker,
                mut out,
                key,
                original,
                copy,
                mut sent,
            } = copytruncate_during_a_read(&s, read_before);
            // inotify names the copy before the truncation is noticed: the
            // original still looks live, so the copy waits for it.
            tracker.hinted(&copy);
            assert!(tracker.poll_one(key), "the truncation is noticed");
            let copy_key = *tracker
                .by_path
                .get(&copy)
                .expect("the copy is tracked once its original's truncation is seen");
            assert_eq!(
                tracker.files[&copy_key].source.source_id, original,
                "read_before {read_before}: the copy continues the truncated generation"
            );
            assert!(tracker.poll_one(copy_key));
            sent.extend(self::sent(&mut out));
            one_name_per_text(&sent);
        }
    }

    #[test]
    fn a_copy_made_while_its_original_is_read_is_paired_after_a_kill_9() {
        for read_before in [0, 3] {
            let s = setup();
            let Raced {
                tracker: killed,
                original,
                copy,
                mut sent,
                ..
            } = copytruncate_during_a_read(&s, read_before);
            // kill -9 before the tracker looks again: only what was saved
            // (before the lines were sent) survives.
            drop(killed);
            let (mut tracker, mut out) = tracker(&s);
            tracker.rescan();
            let copy_key = tracker.by_path[&copy];
            assert_eq!(
                tracker.files[&copy_key].source.source_id, original,
                "read_before {read_before}: after a restart the copy still continues the truncated generation"
            );
            assert!(tracker.poll_one(copy_key));
            sent.extend(self::sent(&mut out));
            one_name_per_text(&sent);
        }
    }

    /// Without birth times, a file that grew while the shipper was down
    /// (its recorded first bytes were fewer than `PREFIX_BYTES`) is the
    /// same generation: it still begins with them.
    #[test]
    fn without_birth_times_a_short_file_that_grew_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let lines = five_lines();
        std::fs::write(&path, lines[..3].concat()).unwrap();
        let file = File::open(&path).unwrap();
        let checkpoint = Checkpoint {
            key: FileKey { dev: 1, ino: 2 },
            birth: None,
            generation: 0,
            source_id: 7,
            prefix: source::prefix(&file, 33).unwrap(),
            offset: 33,
            tail: source::tail(&file, 33).unwrap(),
            path: path.clone(),
        };
        assert!(resumes(&checkpoint, None, &file, 33));
        append(&path, &lines[3..].concat());
        assert!(resumes(&checkpoint, None, &file, 55), "grown, not replaced");
        truncate(&path);
        append(&path, &lines[1..].concat());
        assert!(
            !resumes(&checkpoint, None, &file, 44),
            "replaced: a new generation"
        );
    }

    /// Numbers at the ends of their ranges in a checkpoint file (which the
    /// shipper only writes, but may find damaged) neither panic nor stop it.
    #[test]
    fn extreme_numbers_in_the_checkpoint_file_do_not_panic() {
        let s = setup();
        let path = s.logs.join("main.stderr");
        append(&path, "one\ntwo\n");
        let meta = std::fs::metadata(&path).unwrap();
        let key = FileKey::of(&meta);
        let replaced = Checkpoint {
            key,
            birth: source::birth_nanos(&meta),
            generation: u32::MAX,
            source_id: u64::MAX,
            // Not this file's first bytes: a new generation.
            prefix: Prefix::of(b"other"),
            offset: u64::MAX,
            tail: Prefix {
                len: u64::MAX,
                hash: 0,
            },
            path: path.clone(),
        };
        let ancient = TruncationRecord {
            dir: s.logs.clone(),
            source_id: 1,
            prefix: Prefix {
                len: u64::MAX,
                hash: 0,
            },
            offset: u64::MAX,
            at_unix_ms: i64::MIN,
        };
        let mut store = CheckpointStore::open(&s.state).unwrap();
        store.put(replaced);
        store.set_truncations(vec![ancient]);
        store.save().unwrap();

        let (mut tracker, mut out) = tracker(&s);
        tracker.rescan();
        let key = tracker.by_path[&path];
        assert_eq!(tracker.files[&key].generation, 0, "u32::MAX + 1 wraps");
        assert!(tracker.poll_one(key));
        let lines: Vec<String> = sent(&mut out).into_iter().map(|(_, _, l)| l).collect();
        assert_eq!(lines, ["one", "two"]);
    }
}
