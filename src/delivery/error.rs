//! What a failed delivery says: the platform's code (retried or not) and a message without
//! secrets.

use crate::codes::Code;

/// A delivery failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// 7051 (will be retried) or 7052 (configuration: retrying will not help).
    pub code: Code,
    /// What happened (no secrets).
    pub message: String,
}

impl DeliveryError {
    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        DeliveryError {
            code: Code::MoveFileFailed,
            message: message.into(),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        DeliveryError {
            code: Code::MoveFileFailed2,
            message: message.into(),
        }
    }
}
