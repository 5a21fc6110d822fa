//! Totals of transitions since the queue was opened, per queue, for
//! metrics; updated when a change is announced (after it is durable).
//!
//! The hot path takes no lock of its own per transition: each queue's
//! counters are atomics behind an `Arc`, found in a map under a read lock
//! once per run of changes of one queue (a commit's changes usually share
//! a queue, and the caller keeps the last one found); the write lock is
//! taken only the first time a queue is seen. A queue's entry lives until
//! the handle is dropped, so the number of entries is the number of queues
//! that had a transition since the open.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use queue_proto::JobState;

use crate::{Job, Transition};

/// Upper bounds (inclusive, in ms) of the run-time histogram buckets; a last
/// implicit bucket holds everything longer.
pub const RUN_TIME_BOUNDS_MS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// Upper bounds (inclusive, in ms) of the queue-wait histogram buckets (a
/// backlog can wait for hours, so they reach further than the run time's);
/// a last implicit bucket holds everything longer.
pub const WAIT_TIME_BOUNDS_MS: [u64; 17] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000, 21_600_000,
];

/// The index of the bucket of `bounds` (plus a last one) that holds `ms`.
fn bucket_of(bounds: &[u64], ms: u64) -> usize {
    bounds
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(bounds.len())
}

/// When a job that is `ready` became leasable, as the queue-wait histogram
/// counts it: its `run_at` (the enqueue, the end of its delay or of its
/// retry back-off, a requeue), but never before it was enqueued (a `run_at`
/// in the past counts from the enqueue); a job released by its worker keeps
/// its `run_at` and waits from the release.
///
/// A released job is recognised by its last attempt having started at or
/// after its `run_at`: every other way back to `ready` (a failure, an
/// expiry, a requeue) sets a `run_at` later than that start.
pub(crate) fn ready_since(job: &Job) -> u64 {
    let due = job.run_at.max(job.created_at);
    match job.started_at {
        Some(started) if started >= due => job.updated_at.max(due),
        _ => due,
    }
}

/// A histogram of milliseconds over fixed bounds.
struct AtomicHistogram {
    bounds: &'static [u64],
    /// One count per bound, plus the last bucket.
    buckets: Box<[AtomicU64]>,
    sum_ms: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [u64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    fn observe(&self, ms: u64) {
        let bucket = bucket_of(self.bounds, ms);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (Vec<u64>, u64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.sum_ms.load(Ordering::Relaxed),
        )
    }
}

/// One queue's counters.
pub(crate) struct QueueCounters {
    queue: String,
    enqueued: AtomicU64,
    leased: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
    expired: AtomicU64,
    ttl_expired: AtomicU64,
    released: AtomicU64,
    cancelled: AtomicU64,
    requeued: AtomicU64,
    promoted: AtomicU64,
    removed: AtomicU64,
    run: AtomicHistogram,
    wait: AtomicHistogram,
}

impl QueueCounters {
    fn new(queue: &str) -> QueueCounters {
        let zero = || AtomicU64::new(0);
        QueueCounters {
            queue: queue.to_owned(),
            enqueued: zero(),
            leased: zero(),
            completed: zero(),
            failed: zero(),
            dead: zero(),
            expired: zero(),
            ttl_expired: zero(),
            released: zero(),
            cancelled: zero(),
            requeued: zero(),
            promoted: zero(),
            removed: zero(),
            run: AtomicHistogram::new(&RUN_TIME_BOUNDS_MS),
            wait: AtomicHistogram::new(&WAIT_TIME_BOUNDS_MS),
        }
    }

