//! The one error type of the SDK.

use std::time::Duration;

use queue_proto::{ErrorCode, JobState};

use crate::JobId;

/// A boxed error from the layer underneath (socket, HTTP, runtime).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a call.
///
/// The first group maps the server's error codes one to one (the same codes
/// come out of the embedded transport), so a caller matches on a variant,
/// never on a string. Then come the outcomes of waiting for a job
/// ([`JobFailed`](Error::JobFailed), [`JobCancelled`](Error::JobCancelled),
/// [`JobTimedOut`](Error::JobTimedOut)), and last the failures of the
/// machinery (transport, time-outs, encoding, configuration).
///
/// ```
/// use queue_client::Error;
///
/// fn describe(error: &Error) -> &'static str {
///     match error {
///         Error::LeaseLost { .. } => "another worker owns the job now",
///         Error::JobTimedOut { .. } => "still running; poll its handle later",
///         e if e.is_transient() => "try again",
///         _ => "give up",
///     }
/// }
/// assert_eq!(describe(&Error::Timeout { after: std::time::Duration::from_secs(1) }), "try again");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `400 invalid_request`: a malformed or out-of-range argument (also
    /// raised locally, before sending, for a bad queue name). Nothing changed.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// `401 unauthorized`: the bearer token is missing or wrong.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's text.
        message: String,
    },
    /// `404 not_found`: no such job (never existed, or removed by retention).
    #[error("not found: {message}")]
    NotFound {
        /// The server's text.
        message: String,
    },
    /// `409 lease_lost`: the lease is not the job's current one any more (it
    /// expired, the job was leased again, cancelled or already finished).
    /// Nothing changed.
    #[error("lease lost: {message}")]
    LeaseLost {
        /// The server's text.
        message: String,
    },
    /// `409 conflict`: the operation does not fit the job's state (e.g.
    /// cancelling a completed job). Nothing changed.
    #[error("conflict: {message}")]
    Conflict {
        /// The server's text.
        message: String,
    },
    /// `413 payload_too_large`: the request body (or, embedded, the payload or
    /// result) is over the configured limit. Nothing changed.
    #[error("payload too large: {message}")]
    PayloadTooLarge {
        /// The server's text.
        message: String,
    },
    /// `503 unavailable`: the server is shutting down or its storage failed.
    /// Retried automatically where that is safe.
    #[error("server unavailable: {message}")]
    Unavailable {
        /// The server's text.
        message: String,
    },
    /// Any other error status (`500 internal`, `405`, or a status the
    /// contract does not name).
    #[error("server error {status} ({code}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The contract's code, or `"unknown"` when the body had none.
        code: String,
        /// The server's text.
        message: String,
    },
    /// The job reached `dead`: its attempts ran out or a worker failed it
    /// permanently. Returned by [`JobHandle::wait`](crate::JobHandle::wait)
    /// and [`TypedQueue::call`](crate::TypedQueue::call).
    #[error("job {id} failed after {attempts} attempt(s): {last_error}")]
    JobFailed {
        /// The job.
        id: JobId,
        /// Attempts it used.
        attempts: u32,
        /// The last failure's text (`"lease expired"` when a worker vanished).
        last_error: String,
    },
    /// The job was cancelled before it finished.
    #[error("job {id} was cancelled")]
    JobCancelled {
        /// The job.
        id: JobId,
    },
    /// The wait ended before the job finished. The job is not affected: it
    /// keeps its place and will still run; [`Error::job_id`] gives its id and
    /// [`TypedQueue::job`](crate::TypedQueue::job) a handle to it.
    #[error("job {id} is still {state} after waiting {waited:?}")]
    JobTimedOut {
        /// The job.
        id: JobId,
        /// Its state when the wait ended.
        state: JobState,
        /// How long the call waited.
        waited: Duration,
    },
    /// The server could not be reached, or the connection failed before a
    /// response arrived (the request may or may not have taken effect).
    #[error("transport error: {0}")]
    Transport(BoxError),
    /// No response within the client's request timeout (the request may or
    /// may not have taken effect).
    #[error("no response within {after:?}")]
    Timeout {
        /// The time limit that passed.
        after: Duration,
    },
    /// A payload or result could not be encoded as JSON.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// `"payload"` or `"result"`.
        what: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A payload, result or response did not decode into the expected type.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded (e.g. `"result"`, `"payload of job …"`).
        what: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The server's URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An event of an [`EventStream`](crate::EventStream) was larger than
    /// the client accepts (`limit` bytes): it was skipped, and the stream
    /// goes on after it. Only a server that does not keep the contract's
    /// limits sends one.
    #[error("an event{} of the stream was over {limit} bytes and was skipped", .event_id.map(|id| format!(" (id {id})")).unwrap_or_default())]
    EventTooLarge {
        /// The skipped event's id, when it came before the limit was reached.
        event_id: Option<u64>,
        /// The most bytes one event may take.
        limit: usize,
    },
    /// A method of [`blocking`](crate::blocking) was called from inside an
    /// async runtime, where blocking the thread would stall other tasks (or
    /// deadlock). Use the async [`Client`](crate::Client) there.
    #[error(
        "the blocking client was called from inside an async runtime; use queue_client::Client there"
    )]
    BlockingInRuntime,
    /// The blocking client could not start its runtime.
    #[error("cannot start the blocking client's runtime: {0}")]
    Runtime(std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The contract's error code this error carries, if it came from one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Error::Unauthorized { .. } => ErrorCode::Unauthorized,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::LeaseLost { .. } => ErrorCode::LeaseLost,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::Server { code, .. } => {
                return ErrorCode::ALL.into_iter().find(|c| c.as_str() == code);
            }
            _ => return None,
        })
    }

    /// Whether trying the same call again may succeed: the server could not
    /// be reached, did not answer in time, or was unavailable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Transport(_) | Error::Timeout { .. } | Error::Unavailable { .. }
        )
    }

    /// The job an outcome error is about ([`Error::JobFailed`],
    /// [`Error::JobCancelled`], [`Error::JobTimedOut`]).
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Error::JobFailed { id, .. }
            | Error::JobCancelled { id }
            | Error::JobTimedOut { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The error for a response with a non-2xx `status` and error `code`.
    pub(crate) fn from_code(status: u16, code: Option<ErrorCode>, message: String) -> Error {
        match code {
            Some(ErrorCode::InvalidRequest) => Error::InvalidRequest { message },
            Some(ErrorCode::Unauthorized) => Error::Unauthorized { message },
            Some(ErrorCode::NotFound) => Error::NotFound { message },
            Some(ErrorCode::LeaseLost) => Error::LeaseLost { message },
            Some(ErrorCode::Conflict) => Error::Conflict { message },
            Some(ErrorCode::PayloadTooLarge) => Error::PayloadTooLarge { message },
            Some(ErrorCode::Unavailable) => Error::Unavailable { message },
            Some(code @ (ErrorCode::MethodNotAllowed | ErrorCode::Internal)) => Error::Server {
                status,
                code: code.as_str().to_owned(),
                message,
            },
            None => Error::Server {
                status,
                code: "unknown".to_owned(),
                message,
            },
        }
    }

    /// The error for a refusal or failure of the embedded transport's
    /// service layer: the same variant the server's answer would give.
    #[cfg(feature = "embedded")]
    pub(crate) fn from_service(error: queue_core::service::ServiceError) -> Error {
        Error::from_code(error.code.status(), Some(error.code), error.message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::InvalidRequest {
            message: message.into(),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Decode {
            what: what.into(),
            source,
        }
    }
}

/// An error of the embedded queue itself (e.g. `queue_core::Queue::open`
/// on a directory another process holds), so that `?` works in code that
/// returns this crate's [`Result`](crate::Result). It becomes the variant
/// the server would answer with for the same error (`LeaseLost`,
/// `NotFound`, `InvalidRequest`, ...); a storage or internal failure
/// becomes [`Error::Server`] with code `internal` and the whole message
/// (in-process, nothing is hidden: the server hides it from remote callers).
#[cfg(feature = "embedded")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
impl From<queue_core::Error> for Error {
    fn from(error: queue_core::Error) -> Self {
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        let mut mapped = queue_core::service::ServiceError::from(error);
        if mapped.code.status() >= 500 {
            mapped.message = detail;
        }
        Error::from_service(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `?` turns the embedded queue's errors into this crate's, as the
    /// server would answer them (storage failures keep their detail).
    #[cfg(feature = "embedded")]
    #[test]
    fn core_errors_convert_with_the_question_mark() {
        fn fails(error: queue_core::Error) -> crate::Result<()> {
            Err(error)?;
            Ok(())
        }
        let id = queue_core::JobId::from_u64(42);
        assert!(matches!(
            fails(queue_core::Error::NotFound { id }),
            Err(Error::NotFound { .. })
        ));
        match fails(queue_core::Error::LeaseLost {
            id,
            reason: queue_core::LeaseLostReason::Expired,
        }) {
            Err(Error::LeaseLost { message }) => assert!(message.contains("expired"), "{message}"),
            other => panic!("{other:?}"),
        }
        match fails(queue_core::Error::Internal("the disk is on fire".into())) {
            Err(Error::Server { code, message, .. }) => {
                assert_eq!(code, "internal");
                assert!(message.contains("the disk is on fire"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_contract_code_maps_back_to_itself() {
        for code in ErrorCode::ALL {
            let error = Error::from_code(code.status(), Some(code), "m".into());
            assert_eq!(error.code(), Some(code), "{code}");
        }
        let unknown = Error::from_code(502, None, "bad gateway".into());
        assert_eq!(unknown.code(), None);
        assert!(!unknown.is_transient());
    }

    #[test]
    fn only_reachability_failures_are_transient() {
        assert!(
            Error::Unavailable {
                message: "x".into()
            }
            .is_transient()
        );
        assert!(
            Error::Timeout {
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(
            !Error::Conflict {
                message: "x".into()
            }
            .is_transient()
        );
        assert!(
            !Error::LeaseLost {
                message: "x".into()
            }
            .is_transient()
        );
    }
}
