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
    /// leased again, cancelled or already finished, or the id is wrong.
    /// Nothing was changed. The message says which ([`LeaseLostReason`]).
    #[error("lease on job {id} is not held: {reason}")]
    LeaseLost {
        /// The job.
        id: JobId,
        /// Why the lease is not held, as far as the job's record tells.
        reason: LeaseLostReason,
    },
    /// No schedule with this name is stored.
    #[error("schedule {name:?} not found")]
    ScheduleNotFound {
        /// The unknown name.
        name: String,
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
    /// An idempotency key was reused with a different request (payload or
    /// any option): nothing was enqueued. The same request again replays.
    #[error(
        "idempotency key {key:?} of queue {queue:?} was first used with a different request (job {id})"
    )]
    IdempotencyConflict {
        /// The queue.
        queue: String,
        /// The key.
        key: String,
        /// The job the key belongs to.
        id: JobId,
    },
    /// The queue handle is shutting down.
    #[error("the queue is shutting down")]
    Closed,
    /// The storage failed; the operation may not have taken effect and was
    /// not acknowledged as durable.
    #[error("storage error")]
    Storage(#[source] StorageError),
    /// A stored record could not be decoded: the data is damaged or was
    /// written by a newer, incompatible release.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// An internal invariant was broken: a bug, reported rather than
    /// hidden. Nothing was acknowledged that did not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a lease id was refused ([`Error::LeaseLost`]), judged from the job's
/// record when it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseLostReason {
    /// The `lease_id` is not a lease id at all: it is malformed (a lease id
    /// is the opaque string a lease answer gave, copied as is).
    Malformed,
    /// The job is leased, but under another lease: this id is not its
    /// current lease (a wrong id, or a lease that expired before the job was
    /// leased again).
    NotCurrent,
    /// The id is the job's lease, but the lease's deadline has passed (the
    /// job goes back to the queue or is retried).
    Expired,
    /// The job is not leased at all (it is `ready` or `scheduled`): the
    /// lease expired, was released, or the id is wrong.
    NotLeased(JobState),
    /// The job is finished (`completed`, `dead`, `cancelled`): no lease on
    /// it is held any more.
    Finished(JobState),
    /// No more detail is known (the record was not examined).
    Unknown,
}

impl std::fmt::Display for LeaseLostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseLostReason::Malformed => f.write_str(
                "the lease_id is malformed (give the lease_id of the lease answer, as is)",
            ),
            LeaseLostReason::NotCurrent => f.write_str(
                "the lease_id is not the job's current lease (a wrong id, or a lease that \
                 expired before the job was leased again)",
            ),
            LeaseLostReason::Expired => f.write_str("the lease expired"),
            LeaseLostReason::NotLeased(state) => write!(
                f,
                "the job is {state}, not leased (its lease expired or was released, or the \
                 lease_id is wrong)"
            ),
            LeaseLostReason::Finished(state) => write!(f, "the job is {state}"),
            LeaseLostReason::Unknown => f.write_str("expired, reassigned, cancelled or finished"),
        }
    }
}

/// A failure of the storage underneath, whatever the backend.
#[derive(Debug)]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// A storage failure described by `message`.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StorageError(message.into().into())
    }

    /// A storage failure caused by `source`.
    pub(crate) fn from_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError(Box::new(source))
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
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
