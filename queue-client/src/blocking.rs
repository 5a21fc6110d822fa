//! The same API without `async`: for programs that do not run a tokio
//! runtime (or do not want to).
//!
//! Every call here runs the async client to completion, so it has the async
//! one's behaviour, retries and errors. The caller needs no runtime of its
//! own, and may call from any number of threads at once: each thread that
//! uses a [`Client`] gets, on first use, its own async client (with its own
//! keep-alive connections) on a runtime without threads of its own (tokio's
//! current-thread flavour). A call therefore does its socket work on the
//! calling thread, as a hand-written blocking HTTP client would, with no
//! hand-off between threads. Those per-thread resources go when the thread
//! ends, or at that thread's next call once every clone of the client is
//! dropped. A blocking [`Worker`] runs its closures on its runtime's
//! blocking pool and sends heartbeats from the thread that called `run`.
//!
//! **Inside an async runtime** (a `#[tokio::main]` program, a task) these
//! calls would block a thread the runtime needs; they return
//! [`Error::BlockingInRuntime`] instead of blocking or panicking. Use the
//! async [`crate::Client`] there. The check sees any thread that has a tokio
//! runtime context, which includes `tokio::task::spawn_blocking` closures:
//! there, call `tokio::runtime::Handle::current().block_on(...)` on the
//! async client ([`Client::to_async`]) instead.
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

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use queue_proto::{History, HistoryQuery, JobState, QueueStats};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;

use crate::job::encode_progress;
use crate::lease::heartbeat_lease;
use crate::worker::{Spawn, drive, encode_result};
use crate::{
    ClientOptions, DeadPage, EnqueueOptions, Error, EventFilter, EventStream, Failure, Job, JobId,
    JobPage, LeaseOptions, Result, ShutdownHandle, StreamItem, WorkerReport,
};

/// Owns a runtime; shuts it down without waiting for handlers still
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

/// A current-thread runtime: whichever thread waits on it drives it.
#[derive(Clone)]
struct Rt(Arc<Engine>);

impl std::fmt::Debug for Rt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Rt {
    fn new() -> Result<Rt> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name("queue-client")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Rt(Arc::new(Engine {
            runtime: Some(runtime),
        })))
    }

    /// Runs `future` to completion, or refuses when called from inside a
    /// runtime.
    fn block_on<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        refuse_inside_a_runtime()?;
        match &self.0.runtime {
            Some(runtime) => runtime.block_on(future),
            None => Err(Error::BlockingInRuntime),
        }
    }
}

fn refuse_inside_a_runtime() -> Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(Error::BlockingInRuntime),
        Err(_) => Ok(()),
    }
}

/// What every clone of one blocking client shares: how to make the async
/// client each thread gets.
struct Shared {
    id: u64,
    make: Box<dyn Fn() -> crate::Client + Send + Sync>,
}

/// One thread's runtime and async client for one blocking client.
struct Local {
    owner: Weak<Shared>,
    id: u64,
    rt: Rt,
    client: crate::Client,
}

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

impl Shared {
    fn new(make: impl Fn() -> crate::Client + Send + Sync + 'static) -> Arc<Shared> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            make: Box::new(make),
        })
    }

    /// This thread's runtime and async client, made on first use. Entries
    /// of clients that are gone are dropped on the way.
    fn local(self: &Arc<Shared>) -> Result<(Rt, crate::Client)> {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            local.retain(|entry| entry.owner.strong_count() > 0);
            if let Some(entry) = local.iter().find(|entry| entry.id == self.id) {
                return Ok((entry.rt.clone(), entry.client.clone()));
            }
            let entry = Local {
                owner: Arc::downgrade(self),
                id: self.id,
                rt: Rt::new()?,
                client: (self.make)(),
            };
            let found = (entry.rt.clone(), entry.client.clone());
            local.push(entry);
            Ok(found)
        })
    }

    /// Runs `call` with this thread's async client, to completion.
    fn run<T, F, Fut>(self: &Arc<Shared>, call: F) -> Result<T>
    where
        F: FnOnce(crate::Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        refuse_inside_a_runtime()?;
        let (rt, client) = self.local()?;
        rt.block_on(call(client))
    }
}