    fn record(&self, transition: Transition, old: Option<&Job>, new: Option<&Job>) {
        let add = |counter: &AtomicU64| {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        match transition {
            Transition::Enqueue => add(&self.enqueued),
            Transition::Lease => add(&self.leased),
            Transition::Complete => add(&self.completed),
            Transition::Fail => add(&self.failed),
            Transition::Expire => add(&self.expired),
            Transition::Ttl => add(&self.ttl_expired),
            Transition::Release => add(&self.released),
            Transition::Cancel => add(&self.cancelled),
            Transition::Requeue => add(&self.requeued),
            Transition::Promote => add(&self.promoted),
            Transition::Remove => add(&self.removed),
            Transition::Heartbeat | Transition::Progress | Transition::Callback => {}
        }
        let (Some(new), old_state) = (new, old.map(|job| job.state)) else {
            return;
        };
        if new.state == JobState::Dead && old_state != Some(JobState::Dead) {
            add(&self.dead);
        }
        let lease = old.and_then(|job| job.lease.as_ref());
        match (transition, old, lease, &new.lease) {
            // Run time: the attempt's start to its completion.
            (Transition::Complete, _, Some(lease), _) => {
                self.run
                    .observe(new.updated_at.saturating_sub(lease.leased_at));
            }
            // Queue wait: leasable to leased.
            (Transition::Lease, Some(old), _, Some(lease)) => {
                self.wait
                    .observe(lease.leased_at.saturating_sub(ready_since(old)));
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> Counters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (run_time_buckets, run_time_sum_ms) = self.run.snapshot();
        let (wait_time_buckets, wait_time_sum_ms) = self.wait.snapshot();
        Counters {
            enqueued: get(&self.enqueued),
            leased: get(&self.leased),
            completed: get(&self.completed),
            failed: get(&self.failed),
            dead: get(&self.dead),
            expired: get(&self.expired),
            ttl_expired: get(&self.ttl_expired),
            released: get(&self.released),
            cancelled: get(&self.cancelled),
            requeued: get(&self.requeued),
            promoted: get(&self.promoted),
            removed: get(&self.removed),
            run_time_buckets,
            run_time_sum_ms,
            wait_time_buckets,
            wait_time_sum_ms,
        }
    }
}

/// Every queue's counters.
#[derive(Default)]
pub(crate) struct AtomicCounters {
    queues: RwLock<HashMap<String, Arc<QueueCounters>>>,
}

impl AtomicCounters {
    /// The counters of `queue`, made on first sight.
    fn queue(&self, queue: &str) -> Arc<QueueCounters> {
        let found = self
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .cloned();
        if let Some(found) = found {
            return found;
        }
        let mut queues = self.queues.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            queues
                .entry(queue.to_owned())
                .or_insert_with(|| Arc::new(QueueCounters::new(queue))),
        )
    }

    /// Counts one applied change: `old` is the record it replaced (none
    /// for a new job), `new` the record it left (none for a removal).
    /// `last` is the caller's cache of the queue counted last: a run of
    /// changes of one queue looks the queue up once.
    pub(crate) fn record(
        &self,
        last: &mut Option<Arc<QueueCounters>>,
        transition: Transition,
        old: Option<&Job>,
        new: Option<&Job>,
    ) {
        let Some(queue) = new.or(old).map(|job| job.queue.as_str()) else {
            return;
        };
        let counters = match last {
            Some(counters) if counters.queue == queue => counters,
            _ => last.insert(self.queue(queue)),
        };
        counters.record(transition, old, new);
    }

    /// Each queue's counters, by name.
    pub(crate) fn by_queue(&self) -> BTreeMap<String, Counters> {
        let queues: Vec<Arc<QueueCounters>> = self
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        queues
            .iter()
            .map(|counters| (counters.queue.clone(), counters.snapshot()))
            .collect()
    }

    /// The totals over every queue.
    pub(crate) fn snapshot(&self) -> Counters {
        self.by_queue()
            .values()
            .fold(Counters::zero(), |mut total, queue| {
                total.add(queue);
                total
            })
    }
}

/// Totals since this process opened the queue, of every queue
/// ([`Queue::counters`](crate::Queue::counters)) or of one
/// ([`Queue::queue_counters`](crate::Queue::queue_counters)). They start
/// at zero on every open; per-state counts of stored jobs are in
/// [`QueueStats`](crate::QueueStats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs created (replays excluded).
    pub enqueued: u64,
    /// Leases handed out.
    pub leased: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failures reported by workers (retried or not).
    pub failed: u64,
    /// Jobs that became dead (by failure or expiry).
    pub dead: u64,
    /// Leases that expired (at their end or at the job's timeout).
    pub expired: u64,
    /// Jobs given up at their `expires_at` before they ran (counted in
    /// `dead` too).
    pub ttl_expired: u64,
    /// Leases given back.
    pub released: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Dead jobs requeued.
    pub requeued: u64,
    /// Scheduled jobs that became ready.
    pub promoted: u64,
    /// Finished jobs removed by retention or purge.
    pub removed: u64,
    /// Completed jobs by run time (lease to completion), one count per
    /// bucket of [`RUN_TIME_BOUNDS_MS`] plus a last one for longer runs.
    pub run_time_buckets: Vec<u64>,
    /// Sum of all run times in the histogram, in ms.
    pub run_time_sum_ms: u64,
    /// Leases by queue wait (from the moment the job could be leased to
    /// its lease: its `run_at`, not before its enqueue; a released job
    /// from its release), one count per bucket of [`WAIT_TIME_BOUNDS_MS`]
    /// plus a last one for longer waits.
    pub wait_time_buckets: Vec<u64>,
    /// Sum of all waits in the histogram, in ms.
    pub wait_time_sum_ms: u64,
}

impl Counters {
    /// All zero, with every histogram bucket present.
    pub fn zero() -> Counters {
        Counters {
            run_time_buckets: vec![0; RUN_TIME_BOUNDS_MS.len() + 1],
            wait_time_buckets: vec![0; WAIT_TIME_BOUNDS_MS.len() + 1],
            ..Counters::default()
        }
    }

