//! Errors of the archive. Modules with errors of their own (the split
//! format, the catalog) keep their own enums and convert into this one.

/// Result of archive operations; the error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an archive operation failed: the store, the configuration, or what
/// was read back. The catalog's errors convert into it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An object store call failed; `what` names the object or action.
    #[error("{what}: {source}")]
    Store {
        /// The failed action and its object, e.g. `failed to read split <path>`.
        what: String,
        /// The store's error; [`Error::is_retryable`] judges it.
        #[source]
        source: object_store::Error,
    },

    /// A configuration value is wrong; names the field.
    #[error("invalid archive configuration: {0}")]
    Config(String),

    /// Something read back is not what it should be; names it.
    #[error("{0}")]
    Corrupt(String),
}

impl Error {
    /// A failed store call on `what`.
    pub fn store(what: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            what: what.into(),
            source,
        }
    }

    /// Worth retrying: a transient store error.
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
            _ => false,
        }
    }
}