/// The blocking client: [`crate::Client`]'s API, each call returning when
/// done. Cheap to clone; share it between threads.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Client {
    /// A client for the server at `url`; see [`crate::Client::connect`].
    /// Nothing is opened until a thread makes its first call.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`].
    pub fn connect(url: &str) -> Result<Client> {
        Client::connect_with(url, ClientOptions::default())
    }

    /// A client for the server at `url` with `options`; see
    /// [`crate::Client::connect_with`].
    ///
    /// # Errors
    /// As [`Client::connect`], plus [`Error::InvalidRequest`] for a bad token.
    pub fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        // Checked once here; each thread gets a copy with its own pool.
        let template = crate::Client::connect_with(url, options)?;
        Ok(Client {
            shared: Shared::new(move || template.fresh()),
        })
    }

    /// A client on a queue in this process; see [`crate::Client::embedded`].
    /// Needs the `embedded` feature.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let client = queue_client::blocking::Client::embedded(queue_core::Queue::open(dir.path())?);
    /// let job = client.queue::<String>("greetings").enqueue(&"hi".to_owned())?;
    /// assert_eq!(job.status()?, queue_client::JobState::Ready);
    /// # Ok(()) }
    /// ```
    ///
    /// It cannot fail, like [`crate::Client::embedded`]: both return the
    /// client itself. (It used to return `Result<Client>`, though it never
    /// failed: drop the `?` or `.unwrap()` after it.)
    #[cfg(feature = "embedded")]
    #[cfg_attr(docsrs, doc(cfg(feature = "embedded")))]
    pub fn embedded(queue: queue_core::Queue) -> Client {
        Client {
            shared: Shared::new(move || crate::Client::embedded(queue.clone())),
        }
    }

    /// A new async client to the same server (or embedded queue), with
    /// connections of its own, for code that has a runtime.
    pub fn to_async(&self) -> crate::Client {
        (self.shared.make)()
    }

    /// The queue `name` with payloads `T`; see [`crate::Client::queue`].
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: impl Into<String>) -> TypedQueue<T> {
        TypedQueue {
            shared: Arc::clone(&self.shared),
            name: name.into(),
            _payload: crate::queue::Marker::default(),
        }
    }

    /// A handle on an existing job.
    pub fn job<T: Serialize + DeserializeOwned>(&self, id: impl Into<JobId>) -> JobHandle<T> {
        JobHandle::new(Arc::clone(&self.shared), id.into(), false)
    }

    /// See [`crate::Client::health`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn health(&self) -> Result<()> {
        self.shared.run(|c| async move { c.health().await })
    }

    /// See [`crate::Client::stats`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.shared.run(|c| async move { c.stats(queue).await })
    }

    /// See [`crate::Client::history`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn history(&self, queue: &str, query: &HistoryQuery) -> Result<History> {
        self.shared
            .run(|c| async move { c.history(queue, query).await })
    }

    /// See [`crate::Client::queues`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn queues(&self) -> Result<Vec<QueueStats>> {
        self.shared.run(|c| async move { c.queues().await })
    }

    /// See [`crate::Client::pause`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn pause(&self, queue: &str) -> Result<QueueStats> {
        self.shared.run(|c| async move { c.pause(queue).await })
    }

    /// See [`crate::Client::set_limits`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn set_limits(&self, queue: &str, limits: &crate::Limits) -> Result<QueueStats> {
        self.shared
            .run(|c| async move { c.set_limits(queue, limits).await })
    }

    /// See [`crate::Client::resume`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn resume(&self, queue: &str) -> Result<QueueStats> {
        self.shared.run(|c| async move { c.resume(queue).await })
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
        self.shared
            .run(|c| async move { c.dead_letters(queue, after, limit).await })
    }

    /// See [`crate::Client::jobs`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn jobs(
        &self,
        queue: &str,
        state: JobState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        self.shared
            .run(|c| async move { c.jobs(queue, state, after, limit).await })
    }

    /// See [`crate::Client::jobs_by_correlation`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        self.shared
            .run(|c| async move { c.jobs_by_correlation(correlation_id, after, limit).await })
    }

    /// See [`crate::Client::requeue_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn requeue_dead(&self, queue: &str, ids: Option<&[JobId]>) -> Result<u64> {
        self.shared
            .run(|c| async move { c.requeue_dead(queue, ids).await })
    }

    /// See [`crate::Client::settle`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn settle(
        &self,
        queue: &str,
        request: crate::SettleRequest,
    ) -> Result<crate::Settled<Leased<serde_json::Value>>> {
        self.queue::<serde_json::Value>(queue).settle(request)
    }

    /// See [`crate::Client::purge_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn purge_dead(&self, queue: &str) -> Result<u64> {
        self.shared
            .run(|c| async move { c.purge_dead(queue).await })
    }

    /// See [`crate::Client::callbacks`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn callbacks(
        &self,
        state: crate::CallbackState,
        after: Option<&JobId>,
        limit: u32,
    ) -> Result<JobPage<serde_json::Value>> {
        self.shared
            .run(|c| async move { c.callbacks(state, after, limit).await })
    }

    /// See [`crate::Client::retry_callback`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn retry_callback(&self, id: &JobId) -> Result<Job<serde_json::Value>> {
        self.shared
            .run(|c| async move { c.retry_callback(id).await })
    }

    /// Starts a schedule; see [`crate::Client::schedule`].
    pub fn schedule(&self, name: impl Into<String>) -> ScheduleBuilder {
        ScheduleBuilder {
            shared: Arc::clone(&self.shared),
            spec: crate::schedule::ScheduleSpec {
                name: name.into(),
                ..Default::default()
            },
        }
    }

    /// See [`crate::Client::schedules`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn schedules(&self) -> Result<Vec<crate::Schedule>> {
        self.shared.run(|c| async move { c.schedules().await })
    }

    /// See [`crate::Client::get_schedule`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn get_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.shared
            .run(|c| async move { c.get_schedule(name).await })
    }

    /// See [`crate::Client::delete_schedule`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn delete_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.shared
            .run(|c| async move { c.delete_schedule(name).await })
    }

    /// See [`crate::Client::pause_schedule`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn pause_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.shared
            .run(|c| async move { c.pause_schedule(name).await })
    }

    /// See [`crate::Client::resume_schedule`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn resume_schedule(&self, name: &str) -> Result<crate::Schedule> {
        self.shared
            .run(|c| async move { c.resume_schedule(name).await })
    }

    /// See [`crate::Client::trigger_schedule`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn trigger_schedule<T>(&self, name: &str) -> Result<JobHandle<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let id = self
            .shared
            .run(|c| async move { c.trigger_schedule::<T>(name).await.map(|h| h.id().clone()) })?;
        Ok(JobHandle::new(Arc::clone(&self.shared), id, false))
    }

    /// Subscribes to the queue's events; see [`crate::Client::events`]: the
    /// same resuming stream (reconnects after drops, no duplicates, gaps as
    /// [`StreamItem::Gap`]), as a blocking iterator. The stream is read by
    /// the runtime of the thread that opened it, which the iterator drives
    /// from whichever thread uses it.
    ///
    /// ```no_run
    /// use queue_client::{EventFilter, StreamItem};
    ///
    /// # fn run(client: queue_client::blocking::Client) -> queue_client::Result<()> {
    /// for item in client.events(EventFilter::new().queue("emails"))? {
    ///     if let StreamItem::Event(event) = item? {
    ///         println!("{} is now {}", event.id, event.state);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn events(&self, filter: EventFilter) -> Result<Events> {
        self.shared
            .events(|client| async move { client.events(filter).await })
    }
}

