//! The job record and the inputs and outputs of the public operations.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use queue_proto::JobState;
use queue_proto::limits::{DEFAULT_BACKOFF_MS, DEFAULT_LEASE_MS, DEFAULT_MAX_ATTEMPTS};
use serde::{Deserialize, Serialize};

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Shown and parsed as 16 lowercase hexadecimal digits.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(u64);

        impl $name {
            /// The id from its numeric form.
            pub const fn from_u64(raw: u64) -> Self {
                $name(raw)
            }

            /// The numeric form of the id.
            pub const fn as_u64(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let digits = hex16(self.0);
                // Sixteen ASCII hex digits.
                f.pad(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:016x})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(crate::Error::invalid(
                        $what,
                        format!("{s:?} is not an id (16 hexadecimal digits)"),
                    ));
                }
                u64::from_str_radix(s, 16)
                    .map($name)
                    .map_err(|e| crate::Error::invalid($what, e.to_string()))
            }
        }
    };
}

/// `n` as 16 lowercase hexadecimal digits, written by hand: ids are shown
/// in every answer, and `{:016x}` writes its zero padding one character at
/// a time.
fn hex16(n: u64) -> [u8; 16] {
    let mut out = [b'0'; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        let nibble = ((n >> ((15 - i) * 4)) & 0xf) as u8;
        *digit = if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        };
    }
    out
}

hex_id!(
    /// A job's id: unique for the life of the data directory, never reused,
    /// increasing in enqueue order.
    JobId,
    "id"
);
hex_id!(
    /// The id of one lease of one job. Every lease gets a fresh one, never
    /// reused, so a stale holder can always be told apart (fencing).
    LeaseId,
    "lease_id"
);

/// A job as stored.
///
/// Invariants (kept by the transition rules, checked by [`Queue::verify`](crate::Queue::verify)):
/// `lease` is `Some` exactly when `state` is [`JobState::Leased`];
/// `finished_at` is `Some` exactly when the state is terminal;
/// `attempts <= max_attempts`.
///
/// Equality compares the job, not where its history stands in the event
/// log: `last_event_id` is left out.
#[derive(Debug, Clone, Eq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// The caller's bytes (JSON when enqueued over HTTP).
    pub payload: Vec<u8>,
    /// Higher leases first.
    pub priority: i32,
    /// Leases handed out so far; a release gives its attempt back.
    pub attempts: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Base of the exponential retry back-off, in ms.
    pub backoff_ms: u64,
    /// Unix ms of the enqueue.
    pub created_at: u64,
    /// Unix ms of the last change.
    pub updated_at: u64,
    /// Unix ms from which the job may run.
    pub run_at: u64,
    /// The current lease, when leased.
    pub lease: Option<Lease>,
    /// The idempotency key it was enqueued with.
    pub idempotency_key: Option<String>,
    /// The worker's result, when completed with one.
    pub result: Option<Vec<u8>>,
    /// The latest failure text.
    pub last_error: Option<String>,
    /// Unix ms at which the job reached its terminal state.
    pub finished_at: Option<u64>,
    /// Ties the job to the request that caused it.
    pub correlation_id: Option<String>,
    /// String metadata (W3C `traceparent` / `tracestate` among them).
    pub headers: BTreeMap<String, String>,
    /// The latest progress a worker reported (JSON over HTTP).
    pub progress: Option<Vec<u8>>,
    /// Where the outcome is POSTed when the job finishes.
    pub callback_url: Option<String>,
    /// The delivery of that callback, once the job finished.
    pub callback: Option<Callback>,
    /// Jobs of one group share the queue's `group_max_leased` limit (with
    /// 1, they run one at a time, in lease order).
    pub group: Option<String>,
    /// The longest one attempt may run, in ms: a lease never lasts past
    /// `started_at + timeout_ms`, heartbeats or not.
    pub timeout_ms: Option<u64>,
    /// Unix ms after which a job not yet leased is not worth running: a
    /// job still `scheduled` or `ready` then becomes `dead`.
    pub expires_at: Option<u64>,
    /// Unix ms at which the current or latest attempt was leased.
    pub started_at: Option<u64>,
    /// The schedule that enqueued the job.
    pub schedule: Option<String>,
    /// A digest of the enqueue request, kept with the idempotency key: the
    /// same key with a different request is a conflict.
    pub request_digest: Option<[u8; 16]>,
    /// The id of the latest event about this job, when known (set by the
    /// store when it logs the event; a record written by the first release
    /// has none until its next change).
    pub last_event_id: Option<u64>,
}

