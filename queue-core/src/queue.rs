use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use queue_proto::limits::{MAX_BATCH, MAX_LEASE_JOBS};
use queue_proto::{JobState, QueueStats, validate_queue_name};
use tokio::sync::broadcast;

use crate::counters::AtomicCounters;
use crate::rules::{self, Jitter, Refusal};
use crate::signal::Signals;
use crate::storage::{Change, MAX_PAYLOAD_LIMIT, Store, TimerKind};
use crate::timers::{self, TimerWake};
use crate::{
    Clock, Config, DeadPage, Enqueued, Error, Event, Failure, Job, JobId, LeaseId, LeaseOptions,
    Leased, NewJob, Result, Subscription, Verification,
};
use crate::{Counters, Transition};

/// Timer entries handled per batch.
const TIMER_BATCH: usize = 256;
/// Dead letters requeued or purged per batch.
const DEAD_BATCH: usize = 512;

/// A durable job queue stored in one data directory.
///
/// Cheap to clone (clones share one handle) and safe to share across threads
/// and tasks. The background threads stop, and a last flush runs, when the
/// last clone is dropped.
///
/// Every method that changes state returns after the change is on disk under
/// [`Durability::Sync`](crate::Durability::Sync) (the default); concurrent callers share flushes. Under
/// [`Durability::Periodic`](crate::Durability::Periodic) it returns once the change is applied.
#[derive(Clone)]
pub struct Queue {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.timer.stop();
        self.shared.store.stop_committer();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        if let Err(e) = self.shared.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// What [`Queue::run_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueReport {
    /// Scheduled jobs that became ready.
    pub promoted: u64,
    /// Leases that expired.
    pub expired: u64,
    /// Finished jobs removed after their retention.
    pub removed: u64,
    /// The earliest deadline still stored (unix ms), if any.
    pub next_due: Option<u64>,
}

/// A change that is applied (and, under [`Durability::Sync`](crate::Durability::Sync), durable),
/// with what to announce.
struct Pending<T> {
    value: T,
    announcements: Vec<Announcement>,
}

/// One applied change, to count and (if the state changed) to publish.
struct Announcement {
    event: Event,
    state_changed: bool,
    run_ms: Option<u64>,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    config: Config,
    rng: Mutex<u64>,
    queue_signals: Signals<String>,
    job_signals: Signals<JobId>,
    events: broadcast::Sender<Event>,
    counters: AtomicCounters,
    pub(crate) timer: TimerWake,
}