impl Shared {
    /// Opens an event stream on this thread's runtime.
    fn events<F, Fut>(self: &Arc<Shared>, open: F) -> Result<Events>
    where
        F: FnOnce(crate::Client) -> Fut,
        Fut: Future<Output = Result<EventStream>>,
    {
        refuse_inside_a_runtime()?;
        let (rt, client) = self.local()?;
        let stream = rt.block_on(open(client))?;
        Ok(Events {
            stream,
            rt,
            refused: false,
        })
    }
}

/// A blocking iterator over an event stream, from [`Client::events`] or
/// [`JobHandle::events`]; see [`crate::EventStream`]. It ends when the
/// stream does. Called inside an async runtime it yields one
/// [`Error::BlockingInRuntime`] and ends.
pub struct Events {
    stream: EventStream,
    rt: Rt,
    refused: bool,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Events")
            .field("last_event_id", &self.stream.last_event_id())
            .finish()
    }
}

impl Events {
    /// [`Iterator::next`] that waits at most `limit`: an
    /// [`Error::Timeout`] item when nothing came in time (the stream goes
    /// on; call again).
    pub fn next_timeout(&mut self, limit: Duration) -> Option<Result<StreamItem>> {
        let stream = &mut self.stream;
        let waited = self.rt.block_on(async {
            tokio::time::timeout(limit, stream.next())
                .await
                .map_err(|_| Error::Timeout { after: limit })
        });
        self.settle(waited)
    }

    /// See [`crate::EventStream::last_event_id`].
    pub fn last_event_id(&self) -> Option<u64> {
        self.stream.last_event_id()
    }

