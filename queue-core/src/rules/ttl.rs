//! Time-to-live: a job still `scheduled` or `ready` at its `expires_at` is
//! not worth running any more: it becomes `dead` with `last_error`
//! `"expired before it ran"`. A leased job is not affected (its attempt
//! runs to its end; should it fail and wait for a retry, the deadline
//! applies again).

use queue_proto::JobState;

use super::{Outcome, Refusal, finish};
use crate::{Job, Transition};

/// The error text recorded when a job's time-to-live ends.
pub(crate) const EXPIRED_BEFORE_IT_RAN: &str = "expired before it ran";

/// Whether `job`, waiting to run, is past its `expires_at` at `now`.
pub(crate) fn is_expired(job: &Job, now: u64) -> bool {
    job.expires_at.is_some_and(|at| at <= now)
}

/// Gives up `job` if it is waiting to run and its time-to-live has ended.
pub(crate) fn expire_unleased(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    if !matches!(job.state, JobState::Scheduled | JobState::Ready) || !is_expired(job, now) {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.last_error = Some(EXPIRED_BEFORE_IT_RAN.to_owned());
    finish(&mut next, JobState::Dead, now);
    Ok(Outcome::moved(next, Transition::Ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, ready_job, record};
    use crate::rules::{TimerKind, deadlines};

    fn expiring(at: u64) -> Job {
        let mut job = ready_job();
        job.expires_at = Some(at);
        job
    }

    #[test]
    fn a_waiting_job_dies_at_its_deadline_not_before() {
        let job = expiring(T0 + 1000);
        assert_eq!(
            expire_unleased(&job, T0 + 999),
            Err(Refusal::Conflict(JobState::Ready))
        );
        let dead = record(expire_unleased(&job, T0 + 1000));
        assert_eq!(dead.state, JobState::Dead);
        assert_eq!(dead.last_error.as_deref(), Some(EXPIRED_BEFORE_IT_RAN));
        assert_eq!(dead.finished_at, Some(T0 + 1000));
        let mut scheduled = expiring(T0 + 1000);
        scheduled.state = JobState::Scheduled;
        scheduled.run_at = T0 + 5000;
        assert_eq!(
            record(expire_unleased(&scheduled, T0 + 2000)).state,
            JobState::Dead
        );
    }

    #[test]
    fn a_leased_or_finished_job_is_not_affected() {
        let mut leased = leased_job(1);
        leased.expires_at = Some(T0);
        assert!(expire_unleased(&leased, T0 + 1).is_err());
        let mut done = record(expire_unleased(&expiring(T0), T0));
        done.expires_at = Some(T0);
        assert!(expire_unleased(&done, T0 + 1).is_err());
        assert!(
            expire_unleased(&ready_job(), u64::MAX).is_err(),
            "no deadline"
        );
    }

    #[test]
    fn only_waiting_jobs_hold_a_ttl_timer() {
        let kinds = |job: &Job| deadlines(job).map(|d| d.kind).collect::<Vec<_>>();
        let job = expiring(T0 + 1000);
        assert_eq!(kinds(&job), [TimerKind::Ttl]);
        let mut scheduled = job.clone();
        scheduled.state = JobState::Scheduled;
        assert_eq!(kinds(&scheduled), [TimerKind::Promote, TimerKind::Ttl]);
        let mut leased = leased_job(1);
        leased.expires_at = Some(T0 + 1000);
        assert_eq!(kinds(&leased), [TimerKind::Expire]);
    }
}
