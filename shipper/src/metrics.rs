//! The shipper's metrics, rendered in the Prometheus text format.
//!
//! A few atomics do not justify a metrics framework; names are constants
//! here so dashboards and docs have one place to look.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self, host: &str) -> String {
        let rows: [(&str, &str, &str, &Counter); 13] = [
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
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{host=\"{host}\"}} {}",
                value.get()
            );
        }
        out
    }
}
