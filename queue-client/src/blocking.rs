//! The same API without `async`: for programs that do not run a tokio
//! runtime (or do not want to).
//!
//! [`Client`] owns a tokio runtime and runs the async client on it, so every
//! call here has the async one's behaviour, retries and errors. The caller
//! needs no runtime of its own, and may call from any number of threads at
//! once. The runtime has no threads of its own (tokio's current-thread
//! flavour): a call does its socket work on the calling thread, so a call
//! costs no hand-off between threads; while several threads call at once,
//! one of them drives the shared connections for all. A blocking
//! [`Worker`] runs its closures on the runtime's blocking pool and drives
//! heartbeats from the thread that called `run`.
//!
//! **Inside an async runtime** (a `#[tokio::main]` program, a task) these
//! calls would block a thread the runtime needs; they return
//! [`Error::BlockingInRuntime`] instead of blocking or panicking. Use the
//! async [`crate::Client`] there. The check sees any thread that has a tokio
//! runtime context, which includes `tokio::task::spawn_blocking` closures:
//! there, call `tokio::runtime::Handle::current().block_on(...)` on the
//! async client ([`Client::as_async`]) instead.
//!
//! ```no_run
//! use queue_client::blocking::{Client, Worker};
//! use queue_client::{Failure, Job};
//! use std::time::Duration;
//!
//! # fn main() -> queue_client::Result<()> {
//! let client = Client::connect("http://127.0.0.1:7878")?;
//! let add = client.queue::<(i64, i64)>("add");
//! add.enqueue(&(2, 3))?;
//!
//! let worker = Worker::new(client.clone(), "add").concurrency(4);
//! let stop = worker.shutdown_handle();
//! std::thread::spawn(move || {
//!     std::thread::sleep(Duration::from_secs(10));
//!     stop.shutdown();
//! });
//! let report = worker.run(|job: Job<(i64, i64)>| {
//!     let (a, b) = job.payload;
//!     a.checked_add(b).ok_or_else(|| Failure::permanent("overflow"))
//! })?;
//! println!("{} sums", report.completed);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use queue_proto::{JobState, QueueStats};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;

use crate::worker::{Spawn, drive, encode_result};
use crate::{
    ClientOptions, DeadPage, EnqueueOptions, Error, EventFilter, Failure, Job, JobId, LeaseOptions,
    Result, ShutdownHandle, WorkerReport,
};

/// Owns the runtime; shuts it down without waiting for handlers still
/// running on its blocking pool (a worker already gave their jobs back).
struct Engine {
    runtime: Option<Runtime>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Rt(Arc<Engine>);

impl Rt {
    fn new() -> Result<Rt> {
        // Current-thread: the caller's own thread drives the I/O of its
        // call. A multi-thread runtime measured 2x the client CPU per call
        // (every wake-up crossed threads) and 0.8x the throughput at C = 1.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name("queue-client")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Rt(Arc::new(Engine {
            runtime: Some(runtime),
        })))
    }

    /// Runs `future` to completion on the client's runtime, or refuses when
    /// called from inside a runtime.
    fn run<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::BlockingInRuntime);
        }
        match &self.0.runtime {
            Some(runtime) => runtime.block_on(future),
            None => Err(Error::BlockingInRuntime),
        }
    }
}

/// The blocking client: [`crate::Client`]'s API, each call returning when
/// done. Cheap to clone; share it between threads.
#[derive(Clone)]
pub struct Client {
    client: crate::Client,
    rt: Rt,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("client", &self.client)
            .finish()
    }
}

impl Client {
    /// A client for the server at `url`; see [`crate::Client::connect`].
    ///
    /// # Errors
    /// [`Error::InvalidUrl`]; [`Error::Runtime`] if the runtime cannot start.
    pub fn connect(url: &str) -> Result<Client> {
        Client::connect_with(url, ClientOptions::default())
    }

