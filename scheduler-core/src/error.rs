//! Errors of the scheduler core.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec is wrong. `field` is the path of the offending field
    /// (`processes[1].cmd`, `resources.disk_mb`), `""` for the whole file.
    #[error("invalid job spec: {}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Spec { field: String, message: String },

    /// A configuration value is wrong; names the field.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),

    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
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

    pub fn is_retryable(&self) -> bool {
        false
    }
}
