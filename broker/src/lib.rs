//! The Bus: where shippers publish and archivers consume.
//!
//! [`Bus`] is one trait with two implementations:
//!
//! - [`kafka::KafkaBus`]: production, many machines. Idempotent producer,
//!   `acks=all`, zstd, manual commits.
//! - [`embedded::EmbeddedBus`]: the single-machine default. A durable log of
//!   segments on local disk with a CRC per record, group-commit fsync, size
//!   and age retention and consumer groups.
//!
//! Both keep the same contract, checked by one conformance suite
//! (`tests/conformance.rs`): an acknowledged record is durable; records of
//! one key keep their order; a consumer group resumes after its last commit
//! and receives again what it had not committed.
//!
//! [`open`] turns a bus URL (`embedded:///PATH`, `kafka://HOST:PORT`) into a
//! `Arc<dyn Bus>`.

mod bus;
mod config;
pub mod embedded;
mod error;
mod events;
pub mod kafka;
mod status;

pub use bus::{
    Ack, Bus, Consumer, Delivery, Message, Position, Record, TopicPartition, poll_until,
};
pub use config::{BusConfig, BusUrl, EmbeddedConfig, FsyncPolicy, KafkaConfig, parse_property};
pub use error::{Error, Result};
pub use events::BusEventSink;
pub use status::{BusStatus, GroupOffset, GroupStatus, PartitionStatus, TopicStatus};

use std::sync::Arc;

/// Opens the bus `config.url` names, for publishing and consuming.
pub async fn open(config: &BusConfig) -> Result<Arc<dyn Bus>> {
    config.validate()?;
    Ok(match &config.url {
        BusUrl::Embedded(path) => {
            Arc::new(embedded::EmbeddedBus::open(path, config.embedded.clone())?)
        }
        BusUrl::Kafka(servers) => {
            Arc::new(kafka::KafkaBus::connect(servers, config.kafka.clone()).await?)
        }
    })
}

/// Opens a bus to inspect it: the status and dump tools. An embedded bus is
/// opened read-only, so this works while another process writes to it.
pub async fn open_for_inspection(config: &BusConfig) -> Result<Arc<dyn Bus>> {
    config.validate()?;
    Ok(match &config.url {
        BusUrl::Embedded(path) => Arc::new(embedded::EmbeddedBus::open_read_only(
            path,
            config.embedded.clone(),
        )?),
        BusUrl::Kafka(_) => open(config).await?,
    })
}
