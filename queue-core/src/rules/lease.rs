//! `lease`: a `ready` job becomes `leased` under a fresh lease id.
//!
//! A lease call is one [`LeaseRound`]: the backend offers the queue's ready
//! jobs in lease order, inside its atomic batch (or under its row locks),
//! and the round decides for each whether it is taken. The round starts
//! from the queue's stored settings and its current number of leased jobs,
//! so a paused queue leases nothing and the limits hold across every worker
//! and every concurrent lease call:
//!
//! - `max_leased`: the round takes at most `max_leased - leased` jobs;
//! - `rate_limit`: at most the whole tokens of the bucket (refilled up to
//!   now); the bucket's new state is committed with the leases
//!   ([`LeaseRound::finish`]);
//! - `group_max_leased`: a candidate whose group already has that many
//!   leased jobs (those this round takes included) is skipped.

use std::collections::HashMap;

use queue_proto::JobState;
use queue_proto::limits::{MAX_LEASE_JOBS, MAX_LEASE_MS, MAX_WORKER_LEN};

use super::{Outcome, Refusal};
use crate::settings::{Bucket, QueueSettings, RateLimit};
use crate::{Error, Job, Lease, LeaseId, LeaseOptions, Result, Transition};

/// A lease call as the backend receives it: the options (validated) and the
/// time, from which it starts a [`LeaseRound`] once it has read the
/// queue's settings and counts.
#[derive(Debug, Clone)]
pub(crate) struct LeasePlan {
    pub(crate) opts: LeaseOptions,
    pub(crate) now: u64,
}

impl LeasePlan {
    /// The round for a queue with `settings` and `leased` jobs leased now.
    pub(crate) fn round(&self, settings: &QueueSettings, leased: u64) -> LeaseRound {
        LeaseRound::new(&self.opts, settings, leased, self.now)
    }
}

/// One lease call's decision, made candidate by candidate.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRound {
    opts: LeaseOptions,
    now: u64,
    /// How many more jobs may be taken.
    room: usize,
    /// How many were taken.
    taken: u64,
    /// The queue's `group_max_leased`.
    group_limit: Option<u64>,
    /// Jobs taken by this round, per group.
    taken_in_group: HashMap<String, u64>,
    /// The rate limit and its bucket refilled up to now.
    rate: Option<(RateLimit, Bucket)>,
    /// Whether the rate limit's tokens were what bounded the round.
    short_of_tokens: bool,
}

/// The round's answer for one candidate.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Take the job: commit this outcome.
    Take(Box<Outcome>),
    /// Leave this one; go on with the next.
    Skip,
}

/// What a round leaves behind once every candidate was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoundEnd {
    /// The token bucket to store with the leases, when the round took
    /// tokens from it.
    pub(crate) bucket: Option<Bucket>,
    /// When the rate limit's next token arrives, if its tokens bounded the
    /// round: a waiting lease tries again then.
    pub(crate) retry_at: Option<u64>,
}

impl LeaseRound {
    /// A round for `opts` (validated) at `now` on a queue with `settings`
    /// and `leased` jobs leased.
    pub(crate) fn new(
        opts: &LeaseOptions,
        settings: &QueueSettings,
        leased: u64,
        now: u64,
    ) -> LeaseRound {
        let wanted = opts.max_jobs.clamp(1, MAX_LEASE_JOBS);
        let mut room = if settings.paused {
            0
        } else {
            u64::from(wanted)
        };
        if let Some(max) = settings.limits.max_leased {
            room = room.min(u64::from(max).saturating_sub(leased));
        }
        let limits = settings.limits;
        let rate = limits.rate_limit.map(|rate| {
            let bucket = settings
                .bucket
                .unwrap_or_else(|| Bucket::full(rate, now))
                .refilled(rate, now);
            (rate, bucket)
        });
        let mut short_of_tokens = false;
        if let Some((rate, bucket)) = rate {
            let tokens = bucket.tokens(rate);
            if tokens < room {
                room = tokens;
                short_of_tokens = true;
            }
        }
        LeaseRound {
            opts: opts.clone(),
            now,
            room: usize::try_from(room).unwrap_or(usize::MAX),
            taken: 0,
            group_limit: limits.group_max_leased.map(u64::from),
            taken_in_group: HashMap::new(),
            rate,
            short_of_tokens,
        }
    }

