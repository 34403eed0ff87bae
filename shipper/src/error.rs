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

    /// A state file that cannot be read back: names the file and, when the
    /// JSON is well formed, the field (`checkpoints[2].offset`).
    #[error("corrupt {what} {}: {}{message}", path.display(), field_prefix(field))]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        /// Path of the offending field, `""` for the whole file.
        field: String,
        message: String,
    },

    #[error(transparent)]
    Bus(#[from] sluice_broker::Error),
}

/// `field: `, or nothing for the whole file.
pub(crate) fn field_prefix(field: &str) -> String {
    match field {
        "" => String::new(),
        field => format!("{field}: "),
    }
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

/// Decodes JSON; an error is `(field, message)`, the field being the path of
/// the value that failed (`checkpoints[2].offset`, `Config.Labels.team`),
/// `""` when the JSON itself is malformed.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> std::result::Result<T, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        (field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| (String::new(), e.to_string()))?;
    Ok(value)
}
