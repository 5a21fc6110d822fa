//! Totals of transitions since the queue was opened, for metrics. Lock-free;
//! updated when a change is announced (after it is durable).

use std::sync::atomic::{AtomicU64, Ordering};

use queue_proto::JobState;

use crate::Transition;

/// Upper bounds (inclusive, in ms) of the run-time histogram buckets; a last
/// implicit bucket holds everything longer.
pub const RUN_TIME_BOUNDS_MS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

#[derive(Default)]
pub(crate) struct AtomicCounters {
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
    run_buckets: [AtomicU64; RUN_TIME_BOUNDS_MS.len() + 1],
    run_sum_ms: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn record(
        &self,
        transition: Transition,
        new_state: Option<JobState>,
        run_ms: Option<u64>,
    ) {
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
        if new_state == Some(JobState::Dead) && transition != Transition::Remove {
            add(&self.dead);
        }
        if let Some(ms) = run_ms {
            let bucket = RUN_TIME_BOUNDS_MS
                .iter()
                .position(|bound| ms <= *bound)
                .unwrap_or(RUN_TIME_BOUNDS_MS.len());
            add(&self.run_buckets[bucket]);
            self.run_sum_ms.fetch_add(ms, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
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
            run_time_buckets: self.run_buckets.iter().map(get).collect(),
            run_time_sum_ms: get(&self.run_sum_ms),
        }
    }
}

/// Totals since this process opened the queue (they start at zero on every
/// open; per-state counts of stored jobs are in [`QueueStats`](crate::QueueStats)).
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
}
