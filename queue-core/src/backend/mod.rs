//! The backend seam: storage at the level of whole operations.
//!
//! The engine ([`crate::engine`]) decides every transition with a pure rule
//! and hands the backend whole operations: load a record, commit a set of
//! changes with a compare-and-swap on the revisions the decisions read, run a
//! lease round over a queue's ready jobs, list due timers, read pages,
//! settings and the event log. The backend knows how to store; it never
//! decides a transition itself. [`sled`] is the embedded implementation and
//! the only module that names its storage engine.
//!
//! # What a backend promises
//!
//! - **Atomic commits.** A [`Commit`] is applied all or nothing (or, with
//!   [`Policy::EachIfCurrent`], each change all or nothing): the new record,
//!   every index and timer entry it implies (see [`rules::deadline`]), the
//!   per-state counts, the queue settings and the effects (the events of the
//!   durable log, with ids assigned in commit order). No reader sees part of
//!   a commit.
//! - **Compare-and-swap.** Each [`Change`] names what its decision read
//!   ([`Expect`]); if the stored record moved on meanwhile, the commit is
//!   refused as stale and the engine decides again from the new record. A
//!   new job whose idempotency key another stored job of its queue holds is
//!   stale too.
//! - **Durability.** Under [`Durability::Sync`](crate::Durability::Sync) a
//!   commit's future resolves only after the commit is on disk; concurrent
//!   commits may share one flush.
//! - **History.** When [`Config::history_retention`](crate::Config::history_retention)
//!   is not zero, every commit (leases included) folds the history samples
//!   of its applied changes ([`rules::history::sample`]) into one rollup
//!   per (queue, minute of the change), with the queue's depths as the
//!   commit leaves them, in the same atomic commit; a stale commit adds
//!   nothing. A queue's first rollup of a minute removes (a bounded number
//!   of) its minutes older than the retention, keeping the newest of
//!   those as depths only (see [`rules::history`]), and takes a bounded
//!   step of a sweep that does the same for the other queues (those gone
//!   idle).
//! - **Leases** take the pure rule as a parameter ([`LeasePlan`]): the
//!   backend offers ready jobs in lease order (priority, then `run_at`, then
//!   id) and commits what the round takes, so that concurrent lease calls
//!   never take the same job and never come back empty while a job they
//!   could take is ready.
//! - **Futures that run anywhere.** The blocking API polls these futures on
//!   a parked thread (no tokio context), and with [`Mode::Blocking`] the
//!   backend may do its work on that thread. A backend that needs an async
//!   runtime for its I/O runs it on a runtime of its own.
//!
//! # A PostgreSQL backend on this trait
//!
//! Records become rows with a `revision` column: [`Backend::commit`] is one
//! transaction of `UPDATE … WHERE id = $1 AND revision = $2` (zero rows:
//! stale, roll back), inserts under a unique index on `(queue,
//! idempotency_key)` (a violation: stale), and inserts into an events table
//! whose ids come from a counter row locked in the same transaction, so they
//! increase in commit order. [`Backend::lease`] is `SELECT … WHERE queue = $1
//! AND state = 'ready' ORDER BY priority DESC, run_at, id FOR UPDATE SKIP
//! LOCKED`, the round deciding row by row, then the updates, in one
//! transaction. [`Backend::commit_and_lease`] is both in one transaction,
//! the commit's statements first: the lease's scan and counts see them.
//!
//! Queue limits on PostgreSQL: the settings (limits and the token bucket's
//! `units` and `refilled_at`) are a row per queue, which the lease
//! transaction reads `FOR UPDATE` first: that lock serializes the lease
//! rounds of one queue across servers (settlements do not take it), so the
//! count it reads next, `SELECT count(*) … WHERE queue = $1 AND state =
//! 'leased'` (or a counter row per queue maintained in each transition's
//! transaction), is not exceeded by a concurrent round, and the bucket's
//! new state is an `UPDATE` of the same row in the same transaction.
//! Per-group counts are a `leased_by_group (queue, group, leased)` table
//! updated in the transaction of every transition into or out of `leased`
//! (or a grouped count query); groups at their limit are excluded in the
//! candidate query (`AND (group IS NULL OR group NOT IN (SELECT group FROM
//! leased_by_group WHERE queue = $1 AND leased >= $limit))`), and FIFO per
//! group comes from taking, per group, the first ready row in lease order
//! (`DISTINCT ON (group)` over an index on `(queue, group, priority DESC,
//! run_at, id) WHERE state = 'ready'`), so that a busy group costs the
//! query nothing however many ready rows it has. Waiting leases are woken
//! by a `NOTIFY` on every transition out of `leased` and every settings
//! change.
//!
//! History on PostgreSQL is a table `history (queue, minute, enqueued,
//! completed, failed, dead, expired, ready, scheduled, leased, wait, run,
//! PRIMARY KEY (queue, minute))`, the histograms as `bytea` (or
//! `bigint[]`) in this module's bucket layout. Each commit's transaction
//! ends with one `INSERT … ON CONFLICT (queue, minute) DO UPDATE SET
//! enqueued = history.enqueued + excluded.enqueued, …` per (queue, minute)
//! it touched, the histograms merged by a small SQL function (or read
//! `FOR UPDATE`, merged in Rust and written back), and the depths taken
//! from the per-queue counter rows the same transaction maintains. Pruning
//! is a `DELETE … WHERE queue = $1 AND minute < $2` bounded by a `LIMIT`
//! on a sub-select (sparing the newest such row, reduced to its depths), in
//! the transaction that inserts a queue's new minute, and the same over
//! every queue (`minute < $2 AND minute < (SELECT max(minute) … same
//! queue)`, bounded) for queues gone idle;
//! [`Backend::history`] is a range select on the primary key plus the
//! latest row before it.
//!
//! Due timers are a query on a deadline column, acted on under
//! the same compare-and-swap, so that several servers act on each deadline
//! once. [`Backend::watch_events`] is fed by `LISTEN/NOTIFY`.
//!
//! Schedules are rows of a `schedules` table (`name` primary key, the
//! record's columns, a `revision`, and `next_run_at`, null while paused,
//! with an index on it). A [`ScheduleChange`] in a commit is an `INSERT`
//! (a unique violation: stale), an `UPDATE … WHERE name = $1 AND revision =
//! $2` or a `DELETE` with the same condition, in the same transaction as
//! the jobs of the commit: a tick's job and its schedule's move to the next
//! tick commit together or not at all. [`Backend::due_schedules`] is
//! `SELECT name FROM schedules WHERE next_run_at <= $1 ORDER BY next_run_at
//! LIMIT $2 FOR UPDATE SKIP LOCKED` inside that transaction in a backend
//! that holds it open (or a plain select followed by the revision check,
//! which several servers may race on safely: the loser's commit is stale
//! and the tick's idempotency key `schedule:<name>:<T>` is unique in its
//! queue, so no tick fires twice). [`Backend::first_schedule_due`] is
//! `SELECT min(next_run_at)`, and a `NOTIFY` on every schedule change wakes
//! the other servers' timers.

