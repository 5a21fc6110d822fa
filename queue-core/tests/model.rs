//! Model-based test: random operation sequences run against a real [`Queue`]
//! (manual clock, background timers off, seeded jitter) and against a plain
//! in-memory model of the state machine written from the transition rules.
//!
//! After every step the operation's outcome (values and error variants), the
//! events it published, `verify()`, the stats of both queues, the queue list,
//! the counters and every job ever created (`get`, whole records) must agree
//! with the model. Among the steps are reopens of the data directory: nothing
//! acknowledged may be lost.
//!
//! The sequences come from proptest with a fixed seed, so a run is
//! reproducible; a failure is shrunk and reported with the step that went
//! wrong, what differed, and the operations up to that step.
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override the case count and the
//! seed (e.g. `PROPTEST_RNG_SEED=3 cargo test -p queue-core --test tests
//! model`). The default run also checks that the sequences reached every
//! situation in [`MUST_COVER`].
//!
//! The one place where the model cannot predict the store is the jitter of
//! the retry back-off: there it checks that `run_at` lies in the ±20 % window
//! of `backoff_ms * 2^(attempts-1)` (capped at one hour), then adopts it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};
use queue_core::blocking::{Queue, Subscription};
use queue_core::{
    Config, Counters, DueReport, Error, Event, Failure, Job, JobId, JobState, Lease, LeaseId,
    LeaseOptions, ManualClock, NewJob, QueueStats, RUN_TIME_BOUNDS_MS, Retention, Transition,
};
use queue_proto::limits::{MAX_BACKOFF_MS, MAX_DELAY_MS, MAX_IDEMPOTENCY_KEY_LEN};

use crate::common::{self, T0};

/// Events outlive every run of the model (pruning has tests of its own).
const EVENT_RETENTION_MS: u64 = 100 * 365 * 24 * 3_600_000;
const EVENT_RETENTION: Duration = Duration::from_millis(EVENT_RETENTION_MS);

/// The event the model expects for `job`'s new state (unnumbered).
fn event_of(job: &Job, transition: Transition) -> Event {
    Event {
        event_id: 0,
        id: job.id,
        queue: job.queue.clone(),
        state: job.state,
        attempts: job.attempts,
        at: job.updated_at,
        transition,
        correlation_id: job.correlation_id.clone(),
        // Terminal events carry the outcome.
        result: if job.state == JobState::Completed {
            job.result.clone()
        } else {
            None
        },
        last_error: if job.state.is_terminal() {
            job.last_error.clone()
        } else {
            None
        },
        progress: None,
    }
}

/// Two queues, one name a prefix of the other (keys must not bleed across).
const QUEUES: [&str; 2] = ["mail", "mail.bulk"];
/// Idempotency keys, few so that replays happen.
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// Names every operation must refuse.
const BAD_QUEUES: [&str; 3] = ["", "a/b", "with space"];
/// Correlation ids of unkeyed jobs (one in three has none), shared by
/// both queues so that listing by correlation crosses them.
const CORRELATIONS: [&str; 2] = ["req-a", "req-b"];
/// Error text of a failure reported by the test's "worker".
const BOOM: &str = "boom";
/// Error text of an expiry (see `rules::expire`).
const LEASE_EXPIRED: &str = "lease expired";
/// Default payload limit of the core.
const MAX_PAYLOAD: usize = 1024 * 1024;
/// A lease id never handed out and a job id never created.
const BOGUS: u64 = u64::MAX;

/// Short retention, so that removals (and the reuse of idempotency keys) occur.
fn brief_retention() -> Retention {
    Retention {
        completed: Duration::from_secs(60),
        dead: Duration::from_secs(120),
        cancelled: Duration::from_secs(90),
    }
}

// ---- coverage -------------------------------------------------------------------

/// How often each interesting situation occurred over the whole run, so that
/// the test can insist that it exercised them (a model test whose generator
/// never reaches a path proves nothing about it).
static COVERAGE: Mutex<BTreeMap<(&str, &str), u64>> = Mutex::new(BTreeMap::new());

fn hit(what: &'static str, detail: &'static str) {
    *COVERAGE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((what, detail))
        .or_default() += 1;
}

/// Situations every full run must have met at least once.
const MUST_COVER: &[(&str, &str)] = &[
    ("enqueue", "new"),
    ("enqueue", "replay"),
    ("enqueue", "replay within the batch"),
    ("enqueue", "key free again after removal"),
    ("enqueue", "refused"),
    ("enqueue", "idempotency conflict"),
    ("batch", "idempotency conflict within the batch"),
    ("batch", "ok"),
    ("batch", "refused"),
    ("lease", "several"),
    ("lease", "priority tie"),
    ("lease", "older run_at before older id"),
    ("lease", "paused with ready jobs"),
    ("lease", "refused"),
    ("heartbeat", "ok"),
    ("heartbeat", "lease lost"),
    ("complete", "ok"),
    ("complete", "lease lost"),
    ("complete", "not found"),
    ("fail", "ok"),
    ("fail", "lease lost"),
    ("fail", "dead"),
    ("fail", "back-off"),
    ("fail", "retry_in"),
    ("fail", "ready at once"),
    ("fail", "refused"),
    ("release", "ok"),
    ("release", "lease lost"),
    ("any holder", "expired lease not yet reaped"),
    ("cancel", "ok"),
    ("cancel", "leased"),
    ("cancel", "conflict"),
    ("run_due", "promoted"),
    ("run_due", "expired to retry"),
    ("run_due", "expired to dead"),
    ("run_due", "removed"),
    ("requeue_dead", "some"),
    ("purge_dead", "some"),
    ("dead_letters", "several pages"),
    ("reopen", "with leased jobs"),
    ("reopen", "with scheduled jobs"),
];

// ---- the operations ---------------------------------------------------------

/// When a new job may run.
#[derive(Debug, Clone, Copy)]
enum When {
    Now,
    Delay(u64),
    /// `run_at` = now + this (negative: in the past).
    At(i64),
}

/// A deliberate defect of an enqueued item.
#[derive(Debug, Clone, Copy)]
enum Invalid {
    ZeroAttempts,
    TooManyAttempts,
    EmptyKey,
    LongKey,
    DelayAndRunAt,
    BackoffTooLong,
    DelayTooFar,
    RunAtTooFar,
    PayloadTooLarge,
}

impl Invalid {
    const ALL: [Invalid; 9] = [
        Invalid::ZeroAttempts,
        Invalid::TooManyAttempts,
        Invalid::EmptyKey,
        Invalid::LongKey,
        Invalid::DelayAndRunAt,
        Invalid::BackoffTooLong,
        Invalid::DelayTooFar,
        Invalid::RunAtTooFar,
        Invalid::PayloadTooLarge,
    ];

    fn refusal(self) -> Refused {
        match self {
            Invalid::ZeroAttempts | Invalid::TooManyAttempts => Refused::Invalid("max_attempts"),
            Invalid::EmptyKey | Invalid::LongKey => Refused::Invalid("idempotency_key"),
            Invalid::DelayAndRunAt | Invalid::DelayTooFar => Refused::Invalid("delay_ms"),
            Invalid::BackoffTooLong => Refused::Invalid("backoff_ms"),
            Invalid::RunAtTooFar => Refused::Invalid("run_at"),
            Invalid::PayloadTooLarge => Refused::TooLarge("payload"),
        }
    }
}

