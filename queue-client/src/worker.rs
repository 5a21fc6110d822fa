//! The worker runtime: lease, run a handler, heartbeat, settle, shut down.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use queue_proto::limits::{MAX_BATCH, MAX_LEASE_JOBS, MAX_WAIT_MS};
use queue_proto::{
    HeartbeatRequest, JobState, LeaseRequest, RawValue, SettleComplete, SettleFail, SettleRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, Span};

use crate::job::{ProgressSlot, WorkerLink};
use crate::lease::{Held, settle_complete, settle_fail, settle_release};
use crate::options::millis;
use crate::transport::Brief;
use crate::{Client, Error, Failure, Job, Result};

/// Stops a [`Worker`] from anywhere: clone it, pass it to a signal handler
/// or another thread, call [`shutdown`](ShutdownHandle::shutdown).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    sender: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    fn new() -> Self {
        ShutdownHandle {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    /// Asks the worker to stop: it leases nothing more, lets running
    /// handlers finish within its shutdown timeout and releases the rest.
    /// Returns at once; the worker's `run` returns when it is done.
    pub fn shutdown(&self) {
        self.sender.send_replace(true);
    }

    /// Whether [`shutdown`](ShutdownHandle::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        *self.sender.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs completed with their handler's result.
    pub completed: u64,
    /// Attempts reported failed (handler errors, panics, undecodable
    /// payloads); the jobs were rescheduled or went dead.
    pub failed: u64,
    /// Jobs given back at shutdown (not started, or still running when the
    /// shutdown timeout passed): `ready` again, their attempt not counted.
    pub released: u64,
    /// Jobs whose lease was lost while they ran (cancelled, or expired and
    /// handed to another worker): their outcome was not recorded.
    pub lease_lost: u64,
    /// Jobs whose outcome could not be reported (the server stayed
    /// unreachable); their lease expires and they run again.
    pub unreported: u64,
}

/// Runs a handler on the jobs of one queue, `concurrency` at a time.
///
/// For each job the worker decodes the payload, runs the handler, sends
/// heartbeats while it runs (so a job may run longer than one lease), and
/// then completes the job with the handler's result or fails it with its
/// [`Failure`]. A handler that panics counts as a failed attempt; the worker
/// carries on. Leasing long-polls the server, so an idle worker costs one
/// request per [`poll_wait`](Worker::poll_wait).
///
/// A busy worker costs one request per job: a finished job is settled and
/// its slot refilled in one `POST /v1/queues/{queue}/settle`, which leases
/// as many jobs as it settles; the results of handlers that finish while a
/// settle is on its way go together in the next one (nothing waits for a
/// batch to fill: a lone result is sent at once). Slots the settle could
/// not refill go back to the lease long-polls. See
/// [`settle_and_lease`](Worker::settle_and_lease) for the one-call-per-job
/// way (for servers older than release 1.1).
///
/// The handler gets the job's [`correlation_id`](Job::correlation_id) and
/// [`headers`](Job::headers), and may report progress with
/// [`Job::progress`]. It runs inside a `tracing` span named `job` with the
/// fields `job_id`, `queue`, `attempt` and `correlation_id`, so its log
/// lines (and the worker's own about the job) carry them. Every call the
/// worker makes about the job (heartbeat, complete, fail, release) sends
/// the correlation id as `X-Request-Id`, so the server's log lines of the
/// job's whole life share it. (A settle of several jobs at once carries
/// no `X-Request-Id`: each job's log lines on the server still carry its
/// correlation id.)
///
/// A handler that never fails: either name the error type once,
/// `Ok::<_, Failure>(value)` (Rust cannot infer it from `Ok` alone), or
/// use [`run_infallible`](Worker::run_infallible), whose handler returns
/// the value itself.
///
/// Shutdown ([`ShutdownHandle::shutdown`] or the signal given to
/// [`run_until`](Worker::run_until)): the worker stops leasing, cancels
/// its lease long-poll in flight (it does not wait out `poll_wait`; jobs
/// granted at that very moment are still taken, and given back: in process
/// exactly; over HTTP a request sent less than a second ago, which may be a
/// grant on its way, is waited for until then, an older one, waiting on the
/// server, has its connection closed at once), gives back any job it
/// has not started, lets running handlers finish within
/// [`shutdown_timeout`](Worker::shutdown_timeout), and releases the jobs of
/// those that do not (an async handler is dropped at its next `.await`).
/// Released jobs are `ready` again at once, their attempt not counted.
/// Dropping the future of `run` instead stops leasing at once (a lease in
/// flight is abandoned: its jobs wait for their lease to expire, which
/// counts as a failed attempt), while jobs already running finish and are
/// settled in the background.
///
/// ```no_run
/// use queue_client::{Client, Failure, Job, Worker};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
///
/// # async fn run() -> queue_client::Result<()> {
/// let client = Client::connect("http://127.0.0.1:7878")?;
/// let report = Worker::new(client, "emails")
///     .concurrency(8)
///     .run_until(
///         |job: Job<Email>| async move {
///             if job.payload.to.is_empty() {
///                 return Err(Failure::permanent("no recipient"));
///             }
///             Ok(format!("sent to {}", job.payload.to))
///         },
///         async {
///             // Without a signal handler, never stop rather than stop at once.
///             if tokio::signal::ctrl_c().await.is_err() {
///                 std::future::pending::<()>().await;
///             }
///         },
///     )
///     .await?;
/// println!("{} emails sent", report.completed);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    shutdown: ShutdownHandle,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    client: Client,
    queue: String,
    concurrency: usize,
    lease: Duration,
    heartbeat: Option<Duration>,
    poll_wait: Duration,
    shutdown_timeout: Duration,
    name: Option<String>,
    settle: bool,
}

