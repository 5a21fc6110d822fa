//! History: what each committed change adds to its queue's per-minute
//! rollup, the rollup itself, and how a query merges rollups into points.
//!
//! # Design
//!
//! Every applied change yields at most one [`Sample`] ([`sample`]): counts
//! to add (a new job is `enqueued`, schedule ticks included; `completed`;
//! a failed attempt, reported by the worker or a lease expiry or timeout,
//! is `failed`; a job whose new state is `dead` and was not is `dead`; a
//! job given up at its time-to-live is `expired`, and `dead` too), a wait
//! time on a lease (the lease's time minus the job's `run_at`: its enqueue,
//! or the end of its delay or retry back-off), a run time on a completion
//! (the completion's time minus the lease's `leased_at`), and whether the
//! queue's depths (`ready`, `scheduled`, `leased`) may have moved. Changes
//! that touch none of these (heartbeats, progress, callback deliveries,
//! retention) yield nothing and cost history nothing.
//!
//! The backend folds the samples of a commit into one [`Rollup`] per
//! (queue, minute of the change) **in the same atomic commit** as the
//! changes, with the queue's depths as the commit leaves them. So an
//! acknowledged change is counted exactly once (a crash keeps the commit
//! whole or drops it whole; a stale commit adds nothing), and history
//! survives restarts because it is stored like everything else.
//!
//! A minute without changes has no rollup. Depths only move with changes,
//! so the depths of a step without a rollup are those of the latest rollup
//! before it, which a read carries forward ([`points`]); the backend keeps
//! the newest rollup older than the retention (as depths only) for that
//! reason when it prunes.
//!
//! # Percentiles and their precision
//!
//! Wait and run times go into a [`Histogram`] per rollup: log-linear
//! buckets (values below 32 ms exactly, above that 16 buckets per power of
//! two), stored sparsely, with the exact minimum and maximum. Merging
//! minutes into a larger step merges histograms (percentiles are never
//! averaged). A percentile is the nearest-rank one (the smallest sample
//! such that at least that share of the samples is at or below it),
//! reported as the middle of its bucket, clamped to the exact minimum and
//! maximum: within [`HISTORY_PRECISION`] (3.125 %) of the true nearest-rank
//! value, exact below 32 ms and when all samples are equal.

use std::collections::BTreeMap;

use queue_proto::{
    DEFAULT_HISTORY_SPAN_MS, HISTORY_MINUTE_MS, HistoryPoint, HistoryQuery, JobState,
    MAX_HISTORY_POINTS,
};

use super::Outcome;
use crate::{Error, Job, Transition};

/// The worst relative error of a history percentile ([`Queue::history`](crate::Queue::history)): 1/32.
pub const HISTORY_PRECISION: f64 = 1.0 / 32.0;

/// Bits of the mantissa kept per power of two: 16 buckets each.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this have a bucket each.
const EXACT: u64 = 2 * SUB;
/// One more than the largest bucket index (that of `u64::MAX`).
pub(crate) const BUCKETS: u16 = bucket_of(u64::MAX) + 1;

/// The bucket of `value`.
const fn bucket_of(value: u64) -> u16 {
    if value < EXACT {
        return value as u16;
    }
    // `value >= 32`, so its highest bit `e` is at least 5.
    let e = 63 - value.leading_zeros() as u64;
    let shift = e - SUB_BITS as u64;
    let sub = (value >> shift) & (SUB - 1);
    (EXACT + (shift - 1) * SUB + sub) as u16
}

