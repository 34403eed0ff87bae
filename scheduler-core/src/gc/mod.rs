//! Sandbox garbage collection: the [`policy`] that decides, each
//! `disk_watch_interval`, which terminated sandboxes to delete (the Mesos
//! age rule, oldest first under pressure, only once the shipper has shipped
//! them unless the disk is critical or they waited too long) and which
//! running sandboxes' shipped log prefixes to punch out; its
//! [`config`]; and [`sim`], a simulated node that runs the policy against a
//! synthetic workload to measure it (`sluice bench gc`). The I/O that
//! measures and frees disk is in [`crate::disk`].

pub mod config;
mod plot;
pub mod policy;
pub mod sim;

#[cfg(test)]
mod tests;

pub use config::GcConfig;
pub use policy::{
    Decision, Forced, GcPlan, KeepReason, NodeDisk, Pressure, PunchReason, SandboxInfo,
    SandboxState, plan,
};
pub use sim::{SimConfig, SimReport, Stall};
