//! Errors of the archive and query engine. Modules with errors of their own
//! (the split format, the catalog) may keep their own enums and convert into
//! this one.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object store call failed; `what` names the object or action.
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },

    /// A configuration value is wrong; names the field.
    #[error("invalid archive configuration: {0}")]
    Config(String),

    #[error(transparent)]
    Bus(#[from] sluice_broker::Error),

    /// Something read back is not what it should be; names it.
    #[error("{0}")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn store(what: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            what: what.into(),
            source,
        }
    }

    /// Worth retrying: a transient store or bus error.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            Error::Bus(e) => e.is_retryable(),
            _ => false,
        }
    }
}
