//! The shipper's metrics, rendered in the Prometheus text format.
//!
//! A few atomics do not justify a metrics framework; names are constants
//! here so dashboards and docs have one place to look.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_schema::metrics::{Exposition, Kind};

/// Counter: lines put into chunks for the bus; a re-read after a failed send
/// counts again.
pub const LINES: &str = "sluice_shipper_lines_total";
/// Counter: bytes read from log files; a re-read after a failed send counts again.
pub const BYTES: &str = "sluice_shipper_bytes_read_total";
/// Counter: line text bytes in chunks the bus acknowledged.
pub const ACKED_BYTES: &str = "sluice_shipper_acked_bytes_total";
/// Counter: chunks the bus acknowledged.
pub const CHUNKS: &str = "sluice_shipper_chunks_acked_total";
/// Counter: chunks the bus refused or failed; their lines are read and sent again.
pub const SEND_FAILURES: &str = "sluice_shipper_send_failures_total";
/// Counter: failures that were skipped or retried: files without an identity,
/// failed reads, failed checkpoint saves.
pub const ERRORS: &str = "sluice_shipper_errors_total";
/// Counter: lines that did not match the layout's framing and were shipped
/// raw (a line read again after a failed save counts again).
pub const FRAMING_ERRORS: &str = "sluice_shipper_framing_errors_total";
/// Gauge: log files tracked now, open or closed for the descriptor limit.
pub const FILES: &str = "sluice_shipper_files_tracked";
/// Gauge: line text bytes sent to the bus and not yet acknowledged; reading
/// stops past `max_inflight_bytes`.
pub const INFLIGHT: &str = "sluice_shipper_inflight_bytes";
/// Counter: tracked files whose path came to name another file (rotation by rename).
pub const ROTATIONS: &str = "sluice_shipper_rotations_total";
/// Counter: file truncations seen, while tailed or while the shipper was down.
pub const TRUNCATIONS: &str = "sluice_shipper_truncations_total";
/// Counter: bytes truncated away before they were read, with no copy
/// (copytruncate) found to hold them.
pub const DATA_LOSS: &str = "sluice_shipper_data_loss_bytes_total";
/// Counter: events published through the shipper's event sink (file events
/// and the scheduler's cluster events).
pub const EVENTS: &str = "sluice_shipper_events_published_total";
/// Gauge: bytes written to tracked files and not yet acknowledged (file size
/// minus acknowledged offset, summed over files).
pub const LAG: &str = "sluice_shipper_lag_bytes";
/// Gauge: unacknowledged bytes per source (file size minus acknowledged
/// offset), for the [`MAX_LAG_SERIES`] most behind; labels `job`, `instance`, `path`.
pub const SOURCE_LAG: &str = "sluice_shipper_source_lag_bytes";
/// Gauge: Tail streams being served now.
pub const TAIL_STREAMS: &str = "sluice_shipper_tail_streams";
/// Counter: times a Tail stream fell more than `tail_buffer` chunks behind
/// and caught up by reading the files.
pub const TAIL_CATCH_UPS: &str = "sluice_shipper_tail_catch_ups_total";

/// Sources listed by name in [`SOURCE_LAG`], the most behind first.
pub const MAX_LAG_SERIES: usize = 100;

/// A `u64` updated with relaxed atomics; serves as a counter or a gauge.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`; wraps on overflow.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Replaces the value, for gauges.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Subtracts `n`, for gauges; wraps below zero, so only take back what was added.
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    /// The current value (a relaxed load).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every metric of one shipper, shared as `Arc<Metrics>` by the tracker,
/// the publisher and the Tail service; rendered by [`write`](Self::write).
#[derive(Debug, Default)]
pub struct Metrics {
    /// See [`LINES`]; also shown as `lines_shipped` in node status.
    pub lines_read: Counter,
    /// See [`BYTES`]; counted by the tracker after each read.
    pub bytes_read: Counter,
    /// See [`ACKED_BYTES`]; counted by the publisher.
    pub acked_bytes: Counter,
    /// See [`CHUNKS`]; counted by the publisher.
    pub chunks_acked: Counter,
    /// See [`SEND_FAILURES`]; counted by the tracker when a failure comes back.
    pub send_failures: Counter,
    /// See [`ERRORS`]; counted by the tracker.
    pub errors: Counter,
    /// See [`FRAMING_ERRORS`]; added to after each read.
    pub framing_errors: Counter,
    /// See [`FILES`]; set by the tracker after each change.
    pub files_tracked: Counter,
    /// See [`INFLIGHT`]; set by the tracker.
    pub inflight_bytes: Counter,
    /// See [`ROTATIONS`]; counted by the tracker.
    pub rotations: Counter,
    /// See [`TRUNCATIONS`]; counted by the tracker.
    pub truncations: Counter,
    /// See [`DATA_LOSS`]; added to by the tracker, in bytes.
    pub data_loss_bytes: Counter,
    /// Not counted here: set from the event sink's count by `write`. See [`EVENTS`].
    pub events_published: Counter,
    /// Bytes written to tracked files and not yet acknowledged, in all.
    pub lag_bytes: Counter,
    /// The sources most behind: `(job, instance, path, bytes)`.
    pub source_lag: Mutex<Vec<(String, u32, String, u64)>>,
    /// Every job the shipper holds sources for, sorted, measured about
    /// once a second (the node directory's heartbeat).
    pub jobs: Mutex<Vec<sluice_schema::pb::ShipperJob>>,
    /// See [`TAIL_STREAMS`]; up when a Tail stream starts, down when it ends.
    pub tail_streams: Counter,
    /// See [`TAIL_CATCH_UPS`]; incremented by the Tail service.
    pub tail_catch_ups: Counter,
    /// The sink the shipper's events go through (`events_published` is
    /// read from it).
    pub events: std::sync::OnceLock<std::sync::Arc<sluice_broker::BusEventSink>>,
}

