//! Acknowledgements and checkpoints: what the bus took moves the
//! checkpoint and the ship progress; a failure rewinds the source.

use super::*;

impl Tracker {
    /// Writes the checkpoints; returns whether they are on disk.
    pub(super) fn save(&mut self) -> bool {
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

    pub(super) fn acked(&mut self, note: AckNote) {
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
            t.lines = t.assembler(self.framing, self.config.max_line_bytes, t.acked);
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
        // Cuts at or before the acknowledged offset are never read again.
        let acked = t.acked;
        t.cuts.retain(|&c| c > acked);
        t.acked_tail = t
            .file
            .as_ref()
            .and_then(|f| source::tail(f, t.acked).ok())
            .unwrap_or_default();
        self.progress.record(t.key, t.acked);
        self.checkpoints.put(t.checkpoint());
    }
}