    /// A client for the server at `url` with `options`; see
    /// [`crate::Client::connect_with`].
    ///
    /// # Errors
    /// As [`Client::connect`], plus [`Error::InvalidRequest`] for a bad token.
    pub fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        let rt = Rt::new()?;
        let client = crate::Client::connect_with(url, options)?;
        Ok(Client { client, rt })
    }

    /// A client on a queue in this process; see [`crate::Client::embedded`].
    /// Needs the `embedded` feature.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let client = queue_client::blocking::Client::embedded(queue_core::Queue::open(dir.path())?)?;
    /// let job = client.queue::<String>("greetings").enqueue(&"hi".to_owned())?;
    /// assert_eq!(job.status()?, queue_client::JobState::Ready);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Runtime`] if the runtime cannot start.
    #[cfg(feature = "embedded")]
    pub fn embedded(queue: queue_core::Queue) -> Result<Client> {
        Ok(Client {
            client: crate::Client::embedded(queue),
            rt: Rt::new()?,
        })
    }

    /// The async client underneath, for code that has a runtime.
    pub fn as_async(&self) -> &crate::Client {
        &self.client
    }

    /// The queue `name` with payloads `T`; see [`crate::Client::queue`].
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: impl Into<String>) -> TypedQueue<T> {
        TypedQueue {
            queue: self.client.queue(name),
            rt: self.rt.clone(),
        }
    }

    /// A handle on an existing job.
    pub fn job<T: Serialize + DeserializeOwned>(&self, id: impl Into<JobId>) -> JobHandle<T> {
        JobHandle {
            handle: self.client.job(id),
            rt: self.rt.clone(),
        }
    }

    /// See [`crate::Client::health`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn health(&self) -> Result<()> {
        self.rt.run(self.client.health())
    }

    /// See [`crate::Client::stats`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.rt.run(self.client.stats(queue))
    }

    /// See [`crate::Client::queues`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        self.rt.run(self.client.queues())
    }

    /// See [`crate::Client::pause`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn pause(&self, queue: &str) -> Result<QueueStats> {
        self.rt.run(self.client.pause(queue))
    }

    /// See [`crate::Client::resume`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn resume(&self, queue: &str) -> Result<QueueStats> {
        self.rt.run(self.client.resume(queue))
    }

    /// See [`crate::Client::dead_letters`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn dead_letters(
        &self,
        queue: &str,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<DeadPage<serde_json::Value>> {
        self.rt.run(self.client.dead_letters(queue, after, limit))
    }

    /// See [`crate::Client::requeue_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        self.rt.run(self.client.requeue_dead(queue, ids))
    }

    /// See [`crate::Client::purge_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn purge_dead(&self, queue: &str) -> Result<u64> {
        self.rt.run(self.client.purge_dead(queue))
    }

    /// Subscribes to state changes; the iterator blocks for each event. See
    /// [`crate::Client::events`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn events(&self, filter: EventFilter) -> Result<Events> {
        let stream = self.rt.run(self.client.events(filter))?;
        Ok(Events {
            stream,
            rt: self.rt.clone(),
        })
    }
}

/// A blocking iterator of state changes, from [`Client::events`]. It ends
/// when the stream ends; called inside an async runtime it yields one
/// [`Error::BlockingInRuntime`] and ends.
pub struct Events {
    stream: crate::EventStream,
    rt: Rt,
}

impl Iterator for Events {
    type Item = Result<queue_proto::Event>;

    fn next(&mut self) -> Option<Self::Item> {
        let stream = &mut self.stream;
        match self.rt.run(async { Ok(stream.next().await) }) {
            Ok(item) => item,
            Err(e) => Some(Err(e)),
        }
    }
}

/// A typed queue; see [`crate::TypedQueue`].
pub struct TypedQueue<T> {
    queue: crate::TypedQueue<T>,
    rt: Rt,
}

