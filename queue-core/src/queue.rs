//! [`Queue`]: the async handle, one method per operation.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use queue_proto::{History, HistoryQuery, PatchQueueRequest, QueueStats};

use crate::settings::SettingsUpdate;

use crate::backend::{self, Mode};
use crate::engine::{Engine, check_queue};
use crate::events::Subscription;
use crate::timers::{self, DueReport};
use crate::{
    CallbackStatus, CommitStats, Config, Counters, DeadPage, DeliveryResult, Enqueued, Error,
    Failure, Job, JobId, JobPage, JobState, LeaseId, LeaseOptions, Leased, NewJob, Result,
    Settlement, Verification, executor, rules,
};

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A durable job queue: the async API.
///
/// Cheap to clone (clones share one handle) and safe to share across threads
/// and tasks. The background threads stop, and a last flush runs, when the
/// last clone is dropped. [`blocking::Queue`](crate::blocking::Queue) has
/// the same operations for callers without a runtime.
///
/// Every method that changes state resolves after the change is on disk
/// under [`Durability::Sync`](crate::Durability::Sync) (the default);
/// concurrent callers share flushes. Under
/// [`Durability::Periodic`](crate::Durability::Periodic) it resolves once
/// the change is applied. The futures need no particular runtime, except
/// [`Queue::lease_wait`] and [`Queue::wait_terminal`], which use tokio's
/// timer.
#[derive(Clone)]
pub struct Queue {
    handle: Arc<Handle>,
}

struct Handle {
    engine: Arc<Engine>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.engine.timer.stop();
        let timer = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = timer {
            let _ = thread.join();
        }
        self.engine.backend.close();
    }
}

impl Queue {
    /// Opens (or creates) the queue stored at `path` with the default
    /// [`Config`].
    ///
    /// # Errors
    /// [`Error::Storage`] if the directory cannot be opened (for example
    /// because another process has it open; a handle of this process dropped
    /// a moment ago is waited for, up to five seconds), [`Error::Corrupt`] if
    /// it holds data of a newer format.
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Queue> {
        Queue::open_with(Config::new(path))
    }

