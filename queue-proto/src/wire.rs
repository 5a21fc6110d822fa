//! JSON bodies of the HTTP contract. Field names, optionality and defaults are
//! those of the contract (`docs/openapi.yaml`).
//!
//! Request bodies are strict on input: a body must be a JSON object (an
//! array is not read positionally) and a field the contract does not name
//! is refused, naming it (see the `strict` module). Response types stay
//! lenient: a client ignores fields a newer server adds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::JobState;
use crate::strict::strict_body;

strict_body!(
    EnqueueRequest,
    BatchRequest,
    LeaseRequest,
    HeartbeatRequest,
    CompleteRequest,
    FailRequest,
    ReleaseRequest,
    RequeueRequest,
    SettleRequest,
    SettleComplete,
    SettleFail,
);

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
    /// When the job reached `completed`, `dead` or `cancelled`.
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// The lease id; present only in lease responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// Ties the job to the request that caused it (the enqueue body's
    /// `correlation_id`, else that request's `X-Request-Id`).
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// String metadata, W3C `traceparent` / `tracestate` included.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The latest progress a worker reported.
    #[serde(default)]
    pub progress: Option<Box<RawValue>>,
    /// Where the outcome is POSTed when the job finishes.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The delivery of that callback, once the job finished.
    #[serde(default)]
    pub callback: Option<CallbackInfo>,
    /// The job's group (see the queue's `group_max_leased`).
    #[serde(default)]
    pub group: Option<String>,
    /// The longest one attempt may run, in ms.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Unix ms after which a job not yet leased is dead.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Unix ms at which the current or latest attempt was leased.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// The schedule that enqueued the job.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// The state of a callback delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackState {
    /// Not delivered yet; attempts go on.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: `410 Gone`, or the last attempt failed.
    Failed,
}

impl CallbackState {
    /// Every state.
    pub const ALL: [CallbackState; 3] = [
        CallbackState::Pending,
        CallbackState::Delivered,
        CallbackState::Failed,
    ];

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Delivered => "delivered",
            CallbackState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for CallbackState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallbackState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not pending, delivered or failed"))
    }
}

/// A job's callback delivery (the job object's `callback` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackInfo {
    /// Where the delivery stands.
    pub state: CallbackState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// What went wrong with the last attempt.
    pub last_error: Option<String>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<u64>,
    /// When it was delivered.
    pub delivered_at: Option<u64>,
}

/// The body of a callback: what a receiver of `callback_url` gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackEvent {
    /// `job.completed`, `job.dead` or `job.cancelled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the job finished, RFC 3339 in UTC with milliseconds
    /// (`2026-12-01T10:00:00.000Z`).
    pub timestamp: String,
    /// The job, result included.
    pub data: Job,
}

impl CallbackEvent {
    /// The callback `type` of a terminal state (`None` for others).
    pub fn kind_of(state: crate::JobState) -> Option<&'static str> {
        match state {
            crate::JobState::Completed => Some("job.completed"),
            crate::JobState::Dead => Some("job.dead"),
            crate::JobState::Cancelled => Some("job.cancelled"),
            _ => None,
        }
    }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds
/// (`2026-12-01T10:00:00.000Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        unix_ms % 1000
    )
}

/// Body of `POST /v1/queues/{queue}/jobs` (and one item of a batch).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
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
    /// 1..=128 visible ASCII characters; default: the request's `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// At most 32 entries, keys `^[A-Za-z0-9_.-]{1,64}$`, values at most
    /// 1,024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// An absolute http(s) URL (at most 2,048 bytes) told of the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Jobs of one group share the queue's `group_max_leased` (1..=128
    /// bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The longest one attempt may run, heartbeats or not
    /// (1..=43,200,000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The job is dead if not leased within this many ms. Exclusive with
    /// `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The job is dead if not leased by this unix ms. Exclusive with
    /// `ttl_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Body of `POST /v1/queues/{queue}/jobs/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
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
#[serde(remote = "Self")]
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
#[serde(remote = "Self")]
pub struct HeartbeatRequest {
    /// The lease being extended.
    pub lease_id: String,
    /// New lease length from now; default the lease's own length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Progress to store on the job (any JSON, at most 64 KiB); emits a
    /// `progress` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Box<RawValue>>,
}

/// Body of `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct CompleteRequest {
    /// The lease being completed.
    pub lease_id: String,
    /// Any JSON, kept on the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
}

/// Body of `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
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
#[serde(remote = "Self")]
pub struct ReleaseRequest {
    /// The lease being given back.
    pub lease_id: String,
}

