//! Integration tests of queue-server, one binary, in-process: the server
//! alone, driven over HTTP. (The built binary, the client SDK against a real
//! server and the kill -9 runs are in the workspace's tests/ crate.) Modules:
//!
//! - `common`: a real server on 127.0.0.1:0 and a small keep-alive client.
//! - `api`: every endpoint, default and error code, auth, request ids,
//!   metrics, restarts.
//! - `events`: Server-Sent Events: delivery, filters, keep-alives, and
//!   graceful shutdown ending streams and long-polls.
//! - `concurrency`: many workers over HTTP; every job completed exactly
//!   once, never leased twice at once.
//! - `openapi`: docs/openapi.yaml covers every route of the router.

mod api;
mod common;
mod concurrency;
mod events;
mod openapi;
