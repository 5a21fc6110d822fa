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
//! - [`JobHandle`]: a job's id, status, typed result ([`JobHandle::wait`]),
//!   its events ([`JobHandle::events`]) and cancellation.
//! - [`Worker`]: runs a handler on a queue's jobs with concurrency,
//!   heartbeats, progress reports ([`Job::progress`]), retries
//!   ([`Failure`]) and graceful shutdown ([`ShutdownHandle`]), reporting a
//!   [`WorkerReport`].
//! - Admin calls on [`Client`]: stats, queues, pause/resume, job listings
//!   by state ([`Client::jobs`], [`TypedQueue::jobs`]) and by correlation
//!   id ([`Client::jobs_by_correlation`]), dead letters, each a page
//!   ([`JobPage`]; [`DeadPage`] is the same type), callback deliveries
//!   ([`Client::callbacks`], [`Client::retry_callback`]).
//! - Schedules: [`Client::schedule`] builds a periodic job
//!   ([`ScheduleBuilder`]: a cron expression in a time zone or a fixed
//!   period, a [`CatchUp`] policy) and stores it; [`Client::schedules`],
//!   [`Client::get_schedule`], pause, resume, delete and trigger.
//! - [`Client::events`]: an [`EventStream`] of [`StreamItem`]s (state
//!   changes, progress, gaps) chosen by an [`EventFilter`], which resumes
//!   by itself after a dropped connection.
//! - [`webhooks`]: checking the signature of a job's callback.
//! - [`blocking`]: all of the above without `async`, for programs without a
//!   runtime.
//! - [`Error`]: one error type; its variants map the server's error codes
//!   and a job's outcomes.
//!
//! The crate's `cli` feature builds `queuectl`, the admin command line,
//! on this API (`cargo install --path queue-client --features cli`; see
//! the README).
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
//!
//! # Handlers that cannot fail
//!
//! A handler returns a `Result`, and Rust cannot tell the error type from
//! `Ok(..)` alone. Name it once with `Ok::<_, Failure>(..)`, or use
//! [`Worker::run_infallible`] (and [`blocking::Worker::run_infallible`]),
//! whose handler returns the result itself:
//!
//! ```
//! use queue_client::{Client, Failure, Job, Worker};
//!
//! # #[tokio::main]
//! # async fn main() -> queue_client::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! // `?` turns the queue_core::Error of opening into a queue_client::Error.
//! let client = Client::embedded(queue_core::Queue::open(dir.path())?);
//! let doubled = client.queue::<u32>("double").enqueue(&21).await?;
//! let lengths = client.queue::<String>("length").enqueue(&"four".to_owned()).await?;
//!
//! // With `run`: say the error type once.
//! let double = Worker::new(client.clone(), "double");
//! let stop_double = double.shutdown_handle();
//! let double = tokio::spawn(double.run(|job: Job<u32>| async move {
//!     Ok::<_, Failure>(job.payload * 2)
//! }));
//! // With `run_infallible`: nothing to name.
//! let length = Worker::new(client.clone(), "length");
//! let stop_length = length.shutdown_handle();
//! let length = tokio::spawn(
//!     length.run_infallible(|job: Job<String>| async move { job.payload.len() }),
//! );
//!
//! let patience = std::time::Duration::from_secs(10);
//! assert_eq!(doubled.wait::<u32>(patience).await?, 42);
//! assert_eq!(lengths.wait::<usize>(patience).await?, 4);
//! stop_double.shutdown();
//! stop_length.shutdown();
//! assert_eq!(double.await.unwrap()?.completed, 1);
//! assert_eq!(length.await.unwrap()?.completed, 1);
//! # Ok(()) }
//! ```
//!
//! # Pushed results
//!
//! Instead of polling a job ([`JobHandle::wait`]), a caller can have its
//! outcome pushed, three ways:
//!
//! - **One job's events**: [`JobHandle::events`] streams the job's current
//!   state, then each change and progress report, and ends after its
//!   terminal event (with its result or last error in it).
//! - **Many jobs' events**: [`Client::events`] with an [`EventFilter`]
//!   (queues, a job, event types, a start id) streams every matching
//!   event as it is committed. Each event has a durable id
//!   ([`Event::event_id`]); the stream remembers the last one and, when
//!   its connection drops, reconnects after a back-off with
//!   `Last-Event-ID`, so nothing is seen twice or missed. Events the
//!   server no longer keeps are reported as a [`StreamItem::Gap`], a value
//!   and not an error: re-read the state that matters and go on.
//!   [`EventStream::last_event_id`] lets a later stream (another process,
//!   after a restart) start where this one stopped ([`EventFilter::after`]).
//! - **Callbacks**: a job enqueued with [`EnqueueOptions::callback_url`]
//!   is POSTed to that URL when it finishes, signed as Standard Webhooks
//!   says; the receiver checks it with [`webhooks::verify`].
//!
//! Each job also carries what ties it to its origin: a correlation id
//! ([`EnqueueOptions::correlation_id`], else the enqueue request's
//! `X-Request-Id`) and string headers ([`EnqueueOptions::header`], a W3C
//! `traceparent` among them). Both reach the worker's handler
//! ([`Job::correlation_id`], [`Job::headers`]), the correlation id is in
//! every event and callback of the job, and the worker sends it back as
//! `X-Request-Id` and records it on the handler's `tracing` span.
//!
//! ```
//! use std::time::Duration;
//! use queue_client::{Client, EnqueueOptions, Failure, Job, StreamItem, Worker};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let client = Client::embedded(queue_core::Queue::open(dir.path())?);
//! let job = client
//!     .queue::<u32>("reports")
//!     .enqueue_with(&21, EnqueueOptions::new().correlation_id("order-17"))
//!     .await?;
//! let mut events = job.events().await?;
//!
//! let worker = Worker::new(client.clone(), "reports").poll_wait(Duration::from_millis(100));
//! let stop = worker.shutdown_handle();
//! let running = tokio::spawn(worker.run(|job: Job<u32>| async move {
//!     assert_eq!(job.correlation_id.as_deref(), Some("order-17"));
//!     job.progress(&50)?;
//!     Ok::<_, Failure>(job.payload * 2)
//! }));
//!
//! let mut seen = Vec::new();
//! while let Some(item) = tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
//!     if let StreamItem::Event(event) = item? {
//!         seen.push(event.kind().as_str());
//!         if let Some(result) = event.result {
//!             assert_eq!(result.get(), "42");
//!         }
//!     }
//! }
//! // The job's state when the stream started, then what happened to it.
//! assert_eq!(seen, ["ready", "leased", "progress", "completed"]);
//! stop.shutdown();
//! running.await??;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// Each module uses only modules listed below it, so there is no cycle:
//
// - `blocking`: the blocking API, wrapping everything below.
// - `worker`: the worker runtime.
// - `queue`: typed queues, job handles, leased jobs, and `Client::queue` and
//   `Client::job`, which make them.
// - `lease`: the calls fenced by a lease (heartbeat, complete, fail,
//   release), shared by `queue`, `worker` and `blocking`.
// - `events`: event streams that reconnect and resume, and
//   `Client::events`.
// - `callbacks`: callback deliveries by state, and retrying one.
// - `client`: the handle (transport, retries), admin calls.
// - `transport`: HTTP (with its SSE parser) or embedded, wire types in and
//   out.
// - `job`: jobs, dead-letter pages, event filters, stream items.
// - `error`: the error type (its variants name job ids).
// - `failure`, `options`, `id`: plain values that use nothing here.
// - `webhooks`: re-exports of the wire crate's signature checks.
mod callbacks;
mod client;
mod error;
mod events;
mod failure;
mod id;
mod job;
mod lease;
mod limits;
mod options;
mod queue;
mod schedule;
mod settle;
mod transport;
mod worker;

pub mod blocking;
pub mod webhooks;

pub use client::Client;
pub use error::{BoxError, Error, Result};
pub use events::EventStream;
pub use failure::Failure;
pub use id::JobId;
pub use job::{DeadPage, EventFilter, Job, JobPage, StreamItem};
pub use limits::Limits;
pub use options::{ClientOptions, EnqueueOptions, RetryPolicy};
pub use queue::{CallOutcome, JobHandle, LeaseOptions, Leased, TypedQueue};
pub use queue_proto::{
    CallbackInfo, CallbackState, CatchUp, EnqueueRequest, ErrorCode, Event, EventType, Gap,
    History, HistoryPoint, HistoryQuery, JobState, QueueLimits, QueueStats, RateLimit,
};
pub use schedule::{Schedule, ScheduleBuilder};
pub use settle::{SettleOutcome, SettleRequest, Settled};
pub use worker::{ShutdownHandle, Worker, WorkerReport};
