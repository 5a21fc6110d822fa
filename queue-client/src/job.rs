//! Jobs as the SDK hands them out (typed payloads), dead-letter pages,
//! event filters and the items of an event stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use queue_proto::limits::MAX_PROGRESS_LEN;
use queue_proto::{CallbackInfo, Event, EventType, Gap, JobState, RawValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::{Error, JobId, Result};

/// A job with its payload decoded as `T`: the job object of the contract.
///
/// Times are unix epoch milliseconds, as on the wire. With a payload that
/// serializes, a job serializes as the contract's job object (every field,
/// `null` or `{}` when unset), e.g. to log it or hand it on as JSON.
#[derive(Debug, Clone)]
pub struct Job<T> {
    /// The job's id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: String,
    /// Its state when this copy was read.
    pub state: JobState,
    /// The payload.
    pub payload: T,
    /// Higher leases first.
    pub priority: i32,
    /// Leases handed out so far, this one included for a job given to a
    /// worker (a release gives its attempt back).
    pub attempts: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Base of the exponential retry back-off, in ms.
    pub backoff_ms: u64,
    /// Unix ms of the enqueue.
    pub created_at: u64,
    /// Unix ms of the last change.
    pub updated_at: u64,
    /// Unix ms from which the job may run.
    pub run_at: u64,
    /// Unix ms at which the current lease ends, when `leased`.
    pub lease_expires_at: Option<u64>,
    /// The idempotency key it was enqueued with (the SDK generates one when
    /// the caller gives none).
    pub idempotency_key: Option<String>,
    /// The latest failure text.
    pub last_error: Option<String>,
    /// Ties the job to the request that caused it: the enqueue's
    /// [`EnqueueOptions::correlation_id`](crate::EnqueueOptions::correlation_id),
    /// else that request's `X-Request-Id`. A [`Worker`](crate::Worker)
    /// sends it as `X-Request-Id` on its calls about the job and records it
    /// on the handler's `tracing` span.
    pub correlation_id: Option<String>,
    /// String metadata given at enqueue
    /// ([`EnqueueOptions::header`](crate::EnqueueOptions::header)), a W3C
    /// `traceparent` among them when the producer had one.
    pub headers: BTreeMap<String, String>,
    /// Where the job's outcome is POSTed when it finishes (see
    /// [`webhooks`](crate::webhooks)).
    pub callback_url: Option<String>,
    /// How that delivery is going, once the job has finished.
    pub callback: Option<CallbackInfo>,
    /// The job's group ([`EnqueueOptions::group`](crate::EnqueueOptions::group)).
    pub group: Option<String>,
    /// The longest one attempt may run, in ms.
    pub timeout_ms: Option<u64>,
    /// Unix ms after which the job, if not yet leased, is dead.
    pub expires_at: Option<u64>,
    /// Unix ms at which the current or latest attempt was leased.
    pub started_at: Option<u64>,
    /// Unix ms at which the job reached `completed`, `dead` or `cancelled`.
    pub finished_at: Option<u64>,
    /// The schedule that enqueued the job.
    pub schedule: Option<String>,
    result: Option<Box<RawValue>>,
    progress: Option<Box<RawValue>>,
    worker: Option<WorkerLink>,
}

/// What ties a job to the worker running it: the lease-lost flag the
/// worker raises, and the slot where the handler leaves progress for the
/// worker to send.
#[derive(Debug, Clone)]
pub(crate) struct WorkerLink {
    pub(crate) lease_lost: watch::Receiver<bool>,
    pub(crate) progress: Arc<ProgressSlot>,
}

/// The latest progress a handler reported and not yet sent: reports made
/// faster than they can be sent replace each other, so only the latest
/// goes out.
#[derive(Debug, Default)]
pub(crate) struct ProgressSlot {
    latest: Mutex<Option<Box<RawValue>>>,
    /// Woken on every report (a report made while nobody waits is kept as
    /// a permit, so none is missed).
    pub(crate) reported: Notify,
}

impl ProgressSlot {
    fn put(&self, progress: Box<RawValue>) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(progress);
        self.reported.notify_one();
    }

    /// The progress to send, if a report is waiting.
    pub(crate) fn take(&self) -> Option<Box<RawValue>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<T> Job<T> {
    /// The worker's result decoded as `R`, when the job is `completed` with
    /// one; `Ok(None)` otherwise.
    ///
    /// # Errors
    /// [`Error::Decode`] when the stored result is not an `R`.
    pub fn result<R: DeserializeOwned>(&self) -> Result<Option<R>> {
        match &self.result {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| Error::decode(format!("result of job {}", self.id), e)),
        }
    }

    /// The result as raw JSON text, when there is one.
    pub fn result_json(&self) -> Option<&str> {
        self.result.as_deref().map(RawValue::get)
    }

    /// The latest progress a worker reported (kept after the job finished),
    /// decoded as `P`; `Ok(None)` when none was reported.
    ///
    /// # Errors
    /// [`Error::Decode`] when the stored progress is not a `P`.
    pub fn last_progress<P: DeserializeOwned>(&self) -> Result<Option<P>> {
        match &self.progress {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| Error::decode(format!("progress of job {}", self.id), e)),
        }
    }

    /// The latest progress as raw JSON text, when there is one.
    pub fn last_progress_json(&self) -> Option<&str> {
        self.progress.as_deref().map(RawValue::get)
    }

    /// Inside a [`Worker`](crate::Worker) handler (async or blocking):
    /// reports the job's progress, any JSON of at most 64 KiB. The worker
    /// sends it at once as a heartbeat with `progress` (which also extends
    /// the lease): the server stores it on the job and emits a `progress`
    /// event, which [`EventStream`](crate::EventStream)s and
    /// [`JobHandle::events`](crate::JobHandle::events) deliver.
    ///
    /// It returns without waiting for the server. Reports made faster than
    /// they can be sent replace each other: only the latest is sent. A
    /// report made just before the handler returns is sent before the job
    /// is completed or failed, so its event comes first. If the lease is
    /// lost meanwhile, the report is dropped (see [`Job::is_lease_lost`]).
    /// For a job leased by hand, use [`Leased::progress`](crate::Leased::progress).
    ///
    /// ```no_run
    /// use queue_client::{Client, Failure, Job, Worker};
    ///
    /// # async fn run(client: Client) -> queue_client::Result<()> {
    /// Worker::new(client, "imports")
    ///     .run(|job: Job<Vec<String>>| async move {
    ///         let total = job.payload.len();
    ///         for (done, line) in job.payload.iter().enumerate() {
    ///             // … import `line` …
    ///             # let _ = line;
    ///             job.progress(&serde_json::json!({"done": done + 1, "of": total}))?;
    ///         }
    ///         Ok::<_, Failure>(total)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Encode`] when `value` does not serialize;
    /// [`Error::PayloadTooLarge`] over 64 KiB; [`Error::InvalidRequest`]
    /// for a job that no worker is running.
    pub fn progress<P: Serialize + ?Sized>(&self, value: &P) -> Result<()> {
        let Some(worker) = &self.worker else {
            return Err(Error::invalid(format!(
                "job {} is not run by a worker: report progress with Leased::progress",
                self.id
            )));
        };
        worker.progress.put(encode_progress(value)?);
        Ok(())
    }

    /// Inside a [`Worker`](crate::Worker) handler: whether the worker has
    /// learnt (from a heartbeat) that the lease is gone because the job was
    /// cancelled or its lease expired. The handler may stop early; its
    /// result will not be recorded either way. Always `false` for a job
    /// not run by a worker.
    pub fn is_lease_lost(&self) -> bool {
        self.worker.as_ref().is_some_and(|w| *w.lease_lost.borrow())
    }

    /// Inside an async [`Worker`](crate::Worker) handler: resolves when the
    /// lease is known to be lost (see [`Job::is_lease_lost`]), for use in
    /// `tokio::select!`. Never resolves for a job not run by a worker, or
    /// once the worker is done with the job.
    pub async fn lease_lost(&self) {
        match self.worker.as_ref().map(|w| w.lease_lost.clone()) {
            Some(mut watch) => {
                if watch.wait_for(|lost| *lost).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    pub(crate) fn set_progress(&mut self, progress: Option<Box<RawValue>>) {
        self.progress = progress;
    }

    pub(crate) fn with_worker(mut self, link: WorkerLink) -> Self {
        self.worker = Some(link);
        self
    }
}

/// Progress as the JSON a heartbeat carries, within the contract's limit.
pub(crate) fn encode_progress<P: Serialize + ?Sized>(value: &P) -> Result<Box<RawValue>> {
    let raw = serde_json::value::to_raw_value(value).map_err(|source| Error::Encode {
        what: "progress",
        source,
    })?;
    if raw.get().len() > MAX_PROGRESS_LEN {
        return Err(Error::PayloadTooLarge {
            message: format!(
                "progress is {} bytes of JSON, over the limit of {MAX_PROGRESS_LEN}",
                raw.get().len()
            ),
        });
    }
    Ok(raw)
}

impl<T: DeserializeOwned> Job<T> {
    /// Decodes the payload of a wire job.
    pub(crate) fn from_wire(job: queue_proto::Job) -> Result<Job<T>> {
        let payload = serde_json::from_str(job.payload.get())
            .map_err(|e| Error::decode(format!("payload of job {}", job.id), e))?;
        Ok(Job::with_payload(job, payload))
    }
}

impl<T> Job<T> {
    /// A wire job with an already decoded payload.
    pub(crate) fn with_payload(job: queue_proto::Job, payload: T) -> Job<T> {
        Job {
            id: JobId::from(job.id),
            queue: job.queue,
            state: job.state,
            payload,
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            backoff_ms: job.backoff_ms,
            created_at: job.created_at,
            updated_at: job.updated_at,
            run_at: job.run_at,
            lease_expires_at: job.lease_expires_at,
            idempotency_key: job.idempotency_key,
            last_error: job.last_error,
            correlation_id: job.correlation_id,
            headers: job.headers,
            callback_url: job.callback_url,
            callback: job.callback,
            group: job.group,
            timeout_ms: job.timeout_ms,
            expires_at: job.expires_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            schedule: job.schedule,
            result: job.result,
            progress: job.progress,
            worker: None,
        }
    }
}

/// One page of a job listing, oldest first: a queue's jobs in a state
/// ([`Client::jobs`](crate::Client::jobs)), the jobs of a correlation id
/// ([`Client::jobs_by_correlation`](crate::Client::jobs_by_correlation)),
/// a queue's dead letters.
#[derive(Debug, Clone)]
pub struct JobPage<T> {
    /// The jobs of this page.
    pub jobs: Vec<Job<T>>,
    /// Pass as `after` to get the next page; `None` on the last one. A
    /// page may hold fewer jobs than asked for (even none) and still have
    /// a `next`: jobs that left the listing while it was read are left
    /// out.
    pub next: Option<JobId>,
}

/// One page of a queue's dead letters: a [`JobPage`].
pub type DeadPage<T> = JobPage<T>;

/// Which events an [`EventStream`](crate::EventStream) from
/// [`Client::events`](crate::Client::events) delivers, and from where it
/// starts. Each part narrows the stream; an empty filter delivers every
/// event from now on.
///
/// ```
/// use queue_client::{EventFilter, EventType, JobState};
///
/// let filter = EventFilter::new()
///     .queue("emails")
///     .queue("sms")
///     .event_type(EventType::State(JobState::Dead))
///     .event_type(EventType::Progress)
///     .after(1_234);
/// assert_eq!(filter.queues, ["emails", "sms"]);
/// assert_eq!(filter.after, Some(1_234));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these queues' events (any queue when empty).
    pub queues: Vec<String>,
    /// Only this job's events. The stream still goes on after the job
    /// finishes; [`JobHandle::events`](crate::JobHandle::events) is the
    /// stream that ends with the job.
    pub job: Option<JobId>,
    /// Only events of these types (any when empty): the states entered,
    /// and [`EventType::Progress`].
    pub types: Vec<EventType>,
    /// Start after this event id (an [`Event::event_id`], or
    /// [`EventStream::last_event_id`](crate::EventStream::last_event_id)
    /// of an earlier stream): the retained events after it come first,
    /// then live ones. `None`: from now on.
    pub after: Option<u64>,
}

impl EventFilter {
    /// Every event, from now on.
    pub fn new() -> Self {
        EventFilter::default()
    }

    /// Adds `queue` to the queues whose events are delivered.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Only the events of job `id`.
    pub fn job(mut self, id: impl Into<JobId>) -> Self {
        self.job = Some(id.into());
        self
    }

    /// Adds `kind` to the event types delivered.
    pub fn event_type(mut self, kind: EventType) -> Self {
        self.types.push(kind);
        self
    }

    /// Starts after event `event_id` instead of now.
    pub fn after(mut self, event_id: u64) -> Self {
        self.after = Some(event_id);
        self
    }
}

/// One item of an [`EventStream`](crate::EventStream): an event, or word
/// that the events in a stretch of ids are no longer retained.
///
/// A [`Gap`] is not an error: the stream goes on with the oldest retained
/// event. It means that the subscriber was away (or behind) longer than
/// the server keeps events, so whoever relies on seeing every change
/// should re-read the state it cares about (e.g. with
/// [`JobHandle::status`](crate::JobHandle::status)).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A state change, or a progress report ([`Event::kind`]).
    Event(Event),
    /// The events after `gap.after` and before `gap.oldest` were pruned
    /// before this stream could read them.
    Gap(Gap),
}

