//! Truncation and copytruncate: a new generation for a truncated file,
//! what was lost, and the copy that continues the original.

use super::*;

impl Tracker {
    /// The file shrank: a new generation starts at 0.
    pub(super) fn truncated(&mut self, key: FileKey, size: u64) {
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
        t.lines.close_group(&mut flushed);
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
        t.cuts.clear();
        t.lines = t.assembler(self.framing, self.config.max_line_bytes, 0);
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

    /// Whether a new file is a copy of a file that was (or is about to be)
    /// truncated: its first bytes match that file's. A copy still being
    /// written (shorter than the prefix) whose bytes so far match waits, as
    /// does a copy of a live file, which may be truncated next; after
    /// `COPY_WAIT` it is shipped as a file of its own.
    pub(super) fn copy_origin(
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
    pub(super) fn recent_truncations(&mut self) -> Vec<TruncationRecord> {
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

    pub(super) fn record_truncation(&mut self, record: TruncationRecord) {
        let mut all = self.recent_truncations();
        all.push(record);
        self.checkpoints.set_truncations(all);
    }
}

pub(super) enum CopyOf {
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

/// Whether `file` still begins with the bytes `prefix` describes.
pub(super) fn still_starts(file: &File, prefix: &Prefix) -> bool {
    prefix.len == 0 || source::prefix(file, prefix.len).is_ok_and(|p| same_start(&p, prefix))
}

pub(super) fn same_start(a: &Prefix, b: &Prefix) -> bool {
    a.len == b.len && a.hash == b.hash
}
