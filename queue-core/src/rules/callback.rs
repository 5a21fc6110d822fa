//! Callbacks: a finished job with a `callback_url` owes one delivery, made
//! of attempts. The server's dispatcher claims an attempt when it is due
//! (so that a crash mid-attempt only delays it) and settles it with the
//! receiver's answer: delivered on a 2xx, failed at once on `410 Gone`,
//! else retried on the schedule (or the receiver's `Retry-After`) until
//! the attempts are used up. An operator may start a new delivery.
//!
//! Callback state changes are no state changes of the job: they emit no
//! event.

use super::{Jitter, Outcome, Refusal};
use crate::{Callback, CallbackStatus, Job, Transition};

/// The waits after attempts 1, 2, …: 5 s, 30 s, 2 min, 10 min, 30 min,
/// 1 h, 2 h, 4 h, 8 h and 8 h (±20 %); after the 11th attempt, failed.
pub(crate) const SCHEDULE_MS: [u64; 10] = [
    5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000,
    28_800_000,
];

/// Attempts of one delivery.
pub(crate) const MAX_ATTEMPTS: u32 = SCHEDULE_MS.len() as u32 + 1;

/// The longest `Retry-After` honoured, in ms (one day).
pub(crate) const MAX_RETRY_AFTER_MS: u64 = 24 * 3_600_000;

/// What the receiver made of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// `410 Gone`: the receiver wants no more.
    Gone,
    /// Anything else: another status, no answer in time, a connection
    /// error, or a refused address.
    Retry {
        /// The status, if there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The receiver's `Retry-After` (429 and 503), in ms.
        retry_after_ms: Option<u64>,
    },
}

/// The delivery that follows `previous` (the first if none), due at `now`.
pub(crate) fn fresh(previous: Option<&Callback>, now: u64) -> Callback {
    Callback {
        status: CallbackStatus::Pending,
        delivery: previous.map_or(1, |c| c.delivery.saturating_add(1)),
        attempts: 0,
        last_status: None,
        last_error: None,
        next_attempt_at: Some(now),
        delivered_at: None,
        in_flight: false,
    }
}

/// Claims the due attempt of `job`'s pending delivery: it counts, and is
/// given up as lost at `now + lost_after_ms` unless settled before.
pub(crate) fn claim(job: &Job, now: u64, lost_after_ms: u64) -> Result<Outcome, Refusal> {
    match &job.callback {
        Some(callback)
            if callback.status == CallbackStatus::Pending
                && callback.next_attempt_at.is_some_and(|at| at <= now) =>
        {
            let mut next = job.clone();
            if let Some(callback) = next.callback.as_mut() {
                callback.attempts = callback.attempts.saturating_add(1);
                callback.next_attempt_at = Some(now.saturating_add(lost_after_ms));
                callback.in_flight = true;
            }
            Ok(Outcome::quiet(next, Transition::Callback))
        }
        _ => Err(Refusal::Conflict(job.state)),
    }
}

/// Settles attempt `attempt` of delivery `delivery` of `job` with what the
/// receiver answered. A report about another attempt (one that was given
/// up as lost and claimed again) is refused and changes nothing.
pub(crate) fn settle(
    job: &Job,
    delivery: u32,
    attempt: u32,
    result: &DeliveryResult,
    jitter: Jitter,
    now: u64,
) -> Result<Outcome, Refusal> {
    let current = match &job.callback {
        Some(c)
            if c.status == CallbackStatus::Pending
                && c.delivery == delivery
                && c.attempts == attempt =>
        {
            c
        }
        _ => return Err(Refusal::LeaseLost),
    };
    let mut callback = current.clone();
    callback.in_flight = false;
    match result {
        DeliveryResult::Delivered { status } => {
            callback.status = CallbackStatus::Delivered;
            callback.last_status = Some(*status);
            callback.last_error = None;
            callback.next_attempt_at = None;
            callback.delivered_at = Some(now);
        }
        DeliveryResult::Gone => {
            callback.status = CallbackStatus::Failed;
            callback.last_status = Some(410);
            callback.last_error = Some("the receiver answered 410 Gone".into());
            callback.next_attempt_at = None;
        }
        DeliveryResult::Retry {
            status,
            error,
            retry_after_ms,
        } => {
            callback.last_status = *status;
            callback.last_error = Some(error.clone());
            let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
            match SCHEDULE_MS.get(index) {
                Some(wait) if attempt < MAX_ATTEMPTS => {
                    let wait = match retry_after_ms {
                        Some(ms) => (*ms).min(MAX_RETRY_AFTER_MS),
                        None => jitter.apply(*wait),
                    };
                    callback.next_attempt_at = Some(now.saturating_add(wait));
                }
                _ => {
                    callback.status = CallbackStatus::Failed;
                    callback.next_attempt_at = None;
                }
            }
        }
    }
    let mut next = job.clone();
    next.callback = Some(callback);
    Ok(Outcome::quiet(next, Transition::Callback))
}