/// The smallest and largest value of bucket `index`.
fn bucket_range(index: u16) -> (u64, u64) {
    let index = u64::from(index);
    if index < EXACT {
        return (index, index);
    }
    let shift = (index - EXACT) / SUB + 1;
    let sub = (index - EXACT) % SUB;
    let low = (SUB + sub) << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A mergeable histogram of durations in ms (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    /// Samples per bucket index; no zero counts.
    pub(crate) buckets: BTreeMap<u16, u64>,
    /// The exact smallest and largest sample (meaningless when empty).
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl Histogram {
    /// Whether it holds no sample.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Adds one sample.
    pub(crate) fn record(&mut self, value: u64) {
        let first = self.is_empty();
        *self.buckets.entry(bucket_of(value)).or_default() += 1;
        if first {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
    }

    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            (self.min, self.max) = (other.min, other.max);
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        for (index, count) in &other.buckets {
            let slot = self.buckets.entry(*index).or_default();
            *slot = slot.saturating_add(*count);
        }
    }

    /// The nearest-rank `percent` percentile (1..=100), `None` when empty.
    pub(crate) fn percentile(&self, percent: u64) -> Option<u64> {
        let total: u64 = self.buckets.values().fold(0, |a, c| a.saturating_add(*c));
        if total == 0 {
            return None;
        }
        let rank = total.saturating_mul(percent).div_ceil(100).clamp(1, total);
        let mut seen = 0u64;
        for (index, count) in &self.buckets {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                let (low, high) = bucket_range(*index);
                let middle = low + (high - low) / 2;
                return Some(middle.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Whether the stored form is whole: known buckets, no zero count,
    /// and a minimum and maximum that fit the buckets.
    pub(crate) fn is_valid(&self) -> bool {
        let (Some(first), Some(last)) = (self.buckets.keys().next(), self.buckets.keys().last())
        else {
            return true;
        };
        *last < BUCKETS
            && self.buckets.values().all(|count| *count > 0)
            && self.min <= self.max
            && bucket_of(self.min) == *first
            && bucket_of(self.max) == *last
    }
}

/// The counts a change adds to its minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) enqueued: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) dead: u64,
    pub(crate) expired: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.enqueued = self.enqueued.saturating_add(other.enqueued);
        self.completed = self.completed.saturating_add(other.completed);
        self.failed = self.failed.saturating_add(other.failed);
        self.dead = self.dead.saturating_add(other.dead);
        self.expired = self.expired.saturating_add(other.expired);
    }

    fn is_zero(&self) -> bool {
        *self == Tally::default()
    }
}

/// A queue's depths: its `ready`, `scheduled` and `leased` jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Depths {
    pub(crate) ready: u64,
    pub(crate) scheduled: u64,
    pub(crate) leased: u64,
}

/// What one applied change adds to the history of its queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) queue: String,
    /// The start of the change's minute (unix ms).
    pub(crate) minute: u64,
    pub(crate) tally: Tally,
    /// Lease time − `run_at`, on a lease.
    pub(crate) wait_ms: Option<u64>,
    /// Completion time − `leased_at`, on a completion.
    pub(crate) run_ms: Option<u64>,
}

/// The start of the minute holding `at`.
pub(crate) fn minute_of(at: u64) -> u64 {
    at - at % HISTORY_MINUTE_MS
}

fn is_depth(state: JobState) -> bool {
    match state {
        JobState::Ready | JobState::Scheduled | JobState::Leased => true,
        JobState::Completed | JobState::Dead | JobState::Cancelled => false,
    }
}

/// The sample of a change from `old` (`None`: a new job) to what
/// `outcome` decided, or `None` when the change adds nothing to history
/// (no count, no time, no depth moved).
pub(crate) fn sample(old: Option<&Job>, outcome: &Outcome) -> Option<Sample> {
    // A removal (retention, purge) only ever removes finished jobs: no
    // count and no depth moves.
    let new = outcome.job.as_ref()?;
    let old_state = old.map(|job| job.state);
    let moved = old_state != Some(new.state);
    let mut tally = Tally::default();
    let mut wait_ms = None;
    let mut run_ms = None;
    match outcome.transition {
        Transition::Enqueue if old.is_none() => tally.enqueued = 1,
        Transition::Lease if old_state != Some(JobState::Leased) => {
            wait_ms = old.map(|job| new.updated_at.saturating_sub(job.run_at));
        }
        Transition::Complete if new.state == JobState::Completed && moved => {
            tally.completed = 1;
            run_ms = old
                .and_then(|job| job.lease.as_ref())
                .map(|lease| new.updated_at.saturating_sub(lease.leased_at));
        }
        Transition::Fail | Transition::Expire if old_state == Some(JobState::Leased) && moved => {
            tally.failed = 1;
        }
        Transition::Ttl if moved => tally.expired = 1,
        Transition::Enqueue
        | Transition::Promote
        | Transition::Lease
        | Transition::Heartbeat
        | Transition::Progress
        | Transition::Callback
        | Transition::Complete
        | Transition::Fail
        | Transition::Expire
        | Transition::Release
        | Transition::Cancel
        | Transition::Requeue
        | Transition::Remove
        | Transition::Ttl => {}
    }
    if new.state == JobState::Dead && moved {
        tally.dead = 1;
    }
    let depths_moved = moved && (old_state.is_some_and(is_depth) || is_depth(new.state));
    if tally.is_zero() && wait_ms.is_none() && run_ms.is_none() && !depths_moved {
        return None;
    }
    Some(Sample {
        queue: new.queue.clone(),
        minute: minute_of(new.updated_at),
        tally,
        wait_ms,
        run_ms,
    })
}

/// One queue's history for one minute, as stored: what happened during
/// it, and its depths after the last change of the minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rollup {
    pub(crate) tally: Tally,
    pub(crate) depths: Depths,
    pub(crate) wait: Histogram,
    pub(crate) run: Histogram,
}

