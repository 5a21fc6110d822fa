//! The blocking API: [`Queue`] with the same operations, under the same
//! names, as the async [`crate::Queue`], for callers without a runtime.
//!
//! Each call drives the engine's future on the calling thread (parked while
//! it waits), and lets the embedded backend do its work there: with several
//! threads calling at once, one of them leads the group commit for all. A
//! call from inside an async runtime blocks that runtime's thread; use the
//! async API there.
//!
//! ```
//! use queue_core::blocking::Queue;
//! use queue_core::{LeaseOptions, NewJob};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::open(dir.path())?;
//! queue.enqueue("emails", NewJob::new(br#"{"to":"ada@example.com"}"#.to_vec()))?;
//! let leased = queue.lease("emails", &LeaseOptions::default())?;
//! queue.complete(leased[0].job.id, leased[0].lease_id, None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use queue_proto::{History, HistoryQuery, PatchQueueRequest, QueueStats};

use crate::backend::Mode;
use crate::engine::check_queue;
use crate::executor::block_on;
use crate::timers::DueReport;
use crate::{
    Config, Counters, DeadPage, Enqueued, Error, Event, Failure, Job, JobId, JobPage, JobState,
    LeaseId, LeaseOptions, Leased, NewJob, RecvError, Result, Settlement, Verification, rules,
};

/// A durable job queue: the blocking API. Cheap to clone; the same handle
/// as the [`crate::Queue`] it was made from (see [`Queue::as_async`]).
#[derive(Clone, Debug)]
pub struct Queue {
    inner: crate::Queue,
}

impl From<crate::Queue> for Queue {
    fn from(inner: crate::Queue) -> Self {
        Queue { inner }
    }
}

impl Queue {
    /// [`crate::Queue::open`].
    ///
    /// # Errors
    /// As [`crate::Queue::open`].
    pub fn open(path: impl Into<std::path::PathBuf>) -> Result<Queue> {
        crate::Queue::open(path).map(Queue::from)
    }

    /// [`crate::Queue::open_with`].
    ///
    /// # Errors
    /// As [`crate::Queue::open_with`].
    pub fn open_with(config: Config) -> Result<Queue> {
        crate::Queue::open_with(config).map(Queue::from)
    }

    /// The async API on the same handle.
    pub fn as_async(&self) -> &crate::Queue {
        &self.inner
    }

    /// [`crate::Queue::enqueue`].
    ///
    /// # Errors
    /// As [`crate::Queue::enqueue`].
    pub fn enqueue(&self, queue: &str, job: NewJob) -> Result<Enqueued> {
        let mut enqueued = block_on(self.inner.engine().enqueue(
            Mode::Blocking,
            queue,
            vec![job],
            false,
        ))?;
        enqueued
            .pop()
            .ok_or_else(|| Error::Internal("enqueue produced no job".into()))
    }

