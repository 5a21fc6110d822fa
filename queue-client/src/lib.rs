//! The typed client SDK of the durable job queue: enqueue, wait, work and
//! administer, over HTTP or in-process, async or blocking.
//!
//! - [`Client`]: the async client (tokio). [`Client::connect`] talks to a
//!   `queue-server` over HTTP; `Client::embedded` (cargo feature
//!   `embedded`) runs on a `queue_core::Queue` in this process with the same
//!   API, jobs and errors, so moving to the server changes one line.
//! - [`TypedQueue<T>`] from [`Client::queue`]: enqueue `T`s (one, with
//!   [`EnqueueOptions`], or a batch) and get [`JobHandle`]s; the synchronous
//!   style [`TypedQueue::call`] (or [`TypedQueue::try_call`], which hands
//!   back the job when the wait ends first); manual leasing with [`Leased`] jobs.
//! - [`JobHandle`]: a job's id, status, typed result ([`JobHandle::wait`])
//!   and cancellation.
//! - [`Worker`]: runs a handler on a queue's jobs with concurrency,
//!   heartbeats, retries ([`Failure`]) and graceful shutdown
//!   ([`ShutdownHandle`]), reporting a [`WorkerReport`].
//! - Admin calls on [`Client`]: stats, queues, pause/resume, dead letters
//!   ([`DeadPage`]), and an [`EventStream`] of state changes.
//! - [`blocking`]: all of the above without `async`, for programs without a
//!   runtime.
//! - [`Error`]: one error type; its variants map the server's error codes
//!   and a job's outcomes.
//!
//! Every enqueue carries an idempotency key (generated when the caller gives
//! none), so the SDK retries an enqueue after a transient failure without
//! ever creating a second job ([`RetryPolicy`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use queue_client::{Client, Failure, Job, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Resize { image: String, width: u32 }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! // Client::connect("http://127.0.0.1:7878")? for a server.
//! let client = Client::embedded(queue_core::Queue::open(dir.path())?);
//!
//! let worker = Worker::new(client.clone(), "resize").concurrency(4);
//! let stop = worker.shutdown_handle();
//! let running = tokio::spawn(worker.run(|job: Job<Resize>| async move {
//!     if job.payload.width == 0 {
//!         return Err(Failure::permanent("width must be positive"));
//!     }
//!     Ok(format!("{}@{}w", job.payload.image, job.payload.width))
//! }));
//!
//! let resize = client.queue::<Resize>("resize");
//! let url: String = resize
//!     .call(&Resize { image: "cat.png".into(), width: 64 }, Duration::from_secs(10))
//!     .await?;
//! assert_eq!(url, "cat.png@64w");
//!
//! stop.shutdown();
//! let report = running.await??;
//! assert_eq!(report.completed, 1);
//! # Ok(()) }
//! ```

// Each module uses only modules listed below it, so there is no cycle:
//
// - `blocking`: the blocking API, wrapping everything below.
// - `worker`: the worker runtime.
// - `queue`: typed queues, job handles, leased jobs, and `Client::queue` and
//   `Client::job`, which make them.
// - `lease`: the calls fenced by a lease (heartbeat, complete, fail,
//   release), shared by `queue`, `worker` and `blocking`.
// - `client`: the handle (transport, retries), admin calls, event streams.
// - `transport`: HTTP or embedded, wire types in and out.
// - `job`: jobs, dead-letter pages, event filters.
// - `error`: the error type (its variants name job ids).
// - `failure`, `options`, `id`: plain values that use nothing here.
mod client;
mod error;
mod failure;
mod id;
mod job;
mod lease;
mod options;
mod queue;
mod transport;
mod worker;

pub mod blocking;

pub use client::{Client, EventStream};
pub use error::{BoxError, Error, Result};
pub use failure::Failure;
pub use id::JobId;
pub use job::{DeadPage, EventFilter, Job};
pub use options::{ClientOptions, EnqueueOptions, RetryPolicy};
pub use queue::{CallOutcome, JobHandle, LeaseOptions, Leased, TypedQueue};
pub use queue_proto::{ErrorCode, Event, JobState, QueueStats};
pub use worker::{ShutdownHandle, Worker, WorkerReport};
