//! `heartbeat`: a live lease is extended to now + its length (or a new one);
//! with progress, the progress is stored on the job and announced.

use queue_proto::limits::MAX_PROGRESS_LEN;

use super::{Outcome, Refusal, live_lease};
use crate::{Error, Job, LeaseId, Result, Transition};

/// Checks a progress report.
pub(crate) fn validate_progress(progress: &[u8]) -> Result<()> {
    if progress.len() > MAX_PROGRESS_LEN {
        return Err(Error::TooLarge {
            what: "progress",
            size: progress.len(),
            limit: MAX_PROGRESS_LEN,
        });
    }
    queue_proto::limits::check_json_depth(progress)
        .map_err(|message| Error::invalid("progress", message))
}

/// Extends the lease `lease_id` of `job` (`lease_ms` already validated),
/// storing `progress` if given.
pub(crate) fn heartbeat(
    job: &Job,
    lease_id: LeaseId,
    lease_ms: Option<u64>,
    progress: Option<&[u8]>,
    now: u64,
) -> Result<Outcome, Refusal> {
    let lease = live_lease(job, lease_id, now)?;
    let length = lease_ms.unwrap_or(lease.lease_ms);
    let mut next = job.clone();
    next.updated_at = now;
    let expires_at = super::attempt_deadline(job, now.saturating_add(length));
    if let Some(lease) = next.lease.as_mut() {
        lease.expires_at = expires_at;
        lease.lease_ms = length;
    }
    Ok(match progress {
        Some(progress) => {
            next.progress = Some(progress.to_vec());
            Outcome::progressed(next)
        }
        None => Outcome::quiet(next, Transition::Heartbeat),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, record};

    #[test]
    fn extends_from_now() {
        let job = leased_job(1);
        let outcome = heartbeat(&job, LeaseId::from_u64(1), None, None, T0 + 20_000);
        assert_eq!(outcome.as_ref().map(|o| o.events().count()), Ok(0));
        let beat = record(outcome);
        assert_eq!(beat.lease_expires_at(), Some(T0 + 50_000));
        let beat = record(heartbeat(
            &beat,
            LeaseId::from_u64(1),
            Some(5),
            None,
            T0 + 21_000,
        ));
        assert_eq!(beat.lease_expires_at(), Some(T0 + 21_005));
        assert_eq!(beat.attempts, 1);
    }

    #[test]
    fn progress_is_stored_and_announced() {
        let job = leased_job(1);
        let outcome = heartbeat(
            &job,
            LeaseId::from_u64(1),
            None,
            Some(b"{\"done\":3}"),
            T0 + 1,
        )
        .unwrap();
        let event = outcome.events().next().expect("a progress event").clone();
        assert_eq!(event.transition, Transition::Progress);
        assert_eq!(event.progress.as_deref(), Some(&b"{\"done\":3}"[..]));
        let beat = record(Ok(outcome));
        assert_eq!(beat.progress.as_deref(), Some(&b"{\"done\":3}"[..]));
        assert!(validate_progress(&vec![b'1'; MAX_PROGRESS_LEN + 1]).is_err());
    }

    #[test]
    fn stale_or_expired_leases_are_refused() {
        let job = leased_job(1);
        assert_eq!(
            heartbeat(&job, LeaseId::from_u64(2), None, None, T0),
            Err(Refusal::LeaseLost)
        );
        assert_eq!(
            heartbeat(&job, LeaseId::from_u64(1), None, None, T0 + 30_000),
            Err(Refusal::LeaseLost)
        );
    }
}