impl Rollup {
    /// Adds `sample` (its counts and times; depths are set by the backend
    /// from its counts after the commit's changes).
    pub(crate) fn add(&mut self, sample: &Sample) {
        self.tally.add(&sample.tally);
        if let Some(ms) = sample.wait_ms {
            self.wait.record(ms);
        }
        if let Some(ms) = sample.run_ms {
            self.run.record(ms);
        }
    }

    /// Adds the counts and times of `other` (depths are left as they are).
    pub(crate) fn merge(&mut self, other: &Rollup) {
        self.tally.add(&other.tally);
        self.wait.merge(&other.wait);
        self.run.merge(&other.run);
    }

    /// The same minute with its depths only (what pruning keeps of the
    /// newest minute older than the retention).
    pub(crate) fn depths_only(&self) -> Rollup {
        Rollup {
            depths: self.depths,
            ..Rollup::default()
        }
    }
}

/// The steps a query covers: `first` and `last` are step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) step: u64,
}

impl Plan {
    /// The start of the last minute the query reads.
    pub(crate) fn last_minute(&self) -> u64 {
        self.last.saturating_add(self.step - HISTORY_MINUTE_MS)
    }
}

/// Checks `query` and resolves its defaults against `now`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `step_ms` when it is not a positive
/// multiple of 60000, `from` when it is after `to`, and `from` when the
/// range holds more than [`MAX_HISTORY_POINTS`] steps.
pub(crate) fn plan(query: &HistoryQuery, now: u64) -> Result<Plan, Error> {
    let step = query.step_ms().unwrap_or(HISTORY_MINUTE_MS);
    if step == 0 || step % HISTORY_MINUTE_MS != 0 {
        return Err(Error::invalid(
            "step_ms",
            format!("must be a positive multiple of {HISTORY_MINUTE_MS} (one minute), got {step}"),
        ));
    }
    let to = query.to.unwrap_or(now);
    let from = query
        .from
        .unwrap_or_else(|| to.saturating_sub(DEFAULT_HISTORY_SPAN_MS));
    if from > to {
        return Err(Error::invalid(
            "from",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    let first = from - from % step;
    let last = to - to % step;
    let points = (last - first) / step + 1;
    if points > MAX_HISTORY_POINTS {
        return Err(Error::invalid(
            "from",
            format!(
                "from..to holds {points} steps of {step} ms; at most {MAX_HISTORY_POINTS} \
                 points per request (narrow the range or widen step_ms)"
            ),
        ));
    }
    Ok(Plan { first, last, step })
}

/// The points of `plan` from the stored minutes `minutes` (sorted, each
/// within the plan's steps) and the depths of the latest minute stored
/// before the first step (`before`; zeros when there is none).
pub(crate) fn points(
    plan: &Plan,
    before: Option<Depths>,
    minutes: &[(u64, Rollup)],
) -> Vec<HistoryPoint> {
    let mut depths = before.unwrap_or_default();
    let mut rest = minutes.iter().peekable();
    let mut out = Vec::new();
    let mut at = plan.first;
    loop {
        let end = at.saturating_add(plan.step);
        let mut merged = Rollup::default();
        while let Some((_, rollup)) = rest.next_if(|(minute, _)| *minute < end) {
            merged.merge(rollup);
            depths = rollup.depths;
        }
        out.push(HistoryPoint {
            at,
            enqueued: merged.tally.enqueued,
            completed: merged.tally.completed,
            failed: merged.tally.failed,
            dead: merged.tally.dead,
            expired: merged.tally.expired,
            ready: depths.ready,
            scheduled: depths.scheduled,
            leased: depths.leased,
            run_ms_p50: merged.run.percentile(50),
            run_ms_p95: merged.run.percentile(95),
            wait_ms_p50: merged.wait.percentile(50),
            wait_ms_p95: merged.wait.percentile(95),
        });
        if at >= plan.last {
            return out;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, ready_job, record};
    use crate::rules::{Jitter, cancel, complete, enqueue, expire, fail, lease, promote};
    use crate::rules::{release, requeue, ttl};
    use crate::{Failure, JobId, LeaseId, LeaseOptions, NewJob};

    fn tally(sample: &Option<Sample>) -> Tally {
        sample.as_ref().map(|s| s.tally).unwrap_or_default()
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut previous = None;
        for value in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = bucket_of(value);
            let (low, high) = bucket_range(index);
            assert!(low <= value && value <= high, "{value} in {low}..={high}");
            if let Some(p) = previous {
                assert!(index >= p);
            }
            previous = Some(index);
            // The documented precision: half a bucket is at most 1/32 of
            // its low end.
            assert!((high - low) / 2 <= low / 32, "bucket {index}");
        }
        assert_eq!(bucket_range(BUCKETS - 1).1, u64::MAX);
        for value in 0..EXACT {
            assert_eq!(bucket_range(bucket_of(value)), (value, value));
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_within_the_precision() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50), None);
        let values: Vec<u64> = (1..=200).map(|i| i * 37).collect();
        for v in &values {
            h.record(*v);
        }
        for percent in [1, 50, 95, 100] {
            let exact = values[(values.len() * percent as usize).div_ceil(100) - 1] as f64;
            let got = h.percentile(percent).unwrap() as f64;
            assert!(
                (got - exact).abs() <= exact * HISTORY_PRECISION,
                "p{percent}: {got} vs {exact}"
            );
        }
        // One sample, or equal samples: exact.
        let mut one = Histogram::default();
        one.record(123_457);
        assert_eq!(one.percentile(50), Some(123_457));
        assert_eq!(one.percentile(95), Some(123_457));
        assert!(h.is_valid() && one.is_valid());
    }

    #[test]
    fn merging_histograms_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = Default::default();
        for v in 0..300u64 {
            let value = v * v;
            if v % 3 == 0 {
                Histogram::record(&mut a, value);
            } else {
                Histogram::record(&mut b, value);
            }
            Histogram::record(&mut all, value);
        }
        let mut merged: Histogram = a;
        merged.merge(&b);
        assert_eq!(merged, all);
    }

    #[test]
    fn an_enqueue_counts_and_moves_a_depth() {
        let outcome = enqueue::enqueue(JobId::from_u64(1), "q", &NewJob::new(b"1".to_vec()), T0);
        let sample = sample(None, &outcome).unwrap();
        assert_eq!(sample.queue, "q");
        assert_eq!(sample.minute, minute_of(T0));
        assert_eq!(sample.tally.enqueued, 1);
        assert_eq!((sample.wait_ms, sample.run_ms), (None, None));
    }

    #[test]
    fn a_lease_samples_the_wait_from_run_at() {
        let mut job = ready_job();
        job.run_at = T0 - 250;
        let outcome =
            lease::lease(&job, LeaseId::from_u64(1), &LeaseOptions::default(), T0).unwrap();
        let sample = sample(Some(&job), &outcome).unwrap();
        assert_eq!(sample.wait_ms, Some(250));
        assert_eq!(sample.tally, Tally::default());
    }

    #[test]
    fn a_completion_counts_and_samples_the_run_from_the_lease() {
        let job = leased_job(1);
        let outcome = complete::complete(&job, LeaseId::from_u64(1), None, T0 + 1500).unwrap();
        let sample = sample(Some(&job), &outcome).unwrap();
        assert_eq!(sample.tally.completed, 1);
        assert_eq!(sample.run_ms, Some(1500));
        assert_eq!(sample.minute, minute_of(T0 + 1500));
    }

    #[test]
    fn failures_count_as_failed_and_dead_when_final() {
        let job = leased_job(1);
        let failure = Failure::new("boom");
        let retried =
            fail::fail(&job, LeaseId::from_u64(1), &failure, Jitter::NONE, T0 + 10).unwrap();
        assert_eq!(
            tally(&sample(Some(&job), &retried)),
            Tally {
                failed: 1,
                ..Tally::default()
            }
        );
        let mut last = job.clone();
        last.max_attempts = 1;
        let dead =
            fail::fail(&last, LeaseId::from_u64(1), &failure, Jitter::NONE, T0 + 10).unwrap();
        assert_eq!(
            tally(&sample(Some(&last), &dead)),
            Tally {
                failed: 1,
                dead: 1,
                ..Tally::default()
            }
        );
        let expired =
            expire::expire(&job, LeaseId::from_u64(1), Jitter::NONE, T0 + 30_000).unwrap();
        assert_eq!(tally(&sample(Some(&job), &expired)).failed, 1);
    }

    #[test]
    fn a_time_to_live_counts_expired_and_dead() {
        let mut job = ready_job();
        job.expires_at = Some(T0 + 5);
        let outcome = ttl::expire_unleased(&job, T0 + 5).unwrap();
        assert_eq!(
            tally(&sample(Some(&job), &outcome)),
            Tally {
                dead: 1,
                expired: 1,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn moves_between_depths_are_samples_without_counts() {
        let job = leased_job(1);
        let released = release::release(&job, LeaseId::from_u64(1), T0 + 1).unwrap();
        let s = sample(Some(&job), &released).unwrap();
        assert_eq!(
            (s.tally, s.wait_ms, s.run_ms),
            (Tally::default(), None, None)
        );
        let cancelled = cancel::cancel(&ready_job(), T0 + 1).unwrap();
        assert!(sample(Some(&ready_job()), &cancelled).is_some());
        let mut scheduled = ready_job();
        scheduled.state = JobState::Scheduled;
        let promoted = promote::promote(&scheduled, T0).unwrap();
        assert!(sample(Some(&scheduled), &promoted).is_some());
        // A requeue makes a dead job ready: a depth moves, nothing counts.
        let mut last = leased_job(1);
        last.max_attempts = 1;
        let dead = record(fail::fail(
            &last,
            LeaseId::from_u64(1),
            &Failure::new("x"),
            Jitter::NONE,
            T0,
        ));
        let requeued = requeue::requeue(&dead, T0 + 1).unwrap();
        assert_eq!(tally(&sample(Some(&dead), &requeued)), Tally::default());
        assert!(sample(Some(&dead), &requeued).is_some());
    }

    #[test]
    fn heartbeats_and_removals_add_nothing() {
        let job = leased_job(1);
        let beat =
            crate::rules::heartbeat::heartbeat(&job, LeaseId::from_u64(1), None, None, T0 + 5)
                .unwrap();
        assert_eq!(sample(Some(&job), &beat), None);
        let done = record(complete::complete(&job, LeaseId::from_u64(1), None, T0));
        let removed = crate::rules::retain::retain(&done, 0, T0).unwrap();
        assert_eq!(sample(Some(&done), &removed), None);
    }

    fn query(from: Option<u64>, to: Option<u64>, step_ms: Option<u64>) -> HistoryQuery {
        HistoryQuery {
            from,
            to,
            step: step_ms.map(std::time::Duration::from_millis),
        }
    }

    #[test]
    fn plans_default_to_the_last_hour_in_minutes_and_align_to_steps() {
        let now = 10 * 3_600_000 + 30_000;
        let plan = plan(&HistoryQuery::default(), now).unwrap();
        assert_eq!(plan.step, 60_000);
        assert_eq!(plan.first, 9 * 3_600_000);
        assert_eq!(plan.last, 10 * 3_600_000);
        let wide = super::plan(&query(Some(1), Some(3_600_001), Some(600_000)), now).unwrap();
        assert_eq!((wide.first, wide.last, wide.step), (0, 3_600_000, 600_000));
        assert_eq!(wide.last_minute(), 3_600_000 + 540_000);
    }

    #[test]
    fn plans_refuse_bad_steps_reversed_ranges_and_too_many_points() {
        let field = |q: HistoryQuery| match plan(&q, T0) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(query(None, None, Some(0))), "step_ms");
        assert_eq!(field(query(None, None, Some(90_000))), "step_ms");
        assert_eq!(field(query(Some(T0 + 1), Some(T0), None)), "from");
        let week = MAX_HISTORY_POINTS * 60_000;
        let start = minute_of(T0);
        assert!(plan(&query(Some(start), Some(start + week - 1), None), T0).is_ok());
        assert_eq!(field(query(Some(start), Some(start + week), None)), "from");
    }

    #[test]
    fn points_merge_minutes_and_carry_depths_forward() {
        let plan = Plan {
            first: 0,
            last: 360_000,
            step: 120_000,
        };
        let minute = |enqueued, ready, waits: &[u64]| {
            let mut r = Rollup::default();
            r.tally.enqueued = enqueued;
            r.depths.ready = ready;
            for w in waits {
                r.wait.record(*w);
            }
            r
        };
        let before = Depths {
            ready: 7,
            ..Depths::default()
        };
        let minutes = [
            (60_000, minute(2, 9, &[10])),
            (120_000, minute(1, 8, &[])),
            (180_000, minute(3, 5, &[20, 30])),
        ];
        let points = points(&plan, Some(before), &minutes);
        let summary: Vec<_> = points
            .iter()
            .map(|p| (p.at, p.enqueued, p.ready, p.wait_ms_p50, p.wait_ms_p95))
            .collect();
        assert_eq!(
            summary,
            [
                (0, 2, 9, Some(10), Some(10)),
                (120_000, 4, 5, Some(20), Some(30)),
                (240_000, 0, 5, None, None),
                (360_000, 0, 5, None, None),
            ]
        );
    }
}
