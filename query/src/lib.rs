//! The archive and its query engine: the archiver writes Parquet + tantivy
//! splits to object storage with a catalog in the store; DataFusion answers
//! SQL over them (the query issue).

pub mod archiver;
pub mod catalog;
mod error;
pub mod maintenance;
pub mod metrics;
pub mod scan;
pub mod split;
pub mod sql;
pub mod store;

pub use error::{Error, Result};
