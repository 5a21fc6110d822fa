//! How the embedded store groups its commits, since it was opened: the
//! batches its leader runs, the groups of batches written to the journal
//! together, and the journal's `fdatasync`s. For operators (is the disk
//! the limit, how many operations share a sync?) and for the benchmarks.
//!
//! Counted with relaxed atomics, a few per batch and per group (not per
//! operation), so the hot path pays next to nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Totals since the store was opened (see [`Queue::commit_stats`]).
/// Differences of two readings describe the interval between them.
///
/// [`Queue::commit_stats`]: crate::Queue::commit_stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches run: each is one leader's pass over every operation waiting
    /// (stale ones included), decided together.
    pub batches: u64,
    /// Operations those batches ran.
    pub batch_operations: u64,
    /// Time spent running batches. The batches run one at a time, so over
    /// an interval this over the interval's length is how busy the leader
    /// was.
    pub batch_time: Duration,
    /// Groups of batches committed together: their journal frames written
    /// with one write and, under `Durability::Sync`, synced with one
    /// `fdatasync`, then their writes made readable and their callers
    /// answered. (A group whose batches wrote nothing, a lease that found
    /// no job say, has no frame and no sync.) A group that failed to
    /// commit is not counted.
    pub commits: u64,
    /// Operations those groups held.
    pub commit_operations: u64,
    /// Time from a group's start (its frames' write) to its callers being
    /// answered, summed over the groups.
    pub commit_time: Duration,
    /// `fdatasync`s of the journal that commits wait for: one per group
    /// under `Durability::Sync`; under `Durability::Periodic`, those of
    /// the flush thread and of [`Queue::flush`] (one per journal file
    /// each time).
    ///
    /// [`Queue::flush`]: crate::Queue::flush
    pub fdatasyncs: u64,
    /// Time spent in those `fdatasync`s.
    pub fdatasync_time: Duration,
}

/// How many times something happened, the operations it held and the
/// time it took, summed.
#[derive(Default)]
struct Tally {
    times: AtomicU64,
    operations: AtomicU64,
    nanos: AtomicU64,
}

impl Tally {
    fn add(&self, operations: usize, elapsed: Duration) {
        self.times.fetch_add(1, Ordering::Relaxed);
        self.operations
            .fetch_add(operations as u64, Ordering::Relaxed);
        self.nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (times, operations, time)
    fn read(&self) -> (u64, u64, Duration) {
        (
            self.times.load(Ordering::Relaxed),
            self.operations.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

/// The counters behind [`CommitStats`].
#[derive(Default)]
pub(crate) struct CommitCounters {
    batches: Tally,
    commits: Tally,
    fdatasyncs: Tally,
}

impl CommitCounters {
    /// A batch of `operations` ran for `elapsed`.
    pub(crate) fn batch(&self, operations: usize, elapsed: Duration) {
        self.batches.add(operations, elapsed);
    }

    /// A group of `operations` was committed in `elapsed`.
    pub(crate) fn commit(&self, operations: usize, elapsed: Duration) {
        self.commits.add(operations, elapsed);
    }

    /// An `fdatasync` of the journal took `elapsed`.
    pub(crate) fn fdatasync(&self, elapsed: Duration) {
        self.fdatasyncs.add(0, elapsed);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        let (batches, batch_operations, batch_time) = self.batches.read();
        let (commits, commit_operations, commit_time) = self.commits.read();
        let (fdatasyncs, _, fdatasync_time) = self.fdatasyncs.read();
        CommitStats {
            batches,
            batch_operations,
            batch_time,
            commits,
            commit_operations,
            commit_time,
            fdatasyncs,
            fdatasync_time,
        }
    }
}

impl CommitStats {
    /// What happened between `earlier` (a reading of the same store) and
    /// this reading.
    #[must_use]
    pub fn since(&self, earlier: &CommitStats) -> CommitStats {
        CommitStats {
            batches: self.batches.saturating_sub(earlier.batches),
            batch_operations: self
                .batch_operations
                .saturating_sub(earlier.batch_operations),
            batch_time: self.batch_time.saturating_sub(earlier.batch_time),
            commits: self.commits.saturating_sub(earlier.commits),
            commit_operations: self
                .commit_operations
                .saturating_sub(earlier.commit_operations),
            commit_time: self.commit_time.saturating_sub(earlier.commit_time),
            fdatasyncs: self.fdatasyncs.saturating_sub(earlier.fdatasyncs),
            fdatasync_time: self.fdatasync_time.saturating_sub(earlier.fdatasync_time),
        }
    }
}
