//! Cross-crate integration tests, one binary: the client SDK against a real
//! server (started on 127.0.0.1:0 by the test) and against the embedded
//! transport, and the built `queue-server` binary (as
//! `queue-server-under-test`, see Cargo.toml) run as a child process and
//! killed with SIGKILL. SDK scenarios run on both transports unless the
//! scenario is about HTTP itself.
//!
//! - `common`: the two-transport harness, a lossy proxy, a silent server.
//! - `raw_http`: a small keep-alive HTTP client that speaks the API's JSON
//!   without the SDK.
//! - `typed`: typed queues, enqueue options, batches, handles, waits, cancel.
//! - `call`: the synchronous style and its three outcomes.
//! - `worker`: the async worker: concurrency, heartbeats, failures and
//!   panics, dead letters, graceful shutdown, stale leases.
//! - `blocking`: the blocking client and worker, and the refusal to block
//!   inside a runtime.
//! - `admin`: stats, queues, pause/resume, dead letters, events.
//! - `dashboard`: the web dashboard in a real headless Chromium: the
//!   numbers the API reports, requeues and a purge clicked through their
//!   confirmations, schedules paused, resumed and run, a live event
//!   without a reload, the token prompt; screenshots under
//!   `target/ci-artifacts/screenshots/`.
//! - `listing`: jobs by state and by correlation id, typed and as JSON,
//!   paged, async and blocking.
//! - `http`: what only HTTP has: auth, bad URLs, unreachable and silent
//!   servers, and retry safety when a response is lost.
//! - `binary`: the binary's flags, `--help`, exit codes.
//! - `cli`: the admin CLI `queuectl` (as `queuectl-under-test`) run as a
//!   child process against a real server: each command, exit codes,
//!   `--json` output against the API's own.
//! - `kill9`: the built binary SIGKILLed while clients enqueue and
//!   complete; after a restart every acknowledged write is there.
//! - `callback_kill9`: the binary SIGKILLed with callbacks owed (one under
//!   way, one just acknowledged): after a restart both arrive, signed with
//!   the secret it generated and stored; the job's log lines carry its
//!   correlation id.
//! - `schedule_kill9`: the binary SIGKILLed again and again around the
//!   ticks of a per-second schedule: every tick has exactly one job.
//! - `sdk_kill9`: producers on the client SDK keep going through a SIGKILL
//!   and restart of the binary; every enqueue they were told succeeded is
//!   there exactly once (retries with the SDK's idempotency keys).
//! - `database_faults`: the binary on PostgreSQL when the database fails:
//!   its own cluster stopped mid-requests (503 `unavailable`, nothing
//!   half-applied, service resumes when it is back), an unreachable
//!   database and a newer schema at start (a clear error).
//! - `multi_server`: three binaries on one PostgreSQL database (a fresh
//!   one on the test cluster), producers and workers spread over them, the
//!   servers SIGKILLed and restarted at random: acknowledged enqueues and
//!   completions survive, no job is leased twice at once, every job drains,
//!   each schedule tick fires once, each owed callback is delivered.
//! - `soak`: (ignored; `scripts/soak.sh`) a thousand SIGKILL cycles of the
//!   binary under producers and workers, every acknowledgement checked.
//!
//! Sled only, on purpose: `kill9`, `callback_kill9`, `schedule_kill9`,
//! `sdk_kill9` and `soak` kill the binary on a data directory (the embedded
//! store's crash safety; on PostgreSQL the database keeps the data, and
//! `multi_server` and `database_faults` kill and stop what can fail there);
//! `binary` tests flags and the data directory; `cli` and `dashboard` are
//! clients of the HTTP API, tested on both backends in queue-server/tests.

// Scenarios are plain functions run by the `both!` macros' tests; like
// test functions, they report a failure by panicking.
#![allow(clippy::unwrap_used)]

mod common;
mod raw_http;

mod admin;
mod binary;
mod blocking;
mod call;
mod callback_kill9;
mod cli;
mod dashboard;
mod database_faults;
mod http;
mod kill9;
mod listing;
mod multi_server;
mod schedule_kill9;
mod sdk_kill9;
mod soak;
mod typed;
mod worker;
