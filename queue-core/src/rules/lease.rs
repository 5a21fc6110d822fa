//! `lease`: a `ready` job becomes `leased` under a fresh lease id.

use queue_proto::JobState;
use queue_proto::limits::{MAX_LEASE_JOBS, MAX_LEASE_MS, MAX_WORKER_LEN};

use super::Refusal;
use crate::{Error, Job, Lease, LeaseId, LeaseOptions, Result};

/// Checks the lease options.
pub(crate) fn validate(opts: &LeaseOptions) -> Result<()> {
    if !(1..=MAX_LEASE_JOBS).contains(&opts.max_jobs) {
        return Err(Error::invalid(
            "max_jobs",
            format!("{} is outside 1..={MAX_LEASE_JOBS}", opts.max_jobs),
        ));
    }
    validate_lease_ms(opts.lease_ms)?;
    if let Some(worker) = &opts.worker {
        if worker.len() > MAX_WORKER_LEN {
            return Err(Error::invalid(
                "worker",
                format!("longer than {MAX_WORKER_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// Checks a lease length (also used by heartbeat).
pub(crate) fn validate_lease_ms(lease_ms: u64) -> Result<()> {
    if !(1..=MAX_LEASE_MS).contains(&lease_ms) {
        return Err(Error::invalid(
            "lease_ms",
            format!("{lease_ms} is outside 1..={MAX_LEASE_MS}"),
        ));
    }
    Ok(())
}

/// Leases a ready job: `attempts` counts this lease.
pub(crate) fn lease(
    job: &Job,
    lease_id: LeaseId,
    opts: &LeaseOptions,
    now: u64,
) -> Result<Job, Refusal> {
    if job.state != JobState::Ready {
        return Err(Refusal::Conflict(job.state));
    }
    let mut next = job.clone();
    next.state = JobState::Leased;
    next.attempts = job.attempts.saturating_add(1);
    next.updated_at = now;
    next.lease = Some(Lease {
        id: lease_id,
        expires_at: now.saturating_add(opts.lease_ms),
        lease_ms: opts.lease_ms,
        leased_at: now,
        worker: opts.worker.clone(),
    });
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{T0, leased_job, ready_job};

    #[test]
    fn leasing_counts_an_attempt_and_sets_the_deadline() {
        let job = leased_job(1);
        assert_eq!(job.state, JobState::Leased);
        assert_eq!(job.attempts, 1);
        let lease = job.lease.expect("leased");
        assert_eq!(lease.expires_at, T0 + 30_000);
        assert_eq!(lease.id, LeaseId::from_u64(1));
    }

    #[test]
    fn only_ready_jobs_are_leased() {
        let leased = leased_job(1);
        assert_eq!(
            lease(&leased, LeaseId::from_u64(2), &LeaseOptions::default(), T0),
            Err(Refusal::Conflict(JobState::Leased))
        );
        let mut scheduled = ready_job();
        scheduled.state = JobState::Scheduled;
        assert!(
            lease(
                &scheduled,
                LeaseId::from_u64(2),
                &LeaseOptions::default(),
                T0
            )
            .is_err()
        );
    }

    #[test]
    fn options_are_bounded() {
        assert!(validate(&LeaseOptions::default()).is_ok());
        assert!(validate(&LeaseOptions::default().max_jobs(0)).is_err());
        assert!(validate(&LeaseOptions::default().max_jobs(1001)).is_err());
        for lease_ms in [0, MAX_LEASE_MS + 1] {
            let opts = LeaseOptions {
                lease_ms,
                ..LeaseOptions::default()
            };
            assert!(validate(&opts).is_err());
        }
        assert!(validate(&LeaseOptions::default().worker("w".repeat(257))).is_err());
    }
}
