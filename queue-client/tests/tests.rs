//! The SDK's integration tests: one binary, every scenario run against a
//! real server (started on 127.0.0.1:0 by the test) and against the
//! embedded transport, unless the scenario is about HTTP itself.
//!
//! - `common`: the two-transport harness, a lossy proxy, a silent server.
//! - `typed`: typed queues, enqueue options, batches, handles, waits, cancel.
//! - `call`: the synchronous style and its three outcomes.
//! - `worker`: the async worker: concurrency, heartbeats, failures and
//!   panics, dead letters, graceful shutdown, stale leases.
//! - `blocking`: the blocking client and worker, and the refusal to block
//!   inside a runtime.
//! - `admin`: stats, queues, pause/resume, dead letters, events.
//! - `http`: what only HTTP has: auth, bad URLs, unreachable and silent
//!   servers, and retry safety when a response is lost.

// Scenarios are plain functions run by the `both!` macros' tests; like
// test functions, they report a failure by panicking.
#![allow(clippy::unwrap_used)]

mod common;

mod admin;
mod blocking;
mod call;
mod http;
mod typed;
mod worker;
