//! Errors of the catalog. Every message names the catalog object (or the
//! draft's split) that failed; a conflict with another writer is not an error
//! but a [`CommitOutcome`](super::CommitOutcome).

/// Result of catalog operations; the error defaults to the catalog's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a catalog operation failed. Converts into [`crate::Error`]: store and
/// configuration errors keep their kind, the others become `Corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store call failed (after retries when it was transient).
    #[error("{what}: {source}")]
    Store {
        /// What was being done, naming the object (e.g. `failed to write <path>`).
        what: String,
        /// The store's error; [`Error::is_retryable`] judges it.
        #[source]
        source: object_store::Error,
    },

    /// A catalog object cannot be parsed.
    #[error("corrupt catalog object {key}: {reason}")]
    Corrupt {
        /// Store path of the object.
        key: String,
        /// What is wrong with it; names the field when the JSON is well formed.
        reason: String,
    },

    /// A commit is missing while a later one exists: the log has a hole.
    #[error("catalog commit {missing} is missing ({key}) but commit {} exists", missing + 1)]
    Gap {
        /// Version of the missing commit; commit `missing + 1` exists.
        missing: u64,
        /// Store path where the missing commit should be.
        key: String,
    },

    /// A catalog object written by a newer Sluice.
    #[error("catalog object {key} has format {format}, this build reads up to {supported}")]
    UnsupportedFormat {
        /// Store path of the object.
        key: String,
        /// The `format` the object says it has.
        format: u32,
        /// The newest format this build reads ([`FORMAT`](super::FORMAT)).
        supported: u32,
    },

    /// The draft cannot be committed as it is (a caller bug, not a race).
    #[error("invalid catalog commit draft: {0}")]
    InvalidDraft(String),

    /// The draft is older than `max_draft_age`: the janitor may already have
    /// deleted its objects, so committing it could reference missing data.
    #[error(
        "catalog commit draft is {age_secs} s old, more than max_draft_age ({max_secs} s): drop it"
    )]
    DraftExpired {
        /// Seconds since the draft was started.
        age_secs: u64,
        /// The configured `max_draft_age_secs`.
        max_secs: u64,
    },

    /// A configuration value is wrong; names the field.
    #[error("invalid catalog configuration: {0}")]
    Config(String),

    /// delta-rs failed (writing a Delta checkpoint).
    #[error("{what}: {detail}")]
    Delta {
        /// What was being done.
        what: String,
        /// delta-rs's error.
        detail: String,
    },

    /// The archive is in the format before Delta Lake: it must be migrated
    /// before this build reads or writes it.
    #[error(
        "the archive at {key} is in the format before Delta Lake (a _catalog/ log): run `sluice archive migrate` first"
    )]
    Legacy {
        /// Store path of the old catalog's first commit.
        key: String,
    },
}

impl Error {
    pub(crate) fn store(what: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn corrupt(key: impl ToString, reason: impl ToString) -> Self {
        Error::Corrupt {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Worth retrying later: a transient store error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store { source, .. } if is_transient(source))
    }
}

/// Store errors that may go away by themselves: object_store reports
/// transport failures, timeouts and 5xx answers (after its own retries) as
/// `Generic`.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Store { what, source } => crate::Error::Store { what, source },
            Error::Config(message) => crate::Error::Config(message),
            other => crate::Error::Corrupt(other.to_string()),
        }
    }
}