/// Where a callback delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackStatus {
    /// Attempts go on.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up: `410 Gone`, or out of attempts.
    Failed,
}

/// A job's callback delivery: one delivery (one `webhook-id`) with its
/// attempts. A new delivery (a retry asked for by an operator) starts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Where it stands.
    pub status: CallbackStatus,
    /// Which delivery of the job this is: 1 for the first, then one more for
    /// each retry asked for. The `webhook-id` is the job id and this.
    pub delivery: u32,
    /// Attempts made (or under way) so far.
    pub attempts: u32,
    /// The HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// What went wrong with the last attempt.
    pub last_error: Option<String>,
    /// While pending: when the next attempt is due (during an attempt, when
    /// it is given up as lost).
    pub next_attempt_at: Option<u64>,
    /// When it was delivered.
    pub delivered_at: Option<u64>,
    /// An attempt is under way: claimed by a dispatcher, not yet settled.
    pub in_flight: bool,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        // Destructured, so that a new field cannot be forgotten here.
        let Job {
            id,
            queue,
            state,
            payload,
            priority,
            attempts,
            max_attempts,
            backoff_ms,
            created_at,
            updated_at,
            run_at,
            lease,
            idempotency_key,
            result,
            last_error,
            finished_at,
            correlation_id,
            headers,
            progress,
            callback_url,
            callback,
            group,
            timeout_ms,
            expires_at,
            started_at,
            schedule,
            request_digest,
            last_event_id: _,
        } = self;
        *id == other.id
            && *queue == other.queue
            && *state == other.state
            && *payload == other.payload
            && *priority == other.priority
            && *attempts == other.attempts
            && *max_attempts == other.max_attempts
            && *backoff_ms == other.backoff_ms
            && *created_at == other.created_at
            && *updated_at == other.updated_at
            && *run_at == other.run_at
            && *lease == other.lease
            && *idempotency_key == other.idempotency_key
            && *result == other.result
            && *last_error == other.last_error
            && *finished_at == other.finished_at
            && *correlation_id == other.correlation_id
            && *headers == other.headers
            && *progress == other.progress
            && *callback_url == other.callback_url
            && *callback == other.callback
            && *group == other.group
            && *timeout_ms == other.timeout_ms
            && *expires_at == other.expires_at
            && *started_at == other.started_at
            && *schedule == other.schedule
            && *request_digest == other.request_digest
    }
}

impl Job {
    /// When the current lease ends, if the job is leased.
    pub fn lease_expires_at(&self) -> Option<u64> {
        self.lease.as_ref().map(|lease| lease.expires_at)
    }
}

/// A lease held on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Fencing token of this lease.
    pub id: LeaseId,
    /// Unix ms at which it expires.
    pub expires_at: u64,
    /// Its length in ms (what a heartbeat extends by default).
    pub lease_ms: u64,
    /// Unix ms at which it was handed out.
    pub leased_at: u64,
    /// The label the worker gave, if any.
    pub worker: Option<String>,
}