impl<T> Clone for TypedQueue<T> {
    fn clone(&self) -> Self {
        TypedQueue {
            queue: self.queue.clone(),
            rt: self.rt.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> TypedQueue<T> {
    fn handle(&self, handle: crate::JobHandle<T>) -> JobHandle<T> {
        JobHandle {
            handle,
            rt: self.rt.clone(),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// See [`crate::TypedQueue::enqueue`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue(&self, payload: &T) -> Result<JobHandle<T>> {
        self.rt
            .run(self.queue.enqueue(payload))
            .map(|h| self.handle(h))
    }

    /// See [`crate::TypedQueue::enqueue_with`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue_with(&self, payload: &T, options: EnqueueOptions) -> Result<JobHandle<T>> {
        self.rt
            .run(self.queue.enqueue_with(payload, options))
            .map(|h| self.handle(h))
    }

    /// See [`crate::TypedQueue::enqueue_batch`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue_batch<'a, I>(&self, payloads: I) -> Result<Vec<JobHandle<T>>>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        let handles = self.rt.run(self.queue.enqueue_batch(payloads))?;
        Ok(handles.into_iter().map(|h| self.handle(h)).collect())
    }

    /// See [`crate::TypedQueue::enqueue_batch_with`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue_batch_with<'a, I>(&self, items: I) -> Result<Vec<JobHandle<T>>>
    where
        I: IntoIterator<Item = (&'a T, EnqueueOptions)>,
        T: 'a,
    {
        let handles = self.rt.run(self.queue.enqueue_batch_with(items))?;
        Ok(handles.into_iter().map(|h| self.handle(h)).collect())
    }

    /// The synchronous style; see [`crate::TypedQueue::call`].
    ///
    /// # Errors
    /// As there ([`Error::JobTimedOut`], [`Error::JobFailed`],
    /// [`Error::JobCancelled`], …), plus [`Error::BlockingInRuntime`].
    pub fn call<R: DeserializeOwned>(&self, payload: &T, timeout: Duration) -> Result<R> {
        self.rt.run(self.queue.call(payload, timeout))
    }

    /// See [`crate::TypedQueue::call_with`].
    ///
    /// # Errors
    /// As [`TypedQueue::call`].
    pub fn call_with<R: DeserializeOwned>(
        &self,
        payload: &T,
        options: EnqueueOptions,
        timeout: Duration,
    ) -> Result<R> {
        self.rt.run(self.queue.call_with(payload, options, timeout))
    }

    /// See [`crate::TypedQueue::try_call`]: a time-out hands back the job's
    /// handle instead of an error.
    ///
    /// # Errors
    /// As [`TypedQueue::call`], except [`Error::JobTimedOut`].
    pub fn try_call<R: DeserializeOwned>(
        &self,
        payload: &T,
        options: EnqueueOptions,
        timeout: Duration,
    ) -> Result<CallOutcome<R, T>> {
        let outcome = self
            .rt
            .run(self.queue.try_call(payload, options, timeout))?;
        Ok(match outcome {
            crate::CallOutcome::Done(result) => CallOutcome::Done(result),
            crate::CallOutcome::Pending(handle) => CallOutcome::Pending(self.handle(handle)),
        })
    }

    /// A handle on job `id`.
    pub fn job(&self, id: impl Into<JobId>) -> JobHandle<T> {
        self.handle(self.queue.job(id))
    }

    /// See [`crate::TypedQueue::lease`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn lease(&self, options: &LeaseOptions) -> Result<Vec<Leased<T>>> {
        let leased = self.rt.run(self.queue.lease(options))?;
        Ok(leased
            .into_iter()
            .map(|leased| Leased {
                leased,
                rt: self.rt.clone(),
            })
            .collect())
    }

    /// See [`crate::TypedQueue::stats`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn stats(&self) -> Result<QueueStats> {
        self.rt.run(self.queue.stats())
    }

    /// See [`crate::TypedQueue::pause`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn pause(&self) -> Result<QueueStats> {
        self.rt.run(self.queue.pause())
    }

    /// See [`crate::TypedQueue::resume`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn resume(&self) -> Result<QueueStats> {
        self.rt.run(self.queue.resume())
    }

    /// See [`crate::TypedQueue::dead_letters`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn dead_letters(&self, after: Option<&JobId>, limit: u32) -> Result<DeadPage<T>> {
        self.rt.run(self.queue.dead_letters(after, limit))
    }

    /// See [`crate::TypedQueue::requeue_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn requeue_dead(&self, ids: Option<&[JobId]>) -> Result<u64> {
        self.rt.run(self.queue.requeue_dead(ids))
    }

    /// See [`crate::TypedQueue::purge_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn purge_dead(&self) -> Result<u64> {
        self.rt.run(self.queue.purge_dead())
    }
}

/// What [`TypedQueue::try_call`] ends with; see [`crate::CallOutcome`].
#[derive(Debug)]
pub enum CallOutcome<R, T> {
    /// The job completed with this result.
    Done(R),
    /// The wait ended first; here is the job.
    Pending(JobHandle<T>),
}

/// A handle on one job; see [`crate::JobHandle`].
pub struct JobHandle<T> {
    handle: crate::JobHandle<T>,
    rt: Rt,
}

impl<T> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        JobHandle {
            handle: self.handle.clone(),
            rt: self.rt.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl<T: Serialize + DeserializeOwned> JobHandle<T> {
    /// The job's id.
    pub fn id(&self) -> &JobId {
        self.handle.id()
    }

    /// See [`crate::JobHandle::replayed`].
    pub fn replayed(&self) -> bool {
        self.handle.replayed()
    }

    /// See [`crate::JobHandle::status`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn status(&self) -> Result<JobState> {
        self.rt.run(self.handle.status())
    }

