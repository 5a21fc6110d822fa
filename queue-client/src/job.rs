//! Jobs as the SDK hands them out (typed payloads), dead-letter pages and
//! event filters.

use queue_proto::{JobState, RawValue};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{Error, JobId, Result};

/// A job with its payload decoded as `T`: the job object of the contract.
///
/// Times are unix epoch milliseconds, as on the wire.
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
    result: Option<Box<RawValue>>,
    lease_watch: Option<watch::Receiver<bool>>,
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

    /// Inside a [`Worker`](crate::Worker) handler: whether the worker has
    /// learnt (from a heartbeat) that the lease is gone because the job was
    /// cancelled or its lease expired. The handler may stop early; its
    /// result will not be recorded either way. Always `false` for a job
    /// not run by a worker.
    pub fn is_lease_lost(&self) -> bool {
        self.lease_watch.as_ref().is_some_and(|w| *w.borrow())
    }

    /// Inside an async [`Worker`](crate::Worker) handler: resolves when the
    /// lease is known to be lost (see [`Job::is_lease_lost`]), for use in
    /// `tokio::select!`. Never resolves for a job not run by a worker, or
    /// once the worker is done with the job.
    pub async fn lease_lost(&self) {
        match self.lease_watch.clone() {
            Some(mut watch) => {
                if watch.wait_for(|lost| *lost).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    pub(crate) fn with_lease_watch(mut self, watch: watch::Receiver<bool>) -> Self {
        self.lease_watch = Some(watch);
        self
    }
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
            created_at: job.created_at,
            updated_at: job.updated_at,
            run_at: job.run_at,
            lease_expires_at: job.lease_expires_at,
            idempotency_key: job.idempotency_key,
            last_error: job.last_error,
            result: job.result,
            lease_watch: None,
        }
    }
}

/// One page of a queue's dead letters, oldest first.
#[derive(Debug, Clone)]
pub struct DeadPage<T> {
    /// The dead jobs of this page.
    pub jobs: Vec<Job<T>>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next: Option<JobId>,
}

/// Which state changes an [`EventStream`](crate::EventStream) delivers.
///
/// ```
/// let filter = queue_client::EventFilter::new().queue("emails");
/// assert_eq!(filter.queue.as_deref(), Some("emails"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this queue's events.
    pub queue: Option<String>,
    /// Only this job's events.
    pub job: Option<JobId>,
}

impl EventFilter {
    /// Every event.
    pub fn new() -> Self {
        EventFilter::default()
    }

    /// Only the events of `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only the events of job `id`.
    pub fn job(mut self, id: impl Into<JobId>) -> Self {
        self.job = Some(id.into());
        self
    }
}
