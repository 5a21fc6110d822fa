//! The pure core: every transition of the state machine as a plain function
//! of `(stored record, input, now) -> Outcome`, without storage.
//!
//! Each module owns one transition: its input, its preconditions and its
//! decision. Decisions are taken from the stored record handed in (never from
//! a worker's copy), and the backend commits the [`Outcome`] only if the
//! stored record is still the revision the decision was taken from.
//!
//! An [`Outcome`] is the record after the transition (or none: the job is
//! removed) plus the [`Effect`]s that must be committed with it in the same
//! atomic batch, such as the event it emits. Which stored deadlines a record
//! implies is decided here too ([`deadline`]), so that every backend keeps
//! the same timers.

use queue_proto::JobState;
use queue_proto::limits::MAX_BACKOFF_MS;

use crate::{CallbackStatus, Error, Job, JobId, Lease, LeaseId, LeaseLostReason, Transition};

pub mod callback;
pub(crate) mod cancel;
pub(crate) mod complete;
pub(crate) mod enqueue;
pub(crate) mod expire;
pub(crate) mod fail;
pub(crate) mod heartbeat;
pub(crate) mod history;
pub(crate) mod lease;
pub(crate) mod promote;
pub(crate) mod purge;
pub(crate) mod release;
pub(crate) mod requeue;
pub(crate) mod retain;
pub(crate) mod schedule;
pub(crate) mod ttl;

/// What a transition decided: the record after it (`None`: the job is
/// removed) and the effects that commit with it, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The operation behind the change (for counters and logs).
    pub(crate) transition: Transition,
    /// The new record; `None` deletes the job.
    pub(crate) job: Option<Job>,
    /// Everything else the change implies.
    pub(crate) effects: Vec<Effect>,
}

/// Something a transition implies besides the new record, committed in the
/// same atomic batch so that no crash can separate it from its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// An entry of the durable event log (its id is assigned at commit).
    Event(EventDraft),
}

/// An event before the backend gives it its durable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventDraft {
    pub(crate) job: JobId,
    pub(crate) queue: String,
    pub(crate) state: JobState,
    pub(crate) attempts: u32,
    pub(crate) at: u64,
    pub(crate) transition: Transition,
    pub(crate) correlation_id: Option<String>,
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) last_error: Option<String>,
    pub(crate) progress: Option<Vec<u8>>,
}

impl EventDraft {
    /// The event announcing `job` as it is after `transition`: terminal
    /// events carry the result and the last error.
    fn of(job: &Job, transition: Transition) -> EventDraft {
        let terminal = job.state.is_terminal();
        EventDraft {
            job: job.id,
            queue: job.queue.clone(),
            state: job.state,
            attempts: job.attempts,
            at: job.updated_at,
            transition,
            correlation_id: job.correlation_id.clone(),
            result: (job.state == JobState::Completed)
                .then(|| job.result.clone())
                .flatten(),
            last_error: terminal.then(|| job.last_error.clone()).flatten(),
            progress: None,
        }
    }
}

impl From<&crate::Event> for EventDraft {
    fn from(event: &crate::Event) -> Self {
        EventDraft {
            job: event.id,
            queue: event.queue.clone(),
            state: event.state,
            attempts: event.attempts,
            at: event.at,
            transition: event.transition,
            correlation_id: event.correlation_id.clone(),
            result: event.result.clone(),
            last_error: event.last_error.clone(),
            progress: event.progress.clone(),
        }
    }
}

impl Outcome {
    /// `job` after a change of state, announced by an event.
    pub(crate) fn moved(job: Job, transition: Transition) -> Outcome {
        let event = EventDraft::of(&job, transition);
        Outcome {
            transition,
            job: Some(job),
            effects: vec![Effect::Event(event)],
        }
    }

    /// `job` with new progress, announced by a progress event.
    pub(crate) fn progressed(job: Job) -> Outcome {
        let mut event = EventDraft::of(&job, Transition::Progress);
        event.progress = job.progress.clone();
        Outcome {
            transition: Transition::Progress,
            job: Some(job),
            effects: vec![Effect::Event(event)],
        }
    }

    /// `job` changed without a change of state (a heartbeat): no event.
    pub(crate) fn quiet(job: Job, transition: Transition) -> Outcome {
        Outcome {
            transition,
            job: Some(job),
            effects: Vec::new(),
        }
    }

    /// The job is deleted (retention, purge): no event.
    pub(crate) fn removed(transition: Transition) -> Outcome {
        Outcome {
            transition,
            job: None,
            effects: Vec::new(),
        }
    }

    /// The events among the effects.
    pub(crate) fn events(&self) -> impl Iterator<Item = &EventDraft> {
        self.effects.iter().map(|effect| match effect {
            Effect::Event(event) => event,
        })
    }
}

