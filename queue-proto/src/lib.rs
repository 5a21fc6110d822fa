//! Wire types and limits of the job queue's HTTP contract (`docs/HTTP.md`
//! in the repository, and `docs/openapi.yaml`).
//!
//! This crate is the one place where the shapes that cross a process boundary
//! are defined, so that `queue-server` and `queue-client` agree by
//! construction and the client never has to compile the storage engine:
//!
//! - [`JobState`]: the six states of the job state machine.
//! - [`limits`]: every bound of the contract (name length, batch size, lease
//!   length, wait time, …) and [`validate_queue_name`].
//! - [`Job`], [`EnqueueRequest`], [`BatchRequest`], [`LeaseRequest`],
//!   [`HeartbeatRequest`], [`CompleteRequest`], [`FailRequest`],
//!   [`ReleaseRequest`], [`RequeueRequest`], [`QueueStats`], [`Event`]: the
//!   JSON bodies.
//! - [`History`], [`HistoryPoint`], [`HistoryQuery`]: a queue's per-minute
//!   history.
//! - [`ScheduleRequest`], [`Schedule`], [`ScheduleList`], [`CatchUp`]: periodic
//!   jobs.
//! - [`ErrorCode`] and [`ErrorBody`]: the error envelope
//!   `{"error": {"code", "message"}}`.
//!
//! Payloads and results are arbitrary JSON that the queue never interprets;
//! they travel as [`RawValue`] so that they are neither parsed nor re-encoded
//! (their nesting is bounded: [`limits::MAX_JSON_DEPTH`]).
//!
//! Request bodies are strict on input: each must be a JSON object (an array
//! is not read positionally) and a field the contract does not name is an
//! error naming it, at every level. Response types ([`Job`], [`Schedule`],
//! …) ignore fields they do not know, so a client keeps working against a
//! newer server.
//!
//! ```
//! use queue_proto::{validate_queue_name, JobState};
//!
//! assert!(validate_queue_name("emails.high-priority_2").is_ok());
//! assert!(validate_queue_name("no spaces").is_err());
//! assert!(JobState::Dead.is_terminal());
//! assert_eq!("leased".parse::<JobState>(), Ok(JobState::Leased));
//! ```

mod history;
mod schedules;
mod state;
mod strict;
mod wire;

pub mod limits;
pub mod webhooks;

pub use history::{
    DEFAULT_HISTORY_SPAN_MS, HISTORY_MINUTE_MS, History, HistoryPoint, HistoryQuery,
    MAX_HISTORY_POINTS,
};
pub use limits::{QueueNameError, validate_queue_name};
pub use schedules::{CatchUp, Schedule, ScheduleList, ScheduleRequest};
pub use serde_json::value::RawValue;
pub use state::{JobState, UnknownState};
pub use wire::{
    BatchRequest, BatchResponse, CallbackEvent, CallbackInfo, CallbackState, CompleteRequest,
    CountResponse, DeadPage, DeletedResponse, EnqueueRequest, ErrorBody, ErrorCode, ErrorDetail,
    Event, EventType, FailRequest, Gap, HeartbeatRequest, Job, JobPage, LeaseRequest,
    LeaseResponse, PatchQueueRequest, QueueLimits, QueueList, QueueStats, RateLimit,
    ReleaseRequest, RequeueRequest, RequeuedResponse, SettleComplete, SettleFail, SettleRequest,
    SettleResponse, SettleResult, rfc3339_ms,
};
