//! Typed queues, job handles and manually leased jobs.

use std::marker::PhantomData;
use std::time::Duration;

use queue_proto::limits::MAX_WAIT_MS;
use queue_proto::{BatchRequest, JobState, LeaseRequest, QueueStats, RawValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::job::encode_progress;
use crate::job::{DeadPage, JobPage};
use crate::lease::{Held, heartbeat_lease, settle_complete, settle_fail, settle_release};
use crate::options::millis;
use crate::transport::{Brief, EventSource, JobView};
use crate::{
    Client, EnqueueOptions, Error, EventStream, Failure, Job, JobId, Result, SettleOutcome,
    SettleRequest, Settled,
};

/// The longest single server-side wait; longer waits are chained.
const MAX_WAIT: Duration = Duration::from_millis(MAX_WAIT_MS);

// The client's calls that make typed queues and job handles are defined
// here, beside those types, so that this module depends on `client` and not
// the other way round.
impl Client {
    /// The queue `name`, with payloads of type `T`. No call is made; a bad
    /// name is reported by the first call on the queue.
    pub fn queue<T>(&self, name: impl Into<String>) -> TypedQueue<T>
    where
        T: Serialize + DeserializeOwned,
    {
        TypedQueue::new(self.clone(), name.into())
    }

    /// A handle on an existing job, by id, with payloads of type `T`.
    pub fn job<T>(&self, id: impl Into<JobId>) -> JobHandle<T>
    where
        T: Serialize + DeserializeOwned,
    {
        JobHandle::new(self.clone(), id.into(), false)
    }
}

/// A named queue whose payloads are `T`, from [`Client::queue`].
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
/// let resize = client.queue::<Resize>("resize");
/// let job = resize.enqueue(&Resize { image: "cat.png".into(), width: 64 }).await?;
/// let url: String = job.wait(Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
pub struct TypedQueue<T> {
    client: Client,
    name: String,
    _payload: Marker<T>,
}

impl<T> Clone for TypedQueue<T> {
    fn clone(&self) -> Self {
        TypedQueue {
            client: self.client.clone(),
            name: self.name.clone(),
            _payload: Marker::default(),
        }
    }
}

impl<T> std::fmt::Debug for TypedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedQueue")
            .field("name", &self.name)
            .finish()
    }
}

