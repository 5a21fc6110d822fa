//! Integration tests of queue-core, one binary. Modules:
//!
//! - `common`: helpers (manual clock, openers, payloads, consistency check).
//! - `operations`: every operation with several jobs in flight, on a manual clock.
//! - `model`: random operation sequences checked against an in-memory model,
//!   with reopens of the database between steps.
//! - `crash`: a child process killed with SIGKILL at random moments; the parent
//!   reopens and checks acknowledged work, invariants and draining.
//! - `listing`: a queue's jobs by state and the jobs of a correlation id,
//!   paged, complete and stable while jobs change state between pages.
//! - `history`: per-minute history of a known workload checked field by
//!   field, larger steps, reopen, retention, history off, query bounds.
//! - `limits`: queue limits stored and durable, held under concurrent
//!   leasers, FIFO per group, lease order with groups against a model.
//! - `schedules`: schedules fired through the engine on a manual clock,
//!   catch-up after downtime under each policy.
//! - `journal`: the write-ahead file of durable batches cut and replayed
//!   across SIGKILLs, some rounds in the periodic durability.
//! - `upgrade`: data directories written by earlier releases open, are
//!   upgraded, serve, list their jobs and drain.

mod common;
mod crash;
mod history;
mod journal;
mod limits;
mod listing;
mod model;
mod operations;
mod schedules;
mod upgrade;
