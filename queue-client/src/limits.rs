//! [`Limits`]: a change of a queue's limits, for
//! [`Client::set_limits`](crate::Client::set_limits).

use std::time::Duration;

use queue_proto::{PatchQueueRequest, RateLimit};

/// A change of a queue's limits (and paused flag): each limit the builder
/// does not mention keeps its stored value; the `no_*` methods remove one.
///
/// ```
/// use std::time::Duration;
/// use queue_client::Limits;
///
/// // At most 10 leased at once, 100 leases a second, one job per group.
/// let limits = Limits::new()
///     .max_leased(10)
///     .rate_limit(100, Duration::from_secs(1))
///     .group_max_leased(1);
/// // Later: lift the rate limit, keep the others.
/// let lifted = Limits::new().no_rate_limit();
/// # let _ = (limits, lifted);
/// ```
///
/// Bounds (checked by the server or the embedded queue, which answer
/// [`Error::InvalidRequest`](crate::Error::InvalidRequest) naming the
/// field and change nothing): `max_leased` and `group_max_leased`
/// 1..=1,000,000; the rate limit's `jobs` 1..=1,000,000 per a period of
/// 1 ms..=24 h, in whole milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    request: PatchQueueRequest,
}

impl Limits {
    /// A change that changes nothing (yet).
    pub fn new() -> Self {
        Limits::default()
    }

    /// At most `n` jobs of the queue are leased at once.
    pub fn max_leased(mut self, n: u32) -> Self {
        self.request.max_leased = Some(Some(n));
        self
    }

    /// Removes the `max_leased` limit.
    pub fn no_max_leased(mut self) -> Self {
        self.request.max_leased = Some(None);
        self
    }

    /// Leases are granted from a token bucket of capacity `jobs`, refilled
    /// at `jobs` per `per` (whole milliseconds; below 1 ms is refused).
    pub fn rate_limit(mut self, jobs: u32, per: Duration) -> Self {
        let per_ms = u64::try_from(per.as_millis()).unwrap_or(u64::MAX);
        self.request.rate_limit = Some(Some(RateLimit { jobs, per_ms }));
        self
    }

    /// Removes the rate limit.
    pub fn no_rate_limit(mut self) -> Self {
        self.request.rate_limit = Some(None);
        self
    }

    /// At most `n` jobs of one group are leased at once; with 1, the jobs
    /// of a group run one at a time, in lease order.
    pub fn group_max_leased(mut self, n: u32) -> Self {
        self.request.group_max_leased = Some(Some(n));
        self
    }

    /// Removes the `group_max_leased` limit.
    pub fn no_group_max_leased(mut self) -> Self {
        self.request.group_max_leased = Some(None);
        self
    }

    /// Pauses (`true`) or resumes (`false`) leasing in the same change.
    pub fn paused(mut self, paused: bool) -> Self {
        self.request.paused = Some(paused);
        self
    }

    /// The `PATCH /v1/queues/{queue}` body this change sends.
    pub fn as_request(&self) -> &PatchQueueRequest {
        &self.request
    }
}
