//! Lease expiry: a lease that reached its deadline counts as a failed attempt
//! with `last_error = "lease expired"`, under the same rule as `fail`; a
//! lease that ended at the job's timeout (`started_at + timeout_ms`) records
//! `"timed out after <timeout_ms> ms"` instead.

use queue_proto::JobState;

use super::fail::after_failed_attempt;
use super::{Jitter, Outcome, Refusal};
use crate::{Job, LeaseId, Transition};

/// The error text recorded by an expiry.
pub(crate) const LEASE_EXPIRED: &str = "lease expired";

/// The error text recorded when an attempt reaches the job's timeout.
pub(crate) fn timed_out(timeout_ms: u64) -> String {
    format!("timed out after {timeout_ms} ms")
}

/// Expires the lease `lease_id` of `job` if it is still the job's lease and
/// its deadline has passed.
pub(crate) fn expire(
    job: &Job,
    lease_id: LeaseId,
    jitter: Jitter,
    now: u64,
) -> Result<Outcome, Refusal> {
    match &job.lease {
        Some(lease)
            if job.state == JobState::Leased && lease.id == lease_id && lease.expires_at <= now =>
        {
            let error = match job.timeout_ms {
                Some(timeout) if super::ends_at_timeout(job, lease.expires_at) => {
                    timed_out(timeout)
                }
                _ => LEASE_EXPIRED.to_owned(),
            };
            let next = after_failed_attempt(job, &error, None, true, jitter, now);
            Ok(Outcome::moved(next, Transition::Expire))
        }
        Some(lease) if lease.id == lease_id => Err(Refusal::Conflict(job.state)),
        _ => Err(Refusal::LeaseLost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::heartbeat::heartbeat;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn expiry_is_a_failed_attempt() {
        let job = leased_job(1);
        let expired = record(expire(
            &job,
            LeaseId::from_u64(1),
            Jitter::NONE,
            T0 + 30_000,
        ));
        assert_eq!(expired.state, JobState::Scheduled);
        assert_eq!(expired.last_error.as_deref(), Some(LEASE_EXPIRED));
        assert_eq!(expired.run_at, T0 + 30_000 + 1000);
        assert_eq!(expired.attempts, 1);
    }

    #[test]
    fn not_before_the_deadline_nor_for_another_lease() {
        let job = leased_job(1);
        assert!(expire(&job, LeaseId::from_u64(1), Jitter::NONE, T0 + 29_999).is_err());
        assert!(expire(&job, LeaseId::from_u64(2), Jitter::NONE, T0 + 40_000).is_err());
        // A heartbeat moved the deadline: the old deadline no longer expires it.
        let beat = record(heartbeat(
            &job,
            LeaseId::from_u64(1),
            None,
            None,
            T0 + 29_000,
        ));
        assert!(expire(&beat, LeaseId::from_u64(1), Jitter::NONE, T0 + 30_000).is_err());
    }

    #[test]
    fn heartbeats_cannot_carry_an_attempt_past_its_timeout() {
        let mut ready = crate::rules::testing::ready_job();
        ready.timeout_ms = Some(45_000);
        let opts = crate::LeaseOptions::default();
        let job = record(crate::rules::lease::lease(
            &ready,
            LeaseId::from_u64(1),
            &opts,
            T0,
        ));
        assert_eq!(job.started_at, Some(T0));
        assert_eq!(job.lease_expires_at(), Some(T0 + 30_000), "the lease first");
        // A worker that keeps heartbeating gets no further than the timeout.
        let mut beat = job;
        for at in [T0 + 10_000, T0 + 20_000, T0 + 40_000] {
            beat = record(heartbeat(&beat, LeaseId::from_u64(1), None, None, at));
            assert!(beat.lease_expires_at().unwrap() <= T0 + 45_000);
        }
        assert_eq!(beat.lease_expires_at(), Some(T0 + 45_000));
        assert_eq!(
            heartbeat(&beat, LeaseId::from_u64(1), None, None, T0 + 45_000),
            Err(Refusal::LeaseLost)
        );
        let timed_out = record(expire(
            &beat,
            LeaseId::from_u64(1),
            Jitter::NONE,
            T0 + 45_000,
        ));
        assert_eq!(timed_out.state, JobState::Scheduled);
        assert_eq!(timed_out.attempts, 1, "the attempt is counted");
        assert_eq!(
            timed_out.last_error.as_deref(),
            Some("timed out after 45000 ms")
        );
        // A timeout shorter than the lease ends the lease itself.
        let mut short = crate::rules::testing::ready_job();
        short.timeout_ms = Some(5);
        let leased = record(crate::rules::lease::lease(
            &short,
            LeaseId::from_u64(2),
            &opts,
            T0,
        ));
        assert_eq!(leased.lease_expires_at(), Some(T0 + 5));
        // A lease that ends before the timeout is an ordinary expiry.
        let plain = record(crate::rules::lease::lease(
            &ready,
            LeaseId::from_u64(3),
            &opts,
            T0,
        ));
        let expired = record(expire(
            &plain,
            LeaseId::from_u64(3),
            Jitter::NONE,
            T0 + 30_000,
        ));
        assert_eq!(expired.last_error.as_deref(), Some(LEASE_EXPIRED));
    }

    #[test]
    fn last_attempt_expiring_is_dead() {
        let mut job = leased_job(1);
        job.max_attempts = 1;
        let dead = record(expire(
            &job,
            LeaseId::from_u64(1),
            Jitter::NONE,
            T0 + 30_000,
        ));
        assert_eq!(dead.state, JobState::Dead);
    }
}