pub(crate) mod postgres;
pub(crate) mod sled;
pub(crate) mod wake;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

pub(crate) use crate::counts::Counts;
use crate::rules::history::{Depths, Rollup};
use crate::rules::lease::LeasePlan;
use crate::rules::{Deadline, Outcome, TimerKind};
use crate::settings::{QueueSettings, SettingsUpdate};
use crate::{Event, Job, JobId, Result, Schedule, Verification};

/// Opens the backend `config` names.
pub(crate) fn open(config: &crate::Config) -> Result<std::sync::Arc<dyn Backend>> {
    match &config.storage {
        crate::Storage::Embedded { .. } => {
            Ok(std::sync::Arc::new(sled::SledBackend::open(config)?))
        }
        crate::Storage::Postgres { .. } => {
            Ok(std::sync::Arc::new(postgres::PgBackend::open(config)?))
        }
    }
}

/// A boxed future, so that the trait stays object safe.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the caller of a write waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The polling thread may block (the blocking API): the backend may do
    /// the work, fsync included, on it.
    Blocking,
    /// The caller is an async task: the future must not block its thread.
    Async,
}

/// The version of a stored record that a decision read. It increases with
/// every change of the record; ids are never reused, so a revision names one
/// state of one job for the life of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Revision(pub(crate) u64);

