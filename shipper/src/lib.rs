//! The shipper: finds task sandboxes, tails what tasks write, attaches who
//! wrote it and publishes it to the Bus, and serves live Tail streams.
//!
//! Not built yet: see the shipper issue. This crate holds the place the
//! workspace layout gives it so that the other crates can be wired to it.
