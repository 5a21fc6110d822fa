//! A durable job queue on [sled], embeddable in-process.
//!
//! [`Queue`] is the whole engine: open it on a data directory, and it keeps
//! named queues of jobs with priorities, delays, leases with deadlines and
//! heartbeats, fencing of stale workers, retries with exponential back-off,
//! dead letters, idempotency keys, cancellation, pausing, statistics, results
//! and retention. The HTTP server (`queue-server`) and the SDK's embedded
//! transport are thin layers over it.
//!
//! - [`Queue`]: the handle; every operation is a method on it.
//! - [`Config`], [`Durability`], [`Retention`]: how it is opened.
//! - [`NewJob`], [`LeaseOptions`], [`Failure`]: what callers pass in;
//!   [`Job`], [`Enqueued`], [`Leased`], [`DeadPage`], [`QueueStats`]: what
//!   comes back.
//! - [`Subscription`] of [`Event`]s: every state change, for event streams.
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: time, injectable so that
//!   tests move it instead of sleeping.
//! - [`Error`]: the one error type.
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
//! committed atomically with every index entry and count it implies (one
//! write-ahead record per batch of concurrent operations), so a job is always
//! in exactly one state whatever the crash point.
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
//!   retention) are stored; after a restart the timer picks them up.
//!
//! # Example
//!
//! ```
//! use queue_core::{Failure, LeaseOptions, NewJob, Queue};
//! use queue_proto::JobState;
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::open(dir.path())?;
//!
//! let sent = queue.enqueue("emails", NewJob::new(br#"{"to":"ada@example.com"}"#.to_vec()))?;
//! assert!(!sent.replayed);
//!
//! let mut leased = queue.lease("emails", &LeaseOptions::default())?;
//! let job = leased.pop().expect("one job is ready");
//! assert_eq!(job.job.attempts, 1);
//!
//! let done = queue.complete(job.job.id, job.lease_id, Some(br#"{"ok":true}"#.to_vec()))?;
//! assert_eq!(done.state, JobState::Completed);
//!
//! // The lease is spent: a second completion is refused.
//! assert!(matches!(
//!     queue.fail(job.job.id, job.lease_id, &Failure::new("late")),
//!     Err(queue_core::Error::LeaseLost { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod config;
mod counters;
mod error;
mod job;
mod queue;
mod rules;
mod signal;
mod storage;
mod subscription;
mod timers;
mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, Durability, Retention};
pub use counters::{Counters, RUN_TIME_BOUNDS_MS};
pub use error::{Error, Result};
pub use job::{
    DeadPage, Enqueued, Event, Failure, Job, JobId, Lease, LeaseId, LeaseOptions, Leased, NewJob,
    Transition,
};
pub use queue::{DueReport, Queue};
pub use queue_proto::{JobState, QueueStats};
pub use storage::{MAX_PAYLOAD_LIMIT, Verification};
pub use subscription::{RecvError, Subscription};