/// One item to enqueue.
#[derive(Debug, Clone)]
struct Spec {
    priority: i32,
    when: When,
    max_attempts: u32,
    backoff_ms: u64,
    key: Option<usize>,
    invalid: Option<Invalid>,
}

/// Which lease id a holder operation presents.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// A job that is leased in the model, with its current lease id (which
    /// may have reached its deadline already).
    Live,
    /// One of the lease ids the job ever had.
    Old(usize),
    /// A lease id handed out for another job.
    Foreign(usize),
    /// A lease id never handed out.
    Bogus,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        queue: usize,
        spec: Spec,
    },
    Batch {
        queue: usize,
        specs: Vec<Spec>,
    },
    Lease {
        queue: usize,
        max_jobs: u32,
        lease_ms: u64,
        worker: bool,
    },
    Heartbeat {
        job: usize,
        pick: Pick,
        lease_ms: Option<u64>,
    },
    Complete {
        job: usize,
        pick: Pick,
        result: bool,
    },
    Fail {
        job: usize,
        pick: Pick,
        retryable: bool,
        retry_in: Option<u64>,
    },
    Release {
        job: usize,
        pick: Pick,
    },
    Cancel {
        job: usize,
    },
    /// Moves the clock without running the timers.
    Tick {
        ms: u64,
    },
    /// Moves the clock, then `run_due`.
    Advance {
        ms: u64,
    },
    Pause {
        queue: usize,
    },
    Resume {
        queue: usize,
    },
    RequeueDead {
        queue: usize,
        jobs: Option<Vec<usize>>,
    },
    PurgeDead {
        queue: usize,
    },
    DeadLetters {
        queue: usize,
        limit: usize,
    },
    Get {
        job: usize,
    },
    Stats {
        queue: usize,
    },
    BadQueue {
        name: usize,
    },
    Reopen,
}

#[derive(Debug, Clone)]
struct Case {
    short_retention: bool,
    ops: Vec<Op>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let when = prop_oneof![
        4 => Just(When::Now),
        3 => prop::sample::select(vec![0u64, 500, 5_000, 60_000]).prop_map(When::Delay),
        2 => prop::sample::select(vec![-5_000i64, -1, 0, 1, 2_000]).prop_map(When::At),
    ];
    (
        prop::sample::select(vec![-1i32, 0, 0, 5]),
        when,
        1..=3u32,
        prop::sample::select(vec![0u64, 100, 1_000, 20_000]),
        prop::option::weighted(0.5, 0..KEYS.len()),
        prop::option::weighted(0.04, prop::sample::select(Invalid::ALL.to_vec())),
    )
        .prop_map(
            |(priority, when, max_attempts, backoff_ms, key, invalid)| Spec {
                priority,
                when,
                max_attempts,
                backoff_ms,
                key,
                invalid,
            },
        )
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        10 => Just(Pick::Live),
        2 => any::<usize>().prop_map(Pick::Old),
        1 => any::<usize>().prop_map(Pick::Foreign),
        1 => Just(Pick::Bogus),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let queue = || 0..QUEUES.len();
    let job = || any::<usize>();
    prop_oneof![
        14 => (queue(), spec()).prop_map(|(queue, spec)| Op::Enqueue { queue, spec }),
        4 => (queue(), prop_oneof![
            1 => Just(Vec::new()),
            9 => prop::collection::vec(spec(), 1..=4),
        ])
            .prop_map(|(queue, specs)| Op::Batch { queue, specs }),
        12 => (
            queue(),
            prop_oneof![1 => Just(0u32), 19 => 1..=3u32],
            prop::sample::select(vec![1u64, 100, 1_000, 30_000, 30_000, 300_000]),
            any::<bool>(),
        )
            .prop_map(|(queue, max_jobs, lease_ms, worker)| Op::Lease {
                queue,
                max_jobs,
                lease_ms,
                worker,
            }),
        5 => (
            job(),
            pick(),
            prop::sample::select(vec![
                None,
                None,
                None,
                Some(0u64),
                Some(500),
                Some(10_000),
            ]),
        )
            .prop_map(|(job, pick, lease_ms)| Op::Heartbeat { job, pick, lease_ms }),
        8 => (job(), pick(), any::<bool>())
            .prop_map(|(job, pick, result)| Op::Complete { job, pick, result }),
        8 => (
            job(),
            pick(),
            prop::bool::weighted(0.8),
            prop::sample::select(vec![
                None,
                None,
                None,
                None,
                Some(0u64),
                Some(1_500),
                Some(1_500),
                Some(MAX_DELAY_MS + 1),
            ]),
        )
            .prop_map(|(job, pick, retryable, retry_in)| Op::Fail {
                job,
                pick,
                retryable,
                retry_in,
            }),
        4 => (job(), pick()).prop_map(|(job, pick)| Op::Release { job, pick }),
        4 => job().prop_map(|job| Op::Cancel { job }),
        3 => prop::sample::select(vec![1u64, 100, 1_000, 30_000]).prop_map(|ms| Op::Tick { ms }),
        10 => prop::sample::select(vec![0u64, 1, 99, 100, 1_000, 5_000, 30_000, 70_000, 200_000])
            .prop_map(|ms| Op::Advance { ms }),
        2 => queue().prop_map(|queue| Op::Pause { queue }),
        3 => queue().prop_map(|queue| Op::Resume { queue }),
        3 => (queue(), prop::option::weighted(0.6, prop::collection::vec(job(), 0..=4)))
            .prop_map(|(queue, jobs)| Op::RequeueDead { queue, jobs }),
        1 => queue().prop_map(|queue| Op::PurgeDead { queue }),
        3 => (queue(), 0..=3usize).prop_map(|(queue, limit)| Op::DeadLetters { queue, limit }),
        2 => job().prop_map(|job| Op::Get { job }),
        1 => queue().prop_map(|queue| Op::Stats { queue }),
        1 => (0..BAD_QUEUES.len()).prop_map(|name| Op::BadQueue { name }),
        2 => Just(Op::Reopen),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::bool::weighted(0.8),
        prop::collection::vec(op(), 40..150),
    )
        .prop_map(|(short_retention, ops)| Case {
            short_retention,
            ops,
        })
}

// ---- outcomes -------------------------------------------------------------------

