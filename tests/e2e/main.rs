//! End-to-end tests: the `sluice` binary as users run it, on loopback.
//!
//! One test binary for the whole suite (one link, one place for the
//! harness); each area is a module.

mod archive;
mod harness;

mod bus;
mod console;
mod delta;
mod demo;
mod deploy;
mod directory;
mod faults;
mod maintenance;
mod otlp;
mod pipeline;
mod query;
mod readme;
mod scheduler;
mod soak;
mod tailll;
mod trust;
mod up;
