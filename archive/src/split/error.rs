//! Errors of writing, opening and searching splits. None is retryable: they
//! are all about the bytes at hand, not a transport.

/// What went wrong with a split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// A split was to be written from no rows.
    #[error("refusing to write an empty split")]
    Empty,
    /// Invalid [`SplitOptions`](super::SplitOptions), the message naming the
    /// field, or a split that cannot be written as asked.
    #[error("invalid split options: {0}")]
    Options(String),
    /// The Parquet writer failed to encode the rows.
    #[error("failed to encode split parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow refused the batch built from the rows.
    #[error("failed to build split arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A Parquet batch that does not have the archive's columns.
    #[error("split batch does not match the archive schema: {0}")]
    Schema(String),
    /// Building the line index failed, or it needed more than one segment
    /// (`index_memory_bytes` too small for the split).
    #[error("failed to build split index: {0}")]
    IndexBuild(String),
    /// The index blob is damaged or not an index; the message names the
    /// problem.
    #[error("corrupt split index: {0}")]
    CorruptIndex(String),
    /// Tantivy failed while running a query on an opened index.
    #[error("failed to search split index: {0}")]
    Search(String),
    /// The search text does not parse (see [`super::search`] for the language).
    #[error("invalid search query {query:?}: {problem}")]
    Query {
        /// The query as given.
        query: String,
        /// What is wrong with it, e.g. `the query is empty`.
        problem: String,
    },
    /// The row ids handed to [`row_group_selections`](super::row_group_selections)
    /// are not strictly ascending or lie past the file's last row.
    #[error("invalid row selection: {0}")]
    Selection(String),
}

impl SplitError {
    /// Always false: a split error does not go away by trying again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Result of split operations; the error defaults to [`SplitError`].
pub type Result<T, E = SplitError> = std::result::Result<T, E>;
