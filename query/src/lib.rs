//! The archive and its query engine: the archiver writes Parquet + tantivy
//! splits to object storage with a catalog in the store; DataFusion answers
//! SQL over them.
//!
//! Not built yet: see the archive and query issues. DataFusion and tantivy
//! are added with them, so the foundation builds without them.