/// An expected refusal: the error variants a caller matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refused {
    NotFound(JobId),
    LeaseLost(JobId),
    Conflict(JobId, JobState, &'static str),
    Invalid(&'static str),
    TooLarge(&'static str),
    /// An idempotency key reused with another request: the stored job's id
    /// (`None`: a key given twice in one batch, whose first job's id the
    /// model cannot know).
    IdempotencyConflict(Option<JobId>),
}

/// The outcome of a call in comparable form; storage and corruption errors
/// fail the test at once.
fn outcome<T>(got: queue_core::Result<T>) -> Result<Result<T, Refused>, String> {
    match got {
        Ok(value) => Ok(Ok(value)),
        Err(Error::NotFound { id }) => Ok(Err(Refused::NotFound(id))),
        Err(Error::LeaseLost { id, .. }) => Ok(Err(Refused::LeaseLost(id))),
        Err(Error::Conflict {
            id,
            state,
            operation,
        }) => Ok(Err(Refused::Conflict(id, state, operation))),
        Err(Error::InvalidArgument { field, .. }) => Ok(Err(Refused::Invalid(field))),
        Err(Error::TooLarge { what, .. }) => Ok(Err(Refused::TooLarge(what))),
        Err(Error::IdempotencyConflict { id, .. }) => {
            Ok(Err(Refused::IdempotencyConflict(Some(id))))
        }
        Err(other) => Err(format!("unexpected error: {other:?}")),
    }
}

fn cover_refusal(what: &'static str, want: &Result<Job, Refused>) {
    hit(
        what,
        match want {
            Ok(_) => "ok",
            Err(Refused::NotFound(_)) => "not found",
            Err(Refused::LeaseLost(_)) => "lease lost",
            Err(Refused::Conflict(..)) => "conflict",
            Err(Refused::Invalid(_) | Refused::TooLarge(_)) => "refused",
            Err(Refused::IdempotencyConflict(_)) => "idempotency conflict",
        },
    );
}

fn same<T: Debug + PartialEq>(what: &str, got: &T, want: &T) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let (got_lines, want_lines) = (format!("{got:#?}"), format!("{want:#?}"));
    let differing: Vec<String> = got_lines
        .lines()
        .zip(want_lines.lines())
        .filter(|(g, w)| g != w)
        .take(8)
        .map(|(g, w)| format!("    queue `{}` / model `{}`", g.trim(), w.trim()))
        .collect();
    Err(format!(
        "{what} differs\n  queue: {got:?}\n  model: {want:?}\n  differing lines:\n{}",
        differing.join("\n")
    ))
}

fn zero_counters() -> Counters {
    Counters {
        run_time_buckets: vec![0; RUN_TIME_BOUNDS_MS.len() + 1],
        ..Counters::default()
    }
}

fn waiting_state(run_at: u64, now: u64) -> JobState {
    if run_at <= now {
        JobState::Ready
    } else {
        JobState::Scheduled
    }
}

fn finish(job: &mut Job, state: JobState, now: u64) {
    job.state = state;
    job.lease = None;
    job.finished_at = Some(now);
    job.updated_at = now;
}

/// The range of the back-off delay after `attempts` attempts:
/// `base * 2^(attempts-1)` capped at one hour, ±20 %, capped again.
fn backoff_window(base: u64, attempts: u32) -> (u64, u64) {
    let exponent = attempts.saturating_sub(1).min(40);
    let raw = base.saturating_mul(1u64 << exponent).min(MAX_BACKOFF_MS);
    (
        raw.saturating_mul(800) / 1000,
        (raw.saturating_mul(1200) / 1000).min(MAX_BACKOFF_MS),
    )
}

// ---- the model ----------------------------------------------------------------------

/// A failed attempt whose retry time depends on the store's jitter: the
/// record is right except `run_at` and `state`, to adopt from the store.
struct Retry {
    job: Job,
    window: Option<(u64, u64)>,
}

impl Retry {
    /// Checks the store's `run_at` against the window and completes the
    /// expected record with it.
    fn adopt(mut self, stored_run_at: u64, now: u64) -> Result<Job, String> {
        if let Some((lo, hi)) = self.window {
            let delay = stored_run_at.checked_sub(now);
            if !delay.is_some_and(|d| (lo..=hi).contains(&d)) {
                return Err(format!(
                    "job {}: back-off run_at {stored_run_at} is now{:+}, outside now+{lo}..=now+{hi}",
                    self.job.id,
                    i128::from(stored_run_at) - i128::from(now)
                ));
            }
            self.job.run_at = stored_run_at;
            self.job.state = waiting_state(stored_run_at, now);
        }
        Ok(self.job)
    }
}

struct Model {
    now: u64,
    retention: Retention,
    /// Every stored job, as the store must hold it.
    jobs: BTreeMap<JobId, Job>,
    /// Every job id ever created, in creation order (removed ones included).
    known: Vec<JobId>,
    /// Every lease handed out, with its job.
    leases: Vec<(JobId, LeaseId)>,
    lease_ids: HashSet<LeaseId>,
    paused: [bool; 2],
    /// Events the current step must publish.
    events: Vec<Event>,
    /// When the first event was published: the oldest the log retains
    /// (the model's retention of events outlasts every run).
    first_event_at: Option<u64>,
    /// What `Queue::counters` must report (since the last open).
    counters: Counters,
    /// (queue, key) of removed jobs: free again.
    freed_keys: HashSet<(String, String)>,
}

impl Model {
    fn new(retention: Retention) -> Self {
        Model {
            now: T0,
            retention,
            jobs: BTreeMap::new(),
            known: Vec::new(),
            leases: Vec::new(),
            lease_ids: HashSet::new(),
            paused: [false; 2],
            events: Vec::new(),
            first_event_at: None,
            counters: zero_counters(),
            freed_keys: HashSet::new(),
        }
    }

    /// Stores `job`, changed by `transition`: notes the event if its state
    /// changed, and counts the transition.
    fn put(&mut self, transition: Transition, job: Job) {
        let old = self.jobs.insert(job.id, job.clone());
        let changed = old.as_ref().map(|old| old.state) != Some(job.state);
        if changed {
            self.first_event_at.get_or_insert(job.updated_at);
            self.events.push(event_of(&job, transition));
        }
        let c = &mut self.counters;
        match transition {
            Transition::Enqueue => c.enqueued += 1,
            Transition::Lease => c.leased += 1,
            Transition::Complete => c.completed += 1,
            Transition::Fail => c.failed += 1,
            Transition::Expire => c.expired += 1,
            Transition::Release => c.released += 1,
            Transition::Cancel => c.cancelled += 1,
            Transition::Requeue => c.requeued += 1,
            Transition::Promote => c.promoted += 1,
            _ => {}
        }
        if changed && job.state == JobState::Dead {
            c.dead += 1;
        }
        if transition == Transition::Complete {
            let leased_at = old.and_then(|old| old.lease).map(|lease| lease.leased_at);
            if let Some(leased_at) = leased_at {
                let ms = job.updated_at - leased_at;
                let bucket = RUN_TIME_BOUNDS_MS
                    .iter()
                    .position(|bound| ms <= *bound)
                    .unwrap_or(RUN_TIME_BOUNDS_MS.len());
                c.run_time_buckets[bucket] += 1;
                c.run_time_sum_ms += ms;
            }
        }
    }

    /// Removes a finished job (retention or purge).
    fn remove(&mut self, id: JobId) {
        if let Some(job) = self.jobs.remove(&id) {
            self.counters.removed += 1;
            if let Some(key) = job.idempotency_key {
                self.freed_keys.insert((job.queue, key));
            }
        }
    }

    /// The job an operation targets: one ever created, or (one time in
    /// `known + 1`) an id that never existed.
    fn target(&self, index: usize) -> JobId {
        self.known
            .get(index % (self.known.len() + 1))
            .copied()
            .unwrap_or(JobId::from_u64(BOGUS))
    }

    /// The job and lease id a holder operation presents.
    fn holder(&self, index: usize, pick: Pick) -> (JobId, LeaseId) {
        let bogus = LeaseId::from_u64(BOGUS);
        match pick {
            Pick::Live => {
                let leased: Vec<&Job> = self
                    .jobs
                    .values()
                    .filter(|job| job.state == JobState::Leased)
                    .collect();
                match leased.get(index % leased.len().max(1)) {
                    Some(job) => (job.id, job.lease.as_ref().map_or(bogus, |l| l.id)),
                    None => self.holder(index, Pick::Old(index)),
                }
            }
            Pick::Old(k) => {
                let id = self.target(index);
                let own: Vec<LeaseId> = self
                    .leases
                    .iter()
                    .filter(|(job, _)| *job == id)
                    .map(|(_, lease)| *lease)
                    .collect();
                (id, own.get(k % own.len().max(1)).copied().unwrap_or(bogus))
            }
            Pick::Foreign(k) => {
                let id = self.target(index);
                let other: Vec<LeaseId> = self
                    .leases
                    .iter()
                    .filter(|(job, _)| *job != id)
                    .map(|(_, lease)| *lease)
                    .collect();
                (
                    id,
                    other.get(k % other.len().max(1)).copied().unwrap_or(bogus),
                )
            }
            Pick::Bogus => (self.target(index), bogus),
        }
    }

    /// The fencing check: the job must be leased under `lease`, and the lease
    /// must not have reached its deadline.
    fn live(&self, id: JobId, lease: LeaseId) -> Result<Job, Refused> {
        let job = self.jobs.get(&id).ok_or(Refused::NotFound(id))?;
        match &job.lease {
            Some(held)
                if job.state == JobState::Leased
                    && held.id == lease
                    && self.now < held.expires_at =>
            {
                Ok(job.clone())
            }
            Some(held) if job.state == JobState::Leased && held.id == lease => {
                hit("any holder", "expired lease not yet reaped");
                Err(Refused::LeaseLost(id))
            }
            _ => Err(Refused::LeaseLost(id)),
        }
    }

    /// Fail and expiry: dead when not retryable or out of attempts, else
    /// waiting for now + `retry_in` or the back-off.
    fn failed_attempt(
        &self,
        job: &Job,
        error: &str,
        retry_in: Option<u64>,
        retryable: bool,
    ) -> Retry {
        let now = self.now;
        let mut next = job.clone();
        next.last_error = Some(error.to_owned());
        if !retryable || job.attempts >= job.max_attempts {
            finish(&mut next, JobState::Dead, now);
            return Retry {
                job: next,
                window: None,
            };
        }
        next.lease = None;
        next.updated_at = now;
        let window = match retry_in {
            Some(ms) => {
                next.run_at = now + ms;
                None
            }
            None => {
                let window = backoff_window(job.backoff_ms, job.attempts);
                next.run_at = now + window.0;
                Some(window)
            }
        };
        next.state = waiting_state(next.run_at, now);
        Retry { job: next, window }
    }

    /// The stored job of `queue` holding idempotency key `key`.
    fn with_key(&self, queue: usize, key: &str) -> Option<&Job> {
        self.jobs
            .values()
            .find(|job| job.queue == QUEUES[queue] && job.idempotency_key.as_deref() == Some(key))
    }

    /// Ready jobs of `queue` in lease order.
    fn lease_order(&self, queue: usize) -> Vec<JobId> {
        let mut ready: Vec<&Job> = self
            .jobs
            .values()
            .filter(|job| job.queue == QUEUES[queue] && job.state == JobState::Ready)
            .collect();
        ready.sort_by_key(|job| (Reverse(job.priority), job.run_at, job.id));
        ready.iter().map(|job| job.id).collect()
    }

    fn dead_of(&self, queue: usize) -> Vec<JobId> {
        self.jobs
            .values()
            .filter(|job| job.queue == QUEUES[queue] && job.state == JobState::Dead)
            .map(|job| job.id)
            .collect()
    }

    fn requeue(&mut self, id: JobId) {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return;
        };
        job.state = JobState::Ready;
        job.attempts = 0;
        job.run_at = self.now;
        job.finished_at = None;
        job.updated_at = self.now;
        self.put(Transition::Requeue, job);
    }

    fn retention_of(&self, state: JobState) -> Option<u64> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match state {
            JobState::Completed => Some(ms(self.retention.completed)),
            JobState::Dead => Some(ms(self.retention.dead)),
            JobState::Cancelled => Some(ms(self.retention.cancelled)),
            _ => None,
        }
    }

    /// The time of the job's stored deadline (promotion, expiry, removal).
    fn deadline(&self, job: &Job) -> Option<u64> {
        match job.state {
            JobState::Scheduled => Some(job.run_at),
            JobState::Ready => None,
            JobState::Leased => job.lease.as_ref().map(|lease| lease.expires_at),
            terminal => Some(
                job.finished_at
                    .unwrap_or(job.updated_at)
                    .saturating_add(self.retention_of(terminal).unwrap_or(0)),
            ),
        }
    }

    fn stats(&self, queue: usize) -> QueueStats {
        let name = QUEUES[queue];
        let count = |state| {
            self.jobs
                .values()
                .filter(|job| job.queue == name && job.state == state)
                .count() as u64
        };
        let oldest = self
            .jobs
            .values()
            .filter(|job| job.queue == name && job.state == JobState::Ready)
            .map(|job| job.run_at)
            .min();
        QueueStats {
            queue: name.to_owned(),
            paused: self.paused[queue],
            limits: queue_core::QueueLimits::default(),
            scheduled: count(JobState::Scheduled),
            ready: count(JobState::Ready),
            leased: count(JobState::Leased),
            completed: count(JobState::Completed),
            dead: count(JobState::Dead),
            cancelled: count(JobState::Cancelled),
            oldest_ready_age_ms: oldest.map(|run_at| self.now.saturating_sub(run_at)),
        }
    }

    /// Every queue with stored jobs or paused, by name.
    fn queue_list(&self) -> Vec<QueueStats> {
        let names: BTreeSet<&str> = (0..QUEUES.len())
            .filter(|&q| self.paused[q] || self.jobs.values().any(|job| job.queue == QUEUES[q]))
            .map(|q| QUEUES[q])
            .collect();
        names
            .into_iter()
            .filter_map(|name| QUEUES.iter().position(|q| *q == name))
            .map(|q| self.stats(q))
            .collect()
    }
}