    /// Opens (or creates) the queue described by `config`. Opening blocks
    /// while the store recovers.
    ///
    /// Nothing needs recovering by hand: every deadline is stored, so leases
    /// that expired while the process was down expire, and due scheduled
    /// jobs are promoted, as soon as the timer runs. A data directory written
    /// by an earlier release is upgraded in place.
    ///
    /// # Errors
    /// As [`Queue::open`]; [`Error::InvalidArgument`] for a `max_payload`
    /// over the limit or a zero `max_events`.
    pub fn open_with(config: Config) -> Result<Queue> {
        if config.max_events == 0 {
            return Err(Error::invalid("max_events", "must be at least 1"));
        }
        let backend = backend::open(&config)?;
        let background = config.background_timers;
        let engine = Arc::new(Engine::new(backend, config));
        // A manual clock's advance may make callback attempts due.
        let callbacks = Arc::downgrade(&engine.callbacks_due);
        engine.clock().on_advance(Box::new(move || {
            if let Some(callbacks) = callbacks.upgrade() {
                callbacks.notify_one();
            }
        }));
        let timer = if background {
            let pass = Arc::clone(&engine);
            let thread = timers::spawn(&engine.timer, engine.clock(), move || {
                executor::block_on(pass.run_due(Mode::Blocking))
            });
            match thread {
                Ok(thread) => Some(thread),
                Err(e) => {
                    engine.backend.close();
                    return Err(Error::Storage(crate::error::StorageError::from_source(e)));
                }
            }
        } else {
            None
        };
        Ok(Queue {
            handle: Arc::new(Handle {
                engine,
                timer: Mutex::new(timer),
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.handle.engine
    }

    /// Enqueues one job on `queue`.
    ///
    /// Durable on return. With an idempotency key that a job still stored in
    /// the same queue holds, nothing is created and the stored job comes back
    /// with `replayed = true`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad queue name or out-of-range
    /// options, [`Error::TooLarge`] for an oversized payload (nothing is
    /// stored in either case); [`Error::Storage`].
    pub async fn enqueue(&self, queue: &str, job: NewJob) -> Result<Enqueued> {
        let mut enqueued = self
            .engine()
            .enqueue(Mode::Async, queue, vec![job], false)
            .await?;
        enqueued
            .pop()
            .ok_or_else(|| Error::Internal("enqueue produced no job".into()))
    }

    /// Enqueues 1..=1000 jobs on `queue`, all or nothing, in one atomic step
    /// and one flush. The answer is in input order; an item whose
    /// idempotency key matches a stored job (or an earlier item of the same
    /// batch) is a replay.
    ///
    /// # Errors
    /// As [`Queue::enqueue`]; a bad item refuses the whole batch, and the
    /// message names its index.
    pub async fn enqueue_batch(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.engine().enqueue(Mode::Async, queue, jobs, true).await
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
    pub async fn lease(&self, queue: &str, opts: &LeaseOptions) -> Result<Vec<Leased>> {
        self.engine().lease(Mode::Async, queue, opts).await
    }

    /// Like [`Queue::lease`], but when it gets nothing waits up to `timeout`
    /// for a job it may take (woken by enqueues, promotions, releases,
    /// requeues and resumes, and, on a queue with limits, by whatever frees
    /// capacity: a leased job completed, failed, released, expired or
    /// cancelled, a limit raised or removed, the next token of the rate
    /// limit, at the instant it arrives; no polling). Returns an empty list
    /// on timeout.
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
        self.lease_wait_until(queue, opts, timeout, std::future::pending())
            .await
    }

    /// How many [`lease_wait`](Queue::lease_wait) long-polls on `queue`
    /// are waiting for a job right now (in this process): for monitoring,
    /// and for tests that must know a waiting lease is parked.
    pub fn lease_waiters(&self, queue: &str) -> usize {
        self.engine().queue_signals.parked(&queue.to_owned())
    }

    /// [`Queue::lease_wait`] that also ends, empty, when `cancel`
    /// completes. `cancel` is only heeded while the call waits, never while
    /// it leases: a lease that was granted is always returned, so a caller
    /// that cancels never strands jobs it did not see (unlike dropping the
    /// future, which may land between the commit and the return).
    ///
    /// # Errors
    /// As [`Queue::lease`].
    pub async fn lease_wait_until(
        &self,
        queue: &str,
        opts: &LeaseOptions,
        timeout: Duration,
        cancel: impl Future<Output = ()>,
    ) -> Result<Vec<Leased>> {
        let mut cancel = std::pin::pin!(cancel);
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut registration = self.engine().queue_signals.register(queue.to_owned());
        loop {
            let (leased, retry_at) = self.engine().lease_round(Mode::Async, queue, opts).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            // Short of tokens: try again when the next one arrives, unless
            // something else wakes the wait first.
            let until = match self.engine().retry_in(retry_at) {
                Some(wait) => deadline.min(tokio::time::Instant::now() + wait),
                None => deadline,
            };
            let woken = tokio::select! {
                woken = tokio::time::timeout_at(until, registration.changed()) => woken,
                () = &mut cancel => return Ok(Vec::new()),
            };
            if woken.is_err() && until >= deadline {
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
    pub async fn heartbeat(&self, id: JobId, lease: LeaseId, lease_ms: Option<u64>) -> Result<Job> {
        self.engine()
            .heartbeat(Mode::Async, id, lease, lease_ms, None)
            .await
    }

    /// A heartbeat that also stores `progress` (any bytes; JSON over HTTP,
    /// at most 64 KiB) on job `id` and emits a progress event. Durable on
    /// return.
    ///
    /// # Errors
    /// As [`Queue::heartbeat`]; [`Error::TooLarge`] for oversized progress.
    pub async fn report_progress(
        &self,
        id: JobId,
        lease: LeaseId,
        progress: &[u8],
        lease_ms: Option<u64>,
    ) -> Result<Job> {
        self.engine()
            .heartbeat(Mode::Async, id, lease, lease_ms, Some(progress))
            .await
    }

    /// Completes job `id` held under `lease`, keeping `result`. Final: the
    /// job is never leased again. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] (nothing changes), [`Error::NotFound`],
    /// [`Error::TooLarge`] for an oversized result, [`Error::Storage`].
    pub async fn complete(
        &self,
        id: JobId,
        lease: LeaseId,
        result: Option<Vec<u8>>,
    ) -> Result<Job> {
        self.engine().complete(Mode::Async, id, lease, result).await
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
    pub async fn fail(&self, id: JobId, lease: LeaseId, failure: &Failure) -> Result<Job> {
        self.engine().fail(Mode::Async, id, lease, failure).await
    }

    /// Settles many leased jobs of `queue` in one call: each
    /// [`Settlement`] is completed or failed exactly as [`Queue::complete`]
    /// or [`Queue::fail`] would (the same rules, events, callbacks, counters
    /// and history), independently of the others, and all of them are
    /// committed together: one durable flush for the lot, not one per job
    /// (an item whose record changed meanwhile, or the second item about
    /// one job, goes in a next commit, decided against what the first
    /// left). Durable on return. To take the next jobs in the same commit,
    /// use [`Queue::settle_and_lease`].
    ///
    /// Returns one result per item, in order: the job as settled, or
    /// [`Error::NotFound`] (unknown, or a job of another queue),
    /// [`Error::LeaseLost`] or [`Error::Conflict`]; such an item changes
    /// nothing.
    ///
    /// # Errors
    /// The whole call, before anything is written: [`Error::InvalidArgument`]
    /// for a bad queue name, more than 1,000 items or an out-of-range retry
    /// delay, [`Error::TooLarge`] for an oversized result. Then
    /// [`Error::Storage`] (settlements committed before it stay committed).
    pub async fn settle(&self, queue: &str, items: &[Settlement]) -> Result<Vec<Result<Job>>> {
        Ok(self
            .engine()
            .settle(Mode::Async, queue, items, None)
            .await?
            .results)
    }

    /// [`Queue::settle`], and a [`Queue::lease`] of `queue` with `opts` in
    /// the same atomic commit as the settlements: one durable flush for
    /// both, where a settle followed by a lease costs two. This is what
    /// `POST /v1/queues/{queue}/settle` with a `lease` does, and what the
    /// SDK's worker uses to finish a job and take the next.
    ///
    /// The lease sees the settlements: a settled job that frees a
    /// `max_leased` or group slot lets it take a job at once. Settlements
    /// that cannot go in the first commit (an item whose record changed
    /// meanwhile, the second item about one job) are committed after it,
    /// so the lease does not see those; when no item needs a commit (none
    /// given, or every one refused), the lease runs alone after the items
    /// are decided. Does not wait: with nothing to take it returns no
    /// jobs (follow it with [`Queue::lease_wait`] to wait, as the endpoint
    /// does with `wait_ms`). Durable on return, leases included.
    ///
    /// Returns one result per item, in order, as [`Queue::settle`] does,
    /// and the jobs leased.
    ///
    /// # Errors
    /// As [`Queue::settle`], and [`Error::InvalidArgument`] for bad lease
    /// options, before anything is written.
    pub async fn settle_and_lease(
        &self,
        queue: &str,
        items: &[Settlement],
        opts: &LeaseOptions,
    ) -> Result<(Vec<Result<Job>>, Vec<Leased>)> {
        let settled = self
            .engine()
            .settle(Mode::Async, queue, items, Some(opts))
            .await?;
        Ok((settled.results, settled.leased))
    }

    /// Gives job `id` back: it is `ready` at once, in its old place, and the
    /// attempt does not count. For a worker that shuts down before starting
    /// the job. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] (nothing changes), [`Error::NotFound`],
    /// [`Error::Storage`].
    pub async fn release(&self, id: JobId, lease: LeaseId) -> Result<Job> {
        self.engine().release(Mode::Async, id, lease).await
    }

    /// Cancels job `id` (`scheduled`, `ready` or `leased`); a held lease is
    /// revoked, so its holder's next heartbeat or completion gets
    /// [`Error::LeaseLost`]. Durable on return.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the job is already terminal,
    /// [`Error::NotFound`], [`Error::Storage`].
    pub async fn cancel(&self, id: JobId) -> Result<Job> {
        self.engine().cancel(Mode::Async, id).await
    }

    /// The job `id`, or `None` if no such job is stored.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.engine().get(id).await
    }

    /// Waits up to `timeout` for job `id` to reach a terminal state
    /// (`completed`, `dead` or `cancelled`) and returns it as it is then,
    /// terminal or not. Holds no thread while waiting; needs a tokio runtime
    /// with the time driver.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no such job is stored; [`Error::Storage`].
    pub async fn wait_terminal(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut registration = self.engine().job_signals.register(id);
        loop {
            let job = self.get(id).await?.ok_or(Error::NotFound { id })?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            if tokio::time::timeout_at(deadline, registration.changed())
                .await
                .is_err()
            {
                return self.get(id).await?.ok_or(Error::NotFound { id });
            }
        }
    }

    /// Counts of `queue` by state, whether it is paused, and the age of its
    /// oldest ready job. An unknown queue reports zeros.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.engine().stats(queue).await
    }

    /// The per-minute history of `queue` merged to the steps `query` asks
    /// for (default: the last hour in one-minute steps): one
    /// [`HistoryPoint`](crate::HistoryPoint) per step, aligned to multiples
    /// of the step, from the step holding `from` to the one holding `to`,
    /// steps without activity included (zero counts, `None` percentiles,
    /// the depths carried forward).
    ///
    /// History is recorded in the same atomic commit as the changes it
    /// counts, so an acknowledged change is counted exactly once, across
    /// restarts and crashes; it is kept for
    /// [`Config::history_retention`](crate::Config::history_retention)
    /// (with [`Duration::ZERO`](std::time::Duration::ZERO) nothing is
    /// recorded and history reads as zeros). Percentiles are nearest-rank,
    /// within 3.125 % of the exact value (exact below 32 ms). Depths are
    /// those left by the last change of the step; an unknown queue reads
    /// as zeros.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad queue name, naming `step_ms`
    /// when the step is not a positive whole number of minutes, `from`
    /// when `from` is after `to` or the range holds more than
    /// [`MAX_HISTORY_POINTS`](crate::MAX_HISTORY_POINTS) steps;
    /// [`Error::Storage`].
    pub async fn history(&self, queue: &str, query: &HistoryQuery) -> Result<History> {
        self.engine().history(queue, query).await
    }

    /// [`Queue::stats`] of every queue that has stored jobs or settings, by
    /// name.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn queues(&self) -> Result<Vec<QueueStats>> {
        self.engine().queues().await
    }

    /// Stops leasing from `queue` (enqueues still work). Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub async fn pause(&self, queue: &str) -> Result<QueueStats> {
        self.engine().set_paused(Mode::Async, queue, true).await
    }

    /// Resumes leasing from `queue` and wakes its waiting leasers. Durable
    /// on return.
    ///
    /// # Errors
    /// As [`Queue::pause`].
    pub async fn resume(&self, queue: &str) -> Result<QueueStats> {
        self.engine().set_paused(Mode::Async, queue, false).await
    }

    /// Stores schedule `name` as `request` describes it (replacing one of
    /// that name): the queue's timer enqueues `request.job` at each tick.
    /// The job body is checked as an enqueue body would be, with the
    /// fields a tick sets (`run_at`, `delay_ms`, `idempotency_key`,
    /// `expires_at`) refused. Replacing a schedule with the same timing
    /// keeps its next tick. Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field (`name`, `queue`,
    /// `cron`, `every_ms`, `timezone`, `job.<field>`); nothing is stored.
    /// [`Error::Storage`].
    pub async fn put_schedule(
        &self,
        name: &str,
        request: &queue_proto::ScheduleRequest,
    ) -> Result<crate::PutSchedule> {
        self.engine().put_schedule(Mode::Async, name, request).await
    }

    /// The stored schedule `name`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub async fn schedule(&self, name: &str) -> Result<Option<crate::Schedule>> {
        self.engine().schedule(name).await
    }

    /// Every stored schedule, by name.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn schedules(&self) -> Result<Vec<crate::Schedule>> {
        self.engine().schedules().await
    }

    /// Removes schedule `name` and returns it; jobs it enqueued stay.
    /// Durable on return.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`]; [`Error::Storage`].
    pub async fn delete_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.engine().delete_schedule(Mode::Async, name).await
    }

    /// Pauses schedule `name`: it fires nothing until resumed. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`]; [`Error::Storage`].
    pub async fn pause_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.engine()
            .set_schedule_paused(Mode::Async, name, true)
            .await
    }

