//! The shipper's metrics, rendered in the Prometheus text format.
//!
//! A few atomics do not justify a metrics framework; names are constants
//! here so dashboards and docs have one place to look.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_schema::metrics::{Exposition, Kind};

pub const LINES: &str = "sluice_shipper_lines_total";
pub const BYTES: &str = "sluice_shipper_bytes_read_total";
pub const ACKED_BYTES: &str = "sluice_shipper_acked_bytes_total";
pub const CHUNKS: &str = "sluice_shipper_chunks_acked_total";
pub const SEND_FAILURES: &str = "sluice_shipper_send_failures_total";
pub const ERRORS: &str = "sluice_shipper_errors_total";
pub const FRAMING_ERRORS: &str = "sluice_shipper_framing_errors";
pub const FILES: &str = "sluice_shipper_files_tracked";
pub const INFLIGHT: &str = "sluice_shipper_inflight_bytes";
pub const ROTATIONS: &str = "sluice_shipper_rotations_total";
pub const TRUNCATIONS: &str = "sluice_shipper_truncations_total";
pub const DATA_LOSS: &str = "sluice_shipper_data_loss_bytes_total";
pub const EVENTS: &str = "sluice_shipper_events_published_total";
pub const LAG: &str = "sluice_shipper_lag_bytes";
pub const SOURCE_LAG: &str = "sluice_shipper_source_lag_bytes";
pub const TAIL_STREAMS: &str = "sluice_shipper_tail_streams";
pub const TAIL_CATCH_UPS: &str = "sluice_shipper_tail_catch_ups_total";

/// Sources listed by name in [`SOURCE_LAG`], the most behind first.
pub const MAX_LAG_SERIES: usize = 100;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub acked_bytes: Counter,
    pub chunks_acked: Counter,
    pub send_failures: Counter,
    pub errors: Counter,
    pub framing_errors: Counter,
    pub files_tracked: Counter,
    pub inflight_bytes: Counter,
    pub rotations: Counter,
    pub truncations: Counter,
    pub data_loss_bytes: Counter,
    pub events_published: Counter,
    /// Bytes written to tracked files and not yet acknowledged, in all.
    pub lag_bytes: Counter,
    /// The sources most behind: `(job, instance, path, bytes)`.
    pub source_lag: Mutex<Vec<(String, u32, String, u64)>>,
    pub tail_streams: Counter,
    pub tail_catch_ups: Counter,
}

impl Metrics {
    /// Adds every metric, labelled with `host`, to `out`.
    pub fn write(&self, host: &str, out: &mut Exposition) {
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
                "gauge",
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
                bytes,
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
