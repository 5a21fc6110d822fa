//! `complete`: a live lease ends in `completed`, with an optional result.

use queue_proto::JobState;

use super::{Outcome, Refusal, finish, live_lease};
use crate::{Job, LeaseId, Transition};

/// Completes `job` under `lease_id`.
pub(crate) fn complete(
    job: &Job,
    lease_id: LeaseId,
    result: Option<Vec<u8>>,
    now: u64,
) -> Result<Outcome, Refusal> {
    live_lease(job, lease_id, now)?;
    let mut next = job.clone();
    finish(&mut next, JobState::Completed, now);
    next.result = result;
    Ok(Outcome::moved(next, Transition::Complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn completes_once() {
        let job = leased_job(1);
        let outcome = complete(&job, LeaseId::from_u64(1), Some(b"1".to_vec()), T0 + 1).unwrap();
        let event = outcome.events().next().expect("an event");
        assert_eq!((event.state, event.at), (JobState::Completed, T0 + 1));
        let done = record(Ok(outcome));
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.finished_at, Some(T0 + 1));
        assert!(done.lease.is_none());
        assert_eq!(done.result.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            complete(&done, LeaseId::from_u64(1), None, T0 + 2),
            Err(Refusal::LeaseLost)
        );
    }

    #[test]
    fn a_foreign_lease_cannot_complete() {
        let job = leased_job(1);
        assert_eq!(
            complete(&job, LeaseId::from_u64(9), None, T0),
            Err(Refusal::LeaseLost)
        );
    }
}
