//! `heartbeat`: a live lease is extended to now + its length (or a new one).

use super::{Refusal, live_lease};
use crate::{Job, LeaseId};

/// Extends the lease `lease_id` of `job` (`lease_ms` already validated).
pub(crate) fn heartbeat(
    job: &Job,
    lease_id: LeaseId,
    lease_ms: Option<u64>,
    now: u64,
) -> Result<Job, Refusal> {
    let lease = live_lease(job, lease_id, now)?;
    let length = lease_ms.unwrap_or(lease.lease_ms);
    let mut next = job.clone();
    next.updated_at = now;
    if let Some(lease) = next.lease.as_mut() {
        lease.expires_at = now.saturating_add(length);
        lease.lease_ms = length;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job};

    #[test]
    fn extends_from_now() {
        let job = leased_job(1);
        let beat = heartbeat(&job, LeaseId::from_u64(1), None, T0 + 20_000).unwrap();
        assert_eq!(beat.lease_expires_at(), Some(T0 + 50_000));
        let beat = heartbeat(&beat, LeaseId::from_u64(1), Some(5), T0 + 21_000).unwrap();
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
