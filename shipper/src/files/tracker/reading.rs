//! Reading: the in-flight budget and descriptor limit, polling files that
//! grew, lines into chunks, sending them, letting go of finished files.

use super::*;

impl Tracker {
    /// Closes the longest-idle file that is read to its end, if the budget
    /// of open descriptors is used up.
    pub(super) fn make_room(&mut self) {
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
    pub(super) fn poll_all(&mut self) -> bool {
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
    pub(super) fn measure_lag(&self) {
        let mut lagging: Vec<(u64, &Tracked)> = self
            .files
            .values()
            .map(|t| (t.size.saturating_sub(t.acked), t))
            .filter(|(lag, _)| *lag > 0)
            .collect();
        self.metrics
            .lag_bytes
            .set(lagging.iter().map(|(lag, _)| lag).sum());
        if self.jobs_measured.get().elapsed() >= JOBS_EVERY {
            self.jobs_measured.set(Instant::now());
            *self.metrics.jobs.lock().unwrap() = self.jobs_held();
        }
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

    /// Every job this shipper holds sources for, sorted (the node
    /// directory's heartbeat).
    fn jobs_held(&self) -> Vec<sluice_schema::pb::ShipperJob> {
        let mut jobs: std::collections::BTreeMap<&str, sluice_schema::pb::ShipperJob> =
            std::collections::BTreeMap::new();
        for t in self.files.values() {
            let held = jobs.entry(t.source.job.as_str()).or_insert_with(|| {
                sluice_schema::pb::ShipperJob {
                    job: t.source.job.clone(),
                    ..Default::default()
                }
            });
            held.sources += 1;
            held.lag_bytes += t.size.saturating_sub(t.acked);
            if let Err(i) = held.instances.binary_search(&t.source.instance) {
                held.instances.insert(i, t.source.instance);
            }
        }
        jobs.into_values().collect()
    }

    pub(super) fn poll_one(&mut self, key: FileKey) -> bool {
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
        let idle = t.last_growth.elapsed();
        let read_all = t.lines.next_offset() >= size;
        let mut cuts = Vec::new();
        if read_all
            && t.lines.held_bytes() > 0
            && (idle >= self.config.quiet() || t.ended || t.gone)
        {
            cuts.extend(t.lines.flush(&mut out));
        }
        // A multi-line event whose rule's timeout passed with no growth.
        if read_all
            && t.lines
                .group_timeout()
                .is_some_and(|timeout| idle >= timeout || t.ended || t.gone)
        {
            cuts.extend(t.lines.close_group(&mut out));
        }
        if !cuts.is_empty() {
            // Where a line or event ended by time, not by the file's bytes:
            // on disk before it is sent (send_chunks saves first), so a
            // restart ends it there again.
            t.cuts.extend(cuts);
            t.registered = false;
            self.checkpoints.put(t.checkpoint());
        }
        if !out.is_empty() {
            let chunks = out.finish();
            if !self.send_chunks(key, chunks) {
                return false;
            }
        }
        self.let_go_if_done(key, now)
    }

    /// Hands a read's chunks to the publisher. Returns false when it is gone.
    pub(super) fn send_chunks(&mut self, key: FileKey, chunks: Vec<EncodedChunk>) -> bool {
        if !self.files[&key].registered && !self.save() {
            // Not durable yet: read these bytes again later.
            let t = self.files.get_mut(&key).unwrap();
            let offset = t.inflight.back().map_or(t.acked, |(end, _)| *end);
            t.lines = t.assembler(self.framing, self.config.max_line_bytes, offset);
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
                .send(ChunkOut {
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
                })
                .is_ok();
        }
        self.metrics
            .framing_errors
            .add(t.lines.take_framing_errors());
        alive
    }

    /// A gone file that is read, acknowledged and quiet is let go.
    pub(super) fn let_go_if_done(&mut self, key: FileKey, now: Instant) -> bool {
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
}

/// Files with unread bytes, in the order they are to be read again (each
/// once; removal is lazy).
#[derive(Default)]
pub(super) struct Behind {
    queue: VecDeque<FileKey>,
    members: std::collections::HashSet<FileKey>,
}

impl Behind {
    pub(super) fn push(&mut self, key: FileKey) {
        if self.members.insert(key) {
            self.queue.push_back(key);
        }
    }

    pub(super) fn remove(&mut self, key: &FileKey) {
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

    pub(super) fn pop(&mut self) -> Option<FileKey> {
        while let Some(key) = self.queue.pop_front() {
            if self.members.remove(&key) {
                return Some(key);
            }
        }
        None
    }

    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
