use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of a job.
///
/// ```text
/// enqueue ──► scheduled ──(run_at reached)──► ready ──lease──► leased
///               ▲                               ▲                │
///               │ fail / expiry, attempts left  │ release        ├─ complete ─► completed
///               └───────────────────────────────┴────────────────┤
///                                                                ├─ fail / expiry, no attempts
///                                                                │  left, or not retryable ─► dead
///  scheduled | ready | leased ──cancel──► cancelled              dead ──requeue──► ready
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`: a delay or a retry back-off.
    Scheduled,
    /// Can be leased now.
    Ready,
    /// Held by a worker until its lease expires.
    Leased,
    /// Finished successfully (terminal).
    Completed,
    /// Out of attempts, or failed permanently (terminal until requeued).
    Dead,
    /// Cancelled by a caller (terminal).
    Cancelled,
}

impl JobState {
    /// All states, in the order of the state machine.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Ready,
        JobState::Leased,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// `completed`, `dead` and `cancelled` are terminal: no worker will see the
    /// job again (a dead job only comes back by an explicit requeue).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Leased => "leased",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`JobState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown job state {:?}", self.0)
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}