    /// Resumes schedule `name`: its next tick is the first after now (the
    /// ticks of the pause are not caught up). Durable on return.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`]; [`Error::Storage`].
    pub async fn resume_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.engine()
            .set_schedule_paused(Mode::Async, name, false)
            .await
    }

    /// Enqueues schedule `name`'s job now (paused or not), in the same
    /// commit as the schedule's `last_job_id`; the next tick does not move.
    /// Each call enqueues a new job (no idempotency key); its correlation
    /// id is the body's, else `correlation_id`.
    ///
    /// # Errors
    /// [`Error::ScheduleNotFound`]; [`Error::Storage`].
    pub async fn trigger_schedule(
        &self,
        name: &str,
        correlation_id: Option<String>,
    ) -> Result<Job> {
        self.engine()
            .trigger_schedule(Mode::Async, name, correlation_id)
            .await
    }

    /// Changes the settings of `queue` (the `PATCH /v1/queues/{queue}`
    /// body): each field absent keeps its value, `Some(None)` removes a
    /// limit. A rate limit set where there was none starts with a full
    /// bucket; a changed one keeps the tokens held (capped at the new
    /// capacity). Waiting leases are woken when the change may let them
    /// take more. Durable on return; returns the queue's stats.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field for a bad name or a
    /// limit out of its bounds (`max_leased` and `group_max_leased`
    /// 1..=1,000,000, `rate_limit.jobs` 1..=1,000,000, `rate_limit.per_ms`
    /// 1..=86,400,000); nothing changes then. [`Error::Storage`].
    pub async fn update_queue(
        &self,
        queue: &str,
        update: &PatchQueueRequest,
    ) -> Result<QueueStats> {
        self.engine()
            .update_settings(Mode::Async, queue, SettingsUpdate::from_patch(update))
            .await
    }

    /// A page of the dead letters of `queue`, oldest first: up to `limit`
    /// (1..=1000) jobs after the id `after`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or limit; [`Error::Storage`].
    pub async fn dead_letters(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<DeadPage> {
        self.engine().dead_letters(queue, after, limit).await
    }

    /// A page of the jobs of `queue` in `state`, oldest first (ids
    /// increase with creation): up to `limit` (1..=1000) jobs after the id
    /// `after`. An unknown queue has no jobs: an empty page.
    ///
    /// Read from an index, never by scanning the store. Paging is complete
    /// and stable: passing each page's `next` as the next `after`, a job
    /// that stays in `state` all along is listed exactly once, whatever
    /// is enqueued, changes state or is removed meanwhile. A job that
    /// leaves `state` before its page is read is not listed (even if it
    /// was in the state when paging started), and one that enters it is
    /// listed only if its id is after the `after` of a later page (new
    /// jobs always are). Every job of a page was in `state` when it was
    /// read; a page may hold fewer than `limit` jobs, and even none, with a
    /// `next`, when jobs left the state while it was read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or limit; [`Error::Storage`].
    pub async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        self.engine().jobs(queue, state, after, limit).await
    }

    /// A page of the jobs whose correlation id is `correlation_id`, in any
    /// queue and any state, oldest first: up to `limit` (1..=1000) jobs
    /// after the id `after`. Paging behaves as in [`Queue::jobs`] (a job
    /// keeps its correlation id for life, so a stored job is listed
    /// exactly once; one removed by retention before its page is read is
    /// not).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a correlation id that is not 1..=128
    /// visible ASCII characters or a bad limit; [`Error::Storage`].
    pub async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        self.engine()
            .jobs_by_correlation(correlation_id, after, limit)
            .await
    }

    /// Requeues dead jobs of `queue`: those in `ids` (at most 1000; ids that
    /// are not dead jobs of this queue are skipped), or all of them with
    /// `None`. They become `ready` at once with `attempts` 0. Returns how many
    /// were requeued. Durable on return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or too many ids;
    /// [`Error::Storage`].
    pub async fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        self.engine()
            .on_dead(Mode::Async, queue, ids, rules::requeue::requeue)
            .await
    }

    /// Deletes every dead job of `queue`. Returns how many. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Storage`].
    pub async fn purge_dead(&self, queue: &str) -> Result<u64> {
        self.engine()
            .on_dead(Mode::Async, queue, None, |job, _| rules::purge::purge(job))
            .await
    }

    /// The clock the queue reads (the configured one): for helpers that
    /// wait for the queue's deadlines, such as a callback dispatcher.
    pub fn clock(&self) -> std::sync::Arc<dyn crate::Clock> {
        self.engine().clock()
    }

    /// Claims up to `limit` callback attempts that are due, for a
    /// dispatcher to make: each returned job's `callback` names the
    /// delivery and the attempt (its `attempts`). An attempt not settled
    /// within `lost_after` is given up as lost and claimed again: a crash
    /// mid-delivery delays it, never loses it. Durable on return.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn claim_callbacks(&self, limit: usize, lost_after: Duration) -> Result<Vec<Job>> {
        self.engine()
            .claim_callbacks(Mode::Async, limit, millis(lost_after))
            .await
    }

    /// Makes every callback attempt that an earlier dispatcher claimed and
    /// never settled (it stopped: a crash, a kill) due now, instead of when
    /// it would be given up as lost. Call it when a dispatcher starts and
    /// no other one works on this store. Returns how many. Durable on
    /// return.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn recover_callbacks(&self) -> Result<usize> {
        self.engine().recover_callbacks(Mode::Async).await
    }

    /// Settles attempt `attempt` of delivery `delivery` of job `id` with
    /// what the receiver answered: delivered, failed for good, or retried
    /// on the schedule. Durable on return.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when that attempt is no longer the delivery's
    /// current one (it was given up as lost); [`Error::NotFound`],
    /// [`Error::Storage`].
    pub async fn settle_callback(
        &self,
        id: JobId,
        delivery: u32,
        attempt: u32,
        result: &DeliveryResult,
    ) -> Result<Job> {
        self.engine()
            .settle_callback(Mode::Async, id, delivery, attempt, result)
            .await
    }

    /// Starts a new delivery of finished job `id`'s callback, due now.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the job has no callback URL or is not
    /// finished; [`Error::NotFound`], [`Error::Storage`].
    pub async fn retry_callback(&self, id: JobId) -> Result<Job> {
        self.engine().retry_callback(Mode::Async, id).await
    }

    /// When the earliest pending callback attempt is due (unix ms).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn next_callback_due(&self) -> Result<Option<u64>> {
        self.engine().next_callback_due().await
    }

    /// Resolves when a callback attempt may have become due: one was
    /// stored (a job finished, a delivery was retried) or a manual clock
    /// moved. A dispatcher waits on it between passes.
    pub async fn callbacks_changed(&self) {
        self.engine().callbacks_due.notified().await;
    }

    /// A page of the jobs whose callback delivery is in `status`, oldest
    /// first: up to `limit` (1..=1000) after the id `after`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad limit; [`Error::Storage`].
    pub async fn callbacks(
        &self,
        status: CallbackStatus,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        self.engine()
            .page(&crate::backend::Page::Callbacks { status }, after, limit)
            .await
    }

    /// The state changes committed from now on (enqueue, lease, complete,
    /// fail, expiry, release, cancel, promotion, requeue), in commit order.
    /// They are read from the durable event log, so a subscriber that falls
    /// behind never slows writers; it reads older events, as long as they
    /// are retained.
    pub fn subscribe(&self) -> Subscription {
        let latest = self.engine().backend.watch_events();
        let now = *latest.borrow();
        Subscription::new(Arc::downgrade(&self.engine().backend), latest, now)
    }

    /// The state changes committed after the event `event_id` (its
    /// [`Event::event_id`](crate::Event::event_id)), from the durable log:
    /// resume where a subscriber left off, in this process or after a
    /// restart. Events no longer retained are reported as one
    /// [`RecvError::Gap`](crate::RecvError::Gap) first.
    pub fn subscribe_after(&self, event_id: u64) -> Subscription {
        let latest = self.engine().backend.watch_events();
        Subscription::new(Arc::downgrade(&self.engine().backend), latest, event_id)
    }

    /// Totals of transitions since this handle was opened (enqueued, leased,
    /// completed, failed, dead, expired, …), the run-time histogram of
    /// completions and the queue-wait histogram of leases, over every
    /// queue, for metrics.
    pub fn counters(&self) -> Counters {
        self.engine().counters()
    }

    /// The same totals as [`Queue::counters`], per queue: one entry for
    /// every queue that had a transition since this handle was opened
    /// (queues are never forgotten while it is open, so the map grows with
    /// the number of queues used, not with traffic). Counted in memory,
    /// after each change is durable; a backend adds nothing to implement.
    pub fn queue_counters(&self) -> std::collections::BTreeMap<String, Counters> {
        self.engine().queue_counters()
    }

    /// Runs the timers now: promotes due scheduled jobs, expires due leases,
    /// removes jobs past retention, prunes the event log. The background
    /// thread does this by itself; this is for tests that step a manual
    /// clock and for tools.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn run_due(&self) -> Result<DueReport> {
        self.engine().run_due(Mode::Async).await
    }

    /// Flushes everything to disk (useful under [`Durability::Periodic`](crate::Durability::Periodic)).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn flush(&self) -> Result<()> {
        self.engine().backend.flush().await
    }

    /// How the embedded store has grouped its commits since it was opened
    /// (batches, groups committed together, the journal's `fdatasync`s and
    /// the time each took): two readings' [`CommitStats::since`] describe
    /// the interval between them. `None` on PostgreSQL, where the database
    /// groups commits itself.
    #[must_use]
    pub fn commit_stats(&self) -> Option<CommitStats> {
        self.engine().backend.commit_stats()
    }

    /// Checks the whole store: every index entry, timer entry and count is
    /// recomputed from the job records and compared with what is stored,
    /// the record invariants are checked, and the event log must be one
    /// run of ids. Reads everything: a tool for tests, crash recovery checks
    /// and operators, not for hot paths.
    ///
    /// # Errors
    /// [`Error::Storage`]; damage is reported in the result, not as an error.
    pub async fn verify(&self) -> Result<Verification> {
        self.engine().verify().await
    }

    /// A secret shared by every process on this store (e.g. the key that
    /// signs callbacks, which every server on one database must sign
    /// with): the one stored under `name`, or `candidate`, stored under
    /// `name` if none was (the first process to ask wins, atomically).
    /// `None` on a store only one process opens (the embedded store),
    /// where the caller keeps its secrets itself.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn shared_secret(&self, name: &str, candidate: &str) -> Result<Option<String>> {
        self.engine().backend.shared_secret(name, candidate).await
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("storage", &self.engine().config.storage)
            .finish_non_exhaustive()
    }
}