impl Worker {
    /// A worker on `queue` with the defaults: concurrency 1, 30 s leases,
    /// heartbeats every third of a lease, 5 s long-polls, 30 s to finish at
    /// shutdown.
    pub fn new(client: Client, queue: impl Into<String>) -> Self {
        Worker {
            config: WorkerConfig {
                client,
                queue: queue.into(),
                concurrency: 1,
                lease: Duration::from_secs(30),
                heartbeat: None,
                poll_wait: Duration::from_secs(5),
                shutdown_timeout: Duration::from_secs(30),
                name: None,
                settle: true,
            },
            shutdown: ShutdownHandle::new(),
        }
    }

    /// How many handlers run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// The lease length. A job whose worker vanishes (crash, network) is
    /// handed out again this long after its last heartbeat.
    pub fn lease(mut self, length: Duration) -> Self {
        self.config.lease = length;
        self
    }

    /// How often a running job's lease is renewed. Default: a third of the
    /// lease length.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.config.heartbeat = Some(every);
        self
    }

    /// How long one lease request waits on the server for a job (at most
    /// 60 s). A shutdown does not wait for it: it cancels the request.
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.config.poll_wait = wait;
        self
    }

    /// How long running handlers may take to finish after a shutdown.
    pub fn shutdown_timeout(mut self, limit: Duration) -> Self {
        self.config.shutdown_timeout = limit;
        self
    }

    /// A label shown on the jobs this worker holds and in the server's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Whether finished jobs are settled, and their slots refilled, with
    /// `POST /v1/queues/{queue}/settle` (the default: one request per job,
    /// the results of handlers finishing together in one request). With
    /// `false`, each job is completed or failed by a call of its own, and
    /// new jobs come only from the lease long-polls: two requests per job,
    /// as servers before release 1.1 (which lack the settle route) need.
    /// A server that refuses the settle route is also answered this way,
    /// one call per job, whatever this says.
    pub fn settle_and_lease(mut self, enabled: bool) -> Self {
        self.config.settle = enabled;
        self
    }

    /// A handle that stops this worker.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Runs `handler` on every job until [`ShutdownHandle::shutdown`] is
    /// called, then shuts down gracefully and returns what it did.
    ///
    /// # Errors
    /// A lease failure that retrying cannot fix ([`Error::Unauthorized`],
    /// [`Error::InvalidRequest`] for a bad queue name or option) stops the
    /// worker (after the graceful shutdown) and is returned. Transient
    /// failures are logged and retried with back-off.
    pub async fn run<T, R, E, F, Fut>(self, handler: F) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Failure> + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, E>> + Send + 'static,
    {
        self.run_until(handler, std::future::pending::<()>()).await
    }

    /// [`Worker::run`] until `signal` completes (or the shutdown handle is
    /// used), e.g. `tokio::signal::ctrl_c()`.
    ///
    /// # Errors
    /// As [`Worker::run`].
    pub async fn run_until<T, R, E, F, Fut, S>(self, handler: F, signal: S) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Failure> + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, E>> + Send + 'static,
        S: Future + Send + 'static,
    {
        let handler = Arc::new(handler);
        let spawn: Spawn<T> = Arc::new(move |job, span| {
            let handler = Arc::clone(&handler);
            tokio::spawn(
                async move {
                    match handler(job).await {
                        Ok(result) => encode_result(&result),
                        Err(e) => Err(e.into()),
                    }
                }
                .instrument(span),
            )
        });
        let shutdown = self.shutdown.clone();
        let watcher = tokio::spawn(async move {
            signal.await;
            shutdown.shutdown();
        });
        let report = drive(self.config, spawn, self.shutdown).await;
        watcher.abort();
        report
    }

    /// [`Worker::run`] with a handler that cannot fail: its future gives the
    /// job's result itself, not a `Result`, so nothing needs naming. (With
    /// [`run`](Worker::run), a handler that only ever returns `Ok(..)` must
    /// say its error type once: `Ok::<_, Failure>(..)`.) A panic still
    /// counts as a failed attempt.
    ///
    /// ```no_run
    /// use queue_client::{Client, Job, Worker};
    ///
    /// # async fn run() -> queue_client::Result<()> {
    /// let client = Client::connect("http://127.0.0.1:7878")?;
    /// let worker = Worker::new(client, "double");
    /// let stop = worker.shutdown_handle(); // stop.shutdown() from elsewhere
    /// worker
    ///     .run_infallible(|job: Job<u32>| async move { job.payload * 2 })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Worker::run`].
    pub async fn run_infallible<T, R, F, Fut>(self, handler: F) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        self.run_infallible_until(handler, std::future::pending::<()>())
            .await
    }

    /// [`Worker::run_infallible`] until `signal` completes (or the shutdown
    /// handle is used); see [`Worker::run_until`].
    ///
    /// # Errors
    /// As [`Worker::run`].
    pub async fn run_infallible_until<T, R, F, Fut, S>(
        self,
        handler: F,
        signal: S,
    ) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        S: Future + Send + 'static,
    {
        self.run_until(
            move |job| {
                let result = handler(job);
                async move { Ok::<R, Failure>(result.await) }
            },
            signal,
        )
        .await
    }

    /// The worker's settings, run through `client` instead of the one it
    /// was made with (the blocking worker uses its thread's client).
    pub(crate) fn into_parts(self, client: Client) -> (WorkerConfig, ShutdownHandle) {
        let mut config = self.config;
        config.client = client;
        (config, self.shutdown)
    }
}

