//! `fail`: a live lease ends in a retry (`scheduled`, or `ready` at once) or
//! in `dead`. The decision reads the stored attempts, never the worker's.

use queue_proto::JobState;
use queue_proto::limits::{MAX_DELAY_MS, MAX_ERROR_LEN};

use super::{Jitter, Outcome, Refusal, backoff_ms, finish, live_lease, waiting_state};
use crate::{Error, Failure, Job, LeaseId, Result, Transition};

/// Checks a failure report.
pub(crate) fn validate(failure: &Failure) -> Result<()> {
    match failure.retry_in_ms {
        Some(ms) if ms > MAX_DELAY_MS => Err(Error::invalid(
            "retry_in_ms",
            format!("{ms} exceeds the limit of {MAX_DELAY_MS}"),
        )),
        _ => Ok(()),
    }
}

/// Fails `job` under `lease_id`.
pub(crate) fn fail(
    job: &Job,
    lease_id: LeaseId,
    failure: &Failure,
    jitter: Jitter,
    now: u64,
) -> Result<Outcome, Refusal> {
    live_lease(job, lease_id, now)?;
    let next = after_failed_attempt(
        job,
        &failure.error,
        failure.retry_in_ms,
        failure.retryable,
        jitter,
        now,
    );
    Ok(Outcome::moved(next, Transition::Fail))
}

/// The rule shared by `fail` and lease expiry: dead when not retryable or out
/// of attempts, else waiting for `now + retry_in` or the back-off.
pub(crate) fn after_failed_attempt(
    job: &Job,
    error: &str,
    retry_in_ms: Option<u64>,
    retryable: bool,
    jitter: Jitter,
    now: u64,
) -> Job {
    let mut next = job.clone();
    next.last_error = Some(truncate(error, MAX_ERROR_LEN).to_owned());
    if !retryable || job.attempts >= job.max_attempts {
        finish(&mut next, JobState::Dead, now);
        return next;
    }
    let delay = retry_in_ms.unwrap_or_else(|| backoff_ms(job.backoff_ms, job.attempts, jitter));
    next.run_at = now.saturating_add(delay);
    next.state = waiting_state(next.run_at, now);
    next.lease = None;
    next.updated_at = now;
    next
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn retries_with_backoff_while_attempts_remain() {
        let job = leased_job(1);
        let failed = record(fail(
            &job,
            LeaseId::from_u64(1),
            &Failure::new("boom"),
            Jitter::NONE,
            T0 + 10,
        ));
        assert_eq!(failed.state, JobState::Scheduled);
        assert_eq!(failed.run_at, T0 + 10 + 1000);
        assert_eq!(failed.last_error.as_deref(), Some("boom"));
        assert!(failed.lease.is_none() && failed.finished_at.is_none());
    }

    #[test]
    fn explicit_retry_delay_wins_and_zero_means_ready() {
        let job = leased_job(1);
        let lease = LeaseId::from_u64(1);
        let later = Failure::new("x").retry_in(std::time::Duration::from_millis(50));
        let failed = record(fail(&job, lease, &later, Jitter::NONE, T0));
        assert_eq!(
            (failed.state, failed.run_at),
            (JobState::Scheduled, T0 + 50)
        );
        let now = Failure::new("x").retry_in(std::time::Duration::ZERO);
        let failed = record(fail(&job, lease, &now, Jitter::NONE, T0));
        assert_eq!((failed.state, failed.run_at), (JobState::Ready, T0));
    }

    #[test]
    fn dead_when_out_of_attempts_or_permanent() {
        let mut job = leased_job(1);
        let lease = LeaseId::from_u64(1);
        let permanent = fail(
            &job,
            lease,
            &Failure::new("x").permanent(),
            Jitter::NONE,
            T0,
        );
        assert_eq!(record(permanent).state, JobState::Dead);
        job.attempts = job.max_attempts;
        let dead = record(fail(&job, lease, &Failure::new("x"), Jitter::NONE, T0));
        assert_eq!(dead.state, JobState::Dead);
        assert_eq!(dead.finished_at, Some(T0));
        assert!(dead.lease.is_none());
    }

    #[test]
    fn the_decision_uses_the_stored_attempts() {
        // A worker that believes this is attempt 1 cannot keep a job alive
        // that the store says used its last attempt.
        let mut job = leased_job(1);
        job.max_attempts = 3;
        job.attempts = 3;
        let dead = fail(
            &job,
            LeaseId::from_u64(1),
            &Failure::new("x"),
            Jitter::NONE,
            T0,
        );
        assert_eq!(record(dead).state, JobState::Dead);
    }

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let job = leased_job(1);
        let text = "é".repeat(MAX_ERROR_LEN);
        let failed = record(fail(
            &job,
            LeaseId::from_u64(1),
            &Failure::new(text),
            Jitter::NONE,
            T0,
        ));
        let kept = failed.last_error.unwrap();
        assert!(kept.len() <= MAX_ERROR_LEN && kept.len() >= MAX_ERROR_LEN - 1);
    }

    #[test]
    fn stale_leases_cannot_fail() {
        let job = leased_job(1);
        assert_eq!(
            fail(
                &job,
                LeaseId::from_u64(2),
                &Failure::new("x"),
                Jitter::NONE,
                T0
            ),
            Err(Refusal::LeaseLost)
        );
    }
}
