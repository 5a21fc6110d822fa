//! `lease`: a `ready` job becomes `leased` under a fresh lease id.
//!
//! A lease call is one [`LeaseRound`]: the backend offers the queue's ready
//! jobs in lease order, inside its atomic batch (or under its row locks),
//! and the round decides for each whether it is taken. The round starts
//! from the queue's stored settings, so a paused queue leases nothing.

use queue_proto::JobState;
use queue_proto::limits::{MAX_LEASE_JOBS, MAX_LEASE_MS, MAX_WORKER_LEN};

use super::{Outcome, Refusal};
use crate::settings::QueueSettings;
use crate::{Error, Job, Lease, LeaseId, LeaseOptions, Result, Transition};

/// A lease call as the backend receives it: the options (validated) and the
/// time, from which it starts a [`LeaseRound`] once it has read the
/// queue's settings.
#[derive(Debug, Clone)]
pub(crate) struct LeasePlan {
    pub(crate) opts: LeaseOptions,
    pub(crate) now: u64,
}

impl LeasePlan {
    /// The round for a queue with `settings`.
    pub(crate) fn round(&self, settings: &QueueSettings) -> LeaseRound {
        LeaseRound::new(&self.opts, settings, self.now)
    }
}

/// One lease call's decision, made candidate by candidate.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRound {
    opts: LeaseOptions,
    now: u64,
    /// How many more jobs may be taken.
    room: usize,
}

/// The round's answer for one candidate.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Take the job: commit this outcome.
    Take(Box<Outcome>),
    /// Leave this one; go on with the next.
    Skip,
}

impl LeaseRound {
    /// A round for `opts` (validated) at `now` on a queue with `settings`.
    pub(crate) fn new(opts: &LeaseOptions, settings: &QueueSettings, now: u64) -> LeaseRound {
        let room = if settings.paused {
            0
        } else {
            usize::try_from(opts.max_jobs.min(MAX_LEASE_JOBS)).unwrap_or(1)
        };
        LeaseRound {
            opts: opts.clone(),
            now,
            room,
        }
    }

    /// Whether another candidate could be taken.
    pub(crate) fn wants_more(&self) -> bool {
        self.room > 0
    }

    /// Decides on the ready candidate `job`, to be leased under `lease_id`
    /// if taken.
    pub(crate) fn offer(&mut self, job: &Job, lease_id: LeaseId) -> Offer {
        if !self.wants_more() {
            return Offer::Skip;
        }
        match lease(job, lease_id, &self.opts, self.now) {
            Ok(outcome) => {
                self.room -= 1;
                Offer::Take(Box::new(outcome))
            }
            Err(_) => Offer::Skip,
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
        let mut round = LeaseRound::new(&opts, &QueueSettings::default(), T0);
        let mut taken = 0;
        for n in 0..4 {
            if let Offer::Take(outcome) = round.offer(&ready_job(), LeaseId::from_u64(n)) {
                assert_eq!(outcome.job.map(|j| j.state), Some(JobState::Leased));
                taken += 1;
            }
        }
        assert_eq!(taken, 2);
        assert!(!round.wants_more());
        // A candidate that is not ready is skipped, not taken.
        let mut round = LeaseRound::new(&opts, &QueueSettings::default(), T0);
        assert!(matches!(
            round.offer(&leased_job(1), LeaseId::from_u64(9)),
            Offer::Skip
        ));
        assert!(round.wants_more());
        let paused = QueueSettings { paused: true };
        let mut round = LeaseRound::new(&opts, &paused, T0);
        assert!(!round.wants_more());
        assert!(matches!(
            round.offer(&ready_job(), LeaseId::from_u64(1)),
            Offer::Skip
        ));
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
