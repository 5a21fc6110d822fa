//! Purge: a `dead` job is deleted on request (`DELETE …/dead`).

use queue_proto::JobState;

use super::{Outcome, Refusal};
use crate::{Job, Transition};

/// Deletes a dead job; any other state is refused.
pub(crate) fn purge(job: &Job) -> Result<Outcome, Refusal> {
    if job.state != JobState::Dead {
        return Err(Refusal::Conflict(job.state));
    }
    Ok(Outcome::removed(Transition::Remove))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, ready_job};

    #[test]
    fn only_dead_jobs_are_purged() {
        let mut dead = ready_job();
        dead.state = JobState::Dead;
        dead.finished_at = Some(T0);
        let outcome = purge(&dead).unwrap();
        assert!(outcome.job.is_none() && outcome.effects.is_empty());
        assert_eq!(outcome.transition, Transition::Remove);
        for other in [ready_job(), leased_job(1)] {
            assert_eq!(purge(&other), Err(Refusal::Conflict(other.state)));
        }
    }
}