impl StreamItem {
    /// The event, when this item is one.
    pub fn event(&self) -> Option<&Event> {
        match self {
            StreamItem::Event(event) => Some(event),
            StreamItem::Gap(_) => None,
        }
    }

    /// The event, when this item is one.
    pub fn into_event(self) -> Option<Event> {
        match self {
            StreamItem::Event(event) => Some(event),
            StreamItem::Gap(_) => None,
        }
    }

    /// The id a stream resumes after once it has passed this item on: an
    /// event's own id, or the last id a gap covers (as the server's SSE
    /// `id:` line says).
    pub fn last_event_id(&self) -> u64 {
        match self {
            StreamItem::Event(event) => event.event_id,
            StreamItem::Gap(gap) => gap.oldest.saturating_sub(1),
        }
    }

    /// Whether this is a job's terminal state change, after which the job
    /// has no more events.
    pub(crate) fn is_terminal(&self) -> bool {
        match self {
            StreamItem::Event(event) => {
                event.kind() == EventType::State(event.state) && event.state.is_terminal()
            }
            StreamItem::Gap(_) => false,
        }
    }
}

/// The contract's job object, field for field, in its order.
impl<T: Serialize> Serialize for Job<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut job = serializer.serialize_struct("Job", 26)?;
        job.serialize_field("id", self.id.as_str())?;
        job.serialize_field("queue", &self.queue)?;
        job.serialize_field("state", &self.state)?;
        job.serialize_field("payload", &self.payload)?;
        job.serialize_field("priority", &self.priority)?;
        job.serialize_field("attempts", &self.attempts)?;
        job.serialize_field("max_attempts", &self.max_attempts)?;
        job.serialize_field("backoff_ms", &self.backoff_ms)?;
        job.serialize_field("created_at", &self.created_at)?;
        job.serialize_field("updated_at", &self.updated_at)?;
        job.serialize_field("run_at", &self.run_at)?;
        job.serialize_field("lease_expires_at", &self.lease_expires_at)?;
        job.serialize_field("idempotency_key", &self.idempotency_key)?;
        job.serialize_field("result", &self.result)?;
        job.serialize_field("last_error", &self.last_error)?;
        job.serialize_field("correlation_id", &self.correlation_id)?;
        job.serialize_field("headers", &self.headers)?;
        job.serialize_field("group", &self.group)?;
        job.serialize_field("timeout_ms", &self.timeout_ms)?;
        job.serialize_field("expires_at", &self.expires_at)?;
        job.serialize_field("started_at", &self.started_at)?;
        job.serialize_field("finished_at", &self.finished_at)?;
        job.serialize_field("progress", &self.progress)?;
        job.serialize_field("schedule", &self.schedule)?;
        job.serialize_field("callback_url", &self.callback_url)?;
        job.serialize_field("callback", &self.callback)?;
        job.end()
    }
}
