//! Promotion: a `scheduled` job whose `run_at` has come becomes `ready`.

use queue_proto::JobState;

use super::{Outcome, Refusal};
use crate::{Job, Transition};

/// Promotes `job` if it is scheduled and due.
pub(crate) fn promote(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    if job.state != JobState::Scheduled || job.run_at > now {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.state = JobState::Ready;
    next.updated_at = now;
    Ok(Outcome::moved(next, Transition::Promote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, ready_job, record};

    #[test]
    fn promotes_only_when_due() {
        let mut job = ready_job();
        job.state = JobState::Scheduled;
        job.run_at = T0 + 10;
        assert!(promote(&job, T0 + 9).is_err());
        let ready = record(promote(&job, T0 + 10));
        assert_eq!(ready.state, JobState::Ready);
        assert_eq!(ready.run_at, T0 + 10);
        assert!(promote(&ready, T0 + 11).is_err());
    }
}
