//! Retention: a finished job (`completed`, `dead` or `cancelled`) is deleted
//! once it has been kept for its state's retention.

use super::{Outcome, Refusal};
use crate::{Job, Transition};

/// Deletes `job` if it is terminal and finished at least `retention_ms`
/// before `now`.
pub(crate) fn retain(job: &Job, retention_ms: u64, now: u64) -> Result<Outcome, Refusal> {
    match job.finished_at {
        Some(at) if job.state.is_terminal() && at.saturating_add(retention_ms) <= now => {
            Ok(Outcome::removed(Transition::Remove))
        }
        _ => Err(Refusal::Conflict(job.state)),
    }
}

#[cfg(test)]
mod tests {
    use queue_proto::JobState;

    use super::*;
    use crate::LeaseId;
    use crate::rules::complete::complete;
    use crate::rules::testing::{T0, leased_job, ready_job, record};

    #[test]
    fn finished_jobs_go_after_their_retention() {
        let done = record(complete(&leased_job(1), LeaseId::from_u64(1), None, T0));
        assert!(retain(&done, 1000, T0 + 999).is_err());
        let outcome = retain(&done, 1000, T0 + 1000).unwrap();
        assert!(outcome.job.is_none());
        assert_eq!(outcome.transition, Transition::Remove);
    }

    #[test]
    fn unfinished_jobs_stay() {
        // A requeued job is ready again: its old retention entry must not
        // remove it.
        let ready = ready_job();
        assert_eq!(
            retain(&ready, 0, u64::MAX),
            Err(Refusal::Conflict(JobState::Ready))
        );
        let leased = leased_job(1);
        assert!(retain(&leased, 0, u64::MAX).is_err());
    }
}