fn to_raw<V: Serialize + ?Sized>(value: &V, what: &'static str) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|source| Error::Encode { what, source })
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl<T> TypedQueue<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn new(client: Client, name: String) -> Self {
        TypedQueue {
            client,
            name,
            _payload: Marker::default(),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this queue belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Enqueues `payload` with the server's defaults. Durable when it
    /// returns. Retried after transient failures without risk of a second
    /// job (see [`RetryPolicy`](crate::RetryPolicy)).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a bad queue name;
    /// [`Error::PayloadTooLarge`]; [`Error::Encode`] when `T` does not
    /// serialize; transport errors once retries are spent.
    pub async fn enqueue(&self, payload: &T) -> Result<JobHandle<T>> {
        self.enqueue_with(payload, EnqueueOptions::new()).await
    }

    /// Enqueues `payload` with `options` (priority, delay or run time,
    /// attempts, back-off, idempotency key). With a key that a stored job of
    /// this queue already has, no job is created: the handle is that job's,
    /// and [`JobHandle::replayed`] says so.
    ///
    /// # Errors
    /// As [`TypedQueue::enqueue`], plus [`Error::InvalidRequest`] for
    /// out-of-range options.
    pub async fn enqueue_with(&self, payload: &T, options: EnqueueOptions) -> Result<JobHandle<T>> {
        let (request, generated) = options.into_request(to_raw(payload, "payload")?);
        let (job, replayed): (Brief, bool) = self
            .client
            .retrying(|_| self.client.transport().enqueue(&self.name, &request, None))
            .await?;
        // A generated key is ours alone: a replay can only be our own retry.
        let replayed = replayed && !generated;
        Ok(JobHandle::new(
            self.client.clone(),
            JobId::from(job.id),
            replayed,
        ))
    }

    /// Enqueues every payload, all or nothing (1..=1000 jobs), with the
    /// server's defaults. Handles come back in input order.
    ///
    /// # Errors
    /// As [`TypedQueue::enqueue`]; nothing is enqueued on error.
    pub async fn enqueue_batch<'a, I>(&self, payloads: I) -> Result<Vec<JobHandle<T>>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.enqueue_batch_with(payloads.into_iter().map(|p| (p, EnqueueOptions::new())))
            .await
    }

    /// Enqueues every `(payload, options)` pair, all or nothing (1..=1000).
    ///
    /// # Errors
    /// As [`TypedQueue::enqueue_with`]; nothing is enqueued on error.
    pub async fn enqueue_batch_with<'a, I>(&self, items: I) -> Result<Vec<JobHandle<T>>>
    where
        I: IntoIterator<Item = (&'a T, EnqueueOptions)>,
        T: 'a,
    {
        let mut jobs = Vec::new();
        for (payload, options) in items {
            jobs.push(options.into_request(to_raw(payload, "payload")?).0);
        }
        let request = BatchRequest { jobs };
        let jobs = self
            .client
            .retrying(|_| self.client.transport().enqueue_batch(&self.name, &request))
            .await?;
        Ok(jobs
            .into_iter()
            .map(|job: Brief| JobHandle::new(self.client.clone(), JobId::from(job.id), false))
            .collect())
    }

    /// The synchronous style: enqueues `payload` and waits up to `timeout`
    /// for its result, in one round trip when the job finishes within a
    /// minute (the server's `wait_ms` enqueue).
    ///
    /// ```no_run
    /// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
    /// use std::time::Duration;
    /// use queue_client::Error;
    ///
    /// let add = client.queue::<(i64, i64)>("add");
    /// match add.call::<i64>(&(2, 3), Duration::from_secs(5)).await {
    ///     Ok(sum) => println!("2 + 3 = {sum}"),
    ///     Err(Error::JobTimedOut { id, .. }) => {
    ///         // Still queued or running: keep the handle and look later.
    ///         let later = add.job(id);
    ///         # let _ = later;
    ///     }
    ///     Err(Error::JobFailed { last_error, .. }) => eprintln!("failed: {last_error}"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`Error::JobTimedOut`]: not finished in time; the job is unaffected
    ///   and will still run (its id is in the error, see [`TypedQueue::job`]).
    /// - [`Error::JobFailed`]: it went `dead`, with its last error.
    /// - [`Error::JobCancelled`]: it was cancelled.
    /// - [`Error::Decode`]: the result is not an `R`.
    /// - As [`TypedQueue::enqueue`] for the enqueue itself.
    pub async fn call<R: DeserializeOwned>(&self, payload: &T, timeout: Duration) -> Result<R> {
        self.call_with(payload, EnqueueOptions::new(), timeout)
            .await
    }

    /// [`TypedQueue::call`] with enqueue options.
    ///
    /// # Errors
    /// As [`TypedQueue::call`].
    pub async fn call_with<R: DeserializeOwned>(
        &self,
        payload: &T,
        options: EnqueueOptions,
        timeout: Duration,
    ) -> Result<R> {
        let started = Instant::now();
        let deadline = started + timeout;
        let (request, _) = options.into_request(to_raw(payload, "payload")?);
        let (job, _): (Brief, bool) = self
            .client
            .retrying(|_| {
                let wait = remaining(deadline).min(MAX_WAIT);
                self.client
                    .transport()
                    .enqueue(&self.name, &request, Some(wait))
            })
            .await?;
        if job.state.is_terminal() || remaining(deadline).is_zero() {
            return outcome(job, started.elapsed());
        }
        let handle: JobHandle<T> = JobHandle::new(self.client.clone(), JobId::from(job.id), false);
        handle.wait_until(started, deadline).await
    }

    /// [`TypedQueue::call`] for callers that want to keep the job when the
    /// wait ends first: a time-out is not an error here but
    /// [`CallOutcome::Pending`] with the job's handle.
    ///
    /// ```no_run
    /// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
    /// use std::time::Duration;
    /// use queue_client::{CallOutcome, EnqueueOptions};
    ///
    /// let reports = client.queue::<String>("reports");
    /// let outcome = reports
    ///     .try_call::<String>(&"q3".into(), EnqueueOptions::new(), Duration::from_secs(2))
    ///     .await?;
    /// match outcome {
    ///     CallOutcome::Done(url) => println!("ready: {url}"),
    ///     CallOutcome::Pending(job) => println!("still working; poll {}", job.id()),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TypedQueue::call`], except [`Error::JobTimedOut`].
    pub async fn try_call<R: DeserializeOwned>(
        &self,
        payload: &T,
        options: EnqueueOptions,
        timeout: Duration,
    ) -> Result<CallOutcome<R, T>> {
        match self.call_with(payload, options, timeout).await {
            Ok(result) => Ok(CallOutcome::Done(result)),
            Err(Error::JobTimedOut { id, .. }) => Ok(CallOutcome::Pending(self.job(id))),
            Err(e) => Err(e),
        }
    }

    /// A handle on job `id` of this queue.
    pub fn job(&self, id: impl Into<JobId>) -> JobHandle<T> {
        JobHandle::new(self.client.clone(), id.into(), false)
    }

    /// Leases up to `options.max_jobs` ready jobs, waiting up to
    /// `options.wait` for the first one, for callers that run jobs by hand
    /// rather than with a [`Worker`](crate::Worker). Each [`Leased`] must be
    /// completed, failed or released before its lease expires (or kept alive
    /// with heartbeats).
    ///
    /// A leased job whose payload does not decode as `T` is failed at once,
    /// permanently (it goes to the dead letters with the decoding error), and
    /// is not returned: no retry could decode it.
    ///
    /// Not retried: a lease whose answer was lost holds its jobs until the
    /// lease expires.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for out-of-range options; transport errors.
    pub async fn lease(&self, options: &LeaseOptions) -> Result<Vec<Leased<T>>> {
        let jobs = self
            .client
            .transport()
            .lease(&self.name, &options.to_request())
            .await?;
        Ok(take_leased(&self.client, jobs).await)
    }

    /// Settles many of this queue's leased jobs and, once that is durable,
    /// leases the next ones, in one request (`POST
    /// /v1/queues/{queue}/settle`): each completion or failure is settled
    /// as [`Leased::complete`] or [`Leased::fail`] would settle it, and all
    /// of them are committed together. A leased job whose payload does not
    /// decode as `T` is failed at once, as with [`TypedQueue::lease`].
    ///
    /// Not retried: a request whose answer was lost may have settled its
    /// items (a retry would get `lease_lost` for them) and leased jobs that
    /// then wait for their lease to expire.
    ///
    /// # Errors
    /// The whole request, nothing changed: [`Error::InvalidRequest`] for
    /// more than 1,000 items, an out-of-range retry delay or lease option;
    /// [`Error::PayloadTooLarge`]; transport errors. An item that is not
    /// settled is not an error of the call: see [`SettleOutcome`].
    pub async fn settle(&self, request: SettleRequest) -> Result<Settled<Leased<T>>> {
        crate::settle::check(&request)?;
        let reply = self
            .client
            .transport()
            .settle(&self.name, &request.wire, None)
            .await?;
        let results = reply
            .results
            .into_iter()
            .map(|item| SettleOutcome {
                id: JobId::from(item.id.clone()),
                outcome: item.outcome(),
            })
            .collect();
        let jobs = take_leased(&self.client, reply.jobs).await;
        Ok(Settled { results, jobs })
    }

    /// This queue's counts.
    ///
    /// # Errors
    /// As [`Client::stats`].
    pub async fn stats(&self) -> Result<QueueStats> {
        self.client.stats(&self.name).await
    }

    /// Pauses leasing from this queue.
    ///
    /// # Errors
    /// As [`Client::pause`].
    pub async fn pause(&self) -> Result<QueueStats> {
        self.client.pause(&self.name).await
    }

    /// Changes this queue's limits.
    ///
    /// # Errors
    /// As [`Client::set_limits`].
    pub async fn set_limits(&self, limits: &crate::Limits) -> Result<QueueStats> {
        self.client.set_limits(&self.name, limits).await
    }

    /// Resumes leasing from this queue.
    ///
    /// # Errors
    /// As [`Client::resume`].
    pub async fn resume(&self) -> Result<QueueStats> {
        self.client.resume(&self.name).await
    }

    /// A page of this queue's dead letters with typed payloads.
    ///
    /// # Errors
    /// As [`Client::dead_letters`], plus [`Error::Decode`] for a payload
    /// that is not a `T`.
    pub async fn dead_letters(&self, after: Option<&JobId>, limit: u32) -> Result<DeadPage<T>> {
        self.client.dead_page(&self.name, after, limit).await
    }

    /// A page of this queue's jobs in `state` with typed payloads, oldest
    /// first (see [`Client::jobs`] for what paging promises).
    ///
    /// # Errors
    /// As [`Client::jobs`], plus [`Error::Decode`] for a payload that is
    /// not a `T`.
    pub async fn jobs(
        &self,
        state: JobState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<T>> {
        self.client.jobs_page(&self.name, state, after, limit).await
    }

    /// Requeues this queue's dead jobs (`ids`, or all).
    ///
    /// # Errors
    /// As [`Client::requeue_dead`].
    pub async fn requeue_dead(&self, ids: Option<&[JobId]>) -> Result<u64> {
        self.client.requeue_dead(&self.name, ids).await
    }

    /// Deletes this queue's dead jobs.
    ///
    /// # Errors
    /// As [`Client::purge_dead`].
    pub async fn purge_dead(&self) -> Result<u64> {
        self.client.purge_dead(&self.name).await
    }
}

/// What [`TypedQueue::try_call`] ends with: the result, or the handle of a
/// job that has not finished yet (it keeps its place and will still run).
#[derive(Debug)]
pub enum CallOutcome<R, T> {
    /// The job completed with this result.
    Done(R),
    /// The wait ended first; here is the job.
    Pending(JobHandle<T>),
}

/// A handle on one job: its id, and calls to look at, wait for or cancel it.
/// Holding it does not keep anything alive on the server.
pub struct JobHandle<T> {
    client: Client,
    id: JobId,
    replayed: bool,
    _payload: Marker<T>,
}

impl<T> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        JobHandle {
            client: self.client.clone(),
            id: self.id.clone(),
            replayed: self.replayed,
            _payload: Marker::default(),
        }
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("replayed", &self.replayed)
            .finish()
    }
}

impl<T> JobHandle<T>
where
    T: Serialize + DeserializeOwned,
{
    pub(crate) fn new(client: Client, id: JobId, replayed: bool) -> Self {
        JobHandle {
            client,
            id,
            replayed,
            _payload: Marker::default(),
        }
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Whether the enqueue found an earlier job with the caller's
    /// idempotency key and returned it instead of creating one. (Retries the
    /// SDK makes with a key it generated never count as replays.)
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// The job's current state.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the job is unknown (or removed by retention).
    pub async fn status(&self) -> Result<JobState> {
        Ok(self.fetch::<Brief>(Duration::ZERO).await?.state)
    }

    /// The whole job, payload decoded.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Decode`] when the payload is not a `T`.
    pub async fn get(&self) -> Result<Job<T>> {
        Job::from_wire(self.fetch::<queue_proto::Job>(Duration::ZERO).await?)
    }

    async fn fetch<V: JobView>(&self, wait: Duration) -> Result<V> {
        let wait = (!wait.is_zero()).then_some(wait);
        self.client
            .retrying(|_| self.client.transport().get(self.id.as_str(), wait))
            .await
    }

    /// Waits up to `timeout` (long-polling, no busy loop) for the job to
    /// finish, and returns its result decoded as `R` (a job completed
    /// without a result decodes from JSON `null`, e.g. as `()` or `Option`).
    ///
    /// # Errors
    /// [`Error::JobTimedOut`] (the job is unaffected), [`Error::JobFailed`]
    /// (dead, with its last error), [`Error::JobCancelled`],
    /// [`Error::Decode`], [`Error::NotFound`].
    pub async fn wait<R: DeserializeOwned>(&self, timeout: Duration) -> Result<R> {
        let started = Instant::now();
        self.wait_until(started, started + timeout).await
    }

    async fn wait_until<R: DeserializeOwned>(
        &self,
        started: Instant,
        deadline: Instant,
    ) -> Result<R> {
        loop {
            let wait = remaining(deadline).min(MAX_WAIT);
            let job: Brief = self.fetch(wait.max(Duration::from_millis(1))).await?;
            if job.state.is_terminal() || remaining(deadline).is_zero() {
                return outcome(job, started.elapsed());
            }
        }
    }

    /// Cancels the job if it is `scheduled`, `ready` or `leased` (a leased
    /// job's lease is revoked: its worker's complete will be refused).
    /// Durable on return.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the job is already finished;
    /// [`Error::NotFound`].
    pub async fn cancel(&self) -> Result<()> {
        let _: Brief = self.client.transport().cancel(self.id.as_str()).await?;
        Ok(())
    }

    /// The job's events as they happen, pushed by the server: first its
    /// current state (an event with its latest event id), then each state
    /// change and progress report, ending after its terminal event
    /// (`completed`, `dead` or `cancelled`). For a job already finished
    /// that is one event.
    ///
    /// Like [`Client::events`], the stream reconnects by itself when the
    /// connection drops, resuming after the last event it passed on. If the
    /// job's events were pruned meanwhile it yields the
    /// [`Gap`](crate::StreamItem::Gap), re-reads the job's current state
    /// (its next item), and carries on from there, so it still ends with
    /// the job.
    ///
    /// ```no_run
    /// # async fn run(client: queue_client::Client) -> queue_client::Result<()> {
    /// use queue_client::{EventType, StreamItem};
    ///
    /// let job = client.queue::<String>("reports").enqueue(&"q3".into()).await?;
    /// let mut events = job.events().await?;
    /// while let Some(item) = events.next().await {
    ///     match item? {
    ///         StreamItem::Event(event) if event.kind() == EventType::Progress => {
    ///             println!("progress: {}", event.progress.as_deref().map_or("", |p| p.get()));
    ///         }
    ///         StreamItem::Event(event) => println!("now {}", event.state),
    ///         StreamItem::Gap(_) => println!("some events were missed"),
    ///     }
    /// }
    /// // The job has finished.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown job; transport errors when the
    /// first connection cannot be made.
    pub async fn events(&self) -> Result<EventStream> {
        EventStream::open(&self.client, EventSource::Job(self.id.clone()), None).await
    }
}

/// How [`TypedQueue::lease`] leases.
///
/// ```
/// use std::time::Duration;
/// let options = queue_client::LeaseOptions::new()
///     .max_jobs(10)
///     .lease(Duration::from_secs(60))
///     .wait(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Jobs at most, 1..=1000. Default 1.
    pub max_jobs: u32,
    /// Lease length (1 ms ..= 12 h). Default 30 s.
    pub lease: Duration,
    /// How long the server waits for a first job (at most 60 s). Default 0.
    pub wait: Duration,
    /// A label shown on the job while leased and in the server's logs.
    pub worker: Option<String>,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            max_jobs: 1,
            lease: Duration::from_millis(queue_proto::limits::DEFAULT_LEASE_MS),
            wait: Duration::ZERO,
            worker: None,
        }
    }
}

