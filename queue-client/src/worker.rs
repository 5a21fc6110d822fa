//! The worker runtime: lease, run a handler, heartbeat, settle, shut down.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use queue_proto::limits::{MAX_LEASE_JOBS, MAX_WAIT_MS};
use queue_proto::{HeartbeatRequest, JobState, LeaseRequest, RawValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, Span};

use crate::job::{ProgressSlot, WorkerLink};
use crate::lease::{Held, settle_complete, settle_fail, settle_release};
use crate::options::millis;
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
/// The handler gets the job's [`correlation_id`](Job::correlation_id) and
/// [`headers`](Job::headers), and may report progress with
/// [`Job::progress`]. It runs inside a `tracing` span named `job` with the
/// fields `job_id`, `queue`, `attempt` and `correlation_id`, so its log
/// lines (and the worker's own about the job) carry them. Every call the
/// worker makes about the job (heartbeat, complete, fail, release) sends
/// the correlation id as `X-Request-Id`, so the server's log lines of the
/// job's whole life share it.
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
    let context = Arc::new(Context {
        config,
        spawn,
        heartbeat,
        permits: Arc::new(Semaphore::new(concurrency)),
        stop: watch::channel(false).0,
        abort: watch::channel(false).0,
        report: Mutex::new(WorkerReport::default()),
        fatal: Mutex::new(None),
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
                let stopping = *stop.borrow();
                for job in jobs {
                    match held.pop() {
                        Some(permit) if !stopping => {
                            let context = Arc::clone(&context);
                            let span = job_span(&job);
                            tokio::spawn(
                                async move {
                                    let outcome = run_job(&context, job, Span::current()).await;
                                    context.record(outcome);
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                        _ => context.record(give_back(&config.client, job).await),
                    }
                }
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
/// reports, then settle.
async fn run_job<T>(context: &Context<T>, job: queue_proto::Job, span: Span) -> Outcome
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
            return report_failure(client, held, &failure).await;
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
                    return Outcome::LeaseLost;
                }
                return match settle_release(client, held).await {
                    Ok(()) => Outcome::Released,
                    Err(Error::LeaseLost { .. }) => Outcome::LeaseLost,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release a job at shutdown");
                        Outcome::Unreported
                    }
                };
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
        return Outcome::LeaseLost;
    }
    match joined {
        Ok(Ok(result)) => match settle_complete(client, held, Some(result)).await {
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
        Ok(Err(failure)) => report_failure(client, held, &failure).await,
        Err(join_error) => {
            let message = if join_error.is_panic() {
                format!(
                    "handler panicked: {}",
                    panic_message(join_error.into_panic())
                )
            } else {
                "handler was cancelled".to_owned()
            };
            report_failure(client, held, &Failure::new(message)).await
        }
    }
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
            if state == JobState::Dead {
                tracing::warn!(error = %failure, "job failed for good (dead letter)");
            } else {
                tracing::info!(error = %failure, "job failed; it will be retried");
            }
            Outcome::Failed
        }
        Err(Error::LeaseLost { .. }) => Outcome::LeaseLost,
        Err(e) => {
            tracing::warn!(error = %e, "could not report a failure; the lease will expire");
            Outcome::Unreported
        }
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
