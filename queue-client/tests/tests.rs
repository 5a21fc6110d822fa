//! The SDK's pushed results, against a real `queue-server` started in this
//! process on 127.0.0.1 (and stopped and started again on the same data
//! directory and port where a scenario needs the connection cut), and
//! against the embedded transport. Scenarios run on both transports unless
//! they are about HTTP itself, and on both storage backends (sled in a
//! temporary directory, PostgreSQL in a fresh database: `test-support`):
//! `both!` names its four tests `sled_http`, `sled_embedded`,
//! `postgres_http` and `postgres_embedded`; the HTTP-only tests are listed in
//! their file's `backend_tests!` (`sled::name`, `postgres::name`).
//!
//! - `common`: the server and two-transport harness, a recording proxy, a
//!   connection-cutting proxy, and a capture of the worker's `tracing` spans.
//! - `metadata`: correlation ids, headers and callback URLs from enqueue to
//!   the worker, its calls (`X-Request-Id`), its span, and the events.
//! - `progress`: progress reported by handlers and by hand, as events.
//! - `settle`: `Client::settle` (each item's typed outcome, the lease
//!   after it) and the worker settling and refilling its slots in one
//!   request per job: counted through a recording proxy, each outcome
//!   (complete, fail, dead, lease lost) right.
//! - `streams`: `Client::events`: filters, resuming across a server restart
//!   and across cut connections without duplicates or losses, gaps.
//! - `job_streams`: `JobHandle::events`: it ends after the terminal event,
//!   resumes after a cut, and re-reads the job after a gap.
//! - `limits`: `set_limits` and the limits in the stats.
//! - `blocking`: the same through the blocking client.
//! - `schedules`: schedules stored, fired on the manual clock, triggered,
//!   paused, resumed and deleted, async and blocking.
//! - `webhooks`: a callback delivered by the server verifies with
//!   `webhooks::verify`; a tampered one does not.

// Scenarios are plain functions run by the `both!` macros' tests; like
// test functions, they report a failure by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod blocking;
mod job_streams;
mod limits;
mod metadata;
mod progress;
mod schedules;
mod settle;
mod streams;
mod webhooks;
