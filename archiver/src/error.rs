//! Errors of the archiver and maintenance: the archive's, and the bus's.

/// Result of the archiver and maintenance; the error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the archiver or maintenance failed; [`Error::is_retryable`] tells a
/// transient failure. The archive's and the catalog's errors convert into it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive failed: a store call, a configuration value, or something
    /// read back that is not what it should be (each names its object).
    #[error(transparent)]
    Archive(#[from] sluice_archive::Error),

    /// A bus call failed (joining the group, polling, seeking, committing
    /// offsets); retryable when the bus error is.
    #[error(transparent)]
    Bus(#[from] sluice_broker::Error),
}

impl From<sluice_archive::catalog::Error> for Error {
    fn from(e: sluice_archive::catalog::Error) -> Self {
        sluice_archive::Error::from(e).into()
    }
}

impl Error {
    /// A failed store call on `what`.
    pub(crate) fn store(what: impl Into<String>, source: object_store::Error) -> Self {
        sluice_archive::Error::store(what, source).into()
    }

    /// A wrong configuration value; `message` names the field.
    pub(crate) fn config(message: String) -> Self {
        sluice_archive::Error::Config(message).into()
    }

    /// Something read back or made that is not what it should be.
    pub(crate) fn corrupt(message: String) -> Self {
        sluice_archive::Error::Corrupt(message).into()
    }

    /// Worth retrying: a transient store or bus error.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Archive(e) => e.is_retryable(),
            Error::Bus(e) => e.is_retryable(),
        }
    }
}
