//! `enqueue`: a new job, `scheduled` or `ready` depending on its `run_at`.

use queue_proto::limits::{
    MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_DELAY_MS, MAX_IDEMPOTENCY_KEY_LEN, MIN_ATTEMPTS,
};

use super::{Outcome, waiting_state};
use crate::{Error, Job, JobId, NewJob, Result, Transition};

/// Checks everything about `spec` that does not depend on stored state.
pub(crate) fn validate(spec: &NewJob, now: u64, max_payload: usize) -> Result<()> {
    if spec.payload.len() > max_payload {
        return Err(Error::TooLarge {
            what: "payload",
            size: spec.payload.len(),
            limit: max_payload,
        });
    }
    if !(MIN_ATTEMPTS..=MAX_ATTEMPTS).contains(&spec.max_attempts) {
        return Err(Error::invalid(
            "max_attempts",
            format!(
                "{} is outside {MIN_ATTEMPTS}..={MAX_ATTEMPTS}",
                spec.max_attempts
            ),
        ));
    }
    if spec.backoff_ms > MAX_BACKOFF_MS {
        return Err(Error::invalid(
            "backoff_ms",
            format!("{} exceeds one hour ({MAX_BACKOFF_MS})", spec.backoff_ms),
        ));
    }
    match (spec.delay_ms, spec.run_at) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "delay_ms",
                "give either delay_ms or run_at, not both",
            ));
        }
        (Some(delay), None) if delay > MAX_DELAY_MS => {
            return Err(Error::invalid(
                "delay_ms",
                format!("{delay} exceeds the limit of {MAX_DELAY_MS}"),
            ));
        }
        (None, Some(run_at)) if run_at > now.saturating_add(MAX_DELAY_MS) => {
            return Err(Error::invalid(
                "run_at",
                format!("{run_at} is more than {MAX_DELAY_MS} ms in the future"),
            ));
        }
        _ => {}
    }
    if let Some(key) = &spec.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Error::invalid(
                "idempotency_key",
                format!(
                    "must be 1..={MAX_IDEMPOTENCY_KEY_LEN} bytes, got {}",
                    key.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A new job (`spec` already validated), announced by an event.
pub(crate) fn enqueue(id: JobId, queue: &str, spec: &NewJob, now: u64) -> Outcome {
    Outcome::moved(new_job(id, queue, spec, now), Transition::Enqueue)
}

/// The record of a new job (`spec` already validated).
pub(crate) fn new_job(id: JobId, queue: &str, spec: &NewJob, now: u64) -> Job {
    let run_at = match (spec.delay_ms, spec.run_at) {
        (Some(delay), _) => now.saturating_add(delay),
        (None, Some(run_at)) => run_at,
        (None, None) => now,
    };
    Job {
        id,
        queue: queue.to_owned(),
        state: waiting_state(run_at, now),
        payload: spec.payload.clone(),
        priority: spec.priority,
        attempts: 0,
        max_attempts: spec.max_attempts,
        backoff_ms: spec.backoff_ms,
        created_at: now,
        updated_at: now,
        run_at,
        lease: None,
        idempotency_key: spec.idempotency_key.clone(),
        result: None,
        last_error: None,
        finished_at: None,
    }
}

#[cfg(test)]
mod tests {
    use queue_proto::JobState;

    use super::*;
    use crate::rules::testing::T0;

    #[test]
    fn ready_now_or_scheduled_later() {
        let id = JobId::from_u64(1);
        let now = new_job(id, "q", &NewJob::new(vec![]), T0);
        assert_eq!((now.state, now.run_at), (JobState::Ready, T0));
        let later = new_job(id, "q", &NewJob::new(vec![]).delay_ms_for_test(5), T0);
        assert_eq!((later.state, later.run_at), (JobState::Scheduled, T0 + 5));
        let past = new_job(id, "q", &NewJob::new(vec![]).run_at(T0 - 10), T0);
        assert_eq!((past.state, past.run_at), (JobState::Ready, T0 - 10));
    }

    #[test]
    fn a_new_job_is_announced() {
        let outcome = enqueue(JobId::from_u64(3), "q", &NewJob::new(vec![]), T0);
        let event = outcome.events().next().expect("an event");
        assert_eq!(
            (event.job, event.state),
            (JobId::from_u64(3), JobState::Ready)
        );
        assert_eq!(outcome.transition, Transition::Enqueue);
    }

    #[test]
    fn validation_refuses_out_of_range_input() {
        let ok = NewJob::new(vec![1; 10]);
        assert!(validate(&ok, T0, 10).is_ok());
        assert!(matches!(
            validate(&NewJob::new(vec![1; 11]), T0, 10),
            Err(Error::TooLarge { size: 11, .. })
        ));
        for bad in [
            ok.clone().max_attempts(0),
            ok.clone().max_attempts(1001),
            NewJob {
                backoff_ms: MAX_BACKOFF_MS + 1,
                ..ok.clone()
            },
            NewJob {
                delay_ms: Some(1),
                run_at: Some(T0),
                ..ok.clone()
            },
            ok.clone().delay_ms_for_test(MAX_DELAY_MS + 1),
            ok.clone().run_at(T0 + MAX_DELAY_MS + 1),
            ok.clone().idempotency_key(""),
            ok.clone().idempotency_key("k".repeat(257)),
        ] {
            assert!(
                matches!(validate(&bad, T0, 10), Err(Error::InvalidArgument { .. })),
                "{bad:?}"
            );
        }
        assert!(validate(&ok.clone().idempotency_key("k".repeat(256)), T0, 10).is_ok());
    }

    impl NewJob {
        fn delay_ms_for_test(self, ms: u64) -> Self {
            self.delay(std::time::Duration::from_millis(ms))
        }
    }
}
