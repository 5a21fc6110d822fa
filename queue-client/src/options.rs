//! What callers configure: the connection, retries and each enqueue.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use queue_proto::{EnqueueRequest, RawValue};

/// How [`Client::connect_with`](crate::Client::connect_with) talks to the
/// server.
///
/// ```
/// use std::time::Duration;
/// use queue_client::ClientOptions;
///
/// let options = ClientOptions::new()
///     .token("s3cret")
///     .request_timeout(Duration::from_secs(10))
///     .pool_max_idle_per_host(16);
/// assert_eq!(options.request_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<String>,
    /// Time limit to establish a TCP connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time limit for a response, on top of any server-side wait the call
    /// asks for (long-polls add their `wait`). Default 30 s.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per server. Default 1024 (the
    /// server's default connection cap): a worker or a pool of producers
    /// with C calls in flight keeps its C connections instead of closing
    /// and reopening those above the limit after every burst.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Retries of calls that are safe to repeat (enqueues, reads, pause,
    /// resume) after a transient failure.
    pub retry: RetryPolicy,
}

/// The token is shown as `"<redacted>"`, so options can be logged.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(90),
            retry: RetryPolicy::default(),
        }
    }
}

impl ClientOptions {
    /// The defaults.
    pub fn new() -> Self {
        ClientOptions::default()
    }

    /// Sets the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the response timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how many idle connections are kept per server.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// Sets how long idle connections are kept.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// How calls that are safe to repeat are retried after a transient failure
/// ([`Error::is_transient`](crate::Error::is_transient)): up to `retries`
/// more times, waiting `initial_backoff`, then twice as long each time, at
/// most `max_backoff`.
///
/// An enqueue is safe to repeat because it always carries an idempotency key
/// (one is generated when the caller gives none): a retry of an enqueue that
/// did reach the server returns the job it created instead of a second one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try. Default 3; 0 turns retrying off.
    pub retries: u32,
    /// Wait before the first retry. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between retries. Default 2 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `n` (0-based).
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How to enqueue one job: priority, when it may run, retries, its
/// idempotency key, and what ties it to its origin (correlation id,
/// headers) and where its outcome goes (callback URL).
///
/// ```
/// use std::time::Duration;
/// use queue_client::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .priority(10)
///     .delay(Duration::from_secs(60))
///     .max_attempts(3)
///     .backoff(Duration::from_secs(2))
///     .idempotency_key("welcome-42")
///     .correlation_id("signup-7f3a")
///     .header("tenant", "acme")
///     .callback_url("https://example.com/hooks/jobs")
///     .group("tenant-acme")
///     .timeout(Duration::from_secs(300))
///     .ttl(Duration::from_secs(3600));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    priority: Option<i32>,
    delay_ms: Option<u64>,
    run_at: Option<u64>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    idempotency_key: Option<String>,
    correlation_id: Option<String>,
    headers: BTreeMap<String, String>,
    callback_url: Option<String>,
    group: Option<String>,
    timeout_ms: Option<u64>,
    ttl_ms: Option<u64>,
    expires_at: Option<u64>,
}

impl EnqueueOptions {
    /// The server's defaults: priority 0, ready now, 5 attempts, 1 s back-off
    /// base, a generated idempotency key.
    pub fn new() -> Self {
        EnqueueOptions::default()
    }

