//! A durable job queue, embeddable in-process.
//!
//! [`Queue`] is the whole engine: open it on a data directory and it keeps
//! named queues of jobs with priorities, delays, leases with deadlines and
//! heartbeats, fencing of stale workers, retries with exponential back-off,
//! dead letters, idempotency keys, cancellation, pausing, statistics,
//! results, retention and a durable event log. The HTTP server
//! (`queue-server`) and the SDK's embedded transport are thin layers over it,
//! sharing the wire-level behaviour of [`service`].
//!
//! - [`Queue`]: the async handle; every operation is a method on it.
//!   [`blocking::Queue`]: the same operations, same names, for callers
//!   without a runtime.
//! - [`Config`], [`Storage`], [`Durability`], [`Retention`]: how it is opened.
//! - [`NewJob`], [`LeaseOptions`], [`Failure`]: what callers pass in;
//!   [`Job`], [`Enqueued`], [`Leased`], [`JobPage`] (a page of a listing:
//!   [`Queue::jobs`] by state, [`Queue::jobs_by_correlation`], dead
//!   letters), [`QueueStats`]: what comes back.
//! - [`Schedule`] (stored by [`Queue::put_schedule`] from a
//!   [`ScheduleRequest`]): periodic jobs, a cron expression in a time zone
//!   or a fixed period, fired by the timer once per tick ([`PutSchedule`],
//!   [`CatchUp`]).
//! - [`PatchQueueRequest`] ([`Queue::update_queue`]): a queue's paused flag
//!   and limits ([`QueueLimits`]: `max_leased`, a [`RateLimit`] token
//!   bucket, `group_max_leased`), held by every lease round and shown in
//!   [`QueueStats`].
//! - [`History`] of [`HistoryPoint`]s ([`Queue::history`] with a
//!   [`HistoryQuery`]): durable per-minute rollups of each queue (counts,
//!   depths, wait and run time percentiles), recorded in the same commit as
//!   the changes they count.
//! - [`Subscription`] of [`Event`]s: the durable event log, every state
//!   change with an id increasing in commit order, resumable
//!   ([`Queue::subscribe_after`]).
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: time, injectable so that
//!   tests move it instead of sleeping.
//! - [`Error`]: the one error type.
//!
//! Inside (see ARCHITECTURE.md at the repository root): the pure transition
//! rules (`rules/`, one module per transition, each returning the new record
//! and the effects that commit with it), the engine (decide, commit,
//! announce), the backend seam (`backend/`, with the embedded store on sled
//! as its implementation) and the timer thread.
//!
//! # The job state machine
//!
//! ```text
//! enqueue ──► scheduled ──(run_at reached)──► ready ──lease──► leased
//!               ▲                               ▲                │
//!               │ fail / expiry, attempts left  │ release        ├─ complete ─► completed
//!               └───────────────────────────────┴────────────────┤
//!                                                                ├─ fail / expiry, no attempts
//!                                                                │  left, or not retryable ─► dead
//!  scheduled | ready | leased ──cancel──► cancelled              dead ──requeue──► ready
//! ```
//!
//! Every transition is decided by a pure rule from the stored record and
//! committed atomically with every index entry, count and event it implies
//! (one write-ahead record per batch of concurrent operations), so a job is
//! always in exactly one state whatever the crash point.
//!
//! # Guarantees
//!
//! - **Acknowledged means durable.** Under [`Durability::Sync`] (the default)
//!   every state change is flushed to disk before its method returns;
//!   concurrent callers share one flush (group commit).
//! - **At-least-once delivery with fencing.** A lease that expires hands the
//!   job out again; the stale holder's heartbeat, complete, fail or release
//!   gets [`Error::LeaseLost`] and changes nothing.
//! - **Nothing lives only in memory.** Deadlines (promotion, lease expiry,
//!   retention) and events are stored; after a restart the timer picks the
//!   deadlines up and subscribers resume from the log.
//! - **Stored formats evolve.** Every record carries its format version; a
//!   data directory written by an earlier release opens and is upgraded.
//!
//! # Example
//!
//! ```
//! use queue_core::{Failure, LeaseOptions, NewJob, Queue};
//! use queue_proto::JobState;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::open(dir.path())?;
//!
//! let sent = queue
//!     .enqueue("emails", NewJob::new(br#"{"to":"ada@example.com"}"#.to_vec()))
//!     .await?;
//! assert!(!sent.replayed);
//!
//! let mut leased = queue.lease("emails", &LeaseOptions::default()).await?;
//! let job = leased.pop().expect("one job is ready");
//! assert_eq!(job.job.attempts, 1);
//!
//! let done = queue
//!     .complete(job.job.id, job.lease_id, Some(br#"{"ok":true}"#.to_vec()))
//!     .await?;
//! assert_eq!(done.state, JobState::Completed);
//!
//! // The lease is spent: a second completion is refused.
//! assert!(matches!(
//!     queue.fail(job.job.id, job.lease_id, &Failure::new("late")).await,
//!     Err(queue_core::Error::LeaseLost { .. })
//! ));
//! # Ok(()) }
//! ```

mod backend;
pub mod blocking;
mod clock;
mod commit_stats;
mod config;
mod counters;
mod counts;
mod engine;
mod error;
mod events;
mod executor;
mod job;
mod queue;
mod rules;
mod schedule;
pub mod service;
mod settings;
mod signal;
mod timers;
mod verification;
#[cfg(test)]
mod wakeups;
mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use commit_stats::CommitStats;
pub use config::{Config, Durability, Retention, Storage};
pub use counters::{Counters, RUN_TIME_BOUNDS_MS, WAIT_TIME_BOUNDS_MS};
pub use error::{Error, LeaseLostReason, Result, StorageError};
pub use events::{RecvError, Subscription};
pub use job::{
    Callback, CallbackStatus, DeadPage, Enqueued, Event, Failure, Job, JobId, JobPage, Lease,
    LeaseId, LeaseOptions, Leased, NewJob, Settle, Settlement, Transition,
};
pub use queue::Queue;
pub use queue_proto::{
    CatchUp, History, HistoryPoint, HistoryQuery, JobState, MAX_HISTORY_POINTS, PatchQueueRequest,
    QueueLimits, QueueStats, RateLimit, ScheduleRequest,
};
pub use rules::callback::DeliveryResult;
pub use rules::history::HISTORY_PRECISION;
pub use schedule::{PutSchedule, Schedule};
pub use timers::DueReport;
pub use verification::Verification;

/// Largest payload (and result) a [`Config`] may allow: a record holds both
/// and must stay inside the embedded store's fsynced log.
pub const MAX_PAYLOAD_LIMIT: usize = 3 * 1024 * 1024 / 2;