/// How the engine starts a handler on a job, inside the job's span: a task
/// (async handlers) or a blocking-pool thread (closures); either way a
/// panic surfaces as a `JoinError`.
pub(crate) type Spawn<T> = Arc<
    dyn Fn(Job<T>, Span) -> JoinHandle<std::result::Result<Box<RawValue>, Failure>> + Send + Sync,
>;

/// The span a job's handler runs in.
fn job_span(job: &queue_proto::Job) -> Span {
    tracing::info_span!(
        "job",
        job_id = %job.id,
        queue = %job.queue,
        attempt = job.attempts,
        correlation_id = job.correlation_id.as_deref(),
    )
}

pub(crate) fn encode_result<R: Serialize>(
    result: &R,
) -> std::result::Result<Box<RawValue>, Failure> {
    serde_json::value::to_raw_value(result).map_err(|e| {
        Failure::permanent(format!("the handler's result does not encode as JSON: {e}"))
    })
}

/// What became of one leased job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    Released,
    LeaseLost,
    Unreported,
}

/// The most lease requests one worker keeps in flight. One is not enough:
/// slots freed while a lease is on the wire would wait a whole round trip.
/// One per slot would keep many idle long-polls open on the server.
const MAX_POLLERS: usize = 8;

/// The largest concurrency a worker accepts.
const MAX_CONCURRENCY: usize = 10_000;

/// The most settle requests one worker keeps in flight: results that come
/// in while they are on their way wait for the next one, together.
const MAX_SETTLERS: usize = 4;