    /// [`crate::Queue::enqueue_batch`].
    ///
    /// # Errors
    /// As [`crate::Queue::enqueue_batch`].
    pub fn enqueue_batch(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        block_on(
            self.inner
                .engine()
                .enqueue(Mode::Blocking, queue, jobs, true),
        )
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &crate::engine::Engine {
        self.inner.engine()
    }

    #[cfg(test)]
    pub(crate) fn engine_queue(&self) -> crate::Queue {
        self.inner.clone()
    }

    /// [`crate::Queue::lease`].
    ///
    /// # Errors
    /// As [`crate::Queue::lease`].
    pub fn lease(&self, queue: &str, opts: &LeaseOptions) -> Result<Vec<Leased>> {
        block_on(self.inner.engine().lease(Mode::Blocking, queue, opts))
    }

    /// [`crate::Queue::lease_wait`]: parks the calling thread until it
    /// leases something or `timeout` passes (woken as
    /// [`crate::Queue::lease_wait`] is; no polling).
    ///
    /// # Errors
    /// As [`crate::Queue::lease`].
    pub fn lease_wait(
        &self,
        queue: &str,
        opts: &LeaseOptions,
        timeout: Duration,
    ) -> Result<Vec<Leased>> {
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let deadline = Instant::now() + timeout;
        let engine = self.inner.engine();
        let mut registration = engine.queue_signals.register(queue.to_owned());
        loop {
            let (leased, retry_at) = block_on(engine.lease_round(Mode::Blocking, queue, opts))?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            let until = match engine.retry_in(retry_at) {
                Some(wait) => deadline.min(Instant::now() + wait),
                None => deadline,
            };
            if !registration.wait_until(until) && until >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// [`crate::Queue::heartbeat`].
    ///
    /// # Errors
    /// As [`crate::Queue::heartbeat`].
    pub fn heartbeat(&self, id: JobId, lease: LeaseId, lease_ms: Option<u64>) -> Result<Job> {
        block_on(
            self.inner
                .engine()
                .heartbeat(Mode::Blocking, id, lease, lease_ms, None),
        )
    }

    /// [`crate::Queue::report_progress`].
    ///
    /// # Errors
    /// As [`crate::Queue::report_progress`].
    pub fn report_progress(
        &self,
        id: JobId,
        lease: LeaseId,
        progress: &[u8],
        lease_ms: Option<u64>,
    ) -> Result<Job> {
        block_on(
            self.inner
                .engine()
                .heartbeat(Mode::Blocking, id, lease, lease_ms, Some(progress)),
        )
    }

    /// [`crate::Queue::complete`].
    ///
    /// # Errors
    /// As [`crate::Queue::complete`].
    pub fn complete(&self, id: JobId, lease: LeaseId, result: Option<Vec<u8>>) -> Result<Job> {
        block_on(
            self.inner
                .engine()
                .complete(Mode::Blocking, id, lease, result),
        )
    }

    /// [`crate::Queue::fail`].
    ///
    /// # Errors
    /// As [`crate::Queue::fail`].
    pub fn fail(&self, id: JobId, lease: LeaseId, failure: &Failure) -> Result<Job> {
        block_on(self.inner.engine().fail(Mode::Blocking, id, lease, failure))
    }

    /// [`crate::Queue::settle`].
    ///
    /// # Errors
    /// As [`crate::Queue::settle`].
    pub fn settle(&self, queue: &str, items: &[Settlement]) -> Result<Vec<Result<Job>>> {
        block_on(
            self.inner
                .engine()
                .settle(Mode::Blocking, queue, items, None),
        )
        .map(|settled| settled.results)
    }

    /// [`crate::Queue::settle_and_lease`].
    ///
    /// # Errors
    /// As [`crate::Queue::settle_and_lease`].
    pub fn settle_and_lease(
        &self,
        queue: &str,
        items: &[Settlement],
        opts: &LeaseOptions,
    ) -> Result<(Vec<Result<Job>>, Vec<Leased>)> {
        block_on(
            self.inner
                .engine()
                .settle(Mode::Blocking, queue, items, Some(opts)),
        )
        .map(|settled| (settled.results, settled.leased))
    }

    /// [`crate::Queue::release`].
    ///
    /// # Errors
    /// As [`crate::Queue::release`].
    pub fn release(&self, id: JobId, lease: LeaseId) -> Result<Job> {
        block_on(self.inner.engine().release(Mode::Blocking, id, lease))
    }

    /// [`crate::Queue::cancel`].
    ///
    /// # Errors
    /// As [`crate::Queue::cancel`].
    pub fn cancel(&self, id: JobId) -> Result<Job> {
        block_on(self.inner.engine().cancel(Mode::Blocking, id))
    }

    /// [`crate::Queue::get`].
    ///
    /// # Errors
    /// As [`crate::Queue::get`].
    pub fn get(&self, id: JobId) -> Result<Option<Job>> {
        block_on(self.inner.get(id))
    }

    /// [`crate::Queue::wait_terminal`]: parks the calling thread.
    ///
    /// # Errors
    /// As [`crate::Queue::wait_terminal`].
    pub fn wait_terminal(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let deadline = Instant::now() + timeout;
        let mut registration = self.inner.engine().job_signals.register(id);
        loop {
            let job = self.get(id)?.ok_or(Error::NotFound { id })?;
            if job.state.is_terminal() || !registration.wait_until(deadline) {
                return Ok(job);
            }
        }
    }

    /// [`crate::Queue::stats`].
    ///
    /// # Errors
    /// As [`crate::Queue::stats`].
    pub fn stats(&self, queue: &str) -> Result<QueueStats> {
        block_on(self.inner.stats(queue))
    }

    /// [`crate::Queue::history`].
    ///
    /// # Errors
    /// As [`crate::Queue::history`].
    pub fn history(&self, queue: &str, query: &HistoryQuery) -> Result<History> {
        block_on(self.inner.history(queue, query))
    }

    /// [`crate::Queue::queues`].
    ///
    /// # Errors
    /// As [`crate::Queue::queues`].
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        block_on(self.inner.queues())
    }

    /// [`crate::Queue::update_queue`].
    ///
    /// # Errors
    /// As [`crate::Queue::update_queue`].
    pub fn update_queue(&self, queue: &str, update: &PatchQueueRequest) -> Result<QueueStats> {
        block_on(self.inner.engine().update_settings(
            Mode::Blocking,
            queue,
            crate::settings::SettingsUpdate::from_patch(update),
        ))
    }

    /// [`crate::Queue::pause`].
    ///
    /// # Errors
    /// As [`crate::Queue::pause`].
    pub fn pause(&self, queue: &str) -> Result<QueueStats> {
        block_on(self.inner.engine().set_paused(Mode::Blocking, queue, true))
    }

    /// [`crate::Queue::resume`].
    ///
    /// # Errors
    /// As [`crate::Queue::resume`].
    pub fn resume(&self, queue: &str) -> Result<QueueStats> {
        block_on(self.inner.engine().set_paused(Mode::Blocking, queue, false))
    }

    /// [`crate::Queue::put_schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::put_schedule`].
    pub fn put_schedule(
        &self,
        name: &str,
        request: &queue_proto::ScheduleRequest,
    ) -> Result<crate::PutSchedule> {
        block_on(
            self.inner
                .engine()
                .put_schedule(Mode::Blocking, name, request),
        )
    }

    /// [`crate::Queue::schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::schedule`].
    pub fn schedule(&self, name: &str) -> Result<Option<crate::Schedule>> {
        block_on(self.inner.schedule(name))
    }

    /// [`crate::Queue::schedules`].
    ///
    /// # Errors
    /// As [`crate::Queue::schedules`].
    pub fn schedules(&self) -> Result<Vec<crate::Schedule>> {
        block_on(self.inner.schedules())
    }

    /// [`crate::Queue::delete_schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::delete_schedule`].
    pub fn delete_schedule(&self, name: &str) -> Result<crate::Schedule> {
        block_on(self.inner.engine().delete_schedule(Mode::Blocking, name))
    }

    /// [`crate::Queue::pause_schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::pause_schedule`].
    pub fn pause_schedule(&self, name: &str) -> Result<crate::Schedule> {
        block_on(
            self.inner
                .engine()
                .set_schedule_paused(Mode::Blocking, name, true),
        )
    }

    /// [`crate::Queue::resume_schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::resume_schedule`].
    pub fn resume_schedule(&self, name: &str) -> Result<crate::Schedule> {
        block_on(
            self.inner
                .engine()
                .set_schedule_paused(Mode::Blocking, name, false),
        )
    }

    /// [`crate::Queue::trigger_schedule`].
    ///
    /// # Errors
    /// As [`crate::Queue::trigger_schedule`].
    pub fn trigger_schedule(&self, name: &str, correlation_id: Option<String>) -> Result<Job> {
        block_on(
            self.inner
                .engine()
                .trigger_schedule(Mode::Blocking, name, correlation_id),
        )
    }

    /// [`crate::Queue::dead_letters`].
    ///
    /// # Errors
    /// As [`crate::Queue::dead_letters`].
    pub fn dead_letters(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<DeadPage> {
        block_on(self.inner.dead_letters(queue, after, limit))
    }

    /// [`crate::Queue::jobs`].
    ///
    /// # Errors
    /// As [`crate::Queue::jobs`].
    pub fn jobs(
        &self,
        queue: &str,
        state: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        block_on(self.inner.jobs(queue, state, after, limit))
    }

    /// [`crate::Queue::jobs_by_correlation`].
    ///
    /// # Errors
    /// As [`crate::Queue::jobs_by_correlation`].
    pub fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        block_on(self.inner.jobs_by_correlation(correlation_id, after, limit))
    }

    /// [`crate::Queue::requeue_dead`].
    ///
    /// # Errors
    /// As [`crate::Queue::requeue_dead`].
    pub fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        block_on(
            self.inner
                .engine()
                .on_dead(Mode::Blocking, queue, ids, rules::requeue::requeue),
        )
    }

    /// [`crate::Queue::purge_dead`].
    ///
    /// # Errors
    /// As [`crate::Queue::purge_dead`].
    pub fn purge_dead(&self, queue: &str) -> Result<u64> {
        block_on(
            self.inner
                .engine()
                .on_dead(Mode::Blocking, queue, None, |job, _| {
                    rules::purge::purge(job)
                }),
        )
    }

    /// [`crate::Queue::subscribe`].
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            inner: self.inner.subscribe(),
        }
    }

    /// [`crate::Queue::subscribe_after`].
    pub fn subscribe_after(&self, event_id: u64) -> Subscription {
        Subscription {
            inner: self.inner.subscribe_after(event_id),
        }
    }

    /// [`crate::Queue::counters`].
    pub fn counters(&self) -> Counters {
        self.inner.counters()
    }

    /// [`crate::Queue::queue_counters`].
    pub fn queue_counters(&self) -> std::collections::BTreeMap<String, Counters> {
        self.inner.queue_counters()
    }

    /// [`crate::Queue::run_due`].
    ///
    /// # Errors
    /// As [`crate::Queue::run_due`].
    pub fn run_due(&self) -> Result<DueReport> {
        block_on(self.inner.engine().run_due(Mode::Blocking))
    }

    /// [`crate::Queue::flush`].
    ///
    /// # Errors
    /// As [`crate::Queue::flush`].
    pub fn flush(&self) -> Result<()> {
        block_on(self.inner.flush())
    }

    /// [`crate::Queue::commit_stats`].
    #[must_use]
    pub fn commit_stats(&self) -> Option<crate::CommitStats> {
        self.inner.commit_stats()
    }

    /// [`crate::Queue::verify`].
    ///
    /// # Errors
    /// As [`crate::Queue::verify`].
    pub fn verify(&self) -> Result<Verification> {
        block_on(self.inner.verify())
    }
}

/// [`crate::Subscription`] for blocking callers.
#[derive(Debug)]
pub struct Subscription {
    inner: crate::Subscription,
}

impl Subscription {
    /// The next event, parking the thread until one is committed.
    ///
    /// # Errors
    /// As [`crate::Subscription::recv`].
    pub fn recv(&mut self) -> Result<Event, RecvError> {
        block_on(self.inner.recv())
    }

    /// The next event if one is committed and not yet delivered, else
    /// `Ok(None)` at once.
    ///
    /// # Errors
    /// As [`crate::Subscription::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Event>, RecvError> {
        block_on(self.inner.poll_committed())
    }

    /// [`crate::Subscription::position`].
    pub fn position(&self) -> u64 {
        self.inner.position()
    }
}