// ---- the harness --------------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: ManualClock,
    short_retention: bool,
    queue: Option<Queue>,
    events: Option<Subscription>,
    model: Model,
    payloads: u64,
}

impl Harness {
    fn new(short_retention: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let retention = if short_retention {
            brief_retention()
        } else {
            Retention::default()
        };
        let mut harness = Harness {
            _dir: dir,
            path,
            clock: ManualClock::new(T0),
            short_retention,
            queue: None,
            events: None,
            model: Model::new(retention),
            payloads: 0,
        };
        harness.open();
        harness
    }

    /// Opens the store: on a fresh directory as `common::open_manual` does
    /// (with the short retention if the case asks for it).
    fn open(&mut self) {
        let queue = Queue::open_with(self.config()).expect("open queue");
        self.events = Some(queue.subscribe());
        self.queue = Some(queue);
    }

    /// The configuration `open` uses (`common::open_manual`'s, plus the
    /// retention, and events kept longer than any run lasts).
    fn config(&self) -> Config {
        let config = Config::new(&self.path)
            .clock(self.clock.clone())
            .seed(7)
            .background_timers(false)
            .event_retention(EVENT_RETENTION);
        if self.short_retention {
            config.retention(brief_retention())
        } else {
            config
        }
    }

    /// Drops the queue and opens the directory again with the same config
    /// and clock.
    ///
    /// (`Queue::open_with` itself waits out sled's lingering lock of the
    /// handle just dropped.)
    fn reopen(&mut self) -> Result<(), String> {
        let position = self.events.take().map(|events| events.position());
        self.queue = None;
        let queue = Queue::open_with(self.config()).map_err(|e| format!("reopen failed: {e:?}"))?;
        // The event log is durable: resume where the last handle's
        // subscriber stopped.
        self.events = Some(match position {
            Some(position) => queue.subscribe_after(position),
            None => queue.subscribe(),
        });
        self.queue = Some(queue);
        // Counters count since the handle was opened.
        self.model.counters = zero_counters();
        Ok(())
    }