impl Revision {
    pub(crate) fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }
}

/// A stored job with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) job: Job,
    pub(crate) revision: Revision,
}

/// What a change expects to find stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// No record with this id (a new job).
    Absent,
    /// The record at this revision.
    At(Revision),
}

/// One record replaced according to a rule's [`Outcome`].
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The job.
    pub(crate) id: JobId,
    /// What the decision read.
    pub(crate) expect: Expect,
    /// The record it read (`None` for a new job): its entries and counts
    /// are the ones to replace.
    pub(crate) old: Option<Job>,
    /// The decision.
    pub(crate) outcome: Outcome,
}

impl Change {
    /// A change of the record `loaded`.
    pub(crate) fn of(loaded: Loaded, outcome: Outcome) -> Change {
        Change {
            id: loaded.job.id,
            expect: Expect::At(loaded.revision),
            old: Some(loaded.job),
            outcome,
        }
    }

    /// A new job.
    pub(crate) fn insert(id: JobId, outcome: Outcome) -> Change {
        Change {
            id,
            expect: Expect::Absent,
            old: None,
            outcome,
        }
    }

    /// The record after the change, if any.
    pub(crate) fn new_job(&self) -> Option<&Job> {
        self.outcome.job.as_ref()
    }
}

/// A stored schedule with its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadedSchedule {
    pub(crate) schedule: Schedule,
    pub(crate) revision: Revision,
}

/// One schedule record written (or removed) by a commit, under a
/// compare-and-swap on the revision its decision read.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleChange {
    /// The schedule's name.
    pub(crate) name: String,
    /// What the decision read.
    pub(crate) expect: Expect,
    /// The record it read (`None` for a new schedule): its due entry is the
    /// one to replace.
    pub(crate) old: Option<Schedule>,
    /// The record after the change; `None` removes the schedule.
    pub(crate) new: Option<Schedule>,
}

impl ScheduleChange {
    /// A change of the stored schedule `loaded` to `new`.
    pub(crate) fn of(loaded: &LoadedSchedule, new: Option<Schedule>) -> ScheduleChange {
        ScheduleChange {
            name: loaded.schedule.name.clone(),
            expect: Expect::At(loaded.revision),
            old: Some(loaded.schedule.clone()),
            new,
        }
    }

    /// A new schedule.
    pub(crate) fn insert(schedule: Schedule) -> ScheduleChange {
        ScheduleChange {
            name: schedule.name.clone(),
            expect: Expect::Absent,
            old: None,
            new: Some(schedule),
        }
    }
}

/// How a commit treats a change whose expectation does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The whole commit is stale: nothing is applied.
    AllOrNothing,
    /// That change is skipped; the others are applied (timers, bulk
    /// requeue and purge, where each job stands alone).
    EachIfCurrent,
}

/// One atomic write.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) changes: Vec<Change>,
    /// Updates of queue settings, each applied to the settings stored at
    /// the time of the commit (a read-modify-write inside it).
    pub(crate) settings: Vec<(String, SettingsUpdate)>,
    /// Schedule records written with the changes. A schedule change that
    /// is not current makes the whole commit stale, whatever the policy.
    pub(crate) schedules: Vec<ScheduleChange>,
    pub(crate) policy: Policy,
}

