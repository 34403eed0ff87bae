//! Errors of writing, opening and searching splits. None is retryable: they
//! are all about the bytes at hand, not a transport.

/// What went wrong with a split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("refusing to write an empty split")]
    Empty,
    #[error("invalid split options: {0}")]
    Options(String),
    #[error("failed to encode split parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("failed to build split arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A Parquet batch that does not have the archive's columns.
    #[error("split batch does not match the archive schema: {0}")]
    Schema(String),
    #[error("failed to build split index: {0}")]
    IndexBuild(String),
    /// The index blob is damaged or not an index; the message names the
    /// problem.
    #[error("corrupt split index: {0}")]
    CorruptIndex(String),
    #[error("failed to search split index: {0}")]
    Search(String),
    #[error("invalid search query {query:?}: {problem}")]
    Query { query: String, problem: String },
    #[error("invalid row selection: {0}")]
    Selection(String),
}

impl SplitError {
    /// Always false: a split error does not go away by trying again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

pub type Result<T, E = SplitError> = std::result::Result<T, E>;
