//! The scheduler core: job specs, placement, node agents running tasks in
//! sandboxes, disk quotas and sandbox garbage collection.

pub mod agent;
pub mod cron;
pub mod disk;
mod error;
pub mod gc;
pub mod scheduler;
pub mod spec;

pub use error::{Error, Result};