fn check_queue(queue: &str) -> Result<()> {
    validate_queue_name(queue).map_err(|e| Error::invalid("queue", e.to_string()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Queue {
    /// Opens (or creates) the queue stored at `path` with the default
    /// [`Config`].
    ///
    /// # Errors
    /// [`Error::Storage`] if sled cannot open the directory (for example
    /// because another process has it open; a handle of this process dropped
    /// a moment ago is waited for, up to five seconds), [`Error::Corrupt`] if
    /// it holds data of an incompatible format.
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Queue> {
        Queue::open_with(Config::new(path))
    }

    /// Opens (or creates) the queue described by `config`.
    ///
    /// Nothing needs recovering: every deadline is stored, so leases that
    /// expired while the process was down expire, and due scheduled jobs are
    /// promoted, as soon as the timer runs.
    ///
    /// # Errors
    /// As [`Queue::open`]; [`Error::InvalidArgument`] for a zero
    /// `event_capacity`.
    pub fn open_with(config: Config) -> Result<Queue> {
        if config.event_capacity == 0 {
            return Err(Error::invalid("event_capacity", "must be at least 1"));
        }
        if config.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(Error::invalid(
                "max_payload",
                format!(
                    "{} exceeds the limit of {MAX_PAYLOAD_LIMIT} bytes",
                    config.max_payload
                ),
            ));
        }
        let store = Store::open(&config)?;
        let seed = config.seed.unwrap_or_else(|| config.clock.now_ms());
        let (events, _) = broadcast::channel(config.event_capacity);
        let background = config.background_timers;
        let shared = Arc::new(Shared {
            store,
            config,
            rng: Mutex::new(seed),
            queue_signals: Signals::new(),
            job_signals: Signals::new(),
            events,
            counters: AtomicCounters::default(),
            timer: TimerWake::new(),
        });
        let mut threads = Vec::new();
        let committer = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("queue-core-commit".into())
                .spawn(move || committer.store.run_committer())
                .map_err(|e| Error::Storage(sled::Error::Io(e)))?,
        );
        if background {
            threads.push(
                std::thread::Builder::new()
                    .name("queue-core-timer".into())
                    .spawn(timers::start(&shared))
                    .map_err(|e| Error::Storage(sled::Error::Io(e)))?,
            );
        }
        Ok(Queue {
            handle: Arc::new(Handle {
                shared,
                threads: Mutex::new(threads),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Enqueues one job on `queue`.
    ///
    /// Durable on return. With an idempotency key that matches a job still
    /// stored in the same queue, nothing is created and the stored job comes
    /// back with `replayed = true`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad queue name or out-of-range
    /// options, [`Error::TooLarge`] for an oversized payload (nothing is
    /// stored in either case); [`Error::Storage`].
    pub fn enqueue(&self, queue: &str, job: NewJob) -> Result<Enqueued> {
        let pending = blocking(
            self.shared()
                .enqueue(Via::Blocking, queue, vec![job], false),
        )?;
        let mut jobs = self.shared().settle(pending)?;
        jobs.pop()
            .ok_or_else(|| Error::Corrupt("enqueue produced no job".into()))
    }

    /// Enqueues 1..=1000 jobs on `queue`, all or nothing, in one atomic step
    /// and one flush. The answer is in input order; an item whose
    /// idempotency key matches a stored job (or an earlier item of the same
    /// batch) is a replay.
    ///
    /// # Errors
    /// As [`Queue::enqueue`]; a bad item refuses the whole batch, and the
    /// message names its index.
    pub fn enqueue_batch(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let pending = blocking(self.shared().enqueue(Via::Blocking, queue, jobs, true))?;
        self.shared().settle(pending)
    }

    /// [`Queue::enqueue`] for async callers: awaits the commit without
    /// blocking the runtime.
    ///
    /// # Errors
    /// As [`Queue::enqueue`].
    pub async fn enqueue_async(&self, queue: &str, job: NewJob) -> Result<Enqueued> {
        let pending = self
            .shared()
            .enqueue(Via::Async, queue, vec![job], false)
            .await?;
        let mut jobs = self.shared().settle(pending)?;
        jobs.pop()
            .ok_or_else(|| Error::Corrupt("enqueue produced no job".into()))
    }

    /// [`Queue::enqueue_batch`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::enqueue_batch`].
    pub async fn enqueue_batch_async(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>> {
        let pending = self.shared().enqueue(Via::Async, queue, jobs, true).await?;
        self.shared().settle(pending)
    }

    /// Leases up to `opts.max_jobs` ready jobs of `queue`: highest priority
    /// first, then oldest `run_at`, then enqueue order. Returns at once,
    /// possibly with no job; a paused queue leases nothing. Concurrent
    /// leasers never get the same job, and a lease never comes back empty
    /// while a job it could take is ready.
    ///
    /// Each job is `leased` until `now + lease_ms` under a fresh lease id,
    /// and its `attempts` counts this lease. Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or options; [`Error::Storage`].
    pub fn lease(&self, queue: &str, opts: &LeaseOptions) -> Result<Vec<Leased>> {
        blocking(self.lease_via(Via::Blocking, queue, opts))
    }

    /// [`Queue::lease`] for async callers: awaits the commit without
    /// blocking the runtime.
    ///
    /// # Errors
    /// As [`Queue::lease`].
    pub async fn lease_async(&self, queue: &str, opts: &LeaseOptions) -> Result<Vec<Leased>> {
        self.lease_via(Via::Async, queue, opts).await
    }

    async fn lease_via(&self, via: Via, queue: &str, opts: &LeaseOptions) -> Result<Vec<Leased>> {
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let pending = self.shared().lease(via, queue, opts).await?;
        self.shared().settle(pending)
    }

    /// Like [`Queue::lease`], but when no job is ready waits up to `timeout`
    /// for one (woken by enqueues, promotions, releases, requeues and
    /// resumes; no polling). Returns an empty list on timeout.
    ///
    /// Holds no thread while waiting. Needs a tokio runtime with the time
    /// driver enabled (as any `tokio::time` use does).
    ///
    /// # Errors
    /// As [`Queue::lease`].
    pub async fn lease_wait(
        &self,
        queue: &str,
        opts: &LeaseOptions,
        timeout: Duration,
    ) -> Result<Vec<Leased>> {
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut registration = self.shared().queue_signals.register(queue.to_owned());
        loop {
            let leased = self.lease_async(queue, opts).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            if tokio::time::timeout_at(deadline, registration.changed())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    /// The blocking form of [`Queue::lease_wait`]: parks the calling thread
    /// until a job is ready or `timeout` passes.
    ///
    /// # Errors
    /// As [`Queue::lease`].
    pub fn lease_blocking(
        &self,
        queue: &str,
        opts: &LeaseOptions,
        timeout: Duration,
    ) -> Result<Vec<Leased>> {
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let deadline = Instant::now() + timeout;
        let mut registration = self.shared().queue_signals.register(queue.to_owned());
        loop {
            let leased = self.lease(queue, opts)?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            if !registration.wait_until(deadline) {
                return Ok(Vec::new());
            }
        }
    }

    /// Extends the lease `lease` of job `id` to now + `lease_ms` (default:
    /// the lease's own length). Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] if `lease` is not the job's live lease (expired,
    /// reassigned, cancelled, finished): this is how a worker learns its job
    /// was cancelled. [`Error::NotFound`], [`Error::InvalidArgument`] for an
    /// out-of-range `lease_ms`, [`Error::Storage`].
    pub fn heartbeat(&self, id: JobId, lease: LeaseId, lease_ms: Option<u64>) -> Result<Job> {
        blocking(self.heartbeat_via(Via::Blocking, id, lease, lease_ms))
    }

    /// [`Queue::heartbeat`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::heartbeat`].
    pub async fn heartbeat_async(
        &self,
        id: JobId,
        lease: LeaseId,
        lease_ms: Option<u64>,
    ) -> Result<Job> {
        self.heartbeat_via(Via::Async, id, lease, lease_ms).await
    }

    async fn heartbeat_via(
        &self,
        via: Via,
        id: JobId,
        lease: LeaseId,
        lease_ms: Option<u64>,
    ) -> Result<Job> {
        if let Some(ms) = lease_ms {
            rules::lease::validate_lease_ms(ms)?;
        }
        self.shared()
            .transition(via, id, Transition::Heartbeat, |job, now| {
                rules::heartbeat::heartbeat(job, lease, lease_ms, now)
            })
            .await
    }

    /// Completes job `id` held under `lease`, keeping `result`. Final: the
    /// job is never leased again. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] (nothing changes), [`Error::NotFound`],
    /// [`Error::TooLarge`] for an oversized result, [`Error::Storage`].
    pub fn complete(&self, id: JobId, lease: LeaseId, result: Option<Vec<u8>>) -> Result<Job> {
        blocking(self.complete_via(Via::Blocking, id, lease, result))
    }

    /// [`Queue::complete`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::complete`].
    pub async fn complete_async(
        &self,
        id: JobId,
        lease: LeaseId,
        result: Option<Vec<u8>>,
    ) -> Result<Job> {
        self.complete_via(Via::Async, id, lease, result).await
    }

    async fn complete_via(
        &self,
        via: Via,
        id: JobId,
        lease: LeaseId,
        result: Option<Vec<u8>>,
    ) -> Result<Job> {
        let limit = self.shared().config.max_payload;
        if let Some(size) = result.as_ref().map(Vec::len).filter(|size| *size > limit) {
            return Err(Error::TooLarge {
                what: "result",
                size,
                limit,
            });
        }
        self.shared()
            .transition(via, id, Transition::Complete, |job, now| {
                rules::complete::complete(job, lease, result.clone(), now)
            })
            .await
    }

    /// Reports a failed attempt of job `id` held under `lease`. The job is
    /// scheduled for its next attempt (at now + `retry_in_ms`, or the
    /// back-off `backoff_ms * 2^(attempts-1)` ±20 %, capped at one hour), or
    /// `dead` when the failure is permanent or the stored attempts are used
    /// up. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] (nothing changes), [`Error::NotFound`],
    /// [`Error::InvalidArgument`] for an out-of-range retry delay,
    /// [`Error::Storage`].
    pub fn fail(&self, id: JobId, lease: LeaseId, failure: &Failure) -> Result<Job> {
        blocking(self.fail_via(Via::Blocking, id, lease, failure))
    }

    /// [`Queue::fail`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::fail`].
    pub async fn fail_async(&self, id: JobId, lease: LeaseId, failure: &Failure) -> Result<Job> {
        self.fail_via(Via::Async, id, lease, failure).await
    }

    async fn fail_via(
        &self,
        via: Via,
        id: JobId,
        lease: LeaseId,
        failure: &Failure,
    ) -> Result<Job> {
        rules::fail::validate(failure)?;
        let jitter = self.shared().jitter();
        self.shared()
            .transition(via, id, Transition::Fail, |job, now| {
                rules::fail::fail(job, lease, failure, jitter, now)
            })
            .await
    }

    /// Gives job `id` back: it is `ready` at once, in its old place, and the
    /// attempt does not count. For a worker that shuts down before starting
    /// the job. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] (nothing changes), [`Error::NotFound`],
    /// [`Error::Storage`].
    pub fn release(&self, id: JobId, lease: LeaseId) -> Result<Job> {
        blocking(self.release_via(Via::Blocking, id, lease))
    }

    /// [`Queue::release`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::release`].
    pub async fn release_async(&self, id: JobId, lease: LeaseId) -> Result<Job> {
        self.release_via(Via::Async, id, lease).await
    }

    async fn release_via(&self, via: Via, id: JobId, lease: LeaseId) -> Result<Job> {
        self.shared()
            .transition(via, id, Transition::Release, |job, now| {
                rules::release::release(job, lease, now)
            })
            .await
    }

    /// Cancels job `id` (`scheduled`, `ready` or `leased`); a held lease is
    /// revoked, so its holder's next heartbeat or completion gets
    /// [`Error::LeaseLost`]. Durable on return.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the job is already terminal,
    /// [`Error::NotFound`], [`Error::Storage`].
    pub fn cancel(&self, id: JobId) -> Result<Job> {
        blocking(self.shared().transition(
            Via::Blocking,
            id,
            Transition::Cancel,
            rules::cancel::cancel,
        ))
    }

    /// [`Queue::cancel`] for async callers.
    ///
    /// # Errors
    /// As [`Queue::cancel`].
    pub async fn cancel_async(&self, id: JobId) -> Result<Job> {
        self.shared()
            .transition(Via::Async, id, Transition::Cancel, rules::cancel::cancel)
            .await
    }

    /// The job `id`, or `None` if no such job is stored.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn get(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.shared().store.load(id)?.map(|(_, job)| job))
    }

    /// Waits up to `timeout` for job `id` to reach a terminal state
    /// (`completed`, `dead` or `cancelled`) and returns it as it is then,
    /// terminal or not. Holds no thread while waiting; needs a tokio runtime
    /// with the time driver.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such job is stored; [`Error::Storage`].
    pub async fn wait_terminal(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let shared = self.shared();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut registration = shared.job_signals.register(id);
        loop {
            let job = self.get(id)?.ok_or(Error::NotFound { id })?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            if tokio::time::timeout_at(deadline, registration.changed())
                .await
                .is_err()
            {
                return self.get(id)?.ok_or(Error::NotFound { id });
            }
        }
    }

    /// The blocking form of [`Queue::wait_terminal`].
    ///
    /// # Errors
    /// As [`Queue::wait_terminal`].
    pub fn wait_terminal_blocking(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let shared = self.shared();
        let deadline = Instant::now() + timeout;
        let mut registration = shared.job_signals.register(id);
        loop {
            let job = self.get(id)?.ok_or(Error::NotFound { id })?;
            if job.state.is_terminal() || !registration.wait_until(deadline) {
                return Ok(job);
            }
        }
    }

    /// Counts of `queue` by state, whether it is paused, and the age of its
    /// oldest ready job. An unknown queue reports zeros.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub fn stats(&self, queue: &str) -> Result<QueueStats> {
        check_queue(queue)?;
        self.shared().stats(queue)
    }

    /// [`Queue::stats`] of every queue that has stored jobs or is paused,
    /// by name.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        let shared = self.shared();
        shared
            .store
            .queue_names()?
            .iter()
            .map(|name| shared.stats(name))
            .collect()
    }

    /// Stops leasing from `queue` (enqueues still work). Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub fn pause(&self, queue: &str) -> Result<QueueStats> {
        self.set_paused(queue, true)
    }

    /// Resumes leasing from `queue` and wakes its waiting leasers. Durable
    /// on return.
    ///
    /// # Errors
    /// As [`Queue::pause`].
    pub fn resume(&self, queue: &str) -> Result<QueueStats> {
        self.set_paused(queue, false)
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        check_queue(queue)?;
        let shared = self.shared();
        shared
            .store
            .transact({
                let queue = queue.to_owned();
                move |tx| tx.set_paused(&queue, paused)
            })?
            .ok_or_else(|| Error::Corrupt("pause transaction went stale".into()))?;
        shared.settle(Pending {
            value: (),
            announcements: Vec::new(),
        })?;
        if !paused {
            shared.queue_signals.bump(&queue.to_owned());
        }
        shared.stats(queue)
    }

    /// A page of the dead letters of `queue`, oldest first: up to `limit`
    /// (1..=1000) jobs after the id `after`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or limit; [`Error::Storage`].
    pub fn dead_letters(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<DeadPage> {
        check_queue(queue)?;
        if !(1..=MAX_BATCH).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1..={MAX_BATCH}"),
            ));
        }
        let store = &self.shared().store;
        let mut ids = store.dead_ids(queue, after, limit + 1)?;
        let next = (ids.len() > limit).then(|| ids[limit - 1]);
        ids.truncate(limit);
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            // A job removed between the scan and the load is simply gone.
            if let Some((_, job)) = store.load(id)? {
                jobs.push(job);
            }
        }
        Ok(DeadPage { jobs, next })
    }

    /// Requeues dead jobs of `queue`: those in `ids` (at most 1000; ids that
    /// are not dead jobs of this queue are skipped), or all of them with
    /// `None`. They become `ready` at once with `attempts` 0. Returns how many
    /// were requeued. Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or too many ids;
    /// [`Error::Storage`].
    pub fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        check_queue(queue)?;
        self.shared()
            .on_dead(queue, ids, Transition::Requeue, |job, now| {
                rules::requeue::requeue(job, now).map(Some)
            })
    }

    /// Deletes every dead job of `queue`. Returns how many. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub fn purge_dead(&self, queue: &str) -> Result<u64> {
        check_queue(queue)?;
        self.shared()
            .on_dead(queue, None, Transition::Remove, |job, _| {
                if job.state == JobState::Dead {
                    Ok(None)
                } else {
                    Err(Refusal::Conflict(job.state))
                }
            })
    }

    /// A stream of state changes (enqueue, lease, complete, fail, expiry,
    /// release, cancel, promotion, requeue), each sent after it is durable.
    /// A subscriber that falls more than `event_capacity` events behind skips
    /// ahead and is told how many it missed; it never slows writers.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.shared().events.subscribe())
    }

    /// Totals of transitions since this handle was opened (enqueued, leased,
    /// completed, failed, dead, expired, …) and the run-time histogram of
    /// completions, for metrics.
    pub fn counters(&self) -> Counters {
        self.shared().counters.snapshot()
    }

    /// Runs the timers now: promotes due scheduled jobs, expires due leases,
    /// removes jobs past retention. The background thread does this by
    /// itself; this is for tests that step a manual clock and for tools.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn run_due(&self) -> Result<DueReport> {
        self.shared().run_due()
    }

    /// Flushes everything to disk (useful under [`Durability::Periodic`](crate::Durability::Periodic)).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn flush(&self) -> Result<()> {
        self.shared().store.flush()
    }

    /// Checks the whole store: every index entry, timer entry and count is
    /// recomputed from the job records and compared with what is stored, and
    /// the record invariants are checked. Reads everything: a tool for tests,
    /// crash recovery checks and operators, not for hot paths.
    ///
    /// # Errors
    /// [`Error::Storage`]; damage is reported in the result, not as an error.
    pub fn verify(&self) -> Result<Verification> {
        self.shared().store.verify()
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.shared().config.path)
            .finish_non_exhaustive()
    }
}