/// The kinds of stored deadlines. Every backend keeps one entry per
/// deadline a record implies ([`deadline`]); the timer acts on those due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKind {
    /// A scheduled job's `run_at`: promote it.
    Promote,
    /// A lease's `expires_at`: expire it (the entry carries the lease id).
    Expire,
    /// A completed job's `finished_at`, due after the completed retention.
    RetainCompleted,
    /// A dead job's `finished_at`, due after the dead retention.
    RetainDead,
    /// A cancelled job's `finished_at`, due after the cancelled retention.
    RetainCancelled,
    /// A pending callback's next attempt (acted on by the server's
    /// dispatcher, not by the timer).
    Callback,
    /// A job's `expires_at` while it is `scheduled` or `ready`: it is dead
    /// if still not leased.
    Ttl,
}

impl TimerKind {
    pub(crate) const ALL: [TimerKind; 7] = [
        TimerKind::Promote,
        TimerKind::Expire,
        TimerKind::RetainCompleted,
        TimerKind::RetainDead,
        TimerKind::RetainCancelled,
        TimerKind::Callback,
        TimerKind::Ttl,
    ];
}

/// One stored deadline: its kind, its time (before any retention offset)
/// and the lease it is about, for lease expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub(crate) kind: TimerKind,
    pub(crate) at: u64,
    pub(crate) lease: Option<LeaseId>,
}

/// The deadlines `job` implies: the single definition of what the timers
/// hold for a record. A finished job is kept past its retention while its
/// callback is pending.
pub(crate) fn deadlines(job: &Job) -> impl Iterator<Item = Deadline> {
    let finished = job.finished_at.unwrap_or(job.updated_at);
    let plain = |kind, at| {
        Some(Deadline {
            kind,
            at,
            lease: None,
        })
    };
    let pending = job.callback.as_ref().and_then(|callback| {
        (callback.status == CallbackStatus::Pending)
            .then_some(callback.next_attempt_at)
            .flatten()
    });
    let state = match job.state {
        JobState::Ready => None,
        JobState::Scheduled => plain(TimerKind::Promote, job.run_at),
        JobState::Leased => job.lease.as_ref().map(|lease| Deadline {
            kind: TimerKind::Expire,
            at: lease.expires_at,
            lease: Some(lease.id),
        }),
        JobState::Completed if pending.is_none() => plain(TimerKind::RetainCompleted, finished),
        JobState::Dead if pending.is_none() => plain(TimerKind::RetainDead, finished),
        JobState::Cancelled if pending.is_none() => plain(TimerKind::RetainCancelled, finished),
        JobState::Completed | JobState::Dead | JobState::Cancelled => None,
    };
    let ttl = match job.state {
        JobState::Scheduled | JobState::Ready => job.expires_at,
        _ => None,
    };
    state
        .into_iter()
        .chain(pending.and_then(|at| plain(TimerKind::Callback, at)))
        .chain(ttl.and_then(|at| plain(TimerKind::Ttl, at)))
}

/// Why a transition did not apply. Nothing changes when a rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The lease id given is not the job's live lease.
    LeaseLost,
    /// The job's state does not allow the transition.
    Conflict(JobState),
}

impl Refusal {
    /// The error for this refusal of an `operation` on `job` (as stored) at
    /// `now`, given the lease id the caller presented if any.
    pub(crate) fn into_error(
        self,
        job: &Job,
        lease_id: Option<LeaseId>,
        now: u64,
        operation: &'static str,
    ) -> Error {
        let id = job.id;
        match self {
            Refusal::LeaseLost => Error::LeaseLost {
                id,
                reason: match lease_id {
                    Some(lease_id) => lease_lost_reason(job, lease_id, now),
                    None => LeaseLostReason::Unknown,
                },
            },
            Refusal::Conflict(state) => Error::Conflict {
                id,
                state,
                operation,
            },
        }
    }
}

/// Why `lease_id` is not a live lease of `job` at `now`.
pub(crate) fn lease_lost_reason(job: &Job, lease_id: LeaseId, now: u64) -> LeaseLostReason {
    if job.state.is_terminal() {
        return LeaseLostReason::Finished(job.state);
    }
    match &job.lease {
        Some(lease) if job.state == JobState::Leased => {
            if lease.id != lease_id {
                LeaseLostReason::NotCurrent
            } else if now >= lease.expires_at {
                LeaseLostReason::Expired
            } else {
                LeaseLostReason::NotCurrent
            }
        }
        _ => LeaseLostReason::NotLeased(job.state),
    }
}

/// The fencing check shared by heartbeat, complete, fail and release: the
/// job must be leased under `lease_id`, and that lease must not have reached
/// its deadline (an expired lease is lost even before the timer reaps it).
pub(crate) fn live_lease(job: &Job, lease_id: LeaseId, now: u64) -> Result<&Lease, Refusal> {
    match &job.lease {
        Some(lease)
            if job.state == JobState::Leased && lease.id == lease_id && now < lease.expires_at =>
        {
            Ok(lease)
        }
        _ => Err(Refusal::LeaseLost),
    }
}

/// The end of a lease of `job` that would otherwise end at `wanted`: never
/// past `started_at + timeout_ms` (heartbeats cannot extend an attempt
/// beyond its timeout).
pub(crate) fn attempt_deadline(job: &Job, wanted: u64) -> u64 {
    match (job.started_at, job.timeout_ms) {
        (Some(started), Some(timeout)) => wanted.min(started.saturating_add(timeout)),
        _ => wanted,
    }
}

