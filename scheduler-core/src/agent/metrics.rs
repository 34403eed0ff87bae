//! A node agent's metrics: its tasks, disk quota kills, disk use and
//! garbage collection, for `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use sluice_schema::metrics::{Exposition, seconds_from_nanos};

pub const TASKS_RUNNING: &str = "sluice_agent_tasks_running";
pub const SANDBOXES: &str = "sluice_agent_sandboxes";
pub const TASKS_LAUNCHED: &str = "sluice_agent_tasks_launched_total";
pub const QUOTA_KILLS: &str = "sluice_agent_quota_kills_total";
pub const DISK_USED: &str = "sluice_agent_disk_used_bytes";
pub const DISK_TOTAL: &str = "sluice_agent_disk_total_bytes";
pub const GC_PASSES: &str = "sluice_gc_passes_total";
pub const GC_SANDBOXES_DELETED: &str = "sluice_gc_sandboxes_deleted_total";
pub const GC_BYTES_FREED: &str = "sluice_gc_bytes_freed_total";
pub const GC_DATA_LOSS: &str = "sluice_gc_data_loss_bytes_total";
pub const GC_LAST_PASS: &str = "sluice_gc_last_pass_unix_seconds";
pub const SCHEDULER_UNREACHABLE: &str = "sluice_agent_scheduler_unreachable";

/// Updated by the agent's thread; read by `/metrics` and `sluice status`.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    pub tasks_running: AtomicU64,
    pub sandboxes: AtomicU64,
    pub tasks_launched: AtomicU64,
    pub quota_kills: AtomicU64,
    /// Of the disk the garbage collector watches (the sandboxes' share when
    /// a capacity is configured), at the last pass.
    pub disk_used_bytes: AtomicU64,
    pub disk_total_bytes: AtomicU64,
    pub gc_passes: AtomicU64,
    pub gc_sandboxes_deleted: AtomicU64,
    pub gc_bytes_freed: AtomicU64,
    /// Unshipped bytes deleted by forced collections (each also a
    /// `data_loss` event).
    pub gc_data_loss_bytes: AtomicU64,
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