/// Body of `POST /v1/queues/{queue}/settle`: settle many leased jobs of
/// the queue, and lease the next ones, in one request. At most
/// [`MAX_BATCH`](crate::limits::MAX_BATCH) items in `complete` and `fail`
/// together.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SettleRequest {
    /// Jobs to complete, each as `POST /v1/jobs/{id}/complete` would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complete: Vec<SettleComplete>,
    /// Jobs to fail, each as `POST /v1/jobs/{id}/fail` would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail: Vec<SettleFail>,
    /// A lease taken once the settlements are durable, as `POST
    /// /v1/queues/{queue}/lease` would (`wait_ms` included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseRequest>,
}

/// A completion in a [`SettleRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SettleComplete {
    /// The job.
    pub id: String,
    /// The lease being completed.
    pub lease_id: String,
    /// Any JSON, kept on the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
}

/// A failure in a [`SettleRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SettleFail {
    /// The job.
    pub id: String,
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

/// Response of a settle: one result per item, in input order (the
/// completions, then the failures), and what the lease got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettleResponse {
    /// One per item of `complete`, then of `fail`.
    pub results: Vec<SettleResult>,
    /// The jobs the request's `lease` got, each with its `lease_id`
    /// (empty without a `lease`).
    pub jobs: Vec<Job>,
}

/// How one item of a settle went: `status` is the HTTP status its single
/// endpoint would have answered (200, 404 or 409).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettleResult {
    /// The item's job id, as given.
    pub id: String,
    /// 200 settled; 404 `not_found`; 409 `lease_lost` or `conflict`.
    pub status: u16,
    /// The state the settlement left the job in (status 200): `completed`,
    /// or after a failure `scheduled` (a retry) or `dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// The job after the settlement (status 200), unless the request asked
    /// for `Prefer: return=minimal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// Why the item was not settled (status 404 or 409).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Body of `POST /v1/queues/{queue}/dead/requeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(remote = "Self")]
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

/// One page of a job listing, oldest first: a queue's jobs in a state
/// (`GET /v1/queues/{queue}/jobs`), the jobs of a correlation id
/// (`GET /v1/jobs`), a queue's dead letters, the jobs of a callback state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs of this page.
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// One page of a queue's dead letters: a [`JobPage`].
pub type DeadPage = JobPage;

/// Counts of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Whether leasing is paused.
    pub paused: bool,
    /// The limits leases obey (absent from a server before 1.1: none).
    #[serde(default)]
    pub limits: QueueLimits,
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

/// A queue's rate limit: leases are granted from a token bucket of
/// capacity `jobs`, refilled at `jobs` per `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// The bucket's capacity and how many tokens `per_ms` adds
    /// (1..=[`MAX_RATE_JOBS`](crate::limits::MAX_RATE_JOBS)).
    pub jobs: u32,
    /// The refill period in ms
    /// (1..=[`MAX_RATE_PER_MS`](crate::limits::MAX_RATE_PER_MS)).
    pub per_ms: u64,
}

/// The limits of a queue, as reported in its stats; `null` when not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueLimits {
    /// At most this many jobs of the queue are `leased` at once.
    pub max_leased: Option<u32>,
    /// The token bucket leases are granted from.
    pub rate_limit: Option<RateLimit>,
    /// At most this many jobs with the same `group` are `leased` at once.
    pub group_max_leased: Option<u32>,
}

/// Body of `PATCH /v1/queues/{queue}`: each field absent keeps the stored
/// value, `null` removes a limit. Decoding names the field of any wrong
/// type or unknown name; the bounds are checked by the core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PatchQueueRequest {
    /// Pause (`true`) or resume (`false`) leasing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Set (`Some(Some(n))`) or remove (`Some(None)`) `max_leased`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_leased: Option<Option<u32>>,
    /// Set or remove the rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// Set or remove `group_max_leased`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_max_leased: Option<Option<u32>>,
}