/// What to enqueue.
///
/// ```
/// use queue_core::NewJob;
/// use std::time::Duration;
///
/// let job = NewJob::new(br#"{"to":"a@example.com"}"#.to_vec())
///     .priority(10)
///     .delay(Duration::from_secs(60))
///     .max_attempts(3)
///     .idempotency_key("welcome-42");
/// assert_eq!(job.delay_ms, Some(60_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Higher leases first; default 0.
    pub priority: i32,
    /// Run no earlier than now + this many ms. Exclusive with `run_at`.
    pub delay_ms: Option<u64>,
    /// Run no earlier than this unix ms. Exclusive with `delay_ms`.
    pub run_at: Option<u64>,
    /// 1..=1000; default 5.
    pub max_attempts: u32,
    /// Base of the exponential back-off in ms (at most one hour); default 1000.
    pub backoff_ms: u64,
    /// 1..=256 bytes; a second enqueue with the same key in the same queue,
    /// while the first job is stored, returns the first job.
    pub idempotency_key: Option<String>,
    /// 1..=128 visible ASCII characters tying the job to the request that
    /// caused it.
    pub correlation_id: Option<String>,
    /// At most 32 entries of string metadata (keys `[A-Za-z0-9_.-]{1,64}`,
    /// values at most 1,024 bytes).
    pub headers: BTreeMap<String, String>,
    /// An absolute http(s) URL told of the outcome when the job finishes
    /// (delivered by the server's callback dispatcher).
    pub callback_url: Option<String>,
    /// 1..=128 bytes: the job counts against the queue's `group_max_leased`
    /// with the other jobs of this group.
    pub group: Option<String>,
    /// 1..=43,200,000: the longest one attempt may run, in ms, heartbeats
    /// or not.
    pub timeout_ms: Option<u64>,
    /// The job is dead if not leased within this many ms of the enqueue.
    /// Exclusive with `expires_at`.
    pub ttl_ms: Option<u64>,
    /// The job is dead if not leased by this unix ms. Exclusive with
    /// `ttl_ms`.
    pub expires_at: Option<u64>,
    /// The schedule enqueuing the job (the scheduler sets it; leave it
    /// `None`).
    pub schedule: Option<String>,
    /// The digest an idempotent replay is compared with. Leave it `None`:
    /// it is then [`NewJob::digest`]. A server sets it to the digest of the
    /// body as the caller wrote it, before it adds what request headers
    /// imply (a correlation id from `X-Request-Id`, a `traceparent`).
    pub request_digest: Option<[u8; 16]>,
}

