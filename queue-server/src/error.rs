//! The one mapping from failures to HTTP statuses and error codes.

use queue_proto::ErrorCode;

/// An error answered to a client: a code of the contract and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The contract's code (it determines the status).
    pub code: ErrorCode,
    /// Text for the client. For 5xx it never carries internals.
    pub message: String,
    /// The `Allow` header of a 405.
    pub allow: Option<String>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// A 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// A 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// A 500 `internal`; `detail` goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error")
    }
}

impl From<queue_core::Error> for ApiError {
    fn from(error: queue_core::Error) -> Self {
        use queue_core::Error as E;
        match &error {
            E::InvalidArgument { .. } => ApiError::invalid(error.to_string()),
            E::TooLarge { .. } => ApiError::new(ErrorCode::PayloadTooLarge, error.to_string()),
            E::NotFound { .. } => ApiError::not_found(error.to_string()),
            E::LeaseLost { .. } => ApiError::new(ErrorCode::LeaseLost, error.to_string()),
            E::Conflict { .. } => ApiError::new(ErrorCode::Conflict, error.to_string()),
            E::Closed => ApiError::new(ErrorCode::Unavailable, "the server is shutting down"),
            E::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(ErrorCode::Unavailable, "storage is unavailable")
            }
            _ => ApiError::internal(error),
        }
    }
}
