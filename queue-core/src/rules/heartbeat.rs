//! `heartbeat`: a live lease is extended to now + its length (or a new one).

use super::{Outcome, Refusal, live_lease};
use crate::{Job, LeaseId, Transition};

/// Extends the lease `lease_id` of `job` (`lease_ms` already validated).
pub(crate) fn heartbeat(
    job: &Job,
    lease_id: LeaseId,
    lease_ms: Option<u64>,
    now: u64,
) -> Result<Outcome, Refusal> {
    let lease = live_lease(job, lease_id, now)?;
    let length = lease_ms.unwrap_or(lease.lease_ms);
    let mut next = job.clone();
    next.updated_at = now;
    if let Some(lease) = next.lease.as_mut() {
        lease.expires_at = now.saturating_add(length);
        lease.lease_ms = length;
    }
    Ok(Outcome::quiet(next, Transition::Heartbeat))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn extends_from_now() {
        let job = leased_job(1);
        let outcome = heartbeat(&job, LeaseId::from_u64(1), None, T0 + 20_000);
        assert_eq!(outcome.as_ref().map(|o| o.events().count()), Ok(0));
        let beat = record(outcome);
        assert_eq!(beat.lease_expires_at(), Some(T0 + 50_000));
        let beat = record(heartbeat(&beat, LeaseId::from_u64(1), Some(5), T0 + 21_000));
        assert_eq!(beat.lease_expires_at(), Some(T0 + 21_005));
        assert_eq!(beat.attempts, 1);
    }

    #[test]
    fn stale_or_expired_leases_are_refused() {
        let job = leased_job(1);
        assert_eq!(
            heartbeat(&job, LeaseId::from_u64(2), None, T0),
            Err(Refusal::LeaseLost)
        );
        assert_eq!(
            heartbeat(&job, LeaseId::from_u64(1), None, T0 + 30_000),
            Err(Refusal::LeaseLost)
        );
    }
}
