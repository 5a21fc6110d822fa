//! Per-state counts of stored jobs.

use queue_proto::JobState;

/// Counts of one queue's stored jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts(pub(crate) [u64; 6]);

impl Counts {
    pub(crate) fn get(&self, state: JobState) -> u64 {
        self.0[state_index(state)]
    }

    pub(crate) fn slot(&mut self, state: JobState) -> &mut u64 {
        &mut self.0[state_index(state)]
    }
}

/// The position of `state` in [`JobState::ALL`].
pub(crate) fn state_index(state: JobState) -> usize {
    match state {
        JobState::Scheduled => 0,
        JobState::Ready => 1,
        JobState::Leased => 2,
        JobState::Completed => 3,
        JobState::Dead => 4,
        JobState::Cancelled => 5,
    }
}
