//! Lease expiry: a lease that reached its deadline counts as a failed attempt
//! with `last_error = "lease expired"`, under the same rule as `fail`.

use queue_proto::JobState;

use super::fail::after_failed_attempt;
use super::{Jitter, Outcome, Refusal};
use crate::{Job, LeaseId, Transition};

/// The error text recorded by an expiry.
pub(crate) const LEASE_EXPIRED: &str = "lease expired";

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
            let next = after_failed_attempt(job, LEASE_EXPIRED, None, true, jitter, now);
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