impl LeaseOptions {
    /// The defaults.
    pub fn new() -> Self {
        LeaseOptions::default()
    }

    /// Sets the most jobs to lease.
    pub fn max_jobs(mut self, n: u32) -> Self {
        self.max_jobs = n;
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, length: Duration) -> Self {
        self.lease = length;
        self
    }

    /// Sets how long to wait for a first job.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the worker label.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    pub(crate) fn to_request(&self) -> LeaseRequest {
        LeaseRequest {
            max_jobs: Some(self.max_jobs),
            lease_ms: Some(millis(self.lease)),
            wait_ms: Some(millis(self.wait)),
            worker: self.worker.clone(),
        }
    }
}

/// Leased jobs from the wire as [`Leased`] handles; one whose payload does
/// not decode as `T` is failed permanently (no retry could decode it) and
/// left out.
pub(crate) async fn take_leased<T: DeserializeOwned>(
    client: &Client,
    jobs: Vec<queue_proto::Job>,
) -> Vec<Leased<T>> {
    let mut leased = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        let lease_id = job.lease_id.take().unwrap_or_default();
        let id = job.id.clone();
        let correlation_id = job.correlation_id.clone();
        match Job::<T>::from_wire(job) {
            Ok(job) => leased.push(Leased {
                client: client.clone(),
                job,
                lease_id,
            }),
            Err(e) => {
                let failure = Failure::permanent(e.to_string());
                let held = Held {
                    id: &id,
                    lease_id: &lease_id,
                    correlation_id: correlation_id.as_deref(),
                };
                if let Err(fail_error) = settle_fail(client, held, &failure).await {
                    tracing::warn!(job = %id, error = %fail_error, "could not fail an undecodable job");
                }
            }
        }
    }
    leased
}