/// How a handler's run ended: what to tell the server.
#[derive(Debug)]
enum Verdict {
    Complete(Box<RawValue>),
    Fail(Failure),
}

/// What [`run_job`] leaves to do.
enum Done {
    /// The job is settled (or given up): count it.
    Outcome(Outcome),
    /// Settle the job with the next settle request.
    Settle(Verdict),
}

/// A finished job waiting for a settle request, with the slot it holds
/// (given back, or to a job the settle leases, once it is settled and
/// counted) and its span (the settle's log lines about it go there).
struct Finished<T> {
    context: Arc<Context<T>>,
    id: String,
    lease_id: String,
    correlation_id: Option<String>,
    verdict: Verdict,
    permit: OwnedSemaphorePermit,
    span: Span,
}

impl<T> Finished<T> {
    fn held(&self) -> Held<'_> {
        Held {
            id: &self.id,
            lease_id: &self.lease_id,
            correlation_id: self.correlation_id.as_deref(),
        }
    }
}

/// The finished jobs the settlers take from.
type Settles<T> = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Finished<T>>>>;

struct Context<T> {
    config: WorkerConfig,
    spawn: Spawn<T>,
    heartbeat: Duration,
    /// One per job being leased or run: the concurrency limit. A job's task
    /// gives its permit back only once the job is settled and counted.
    permits: Arc<Semaphore>,
    /// Raised by the caller's shutdown or a fatal lease error: lease no more.
    stop: watch::Sender<bool>,
    /// Raised when the shutdown limit passes: release the jobs still running.
    abort: watch::Sender<bool>,
    report: Mutex<WorkerReport>,
    fatal: Mutex<Option<Error>>,
    /// Where finished jobs go to be settled together (when the worker
    /// settles with `/settle`). The settlers end once every holder of the
    /// context is gone (so jobs still running when `run`'s future is
    /// dropped are settled in the background too).
    settles: Option<mpsc::UnboundedSender<Finished<T>>>,
}

impl<T> Context<T> {
    fn record(&self, outcome: Outcome) {
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Outcome::Completed => report.completed += 1,
            Outcome::Failed => report.failed += 1,
            Outcome::Released => report.released += 1,
            Outcome::LeaseLost => report.lease_lost += 1,
            Outcome::Unreported => report.unreported += 1,
        }
    }
}

/// The engine shared by the async and the blocking worker: a few lease
/// pollers share the concurrency permits, and each leased job runs in a task
/// of its own.
pub(crate) async fn drive<T>(
    config: WorkerConfig,
    spawn: Spawn<T>,
    shutdown: ShutdownHandle,
) -> Result<WorkerReport>
where
    T: DeserializeOwned + Send + 'static,
{
    if !(1..=MAX_CONCURRENCY).contains(&config.concurrency) {
        return Err(Error::invalid(format!(
            "worker concurrency must be in 1..={MAX_CONCURRENCY}, got {}",
            config.concurrency
        )));
    }
    if millis(config.poll_wait) > MAX_WAIT_MS {
        return Err(Error::invalid(format!(
            "poll_wait must be at most {MAX_WAIT_MS} ms"
        )));
    }
    let heartbeat = config
        .heartbeat
        .unwrap_or(config.lease / 3)
        .max(Duration::from_millis(1));
    let concurrency = config.concurrency;
    let shutdown_timeout = config.shutdown_timeout;
    let settles = if config.settle {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver: Settles<T> = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..concurrency.min(MAX_SETTLERS) {
            tokio::spawn(settler(Arc::clone(&receiver)));
        }
        Some(sender)
    } else {
        None
    };
    let context = Arc::new(Context {
        config,
        spawn,
        heartbeat,
        permits: Arc::new(Semaphore::new(concurrency)),
        stop: watch::channel(false).0,
        abort: watch::channel(false).0,
        report: Mutex::new(WorkerReport::default()),
        fatal: Mutex::new(None),
        settles,
    });
    let mut pollers = JoinSet::new();
    for _ in 0..concurrency.min(MAX_POLLERS) {
        pollers.spawn(poll(Arc::clone(&context)));
    }
    let mut asked = shutdown.subscribe();
    let mut stopped = context.stop.subscribe();
    tokio::select! {
        _ = asked.wait_for(|stop| *stop) => {
            context.stop.send_replace(true);
        }
        _ = stopped.wait_for(|stop| *stop) => {}
    }
    // Each poller finishes its lease in flight and gives back what it got.
    while pollers.join_next().await.is_some() {}
    // Holding every permit means every job is settled and counted.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let permits = &context.permits;
    if tokio::time::timeout(shutdown_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        context.abort.send_replace(true);
        let _all_settled = permits.acquire_many(all).await;
    }
    let fatal = context
        .fatal
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match fatal {
        Some(e) => Err(e),
        None => Ok(*context
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)),
    }
}

