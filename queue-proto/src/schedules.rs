//! Bodies of the schedule endpoints (`/v1/schedules`): periodic jobs stored
//! by the server and enqueued at each tick.

use serde::{Deserialize, Serialize};

use crate::EnqueueRequest;
use crate::strict::strict_body;

strict_body!(ScheduleRequest);

/// What a schedule does with ticks that passed while no server ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Skip them.
    None,
    /// Fire the latest one (the default).
    #[default]
    Latest,
    /// Fire each of them (the latest 1,000 at most).
    All,
}

impl CatchUp {
    /// Every policy, in the contract's order.
    pub const ALL: [CatchUp; 3] = [CatchUp::None, CatchUp::Latest, CatchUp::All];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `PUT /v1/schedules/{name}`. Exactly one of `cron` and
/// `every_ms`; unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ScheduleRequest {
    /// The queue its jobs go to.
    pub queue: String,
    /// A cron expression: five fields (minute hour day-of-month month
    /// day-of-week), an optional leading seconds field, or an alias such as
    /// `@hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed period in ms (1,000..=31,536,000,000), independent of time
    /// zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// The IANA time zone `cron` is read in; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The job each tick enqueues: an enqueue body without `run_at`,
    /// `delay_ms`, `idempotency_key` or `expires_at` (the tick sets them).
    pub job: EnqueueRequest,
    /// Missed ticks; default `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    /// Stored without firing; default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// The schedule object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name (a queue name's syntax).
    pub name: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The cron expression, or `null` for a fixed period.
    pub cron: Option<String>,
    /// The fixed period in ms, or `null` for a cron expression.
    pub every_ms: Option<u64>,
    /// The IANA time zone of `cron`.
    pub timezone: String,
    /// The job each tick enqueues (read leniently: a newer server may add
    /// enqueue options).
    #[serde(deserialize_with = "EnqueueRequest::deserialize")]
    pub job: EnqueueRequest,
    /// What happens to missed ticks.
    pub catch_up: CatchUp,
    /// A paused schedule does not fire.
    pub paused: bool,
    /// Unix ms of the next tick; `null` while paused.
    pub next_run_at: Option<u64>,
    /// Unix ms of the latest tick fired.
    pub last_run_at: Option<u64>,
    /// The job the latest tick (or trigger) enqueued.
    pub last_job_id: Option<String>,
    /// Unix ms of the first `PUT`.
    pub created_at: u64,
    /// Unix ms of the latest change (tick, trigger, pause, resume, `PUT`).
    pub updated_at: u64,
}

/// Response of `GET /v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<Schedule>,
}