impl Commit {
    /// Changes applied all or nothing.
    pub(crate) fn all(changes: Vec<Change>) -> Commit {
        Commit {
            changes,
            settings: Vec::new(),
            schedules: Vec::new(),
            policy: Policy::AllOrNothing,
        }
    }

    /// Changes each applied if still current.
    pub(crate) fn each(changes: Vec<Change>) -> Commit {
        Commit {
            changes,
            settings: Vec::new(),
            schedules: Vec::new(),
            policy: Policy::EachIfCurrent,
        }
    }
}

/// What a commit (or a lease) applied.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The changes applied, in order.
    pub(crate) applied: Vec<Change>,
    /// How many events they emitted, logged with the ids from
    /// `first_event` on, in the order of `applied`.
    pub(crate) events: u64,
    pub(crate) first_event: u64,
    /// For a lease bounded by the rate limit's tokens: when the next token
    /// arrives (see [`RoundEnd`](crate::rules::lease::RoundEnd)).
    pub(crate) retry_at: Option<u64>,
}

/// A timer entry that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) id: JobId,
    pub(crate) deadline: Deadline,
}

/// A paged listing of job ids, oldest first (ids increase with creation).
///
/// A backend answers a page from an index, never by scanning the records:
/// the cost of a page is its length, however many jobs are stored. Pages
/// are keyed by id, so paging with `after` is complete and stable: a job
/// that stays in the listing while a caller pages through it is listed
/// exactly once, whatever is enqueued, changes state or is removed
/// meanwhile; a job that leaves the listing is not listed on later pages,
/// and one that enters it is listed on a later page only if its id is
/// greater than the `after` of that page.
///
/// On PostgreSQL: [`Page::State`] is `SELECT id FROM jobs WHERE queue = $1
/// AND state = $2 AND id > $3 ORDER BY id LIMIT $4` over an index on
/// `(queue, state, id)`, and [`Page::Correlation`] the same over an index
/// on `(correlation_id, id)` (partial: `WHERE correlation_id IS NOT
/// NULL`); both are maintained by the database in the transaction of
/// every transition, as the sled backend maintains its derived entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    /// The jobs of a queue in a state (the dead-letter list is the
    /// `Dead` state's).
    State {
        queue: String,
        state: queue_proto::JobState,
    },
    /// The jobs with a correlation id, in any queue.
    Correlation { id: String },
    /// The jobs whose callback delivery is in a state.
    Callbacks { status: crate::CallbackStatus },
}

impl Page {
    /// Whether `job`, as stored now, belongs on this listing.
    pub(crate) fn holds(&self, job: &Job) -> bool {
        match self {
            Page::State { queue, state } => job.queue == *queue && job.state == *state,
            Page::Correlation { id } => job.correlation_id.as_deref() == Some(id.as_str()),
            Page::Callbacks { status } => job.callback.as_ref().map(|c| c.status) == Some(*status),
        }
    }
}

/// Stored history minutes of a queue (see [`Backend::history`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HistoryRange {
    /// The depths of the latest minute before the range, if any.
    pub(crate) before: Option<Depths>,
    /// The minutes of the range: (minute start, rollup), oldest first.
    pub(crate) minutes: Vec<(u64, Rollup)>,
}

/// The retained part of the event log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EventBounds {
    /// The oldest retained event: its id and time.
    pub(crate) oldest: Option<(u64, u64)>,
    /// The id of the latest event ever committed (0 before the first).
    pub(crate) latest: u64,
}

