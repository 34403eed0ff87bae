//! The shipper: finds task sandboxes, tails what tasks write, attaches who
//! wrote it and publishes it to the Bus, without losing or doubling a line.
//!
//! - [`layout`]: where each cluster manager puts logs and who wrote them.
//! - `files`: line assembly, file generations and the tracker thread.
//! - [`checkpoint`]: acknowledged offsets, kept across restarts.
//! - `publish`: chunks and events to the bus, acknowledgements back.
//! - [`progress`]: per-sandbox ship progress for garbage collection.
//! - [`tail`]: the Tail service, live lines for `tailll`.
//! - [`Shipper`]: starts and stops the pieces.

pub mod checkpoint;
mod config;
mod error;
pub mod files;
pub mod layout;
pub mod metrics;
#[cfg(test)]
mod mutate;

pub mod otlp;
mod pipeline;
pub mod progress;
mod publish;
mod shipper;
pub mod tail;

pub use config::{JobMultiline, ShipperConfig};
pub use error::{Error, Result};
pub use shipper::{Shipper, ShipperHandle};
pub use tail::TailService;
