//! The engine: every operation as decide (a pure rule on the stored record)
//! then commit (the backend, with a compare-and-swap on what the decision
//! read), then announce (counters, wake-ups of waiters and of the timer).
//!
//! Operations are async and take a [`Mode`]: the async API awaits the
//! backend, the blocking API drives the same futures on its own thread and
//! lets the backend work on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue_proto::limits::MAX_BATCH;
use queue_proto::{History, HistoryQuery, JobState, QueueStats, validate_queue_name};

use crate::backend::{Backend, Change, Commit, Committed, Mode, Page};
use crate::counters::AtomicCounters;
use crate::rules::lease::LeasePlan;
use crate::rules::{self, Jitter, Outcome, Refusal, TimerKind};
use crate::settings::SettingsUpdate;
use crate::signal::Signals;
use crate::timers::{DueReport, TimerWake};
use crate::{
    Clock, Config, Counters, Enqueued, Error, Failure, Job, JobId, JobPage, LeaseId, LeaseOptions,
    Leased, NewJob, Result, Settle, Settlement, Transition, Verification,
};

/// Timer entries handled per commit.
const TIMER_BATCH: usize = 256;
/// Dead letters requeued or purged per commit.
const DEAD_BATCH: usize = 512;

pub(crate) fn check_queue(queue: &str) -> Result<()> {
    validate_queue_name(queue).map_err(|e| Error::invalid("queue", e.to_string()))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What [`Engine::settle`] did: one result per item, in order, and what
/// its lease round took.
pub(crate) struct SettledAndLeased {
    pub(crate) results: Vec<Result<Job>>,
    pub(crate) leased: Vec<Leased>,
}

pub(crate) struct Engine {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: Config,
    rng: Mutex<u64>,
    /// Woken when a queue may have a job to lease: a job became ready,
    /// capacity freed up under a limit (a leased job left `leased`, a limit
    /// was raised or removed, the queue resumed), or a manual clock moved
    /// (a token bucket may have refilled).
    pub(crate) queue_signals: Arc<Signals<String>>,
    pub(crate) job_signals: Arc<Signals<JobId>>,
    counters: AtomicCounters,
    pub(crate) timer: Arc<TimerWake>,
    /// Events committed since the timer last pruned the log.
    events_since_prune: AtomicU64,
    /// Told when a callback attempt may have become due (one was stored,
    /// or a manual clock moved).
    pub(crate) callbacks_due: Arc<tokio::sync::Notify>,
}

impl Engine {
    pub(crate) fn new(backend: Arc<dyn Backend>, config: Config) -> Engine {
        let seed = config.seed.unwrap_or_else(|| config.clock.now_ms());
        let queue_signals = Arc::new(Signals::new());
        let weak = Arc::downgrade(&queue_signals);
        config.clock.on_advance(Box::new(move || {
            if let Some(signals) = weak.upgrade() {
                signals.bump_all();
            }
        }));
        let job_signals = Arc::new(Signals::new());
        let timer = Arc::new(TimerWake::new());
        let callbacks_due = Arc::new(tokio::sync::Notify::new());
        backend.set_wake_sink(remote_wakes(
            &queue_signals,
            &job_signals,
            &timer,
            &callbacks_due,
        ));
        Engine {
            backend,
            config,
            rng: Mutex::new(seed),
            queue_signals,
            job_signals,
            counters: AtomicCounters::default(),
            timer,
            events_since_prune: AtomicU64::new(0),
            callbacks_due,
        }
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.config.clock)
    }

    pub(crate) fn now(&self) -> u64 {
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

    pub(crate) fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    pub(crate) fn queue_counters(&self) -> std::collections::BTreeMap<String, Counters> {
        self.counters.by_queue()
    }

    // ---- writes --------------------------------------------------------------

    /// Enqueues `specs` (one, or a batch all or nothing).
    pub(crate) async fn enqueue(
        &self,
        mode: Mode,
        queue: &str,
        specs: Vec<NewJob>,
        batch: bool,
    ) -> Result<Vec<Enqueued>> {
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
        loop {
            let now = self.now();
            // Each item is a replay of a stored job, a replay of an earlier
            // item of this call, or a new job.
            enum Slot {
                Stored(Box<Job>),
                New(usize),
            }
            let mut slots = Vec::with_capacity(specs.len());
            let mut changes: Vec<Change> = Vec::with_capacity(specs.len());
            let mut claimed: HashMap<&str, (usize, [u8; 16])> = HashMap::new();
            for spec in &specs {
                if let Some(key) = spec.idempotency_key.as_deref() {
                    let digest = spec.request_digest.unwrap_or_else(|| spec.digest());
                    let conflict = |id| Error::IdempotencyConflict {
                        queue: queue.to_owned(),
                        key: key.to_owned(),
                        id,
                    };
                    if let Some(&(change, first)) = claimed.get(key) {
                        if first != digest {
                            let id = changes[change].id;
                            return Err(conflict(id));
                        }
                        slots.push(Slot::New(change));
                        continue;
                    }
                    if let Some(stored) = self.backend.find_idempotent(queue, key).await? {
                        // A job stored before digests were kept replays.
                        if stored.job.request_digest.is_some_and(|d| d != digest) {
                            return Err(conflict(stored.job.id));
                        }
                        slots.push(Slot::Stored(Box::new(stored.job)));
                        continue;
                    }
                    claimed.insert(key, (changes.len(), digest));
                }
                let id = self.backend.next_job_id().await?;
                let outcome = rules::enqueue::enqueue(id, queue, spec, now);
                slots.push(Slot::New(changes.len()));
                changes.push(Change::insert(id, outcome));
            }
            let created = changes.len();
            let committed = if changes.is_empty() {
                Committed::default()
            } else {
                // Stale: a concurrent enqueue took one of the keys; decide
                // again (it is now a replay).
                match self.backend.commit(Commit::all(changes), mode).await? {
                    Some(committed) => committed,
                    None => continue,
                }
            };
            if committed.applied.len() != created {
                return Err(Error::Internal(
                    "an all-or-nothing commit applied part of an enqueue".into(),
                ));
            }
            let committed = self.announce(committed);
            // Each new job goes to its last slot by move, to earlier ones
            // (replays of it within this call) as a copy.
            let mut last_use = vec![usize::MAX; created];
            for (at, slot) in slots.iter().enumerate() {
                if let Slot::New(i) = slot {
                    last_use[*i] = at;
                }
            }
            // Gathered into a new vector: collecting in place would shrink
            // the changes' (larger) allocation, a reallocation per call.
            let mut created_jobs: Vec<Option<Job>> = Vec::with_capacity(created);
            created_jobs.extend(
                committed
                    .applied
                    .into_iter()
                    .map(|change| change.outcome.job),
            );
            let mut seen = vec![false; created];
            return slots
                .into_iter()
                .enumerate()
                .map(|(at, slot)| match slot {
                    Slot::Stored(job) => Ok(Enqueued {
                        job: *job,
                        replayed: true,
                    }),
                    Slot::New(i) => {
                        let replayed = std::mem::replace(&mut seen[i], true);
                        let job = if last_use[i] == at {
                            created_jobs[i].take()
                        } else {
                            created_jobs[i].clone()
                        };
                        job.map(|job| Enqueued { job, replayed })
                            .ok_or_else(|| Error::Internal("an enqueue without a job".into()))
                    }
                })
                .collect();
        }
    }

    /// Leases up to `opts.max_jobs` ready jobs of `queue`.
    pub(crate) async fn lease(
        &self,
        mode: Mode,
        queue: &str,
        opts: &LeaseOptions,
    ) -> Result<Vec<Leased>> {
        Ok(self.lease_round(mode, queue, opts).await?.0)
    }

    /// [`Engine::lease`], and when the rate limit's next token arrives if
    /// the limit's tokens bounded the round (unix ms): a waiting lease
    /// tries again then at the latest.
    pub(crate) async fn lease_round(
        &self,
        mode: Mode,
        queue: &str,
        opts: &LeaseOptions,
    ) -> Result<(Vec<Leased>, Option<u64>)> {
        check_queue(queue)?;
        rules::lease::validate(opts)?;
        let plan = LeasePlan {
            opts: opts.clone(),
            now: self.now(),
        };
        let committed = self.backend.lease(queue, plan, mode).await?;
        Ok(self.leased(committed))
    }

    /// Announces what a lease round committed; returns the jobs it leased
    /// and its `retry_at` (see [`Engine::lease_round`]).
    fn leased(&self, committed: Committed) -> (Vec<Leased>, Option<u64>) {
        let committed = self.announce(committed);
        let retry_at = committed.retry_at;
        // A new vector: collecting in place would shrink the changes'
        // (larger) allocation, a reallocation per lease.
        let mut leased = Vec::with_capacity(committed.applied.len());
        leased.extend(committed.applied.into_iter().filter_map(|change| {
            let job = change.outcome.job?;
            let lease_id = job.lease.as_ref()?.id;
            Some(Leased { lease_id, job })
        }));
        (leased, retry_at)
    }

    /// How long a waiting lease may sleep before trying again because of
    /// `retry_at` (see [`Engine::lease_round`]): the real time until then
    /// on the system clock; `None` with a manual clock (its advances wake
    /// waiters) or without a retry time.
    pub(crate) fn retry_in(&self, retry_at: Option<u64>) -> Option<Duration> {
        retry_at.and_then(|at| self.config.clock.sleep_hint(at))
    }

    /// Applies `rule` to the stored job `id` and commits its outcome if the
    /// record did not change meanwhile (else decides again).
    pub(crate) async fn transition(
        &self,
        mode: Mode,
        id: JobId,
        transition: Transition,
        rule: impl Fn(&Job, u64) -> Result<Outcome, Refusal>,
    ) -> Result<Job> {
        self.transition_held(mode, id, None, transition, rule).await
    }

    /// [`Engine::transition`] by the holder of `lease` (if any): a refusal
    /// of the lease says why it is not held.
    pub(crate) async fn transition_held(
        &self,
        mode: Mode,
        id: JobId,
        lease: Option<LeaseId>,
        transition: Transition,
        rule: impl Fn(&Job, u64) -> Result<Outcome, Refusal>,
    ) -> Result<Job> {
        loop {
            let now = self.now();
            let loaded = self.backend.load(id).await?.ok_or(Error::NotFound { id })?;
            let outcome = rule(&loaded.job, now).map_err(|refusal| {
                refusal.into_error(&loaded.job, lease, now, transition.as_str())
            })?;
            let change = Change::of(loaded, outcome);
            let Some(committed) = self.backend.commit(Commit::all(vec![change]), mode).await?
            else {
                continue;
            };
            let committed = self.announce(committed);
            return committed
                .applied
                .into_iter()
                .next()
                .and_then(|change| change.outcome.job)
                .ok_or_else(|| Error::Internal("a transition without a job".into()));
        }
    }

    pub(crate) async fn heartbeat(
        &self,
        mode: Mode,
        id: JobId,
        lease: LeaseId,
        lease_ms: Option<u64>,
        progress: Option<&[u8]>,
    ) -> Result<Job> {
        if let Some(ms) = lease_ms {
            rules::lease::validate_lease_ms(ms)?;
        }
        if let Some(progress) = progress {
            rules::heartbeat::validate_progress(progress)?;
        }
        self.transition_held(mode, id, Some(lease), Transition::Heartbeat, |job, now| {
            rules::heartbeat::heartbeat(job, lease, lease_ms, progress, now)
        })
        .await
    }

    // ---- callbacks ------------------------------------------------------------

    /// Claims up to `limit` due callback attempts (see
    /// [`rules::callback::claim`]); each is given up as lost after
    /// `lost_after_ms` unless settled.
    pub(crate) async fn claim_callbacks(
        &self,
        mode: Mode,
        limit: usize,
        lost_after_ms: u64,
    ) -> Result<Vec<Job>> {
        let now = self.now();
        let due = self.backend.due(TimerKind::Callback, now, limit).await?;
        let mut changes = Vec::with_capacity(due.len());
        for entry in due {
            let Some(loaded) = self.backend.load(entry.id).await? else {
                continue;
            };
            if let Ok(outcome) = rules::callback::claim(&loaded.job, now, lost_after_ms) {
                changes.push(Change::of(loaded, outcome));
            }
        }
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let committed = self
            .backend
            .commit(Commit::each(changes), mode)
            .await?
            .unwrap_or_default();
        let committed = self.announce(committed);
        Ok(committed
            .applied
            .into_iter()
            .filter_map(|change| change.outcome.job)
            .collect())
    }

    /// Makes every callback attempt left under way by an earlier
    /// dispatcher due now (see [`rules::callback::recover`]). Returns how
    /// many. On a store other processes share, none: an attempt under way
    /// may be another server's, and one whose dispatcher died is claimed
    /// again when its claim is given up as lost.
    pub(crate) async fn recover_callbacks(&self, mode: Mode) -> Result<usize> {
        if self.backend.shared() {
            return Ok(0);
        }
        let page = Page::Callbacks {
            status: crate::CallbackStatus::Pending,
        };
        let mut after = None;
        let mut recovered = 0;
        loop {
            let ids = self.backend.page(&page, after, MAX_BATCH).await?;
            let Some(last) = ids.last().copied() else {
                return Ok(recovered);
            };
            let now = self.now();
            let mut changes = Vec::new();
            for id in &ids {
                let Some(loaded) = self.backend.load(*id).await? else {
                    continue;
                };
                if let Ok(outcome) = rules::callback::recover(&loaded.job, now) {
                    changes.push(Change::of(loaded, outcome));
                }
            }
            if !changes.is_empty() {
                let committed = self
                    .backend
                    .commit(Commit::each(changes), mode)
                    .await?
                    .unwrap_or_default();
                recovered += committed.applied.len();
                self.announce(committed);
            }
            after = Some(last);
        }
    }

    /// Settles attempt `attempt` of delivery `delivery` of job `id`.
    pub(crate) async fn settle_callback(
        &self,
        mode: Mode,
        id: JobId,
        delivery: u32,
        attempt: u32,
        result: &rules::callback::DeliveryResult,
    ) -> Result<Job> {
        let jitter = self.jitter();
        self.transition(mode, id, Transition::Callback, |job, now| {
            rules::callback::settle(job, delivery, attempt, result, jitter, now)
        })
        .await
    }

    /// Starts a new delivery of job `id`'s callback.
    pub(crate) async fn retry_callback(&self, mode: Mode, id: JobId) -> Result<Job> {
        self.transition(mode, id, Transition::Callback, rules::callback::retry)
            .await
    }

    /// When the earliest callback attempt is due.
    pub(crate) async fn next_callback_due(&self) -> Result<Option<u64>> {
        self.backend.first_due(TimerKind::Callback).await
    }

    pub(crate) async fn complete(
        &self,
        mode: Mode,
        id: JobId,
        lease: LeaseId,
        result: Option<Vec<u8>>,
    ) -> Result<Job> {
        self.check_result(result.as_deref())?;
        self.transition_held(mode, id, Some(lease), Transition::Complete, |job, now| {
            rules::complete::complete(job, lease, result.clone(), now)
        })
        .await
    }

    pub(crate) async fn fail(
        &self,
        mode: Mode,
        id: JobId,
        lease: LeaseId,
        failure: &Failure,
    ) -> Result<Job> {
        rules::fail::validate(failure)?;
        let jitter = self.jitter();
        self.transition_held(mode, id, Some(lease), Transition::Fail, |job, now| {
            rules::fail::fail(job, lease, failure, jitter, now)
        })
        .await
    }

    /// A completion's result within the limits (size, JSON depth).
    fn check_result(&self, result: Option<&[u8]>) -> Result<()> {
        let limit = self.config.max_payload;
        if let Some(size) = result.map(<[u8]>::len).filter(|size| *size > limit) {
            return Err(Error::TooLarge {
                what: "result",
                size,
                limit,
            });
        }
        if let Some(result) = result {
            queue_proto::limits::check_json_depth(result)
                .map_err(|message| Error::invalid("result", message))?;
        }
        Ok(())
    }

    /// Refuses a settlement whose input is out of bounds (a result too
    /// large or too deep, a retry delay too long), as its single call
    /// would.
    pub(crate) fn check_settlement(&self, settlement: &Settlement) -> Result<()> {
        match &settlement.outcome {
            Settle::Complete { result } => self.check_result(result.as_deref()),
            Settle::Fail(failure) => rules::fail::validate(failure),
        }
    }

    /// Settles the leased jobs of `queue` in `items`, each as
    /// [`Engine::complete`] or [`Engine::fail`] would, in as few commits
    /// as the items allow: every item is decided against its stored record
    /// and all of them go in one [`Policy::EachIfCurrent`](crate::backend::Policy)
    /// commit (one durable flush); an item whose record moved on meanwhile
    /// is decided again in a next commit, as is the second item about a
    /// job already in the request (so that it is decided against what the
    /// first one left). Input out of bounds refuses the whole call before
    /// anything is written. Returns one result per item, in order: the job
    /// as settled, or why it was not ([`Error::NotFound`] also for a job of
    /// another queue, [`Error::LeaseLost`], [`Error::Conflict`]).
    ///
    /// With `lease`, one lease round on `queue` goes in the same atomic
    /// write as the first commit ([`Backend::commit_and_lease`]: still one
    /// durable flush), seeing its settlements (a freed `max_leased` or
    /// group slot is taken at once). Items decided again in a later commit
    /// land after the round; when no item needs a commit (none, or every
    /// one refused), the round runs alone after the items are decided.
    pub(crate) async fn settle(
        &self,
        mode: Mode,
        queue: &str,
        items: &[Settlement],
        lease: Option<&LeaseOptions>,
    ) -> Result<SettledAndLeased> {
        check_queue(queue)?;
        if items.len() > MAX_BATCH {
            return Err(Error::invalid(
                "settlements",
                format!("at most {MAX_BATCH} in one call, got {}", items.len()),
            ));
        }
        for item in items {
            self.check_settlement(item)?;
        }
        if let Some(opts) = lease {
            rules::lease::validate(opts)?;
        }
        // The lease round still to run: with the first commit.
        let mut lease = lease;
        let mut leased = Vec::new();
        let mut results: Vec<Option<Result<Job>>> = items.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..items.len()).collect();
        while !pending.is_empty() {
            let now = self.now();
            let mut in_round = std::collections::HashSet::new();
            let mut later = Vec::new();
            let mut changes = Vec::new();
            let mut decided = Vec::new();
            for index in pending {
                let item = &items[index];
                if !in_round.insert(item.id) {
                    later.push(index);
                    continue;
                }
                let loaded = match self.backend.load(item.id).await? {
                    Some(loaded) if loaded.job.queue == queue => loaded,
                    Some(_) | None => {
                        results[index] = Some(Err(Error::NotFound { id: item.id }));
                        continue;
                    }
                };
                let lease = item.lease_id;
                let (transition, decision) = match &item.outcome {
                    Settle::Complete { result } => (
                        Transition::Complete,
                        rules::complete::complete(&loaded.job, lease, result.clone(), now),
                    ),
                    Settle::Fail(failure) => (
                        Transition::Fail,
                        rules::fail::fail(&loaded.job, lease, failure, self.jitter(), now),
                    ),
                };
                match decision {
                    Ok(outcome) => {
                        changes.push(Change::of(loaded, outcome));
                        decided.push(index);
                    }
                    Err(refusal) => {
                        let error =
                            refusal.into_error(&loaded.job, Some(lease), now, transition.as_str());
                        results[index] = Some(Err(error));
                    }
                }
            }
            if !changes.is_empty() {
                let committed = match lease.take() {
                    Some(opts) => {
                        let plan = LeasePlan {
                            opts: opts.clone(),
                            now,
                        };
                        let both = self
                            .backend
                            .commit_and_lease(Commit::each(changes), queue, plan, mode)
                            .await?;
                        match both {
                            Some((committed, round)) => {
                                let committed = self.announce(committed);
                                leased = self.leased(round).0;
                                committed
                            }
                            // Nothing applied, no round run: the round
                            // goes with the next commit.
                            None => {
                                lease = Some(opts);
                                Committed::default()
                            }
                        }
                    }
                    None => {
                        let committed = self
                            .backend
                            .commit(Commit::each(changes), mode)
                            .await?
                            .unwrap_or_default();
                        self.announce(committed)
                    }
                };
                let mut applied: HashMap<JobId, Option<Job>> = committed
                    .applied
                    .into_iter()
                    .map(|change| (change.id, change.outcome.job))
                    .collect();
                for index in decided {
                    match applied.remove(&items[index].id) {
                        Some(Some(job)) => results[index] = Some(Ok(job)),
                        Some(None) => {
                            results[index] =
                                Some(Err(Error::Internal("a settlement without a job".into())));
                        }
                        // Stale: the record moved on; decide again.
                        None => later.push(index),
                    }
                }
            }
            later.sort_unstable();
            pending = later;
        }
        if let Some(opts) = lease {
            leased = self.lease_round(mode, queue, opts).await?.0;
        }
        let results = results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| Error::Internal("a settlement left undecided".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SettledAndLeased { results, leased })
    }

    pub(crate) async fn release(&self, mode: Mode, id: JobId, lease: LeaseId) -> Result<Job> {
        self.transition_held(mode, id, Some(lease), Transition::Release, |job, now| {
            rules::release::release(job, lease, now)
        })
        .await
    }

    pub(crate) async fn cancel(&self, mode: Mode, id: JobId) -> Result<Job> {
        self.transition(mode, id, Transition::Cancel, rules::cancel::cancel)
            .await
    }

    /// Requeue or purge the dead jobs `ids` of `queue` (all of them with
    /// `None`), each by `rule`; jobs that are not dead jobs of the queue are
    /// skipped. Works in commits of at most [`DEAD_BATCH`] jobs.
    pub(crate) async fn on_dead(
        &self,
        mode: Mode,
        queue: &str,
        ids: Option<&[JobId]>,
        rule: impl Fn(&Job, u64) -> Result<Outcome, Refusal>,
    ) -> Result<u64> {
        check_queue(queue)?;
        if let Some(ids) = ids {
            if ids.len() > MAX_BATCH {
                return Err(Error::invalid(
                    "ids",
                    format!("at most {MAX_BATCH} ids, got {}", ids.len()),
                ));
            }
            return self.each_dead(mode, queue, ids, &rule).await;
        }
        let page = Page::State {
            queue: queue.to_owned(),
            state: JobState::Dead,
        };
        let mut total = 0;
        let mut after = None;
        loop {
            let ids = self.backend.page(&page, after, DEAD_BATCH).await?;
            let Some(last) = ids.last().copied() else {
                return Ok(total);
            };
            total += self.each_dead(mode, queue, &ids, &rule).await?;
            after = Some(last);
        }
    }

    async fn each_dead(
        &self,
        mode: Mode,
        queue: &str,
        ids: &[JobId],
        rule: &impl Fn(&Job, u64) -> Result<Outcome, Refusal>,
    ) -> Result<u64> {
        let now = self.now();
        let mut changes = Vec::new();
        for id in ids {
            let Some(loaded) = self.backend.load(*id).await? else {
                continue;
            };
            if loaded.job.queue != queue || loaded.job.state != JobState::Dead {
                continue;
            }
            if let Ok(outcome) = rule(&loaded.job, now) {
                changes.push(Change::of(loaded, outcome));
            }
        }
        self.commit_each(mode, changes).await
    }

    /// Commits each change that is still current; returns how many were.
    async fn commit_each(&self, mode: Mode, changes: Vec<Change>) -> Result<u64> {
        if changes.is_empty() {
            return Ok(0);
        }
        let committed = self
            .backend
            .commit(Commit::each(changes), mode)
            .await?
            .unwrap_or_default();
        Ok(self.announce(committed).applied.len() as u64)
    }

    /// Sets or clears the paused flag of `queue`.
    pub(crate) async fn set_paused(
        &self,
        mode: Mode,
        queue: &str,
        paused: bool,
    ) -> Result<QueueStats> {
        let update = SettingsUpdate {
            paused: Some(paused),
            ..SettingsUpdate::default()
        };
        self.update_settings(mode, queue, update).await
    }

    /// Applies `update` to the settings of `queue` (validated first: a bad
    /// limit changes nothing), atomically with what is stored, and wakes
    /// the queue's waiting leases if the update may let them take more.
    pub(crate) async fn update_settings(
        &self,
        mode: Mode,
        queue: &str,
        mut update: SettingsUpdate,
    ) -> Result<QueueStats> {
        check_queue(queue)?;
        update.validate()?;
        update.now = self.now();
        let before = self.backend.settings(queue).await?;
        let commit = Commit {
            changes: Vec::new(),
            settings: vec![(queue.to_owned(), update.clone())],
            schedules: Vec::new(),
            policy: crate::backend::Policy::AllOrNothing,
        };
        self.backend
            .commit(commit, mode)
            .await?
            .ok_or_else(|| Error::Internal("a settings commit went stale".into()))?;
        // `before` may be older than what the commit read; waking a waiter
        // that finds nothing new costs one lease round, while missing a
        // wake-up would leave it asleep with capacity free.
        if update.may_free_capacity(&before) || update.paused == Some(false) {
            self.queue_signals.bump(&queue.to_owned());
        }
        self.stats(queue).await
    }

    // ---- reads ------------------------------------------------------------------

    pub(crate) async fn get(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.backend.load(id).await?.map(|loaded| loaded.job))
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        check_queue(queue)?;
        let counts = self.backend.counts(queue).await?;
        let settings = self.backend.settings(queue).await?;
        let oldest = self.backend.oldest_ready(queue).await?;
        let now = self.now();
        let limits = settings.limits;
        Ok(QueueStats {
            queue: queue.to_owned(),
            paused: settings.paused,
            limits,
            scheduled: counts.get(JobState::Scheduled),
            ready: counts.get(JobState::Ready),
            leased: counts.get(JobState::Leased),
            completed: counts.get(JobState::Completed),
            dead: counts.get(JobState::Dead),
            cancelled: counts.get(JobState::Cancelled),
            oldest_ready_age_ms: oldest.map(|run_at| now.saturating_sub(run_at)),
        })
    }

    /// The history of `queue` that `query` asks for (see
    /// [`rules::history`]): one point per step, steps without activity
    /// included. An unknown queue, or a store with history off, reads as
    /// zeros.
    pub(crate) async fn history(&self, queue: &str, query: &HistoryQuery) -> Result<History> {
        check_queue(queue)?;
        let plan = rules::history::plan(query, self.now())?;
        let range = self
            .backend
            .history(queue, plan.first, plan.last_minute())
            .await?;
        Ok(History {
            step_ms: plan.step,
            points: rules::history::points(&plan, range.before, &range.minutes),
        })
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        let mut all = Vec::new();
        for name in self.backend.queue_names().await? {
            all.push(self.stats(&name).await?);
        }
        Ok(all)
    }

    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        self.jobs(queue, JobState::Dead, after, limit).await
    }

    /// The jobs of `queue` in `state` after `after`, oldest first.
    pub(crate) async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        check_queue(queue)?;
        let page = Page::State {
            queue: queue.to_owned(),
            state,
        };
        self.page(&page, after, limit).await
    }

    /// The jobs with `correlation_id`, in any queue, after `after`, oldest
    /// first.
    pub(crate) async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        rules::enqueue::check_correlation_id(correlation_id)?;
        let page = Page::Correlation {
            id: correlation_id.to_owned(),
        };
        self.page(&page, after, limit).await
    }

    /// The jobs of `page` after `after`, oldest first. The ids come from
    /// the backend's index, the jobs from their records, read one by one
    /// afterwards: a job that left the page in between (removed, or moved
    /// to another state or callback state) is left out of the page, so
    /// every job returned was on it when read. `next` is the last id the
    /// index gave, left out or not, so that paging goes on past it.
    pub(crate) async fn page(
        &self,
        page: &Page,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage> {
        if !(1..=MAX_BATCH).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1..={MAX_BATCH}"),
            ));
        }
        let mut ids = self.backend.page(page, after, limit + 1).await?;
        let next = (ids.len() > limit).then(|| ids[limit - 1]);
        ids.truncate(limit);
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(loaded) = self.backend.load(id).await? {
                if page.holds(&loaded.job) {
                    jobs.push(loaded.job);
                }
            }
        }
        Ok(JobPage { jobs, next })
    }

    pub(crate) async fn verify(&self) -> Result<Verification> {
        self.backend.verify().await
    }

    // ---- timers ---------------------------------------------------------------------

    fn retention_ms(&self, kind: TimerKind) -> u64 {
        let retention = &self.config.retention;
        match kind {
            TimerKind::RetainCompleted => millis(retention.completed),
            TimerKind::RetainDead => millis(retention.dead),
            TimerKind::RetainCancelled => millis(retention.cancelled),
            TimerKind::Promote | TimerKind::Expire | TimerKind::Callback | TimerKind::Ttl => 0,
        }
    }

    /// One pass of the timers over everything due now, and the pruning of
    /// the event log.
    pub(crate) async fn run_due(&self, mode: Mode) -> Result<DueReport> {
        let now = self.now();
        let mut report = DueReport::default();
        for kind in TimerKind::ALL {
            // Callback attempts are the dispatcher's to make.
            if kind == TimerKind::Callback {
                continue;
            }
            let retention = self.retention_ms(kind);
            if retention > now {
                continue;
            }
            let upto = now - retention;
            // Bounded: a pass handles what is due now; entries that keep
            // losing races are taken by the next pass.
            for _ in 0..1024 {
                let due = self.backend.due(kind, upto, TIMER_BATCH).await?;
                let mut changes = Vec::with_capacity(due.len());
                for entry in &due {
                    let Some(loaded) = self.backend.load(entry.id).await? else {
                        continue;
                    };
                    let outcome = match kind {
                        TimerKind::Promote => rules::promote::promote(&loaded.job, now),
                        TimerKind::Expire => match entry.deadline.lease {
                            Some(lease) => {
                                rules::expire::expire(&loaded.job, lease, self.jitter(), now)
                            }
                            None => Err(Refusal::LeaseLost),
                        },
                        TimerKind::RetainCompleted
                        | TimerKind::RetainDead
                        | TimerKind::RetainCancelled => {
                            rules::retain::retain(&loaded.job, retention, now)
                        }
                        TimerKind::Ttl => rules::ttl::expire_unleased(&loaded.job, now),
                        TimerKind::Callback => continue,
                    };
                    if let Ok(outcome) = outcome {
                        changes.push(Change::of(loaded, outcome));
                    }
                }
                let applied = self.commit_each(mode, changes).await?;
                match kind {
                    TimerKind::Promote => report.promoted += applied,
                    TimerKind::Expire => report.expired += applied,
                    TimerKind::Ttl => report.ttl_expired += applied,
                    TimerKind::RetainCompleted
                    | TimerKind::RetainDead
                    | TimerKind::RetainCancelled => report.removed += applied,
                    TimerKind::Callback => {}
                }
                if due.len() < TIMER_BATCH || applied == 0 {
                    break;
                }
            }
        }
        report.ticks = self.run_schedules(mode, now).await?;
        self.events_since_prune.store(0, Ordering::Relaxed);
        let before = now.saturating_sub(millis(self.config.event_retention));
        report.pruned_events = self
            .backend
            .prune_events(before, self.config.max_events, mode)
            .await?;
        for kind in TimerKind::ALL {
            if kind == TimerKind::Callback {
                continue;
            }
            if let Some(at) = self.backend.first_due(kind).await? {
                let due = at.saturating_add(self.retention_ms(kind));
                report.next_due = Some(report.next_due.map_or(due, |d| d.min(due)));
            }
        }
        if let Some(at) = self.backend.first_schedule_due().await? {
            report.next_due = Some(report.next_due.map_or(at, |d| d.min(at)));
        }
        if let Some((_, at)) = self.backend.event_bounds().await?.oldest {
            let due = at.saturating_add(millis(self.config.event_retention));
            report.next_due = Some(report.next_due.map_or(due, |d| d.min(due)));
        }
        Ok(report)
    }

    // ---- announcing -------------------------------------------------------------------

    /// After a durable commit: counts the transitions, wakes the waiters
    /// they concern, and wakes the timer for any deadline earlier than the
    /// one it sleeps towards (retention included).
    pub(crate) fn announce(&self, mut committed: Committed) -> Committed {
        let mut next_event = committed.first_event;
        let mut callbacks = false;
        let mut counted_queue = None;
        for change in &mut committed.applied {
            let count = change.outcome.events().count() as u64;
            if count > 0 {
                next_event += count;
                if let Some(job) = change.outcome.job.as_mut() {
                    job.last_event_id = Some(next_event - 1);
                }
            }
            let old = change.old.as_ref();
            let new = change.new_job();
            let new_state = new.map(|job| job.state);
            let changed = new_state.is_some() && old.map(|job| job.state) != new_state;
            let transition = change.outcome.transition;
            self.counters
                .record(&mut counted_queue, transition, old, new);
            let Some(job) = new else {
                continue;
            };
            for deadline in rules::deadlines(job) {
                match deadline.kind {
                    TimerKind::Callback => callbacks = true,
                    TimerKind::Promote
                    | TimerKind::Expire
                    | TimerKind::Ttl
                    | TimerKind::RetainCompleted
                    | TimerKind::RetainDead
                    | TimerKind::RetainCancelled => self.timer.deadline_added(
                        deadline.at.saturating_add(self.retention_ms(deadline.kind)),
                    ),
                }
            }
            if !changed {
                continue;
            }
            log_change(job, transition);
            // A job that left `leased` frees capacity under the queue's
            // limits (max_leased, its group's): a waiting lease may now
            // take one.
            let left_leased = old.is_some_and(|job| job.state == JobState::Leased);
            if job.state == JobState::Ready || left_leased {
                self.queue_signals.bump(&job.queue);
            }
            if job.state.is_terminal() {
                self.job_signals.bump(&job.id);
            }
        }
        if callbacks {
            self.callbacks_due.notify_one();
        }
        let events = committed.events;
        if events > 0 {
            let every = (self.config.max_events / 8).max(1);
            if self.events_since_prune.fetch_add(events, Ordering::Relaxed) + events >= every {
                self.events_since_prune.store(0, Ordering::Relaxed);
                self.timer.wake();
            }
        }
        committed
    }
}

