//! `cancel`: a job that has not finished becomes `cancelled`; a held lease is
//! revoked (its holder learns of it on its next heartbeat or completion).

use queue_proto::JobState;

use super::{Outcome, Refusal, finish};
use crate::{Job, Transition};

/// Cancels `job`.
pub(crate) fn cancel(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    if job.state.is_terminal() {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    finish(&mut next, JobState::Cancelled, now);
    Ok(Outcome::moved(next, Transition::Cancel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeaseId;
    use crate::rules::complete::complete;
    use crate::rules::live_lease;
    use crate::rules::testing::{T0, leased_job, ready_job, record};

    #[test]
    fn cancels_unfinished_jobs_and_revokes_leases() {
        assert_eq!(record(cancel(&ready_job(), T0)).state, JobState::Cancelled);
        let leased = leased_job(1);
        let cancelled = record(cancel(&leased, T0));
        assert!(cancelled.lease.is_none());
        assert_eq!(
            live_lease(&cancelled, LeaseId::from_u64(1), T0),
            Err(Refusal::LeaseLost)
        );
    }

    #[test]
    fn finished_jobs_conflict() {
        let done = record(complete(&leased_job(1), LeaseId::from_u64(1), None, T0));
        assert_eq!(
            cancel(&done, T0),
            Err(Refusal::Conflict(JobState::Completed))
        );
        let cancelled = record(cancel(&ready_job(), T0));
        assert_eq!(
            cancel(&cancelled, T0),
            Err(Refusal::Conflict(JobState::Cancelled))
        );
    }
}
