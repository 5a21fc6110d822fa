//! JSON bodies of the HTTP contract. Field names, optionality and defaults are
//! those of `shared/API.md`; unknown fields are ignored on input.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::JobState;

/// The job object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Opaque id chosen by the server, never reused.
    pub id: String,
    /// The queue the job belongs to.
    pub queue: String,
    /// Current state.
    pub state: JobState,
    /// The caller's JSON, as given.
    pub payload: Box<RawValue>,
    /// Higher leases first.
    pub priority: i32,
    /// Leases handed out so far (a release gives its attempt back).
    pub attempts: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Base of the exponential retry back-off, in ms.
    pub backoff_ms: u64,
    /// Unix ms of the enqueue.
    pub created_at: u64,
    /// Unix ms of the last state change or heartbeat.
    pub updated_at: u64,
    /// Unix ms from which the job may run.
    pub run_at: u64,
    /// Unix ms at which the current lease ends, when `leased`.
    pub lease_expires_at: Option<u64>,
    /// The `worker` label given with the current lease, when `leased`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The idempotency key the job was enqueued with.
    pub idempotency_key: Option<String>,
    /// The worker's result, when `completed` with one.
    pub result: Option<Box<RawValue>>,
    /// The latest failure text.
    pub last_error: Option<String>,
    /// The lease id; present only in lease responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
}

/// Body of `POST /v1/queues/{queue}/jobs` (and one item of a batch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueueRequest {
    /// Any JSON; required.
    pub payload: Box<RawValue>,
    /// Higher leases first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Run no earlier than now + this many ms. Exclusive with `run_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this unix ms. Exclusive with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<u64>,
    /// 1..=1000, default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Base of the exponential retry back-off in ms, default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// 1..=256 bytes; a replay in the same queue returns the existing job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Body of `POST /v1/queues/{queue}/jobs/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    /// 1..=1000 jobs, enqueued all or nothing.
    pub jobs: Vec<EnqueueRequest>,
}

/// Response of a batch enqueue: the jobs in input order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One job per input item, replayed idempotent items included.
    pub jobs: Vec<Job>,
}

/// Body of `POST /v1/queues/{queue}/lease`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// 1..=1000, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u32>,
    /// 1..=43200000, default 30000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// 0..=60000, default 0: how long to wait for a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// A label shown in the job and the logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// Response of a lease: each job carries its `lease_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The leased jobs, possibly none.
    pub jobs: Vec<Job>,
}

/// Body of `POST /v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The lease being extended.
    pub lease_id: String,
    /// New lease length from now; default the lease's own length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// Body of `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The lease being completed.
    pub lease_id: String,
    /// Any JSON, kept on the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
}

/// Body of `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRequest {
    /// The lease being failed.
    pub lease_id: String,
    /// What went wrong.
    #[serde(default)]
    pub error: String,
    /// Retry after this many ms instead of the back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// `false` sends the job straight to the dead letters; default `true`.
    #[serde(default = "default_true")]
    pub retryable: bool,
}

fn default_true() -> bool {
    true
}

/// Body of `POST /v1/jobs/{id}/release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The lease being given back.
    pub lease_id: String,
}

/// Body of `POST /v1/queues/{queue}/dead/requeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequeueRequest {
    /// The dead jobs to requeue; absent means all of the queue's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// Response of a requeue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RequeuedResponse {
    /// How many dead jobs became ready.
    pub requeued: u64,
}

/// Response of a purge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DeletedResponse {
    /// How many dead jobs were removed.
    pub deleted: u64,
}

/// A bare count, for responses that only report one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CountResponse {
    /// The count.
    pub count: u64,
}

/// One page of a queue's dead letters, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadPage {
    /// The dead jobs of this page.
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// Counts of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Whether leasing is paused.
    pub paused: bool,
    /// Jobs waiting for their `run_at`.
    pub scheduled: u64,
    /// Jobs that can be leased now.
    pub ready: u64,
    /// Jobs held by workers.
    pub leased: u64,
    /// Completed jobs still within retention.
    pub completed: u64,
    /// Dead jobs still within retention.
    pub dead: u64,
    /// Cancelled jobs still within retention.
    pub cancelled: u64,
    /// Age of the oldest ready job (now − its `run_at`), or `null` when none.
    pub oldest_ready_age_ms: Option<u64>,
}

/// Response of `GET /v1/queues`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueList {
    /// One entry per known queue, by name.
    pub queues: Vec<QueueStats>,
}

/// One state change, as sent on the event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The job.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its new state.
    pub state: JobState,
    /// Its attempts after the change.
    pub attempts: u32,
    /// Unix ms of the change.
    pub at: u64,
}

/// The error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed JSON, wrong types, bad names, out-of-range numbers.
    InvalidRequest,
    /// 401: token missing or wrong.
    Unauthorized,
    /// 404: unknown job id or route.
    NotFound,
    /// 405: known route, wrong method.
    MethodNotAllowed,
    /// 409: the lease id is not the job's current lease.
    LeaseLost,
    /// 409: the operation does not fit the job's state.
    Conflict,
    /// 413: body over the configured limit.
    PayloadTooLarge,
    /// 503: shutting down or storage failed; no effect.
    Unavailable,
    /// 500: a bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the contract's table.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::LeaseLost,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::LeaseLost | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error envelope: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
}

impl ErrorBody {
    /// An envelope with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_request_defaults_and_unknown_fields() {
        let req: EnqueueRequest =
            serde_json::from_str(r#"{"payload": {"to": "a@b"}, "surprise": 1}"#).unwrap();
        assert_eq!(req.payload.get(), r#"{"to": "a@b"}"#);
        assert!(req.priority.is_none() && req.idempotency_key.is_none());
        assert!(serde_json::from_str::<EnqueueRequest>(r#"{"priority": 1}"#).is_err());
        assert!(
            serde_json::from_str::<EnqueueRequest>(r#"{"payload": 1, "max_attempts": -1}"#)
                .is_err()
        );
    }

    #[test]
    fn fail_request_is_retryable_by_default() {
        let req: FailRequest = serde_json::from_str(r#"{"lease_id": "x"}"#).unwrap();
        assert!(req.retryable);
        assert_eq!(req.error, "");
    }

    #[test]
    fn every_code_is_listed_once_with_its_wire_name() {
        for code in ErrorCode::ALL {
            // Exhaustive: a new variant fails to compile until it is listed.
            let listed = match code {
                ErrorCode::InvalidRequest
                | ErrorCode::Unauthorized
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::LeaseLost
                | ErrorCode::Conflict
                | ErrorCode::PayloadTooLarge
                | ErrorCode::Unavailable
                | ErrorCode::Internal => ErrorCode::ALL.iter().filter(|c| **c == code).count(),
            };
            assert_eq!(listed, 1);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn error_body_shape() {
        let body = ErrorBody::new(ErrorCode::LeaseLost, "gone");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"lease_lost","message":"gone"}}"#
        );
        assert_eq!(ErrorCode::LeaseLost.status(), 409);
    }
}