    /// See [`crate::JobHandle::get`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn get(&self) -> Result<Job<T>> {
        self.rt.run(self.handle.get())
    }

    /// See [`crate::JobHandle::wait`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn wait<R: DeserializeOwned>(&self, timeout: Duration) -> Result<R> {
        self.rt.run(self.handle.wait(timeout))
    }

    /// See [`crate::JobHandle::cancel`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn cancel(&self) -> Result<()> {
        self.rt.run(self.handle.cancel())
    }
}

/// A manually leased job; see [`crate::Leased`].
#[derive(Debug)]
pub struct Leased<T> {
    leased: crate::Leased<T>,
    rt: Rt,
}

impl std::fmt::Debug for Rt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl<T> Leased<T> {
    /// The job.
    pub fn job(&self) -> &Job<T> {
        self.leased.job()
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        self.leased.payload()
    }

    /// See [`crate::Leased::heartbeat`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn heartbeat(&mut self, length: Option<Duration>) -> Result<()> {
        self.rt.run(self.leased.heartbeat(length))
    }

    /// See [`crate::Leased::complete`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn complete<R: Serialize + ?Sized>(self, result: &R) -> Result<()> {
        self.rt.run(self.leased.complete(result))
    }

    /// See [`crate::Leased::fail`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn fail(self, failure: impl Into<Failure>) -> Result<JobState> {
        self.rt.run(self.leased.fail(failure))
    }

    /// See [`crate::Leased::release`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn release(self) -> Result<()> {
        self.rt.run(self.leased.release())
    }
}

/// The worker runtime for plain closures; see [`crate::Worker`] for what it
/// does. Each job runs on a thread of the client's blocking pool; heartbeats
/// go on meanwhile. A closure that panics counts as a failed attempt.
/// A closure still running after the shutdown timeout cannot be stopped: its
/// job is released and its result discarded.
#[derive(Debug)]
pub struct Worker {
    worker: crate::Worker,
    rt: Rt,
}

impl Worker {
    /// A worker on `queue`; see [`crate::Worker::new`] for the defaults.
    pub fn new(client: Client, queue: impl Into<String>) -> Self {
        Worker {
            worker: crate::Worker::new(client.client, queue),
            rt: client.rt,
        }
    }

    /// See [`crate::Worker::concurrency`].
    pub fn concurrency(self, n: usize) -> Self {
        self.map(|w| w.concurrency(n))
    }

    /// See [`crate::Worker::lease`].
    pub fn lease(self, length: Duration) -> Self {
        self.map(|w| w.lease(length))
    }

    /// See [`crate::Worker::heartbeat_interval`].
    pub fn heartbeat_interval(self, every: Duration) -> Self {
        self.map(|w| w.heartbeat_interval(every))
    }

    /// See [`crate::Worker::poll_wait`].
    pub fn poll_wait(self, wait: Duration) -> Self {
        self.map(|w| w.poll_wait(wait))
    }

    /// See [`crate::Worker::shutdown_timeout`].
    pub fn shutdown_timeout(self, limit: Duration) -> Self {
        self.map(|w| w.shutdown_timeout(limit))
    }

    /// See [`crate::Worker::name`].
    pub fn name(self, name: impl Into<String>) -> Self {
        self.map(|w| w.name(name))
    }

    /// A handle that stops this worker, from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.worker.shutdown_handle()
    }

    fn map(self, f: impl FnOnce(crate::Worker) -> crate::Worker) -> Self {
        Worker {
            worker: f(self.worker),
            rt: self.rt,
        }
    }

    /// Runs `handler` on every job, blocking the calling thread until the
    /// shutdown handle is used and the graceful shutdown is done.
    ///
    /// # Errors
    /// As [`crate::Worker::run`], plus [`Error::BlockingInRuntime`].
    pub fn run<T, R, E, F>(self, handler: F) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<Failure> + Send + 'static,
        F: Fn(Job<T>) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let spawn: Spawn<T> = Arc::new(move |job| {
            let handler = Arc::clone(&handler);
            tokio::task::spawn_blocking(move || match handler(job) {
                Ok(result) => encode_result(&result),
                Err(e) => Err(e.into()),
            })
        });
        let (config, shutdown) = self.worker.into_parts();
        self.rt.run(drive(config, spawn, shutdown))
    }
}
