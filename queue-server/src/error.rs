//! Errors answered to clients. The mapping from engine errors to the
//! contract's codes is the service's ([`ServiceError`]); an error's code
//! determines its status.

use queue_core::service::ServiceError;
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

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        ApiError::new(error.code, error.message)
    }
}

impl From<queue_core::Error> for ApiError {
    fn from(error: queue_core::Error) -> Self {
        ServiceError::from(error).into()
    }
}