    /// Higher priorities lease first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Runs no earlier than `delay` from now (replaces [`run_at`](Self::run_at)).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(millis(delay));
        self.run_at = None;
        self
    }

    /// Runs no earlier than `at` (replaces [`delay`](Self::delay)).
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at.duration_since(UNIX_EPOCH).map_or(0, millis));
        self.delay_ms = None;
        self
    }

    /// Attempts allowed before the job is dead (1..=1000).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Base of the exponential retry back-off (at most one hour).
    pub fn backoff(mut self, base: Duration) -> Self {
        self.backoff_ms = Some(millis(base));
        self
    }

    /// The key that makes the enqueue idempotent within its queue: while a
    /// job enqueued with this key is stored, enqueueing again returns it
    /// instead of creating another (1..=256 bytes).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The job's correlation id (1..=128 visible ASCII characters): it is
    /// carried in every event and callback of the job, logged with its
    /// state changes, and sent by a [`Worker`](crate::Worker) as
    /// `X-Request-Id` on its calls about the job. Without one, the server
    /// uses the enqueue request's `X-Request-Id`.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Adds a string header to the job's metadata (at most 32; keys
    /// `^[A-Za-z0-9_.-]{1,64}$`, values at most 1,024 bytes), handed to the
    /// worker with the job ([`Job::headers`](crate::Job::headers)). A
    /// `traceparent` here continues a W3C trace into the worker. A key
    /// given twice keeps the later value.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// An absolute `http(s)` URL (at most 2,048 bytes) the server POSTs the
    /// job to when it is `completed`, `dead` or `cancelled`, signed as
    /// Standard Webhooks says; see [`webhooks`](crate::webhooks) for the
    /// receiving end.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// The job's group (1..=128 bytes): with the queue's
    /// `group_max_leased` limit, at most that many jobs of one group are
    /// leased at once (with 1, they run one at a time, in order), while
    /// other groups go on.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The longest one attempt may run (1 ms ..= 12 h), heartbeats or not:
    /// the lease ends at the lease's start plus this, and the attempt
    /// fails with `timed out after <ms> ms`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(millis(timeout));
        self
    }

    /// The job is not worth running if it is not leased within `ttl` of
    /// the enqueue: it is then `dead` with `expired before it ran`
    /// (replaces [`expires_at`](Self::expires_at)).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(millis(ttl));
        self.expires_at = None;
        self
    }

    /// As [`ttl`](Self::ttl), at an absolute time (replaces it).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at.duration_since(UNIX_EPOCH).map_or(0, millis));
        self.ttl_ms = None;
        self
    }

    /// The job body of a schedule: the options as given (no key is
    /// generated: each tick has its own).
    pub(crate) fn into_template(self, payload: Box<RawValue>) -> EnqueueRequest {
        EnqueueRequest {
            payload,
            priority: self.priority,
            delay_ms: self.delay_ms,
            run_at: self.run_at,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            idempotency_key: self.idempotency_key,
            correlation_id: self.correlation_id,
            headers: (!self.headers.is_empty()).then_some(self.headers),
            callback_url: self.callback_url,
            group: self.group,
            timeout_ms: self.timeout_ms,
            ttl_ms: self.ttl_ms,
            expires_at: self.expires_at,
        }
    }

    /// The request body, with a generated key when the caller gave none.
    /// Returns whether the key was generated.
    pub(crate) fn into_request(self, payload: Box<RawValue>) -> (EnqueueRequest, bool) {
        let generated = self.idempotency_key.is_none();
        let request = EnqueueRequest {
            payload,
            priority: self.priority,
            delay_ms: self.delay_ms,
            run_at: self.run_at,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            idempotency_key: Some(self.idempotency_key.unwrap_or_else(generate_key)),
            correlation_id: self.correlation_id,
            headers: (!self.headers.is_empty()).then_some(self.headers),
            callback_url: self.callback_url,
            group: self.group,
            timeout_ms: self.timeout_ms,
            ttl_ms: self.ttl_ms,
            expires_at: self.expires_at,
        };
        (request, generated)
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A fresh idempotency key: `qc-`, 64 random bits drawn once per process
/// (from the std hasher's random keys, the clock and the pid), and a
/// counter. Keys differ across processes and restarts by the prefix, and
/// within a process by the counter; making one is a format, not a hash.
pub(crate) fn generate_key() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("qc-{prefix:016x}{count:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let shown = format!("{:?}", ClientOptions::new().token("s3cret"));
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn generated_keys_differ() {
        let keys: std::collections::HashSet<String> = (0..1000).map(|_| generate_key()).collect();
        assert_eq!(keys.len(), 1000);
        assert!(keys.iter().all(|k| k.len() == 35 && k.starts_with("qc-")));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(0), Duration::from_millis(100));
        assert_eq!(policy.backoff(1), Duration::from_millis(200));
        assert_eq!(policy.backoff(10), Duration::from_secs(2));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_given_key_is_kept_and_delay_replaces_run_at() {
        let payload = || serde_json::value::to_raw_value(&1).unwrap();
        let (request, generated) = EnqueueOptions::new()
            .run_at(UNIX_EPOCH + Duration::from_secs(5))
            .delay(Duration::from_millis(7))
            .idempotency_key("k")
            .into_request(payload());
        assert!(!generated);
        assert_eq!(request.idempotency_key.as_deref(), Some("k"));
        assert_eq!((request.delay_ms, request.run_at), (Some(7), None));
        let (request, generated) = EnqueueOptions::new().into_request(payload());
        assert!(generated && request.idempotency_key.is_some());
        assert!(request.correlation_id.is_none() && request.headers.is_none());
    }

    #[test]
    fn correlation_headers_and_callback_go_into_the_body() {
        let payload = serde_json::value::to_raw_value(&1).unwrap();
        let (request, _) = EnqueueOptions::new()
            .correlation_id("c-1")
            .header("a", "1")
            .header("b", "2")
            .header("a", "3")
            .callback_url("http://127.0.0.1:9/hook")
            .into_request(payload);
        assert_eq!(request.correlation_id.as_deref(), Some("c-1"));
        let headers = request.headers.unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["a"], "3");
        assert_eq!(
            request.callback_url.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
    }
}
