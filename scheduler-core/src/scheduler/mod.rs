//! The scheduler: jobs, their placement on node agents, and its gRPC
//! service (`sluice.v1.Scheduler`).
//!
//! - [`engine`]: [`SchedulerCore`], every decision, synchronous and driven by
//!   an explicit clock: submit, update, kill, describe, list, heartbeats
//!   (node reports in, assignments and kill orders out) and `tick` (silent
//!   nodes, cron ticks, pending placements).
//!   Heartbeats are handled in `heartbeat.rs`.
//! - [`placement`]: the nodes and the choice of one for an instance (spread
//!   a job's instances, within each node's reported capacity).
//! - [`state`]: jobs, instances and tasks, and the JSON state file that
//!   keeps them across restarts.
//! - [`service`]: [`SchedulerService`], the authenticated tonic service,
//!   its tick task and the saving of the state file.
//! - [`config`]: [`SchedulerConfig`], what the scheduler is configured with.
//!
//! **Events.** Through the injected `EventSink`, with ids
//! `scheduler/<start nanos>-<n>`: `JOB_SUBMITTED`, `JOB_UPDATED` and
//! `JOB_KILLED` with the caller as actor, and `TASK_STATE` (attributes
//! `from`, `to`) for the task state changes the scheduler makes itself:
//! PENDING → ASSIGNED when it places a task and → LOST when a node goes
//! silent or forgets a task (actor `system:scheduler`), and → KILLED when
//! it kills a task that no node runs (pending, or assigned and never
//! started; actor: who asked). Changes that nodes report (STARTING, RUNNING,
//! exits, kills carried out on the node) are emitted by the node agents,
//! which know the actor from the kill order, so no change is emitted twice.
//!
//! **Nodes.** Agents are not persisted: after a restart the scheduler knows
//! no node until it heartbeats, and waits `agent_timeout` before declaring
//! any task LOST.

pub mod config;
pub mod engine;
mod heartbeat;
pub mod placement;
pub mod service;
pub mod state;

#[cfg(test)]
mod tests;

pub use config::SchedulerConfig;
pub use engine::{RequestError, SCHEDULER_ACTOR, SchedulerCore, Snapshot};
pub use service::{AuthedSchedulerServer, SchedulerService};