impl NewJob {
    /// A job with `payload` and every default.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            payload: payload.into(),
            priority: 0,
            delay_ms: None,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_ms: DEFAULT_BACKOFF_MS,
            idempotency_key: None,
            correlation_id: None,
            headers: BTreeMap::new(),
            callback_url: None,
            group: None,
            timeout_ms: None,
            ttl_ms: None,
            expires_at: None,
            schedule: None,
            request_digest: None,
        }
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Runs no earlier than `delay` from now (replaces any `run_at`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self.run_at = None;
        self
    }

    /// Runs no earlier than `unix_ms` (replaces any delay).
    pub fn run_at(mut self, unix_ms: u64) -> Self {
        self.run_at = Some(unix_ms);
        self.delay_ms = None;
        self
    }

    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the base of the retry back-off.
    pub fn backoff(mut self, base: Duration) -> Self {
        self.backoff_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the callback URL.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Sets the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the longest one attempt may run, heartbeats or not.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The job is dead if not leased within `ttl` of the enqueue (replaces
    /// any `expires_at`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self.expires_at = None;
        self
    }

    /// The job is dead if not leased by `unix_ms` (replaces any TTL).
    pub fn expires_at(mut self, unix_ms: u64) -> Self {
        self.expires_at = Some(unix_ms);
        self.ttl_ms = None;
        self
    }

    /// The digest stored with an idempotency key (the first 16 bytes of a
    /// SHA-256 over the payload and every option as given; the schedule,
    /// which only the scheduler sets, is left out). A second enqueue with
    /// the key and another digest is refused with
    /// [`Error::IdempotencyConflict`](crate::Error::IdempotencyConflict).
    pub fn digest(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut field = |name: &str, value: &[u8]| {
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value);
        };
        let opt_u64 = |v: Option<u64>| v.map(u64::to_be_bytes);
        field("payload", &self.payload);
        field("priority", &self.priority.to_be_bytes());
        if let Some(v) = opt_u64(self.delay_ms) {
            field("delay_ms", &v);
        }
        if let Some(v) = opt_u64(self.run_at) {
            field("run_at", &v);
        }
        field("max_attempts", &self.max_attempts.to_be_bytes());
        field("backoff_ms", &self.backoff_ms.to_be_bytes());
        if let Some(v) = &self.idempotency_key {
            field("idempotency_key", v.as_bytes());
        }
        if let Some(v) = &self.correlation_id {
            field("correlation_id", v.as_bytes());
        }
        for (key, value) in &self.headers {
            field("header", key.as_bytes());
            field("value", value.as_bytes());
        }
        if let Some(v) = &self.callback_url {
            field("callback_url", v.as_bytes());
        }
        if let Some(v) = &self.group {
            field("group", v.as_bytes());
        }
        if let Some(v) = opt_u64(self.timeout_ms) {
            field("timeout_ms", &v);
        }
        if let Some(v) = opt_u64(self.ttl_ms) {
            field("ttl_ms", &v);
        }
        if let Some(v) = opt_u64(self.expires_at) {
            field("expires_at", &v);
        }
        let full = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        digest
    }
}

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The new job, or the existing one on a replay.
    pub job: Job,
    /// `true` when the idempotency key matched a stored job and nothing was
    /// created.
    pub replayed: bool,
}

/// How to lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How many jobs at most, 1..=1000; default 1.
    pub max_jobs: u32,
    /// Lease length in ms, 1..=43,200,000; default 30,000.
    pub lease_ms: u64,
    /// A label kept on the lease (at most 256 bytes).
    pub worker: Option<String>,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            max_jobs: 1,
            lease_ms: DEFAULT_LEASE_MS,
            worker: None,
        }
    }
}

impl LeaseOptions {
    /// Sets `max_jobs`.
    pub fn max_jobs(mut self, n: u32) -> Self {
        self.max_jobs = n;
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, length: Duration) -> Self {
        self.lease_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the worker label.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }
}

/// A job handed to a worker, with the lease that fences it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// Pass this to heartbeat, complete, fail and release.
    pub lease_id: LeaseId,
    /// The job, already `leased`, its `attempts` counting this lease.
    pub job: Job,
}

/// A worker's report of a failed attempt.
///
/// ```
/// use queue_core::Failure;
/// use std::time::Duration;
///
/// let retry = Failure::new("smtp timeout").retry_in(Duration::from_secs(5));
/// let fatal = Failure::new("no such user").permanent();
/// assert!(retry.retryable && !fatal.retryable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong (kept as the job's `last_error`, truncated to 16 KiB).
    pub error: String,
    /// Retry after this many ms instead of the back-off.
    pub retry_in_ms: Option<u64>,
    /// `false` sends the job straight to the dead letters.
    pub retryable: bool,
}

impl Failure {
    /// A retryable failure with the queue's back-off.
    pub fn new(error: impl Into<String>) -> Self {
        Failure {
            error: error.into(),
            retry_in_ms: None,
            retryable: true,
        }
    }

    /// Retries after `delay` instead of the back-off.
    pub fn retry_in(mut self, delay: Duration) -> Self {
        self.retry_in_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Marks the failure as permanent: the job goes to the dead letters.
    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }
}

/// One item of [`Queue::settle`](crate::Queue::settle): a job held under a
/// lease, and how its attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The job.
    pub id: JobId,
    /// The lease it is held under.
    pub lease_id: LeaseId,
    /// Completed (with its result) or failed.
    pub outcome: Settle,
}