/// One lease poller: waits for free slots, leases that many jobs (waiting up
/// to `poll_wait` on the server) and starts them.
async fn poll<T>(context: Arc<Context<T>>)
where
    T: DeserializeOwned + Send + 'static,
{
    let config = &context.config;
    let mut stop = context.stop.subscribe();
    let mut errors_in_row = 0u32;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            permit = Arc::clone(&context.permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let mut held = vec![first];
        while held.len() < MAX_LEASE_JOBS as usize {
            match Arc::clone(&context.permits).try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        let request = LeaseRequest {
            max_jobs: u32::try_from(held.len()).ok(),
            lease_ms: Some(millis(config.lease)),
            wait_ms: Some(millis(config.poll_wait)),
            worker: config.name.clone(),
        };
        // A shutdown ends the wait at once (never the lease itself in
        // process: a lease granted at that moment is answered, and its jobs
        // are given back below).
        let mut cancelled = context.stop.subscribe();
        let cancel = async move {
            let _stopped = cancelled.wait_for(|stop| *stop).await;
        };
        match config
            .client
            .transport()
            .lease_until(&config.queue, &request, cancel)
            .await
        {
            Ok(jobs) => {
                errors_in_row = 0;
                start_jobs(&context, jobs, held).await;
            }
            Err(e) if e.is_transient() => {
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << errors_in_row.min(6))
                    .min(Duration::from_secs(5));
                errors_in_row += 1;
                tracing::warn!(queue = %config.queue, error = %e, ?pause, "lease failed; retrying");
                drop(held);
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => {
                tracing::error!(queue = %config.queue, error = %e, "lease refused; the worker stops");
                context
                    .fatal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
                context.stop.send_replace(true);
                return;
            }
        }
    }
}

/// Starts `jobs`, each with one of the slots `held` (the rest are given
/// back), or gives them back if the worker is stopping.
async fn start_jobs<T>(
    context: &Arc<Context<T>>,
    jobs: Vec<queue_proto::Job>,
    mut held: Vec<OwnedSemaphorePermit>,
) where
    T: DeserializeOwned + Send + 'static,
{
    let stopping = *context.stop.borrow();
    for job in jobs {
        match held.pop() {
            Some(permit) if !stopping => {
                let context = Arc::clone(context);
                let span = job_span(&job);
                tokio::spawn(
                    async move {
                        let id = job.id.clone();
                        let lease_id = job.lease_id.clone().unwrap_or_default();
                        let correlation_id = job.correlation_id.clone();
                        match run_job(&context, job, Span::current()).await {
                            Done::Outcome(outcome) => {
                                context.record(outcome);
                                drop(permit);
                            }
                            Done::Settle(verdict) => {
                                let finished = Finished {
                                    context: Arc::clone(&context),
                                    id,
                                    lease_id,
                                    correlation_id,
                                    verdict,
                                    permit,
                                    span: Span::current(),
                                };
                                let unsent = match &context.settles {
                                    Some(settles) => settles.send(finished).err().map(|e| e.0),
                                    None => Some(finished),
                                };
                                // No settler (cannot happen while the
                                // context lives): settle alone.
                                if let Some(finished) = unsent {
                                    let Finished {
                                        id,
                                        lease_id,
                                        correlation_id,
                                        verdict,
                                        permit,
                                        ..
                                    } = finished;
                                    let held = Held {
                                        id: &id,
                                        lease_id: &lease_id,
                                        correlation_id: correlation_id.as_deref(),
                                    };
                                    let client = &context.config.client;
                                    let outcome = settle_alone(client, held, verdict).await;
                                    context.record(outcome);
                                    drop(permit);
                                }
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            _ => context.record(give_back(&context.config.client, job).await),
        }
    }
}

/// One settler: takes the finished jobs waiting (at least one; at most a
/// request's worth, without waiting for more) and settles them in one
/// request, until the worker and its jobs are gone.
async fn settler<T>(settles: Settles<T>)
where
    T: DeserializeOwned + Send + 'static,
{
    loop {
        let batch = {
            let mut receiver = settles.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(finished) => batch.push(finished),
                    Err(_) => break,
                }
            }
            batch
        };
        settle_batch(batch).await;
    }
}

/// Settles `batch` in one request that also leases as many jobs as it
/// settles (none once the worker is stopping), counts each job, and
/// starts the leased jobs in the freed slots.
async fn settle_batch<T>(batch: Vec<Finished<T>>)
where
    T: DeserializeOwned + Send + 'static,
{
    let Some(context) = batch.first().map(|f| Arc::clone(&f.context)) else {
        return;
    };
    let config = &context.config;
    let client = &config.client;
    // The request lists completions, then failures; its results come in
    // that order.
    let (mut ordered, fails): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|f| matches!(f.verdict, Verdict::Complete(_)));
    ordered.extend(fails);
    let mut request = SettleRequest::default();
    for finished in &ordered {
        match &finished.verdict {
            Verdict::Complete(result) => request.complete.push(SettleComplete {
                id: finished.id.clone(),
                lease_id: finished.lease_id.clone(),
                result: Some(result.clone()),
            }),
            Verdict::Fail(failure) => request.fail.push(SettleFail {
                id: finished.id.clone(),
                lease_id: finished.lease_id.clone(),
                error: failure.message().to_owned(),
                retry_in_ms: failure.retry_delay().map(millis),
                retryable: failure.is_retryable(),
            }),
        }
    }
    if !*context.stop.borrow() {
        request.lease = Some(LeaseRequest {
            max_jobs: u32::try_from(ordered.len()).ok(),
            lease_ms: Some(millis(config.lease)),
            wait_ms: Some(0),
            worker: config.name.clone(),
        });
    }
    // One job's settle carries its correlation id, as its own call would.
    let request_id = match ordered.as_slice() {
        [one] => one.correlation_id.clone(),
        _ => None,
    };
    let transport = client.transport();
    let first = transport
        .settle(&config.queue, &request, request_id.as_deref())
        .await;
    let (outcomes, jobs) = match first {
        Ok(reply) => {
            let outcomes: Vec<Outcome> = ordered
                .iter()
                .zip(reply.results)
                .map(|(finished, item)| outcome_of(finished, item.outcome()))
                .collect();
            (outcomes, reply.jobs)
        }
        Err(e) if e.is_transient() => {
            // The answer was lost, or never came: try the settlements again
            // (not the lease: jobs it may have leased wait for their lease
            // to expire, as after a crash). An item refused on a retry may
            // have been settled by the first try.
            request.lease = None;
            let retried = client
                .retrying(|_| transport.settle(&config.queue, &request, request_id.as_deref()))
                .await;
            let outcomes = match retried {
                Ok(reply) => {
                    let mut outcomes = Vec::with_capacity(ordered.len());
                    for (finished, item) in ordered.iter().zip(reply.results) {
                        let result = match item.outcome() {
                            Err(Error::LeaseLost { message }) => {
                                landed(client, finished, Error::LeaseLost { message }).await
                            }
                            other => other,
                        };
                        outcomes.push(outcome_of(finished, result));
                    }
                    outcomes
                }
                Err(e) => ordered
                    .iter()
                    .map(|finished| {
                        let _in_job = finished.span.enter();
                        tracing::warn!(error = %e, "could not settle the job; its lease will expire");
                        Outcome::Unreported
                    })
                    .collect(),
            };
            (outcomes, Vec::new())
        }
        Err(e) => {
            // Refused whole (a server without the settle route answers 404
            // or 405): each job by its own call.
            tracing::debug!(error = %e, "settle refused; settling job by job");
            let mut outcomes = Vec::with_capacity(ordered.len());
            for finished in &ordered {
                let verdict = match &finished.verdict {
                    Verdict::Complete(result) => Verdict::Complete(result.clone()),
                    Verdict::Fail(failure) => Verdict::Fail(failure.clone()),
                };
                let outcome = settle_alone(client, finished.held(), verdict)
                    .instrument(finished.span.clone())
                    .await;
                outcomes.push(outcome);
            }
            (outcomes, Vec::new())
        }
    };
    let mut permits = Vec::with_capacity(ordered.len());
    for (finished, outcome) in ordered.into_iter().zip(
        outcomes
            .into_iter()
            .chain(std::iter::repeat(Outcome::Unreported)),
    ) {
        context.record(outcome);
        permits.push(finished.permit);
    }
    start_jobs(&context, jobs, permits).await;
}

/// A settle item refused with `lease_lost` on a retry: success if the job
/// is in a state the first try would have left it in.
async fn landed<T>(client: &Client, finished: &Finished<T>, lost: Error) -> Result<JobState> {
    let landed = |state: JobState| match finished.verdict {
        Verdict::Complete(_) => state == JobState::Completed,
        Verdict::Fail(_) => state != JobState::Leased,
    };
    match client.transport().get::<Brief>(&finished.id, None).await {
        Ok(job) if landed(job.state) => Ok(job.state),
        _ => Err(lost),
    }
}

/// Counts how one settle item went, logging it in the job's span as the
/// job's own call would.
fn outcome_of<T>(finished: &Finished<T>, result: Result<JobState>) -> Outcome {
    let _in_job = finished.span.enter();
    match (&finished.verdict, result) {
        (Verdict::Complete(_), Ok(_)) => Outcome::Completed,
        (Verdict::Fail(failure), Ok(state)) => {
            log_failure(failure, state);
            Outcome::Failed
        }
        (Verdict::Complete(_), Err(Error::LeaseLost { .. })) => {
            tracing::info!("lease lost before completing; the result is not recorded");
            Outcome::LeaseLost
        }
        (Verdict::Fail(_), Err(Error::LeaseLost { .. })) => Outcome::LeaseLost,
        (_, Err(e)) => {
            tracing::warn!(error = %e, "could not settle the job; its lease will expire");
            Outcome::Unreported
        }
    }
}

/// Settles one job by its own call (complete or fail).
async fn settle_alone(client: &Client, held: Held<'_>, verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::Complete(result) => match settle_complete(client, held, Some(result)).await {
            Ok(()) => Outcome::Completed,
            Err(Error::LeaseLost { .. }) => {
                tracing::info!("lease lost before completing; the result is not recorded");
                Outcome::LeaseLost
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not complete the job; it will run again");
                Outcome::Unreported
            }
        },
        Verdict::Fail(failure) => report_failure(client, held, &failure).await,
    }
}

/// Releases a job leased but not started (the worker is stopping).
async fn give_back(client: &Client, job: queue_proto::Job) -> Outcome {
    let lease_id = job.lease_id.unwrap_or_default();
    let held = Held {
        id: &job.id,
        lease_id: &lease_id,
        correlation_id: job.correlation_id.as_deref(),
    };
    match settle_release(client, held).await {
        Ok(()) => Outcome::Released,
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "could not release an unstarted job");
            Outcome::Unreported
        }
    }
}