/// A job leased by [`TypedQueue::lease`]: the job and the lease that fences
/// it. Completing, failing or releasing consumes it. If it is dropped, the
/// job stays leased until the lease expires, which then counts as a failed
/// attempt.
#[derive(Debug)]
pub struct Leased<T> {
    client: Client,
    job: Job<T>,
    lease_id: String,
}

impl<T> Leased<T> {
    pub(crate) fn from_parts(client: Client, job: Job<T>, lease_id: String) -> Self {
        Leased {
            client,
            job,
            lease_id,
        }
    }

    pub(crate) fn into_parts(self) -> (Job<T>, String) {
        (self.job, self.lease_id)
    }

    /// The job (`leased`, `attempts` counting this lease).
    pub fn job(&self) -> &Job<T> {
        &self.job
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.job.payload
    }

    /// The lease's fencing token.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Extends the lease to `length` from now (`None`: the lease's own
    /// length). Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease expired or the job was cancelled:
    /// stop working on it.
    pub async fn heartbeat(&mut self, length: Option<Duration>) -> Result<()> {
        heartbeat_lease(&self.client, &mut self.job, &self.lease_id, length, None).await
    }

    /// Reports the job's progress (any JSON, at most 64 KiB): a heartbeat
    /// that also stores `value` on the job and emits a `progress` event
    /// (the lease is extended by its own length). Durable on return.
    ///
    /// # Errors
    /// As [`Leased::heartbeat`]; [`Error::Encode`] when `value` does not
    /// serialize; [`Error::PayloadTooLarge`] over 64 KiB.
    pub async fn progress<P: Serialize + ?Sized>(&mut self, value: &P) -> Result<()> {
        let progress = encode_progress(value)?;
        heartbeat_lease(
            &self.client,
            &mut self.job,
            &self.lease_id,
            None,
            Some(progress),
        )
        .await
    }