impl Metrics {
    /// Adds every metric, labelled with `host`, to `out`.
    pub fn write(&self, host: &str, out: &mut Exposition) {
        if let Some(sink) = self.events.get() {
            self.events_published.set(sink.published());
        }
        let rows: [(&'static str, &str, &'static str, &Counter); 16] = [
            (
                LINES,
                "counter",
                "lines read from log files",
                &self.lines_read,
            ),
            (
                BYTES,
                "counter",
                "bytes read from log files",
                &self.bytes_read,
            ),
            (
                ACKED_BYTES,
                "counter",
                "line bytes acknowledged by the bus",
                &self.acked_bytes,
            ),
            (
                CHUNKS,
                "counter",
                "chunks acknowledged by the bus",
                &self.chunks_acked,
            ),
            (
                SEND_FAILURES,
                "counter",
                "chunks the bus failed to take (re-read and sent again)",
                &self.send_failures,
            ),
            (
                ERRORS,
                "counter",
                "files or reads that failed and were skipped or retried",
                &self.errors,
            ),
            (
                FRAMING_ERRORS,
                "counter",
                "lines that did not match their layout's framing (shipped raw)",
                &self.framing_errors,
            ),
            (FILES, "gauge", "log files tracked", &self.files_tracked),
            (
                INFLIGHT,
                "gauge",
                "bytes read and not yet acknowledged",
                &self.inflight_bytes,
            ),
            (
                ROTATIONS,
                "counter",
                "files replaced by a new file at their path",
                &self.rotations,
            ),
            (
                TRUNCATIONS,
                "counter",
                "files truncated while tailed",
                &self.truncations,
            ),
            (
                DATA_LOSS,
                "counter",
                "bytes lost before they could be read",
                &self.data_loss_bytes,
            ),
            (
                EVENTS,
                "counter",
                "cluster events published",
                &self.events_published,
            ),
            (
                LAG,
                "gauge",
                "bytes written to tracked files and not yet acknowledged",
                &self.lag_bytes,
            ),
            (
                TAIL_STREAMS,
                "gauge",
                "Tail streams being served",
                &self.tail_streams,
            ),
            (
                TAIL_CATCH_UPS,
                "counter",
                "times a Tail stream fell behind and caught up from the files",
                &self.tail_catch_ups,
            ),
        ];
        for (name, kind, help, value) in rows {
            let kind = if kind == "counter" {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            out.add(name, kind, help, &[("host", host)], value.get());
        }
        out.declare(
            SOURCE_LAG,
            Kind::Gauge,
            "bytes not yet acknowledged, for the sources most behind (at most 100)",
        );
        for (job, instance, path, bytes) in self.source_lag.lock().unwrap().iter() {
            out.gauge(
                SOURCE_LAG,
                "",
                &[
                    ("host", host),
                    ("job", job),
                    ("instance", &instance.to_string()),
                    ("path", path),
                ],
                *bytes,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_and_escapes_labels() {
        let m = Metrics::default();
        m.lines_read.add(3);
        m.lag_bytes.set(10);
        *m.source_lag.lock().unwrap() = vec![("a/b/c".into(), 2, "/x/\"q\"\n".into(), 10)];
        let mut out = Exposition::new();
        m.write("node\"1", &mut out);
        let text = out.render();
        assert!(
            text.contains(&format!("{LINES}{{host=\"node\\\"1\"}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{LAG}{{host=\"node\\\"1\"}} 10")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{SOURCE_LAG}{{host=\"node\\\"1\",job=\"a/b/c\",instance=\"2\",path=\"/x/\\\"q\\\"\\n\"}} 10"
            )),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE").count(), 17);
    }
}