/// Runs one job: decode, handler (in `span`), heartbeats and progress
/// reports, then settle (or leave the settling to the settlers).
async fn run_job<T>(context: &Context<T>, job: queue_proto::Job, span: Span) -> Done
where
    T: DeserializeOwned + Send + 'static,
{
    let client = &context.config.client;
    let mut abort = context.abort.subscribe();
    let id = job.id.clone();
    let lease_id = job.lease_id.clone().unwrap_or_default();
    let correlation_id = job.correlation_id.clone();
    let held = Held {
        id: &id,
        lease_id: &lease_id,
        correlation_id: correlation_id.as_deref(),
    };
    let job = match Job::<T>::from_wire(job) {
        Ok(job) => job,
        Err(e) => {
            let failure = Failure::permanent(e.to_string());
            return finish(context, held, Verdict::Fail(failure)).await;
        }
    };
    let (lost_sender, lost) = watch::channel(false);
    let progress = Arc::new(ProgressSlot::default());
    let link = WorkerLink {
        lease_lost: lost,
        progress: Arc::clone(&progress),
    };
    let mut handler = (context.spawn)(job.with_worker(link), span);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + context.heartbeat,
        context.heartbeat,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_lost = false;
    let joined = loop {
        let report = tokio::select! {
            joined = &mut handler => break joined,
            _ = ticker.tick(), if !lease_lost => None,
            () = progress.reported.notified(), if !lease_lost => match progress.take() {
                Some(report) => Some(report),
                None => continue,
            },
            true = raised(&mut abort) => {
                // Past the shutdown limit. An async handler is dropped at its
                // next await; a blocking one cannot be stopped and runs on,
                // its result discarded.
                handler.abort();
                if lease_lost {
                    return Done::Outcome(Outcome::LeaseLost);
                }
                return Done::Outcome(match settle_release(client, held).await {
                    Ok(()) => Outcome::Released,
                    Err(Error::LeaseLost { .. }) => Outcome::LeaseLost,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release a job at shutdown");
                        Outcome::Unreported
                    }
                });
            }
        };
        lease_lost = !heartbeat(client, held, report).await;
        if lease_lost {
            lost_sender.send_replace(true);
        }
        ticker.reset();
    };
    // Progress reported just before the handler returned goes out before
    // the outcome, so that its event comes first.
    if !lease_lost {
        if let Some(report) = progress.take() {
            lease_lost = !heartbeat(client, held, Some(report)).await;
        }
    }
    if lease_lost {
        return Done::Outcome(Outcome::LeaseLost);
    }
    let verdict = match joined {
        Ok(Ok(result)) => Verdict::Complete(result),
        Ok(Err(failure)) => Verdict::Fail(failure),
        Err(join_error) => {
            let message = if join_error.is_panic() {
                format!(
                    "handler panicked: {}",
                    panic_message(join_error.into_panic())
                )
            } else {
                "handler was cancelled".to_owned()
            };
            Verdict::Fail(Failure::new(message))
        }
    };
    finish(context, held, verdict).await
}