/// Whether a lease of `job` ending at `expires_at` ends at the job's
/// timeout rather than at its own length.
pub(crate) fn ends_at_timeout(job: &Job, expires_at: u64) -> bool {
    match (job.started_at, job.timeout_ms) {
        (Some(started), Some(timeout)) => expires_at >= started.saturating_add(timeout),
        _ => false,
    }
}

/// A jitter factor in per mille, 800..=1200 (±20 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jitter(u32);

impl Jitter {
    /// No jitter at all.
    #[cfg(test)]
    pub(crate) const NONE: Jitter = Jitter(1000);

    /// Maps a random number onto 800..=1200 per mille.
    pub(crate) fn from_random(random: u64) -> Jitter {
        Jitter(800 + u32::try_from(random % 401).unwrap_or(0))
    }

    /// `ms` with this jitter.
    pub(crate) fn apply(self, ms: u64) -> u64 {
        ms.saturating_mul(u64::from(self.0)) / 1000
    }
}

/// `base * 2^(attempts-1)` with jitter, capped at one hour.
pub(crate) fn backoff_ms(base_ms: u64, attempts: u32, jitter: Jitter) -> u64 {
    let exponent = attempts.saturating_sub(1).min(40);
    let raw = base_ms.saturating_mul(1u64 << exponent).min(MAX_BACKOFF_MS);
    (raw.saturating_mul(u64::from(jitter.0)) / 1000).min(MAX_BACKOFF_MS)
}

/// The state a job waiting for `run_at` is in at `now`.
pub(crate) fn waiting_state(run_at: u64, now: u64) -> JobState {
    if run_at <= now {
        JobState::Ready
    } else {
        JobState::Scheduled
    }
}

/// Moves `job` to a terminal state at `now`; a job with a callback URL
/// owes a delivery from now on (committed with the transition, so a crash
/// never loses it).
pub(crate) fn finish(job: &mut Job, state: JobState, now: u64) {
    debug_assert!(state.is_terminal());
    job.state = state;
    job.lease = None;
    job.finished_at = Some(now);
    job.updated_at = now;
    if job.callback_url.is_some() {
        job.callback = Some(callback::fresh(job.callback.as_ref(), now));
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::NewJob;

    pub(crate) const T0: u64 = 1_700_000_000_000;

    pub(crate) fn ready_job() -> Job {
        enqueue::new_job(JobId::from_u64(7), "q", &NewJob::new(b"{}".to_vec()), T0)
    }

    pub(crate) fn leased_job(lease: u64) -> Job {
        record(lease::lease(
            &ready_job(),
            LeaseId::from_u64(lease),
            &crate::LeaseOptions::default(),
            T0,
        ))
    }

    /// A leased job with every optional field set (for codecs and their
    /// fuzzing).
    pub(crate) fn full_job() -> Job {
        let mut job = leased_job(3);
        job.result = Some(b"{\"ok\":true}".to_vec());
        job.idempotency_key = Some("k".into());
        job.correlation_id = Some("req-1".into());
        job.headers
            .insert("traceparent".into(), "00-ab-cd-01".into());
        job.progress = Some(b"{\"done\":3}".to_vec());
        job.callback_url = Some("https://example.com/hook".into());
        job.callback = Some(crate::Callback {
            status: CallbackStatus::Pending,
            delivery: 2,
            attempts: 4,
            last_status: Some(503),
            last_error: Some("busy".into()),
            next_attempt_at: Some(77),
            delivered_at: None,
            in_flight: true,
        });
        job.group = Some("tenant-7".into());
        job.timeout_ms = Some(60_000);
        job.expires_at = Some(99_000);
        job.started_at = Some(88);
        job.schedule = Some("nightly".into());
        job.request_digest = Some([7; 16]);
        job.last_event_id = Some(1234);
        job
    }

    /// The record an accepted outcome leaves.
    pub(crate) fn record(outcome: Result<Outcome, Refusal>) -> Job {
        outcome
            .expect("the rule accepts")
            .job
            .expect("the job is kept")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_one_hour() {
        assert_eq!(backoff_ms(1000, 1, Jitter::NONE), 1000);
        assert_eq!(backoff_ms(1000, 2, Jitter::NONE), 2000);
        assert_eq!(backoff_ms(1000, 5, Jitter::NONE), 16000);
        assert_eq!(backoff_ms(1000, 30, Jitter::NONE), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(u64::MAX, 1000, Jitter::NONE), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(0, 3, Jitter::NONE), 0);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for random in [0, 1, 200, 400, 401, u64::MAX] {
            let delay = backoff_ms(1000, 1, Jitter::from_random(random));
            assert!((800..=1200).contains(&delay), "{delay}");
        }
        assert_eq!(backoff_ms(1000, 1, Jitter::from_random(0)), 800);
        assert_eq!(backoff_ms(1000, 1, Jitter::from_random(400)), 1200);
        // The cap applies after jitter too.
        assert_eq!(
            backoff_ms(MAX_BACKOFF_MS, 1, Jitter::from_random(400)),
            MAX_BACKOFF_MS
        );
    }
}
