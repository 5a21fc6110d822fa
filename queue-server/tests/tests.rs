//! Integration tests of queue-server, one binary. Modules:
//!
//! - `binary`: the binary's flags, `--help`, exit codes.
//! - `common`: a real server on 127.0.0.1:0 and a small keep-alive client.
//! - `api`: every endpoint, default and error code, auth, request ids,
//!   metrics, restarts.
//! - `events`: Server-Sent Events: delivery, filters, keep-alives, and
//!   graceful shutdown ending streams and long-polls.
//! - `concurrency`: many workers over HTTP; every job completed exactly
//!   once, never leased twice at once.
//! - `kill9`: the built binary SIGKILLed while clients enqueue and
//!   complete; after a restart every acknowledged write is there.
//! - `openapi`: docs/openapi.yaml covers every route of the router.
//! - `sdk_kill9`: producers on the client SDK keep going through a SIGKILL
//!   and restart of the binary; every enqueue they were told succeeded is
//!   there exactly once (retries with the SDK's idempotency keys).

mod api;
mod binary;
mod common;
mod concurrency;
mod events;
mod kill9;
mod openapi;
mod sdk_kill9;