/// How an operation waits for its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The calling thread waits (and may lead the batch).
    Blocking,
    /// The calling task awaits; the committer thread leads.
    Async,
}

/// Runs an operation future taken [`Via::Blocking`]: such a future never
/// suspends (its commit is a blocking call), so one poll completes it.
fn blocking<T>(operation: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut operation = std::pin::pin!(operation);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match operation.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(outcome) => outcome,
        std::task::Poll::Pending => Err(Error::Corrupt(
            "a blocking operation suspended; this is a bug".into(),
        )),
    }
}

impl Shared {
    /// Commits `f` in the next batch, waiting as `via` says.
    async fn commit<R, F>(&self, via: Via, f: F) -> Result<Option<R>>
    where
        F: Fn(&crate::storage::Tx<'_>) -> crate::storage::TxResult<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        match via {
            Via::Blocking => self.store.transact(f),
            Via::Async => self.store.transact_async(f).await,
        }
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.config.clock.as_ref()
    }

    fn now(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// The next jitter factor of the seeded generator (splitmix64).
    fn jitter(&self) -> Jitter {
        let mut state = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Jitter::from_random(z ^ (z >> 31))
    }

    /// Packages applied changes: wakes the timer
    /// for new deadlines and prepares the announcements.
    fn pending<'c, T>(
        &self,
        value: T,
        transition: Transition,
        applied: impl IntoIterator<Item = &'c Change>,
    ) -> Pending<T> {
        let mut announcements = Vec::new();
        for change in applied {
            let old = change.old_job();
            let Some(job) = change.new_job().or(old) else {
                continue;
            };
            let new_state = change.new_job().map(|job| job.state);
            match (new_state, job.lease_expires_at()) {
                (Some(JobState::Scheduled), _) => self.timer.deadline_added(job.run_at),
                (Some(JobState::Leased), Some(at)) => self.timer.deadline_added(at),
                _ => {}
            }
            let run_ms = match (transition, old.and_then(|old| old.lease.as_ref())) {
                (Transition::Complete, Some(lease)) => {
                    Some(job.updated_at.saturating_sub(lease.leased_at))
                }
                _ => None,
            };
            announcements.push(Announcement {
                event: Event::of(job, transition),
                state_changed: new_state.is_some() && old.map(|old| old.state) != new_state,
                run_ms,
            });
        }
        Pending {
            value,
            announcements,
        }
    }

    /// Announces `pending` (its changes are already durable: the store's
    /// batch is flushed before it returns under `Sync`).
    fn settle<T>(&self, pending: Pending<T>) -> Result<T> {
        self.publish(pending.announcements);
        Ok(pending.value)
    }

    fn publish(&self, announcements: Vec<Announcement>) {
        for Announcement {
            event,
            state_changed,
            run_ms,
        } in announcements
        {
            let new_state = state_changed.then_some(event.state);
            self.counters.record(event.transition, new_state, run_ms);
            if !state_changed {
                continue;
            }
            tracing::debug!(job = %event.id, queue = %event.queue, state = %event.state,
                attempts = event.attempts, transition = event.transition.as_str(),
                "job state changed");
            if event.state == JobState::Ready {
                self.queue_signals.bump(&event.queue);
            }
            if event.state.is_terminal() {
                self.job_signals.bump(&event.id);
            }
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }

    async fn enqueue(
        &self,
        via: Via,
        queue: &str,
        specs: Vec<NewJob>,
        batch: bool,
    ) -> Result<Pending<Vec<Enqueued>>> {
        check_queue(queue)?;
        if batch && !(1..=MAX_BATCH).contains(&specs.len()) {
            return Err(Error::invalid(
                "jobs",
                format!("a batch holds 1..={MAX_BATCH} jobs, got {}", specs.len()),
            ));
        }
        let now = self.now();
        for (i, spec) in specs.iter().enumerate() {
            rules::enqueue::validate(spec, now, self.config.max_payload).map_err(|e| match e {
                Error::InvalidArgument { field, message } if batch => Error::InvalidArgument {
                    field,
                    message: format!("jobs[{i}]: {message}"),
                },
                other => other,
            })?;
        }
        let mut changes = Vec::with_capacity(specs.len());
        for spec in &specs {
            let id = JobId::from_u64(self.store.generate_id()?);
            let job = rules::enqueue::new_job(id, queue, spec, now);
            changes.push(Change::new(None, None, Some(job))?);
        }
        let changes = Arc::new(changes);
        let keys: Vec<Option<String>> = specs.into_iter().map(|s| s.idempotency_key).collect();
        let in_tx = Arc::clone(&changes);
        let name = queue.to_owned();
        let replays = self
            .commit(via, move |tx| {
                let (changes, queue) = (&in_tx, &name);
                let mut replays = Vec::with_capacity(changes.len());
                for (change, key) in changes.iter().zip(&keys) {
                    if let Some(key) = key {
                        if let Some(existing) = tx.idempotent(queue, key)? {
                            let stored = tx.load(existing)?.map(|(_, job)| job);
                            // An item replaying an earlier item of this batch
                            // reads that item's record, written just above.
                            replays.push(Some(stored.ok_or_else(|| {
                                crate::storage::TxError::Abort(
                                    crate::storage::Abort::Failed(Error::Corrupt(format!(
                                        "idempotency key of queue {queue} points at missing job {existing}"
                                    ))),
                                )
                            })?));
                            continue;
                        }
                    }
                    tx.apply_or_abort(change)?;
                    replays.push(None);
                }
                Ok(replays)
            })
            .await?
            .ok_or_else(|| Error::Corrupt("a fresh job id is already in use".into()))?;
        let applied: Vec<&Change> = changes
            .iter()
            .zip(&replays)
            .filter(|(_, replay)| replay.is_none())
            .map(|(change, _)| change)
            .collect();
        let mut pending = self.pending(Vec::new(), Transition::Enqueue, applied);
        pending.value = changes
            .iter()
            .zip(replays)
            .map(|(change, replay)| match replay {
                Some(job) => Ok(Enqueued {
                    job,
                    replayed: true,
                }),
                None => change
                    .new_job()
                    .cloned()
                    .map(|job| Enqueued {
                        job,
                        replayed: false,
                    })
                    .ok_or_else(|| Error::Corrupt("enqueue change without a job".into())),
            })
            .collect::<Result<_>>()?;
        Ok(pending)
    }

    async fn lease(
        &self,
        via: Via,
        queue: &str,
        opts: &LeaseOptions,
    ) -> Result<Pending<Vec<Leased>>> {
        let want = usize::try_from(opts.max_jobs.min(MAX_LEASE_JOBS)).unwrap_or(1);
        let now = self.now();
        let (name, opts) = (queue.to_owned(), opts.clone());
        // The scan runs inside the batch, where writes are serialized: ready
        // jobs taken by earlier operations of the batch are skipped, so a
        // lease never comes back empty while a job it could take is ready.
        let leased = self
            .commit(via, move |tx| {
                let mut taken = Vec::new();
                if tx.paused(&name)? {
                    return Ok(taken);
                }
                for id in tx.ready_jobs(&name) {
                    if taken.len() >= want {
                        break;
                    }
                    let Some((bytes, job)) = tx.load(id?)? else {
                        continue;
                    };
                    let lease_id = LeaseId::from_u64(tx.generate_id()?);
                    let Ok(next) = rules::lease::lease(&job, lease_id, &opts, now) else {
                        continue;
                    };
                    let change = Change::new(Some(bytes), Some(job), Some(next)).map_err(|e| {
                        crate::storage::TxError::Abort(crate::storage::Abort::Failed(e))
                    })?;
                    tx.apply(&change);
                    taken.push(change);
                }
                Ok(taken)
            })
            .await?
            .unwrap_or_default();
        let mut pending = self.pending(Vec::new(), Transition::Lease, &leased);
        pending.value = leased
            .into_iter()
            .filter_map(Change::into_new_job)
            .filter_map(|job| {
                let lease_id = job.lease.as_ref()?.id;
                Some(Leased { lease_id, job })
            })
            .collect();
        Ok(pending)
    }

    /// Applies `rule` to the stored job `id` and commits the result if the
    /// record did not change meanwhile (else decides again).
    async fn transition(
        &self,
        via: Via,
        id: JobId,
        transition: Transition,
        rule: impl Fn(&Job, u64) -> Result<Job, Refusal>,
    ) -> Result<Job> {
        loop {
            let now = self.now();
            let (bytes, job) = self.store.load(id)?.ok_or(Error::NotFound { id })?;
            let next =
                rule(&job, now).map_err(|refusal| refusal.into_error(id, transition.as_str()))?;
            let change = Arc::new(Change::new(Some(bytes), Some(job), Some(next))?);
            let in_tx = Arc::clone(&change);
            if self
                .commit(via, move |tx| tx.apply_or_abort(&in_tx))
                .await?
                .is_none()
            {
                continue;
            }
            let pending = self.pending((), transition, [&*change]);
            self.settle(pending)?;
            return change
                .new_job()
                .cloned()
                .ok_or_else(|| Error::Corrupt("transition without a job".into()));
        }
    }

    /// Applies the changes whose records are still current, skipping the
    /// others; returns how many were applied.
    fn apply_current(&self, transition: Transition, changes: Vec<Change>) -> Result<usize> {
        if changes.is_empty() {
            return Ok(0);
        }
        let changes = Arc::new(changes);
        let in_tx = Arc::clone(&changes);
        let applied = self
            .store
            .transact(move |tx| {
                let changes = &in_tx;
                let mut applied = Vec::new();
                for (i, change) in changes.iter().enumerate() {
                    if tx.is_current(change)? {
                        tx.apply(change);
                        applied.push(i);
                    }
                }
                Ok(applied)
            })?
            .unwrap_or_default();
        let pending = self.pending(
            applied.len(),
            transition,
            applied.iter().map(|i| &changes[*i]),
        );
        self.settle(pending)
    }

    /// Requeue or purge: `rule` maps a dead job to its new record (`None`
    /// deletes it). Works in batches; each batch is atomic.
    fn on_dead(
        &self,
        queue: &str,
        ids: Option<&[JobId]>,
        transition: Transition,
        rule: impl Fn(&Job, u64) -> Result<Option<Job>, Refusal>,
    ) -> Result<u64> {
        let decide = |ids: &[JobId]| -> Result<Vec<Change>> {
            let now = self.now();
            let mut changes = Vec::new();
            for id in ids {
                let Some((bytes, job)) = self.store.load(*id)? else {
                    continue;
                };
                if job.queue != queue || job.state != JobState::Dead {
                    continue;
                }
                if let Ok(next) = rule(&job, now) {
                    changes.push(Change::new(Some(bytes), Some(job), next)?);
                }
            }
            Ok(changes)
        };
        match ids {
            Some(ids) => {
                if ids.len() > MAX_BATCH {
                    return Err(Error::invalid(
                        "ids",
                        format!("at most {MAX_BATCH} ids, got {}", ids.len()),
                    ));
                }
                let changes = decide(ids)?;
                Ok(self.apply_current(transition, changes)? as u64)
            }
            None => {
                let mut total = 0u64;
                let mut after = None;
                loop {
                    let ids = self.store.dead_ids(queue, after, DEAD_BATCH)?;
                    let Some(last) = ids.last().copied() else {
                        break;
                    };
                    total += self.apply_current(transition, decide(&ids)?)? as u64;
                    after = Some(last);
                }
                Ok(total)
            }
        }
    }

    fn stats(&self, queue: &str) -> Result<QueueStats> {
        let counts = self.store.counts(queue)?;
        let now = self.now();
        Ok(QueueStats {
            queue: queue.to_owned(),
            paused: self.store.is_paused(queue)?,
            scheduled: counts.get(JobState::Scheduled),
            ready: counts.get(JobState::Ready),
            leased: counts.get(JobState::Leased),
            completed: counts.get(JobState::Completed),
            dead: counts.get(JobState::Dead),
            cancelled: counts.get(JobState::Cancelled),
            oldest_ready_age_ms: self
                .store
                .oldest_ready(queue)?
                .map(|run_at| now.saturating_sub(run_at)),
        })
    }

    fn retention_ms(&self, kind: TimerKind) -> u64 {
        let retention = &self.config.retention;
        match kind {
            TimerKind::RetainCompleted => millis(retention.completed),
            TimerKind::RetainDead => millis(retention.dead),
            TimerKind::RetainCancelled => millis(retention.cancelled),
            TimerKind::Promote | TimerKind::Expire => 0,
        }
    }

    /// One pass of the timers over everything due at the current time.
    pub(crate) fn run_due(&self) -> Result<DueReport> {
        let now = self.now();
        let mut report = DueReport::default();
        for kind in TimerKind::ALL {
            let retention = self.retention_ms(kind);
            let upto = now.saturating_sub(retention);
            if retention > now {
                continue;
            }
            // Bounded: a pass handles what is due now; entries that keep
            // losing races are taken by the next pass.
            for _ in 0..1024 {
                let due = self.store.due(kind, upto, TIMER_BATCH)?;
                let mut changes = Vec::with_capacity(due.len());
                for (id, lease_id) in &due {
                    let Some((bytes, job)) = self.store.load(*id)? else {
                        continue;
                    };
                    let next = match kind {
                        TimerKind::Promote => rules::promote::promote(&job, now).map(Some),
                        TimerKind::Expire => match lease_id {
                            Some(lease_id) => {
                                rules::expire::expire(&job, *lease_id, self.jitter(), now).map(Some)
                            }
                            None => continue,
                        },
                        _ => match job.finished_at {
                            Some(at)
                                if job.state.is_terminal()
                                    && at.saturating_add(retention) <= now =>
                            {
                                Ok(None)
                            }
                            _ => continue,
                        },
                    };
                    if let Ok(next) = next {
                        changes.push(Change::new(Some(bytes), Some(job), next)?);
                    }
                }
                let transition = match kind {
                    TimerKind::Promote => Transition::Promote,
                    TimerKind::Expire => Transition::Expire,
                    _ => Transition::Remove,
                };
                let applied = self.apply_current(transition, changes)? as u64;
                match kind {
                    TimerKind::Promote => report.promoted += applied,
                    TimerKind::Expire => report.expired += applied,
                    _ => report.removed += applied,
                }
                if due.len() < TIMER_BATCH || applied == 0 {
                    break;
                }
            }
        }
        for kind in TimerKind::ALL {
            if let Some(at) = self.store.first_timer(kind)? {
                let due = at.saturating_add(self.retention_ms(kind));
                report.next_due = Some(report.next_due.map_or(due, |d| d.min(due)));
            }
        }
        Ok(report)
    }
}