impl PatchQueueRequest {
    /// Decodes a body from its JSON value, naming the field of any mistake.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn from_value(value: serde_json::Value) -> Result<PatchQueueRequest, String> {
        use serde_json::Value;
        let Value::Object(map) = value else {
            return Err("the body must be a JSON object".into());
        };
        fn count(field: &str, value: &Value) -> Result<Option<u64>, String> {
            match value {
                Value::Null => Ok(None),
                Value::Number(n) => n
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("{field} must be a positive integer or null, got {n}")),
                other => Err(format!(
                    "{field} must be a positive integer or null, got {other}"
                )),
            }
        }
        fn small(field: &str, value: u64) -> Result<u32, String> {
            u32::try_from(value).map_err(|_| format!("{field}: {value} is too large"))
        }
        let mut out = PatchQueueRequest::default();
        for (name, value) in map {
            match name.as_str() {
                "paused" => match value {
                    Value::Bool(b) => out.paused = Some(b),
                    other => return Err(format!("paused must be true or false, got {other}")),
                },
                "max_leased" | "group_max_leased" => {
                    let n = count(&name, &value)?.map(|n| small(&name, n)).transpose()?;
                    if name == "max_leased" {
                        out.max_leased = Some(n);
                    } else {
                        out.group_max_leased = Some(n);
                    }
                }
                "rate_limit" => match value {
                    Value::Null => out.rate_limit = Some(None),
                    Value::Object(fields) => {
                        let mut jobs = None;
                        let mut per_ms = None;
                        for (field, value) in fields {
                            let full = format!("rate_limit.{field}");
                            match field.as_str() {
                                "jobs" => {
                                    let n = count(&full, &value)?
                                        .ok_or_else(|| format!("{full} must not be null"))?;
                                    jobs = Some(small(&full, n)?);
                                }
                                "per_ms" => {
                                    per_ms = Some(
                                        count(&full, &value)?
                                            .ok_or_else(|| format!("{full} must not be null"))?,
                                    );
                                }
                                _ => return Err(format!("unknown field {full}")),
                            }
                        }
                        let jobs = jobs.ok_or("rate_limit.jobs is required")?;
                        let per_ms = per_ms.ok_or("rate_limit.per_ms is required")?;
                        out.rate_limit = Some(Some(RateLimit { jobs, per_ms }));
                    }
                    other => {
                        return Err(format!(
                            "rate_limit must be {{\"jobs\": n, \"per_ms\": n}} or null, got {other}"
                        ));
                    }
                },
                _ => return Err(format!("unknown field {name}")),
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for PatchQueueRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        PatchQueueRequest::from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Response of `GET /v1/queues`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueList {
    /// One entry per known queue, by name.
    pub queues: Vec<QueueStats>,
}

/// One state change (or progress report), as sent on the event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// The event's durable id, increasing in commit order (also the SSE
    /// `id:` line).
    #[serde(default)]
    pub event_id: u64,
    /// The job.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its new state (its state when the event reports progress).
    pub state: JobState,
    /// Its attempts after the change.
    pub attempts: u32,
    /// Unix ms of the change.
    pub at: u64,
    /// The job's correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The result, on a `completed` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// The latest failure text, on a terminal event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The progress reported, on a `progress` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Box<RawValue>>,
}

impl Event {
    /// The event type: the new state, or `progress`.
    pub fn kind(&self) -> EventType {
        if self.progress.is_some() {
            EventType::Progress
        } else {
            EventType::State(self.state)
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        let raw = |v: &Option<Box<RawValue>>| v.as_ref().map(|r| r.get().to_owned());
        self.event_id == other.event_id
            && self.id == other.id
            && self.queue == other.queue
            && self.state == other.state
            && self.attempts == other.attempts
            && self.at == other.at
            && self.correlation_id == other.correlation_id
            && raw(&self.result) == raw(&other.result)
            && self.last_error == other.last_error
            && raw(&self.progress) == raw(&other.progress)
    }
}

/// What an event is about: a new state, or progress reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The job entered this state.
    State(JobState),
    /// A worker reported progress.
    Progress,
}

impl EventType {
    /// The SSE `event:` name (and the WebSocket message `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::State(state) => state.as_str(),
            EventType::Progress => "progress",
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "progress" {
            return Ok(EventType::Progress);
        }
        s.parse::<JobState>()
            .map(EventType::State)
            .map_err(|_| format!("{s:?} is not a state or \"progress\""))
    }
}

