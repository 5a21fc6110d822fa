//! `release`: a live lease is given back; the job is `ready` at once, in its
//! old place in the queue, and its attempt is given back.

use queue_proto::JobState;

use super::{Outcome, Refusal, live_lease};
use crate::{Job, LeaseId, Transition};

/// Releases `job` held under `lease_id`.
pub(crate) fn release(job: &Job, lease_id: LeaseId, now: u64) -> Result<Outcome, Refusal> {
    live_lease(job, lease_id, now)?;
    let mut next = job.clone();
    next.state = JobState::Ready;
    next.lease = None;
    next.attempts = job.attempts.saturating_sub(1);
    next.updated_at = now;
    Ok(Outcome::moved(next, Transition::Release))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn gives_the_attempt_back() {
        let job = leased_job(1);
        let released = record(release(&job, LeaseId::from_u64(1), T0 + 5));
        assert_eq!(released.state, JobState::Ready);
        assert_eq!(released.attempts, 0);
        assert_eq!(released.run_at, job.run_at);
        assert!(released.lease.is_none());
        assert_eq!(
            release(&released, LeaseId::from_u64(1), T0 + 6),
            Err(Refusal::LeaseLost)
        );
    }
}
