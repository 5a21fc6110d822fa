use queue_proto::JobState;

use crate::JobId;

/// The one error type of `queue-core`.
///
/// The first group of variants are outcomes a caller is expected to match on
/// (the request was refused and nothing changed); the last group are failures
/// of the machine underneath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument is out of range or malformed; nothing was changed.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The argument (API field name) at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A payload or result is larger than [`Config::max_payload`](crate::Config::max_payload).
    #[error("{what} is {size} bytes, the limit is {limit}")]
    TooLarge {
        /// `"payload"` or `"result"`.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// No job with this id is stored (never existed, or removed by retention).
    #[error("job {id} not found")]
    NotFound {
        /// The unknown id.
        id: JobId,
    },
    /// The lease id is not the job's current lease: it expired, the job was
    /// leased again, cancelled or already finished. Nothing was changed.
    #[error("lease on job {id} is not held (expired, reassigned, cancelled or finished)")]
    LeaseLost {
        /// The job.
        id: JobId,
    },
    /// The operation does not fit the job's state (e.g. cancel a completed job).
    #[error("cannot {operation} job {id}: it is {state}")]
    Conflict {
        /// The job.
        id: JobId,
        /// Its state at the time of the call.
        state: JobState,
        /// The refused operation.
        operation: &'static str,
    },
    /// The queue handle is shutting down.
    #[error("the queue is shutting down")]
    Closed,
    /// The storage engine failed; the operation may not have taken effect and
    /// was not acknowledged as durable.
    #[error("storage error")]
    Storage(#[from] sled::Error),
    /// A stored record could not be decoded: the data directory is damaged or
    /// was written by an incompatible version.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}
