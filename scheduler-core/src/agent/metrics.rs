//! A node agent's metrics: its tasks, disk quota kills, disk use and
//! garbage collection, for `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_schema::metrics::{Exposition, seconds_from_nanos};

/// Gauge: tasks on the node not yet in a terminal state.
pub const TASKS_RUNNING: &str = "sluice_agent_tasks_running";
/// Gauge: sandboxes on the node, terminal tasks' included until collected.
pub const SANDBOXES: &str = "sluice_agent_sandboxes";
/// Counter: tasks whose executor the agent started.
pub const TASKS_LAUNCHED: &str = "sluice_agent_tasks_launched_total";
/// Counter: tasks killed for using more disk than `resources.disk_mb`.
pub const QUOTA_KILLS: &str = "sluice_agent_quota_kills_total";
/// Gauge: bytes used of the disk garbage collection watches, after its last
/// pass.
pub const DISK_USED: &str = "sluice_agent_disk_used_bytes";
/// Gauge: size in bytes of the disk garbage collection watches (0 when it
/// could not be measured).
pub const DISK_TOTAL: &str = "sluice_agent_disk_total_bytes";
/// Counter: garbage-collection passes carried out (dry runs excluded).
pub const GC_PASSES: &str = "sluice_gc_passes_total";
/// Counter: sandboxes deleted by garbage collection.
pub const GC_SANDBOXES_DELETED: &str = "sluice_gc_sandboxes_deleted_total";
/// Counter: bytes freed by garbage collection, deletions and hole punches.
pub const GC_BYTES_FREED: &str = "sluice_gc_bytes_freed_total";
/// Counter: unshipped log bytes deleted by forced collections.
pub const GC_DATA_LOSS: &str = "sluice_gc_data_loss_bytes_total";
/// Gauge: unix seconds of the last garbage-collection pass; 0 before the
/// first.
pub const GC_LAST_PASS: &str = "sluice_gc_last_pass_unix_seconds";
/// Gauge: 1 while the scheduler does not answer heartbeats, else 0.
pub const SCHEDULER_UNREACHABLE: &str = "sluice_agent_scheduler_unreachable";

/// Updated by the agent's thread; read by `/metrics` and `sluice status`.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Tasks not yet terminal, as of the last poll ([`TASKS_RUNNING`]).
    pub tasks_running: AtomicU64,
    /// Tasks the runtime tracks, one sandbox each ([`SANDBOXES`]).
    pub sandboxes: AtomicU64,
    /// Executors started since the agent started ([`TASKS_LAUNCHED`]).
    pub tasks_launched: AtomicU64,
    /// Disk-quota kills since the agent started, copied from the runtime on
    /// each poll ([`QUOTA_KILLS`]).
    pub quota_kills: AtomicU64,
    /// Of the disk the garbage collector watches (the sandboxes' share when
    /// a capacity is configured), at the last pass.
    pub disk_used_bytes: AtomicU64,
    /// Size of that disk in bytes, at the last pass ([`DISK_TOTAL`]).
    pub disk_total_bytes: AtomicU64,
    /// Passes carried out, dry runs excluded ([`GC_PASSES`]).
    pub gc_passes: AtomicU64,
    /// Sandboxes garbage collection deleted ([`GC_SANDBOXES_DELETED`]).
    pub gc_sandboxes_deleted: AtomicU64,
    /// Bytes freed by deletions and hole punches ([`GC_BYTES_FREED`]).
    pub gc_bytes_freed: AtomicU64,
    /// Unshipped bytes deleted by forced collections (each also a
    /// `data_loss` event).
    pub gc_data_loss_bytes: AtomicU64,
    /// When the last pass ran, unix nanoseconds; 0 before the first
    /// ([`GC_LAST_PASS`]).
    pub gc_last_pass_unix_nanos: AtomicI64,
    /// 1 while the scheduler does not answer heartbeats.
    pub scheduler_unreachable: AtomicU64,
}

impl AgentMetrics {
    /// Adds every metric, labelled with the node's name, to `out`.
    pub fn write(&self, node: &str, out: &mut Exposition) {
        let labels = [("host", node)];
        let get = |v: &AtomicU64| v.load(Ordering::Relaxed);
        for (name, help, value) in [
            (TASKS_RUNNING, "tasks not yet terminal", &self.tasks_running),
            (SANDBOXES, "sandboxes on the node", &self.sandboxes),
            (
                DISK_USED,
                "bytes used of the disk garbage collection watches, at its last pass",
                &self.disk_used_bytes,
            ),
            (
                DISK_TOTAL,
                "bytes of the disk garbage collection watches",
                &self.disk_total_bytes,
            ),
            (
                SCHEDULER_UNREACHABLE,
                "1 while the scheduler does not answer heartbeats",
                &self.scheduler_unreachable,
            ),
        ] {
            out.gauge(name, help, &labels, get(value));
        }
        for (name, help, value) in [
            (
                TASKS_LAUNCHED,
                "tasks started on the node",
                &self.tasks_launched,
            ),
            (
                QUOTA_KILLS,
                "tasks killed for exceeding their disk quota",
                &self.quota_kills,
            ),
            (
                GC_PASSES,
                "garbage-collection passes applied",
                &self.gc_passes,
            ),
            (
                GC_SANDBOXES_DELETED,
                "sandboxes deleted by garbage collection",
                &self.gc_sandboxes_deleted,
            ),
            (
                GC_BYTES_FREED,
                "bytes freed by garbage collection (deletions and hole punches)",
                &self.gc_bytes_freed,
            ),
            (
                GC_DATA_LOSS,
                "unshipped log bytes deleted by forced collections",
                &self.gc_data_loss_bytes,
            ),
        ] {
            out.counter(name, help, &labels, get(value));
        }
        out.gauge(
            GC_LAST_PASS,
            "when garbage collection last ran (0: not yet)",
            &labels,
            seconds_from_nanos(self.gc_last_pass_unix_nanos.load(Ordering::Relaxed)),
        );
    }
}
