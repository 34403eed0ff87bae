//! Errors of the shipper.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; names the field.
    #[error("invalid shipper configuration: {0}")]
    Config(String),

    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Bus(#[from] sluice_broker::Error),
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

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Bus(e) => e.is_retryable(),
            _ => false,
        }
    }
}