/// Gives up the attempt under way on `job`'s delivery as lost, and makes
/// the next one due now: for a dispatcher that starts where another one
/// stopped without settling (a crash), when no other can be at work.
pub(crate) fn recover(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    match &job.callback {
        Some(callback) if callback.status == CallbackStatus::Pending && callback.in_flight => {
            let mut next = job.clone();
            if let Some(callback) = next.callback.as_mut() {
                callback.in_flight = false;
                callback.next_attempt_at = Some(now);
                callback.last_error = Some("the attempt was interrupted (server restart)".into());
            }
            Ok(Outcome::quiet(next, Transition::Callback))
        }
        _ => Err(Refusal::Conflict(job.state)),
    }
}

/// Starts a new delivery of a finished job's callback, due now.
pub(crate) fn retry(job: &Job, now: u64) -> Result<Outcome, Refusal> {
    // Not while an attempt is under way: its answer would be lost, and two
    // POSTs could cross.
    let under_way = job.callback.as_ref().is_some_and(|c| c.in_flight);
    if job.callback_url.is_none() || !job.state.is_terminal() || under_way {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.callback = Some(fresh(job.callback.as_ref(), now));
    Ok(Outcome::quiet(next, Transition::Callback))
}

#[cfg(test)]
mod tests {
    use queue_proto::JobState;

    use super::*;
    use crate::LeaseId;
    use crate::rules::complete::complete;
    use crate::rules::testing::{T0, leased_job, ready_job, record};
    use crate::rules::{TimerKind, deadlines};

    fn finished_with_callback() -> Job {
        let mut job = leased_job(1);
        job.callback_url = Some("http://127.0.0.1:9/hook".into());
        record(complete(&job, LeaseId::from_u64(1), None, T0))
    }

    fn kinds(job: &Job) -> Vec<TimerKind> {
        deadlines(job).map(|d| d.kind).collect()
    }

    #[test]
    fn a_finished_job_owes_a_delivery_and_is_kept_while_it_is_pending() {
        let job = finished_with_callback();
        let callback = job.callback.clone().unwrap();
        assert_eq!(
            (callback.status, callback.delivery, callback.attempts),
            (CallbackStatus::Pending, 1, 0)
        );
        assert_eq!(callback.next_attempt_at, Some(T0));
        assert_eq!(kinds(&job), [TimerKind::Callback]);
        // Without a callback URL, nothing is owed.
        let plain = record(complete(&leased_job(1), LeaseId::from_u64(1), None, T0));
        assert!(plain.callback.is_none());
        assert_eq!(kinds(&plain), [TimerKind::RetainCompleted]);
    }

    #[test]
    fn attempts_follow_the_schedule_then_fail() {
        let mut job = finished_with_callback();
        let mut now = T0;
        for attempt in 1..=MAX_ATTEMPTS {
            assert!(claim(&job, now - 1, 1000).is_err() || attempt == 1);
            job = record(claim(&job, now, 1000));
            assert_eq!(job.callback.as_ref().unwrap().attempts, attempt);
            let failure = DeliveryResult::Retry {
                status: Some(500),
                error: "boom".into(),
                retry_after_ms: None,
            };
            job = record(settle(&job, 1, attempt, &failure, Jitter::NONE, now));
            let callback = job.callback.clone().unwrap();
            if attempt < MAX_ATTEMPTS {
                let wait = SCHEDULE_MS[attempt as usize - 1];
                assert_eq!(
                    callback.next_attempt_at,
                    Some(now + wait),
                    "after {attempt}"
                );
                assert_eq!(callback.status, CallbackStatus::Pending);
                now += wait;
            } else {
                assert_eq!(callback.status, CallbackStatus::Failed);
                assert_eq!(callback.last_status, Some(500));
                assert_eq!(kinds(&job), [TimerKind::RetainCompleted]);
            }
        }
    }

    #[test]
    fn delivered_gone_and_retry_after() {
        let job = record(claim(&finished_with_callback(), T0, 1000));
        let done = record(settle(
            &job,
            1,
            1,
            &DeliveryResult::Delivered { status: 204 },
            Jitter::NONE,
            T0 + 5,
        ));
        let callback = done.callback.clone().unwrap();
        assert_eq!(callback.status, CallbackStatus::Delivered);
        assert_eq!(callback.delivered_at, Some(T0 + 5));
        let gone = record(settle(&job, 1, 1, &DeliveryResult::Gone, Jitter::NONE, T0));
        assert_eq!(gone.callback.unwrap().status, CallbackStatus::Failed);
        let later = DeliveryResult::Retry {
            status: Some(429),
            error: "slow down".into(),
            retry_after_ms: Some(120_000),
        };
        let waiting = record(settle(&job, 1, 1, &later, Jitter::NONE, T0));
        assert_eq!(
            waiting.callback.unwrap().next_attempt_at,
            Some(T0 + 120_000)
        );
    }

    #[test]
    fn stale_reports_and_early_claims_change_nothing() {
        let job = finished_with_callback();
        let claimed = record(claim(&job, T0, 1000));
        // Lost, and claimed again: the first attempt's report is stale.
        assert!(claim(&claimed, T0 + 999, 1000).is_err());
        let again = record(claim(&claimed, T0 + 1000, 1000));
        let ok = DeliveryResult::Delivered { status: 200 };
        assert_eq!(
            settle(&again, 1, 1, &ok, Jitter::NONE, T0),
            Err(Refusal::LeaseLost)
        );
        assert!(settle(&again, 2, 2, &ok, Jitter::NONE, T0).is_err());
        assert!(settle(&again, 1, 2, &ok, Jitter::NONE, T0).is_ok());
    }

    #[test]
    fn an_operator_starts_a_new_delivery() {
        let job = finished_with_callback();
        let claimed = record(claim(&job, T0, 1000));
        let gone = record(settle(
            &claimed,
            1,
            1,
            &DeliveryResult::Gone,
            Jitter::NONE,
            T0,
        ));
        let retried = record(retry(&gone, T0 + 10));
        let callback = retried.callback.clone().unwrap();
        assert_eq!((callback.delivery, callback.attempts), (2, 0));
        assert_eq!(callback.next_attempt_at, Some(T0 + 10));
        // Only for finished jobs with a URL, and not during an attempt.
        assert!(retry(&ready_job(), T0).is_err());
        let under_way = record(claim(&retried, T0 + 10, 1000));
        assert_eq!(
            retry(&under_way, T0 + 11),
            Err(Refusal::Conflict(JobState::Completed))
        );
        let plain = record(complete(&leased_job(1), LeaseId::from_u64(1), None, T0));
        assert_eq!(
            retry(&plain, T0),
            Err(Refusal::Conflict(JobState::Completed))
        );
    }

    #[test]
    fn an_interrupted_attempt_is_due_again_at_once() {
        let job = finished_with_callback();
        assert!(recover(&job, T0).is_err(), "nothing under way");
        let claimed = record(claim(&job, T0, 60_000));
        assert!(claimed.callback.as_ref().unwrap().in_flight);
        let recovered = record(recover(&claimed, T0 + 5));
        let callback = recovered.callback.clone().unwrap();
        assert!(!callback.in_flight);
        assert_eq!(callback.next_attempt_at, Some(T0 + 5));
        assert_eq!(callback.attempts, 1, "the lost attempt counts");
        // The interrupted attempt's report is stale once another is claimed.
        let again = record(claim(&recovered, T0 + 5, 60_000));
        let ok = DeliveryResult::Delivered { status: 200 };
        assert!(settle(&again, 1, 1, &ok, Jitter::NONE, T0).is_err());
        let done = record(settle(&again, 1, 2, &ok, Jitter::NONE, T0 + 6));
        assert!(!done.callback.unwrap().in_flight);
    }
}
