//! Errors of the shipper.

use std::path::PathBuf;

/// A `Result` whose error defaults to the shipper's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can fail when the shipper starts or keeps its state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; names the field.
    #[error("invalid shipper configuration: {0}")]
    Config(String),

    /// A file system operation failed: creating the state directory, reading
    /// or writing checkpoints, or starting the tracker thread.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `failed to write checkpoints`; printed before the path.
        context: &'static str,
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A state file that cannot be read back: names the file and, when the
    /// JSON is well formed, the field (`checkpoints[2].offset`).
    #[error("corrupt {what} {}: {}{message}", path.display(), field_prefix(field))]
    Corrupt {
        /// Kind of file, e.g. `checkpoint file`; follows "corrupt" in the message.
        what: &'static str,
        /// The file that failed to decode.
        path: PathBuf,
        /// Path of the offending field, `""` for the whole file.
        field: String,
        /// The decoder's own message, without file or field.
        message: String,
    },

    /// A call to the bus failed; the broker's error, unchanged.
    #[error(transparent)]
    Bus(#[from] sluice_broker::Error),
}

/// `field: `, or nothing for the whole file.
pub(crate) fn field_prefix(field: &str) -> String {
    match field {
        "" => String::new(),
        field => format!("{field}: "),
    }
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

    /// Whether the same call may succeed if tried again: only a transient bus
    /// error (unavailable, rebalancing, some I/O kinds), as the broker decides.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Bus(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Decodes JSON; an error is `(field, message)`, the field being the path of
/// the value that failed (`checkpoints[2].offset`, `Config.Labels.team`),
/// `""` when the JSON itself is malformed.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        (field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| (String::new(), e.to_string()))?;
    Ok(value)
}