    fn settle(&mut self, waited: Result<Option<Result<StreamItem>>>) -> Option<Result<StreamItem>> {
        match waited {
            Ok(item) => item,
            Err(Error::BlockingInRuntime) if self.refused => None,
            Err(e) => {
                self.refused = matches!(e, Error::BlockingInRuntime);
                Some(Err(e))
            }
        }
    }
}

impl Iterator for Events {
    type Item = Result<StreamItem>;

    fn next(&mut self) -> Option<Self::Item> {
        let stream = &mut self.stream;
        let waited = self.rt.block_on(async { Ok(stream.next().await) });
        self.settle(waited)
    }
}

/// A typed queue; see [`crate::TypedQueue`].
pub struct TypedQueue<T> {
    shared: Arc<Shared>,
    name: String,
    _payload: crate::queue::Marker<T>,
}

impl<T> Clone for TypedQueue<T> {
    fn clone(&self) -> Self {
        TypedQueue {
            shared: Arc::clone(&self.shared),
            name: self.name.clone(),
            _payload: crate::queue::Marker::default(),
        }
    }
}

impl<T> std::fmt::Debug for TypedQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::TypedQueue")
            .field("name", &self.name)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> TypedQueue<T> {
    /// Runs `call` on this thread's async queue.
    fn run<R, F, Fut>(&self, call: F) -> Result<R>
    where
        F: FnOnce(crate::TypedQueue<T>) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let name = self.name.clone();
        self.shared.run(|c| call(c.queue::<T>(name)))
    }

    fn handle(&self, handle: &crate::JobHandle<T>) -> JobHandle<T> {
        JobHandle::new(
            Arc::clone(&self.shared),
            handle.id().clone(),
            handle.replayed(),
        )
    }

    fn handles(&self, handles: &[crate::JobHandle<T>]) -> Vec<JobHandle<T>> {
        handles.iter().map(|h| self.handle(h)).collect()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// See [`crate::TypedQueue::enqueue`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue(&self, payload: &T) -> Result<JobHandle<T>> {
        let handle = self.run(|q| async move { q.enqueue(payload).await })?;
        Ok(self.handle(&handle))
    }

    /// See [`crate::TypedQueue::enqueue_with`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn enqueue_with(&self, payload: &T, options: EnqueueOptions) -> Result<JobHandle<T>> {
        let handle = self.run(|q| async move { q.enqueue_with(payload, options).await })?;
        Ok(self.handle(&handle))
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
        let handles = self.run(|q| async move { q.enqueue_batch(payloads).await })?;
        Ok(self.handles(&handles))
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
        let handles = self.run(|q| async move { q.enqueue_batch_with(items).await })?;
        Ok(self.handles(&handles))
    }

    /// The synchronous style; see [`crate::TypedQueue::call`].
    ///
    /// # Errors
    /// As there ([`Error::JobTimedOut`], [`Error::JobFailed`],
    /// [`Error::JobCancelled`], …), plus [`Error::BlockingInRuntime`].
    pub fn call<R: DeserializeOwned>(&self, payload: &T, timeout: Duration) -> Result<R> {
        self.run(|q| async move { q.call(payload, timeout).await })
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
        self.run(|q| async move { q.call_with(payload, options, timeout).await })
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
        let outcome = self.run(|q| async move { q.try_call(payload, options, timeout).await })?;
        Ok(match outcome {
            crate::CallOutcome::Done(result) => CallOutcome::Done(result),
            crate::CallOutcome::Pending(handle) => CallOutcome::Pending(self.handle(&handle)),
        })
    }

    /// A handle on job `id`.
    pub fn job(&self, id: impl Into<JobId>) -> JobHandle<T> {
        JobHandle::new(Arc::clone(&self.shared), id.into(), false)
    }

    /// See [`crate::TypedQueue::lease`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn lease(&self, options: &LeaseOptions) -> Result<Vec<Leased<T>>> {
        let leased = self.run(|q| async move { q.lease(options).await })?;
        Ok(leased
            .into_iter()
            .map(|leased| {
                let (job, lease_id) = leased.into_parts();
                Leased {
                    shared: Arc::clone(&self.shared),
                    job,
                    lease_id,
                }
            })
            .collect())
    }

    /// See [`crate::TypedQueue::settle`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn settle(&self, request: crate::SettleRequest) -> Result<crate::Settled<Leased<T>>> {
        let settled = self.run(|q| async move { q.settle(request).await })?;
        Ok(crate::Settled {
            results: settled.results,
            jobs: settled
                .jobs
                .into_iter()
                .map(|leased| {
                    let (job, lease_id) = leased.into_parts();
                    Leased {
                        shared: Arc::clone(&self.shared),
                        job,
                        lease_id,
                    }
                })
                .collect(),
        })
    }

    /// See [`crate::TypedQueue::stats`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn stats(&self) -> Result<QueueStats> {
        self.run(|q| async move { q.stats().await })
    }

    /// See [`crate::TypedQueue::pause`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn pause(&self) -> Result<QueueStats> {
        self.run(|q| async move { q.pause().await })
    }

    /// See [`crate::TypedQueue::set_limits`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn set_limits(&self, limits: &crate::Limits) -> Result<QueueStats> {
        self.run(|q| async move { q.set_limits(limits).await })
    }

    /// See [`crate::TypedQueue::resume`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn resume(&self) -> Result<QueueStats> {
        self.run(|q| async move { q.resume().await })
    }

    /// See [`crate::TypedQueue::dead_letters`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn dead_letters(&self, after: Option<&JobId>, limit: u32) -> Result<DeadPage<T>> {
        self.run(|q| async move { q.dead_letters(after, limit).await })
    }

    /// See [`crate::TypedQueue::jobs`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn jobs(&self, state: JobState, after: Option<&JobId>, limit: u32) -> Result<JobPage<T>> {
        self.run(|q| async move { q.jobs(state, after, limit).await })
    }

    /// See [`crate::TypedQueue::requeue_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn requeue_dead(&self, ids: Option<&[JobId]>) -> Result<u64> {
        self.run(|q| async move { q.requeue_dead(ids).await })
    }

    /// See [`crate::TypedQueue::purge_dead`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn purge_dead(&self) -> Result<u64> {
        self.run(|q| async move { q.purge_dead().await })
    }
}

