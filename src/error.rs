//! The crate's top-level error: every failure maps to a platform code.

use crate::codes::Code;
use crate::layout::LayoutError;
use crate::pipeline::PipelineError;

/// Any roomcast failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad layout input.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Bad RTMP destinations (7101 / 7102).
    #[error(transparent)]
    Rtmp(#[from] crate::model::RtmpUrlError),
    /// The queue store failed.
    #[error(transparent)]
    Store(#[from] crate::queue::StoreError),
    /// A preset that cannot be used.
    #[error(transparent)]
    Preset(#[from] crate::model::PresetError),
    /// Media pipeline failure.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Bad user input other than layouts (preset, watermark, CLI values).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field at fault.
        field: String,
        /// What is wrong.
        message: String,
        /// Code to report.
        code: Code,
    },
    /// A setting (environment variable, configuration file or command-line storage URL) that
    /// cannot be used: the process cannot start as configured.
    #[error("invalid {setting}: {message}")]
    Config {
        /// The setting at fault (`ROOMCAST_STORAGE`, …).
        setting: String,
        /// What is wrong.
        message: String,
        /// The code reported with it.
        code: Code,
    },
    /// A job ran and ended with a code (the room could not be joined, was lost, the
    /// pipeline failed, …).
    #[error("{message}")]
    Job {
        /// The code it ended with.
        code: Code,
        /// What happened.
        message: String,
    },
    /// File system failure.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause (shown in the message, not chained, so it is printed once).
        cause: std::io::Error,
    },
}

impl Error {
    /// The platform code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::Layout(e) => e.code,
            Error::Pipeline(e) => e.code(),
            Error::Rtmp(e) => e.code(),
            Error::Preset(e) => e.code(),
            Error::Store(_) => Code::Generic,
            Error::Invalid { code, .. } => *code,
            Error::Job { code, .. } => *code,
            Error::Config { code, .. } => *code,
            Error::Io { .. } => Code::RecordError,
        }
    }

    /// Whether retrying the same request may succeed.
    /// Bad configuration: the process exits with status 2.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. })
    }

    pub fn is_retryable(&self) -> bool {
        self.code().info().retryable
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
