//! Errors of the bus.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value or URL is wrong; names the field.
    #[error("invalid bus configuration: {0}")]
    Config(String),

    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A record on disk failed its checksum or framing check.
    #[error("corrupt record in {} at byte {position}: {problem}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        problem: String,
    },

    /// Another process holds the embedded bus for writing.
    #[error("embedded bus {} is in use by another process{}", path.display(), holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },

    #[error("record of {size} bytes is larger than the bus limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },

    #[error("bus is read-only: {0}")]
    ReadOnly(String),

    #[error("unknown topic {topic}")]
    UnknownTopic { topic: String },

    #[error("partition {topic}/{partition} is not assigned to this consumer")]
    NotAssigned { topic: String, partition: u32 },

    /// The consumer group was rebalanced: uncommitted work must be dropped,
    /// its records are delivered again to the partition's new owner.
    #[error("consumer group {group} rebalanced; commit refused for {topic}/{partition}")]
    Rebalanced {
        group: String,
        topic: String,
        partition: u32,
    },

    /// The bus could not be reached or did not answer in time.
    #[error("kafka at {servers}: {detail}")]
    Unavailable { servers: String, detail: String },

    #[error("kafka at {servers}: {source}")]
    Kafka {
        servers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    #[error("bus is shut down")]
    Closed,
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Rebalanced { .. } => true,
            Error::Kafka { source, .. } => kafka_is_retryable(source),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::StorageFull
            ),
            _ => false,
        }
    }
}

fn kafka_is_retryable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            C::MessageTimedOut
                | C::QueueFull
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::RequestTimedOut
                | C::NetworkException
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::OperationTimedOut
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
                | C::RebalanceInProgress
        ),
        None => false,
    }
}
