//! Errors of the bus.

use std::path::PathBuf;

/// The result of every bus operation; the error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a bus operation failed; [`Error::is_retryable`] tells whether trying
/// again later may help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value or URL is wrong; names the field.
    #[error("invalid bus configuration: {0}")]
    Config(String),

    /// A file system call of the embedded bus failed, or a flush timed out.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"failed to open segment"`.
        context: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error (`TimedOut` for a flush that did not finish).
        #[source]
        source: std::io::Error,
    },

    /// A record on disk failed its checksum or framing check.
    #[error("corrupt record in {} at byte {position}: {problem}", path.display())]
    Corrupt {
        /// The segment file, or the `topic.json` or group offsets file that does not parse.
        path: PathBuf,
        /// Byte offset in the file where the bad record starts; 0 for a JSON file.
        position: u64,
        /// What is wrong with the bytes.
        problem: String,
    },

    /// Another process holds the embedded bus for writing.
    #[error("embedded bus {} is in use by another process{}", path.display(), holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The bus directory.
        path: PathBuf,
        /// The process id written in its `LOCK` file, `None` if the file was empty or unreadable.
        holder: Option<String>,
    },

    /// A record's key and payload together are larger than the embedded bus's
    /// `max_record_bytes`; nothing was sent.
    #[error("record of {size} bytes is larger than the bus limit of {limit} bytes")]
    RecordTooLarge {
        /// Bytes of key plus payload.
        size: usize,
        /// The configured `max_record_bytes`.
        limit: usize,
    },

    /// A bus opened for inspection was asked to send, flush or commit; the
    /// text says what needed write access.
    #[error("bus is read-only: {0}")]
    ReadOnly(String),

    /// A read-only embedded bus was asked for a topic that does not exist
    /// (it cannot create one).
    #[error("unknown topic {topic}")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },

    /// A seek or commit named a partition this consumer does not hold and
    /// never returned records of.
    #[error("partition {topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// Topic of the partition.
        topic: String,
        /// The partition number.
        partition: u32,
    },

    /// The consumer group was rebalanced: uncommitted work must be dropped,
    /// its records are delivered again to the partition's new owner.
    #[error("consumer group {group} rebalanced; commit refused for {topic}/{partition}")]
    Rebalanced {
        /// The consumer group.
        group: String,
        /// Topic of the partition whose commit was refused.
        topic: String,
        /// The partition whose commit was refused (the first, if several were).
        partition: u32,
    },

    /// The bus could not be reached or did not answer in time.
    #[error("kafka at {servers}: {detail}")]
    Unavailable {
        /// The bootstrap servers, `host:port,host:port`.
        servers: String,
        /// What went wrong, e.g. that no broker answered within the timeout.
        detail: String,
    },

    /// librdkafka failed with an error not classed as [`Error::Unavailable`].
    #[error("kafka at {servers}: {source}")]
    Kafka {
        /// The bootstrap servers, `host:port,host:port`.
        servers: String,
        /// The librdkafka error; [`Error::is_retryable`] looks at its code.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The bus, or a background task it relies on (the embedded writer
    /// thread), has shut down, so the operation or its acknowledgement
    /// cannot complete.
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