/// The data of a `gap` event: the events after `after` up to `oldest`
/// (exclusive) are no longer retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The last event id the stream had delivered (or was asked to resume
    /// after).
    pub after: u64,
    /// The oldest retained event, delivered next.
    pub oldest: u64,
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
        let req: EnqueueRequest = serde_json::from_str(r#"{"payload": {"to": "a@b"}}"#).unwrap();
        assert_eq!(req.payload.get(), r#"{"to": "a@b"}"#);
        let err = serde_json::from_str::<EnqueueRequest>(r#"{"payload": 1, "prority": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `prority`"), "{err}");
        assert!(req.priority.is_none() && req.idempotency_key.is_none());
        assert!(serde_json::from_str::<EnqueueRequest>(r#"{"priority": 1}"#).is_err());
        assert!(
            serde_json::from_str::<EnqueueRequest>(r#"{"payload": 1, "max_attempts": -1}"#)
                .is_err()
        );
    }

    #[test]
    fn request_bodies_are_objects_with_known_fields_only() {
        fn refused<T: serde::de::DeserializeOwned>(body: &str, says: &str) {
            let err = serde_json::from_str::<T>(body).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(says)),
                "{body}: {err:?}"
            );
        }
        // Arrays were read positionally: `[]` requeued every dead job.
        refused::<RequeueRequest>("[]", "expected a JSON object");
        refused::<CompleteRequest>(r#"["l", {"a": 1}]"#, "expected a JSON object");
        refused::<EnqueueRequest>(r#"[{"a": 1}, 7]"#, "expected a JSON object");
        refused::<BatchRequest>(r#"[[{"a": 1}]]"#, "expected a JSON object");
        refused::<BatchRequest>(r#"{"jobs": [[{"a": 1}, 7]]}"#, "expected a JSON object");
        refused::<crate::ScheduleRequest>(
            r#"{"queue": "q", "every_ms": 1000, "job": [{"a": 1}]}"#,
            "expected a JSON object",
        );
        // Unknown fields, at the top and nested.
        refused::<LeaseRequest>(r#"{"wiat_ms": 5}"#, "unknown field `wiat_ms`");
        refused::<HeartbeatRequest>(r#"{"lease_id": "l", "x": 1}"#, "unknown field `x`");
        refused::<FailRequest>(
            r#"{"lease_id": "l", "retry": false}"#,
            "unknown field `retry`",
        );
        refused::<ReleaseRequest>(r#"{"lease_id": "l", "a": 1}"#, "unknown field `a`");
        refused::<RequeueRequest>(r#"{"id": ["x"]}"#, "unknown field `id`");
        refused::<SettleRequest>(r#"{"complete": [], "lese": {}}"#, "unknown field `lese`");
        refused::<SettleRequest>(
            r#"{"complete": [{"id": "j", "lease_id": "l", "reslt": 1}]}"#,
            "unknown field `reslt`",
        );
        refused::<SettleRequest>(
            r#"{"fail": [{"id": "j", "lease_id": "l", "retry": false}]}"#,
            "unknown field `retry`",
        );
        refused::<SettleRequest>(r#"{"lease": {"wiat_ms": 1}}"#, "unknown field `wiat_ms`");
        refused::<SettleRequest>(r#"{"complete": [["j", "l"]]}"#, "expected a JSON object");
        refused::<BatchRequest>(r#"{"jobs": [], "atomic": true}"#, "unknown field `atomic`");
        refused::<BatchRequest>(
            r#"{"jobs": [{"payload": 1, "prority": 2}]}"#,
            "unknown field `prority`",
        );
        refused::<crate::ScheduleRequest>(
            r#"{"queue": "q", "every_ms": 1000, "job": {"payload": 1, "prority": 2}}"#,
            "unknown field `prority`",
        );
        // What the contract names still reads, in any order.
        let lease: LeaseRequest =
            serde_json::from_str(r#"{"worker": "w", "wait_ms": 5, "max_jobs": 2, "lease_ms": 9}"#)
                .unwrap();
        assert_eq!((lease.max_jobs, lease.wait_ms), (Some(2), Some(5)));
        let requeue: RequeueRequest = serde_json::from_str("{}").unwrap();
        assert!(requeue.ids.is_none());
        // Serialization is untouched, and reads back.
        let text = serde_json::to_string(&lease).unwrap();
        assert_eq!(
            text,
            r#"{"max_jobs":2,"lease_ms":9,"wait_ms":5,"worker":"w"}"#
        );
    }

    #[test]
    fn a_schedule_object_reads_its_job_leniently() {
        // A response: a newer server may add enqueue options.
        let schedule: crate::Schedule = serde_json::from_value(serde_json::json!({
            "name": "n", "queue": "q", "cron": null, "every_ms": 1000, "timezone": "UTC",
            "job": {"payload": 1, "from_the_future": true}, "catch_up": "latest",
            "paused": false, "next_run_at": null, "last_run_at": null, "last_job_id": null,
            "created_at": 1, "updated_at": 1, "another_new_field": 2
        }))
        .unwrap();
        assert_eq!(schedule.job.payload.get(), "1");
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
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_764_583_200_000), "2025-12-01T10:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_614_265_330_000), "2021-02-25T15:02:10.000Z");
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