/// A finished job: left to the settlers, or settled by its own call.
async fn finish<T>(context: &Context<T>, held: Held<'_>, verdict: Verdict) -> Done {
    if context.settles.is_some() {
        return Done::Settle(verdict);
    }
    Done::Outcome(settle_alone(&context.config.client, held, verdict).await)
}

/// Sends one heartbeat, with `progress` if given. Returns whether the lease
/// is still held: a failure that is not about the lease is logged and left
/// to the next heartbeat.
async fn heartbeat(client: &Client, held: Held<'_>, progress: Option<Box<RawValue>>) -> bool {
    let request = HeartbeatRequest {
        lease_id: held.lease_id.to_owned(),
        lease_ms: None,
        progress,
    };
    match client
        .transport()
        .heartbeat(held.id, &request, held.correlation_id)
        .await
    {
        Ok(_) => true,
        Err(Error::LeaseLost { .. } | Error::NotFound { .. }) => {
            tracing::info!("lease lost (cancelled or expired); its result will not be recorded");
            false
        }
        Err(e) => {
            if request.progress.is_some() {
                tracing::warn!(error = %e, "could not report progress; the next report may");
            } else {
                tracing::warn!(error = %e, "heartbeat failed; trying again at the next one");
            }
            true
        }
    }
}

async fn report_failure(client: &Client, held: Held<'_>, failure: &Failure) -> Outcome {
    match settle_fail(client, held, failure).await {
        Ok(state) => {
            log_failure(failure, state);
            Outcome::Failed
        }
        Err(Error::LeaseLost { .. }) => Outcome::LeaseLost,
        Err(e) => {
            tracing::warn!(error = %e, "could not report a failure; the lease will expire");
            Outcome::Unreported
        }
    }
}

/// The log line of a failure the server recorded.
fn log_failure(failure: &Failure, state: JobState) {
    if state == JobState::Dead {
        tracing::warn!(error = %failure, "job failed for good (dead letter)");
    } else {
        tracing::info!(error = %failure, "job failed; it will be retried");
    }
}

/// Whether the flag was raised (`false` if its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) -> bool {
    flag.wait_for(|raised| *raised).await.is_ok()
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(a non-string panic payload)".to_owned(),
        },
    }
}