/// Storage for the engine. See the module docs for the contract.
pub(crate) trait Backend: Send + Sync + 'static {
    /// A fresh job id, never handed out before in this store (by any
    /// process sharing it).
    fn next_job_id(&self) -> BoxFuture<'_, Result<JobId>>;

    /// The stored job `id`.
    fn load(&self, id: JobId) -> BoxFuture<'_, Result<Option<Loaded>>>;

    /// The stored job of `queue` holding the idempotency key `key`.
    fn find_idempotent<'a>(
        &'a self,
        queue: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Loaded>>>;

    /// Applies `commit` atomically (see [`Policy`]). `None`: an
    /// all-or-nothing commit found a record not as expected and applied
    /// nothing.
    fn commit(&self, commit: Commit, mode: Mode) -> BoxFuture<'_, Result<Option<Committed>>>;

    /// Runs one lease round on `queue`: the round starts from the queue's
    /// settings and its number of leased jobs (as of this commit: counting
    /// every lease and settlement committed before it), is offered its
    /// ready jobs in lease order, each with a fresh lease id and the number
    /// of leased jobs of its group, and what it takes is committed
    /// atomically with the bucket the round leaves
    /// ([`RoundEnd`](crate::rules::lease::RoundEnd)). A group whose limit
    /// is reached must cost the scan a bounded amount of work, not one step
    /// per ready job of the group.
    fn lease<'a>(
        &'a self,
        queue: &'a str,
        plan: LeasePlan,
        mode: Mode,
    ) -> BoxFuture<'a, Result<Committed>>;

    /// Applies `commit` as [`Backend::commit`] does and then runs one lease
    /// round on `queue` as [`Backend::lease`] does, in the same atomic
    /// write (one durable flush under
    /// [`Durability::Sync`](crate::Durability::Sync)): a worker settling
    /// its jobs and taking the next pays for one commit, not two.
    ///
    /// The round sees the commit's changes: it starts from the settings and
    /// the number of leased jobs (of the queue and of each group) as the
    /// commit leaves them, so a settlement that frees a `max_leased` or
    /// group slot lets the round take a job, and a job the commit made
    /// ready may be taken. Either both parts are durable or neither is.
    ///
    /// Returns what the commit applied and what the round took, each a
    /// [`Committed`] with its own `first_event` and `events`: the
    /// commit's events are logged before the round's, each part's
    /// consecutively (other callers' operations sharing the write may log
    /// theirs in between). The round's `retry_at` is on the second.
    /// `None`: an all-or-nothing commit found a record not as expected;
    /// nothing is applied and no round runs.
    ///
    /// On PostgreSQL both run in one transaction: the commit's statements
    /// (as [`Backend::commit`]), then the lease round's `SELECT … FOR
    /// UPDATE SKIP LOCKED` and updates (as [`Backend::lease`]), which see
    /// the commit's row changes and counts because they are the same
    /// transaction's; one `COMMIT` makes both durable.
    fn commit_and_lease<'a>(
        &'a self,
        commit: Commit,
        queue: &'a str,
        plan: LeasePlan,
        mode: Mode,
    ) -> BoxFuture<'a, Result<Option<(Committed, Committed)>>>;

    /// Up to `limit` timer entries of `kind` whose time is `<= upto`,
    /// earliest first.
    fn due(&self, kind: TimerKind, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Due>>>;

    /// The earliest time of any timer entry of `kind`.
    fn first_due(&self, kind: TimerKind) -> BoxFuture<'_, Result<Option<u64>>>;

    /// Up to `limit` ids of `page` after `after` (exclusive), oldest first.
    fn page<'a>(
        &'a self,
        page: &'a Page,
        after: Option<JobId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<JobId>>>;

    /// The settings of `queue` (defaults when none are stored).
    fn settings<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<QueueSettings>>;

    /// The counts of `queue`'s stored jobs by state.
    fn counts<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Counts>>;

    /// `run_at` of the oldest ready job of `queue`.
    fn oldest_ready<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Every queue with stored jobs or settings, by name.
    fn queue_names(&self) -> BoxFuture<'_, Result<Vec<String>>>;

    /// Up to `limit` retained events with ids greater than `after`, in order.
    fn events_after(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Event>>>;

    /// The oldest retained and the latest committed event.
    fn event_bounds(&self) -> BoxFuture<'_, Result<EventBounds>>;

    /// The id of the latest committed event, updated once its commit is
    /// durable: the wake-up of event subscribers.
    fn watch_events(&self) -> watch::Receiver<u64>;

    /// The stored history minutes of `queue` that start in `from..=to`
    /// (minute starts, unix ms), oldest first, and the depths of the
    /// latest minute stored before `from`. History minutes are written by
    /// [`Backend::commit`], [`Backend::lease`] and
    /// [`Backend::commit_and_lease`] (see the module docs).
    fn history<'a>(
        &'a self,
        queue: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<HistoryRange>>;

    /// Removes the oldest events while they are older than `before_at` or
    /// more than `keep` are retained, atomically and oldest first. Returns
    /// how many were removed.
    fn prune_events(&self, before_at: u64, keep: u64, mode: Mode) -> BoxFuture<'_, Result<u64>>;

    /// The stored schedule `name`.
    fn load_schedule<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<LoadedSchedule>>>;

    /// Every stored schedule, by name.
    fn schedules(&self) -> BoxFuture<'_, Result<Vec<LoadedSchedule>>>;

    /// The names of up to `limit` active schedules whose `next_run_at` is
    /// `<= upto`, earliest first.
    fn due_schedules(&self, upto: u64, limit: usize) -> BoxFuture<'_, Result<Vec<String>>>;

    /// The earliest `next_run_at` of any active schedule.
    fn first_schedule_due(&self) -> BoxFuture<'_, Result<Option<u64>>>;

    /// Makes everything committed so far durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;

    /// Recomputes every derived entry and count from the records and
    /// compares them with what is stored.
    fn verify(&self) -> BoxFuture<'_, Result<Verification>>;

    /// Where wake-ups committed by *other processes* sharing the store go
    /// (a shared database's `LISTEN/NOTIFY`); the engine wakes its own
    /// waiters for its own commits. A store only one process opens never
    /// calls it.
    fn set_wake_sink(&self, _sink: std::sync::Arc<dyn Fn(&wake::Wake) + Send + Sync>) {}

    /// Whether other processes may share this store (a database): then
    /// nothing may assume that work left under way was abandoned (see
    /// [`Engine::recover_callbacks`](crate::engine::Engine::recover_callbacks)).
    fn shared(&self) -> bool {
        false
    }

    /// The secret stored under `name`, storing `candidate` there first if
    /// none is (see [`Queue::shared_secret`](crate::Queue::shared_secret));
    /// `None` for a store one process opens.
    fn shared_secret<'a>(
        &'a self,
        _name: &'a str,
        _candidate: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// How the store has grouped its commits since it was opened; `None`
    /// for a store that does not group them itself (a database).
    fn commit_stats(&self) -> Option<crate::CommitStats> {
        None
    }

    /// Stops background work and flushes; called once, when the last
    /// handle is dropped. Later calls fail with [`Error::Closed`](crate::Error::Closed).
    fn close(&self);
}

#[cfg(test)]
mod tests {
    use queue_proto::JobState;

    use super::Page;
    use crate::rules::testing::{full_job, ready_job};

    #[test]
    fn a_page_holds_the_jobs_it_lists_as_they_are_now() {
        let ready = ready_job();
        let state = |queue: &str, state| Page::State {
            queue: queue.into(),
            state,
        };
        assert!(state("q", JobState::Ready).holds(&ready));
        assert!(!state("q", JobState::Leased).holds(&ready));
        assert!(!state("other", JobState::Ready).holds(&ready));
        let full = full_job();
        assert!(Page::Correlation { id: "req-1".into() }.holds(&full));
        assert!(!Page::Correlation { id: "req-".into() }.holds(&full));
        assert!(!Page::Correlation { id: "req-1".into() }.holds(&ready));
        let pending = Page::Callbacks {
            status: crate::CallbackStatus::Pending,
        };
        assert!(pending.holds(&full));
        assert!(!pending.holds(&ready));
        let delivered = Page::Callbacks {
            status: crate::CallbackStatus::Delivered,
        };
        assert!(!delivered.holds(&full));
    }
}
