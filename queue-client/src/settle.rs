//! Settling many leased jobs, and leasing the next, in one request
//! (`POST /v1/queues/{queue}/settle`).

use queue_proto::{JobState, RawValue, SettleComplete, SettleFail};
use serde::Serialize;

use crate::options::millis;
use crate::{Error, Failure, JobId, LeaseOptions, Result};

/// What to settle in one request, and what to lease after: built with
/// [`SettleRequest::complete`], [`fail`](SettleRequest::fail) and
/// [`lease`](SettleRequest::lease), sent with
/// [`Client::settle`](crate::Client::settle) or
/// [`TypedQueue::settle`](crate::TypedQueue::settle). At most 1,000
/// completions and failures together.
///
/// ```no_run
/// use queue_client::{Client, Failure, LeaseOptions, SettleRequest};
/// # async fn run(client: Client, done: queue_client::Leased<u32>, broken: queue_client::Leased<u32>) -> queue_client::Result<()> {
/// let request = SettleRequest::new()
///     .complete(&done.job().id, done.lease_id(), &"ok")?
///     .fail(&broken.job().id, broken.lease_id(), Failure::new("try later"))
///     .lease(LeaseOptions::new().max_jobs(2));
/// let settled = client.queue::<u32>("work").settle(request).await?;
/// for item in &settled.results {
///     println!("{}: {:?}", item.id, item.outcome);
/// }
/// println!("{} more jobs to run", settled.jobs.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SettleRequest {
    pub(crate) wire: queue_proto::SettleRequest,
}

impl SettleRequest {
    /// Nothing to settle, nothing to lease.
    pub fn new() -> Self {
        SettleRequest::default()
    }

    /// Completes job `id`, held under `lease_id`, with `result`.
    ///
    /// # Errors
    /// [`Error::Encode`] when `result` does not encode as JSON.
    pub fn complete<R: Serialize + ?Sized>(
        self,
        id: &JobId,
        lease_id: &str,
        result: &R,
    ) -> Result<Self> {
        let raw = serde_json::value::to_raw_value(result).map_err(|source| Error::Encode {
            what: "result",
            source,
        })?;
        Ok(self.complete_raw(id, lease_id, Some(raw)))
    }

    /// Completes job `id`, held under `lease_id`, with the result as JSON
    /// text already encoded (or none).
    pub fn complete_raw(mut self, id: &JobId, lease_id: &str, result: Option<Box<RawValue>>) -> Self {
        self.wire.complete.push(SettleComplete {
            id: id.as_str().to_owned(),
            lease_id: lease_id.to_owned(),
            result,
        });
        self
    }

    /// Fails the attempt of job `id`, held under `lease_id`.
    pub fn fail(mut self, id: &JobId, lease_id: &str, failure: impl Into<Failure>) -> Self {
        let failure = failure.into();
        self.wire.fail.push(SettleFail {
            id: id.as_str().to_owned(),
            lease_id: lease_id.to_owned(),
            error: failure.message().to_owned(),
            retry_in_ms: failure.retry_delay().map(millis),
            retryable: failure.is_retryable(),
        });
        self
    }

    /// Leases up to `options.max_jobs` jobs of the queue once the
    /// settlements are durable (waiting up to `options.wait` for one).
    pub fn lease(mut self, options: LeaseOptions) -> Self {
        self.wire.lease = Some(options.to_request());
        self
    }

    /// How many completions and failures the request holds.
    pub fn len(&self) -> usize {
        self.wire.complete.len() + self.wire.fail.len()
    }

    /// Whether the request settles nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to a [`SettleRequest`]: one [`SettleOutcome`] per item, in
/// the request's order (the completions, then the failures), and the jobs
/// its lease got (`L` is [`Leased`](crate::Leased), or
/// [`blocking::Leased`](crate::blocking::Leased)).
#[derive(Debug)]
pub struct Settled<L> {
    /// One per item, in order.
    pub results: Vec<SettleOutcome>,
    /// What the request's lease got (none without a lease).
    pub jobs: Vec<L>,
}

/// How one item of a settle went.
#[derive(Debug)]
pub struct SettleOutcome {
    /// The item's job.
    pub id: JobId,
    /// The state the job was left in (`completed`; `scheduled` or `dead`
    /// after a failure), or what its single call would have answered:
    /// [`Error::LeaseLost`] (expired, reassigned, cancelled, already
    /// settled), [`Error::NotFound`] (unknown, or a job of another queue),
    /// [`Error::Conflict`]. Such an item changed nothing.
    pub outcome: Result<JobState>,
}

/// A settle's items checked before anything is sent.
pub(crate) fn check(request: &SettleRequest) -> Result<()> {
    let limit = queue_proto::limits::MAX_BATCH;
    if request.len() > limit {
        return Err(Error::invalid(format!(
            "a settle holds at most {limit} completions and failures together, got {}",
            request.len()
        )));
    }
    Ok(())
}