    /// The job this lease fences, as the settling calls name it.
    fn held(&self) -> Held<'_> {
        Held {
            id: self.job.id.as_str(),
            lease_id: &self.lease_id,
            correlation_id: self.job.correlation_id.as_deref(),
        }
    }

    /// Completes the job with `result`. Durable on return; the job is never
    /// leased again. Retried after transient failures.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease is no longer held (the result is
    /// not recorded); [`Error::Encode`]; [`Error::PayloadTooLarge`].
    pub async fn complete<R: Serialize + ?Sized>(self, result: &R) -> Result<()> {
        let result = to_raw(result, "result")?;
        settle_complete(&self.client, self.held(), Some(result)).await
    }

    /// Reports a failed attempt: the job is retried after `failure`'s delay
    /// (or the back-off), or goes `dead` when it is permanent or out of
    /// attempts. Returns the state it went to. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease is no longer held.
    pub async fn fail(self, failure: impl Into<Failure>) -> Result<JobState> {
        settle_fail(&self.client, self.held(), &failure.into()).await
    }

    /// Gives the job back: `ready` at once, its attempt not counted.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lease is no longer held.
    pub async fn release(self) -> Result<()> {
        settle_release(&self.client, self.held()).await
    }
}

/// The terminal outcome of a job read from the wire, as the SDK reports it:
/// `Ok` with the typed result for `completed`, the matching error otherwise.
fn outcome<R: DeserializeOwned>(job: Brief, waited: Duration) -> Result<R> {
    let id = JobId::from(job.id);
    match job.state {
        JobState::Completed => {
            let raw = job.result.as_deref().map_or("null", RawValue::get);
            serde_json::from_str(raw).map_err(|e| Error::decode(format!("result of job {id}"), e))
        }
        JobState::Dead => Err(Error::JobFailed {
            id,
            attempts: job.attempts,
            last_error: job.last_error.unwrap_or_default(),
        }),
        JobState::Cancelled => Err(Error::JobCancelled { id }),
        state @ (JobState::Scheduled | JobState::Ready | JobState::Leased) => {
            Err(Error::JobTimedOut { id, state, waited })
        }
    }
}

/// Keeps `T` in a type without owning one, and without making the type
/// depend on `T`'s auto traits.
pub(crate) type Marker<T> = PhantomData<fn() -> T>;