    fn queue(&self) -> &Queue {
        self.queue.as_ref().expect("the queue is open")
    }

    fn new_job(&mut self, spec: &Spec) -> NewJob {
        let now = self.model.now;
        self.payloads += 1;
        let mut job = NewJob::new(common::payload(self.payloads))
            .priority(spec.priority)
            .max_attempts(spec.max_attempts)
            .backoff(Duration::from_millis(spec.backoff_ms));
        job = match spec.when {
            When::Now => job,
            When::Delay(ms) => job.delay(Duration::from_millis(ms)),
            When::At(offset) => job.run_at(now.saturating_add_signed(offset)),
        };
        if let Some(key) = spec.key {
            // Most keyed items repeat the key's one request exactly (a
            // replay); the others differ from it (a conflict while a job
            // holds the key).
            if spec.priority.rem_euclid(4) != 0 {
                job = NewJob::new(common::payload(1_000_000 + key as u64));
            }
            job = job.idempotency_key(KEYS[key]);
        } else if let Some(id) = CORRELATIONS.get((self.payloads % 3) as usize) {
            job = job.correlation_id(*id);
        }
        match spec.invalid {
            None => {}
            Some(Invalid::ZeroAttempts) => job.max_attempts = 0,
            Some(Invalid::TooManyAttempts) => job.max_attempts = 1001,
            Some(Invalid::EmptyKey) => job.idempotency_key = Some(String::new()),
            Some(Invalid::LongKey) => {
                job.idempotency_key = Some("k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1));
            }
            Some(Invalid::DelayAndRunAt) => {
                job.delay_ms = Some(1);
                job.run_at = Some(now);
            }
            Some(Invalid::BackoffTooLong) => job.backoff_ms = MAX_BACKOFF_MS + 1,
            Some(Invalid::DelayTooFar) => {
                job.delay_ms = Some(MAX_DELAY_MS + 1);
                job.run_at = None;
            }
            Some(Invalid::RunAtTooFar) => {
                job.run_at = Some(now + MAX_DELAY_MS + 1);
                job.delay_ms = None;
            }
            Some(Invalid::PayloadTooLarge) => job.payload = vec![b'x'; MAX_PAYLOAD + 1],
        }
        job
    }

    /// The record a valid `new` becomes under the id the store gave it.
    fn created(&self, id: JobId, queue: usize, new: &NewJob) -> Job {
        let now = self.model.now;
        let run_at = match (new.delay_ms, new.run_at) {
            (Some(delay), _) => now + delay,
            (None, Some(at)) => at,
            (None, None) => now,
        };
        Job {
            id,
            queue: QUEUES[queue].to_owned(),
            state: waiting_state(run_at, now),
            payload: new.payload.clone(),
            priority: new.priority,
            attempts: 0,
            max_attempts: new.max_attempts,
            backoff_ms: new.backoff_ms,
            created_at: now,
            updated_at: now,
            run_at,
            lease: None,
            idempotency_key: new.idempotency_key.clone(),
            result: None,
            last_error: None,
            finished_at: None,
            correlation_id: new.correlation_id.clone(),
            headers: new.headers.clone(),
            progress: None,
            callback_url: new.callback_url.clone(),
            callback: None,
            group: None,
            timeout_ms: None,
            expires_at: None,
            started_at: None,
            schedule: None,
            request_digest: new.idempotency_key.as_ref().map(|_| new.digest()),
            last_event_id: None,
        }
    }

    fn enqueue(&mut self, queue: usize, specs: &[Spec], batch: bool) -> Result<(), String> {
        let news: Vec<NewJob> = specs.iter().map(|spec| self.new_job(spec)).collect();
        let got = if batch {
            self.queue().enqueue_batch(QUEUES[queue], news.clone())
        } else {
            self.queue()
                .enqueue(QUEUES[queue], news[0].clone())
                .map(|one| vec![one])
        };
        let got = outcome(got)?;
        let refusal = if specs.is_empty() {
            Some(Refused::Invalid("jobs"))
        } else {
            specs
                .iter()
                .find_map(|spec| spec.invalid.map(Invalid::refusal))
        };
        let what = if batch { "batch" } else { "enqueue" };
        if let Some(refusal) = refusal {
            hit(what, "refused");
            return same("refused enqueue", &got.map(|_| ()), &Err(refusal));
        }
        // A key held by a stored job or an earlier item with another
        // request: the whole call is refused, nothing changes.
        let mut claimed: BTreeMap<&str, [u8; 16]> = BTreeMap::new();
        let mut conflict = None;
        for new in &news {
            let Some(key) = new.idempotency_key.as_deref() else {
                continue;
            };
            let digest = new.digest();
            if let Some(first) = claimed.get(key) {
                if *first != digest {
                    conflict = Some(None);
                    break;
                }
                continue;
            }
            if let Some(existing) = self.model.with_key(queue, key) {
                if existing.request_digest.is_some_and(|d| d != digest) {
                    conflict = Some(Some(existing.id));
                    break;
                }
            }
            claimed.insert(key, digest);
        }
        if let Some(conflict) = conflict {
            hit(what, "idempotency conflict");
            if conflict.is_none() {
                hit("batch", "idempotency conflict within the batch");
            }
            return match (conflict, &got) {
                (None, Err(Refused::IdempotencyConflict(Some(_)))) => Ok(()),
                _ => same(
                    "idempotency conflict",
                    &got.map(|_| ()),
                    &Err(Refused::IdempotencyConflict(conflict)),
                ),
            };
        }
        hit(what, "ok");
        let first_new = self.model.known.len();
        let got = got.map_err(|r| format!("valid enqueue refused: {r:?}"))?;
        if got.len() != specs.len() {
            return Err(format!("{} answers for {} items", got.len(), specs.len()));
        }
        for (i, (answer, new)) in got.iter().zip(&news).enumerate() {
            let existing = new
                .idempotency_key
                .as_deref()
                .and_then(|key| self.model.with_key(queue, key))
                .cloned();
            match existing {
                Some(existing) => {
                    if !answer.replayed {
                        return Err(format!("item {i}: a stored key was not replayed"));
                    }
                    same(&format!("item {i}: replayed job"), &answer.job, &existing)?;
                    hit("enqueue", "replay");
                    if self.model.known[first_new..].contains(&existing.id) {
                        hit("enqueue", "replay within the batch");
                    }
                }
                None => {
                    if answer.replayed {
                        return Err(format!("item {i}: replayed with no stored key"));
                    }
                    if let Some(last) = self.model.known.last() {
                        if answer.job.id <= *last {
                            return Err(format!(
                                "item {i}: new id {} not after the last id {last}",
                                answer.job.id
                            ));
                        }
                    }
                    let want = self.created(answer.job.id, queue, new);
                    hit("enqueue", "new");
                    if let Some(key) = &new.idempotency_key {
                        let freed = (QUEUES[queue].to_owned(), key.clone());
                        if self.model.freed_keys.contains(&freed) {
                            hit("enqueue", "key free again after removal");
                        }
                    }
                    same(&format!("item {i}: new job"), &answer.job, &want)?;
                    self.model.known.push(want.id);
                    self.model.put(Transition::Enqueue, want);
                }
            }
        }
        Ok(())
    }

    fn lease(
        &mut self,
        queue: usize,
        max_jobs: u32,
        lease_ms: u64,
        worker: bool,
    ) -> Result<(), String> {
        let mut opts = LeaseOptions::default()
            .max_jobs(max_jobs)
            .lease(Duration::from_millis(lease_ms));
        if worker {
            opts = opts.worker("w");
        }
        let got = outcome(self.queue().lease(QUEUES[queue], &opts))?;
        if max_jobs == 0 {
            hit("lease", "refused");
            return same(
                "lease with max_jobs 0",
                &got.map(|_| ()),
                &Err(Refused::Invalid("max_jobs")),
            );
        }
        let got = got.map_err(|r| format!("lease refused: {r:?}"))?;
        let want: Vec<JobId> = if self.model.paused[queue] {
            Vec::new()
        } else {
            self.model
                .lease_order(queue)
                .into_iter()
                .take(max_jobs as usize)
                .collect()
        };
        let got_ids: Vec<JobId> = got.iter().map(|leased| leased.job.id).collect();
        same("leased jobs (in order)", &got_ids, &want)?;
        if self.model.paused[queue] && !self.model.lease_order(queue).is_empty() {
            hit("lease", "paused with ready jobs");
        }
        if got.len() > 1 {
            hit("lease", "several");
        }
        if got
            .windows(2)
            .any(|w| w[0].job.priority == w[1].job.priority)
        {
            hit("lease", "priority tie");
        }
        if got.windows(2).any(|w| {
            w[0].job.priority == w[1].job.priority
                && w[0].job.run_at < w[1].job.run_at
                && w[0].job.id > w[1].job.id
        }) {
            hit("lease", "older run_at before older id");
        }
        let now = self.model.now;
        for leased in got {
            if !self.model.lease_ids.insert(leased.lease_id) {
                return Err(format!("lease id {:?} handed out twice", leased.lease_id));
            }
            let mut job = self.model.jobs[&leased.job.id].clone();
            job.state = JobState::Leased;
            job.attempts += 1;
            job.updated_at = now;
            job.started_at = Some(now);
            job.lease = Some(Lease {
                id: leased.lease_id,
                expires_at: now + lease_ms,
                lease_ms,
                leased_at: now,
                worker: worker.then(|| "w".to_owned()),
            });
            same("leased job", &leased.job, &job)?;
            self.model.leases.push((job.id, leased.lease_id));
            self.model.put(Transition::Lease, job);
        }
        Ok(())
    }

    /// Compares a holder operation's outcome with the model's and stores the
    /// model's record on success.
    fn settle(
        &mut self,
        what: Transition,
        got: queue_core::Result<Job>,
        want: Result<Job, Refused>,
    ) -> Result<(), String> {
        let got = outcome(got)?;
        same(what.as_str(), &got, &want)?;
        cover_refusal(what.as_str(), &want);
        if let Ok(job) = want {
            self.model.put(what, job);
        }
        Ok(())
    }

    fn run_due(&mut self) -> Result<(), String> {
        let report = self
            .queue()
            .run_due()
            .map_err(|e| format!("run_due: {e:?}"))?;
        let now = self.model.now;
        // Promotion of due scheduled jobs, then expiry of due leases, then
        // removal past retention: the order of the timer pass.
        let due: Vec<JobId> = self
            .model
            .jobs
            .values()
            .filter(|job| job.state == JobState::Scheduled && job.run_at <= now)
            .map(|job| job.id)
            .collect();
        let promoted = due.len() as u64;
        if promoted > 0 {
            hit("run_due", "promoted");
        }
        for id in due {
            let mut job = self.model.jobs[&id].clone();
            job.state = JobState::Ready;
            job.updated_at = now;
            self.model.put(Transition::Promote, job);
        }
        let due: Vec<JobId> = self
            .model
            .jobs
            .values()
            .filter(|job| {
                job.state == JobState::Leased
                    && job.lease.as_ref().is_some_and(|l| l.expires_at <= now)
            })
            .map(|job| job.id)
            .collect();
        let expired = due.len() as u64;
        for id in due {
            let retry = self
                .model
                .failed_attempt(&self.model.jobs[&id], LEASE_EXPIRED, None, true);
            let stored = self
                .queue()
                .get(id)
                .map_err(|e| format!("get: {e:?}"))?
                .ok_or_else(|| format!("expired job {id} is gone"))?;
            let job = retry.adopt(stored.run_at, now)?;
            hit(
                "run_due",
                if job.state == JobState::Dead {
                    "expired to dead"
                } else {
                    "expired to retry"
                },
            );
            self.model.put(Transition::Expire, job);
        }
        let gone: Vec<JobId> = self
            .model
            .jobs
            .values()
            .filter(|job| {
                job.state.is_terminal() && self.model.deadline(job).is_some_and(|at| at <= now)
            })
            .map(|job| job.id)
            .collect();
        let removed = gone.len() as u64;
        if removed > 0 {
            hit("run_due", "removed");
        }
        for id in gone {
            self.model.remove(id);
        }
        let next_due = self
            .model
            .jobs
            .values()
            .filter_map(|job| self.model.deadline(job))
            .chain(self.model.first_event_at.map(|at| at + EVENT_RETENTION_MS))
            .min();
        same(
            "run_due report",
            &report,
            &DueReport {
                promoted,
                expired,
                ttl_expired: 0,
                removed,
                pruned_events: 0,
                ticks: 0,
                next_due,
            },
        )
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let now = self.model.now;
        match op {
            Op::Enqueue { queue, spec } => {
                self.enqueue(*queue, std::slice::from_ref(spec), false)?;
            }
            Op::Batch { queue, specs } => self.enqueue(*queue, specs, true)?,
            Op::Lease {
                queue,
                max_jobs,
                lease_ms,
                worker,
            } => self.lease(*queue, *max_jobs, *lease_ms, *worker)?,
            Op::Heartbeat {
                job,
                pick,
                lease_ms,
            } => {
                let (id, lease) = self.model.holder(*job, *pick);
                let got = self.queue().heartbeat(id, lease, *lease_ms);
                let want = if *lease_ms == Some(0) {
                    Err(Refused::Invalid("lease_ms"))
                } else {
                    self.model.live(id, lease).map(|mut job| {
                        job.updated_at = now;
                        if let Some(held) = job.lease.as_mut() {
                            let length = lease_ms.unwrap_or(held.lease_ms);
                            held.expires_at = now + length;
                            held.lease_ms = length;
                        }
                        job
                    })
                };
                self.settle(Transition::Heartbeat, got, want)?;
            }
            Op::Complete { job, pick, result } => {
                let (id, lease) = self.model.holder(*job, *pick);
                let result = result.then(|| br#"{"ok":true}"#.to_vec());
                let got = self.queue().complete(id, lease, result.clone());
                let want = self.model.live(id, lease).map(|mut job| {
                    finish(&mut job, JobState::Completed, now);
                    job.result = result;
                    job
                });
                self.settle(Transition::Complete, got, want)?;
            }
            Op::Fail {
                job,
                pick,
                retryable,
                retry_in,
            } => {
                let (id, lease) = self.model.holder(*job, *pick);
                let mut failure = Failure::new(BOOM);
                if let Some(ms) = retry_in {
                    failure = failure.retry_in(Duration::from_millis(*ms));
                }
                if !retryable {
                    failure = failure.permanent();
                }
                let got = outcome(self.queue().fail(id, lease, &failure))?;
                let want = if retry_in.is_some_and(|ms| ms > MAX_DELAY_MS) {
                    Err(Refused::Invalid("retry_in_ms"))
                } else {
                    self.model
                        .live(id, lease)
                        .map(|job| self.model.failed_attempt(&job, BOOM, *retry_in, *retryable))
                };
                let want = match (&got, want) {
                    (Ok(stored), Ok(retry)) => Ok(retry.adopt(stored.run_at, now)?),
                    (_, Ok(retry)) => Ok(retry.job),
                    (_, Err(refused)) => Err(refused),
                };
                same("fail", &got, &want)?;
                cover_refusal("fail", &want);
                if let Ok(job) = &want {
                    hit(
                        "fail",
                        match (job.state, retry_in) {
                            (JobState::Dead, _) => "dead",
                            (JobState::Ready, _) => "ready at once",
                            (_, Some(_)) => "retry_in",
                            (_, None) => "back-off",
                        },
                    );
                }
                if let Ok(job) = want {
                    self.model.put(Transition::Fail, job);
                }
            }
            Op::Release { job, pick } => {
                let (id, lease) = self.model.holder(*job, *pick);
                let got = self.queue().release(id, lease);
                let want = self.model.live(id, lease).map(|mut job| {
                    job.state = JobState::Ready;
                    job.lease = None;
                    job.attempts = job.attempts.saturating_sub(1);
                    job.updated_at = now;
                    job
                });
                self.settle(Transition::Release, got, want)?;
            }
            Op::Cancel { job } => {
                let id = self.model.target(*job);
                let got = self.queue().cancel(id);
                let want = match self.model.jobs.get(&id) {
                    None => Err(Refused::NotFound(id)),
                    Some(job) if job.state.is_terminal() => {
                        Err(Refused::Conflict(id, job.state, "cancel"))
                    }
                    Some(job) => {
                        if job.state == JobState::Leased {
                            hit("cancel", "leased");
                        }
                        let mut job = job.clone();
                        finish(&mut job, JobState::Cancelled, now);
                        Ok(job)
                    }
                };
                self.settle(Transition::Cancel, got, want)?;
            }
            Op::Tick { ms } => {
                self.clock.advance(Duration::from_millis(*ms));
                self.model.now += ms;
            }
            Op::Advance { ms } => {
                self.clock.advance(Duration::from_millis(*ms));
                self.model.now += ms;
                self.run_due()?;
            }
            Op::Pause { queue } | Op::Resume { queue } => {
                let pause = matches!(op, Op::Pause { .. });
                let got = if pause {
                    self.queue().pause(QUEUES[*queue])
                } else {
                    self.queue().resume(QUEUES[*queue])
                };
                self.model.paused[*queue] = pause;
                same(
                    "pause/resume stats",
                    &outcome(got)?,
                    &Ok(self.model.stats(*queue)),
                )?;
            }
            Op::RequeueDead { queue, jobs } => {
                let ids: Option<Vec<JobId>> = jobs
                    .as_ref()
                    .map(|jobs| jobs.iter().map(|j| self.model.target(*j)).collect());
                let got = self.queue().requeue_dead(QUEUES[*queue], ids.as_deref());
                let dead = self.model.dead_of(*queue);
                let chosen: Vec<JobId> = match &ids {
                    None => dead,
                    Some(ids) => {
                        let mut seen = BTreeSet::new();
                        ids.iter()
                            .copied()
                            .filter(|id| dead.contains(id) && seen.insert(*id))
                            .collect()
                    }
                };
                same("requeued", &outcome(got)?, &Ok(chosen.len() as u64))?;
                if !chosen.is_empty() {
                    hit("requeue_dead", "some");
                }
                for id in chosen {
                    self.model.requeue(id);
                }
            }
            Op::PurgeDead { queue } => {
                let got = self.queue().purge_dead(QUEUES[*queue]);
                let dead = self.model.dead_of(*queue);
                same("purged", &outcome(got)?, &Ok(dead.len() as u64))?;
                if !dead.is_empty() {
                    hit("purge_dead", "some");
                }
                for id in dead {
                    self.model.remove(id);
                }
            }
            Op::DeadLetters { queue, limit } => {
                if *limit == 0 {
                    let got = self.queue().dead_letters(QUEUES[*queue], None, 0);
                    return same(
                        "dead letters with limit 0",
                        &outcome(got)?.map(|_| ()),
                        &Err(Refused::Invalid("limit")),
                    );
                }
                let mut after = None;
                let mut all = Vec::new();
                for page in 0..1000 {
                    if page == 1 {
                        hit("dead_letters", "several pages");
                    }
                    let page = self
                        .queue()
                        .dead_letters(QUEUES[*queue], after, *limit)
                        .map_err(|e| format!("dead_letters: {e:?}"))?;
                    if page.jobs.len() > *limit {
                        return Err(format!("a page of {} over limit {limit}", page.jobs.len()));
                    }
                    let last = page.jobs.last().map(|job| job.id);
                    all.extend(page.jobs);
                    match page.next {
                        Some(next) if Some(next) == last => after = Some(next),
                        Some(next) => {
                            return Err(format!("next {next} is not the page's last {last:?}"));
                        }
                        None => break,
                    }
                }
                let want: Vec<Job> = self
                    .model
                    .dead_of(*queue)
                    .iter()
                    .map(|id| self.model.jobs[id].clone())
                    .collect();
                same("dead letters", &all, &want)?;
            }
            Op::Get { job } => {
                let id = self.model.target(*job);
                let got = self.queue().get(id).map_err(|e| format!("get: {e:?}"))?;
                same("get", &got, &self.model.jobs.get(&id).cloned())?;
            }
            Op::Stats { queue } => {
                let got = self.queue().stats(QUEUES[*queue]);
                same("stats", &outcome(got)?, &Ok(self.model.stats(*queue)))?;
            }
            Op::BadQueue { name } => {
                let name = BAD_QUEUES[*name];
                let q = self.queue();
                let refused = Err(Refused::Invalid("queue"));
                same(
                    "enqueue",
                    &outcome(q.enqueue(name, NewJob::new(vec![])))?.map(|_| ()),
                    &refused,
                )?;
                let opts = LeaseOptions::default();
                same(
                    "lease",
                    &outcome(q.lease(name, &opts))?.map(|_| ()),
                    &refused,
                )?;
                same("stats", &outcome(q.stats(name))?.map(|_| ()), &refused)?;
                same("pause", &outcome(q.pause(name))?.map(|_| ()), &refused)?;
                let purge = outcome(q.purge_dead(name))?.map(|_| ());
                same("purge_dead", &purge, &refused)?;
            }
            Op::Reopen => {
                let held = |state| self.model.jobs.values().any(|job| job.state == state);
                if held(JobState::Leased) {
                    hit("reopen", "with leased jobs");
                }
                if held(JobState::Scheduled) {
                    hit("reopen", "with scheduled jobs");
                }
                self.reopen()?;
            }
        }
        Ok(())
    }

    /// The events the step published must be the model's (order within one
    /// call aside).
    fn check_events(&mut self) -> Result<(), String> {
        let mut want = std::mem::take(&mut self.model.events);
        let events = self.events.as_mut().expect("subscribed");
        let mut got = Vec::new();
        let mut last = events.position();
        while let Some(mut event) = events
            .try_recv()
            .map_err(|e| format!("event stream: {e:?}"))?
        {
            if event.event_id != last + 1 {
                return Err(format!("event {} follows {last}", event.event_id));
            }
            last = event.event_id;
            // The model does not number events: compare the rest.
            event.event_id = 0;
            got.push(event);
        }
        got.sort_by_key(|event| event.id);
        want.sort_by_key(|event| event.id);
        same("events", &got, &want)
    }

    /// Everything observable must agree with the model.
    fn check_all(&self) -> Result<(), String> {
        let queue = self.queue();
        common::assert_consistent(queue);
        let report = queue.verify().map_err(|e| format!("verify: {e:?}"))?;
        for state in JobState::ALL {
            let want = self
                .model
                .jobs
                .values()
                .filter(|job| job.state == state)
                .count() as u64;
            same(&format!("{state} records"), &report.count(state), &want)?;
        }
        for (q, name) in QUEUES.iter().enumerate() {
            let got = queue.stats(name).map_err(|e| format!("stats: {e:?}"))?;
            same("stats", &got, &self.model.stats(q))?;
        }
        same("counters", &queue.counters(), &self.model.counters)?;
        // The listings: a queue's jobs in each state, the jobs of each
        // correlation id, whole and in id order.
        let whole = |page: queue_core::Result<queue_core::JobPage>, what: &str| {
            let page = page.map_err(|e| format!("{what}: {e:?}"))?;
            if page.next.is_some() {
                return Err(format!("{what}: more than one page"));
            }
            Ok::<_, String>(page.jobs)
        };
        for name in QUEUES {
            for state in JobState::ALL {
                let got = whole(queue.jobs(name, state, None, 1000), "jobs")?;
                let want: Vec<Job> = self
                    .model
                    .jobs
                    .values()
                    .filter(|job| job.queue == name && job.state == state)
                    .cloned()
                    .collect();
                same(&format!("{name} jobs {state}"), &got, &want)?;
            }
        }
        for id in CORRELATIONS {
            let got = whole(queue.jobs_by_correlation(id, None, 1000), "by correlation")?;
            let want: Vec<Job> = self
                .model
                .jobs
                .values()
                .filter(|job| job.correlation_id.as_deref() == Some(id))
                .cloned()
                .collect();
            same(&format!("jobs of {id}"), &got, &want)?;
        }
        let list = queue.queues().map_err(|e| format!("queues: {e:?}"))?;
        same("queue list", &list, &self.model.queue_list())?;
        for id in &self.model.known {
            let got = queue.get(*id).map_err(|e| format!("get: {e:?}"))?;
            same(
                &format!("job {id}"),
                &got,
                &self.model.jobs.get(id).cloned(),
            )?;
        }
        Ok(())
    }
}

fn run_case(case: &Case) -> Result<(), String> {
    let mut harness = Harness::new(case.short_retention);
    for (step, op) in case.ops.iter().enumerate() {
        let at = harness.model.now - T0;
        harness
            .step(op)
            .and_then(|()| harness.check_events())
            .and_then(|()| harness.check_all())
            .map_err(|e| {
                let ops: Vec<String> = case.ops[..=step]
                    .iter()
                    .enumerate()
                    .map(|(i, op)| format!("  {i:3}: {op:?}"))
                    .collect();
                format!(
                    "step {step} ({op:?}) at T0+{at} ms: {e}\n\
                     the sequence up to there (short_retention: {}):\n{}",
                    case.short_retention,
                    ops.join("\n")
                )
            })?;
    }
    Ok(())
}

#[test]
fn random_operation_sequences_agree_with_the_model() {
    let mut config = RunnerConfig {
        failure_persistence: None,
        // Shrinking replays whole sequences against a real store; bound it.
        max_shrink_time: 60_000,
        max_shrink_iters: 10_000,
        ..RunnerConfig::default()
    };
    // The default run is fixed (and its coverage checked); the environment
    // may ask for other seeds or more cases.
    let mut default_run = true;
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => default_run = false,
        None => config.cases = 256,
    }
    match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => default_run = false,
        None => config.rng_seed = RngSeed::Fixed(20_261_125),
    }
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| run_case(&case).map_err(TestCaseError::fail));
    if let Err(e) = result {
        panic!("{e}");
    }
    let coverage = COVERAGE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!("coverage of the model test:");
    for ((what, detail), count) in &coverage {
        println!("  {what}: {detail}: {count}");
    }
    if default_run {
        let missed: Vec<_> = MUST_COVER
            .iter()
            .filter(|situation| !coverage.contains_key(*situation))
            .collect();
        assert!(missed.is_empty(), "the sequences never reached {missed:?}");
    }
}
