//! The `sluice` commands, one module each, with their flags beside them.
//! A command uses [`crate::shared`], never another command.

pub mod archive;
pub mod bus;
pub mod executor;
pub mod job;
pub mod node;
pub mod query;
pub mod scheduler;
pub mod shipper;
pub mod status;
pub mod up;