/// Builds a schedule to store; see [`crate::ScheduleBuilder`].
#[derive(Clone)]
#[must_use = "a schedule is stored by .put()"]
pub struct ScheduleBuilder {
    shared: Arc<Shared>,
    spec: crate::schedule::ScheduleSpec,
}

impl std::fmt::Debug for ScheduleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::ScheduleBuilder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl ScheduleBuilder {
    crate::schedule::schedule_setters!();

    /// See [`crate::ScheduleBuilder::put`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn put(self) -> Result<crate::Schedule> {
        let spec = self.spec;
        self.shared
            .run(|c| async move { crate::schedule::put(&c, &spec).await })
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
    shared: Arc<Shared>,
    id: JobId,
    replayed: bool,
    _payload: crate::queue::Marker<T>,
}

impl<T> Clone for JobHandle<T> {
    fn clone(&self) -> Self {
        JobHandle {
            shared: Arc::clone(&self.shared),
            id: self.id.clone(),
            replayed: self.replayed,
            _payload: crate::queue::Marker::default(),
        }
    }
}

impl<T> std::fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::JobHandle")
            .field("id", &self.id)
            .field("replayed", &self.replayed)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> JobHandle<T> {
    fn new(shared: Arc<Shared>, id: JobId, replayed: bool) -> Self {
        JobHandle {
            shared,
            id,
            replayed,
            _payload: crate::queue::Marker::default(),
        }
    }

    /// Runs `call` on this thread's async handle of the job.
    fn run<R, F, Fut>(&self, call: F) -> Result<R>
    where
        F: FnOnce(crate::JobHandle<T>) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let id = self.id.clone();
        self.shared.run(|c| call(c.job::<T>(id)))
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// See [`crate::JobHandle::replayed`].
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// See [`crate::JobHandle::status`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn status(&self) -> Result<JobState> {
        self.run(|h| async move { h.status().await })
    }

    /// See [`crate::JobHandle::get`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn get(&self) -> Result<Job<T>> {
        self.run(|h| async move { h.get().await })
    }

    /// See [`crate::JobHandle::wait`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn wait<R: DeserializeOwned>(&self, timeout: Duration) -> Result<R> {
        self.run(|h| async move { h.wait(timeout).await })
    }

    /// See [`crate::JobHandle::cancel`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn cancel(&self) -> Result<()> {
        self.run(|h| async move { h.cancel().await })
    }

    /// The job's events until it finishes, as a blocking iterator; see
    /// [`crate::JobHandle::events`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn events(&self) -> Result<Events> {
        let id = self.id.clone();
        self.shared
            .events(|c| async move { c.job::<T>(id).events().await })
    }
}

