//! The scheduler core: job specs, placement, node agents running tasks in
//! sandboxes, disk quotas and sandbox garbage collection.
//!
//! Not built yet: see the scheduler issue.
