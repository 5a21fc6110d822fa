//! Queue history: per-minute rollups merged to a step
//! (`GET /v1/queues/{queue}/history`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The width of one stored rollup, and the unit of `step_ms`.
pub const HISTORY_MINUTE_MS: u64 = 60_000;

/// The history a query covers when it gives no `from`: the hour before `to`.
pub const DEFAULT_HISTORY_SPAN_MS: u64 = 3_600_000;

/// The most points one history answer holds (a week of minutes).
pub const MAX_HISTORY_POINTS: u64 = 10_080;

/// Which history to read. `Default` is the last hour in one-minute steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Unix ms of the start (default: an hour before `to`); the first
    /// point is the step that holds it.
    pub from: Option<u64>,
    /// Unix ms of the end (default: now); the last point is the step that
    /// holds it.
    pub to: Option<u64>,
    /// The width of a point: a whole number of minutes (default: one).
    pub step: Option<Duration>,
}

impl HistoryQuery {
    /// The last hour in one-minute steps.
    pub fn last_hour() -> Self {
        HistoryQuery::default()
    }

    /// The step in ms as the wire carries it (`step_ms`), if one is set;
    /// sub-millisecond parts are dropped (so `59.9999 s` is refused as
    /// not a whole number of minutes) and a duration beyond `u64` ms
    /// saturates.
    pub fn step_ms(&self) -> Option<u64> {
        self.step
            .map(|step| u64::try_from(step.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A queue's history: one point per step, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The width of each point, in ms.
    pub step_ms: u64,
    /// One point per step from `from` to `to`, steps without activity
    /// included.
    pub points: Vec<HistoryPoint>,
}

/// What happened to a queue during one step, and its depths at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Unix ms of the start of the step (a multiple of `step_ms`).
    pub at: u64,
    /// Jobs enqueued (schedule ticks included).
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts: failures reported by workers, lease expiries and
    /// timeouts (whether the job was retried or became dead).
    pub failed: u64,
    /// Jobs that became dead (after their last attempt, a non-retryable
    /// failure, or their time-to-live).
    pub dead: u64,
    /// Jobs that reached their time-to-live before being leased (they are
    /// counted in `dead` too).
    pub expired: u64,
    /// Ready jobs at the end of the step.
    pub ready: u64,
    /// Scheduled jobs at the end of the step.
    pub scheduled: u64,
    /// Leased jobs at the end of the step.
    pub leased: u64,
    /// Median time from lease to completion of the jobs completed in the
    /// step, in ms; `null` when none was.
    pub run_ms_p50: Option<u64>,
    /// 95th percentile of the same.
    pub run_ms_p95: Option<u64>,
    /// Median time from `run_at` (the enqueue, or the end of a delay or
    /// retry back-off) to the lease of the jobs leased in the step, in ms;
    /// `null` when none was.
    pub wait_ms_p50: Option<u64>,
    /// 95th percentile of the same.
    pub wait_ms_p95: Option<u64>,
}
