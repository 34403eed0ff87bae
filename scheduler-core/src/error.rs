//! Errors of the scheduler core.

use std::path::PathBuf;

/// `Result` with the scheduler core's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the scheduler core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec is wrong. `field` is the path of the offending field
    /// (`processes[1].cmd`, `resources.disk_mb`), `""` for the whole file.
    #[error("invalid job spec: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Spec {
        /// Path of the offending field, such as `processes[1].cmd`; empty
        /// when the error is about the whole file.
        field: String,
        /// What is wrong with the field, without the field's path.
        message: String,
    },

    /// A configuration value is wrong; names the field.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),

    /// A file operation or system call failed, or an agent state file could
    /// not be encoded or parsed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done, phrased to precede `path` ("failed to read").
        context: &'static str,
        /// The file or directory acted on; for some errors another name
        /// instead (a node, a task user, `signal handlers`).
        path: PathBuf,
        /// The underlying error; JSON errors are wrapped as `io::Error`.
        #[source]
        source: std::io::Error,
    },
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

    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Spec {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether retrying the same operation may succeed; currently always
    /// `false` for scheduler-core errors.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
