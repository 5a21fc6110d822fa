//! The pure core: every transition of the state machine as a plain function
//! of `(stored record, input, now) -> new record`, without storage.
//!
//! Each module owns one transition: its input, its preconditions and its
//! decision. Decisions are taken from the stored record handed in (never from
//! a worker's copy), and the storage layer commits the returned record only if
//! the stored bytes are still those the decision was taken from.

use queue_proto::JobState;
use queue_proto::limits::MAX_BACKOFF_MS;

use crate::{Error, Job, JobId, Lease, LeaseId};

pub(crate) mod cancel;
pub(crate) mod complete;
pub(crate) mod enqueue;
pub(crate) mod expire;
pub(crate) mod fail;
pub(crate) mod heartbeat;
pub(crate) mod lease;
pub(crate) mod promote;
pub(crate) mod release;
pub(crate) mod requeue;

/// Why a transition did not apply. Nothing changes when a rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The lease id given is not the job's live lease.
    LeaseLost,
    /// The job's state does not allow the transition.
    Conflict(JobState),
}

impl Refusal {
    pub(crate) fn into_error(self, id: JobId, operation: &'static str) -> Error {
        match self {
            Refusal::LeaseLost => Error::LeaseLost { id },
            Refusal::Conflict(state) => Error::Conflict {
                id,
                state,
                operation,
            },
        }
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

/// Moves `job` to a terminal state at `now`.
pub(crate) fn finish(job: &mut Job, state: JobState, now: u64) {
    debug_assert!(state.is_terminal());
    job.state = state;
    job.lease = None;
    job.finished_at = Some(now);
    job.updated_at = now;
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
        lease::lease(
            &ready_job(),
            LeaseId::from_u64(lease),
            &crate::LeaseOptions::default(),
            T0,
        )
        .expect("a ready job can be leased")
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
