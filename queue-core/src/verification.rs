//! The consistency report of [`Queue::verify`](crate::Queue::verify).

use queue_proto::JobState;

use crate::Job;
use crate::counts::state_index;

/// What [`Queue::verify`](crate::Queue::verify) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Job records stored.
    pub jobs: u64,
    /// Records per state, in the order of [`JobState::ALL`].
    pub by_state: [u64; 6],
    /// Every disagreement found; empty when the store is consistent.
    pub problems: Vec<String>,
}

impl Verification {
    /// `true` when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.by_state[state_index(state)]
    }
}

/// The invariants of one record (see [`Job`]).
pub(crate) fn invariant_problems(job: &Job) -> Vec<String> {
    let mut problems = Vec::new();
    if job.lease.is_some() != (job.state == JobState::Leased) {
        problems.push(format!(
            "job {} is {} with lease {:?}",
            job.id, job.state, job.lease
        ));
    }
    if job.finished_at.is_some() != job.state.is_terminal() {
        problems.push(format!(
            "job {} is {} with finished_at {:?}",
            job.id, job.state, job.finished_at
        ));
    }
    if job.attempts > job.max_attempts {
        problems.push(format!(
            "job {} has {} attempts of {}",
            job.id, job.attempts, job.max_attempts
        ));
    }
    problems
}