/// A manually leased job; see [`crate::Leased`].
pub struct Leased<T> {
    shared: Arc<Shared>,
    job: Job<T>,
    lease_id: String,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Leased<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Leased")
            .field("job", &self.job)
            .field("lease_id", &self.lease_id)
            .finish()
    }
}

impl<T> Leased<T> {
    /// The job.
    pub fn job(&self) -> &Job<T> {
        &self.job
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.job.payload
    }

    /// The lease's fencing token.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// See [`crate::Leased::heartbeat`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn heartbeat(&mut self, length: Option<Duration>) -> Result<()> {
        let (job, lease_id) = (&mut self.job, &self.lease_id);
        self.shared
            .run(|c| async move { heartbeat_lease(&c, job, lease_id, length, None).await })
    }

    /// See [`crate::Leased::progress`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn progress<P: Serialize + ?Sized>(&mut self, value: &P) -> Result<()> {
        let progress = encode_progress(value)?;
        let (job, lease_id) = (&mut self.job, &self.lease_id);
        self.shared
            .run(|c| async move { heartbeat_lease(&c, job, lease_id, None, Some(progress)).await })
    }

    /// See [`crate::Leased::complete`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn complete<R: Serialize + ?Sized>(self, result: &R) -> Result<()> {
        let Leased {
            shared,
            job,
            lease_id,
        } = self;
        shared.run(|c| async move {
            crate::Leased::from_parts(c, job, lease_id)
                .complete(result)
                .await
        })
    }

    /// See [`crate::Leased::fail`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn fail(self, failure: impl Into<Failure>) -> Result<JobState> {
        let Leased {
            shared,
            job,
            lease_id,
        } = self;
        let failure = failure.into();
        shared.run(|c| async move {
            crate::Leased::from_parts(c, job, lease_id)
                .fail(failure)
                .await
        })
    }

    /// See [`crate::Leased::release`].
    ///
    /// # Errors
    /// As there, plus [`Error::BlockingInRuntime`].
    pub fn release(self) -> Result<()> {
        let Leased {
            shared,
            job,
            lease_id,
        } = self;
        shared.run(|c| async move { crate::Leased::from_parts(c, job, lease_id).release().await })
    }
}

/// The worker runtime for plain closures; see [`crate::Worker`] for what it
/// does. Each job runs on a thread of the runtime's blocking pool; heartbeats
/// go on meanwhile, sent by the thread that called [`Worker::run`]. A closure
/// that panics counts as a failed attempt. A closure still running after the
/// shutdown timeout cannot be stopped: its job is released and its result
/// discarded.
#[derive(Debug)]
pub struct Worker {
    worker: crate::Worker,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("id", &self.id).finish()
    }
}

impl Worker {
    /// A worker on `queue`; see [`crate::Worker::new`] for the defaults.
    pub fn new(client: Client, queue: impl Into<String>) -> Self {
        Worker {
            worker: crate::Worker::new(client.to_async(), queue),
            shared: client.shared,
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
            shared: self.shared,
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
        let spawn: Spawn<T> = Arc::new(move |job, span| {
            let handler = Arc::clone(&handler);
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                match handler(job) {
                    Ok(result) => encode_result(&result),
                    Err(e) => Err(e.into()),
                }
            })
        });
        let worker = self.worker;
        self.shared.run(|client| async move {
            let (config, shutdown) = worker.into_parts(client);
            drive(config, spawn, shutdown).await
        })
    }

    /// [`Worker::run`] with a handler that cannot fail: it returns the
    /// job's result itself, not a `Result`, so nothing needs naming (with
    /// [`run`](Worker::run), a handler that only ever returns `Ok(..)`
    /// must say its error type: `Ok::<_, Failure>(..)`). A panic still
    /// counts as a failed attempt.
    ///
    /// ```no_run
    /// # fn main() -> queue_client::Result<()> {
    /// use queue_client::Job;
    /// use queue_client::blocking::{Client, Worker};
    ///
    /// let client = Client::connect("http://127.0.0.1:7878")?;
    /// Worker::new(client, "word-count")
    ///     .run_infallible(|job: Job<String>| job.payload.split_whitespace().count())?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Worker::run`].
    pub fn run_infallible<T, R, F>(self, handler: F) -> Result<WorkerReport>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Job<T>) -> R + Send + Sync + 'static,
    {
        self.run(move |job| Ok::<R, Failure>(handler(job)))
    }
}
