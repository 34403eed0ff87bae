//! Sluice's archiver (the crate `sluice-archiver`): the bus into the
//! archive, exactly once ([`Archiver`]), and the archive's upkeep in the
//! background ([`maintenance`]: compaction, retention, the janitor), with
//! their metrics. The format itself is `sluice-archive`'s.

mod archiver;
mod error;
pub mod maintenance;
pub mod metrics;

pub use archiver::*;
pub use error::{Error, Result};
