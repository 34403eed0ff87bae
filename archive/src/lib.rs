//! Sluice's archive format (the crate `sluice-archive`): what is written to
//! object storage and how it is read back, whoever writes or reads it.
//!
//! - [`split`]: one split is a Parquet file of rows (zstd, sorted by job,
//!   instance, time) and a tantivy index of its lines, with a filter of its
//!   terms; the search syntax.
//! - [`catalog`]: each table's Delta Lake log: the live splits, the bus
//!   positions (`txn`) and archived line ranges each commit recorded,
//!   put-if-absent commits and their conflicts, checkpoints, the janitor.
//! - [`migrate`]: an archive of the format before Delta Lake into the tables.
//! - [`store`]: store URLs (`file://`, `s3://`, `memory://`) to object
//!   stores; [`scan`]: every row of an archive, for tools and tests.
//!
//! The archiver (`sluice-archiver`) writes through this crate and the SQL
//! engine (`sluice-query`) reads through it; this crate knows neither the
//! bus nor SQL.

pub mod catalog;
mod error;
pub mod migrate;
pub mod scan;
pub mod split;
pub mod store;

pub use error::{Error, Result};
