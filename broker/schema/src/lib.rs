//! Sluice's wire contract, in one small crate that does no I/O.
//!
//! - [`archive`]: the archive's Arrow schemas (`logs`, `events`), its
//!   tantivy field and its object-store key layout.
//! - [`pb`]: the protobuf records (`LogChunk`, `ClusterEvent`) and gRPC
//!   services, generated from `proto/sluice/v1/`.
//! - [`topics`]: bus topic names and how records are keyed.
//! - [`auth`]: bearer tokens, principals and the tonic interceptors every
//!   service shares; [`audit`]: the API's audit trail; [`limits`]: per-user
//!   limits on running calls.
//! - [`glob`]: job key globs (`www/prod/*`), shared by `tailll`, the Tail
//!   service and the scheduler.
//! - [`sandbox`]: the native sandbox layout and its manifest, shared by the
//!   scheduler core (writer) and the shipper (reader).
//!
//! Everything that must agree between processes lives here, so that a change
//! to it is a change to one crate with its own compatibility tests.

pub mod archive;
pub mod audit;
pub mod auth;
pub mod events;
pub mod fields;
pub mod glob;
pub mod limits;
pub mod metrics;
pub mod multiline;
pub mod sandbox;
pub mod time;
pub mod topics;

/// Generated protobuf types and gRPC stubs of package `sluice.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sluice.v1");
}

pub use pb::{ClusterEvent, EventKind, Layout, Line, LogChunk, Source, Stream};

/// 64 random bits from the operating system (ids that must not collide
/// across processes and machines).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    u64::from_le_bytes(bytes)
}

/// Version of the `sluice` build, reported by services.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