/// How a [`Settlement`]'s attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Completed, as [`Queue::complete`](crate::Queue::complete).
    Complete {
        /// Kept on the job (JSON over HTTP).
        result: Option<Vec<u8>>,
    },
    /// Failed, as [`Queue::fail`](crate::Queue::fail).
    Fail(Failure),
}

impl Settlement {
    /// Completes job `id` held under `lease_id`, keeping `result`.
    pub fn complete(id: JobId, lease_id: LeaseId, result: Option<Vec<u8>>) -> Self {
        Settlement {
            id,
            lease_id,
            outcome: Settle::Complete { result },
        }
    }

    /// Fails the attempt of job `id` held under `lease_id`.
    pub fn fail(id: JobId, lease_id: LeaseId, failure: Failure) -> Self {
        Settlement {
            id,
            lease_id,
            outcome: Settle::Fail(failure),
        }
    }
}

/// The operation behind a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transition {
    /// A new job.
    Enqueue,
    /// A scheduled job's time came.
    Promote,
    /// A worker leased the job.
    Lease,
    /// A worker extended its lease.
    Heartbeat,
    /// A worker reported progress (with a heartbeat).
    Progress,
    /// A callback delivery was attempted, settled or restarted.
    Callback,
    /// A worker completed the job.
    Complete,
    /// A worker reported a failure.
    Fail,
    /// The lease expired.
    Expire,
    /// A worker gave the job back.
    Release,
    /// A caller cancelled the job.
    Cancel,
    /// A dead job was requeued.
    Requeue,
    /// A finished job was removed (retention or purge).
    Remove,
    /// A job not leased by its `expires_at` was given up (`dead`).
    Ttl,
}

impl Transition {
    /// The operation's name, as used in errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Enqueue => "enqueue",
            Transition::Promote => "promote",
            Transition::Lease => "lease",
            Transition::Heartbeat => "heartbeat",
            Transition::Progress => "progress",
            Transition::Callback => "callback",
            Transition::Complete => "complete",
            Transition::Fail => "fail",
            Transition::Expire => "expire",
            Transition::Release => "release",
            Transition::Cancel => "cancel",
            Transition::Requeue => "requeue",
            Transition::Remove => "remove",
            Transition::Ttl => "ttl",
        }
    }
}

/// A state change, an entry of the durable event log, as delivered by
/// [`Queue::subscribe`](crate::Queue::subscribe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's durable id: increasing in commit order, never reused.
    pub event_id: u64,
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its new state.
    pub state: JobState,
    /// Its attempts after the change.
    pub attempts: u32,
    /// Unix ms of the change.
    pub at: u64,
    /// What caused it.
    pub transition: Transition,
    /// The job's correlation id.
    pub correlation_id: Option<String>,
    /// The result, on a `completed` event.
    pub result: Option<Vec<u8>>,
    /// The latest failure text, on a terminal event.
    pub last_error: Option<String>,
    /// The progress reported, on a progress event
    /// ([`Transition::Progress`]).
    pub progress: Option<Vec<u8>>,
}

/// One page of a job listing, oldest first (see [`Queue::jobs`](crate::Queue::jobs)
/// for what paging promises).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs of this page.
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<JobId>,
}

/// One page of dead letters: a [`JobPage`].
pub type DeadPage = JobPage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_show_as_sixteen_hex_digits_and_parse_back() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            0xabc,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            u64::MAX,
        ] {
            let id = JobId::from_u64(n);
            let shown = id.to_string();
            assert_eq!(shown, format!("{n:016x}"));
            assert_eq!(LeaseId::from_u64(n).to_string(), shown);
            assert_eq!(shown.parse::<JobId>().unwrap(), id);
            // Width and alignment are a string's.
            assert_eq!(
                format!("{id:>20}|{id:<18}|"),
                format!("{shown:>20}|{shown:<18}|")
            );
            assert_eq!(format!("{id:?}"), format!("JobId({n:016x})"));
        }
    }
}
