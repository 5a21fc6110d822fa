//! The columns derived from a record, and the conversions between the
//! engine's values and PostgreSQL's.

use queue_proto::JobState;

use crate::counts::state_index;
use crate::rules::{self, TimerKind};
use crate::{CallbackStatus, Job};

/// A `u64` as a `bigint` (saturating: the record keeps the exact value).
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` as a `u64` (negative values do not occur).
pub(crate) fn unbig(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A state's column value: its position in [`JobState::ALL`].
pub(crate) fn state_code(state: JobState) -> i16 {
    state_index(state) as i16
}

/// The state of a column value.
pub(crate) fn state_of(code: i16) -> Option<JobState> {
    JobState::ALL
        .into_iter()
        .find(|state| state_code(*state) == code)
}

/// The `due_kind` of the timer kinds kept in `due_kind`/`due_at`: at most
/// one per record, the one its state implies.
pub(crate) fn kind_code(kind: TimerKind) -> Option<i16> {
    match kind {
        TimerKind::Promote => Some(0),
        TimerKind::Expire => Some(1),
        TimerKind::RetainCompleted => Some(2),
        TimerKind::RetainDead => Some(3),
        TimerKind::RetainCancelled => Some(4),
        TimerKind::Callback | TimerKind::Ttl => None,
    }
}

pub(crate) fn callback_code(status: CallbackStatus) -> i16 {
    match status {
        CallbackStatus::Pending => 0,
        CallbackStatus::Delivered => 1,
        CallbackStatus::Failed => 2,
    }
}

/// The columns of `queue_jobs` besides `id`, `revision` and `record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobColumns {
    pub(crate) queue: String,
    pub(crate) state: i16,
    /// Lease order: priority high first.
    pub(crate) lease_rank: i32,
    pub(crate) run_at: i64,
    pub(crate) group: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) callback_status: Option<i16>,
    pub(crate) due_kind: Option<i16>,
    pub(crate) due_at: Option<i64>,
    pub(crate) due_lease: Option<i64>,
    pub(crate) due_callback: Option<i64>,
    pub(crate) due_ttl: Option<i64>,
}

impl JobColumns {
    pub(crate) fn of(job: &Job) -> JobColumns {
        let mut columns = JobColumns {
            queue: job.queue.clone(),
            state: state_code(job.state),
            lease_rank: job.priority.saturating_neg(),
            run_at: big(job.run_at),
            group: job.group.clone(),
            idempotency_key: job.idempotency_key.clone(),
            correlation_id: job.correlation_id.clone(),
            callback_status: job.callback.as_ref().map(|c| callback_code(c.status)),
            due_kind: None,
            due_at: None,
            due_lease: None,
            due_callback: None,
            due_ttl: None,
        };
        for deadline in rules::deadlines(job) {
            match deadline.kind {
                TimerKind::Callback => columns.due_callback = Some(big(deadline.at)),
                TimerKind::Ttl => columns.due_ttl = Some(big(deadline.at)),
                kind => {
                    columns.due_kind = kind_code(kind);
                    columns.due_at = Some(big(deadline.at));
                    columns.due_lease = deadline.lease.map(|lease| big(lease.as_u64()));
                }
            }
        }
        columns
    }
}