    /// Whether another candidate could be taken.
    pub(crate) fn wants_more(&self) -> bool {
        self.room > 0
    }

    /// Whether a job of `group`, which has `leased` jobs leased besides
    /// those this round took, may still be taken.
    pub(crate) fn group_has_room(&self, group: &str, leased: u64) -> bool {
        match self.group_limit {
            None => true,
            Some(limit) => {
                let taken = self.taken_in_group.get(group).copied().unwrap_or(0);
                leased.saturating_add(taken) < limit
            }
        }
    }

    /// Decides on the ready candidate `job`, to be leased under `lease_id`
    /// if taken; `group_leased` is how many jobs of its group are leased
    /// (besides those this round took; 0 for a job without a group).
    pub(crate) fn offer(&mut self, job: &Job, lease_id: LeaseId, group_leased: u64) -> Offer {
        if !self.wants_more() {
            return Offer::Skip;
        }
        if let Some(group) = &job.group {
            if !self.group_has_room(group, group_leased) {
                return Offer::Skip;
            }
        }
        match lease(job, lease_id, &self.opts, self.now) {
            Ok(outcome) => {
                self.room -= 1;
                self.taken += 1;
                if let Some(group) = &job.group {
                    *self.taken_in_group.entry(group.clone()).or_default() += 1;
                }
                Offer::Take(Box::new(outcome))
            }
            Err(_) => Offer::Skip,
        }
    }

    /// The end of the round: the bucket to store and when to retry.
    pub(crate) fn finish(&self) -> RoundEnd {
        let Some((rate, bucket)) = self.rate else {
            return RoundEnd {
                bucket: None,
                retry_at: None,
            };
        };
        let left = Bucket {
            units: bucket
                .units
                .saturating_sub(self.taken.saturating_mul(rate.per_ms)),
            refilled_at: bucket.refilled_at,
        };
        RoundEnd {
            // Refilling is lazy and exact: a round that took nothing need
            // not store the refilled bucket.
            bucket: (self.taken > 0).then_some(left),
            // Only when the bucket is out of whole tokens: a round that
            // had tokens left (it found fewer jobs than it could take)
            // has nothing to wait for but new jobs.
            retry_at: (self.short_of_tokens && left.tokens(rate) == 0)
                .then(|| left.next_token_at(rate)),
        }
    }
}