    /// Adds `other`'s counts to these (bucket by bucket for the
    /// histograms).
    pub fn add(&mut self, other: &Counters) {
        fn add_buckets(into: &mut Vec<u64>, from: &[u64]) {
            if into.len() < from.len() {
                into.resize(from.len(), 0);
            }
            for (a, b) in into.iter_mut().zip(from) {
                *a += b;
            }
        }
        self.enqueued += other.enqueued;
        self.leased += other.leased;
        self.completed += other.completed;
        self.failed += other.failed;
        self.dead += other.dead;
        self.expired += other.expired;
        self.ttl_expired += other.ttl_expired;
        self.released += other.released;
        self.cancelled += other.cancelled;
        self.requeued += other.requeued;
        self.promoted += other.promoted;
        self.removed += other.removed;
        add_buckets(&mut self.run_time_buckets, &other.run_time_buckets);
        self.run_time_sum_ms += other.run_time_sum_ms;
        add_buckets(&mut self.wait_time_buckets, &other.wait_time_buckets);
        self.wait_time_sum_ms += other.wait_time_sum_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, ready_job};

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(&RUN_TIME_BOUNDS_MS, 0), 0);
        assert_eq!(bucket_of(&RUN_TIME_BOUNDS_MS, 5), 0);
        assert_eq!(bucket_of(&RUN_TIME_BOUNDS_MS, 6), 1);
        assert_eq!(
            bucket_of(&RUN_TIME_BOUNDS_MS, 300_001),
            RUN_TIME_BOUNDS_MS.len()
        );
        assert_eq!(
            bucket_of(&WAIT_TIME_BOUNDS_MS, u64::MAX),
            WAIT_TIME_BOUNDS_MS.len()
        );
    }

    #[test]
    fn a_job_waits_from_its_run_at_or_its_enqueue_or_its_release() {
        let mut job = ready_job();
        job.created_at = T0;
        job.updated_at = T0;
        job.started_at = None;
        // Enqueued ready: from the enqueue.
        job.run_at = T0;
        assert_eq!(ready_since(&job), T0);
        // A run_at in the past counts from the enqueue.
        job.run_at = T0 - 500;
        assert_eq!(ready_since(&job), T0);
        // Delayed (and promoted late): from the run_at.
        job.run_at = T0 + 1_000;
        job.updated_at = T0 + 1_300;
        assert_eq!(ready_since(&job), T0 + 1_000);
        // Leased at T0 + 2000, released at T0 + 2500: from the release.
        job.started_at = Some(T0 + 2_000);
        job.updated_at = T0 + 2_500;
        assert_eq!(ready_since(&job), T0 + 2_500);
        // Then failed with a back-off to T0 + 4000: from the new run_at.
        job.run_at = T0 + 4_000;
        job.updated_at = T0 + 4_100;
        assert_eq!(ready_since(&job), T0 + 4_000);
    }

    #[test]
    fn counts_are_kept_per_queue_and_total() {
        let counters = AtomicCounters::default();
        let mut last = None;
        let mut a = ready_job();
        a.queue = "a".into();
        let mut b = a.clone();
        b.queue = "b".into();
        counters.record(&mut last, Transition::Enqueue, None, Some(&a));
        counters.record(&mut last, Transition::Enqueue, None, Some(&b));
        counters.record(&mut last, Transition::Enqueue, None, Some(&a));
        let mut dead = a.clone();
        dead.state = JobState::Dead;
        counters.record(&mut last, Transition::Ttl, Some(&a), Some(&dead));
        counters.record(&mut last, Transition::Remove, Some(&dead), None);
        let by_queue = counters.by_queue();
        assert_eq!(by_queue.keys().collect::<Vec<_>>(), ["a", "b"]);
        let a = &by_queue["a"];
        assert_eq!((a.enqueued, a.ttl_expired, a.dead, a.removed), (2, 1, 1, 1));
        assert_eq!(by_queue["b"].enqueued, 1);
        assert_eq!(by_queue["b"].dead, 0);
        let total = counters.snapshot();
        assert_eq!((total.enqueued, total.dead), (3, 1));
        assert_eq!(total.wait_time_buckets.len(), WAIT_TIME_BOUNDS_MS.len() + 1);
    }
}
