//! Requeue: a `dead` job becomes `ready` now with its attempts reset. An
//! operator requeuing a job wants it to run: a time-to-live that has
//! already ended is dropped (one still ahead is kept).

use queue_proto::JobState;

use super::{Outcome, Refusal};
use crate::{Job, Transition};

/// Requeues a dead job.
pub(crate) fn requeue(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    if job.state != JobState::Dead {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.state = JobState::Ready;
    next.attempts = 0;
    next.run_at = now;
    next.finished_at = None;
    next.updated_at = now;
    if super::ttl::is_expired(&next, now) {
        next.expires_at = None;
    }
    Ok(Outcome::moved(next, Transition::Requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, ready_job, record};

    #[test]
    fn only_dead_jobs_come_back() {
        let mut dead = ready_job();
        dead.state = JobState::Dead;
        dead.attempts = 5;
        dead.finished_at = Some(T0);
        let back = record(requeue(&dead, T0 + 1));
        assert_eq!((back.state, back.attempts), (JobState::Ready, 0));
        assert_eq!((back.run_at, back.finished_at), (T0 + 1, None));
        assert!(requeue(&back, T0 + 2).is_err());
    }

    #[test]
    fn an_ended_time_to_live_is_dropped_a_later_one_kept() {
        let mut dead = ready_job();
        dead.state = JobState::Dead;
        dead.finished_at = Some(T0);
        dead.expires_at = Some(T0);
        assert_eq!(record(requeue(&dead, T0 + 1)).expires_at, None);
        dead.expires_at = Some(T0 + 60_000);
        assert_eq!(record(requeue(&dead, T0 + 1)).expires_at, Some(T0 + 60_000));
    }
}
