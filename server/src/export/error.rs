//! Export errors: each names what is wrong (format, option, path, table or column).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format `{value}`; valid formats: {valid}")]
    UnknownFormat { value: String, valid: String },

    /// A bad export option (the message names the option).
    #[error("{0}")]
    InvalidOption(String),

    #[error(
        "invalid incremental watermark `{0}`: expected a timestamp such as \
         `2025-06-05 21:12:09` or `2025-06-05T21:12:09Z`"
    )]
    InvalidWatermark(String),

    #[error("invalid export destination `{path}`: {reason}")]
    InvalidDestination { path: String, reason: String },

    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The format library refused something (message from the library, with context).
    #[error("{format} export to `{path}` failed: {message}")]
    Write {
        format: &'static str,
        path: String,
        message: String,
    },

    /// The data does not fit the format (Excel's row/column limits).
    #[error("{format} export to `{path}`: {message}")]
    Limit {
        format: &'static str,
        path: String,
        message: String,
    },

    /// The record stream failed; the partial file was removed.
    #[error("record source failed: {0}")]
    Source(String),

    #[error("export cancelled before it finished; the partial file was removed")]
    Cancelled,

    #[error("export writer task failed: {0}")]
    Task(String),
}

impl ExportError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ExportError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn write(format: &'static str, path: &Path, message: impl ToString) -> Self {
        ExportError::Write {
            format,
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}