/// What another process's commit wakes here (a shared database's
/// notifications): the same waiters [`Engine::announce`] wakes for this
/// process's own commits.
fn remote_wakes(
    queues: &Arc<Signals<String>>,
    jobs: &Arc<Signals<JobId>>,
    timer: &Arc<TimerWake>,
    callbacks: &Arc<tokio::sync::Notify>,
) -> Arc<dyn Fn(&crate::backend::wake::Wake) + Send + Sync> {
    let (queues, jobs, timer, callbacks) = (
        Arc::downgrade(queues),
        Arc::downgrade(jobs),
        Arc::downgrade(timer),
        Arc::downgrade(callbacks),
    );
    Arc::new(move |wake| {
        if let Some(queues) = queues.upgrade() {
            if wake.all {
                queues.bump_all();
            }
            for queue in &wake.queues {
                queues.bump(queue);
            }
        }
        if let Some(jobs) = jobs.upgrade() {
            if wake.all {
                jobs.bump_all();
            }
            for id in &wake.jobs {
                jobs.bump(id);
            }
        }
        if let Some(timer) = timer.upgrade() {
            if wake.timer || wake.all {
                timer.wake();
            } else if let Some(at) = wake.deadline {
                timer.deadline_added(at);
            }
        }
        if wake.callbacks || wake.all {
            if let Some(callbacks) = callbacks.upgrade() {
                callbacks.notify_one();
            }
        }
    })
}

/// One log line per state change of a job, with its correlation id: at INFO
/// for terminal states (dead letters among them) and lease expiries, at
/// DEBUG for the rest.
fn log_change(job: &Job, transition: Transition) {
    let correlation_id = job.correlation_id.as_deref().unwrap_or("");
    if job.state.is_terminal() || transition == Transition::Expire {
        tracing::info!(job = %job.id, queue = %job.queue, state = %job.state,
            attempts = job.attempts, transition = transition.as_str(), correlation_id,
            last_error = job.last_error.as_deref().unwrap_or(""),
            "job state changed");
    } else {
        tracing::debug!(job = %job.id, queue = %job.queue, state = %job.state,
            attempts = job.attempts, transition = transition.as_str(), correlation_id,
            "job state changed");
    }
}
