//! Integration tests of queue-server, one binary, in-process: the server
//! alone, driven over HTTP. (The built binary, the client SDK against a real
//! server and the kill -9 runs are in the workspace's tests/ crate.) Every test that
//! goes through a store runs on both backends, as `<module>::sled::<name>`
//! and `<module>::postgres::<name>` (each file's `backend_tests!` list; the
//! PostgreSQL cluster comes from `scripts/postgres.sh`, or
//! `QUEUE_TEST_DATABASE_URL`, see the `test-support` crate). `openapi` and
//! the pure parsing tests read no store and run once. Modules:
//!
//! - `common`: a real server on 127.0.0.1:0 and a small keep-alive client.
//! - `api`: every endpoint, default and error code, auth, request ids,
//!   metrics, restarts.
//! - `dashboard`: the web dashboard's routes: redirects, files, ETags,
//!   404s, and no token needed for them.
//! - `events`: Server-Sent Events: delivery, filters, keep-alives, and
//!   graceful shutdown ending streams and long-polls.
//! - `concurrency`: many workers over HTTP; every job completed exactly
//!   once, never leased twice at once.
//! - `resume`: release 1.1's streams: durable ids, resume after a drop and
//!   a restart, gaps, type filters, progress, one job's stream, correlation
//!   ids, WebSocket.
//! - `connections`: the connection table: shedding idle and stalled
//!   connections when full, never event streams; body and idle timeouts;
//!   the open event streams gauge.
//! - `callbacks`: signed deliveries to real receivers, retries on the
//!   manual clock, 410, timeouts, the bound on attempts under way.
//! - `fuzz`: random and mutated bodies, ids, names and query strings on
//!   every route, through the app without a socket: never a 5xx or a panic.
//! - `listing`: jobs by state and by correlation id: every state, paging
//!   with `next`, correlation across queues, refusals naming the parameter.
//! - `history`: per-queue history: the answer to the letter, steps,
//!   defaults, 400s naming their field, unknown queues, restarts.
//! - `limits`: queue limits: PATCH validation, stats, restarts, many
//!   workers under max_leased and group_max_leased.
//! - `metrics`: `/metrics` after a known workload: exact per-queue
//!   counters, run and wait histograms, callback outcomes, request
//!   durations by route pattern, the text format parsed strictly; the
//!   Grafana dashboard in docs/ against a real server's series.
//! - `openapi`: docs/openapi.yaml covers every route of the router.
//! - `schedules`: the schedule endpoints, their validation and ticks fired
//!   on the manual clock.
//! - `settle`: many settlements and the next lease in one request: each
//!   item's own status, refusals naming the item, events, the lease's wait.
//! - `strict`: strict input: unknown fields and query parameters, arrays
//!   for objects, nesting depth, percent-encoded names, the bearer scheme.
//! - `timeouts`: per-attempt timeouts and job time-to-live on the manual
//!   clock; the job object's 1.1 fields.

// The bodies `backend_tests!` runs on both backends are plain functions,
// which clippy's `allow-unwrap-in-tests` (clippy.toml) does not see as tests.
#![allow(clippy::unwrap_used)]

mod api;
mod callbacks;
mod common;
mod concurrency;
mod connections;
mod dashboard;
mod events;
mod fuzz;
mod history;
mod limits;
mod listing;
mod metrics;
mod openapi;
mod resume;
mod schedules;
mod settle;
mod strict;
mod timeouts;