/// Checks the lease options.
pub(crate) fn validate(opts: &LeaseOptions) -> Result<()> {
    if !(1..=MAX_LEASE_JOBS).contains(&opts.max_jobs) {
        return Err(Error::invalid(
            "max_jobs",
            format!("{} is outside 1..={MAX_LEASE_JOBS}", opts.max_jobs),
        ));
    }
    validate_lease_ms(opts.lease_ms)?;
    if let Some(worker) = &opts.worker {
        if worker.len() > MAX_WORKER_LEN {
            return Err(Error::invalid(
                "worker",
                format!("longer than {MAX_WORKER_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// Checks a lease length (also used by heartbeat).
pub(crate) fn validate_lease_ms(lease_ms: u64) -> Result<()> {
    if !(1..=MAX_LEASE_MS).contains(&lease_ms) {
        return Err(Error::invalid(
            "lease_ms",
            format!("{lease_ms} is outside 1..={MAX_LEASE_MS}"),
        ));
    }
    Ok(())
}

/// Leases a ready job: `attempts` counts this lease, `started_at` is now,
/// and the lease ends at `now + lease_ms`, or at `now + timeout_ms` if that
/// comes first. A job past its `expires_at` is not leased (the timer is
/// about to give it up).
pub(crate) fn lease(
    job: &Job,
    lease_id: LeaseId,
    opts: &LeaseOptions,
    now: u64,
) -> Result<Outcome, Refusal> {
    if job.state != JobState::Ready || super::ttl::is_expired(job, now) {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.state = JobState::Leased;
    next.attempts = job.attempts.saturating_add(1);
    next.updated_at = now;
    next.started_at = Some(now);
    next.lease = Some(Lease {
        id: lease_id,
        expires_at: super::attempt_deadline(&next, now.saturating_add(opts.lease_ms)),
        lease_ms: opts.lease_ms,
        leased_at: now,
        worker: opts.worker.clone(),
    });
    Ok(Outcome::moved(next, Transition::Lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, ready_job};
    use crate::settings::Limits;

    #[test]
    fn leasing_counts_an_attempt_and_sets_the_deadline() {
        let job = leased_job(1);
        assert_eq!(job.state, JobState::Leased);
        assert_eq!(job.attempts, 1);
        let lease = job.lease.expect("leased");
        assert_eq!(lease.expires_at, T0 + 30_000);
        assert_eq!(lease.id, LeaseId::from_u64(1));
    }

    #[test]
    fn only_ready_jobs_are_leased() {
        let leased = leased_job(1);
        assert_eq!(
            lease(&leased, LeaseId::from_u64(2), &LeaseOptions::default(), T0),
            Err(Refusal::Conflict(JobState::Leased))
        );
        let mut scheduled = ready_job();
        scheduled.state = JobState::Scheduled;
        assert!(
            lease(
                &scheduled,
                LeaseId::from_u64(2),
                &LeaseOptions::default(),
                T0
            )
            .is_err()
        );
    }

    #[test]
    fn a_round_takes_up_to_max_jobs_and_nothing_when_paused() {
        let opts = LeaseOptions::default().max_jobs(2);
        let mut round = LeaseRound::new(&opts, &QueueSettings::default(), 0, T0);
        let mut taken = 0;
        for n in 0..4 {
            if let Offer::Take(outcome) = round.offer(&ready_job(), LeaseId::from_u64(n), 0) {
                assert_eq!(outcome.job.map(|j| j.state), Some(JobState::Leased));
                taken += 1;
            }
        }
        assert_eq!(taken, 2);
        assert!(!round.wants_more());
        // A candidate that is not ready is skipped, not taken.
        let mut round = LeaseRound::new(&opts, &QueueSettings::default(), 0, T0);
        assert!(matches!(
            round.offer(&leased_job(1), LeaseId::from_u64(9), 0),
            Offer::Skip
        ));
        assert!(round.wants_more());
        let paused = QueueSettings {
            paused: true,
            ..QueueSettings::default()
        };
        let mut round = LeaseRound::new(&opts, &paused, 0, T0);
        assert!(!round.wants_more());
        assert!(matches!(
            round.offer(&ready_job(), LeaseId::from_u64(1), 0),
            Offer::Skip
        ));
    }

    fn limited(limits: Limits) -> QueueSettings {
        QueueSettings {
            limits,
            bucket: limits.rate_limit.map(|rate| Bucket::full(rate, T0)),
            ..QueueSettings::default()
        }
    }

    fn take_all(round: &mut LeaseRound, jobs: &[Job], group_leased: u64) -> usize {
        let mut taken = 0;
        for (n, job) in jobs.iter().enumerate() {
            if let Offer::Take(_) = round.offer(job, LeaseId::from_u64(n as u64), group_leased) {
                taken += 1;
            }
        }
        taken
    }

    #[test]
    fn max_leased_counts_the_jobs_already_leased() {
        let opts = LeaseOptions::default().max_jobs(10);
        let settings = limited(Limits {
            max_leased: Some(5),
            ..Limits::default()
        });
        let jobs = vec![ready_job(); 10];
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 0, T0), &jobs, 0),
            5
        );
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 3, T0), &jobs, 0),
            2
        );
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 5, T0), &jobs, 0),
            0
        );
        // More leased than the limit (it was lowered): nothing, no underflow.
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 9, T0), &jobs, 0),
            0
        );
    }

    #[test]
    fn the_bucket_bounds_a_round_and_says_when_to_retry() {
        let rate = RateLimit {
            jobs: 2,
            per_ms: 1000,
        };
        let settings = limited(Limits {
            rate_limit: Some(rate),
            ..Limits::default()
        });
        let opts = LeaseOptions::default().max_jobs(10);
        let jobs = vec![ready_job(); 10];
        let mut round = LeaseRound::new(&opts, &settings, 0, T0);
        assert_eq!(take_all(&mut round, &jobs, 0), 2);
        let end = round.finish();
        let left = end.bucket.expect("tokens were taken");
        assert_eq!(left.units, 0);
        // One token every 500 ms.
        assert_eq!(end.retry_at, Some(T0 + 500));
        let after = QueueSettings {
            bucket: Some(left),
            ..settings.clone()
        };
        let mut round = LeaseRound::new(&opts, &after, 0, T0 + 499);
        assert_eq!(take_all(&mut round, &jobs, 0), 0);
        assert_eq!(
            round.finish(),
            RoundEnd {
                bucket: None,
                retry_at: Some(T0 + 500)
            }
        );
        let mut round = LeaseRound::new(&opts, &after, 0, T0 + 500);
        assert_eq!(take_all(&mut round, &jobs, 0), 1);
        // Tokens left but no job to spend them on: nothing to wait for
        // but a new job (a retry time now would make a waiter spin).
        let mut round = LeaseRound::new(&opts, &settings, 0, T0);
        assert_eq!(take_all(&mut round, &jobs[..1], 0), 1);
        assert_eq!(round.finish().retry_at, None);
        // A round the tokens did not bound has no retry time.
        let mut round = LeaseRound::new(&LeaseOptions::default(), &settings, 0, T0);
        assert_eq!(take_all(&mut round, &jobs, 0), 1);
        assert_eq!(round.finish().retry_at, None);
    }

    #[test]
    fn a_group_at_its_limit_is_skipped_and_others_are_not() {
        let settings = limited(Limits {
            group_max_leased: Some(2),
            ..Limits::default()
        });
        let opts = LeaseOptions::default().max_jobs(10);
        let in_group = |group: &str| {
            let mut job = ready_job();
            job.group = Some(group.into());
            job
        };
        let jobs = vec![in_group("a"), in_group("a"), in_group("a")];
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 0, T0), &jobs, 0),
            2
        );
        assert_eq!(
            take_all(&mut LeaseRound::new(&opts, &settings, 0, T0), &jobs, 1),
            1
        );
        let mut round = LeaseRound::new(&opts, &settings, 0, T0);
        assert_eq!(take_all(&mut round, &jobs, 2), 0);
        assert!(!round.group_has_room("a", 2));
        assert!(round.group_has_room("b", 1));
        // Jobs without a group are not limited by it.
        let free = vec![ready_job(); 5];
        assert_eq!(take_all(&mut round, &free, 0), 5);
    }

    #[test]
    fn options_are_bounded() {
        assert!(validate(&LeaseOptions::default()).is_ok());
        assert!(validate(&LeaseOptions::default().max_jobs(0)).is_err());
        assert!(validate(&LeaseOptions::default().max_jobs(1001)).is_err());
        for lease_ms in [0, MAX_LEASE_MS + 1] {
            let opts = LeaseOptions {
                lease_ms,
                ..LeaseOptions::default()
            };
            assert!(validate(&opts).is_err());
        }
        assert!(validate(&LeaseOptions::default().worker("w".repeat(257))).is_err());
    }
}
