//! The HTTP contract's behaviour, written once: [`Service`] takes the wire
//! types of `queue-proto` and answers with wire types or a
//! [`ServiceError`] carrying the contract's error code. The server
//! (`queue-server`) puts HTTP around it; the client SDK's embedded
//! transport calls it directly, so a program gets the same jobs, the same
//! errors and the same edge cases on either transport.
//!
//! What lives here and nowhere else: parsing job ids, lease ids and `after`
//! cursors; the bounds of `wait_ms` and `limit`; the idempotency key given
//! twice (header and body); enqueue-then-wait; the malformed-lease-id answer;
//! dead-letter paging; event filters; the mapping of engine errors to codes;
//! and ending long-polls and event feeds at shutdown.

use std::sync::Arc;
use std::time::Duration;

use queue_proto::limits::{MAX_BATCH, MAX_WAIT_MS};
use queue_proto::{
    BatchRequest, BatchResponse, CompleteRequest, DeadPage, DeletedResponse, EnqueueRequest,
    ErrorCode, FailRequest, HeartbeatRequest, LeaseRequest, LeaseResponse, QueueList, QueueStats,
    ReleaseRequest, RequeueRequest, RequeuedResponse, validate_queue_name,
};
use tokio::sync::watch;

use crate::{
    Error, Failure, Job, JobId, LeaseId, LeaseOptions, NewJob, Queue, RecvError, Subscription,
};

/// Dead letters per page when the caller gives no `limit`.
pub const DEFAULT_PAGE_LIMIT: u64 = 100;

/// A request refused, or failed, with the contract's code. 5xx messages
/// carry no internals (those are logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// The contract's code; it determines the HTTP status.
    pub code: ErrorCode,
    /// Text for the client.
    pub message: String,
}

impl ServiceError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }

    /// A 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::InvalidRequest, message)
    }

    /// A 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::new(ErrorCode::NotFound, message)
    }
}

/// The one mapping from engine errors to the contract's codes.
impl From<Error> for ServiceError {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument { .. } => ServiceError::invalid(error.to_string()),
            Error::TooLarge { .. } => {
                ServiceError::new(ErrorCode::PayloadTooLarge, error.to_string())
            }
            Error::NotFound { .. } => ServiceError::not_found(error.to_string()),
            Error::LeaseLost { .. } => ServiceError::new(ErrorCode::LeaseLost, error.to_string()),
            Error::Conflict { .. } => ServiceError::new(ErrorCode::Conflict, error.to_string()),
            Error::Closed => {
                ServiceError::new(ErrorCode::Unavailable, "the queue is shutting down")
            }
            Error::Storage(e) => {
                tracing::error!(error = %e, "storage failure");
                ServiceError::new(ErrorCode::Unavailable, "storage is unavailable")
            }
            Error::Corrupt(_) | Error::Internal(_) => {
                tracing::error!(%error, "internal error");
                ServiceError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

/// `Result` with [`ServiceError`].
pub type ServiceResult<T> = std::result::Result<T, ServiceError>;

/// A job id from the wire. A malformed id names no job: not found, as an
/// unknown one.
pub fn parse_job_id(raw: &str) -> ServiceResult<JobId> {
    raw.parse()
        .map_err(|_| ServiceError::not_found(format!("job {raw:?} not found")))
}

/// A `wait_ms` within the contract's bounds.
pub fn check_wait_ms(wait_ms: u64) -> ServiceResult<u64> {
    if wait_ms > MAX_WAIT_MS {
        return Err(ServiceError::invalid(format!(
            "wait_ms must be in 0..={MAX_WAIT_MS}, got {wait_ms}"
        )));
    }
    Ok(wait_ms)
}

fn check_queue(queue: &str) -> ServiceResult<()> {
    validate_queue_name(queue).map_err(|e| ServiceError::invalid(e.to_string()))
}

/// The answer to an enqueue.
#[derive(Debug)]
pub struct EnqueueReply {
    /// The job: new, replayed, or as it was when the wait ended.
    pub job: queue_proto::Job,
    /// The idempotency key matched a stored job: nothing was created.
    pub replayed: bool,
    /// The caller waited and the job is terminal.
    pub finished: bool,
}

impl EnqueueReply {
    /// The HTTP status: `202 Accepted` for a new job still running, `200`
    /// for a replay or a job that finished within the wait.
    pub fn status(&self) -> u16 {
        if self.replayed || self.finished {
            200
        } else {
            202
        }
    }
}

/// Which events an event feed delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this queue's.
    pub queue: Option<String>,
    /// Only this job's.
    pub job: Option<String>,
}

/// What an event feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A state change that matches the feed's filter.
    Event(queue_proto::Event),
    /// This many events were skipped (no longer retained).
    Skipped(u64),
}

/// A filtered stream of state changes; ends at shutdown or when the queue
/// closes.
pub struct EventFeed {
    subscription: Subscription,
    queue: Option<String>,
    job: Option<JobId>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFeed")
            .field("queue", &self.queue)
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl EventFeed {
    /// The next matching item; `None` once the feed has ended.
    pub async fn next(&mut self) -> Option<FeedItem> {
        loop {
            let received = tokio::select! {
                biased;
                () = stopped(&mut self.shutdown) => return None,
                received = self.subscription.recv() => received,
            };
            match received {
                Ok(event) => {
                    if self.queue.as_deref().is_some_and(|q| q != event.queue)
                        || self.job.is_some_and(|j| j != event.id)
                    {
                        continue;
                    }
                    return Some(FeedItem::Event(event.to_wire()));
                }
                Err(gap @ RecvError::Gap { .. }) => return Some(FeedItem::Skipped(gap.missed())),
                Err(RecvError::Closed) => return None,
                Err(RecvError::Failed(e)) => {
                    tracing::error!(error = %e, "event feed ended");
                    return None;
                }
            }
        }
    }
}

/// Resolves when shutdown begins. A service that was dropped can no longer
/// begin it: then the feed lives as long as the queue.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The contract's operations over a [`Queue`]. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("queue", &self.inner.queue)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The contract over `queue`.
    pub fn new(queue: Queue) -> Service {
        Service {
            inner: Arc::new(Inner {
                queue,
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// The queue served.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Ends long-polls (they answer with what they have) and event feeds.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether [`Service::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// `POST /v1/queues/{queue}/jobs`. `header_key` is the `Idempotency-Key`
    /// header; if the body also names a key, the two must agree. With
    /// `wait_ms`, the answer waits for the job to finish (the synchronous
    /// style).
    ///
    /// # Errors
    /// The contract's: `invalid_request`, `payload_too_large`, …
    pub async fn enqueue(
        &self,
        queue: &str,
        mut request: EnqueueRequest,
        header_key: Option<String>,
        wait_ms: u64,
    ) -> ServiceResult<EnqueueReply> {
        check_wait_ms(wait_ms)?;
        request.idempotency_key = match (header_key, request.idempotency_key.take()) {
            (Some(header), Some(body)) if header != body => {
                return Err(ServiceError::invalid(
                    "the Idempotency-Key header and the body's idempotency_key differ",
                ));
            }
            (header, body) => header.or(body),
        };
        let enqueued = self
            .inner
            .queue
            .enqueue(queue, NewJob::from(request))
            .await?;
        let mut job = enqueued.job;
        if wait_ms > 0 && !job.state.is_terminal() {
            job = self.wait_terminal(job.id, wait_ms).await?;
        }
        Ok(EnqueueReply {
            finished: wait_ms > 0 && job.state.is_terminal(),
            job: job.to_wire(None),
            replayed: enqueued.replayed,
        })
    }

    /// `POST /v1/queues/{queue}/jobs/batch`.
    ///
    /// # Errors
    /// The contract's; one bad item refuses the batch.
    pub async fn enqueue_batch(
        &self,
        queue: &str,
        request: BatchRequest,
    ) -> ServiceResult<BatchResponse> {
        let jobs = request.jobs.into_iter().map(NewJob::from).collect();
        let enqueued = self.inner.queue.enqueue_batch(queue, jobs).await?;
        Ok(BatchResponse {
            jobs: enqueued.iter().map(|e| e.job.to_wire(None)).collect(),
        })
    }

    /// `POST /v1/queues/{queue}/lease`, waiting up to `wait_ms` for a job
    /// (an empty answer at shutdown).
    ///
    /// # Errors
    /// The contract's.
    pub async fn lease(&self, queue: &str, request: LeaseRequest) -> ServiceResult<LeaseResponse> {
        let wait_ms = check_wait_ms(request.wait_ms.unwrap_or(0))?;
        let opts = LeaseOptions::from(request);
        let queue_handle = &self.inner.queue;
        let leased = if wait_ms == 0 {
            queue_handle.lease(queue, &opts).await?
        } else {
            let wait = queue_handle.lease_wait(queue, &opts, Duration::from_millis(wait_ms));
            tokio::select! {
                result = wait => result?,
                () = self.shutting_down() => Vec::new(),
            }
        };
        Ok(LeaseResponse {
            jobs: leased
                .iter()
                .map(|l| l.job.to_wire(Some(l.lease_id)))
                .collect(),
        })
    }

    /// A lease id from the wire. A malformed one cannot be the job's lease:
    /// `lease_lost`, or `not_found` when there is no such job either.
    async fn lease_id(&self, id: JobId, raw: &str) -> ServiceResult<LeaseId> {
        match raw.parse() {
            Ok(lease) => Ok(lease),
            Err(_) => match self.inner.queue.get(id).await? {
                Some(_) => Err(Error::LeaseLost { id }.into()),
                None => Err(Error::NotFound { id }.into()),
            },
        }
    }

    /// `POST /v1/jobs/{id}/heartbeat`.
    ///
    /// # Errors
    /// The contract's: `lease_lost`, `not_found`, …
    pub async fn heartbeat(
        &self,
        id: &str,
        request: HeartbeatRequest,
    ) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let job = self
            .inner
            .queue
            .heartbeat(id, lease, request.lease_ms)
            .await?;
        Ok(job.to_wire(None))
    }

    /// `POST /v1/jobs/{id}/complete`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn complete(
        &self,
        id: &str,
        request: CompleteRequest,
    ) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let result = request.result.map(|raw| raw.get().as_bytes().to_vec());
        let job = self.inner.queue.complete(id, lease, result).await?;
        Ok(job.to_wire(None))
    }

    /// `POST /v1/jobs/{id}/fail`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn fail(&self, id: &str, request: FailRequest) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let failure = Failure::from(request);
        let job = self.inner.queue.fail(id, lease, &failure).await?;
        Ok(job.to_wire(None))
    }

    /// `POST /v1/jobs/{id}/release`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn release(
        &self,
        id: &str,
        request: ReleaseRequest,
    ) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        let lease = self.lease_id(id, &request.lease_id).await?;
        let job = self.inner.queue.release(id, lease).await?;
        Ok(job.to_wire(None))
    }

    /// `GET /v1/jobs/{id}`, waiting up to `wait_ms` for a terminal state.
    ///
    /// # Errors
    /// The contract's.
    pub async fn get(&self, id: &str, wait_ms: u64) -> ServiceResult<queue_proto::Job> {
        check_wait_ms(wait_ms)?;
        let id = parse_job_id(id)?;
        let job = if wait_ms > 0 {
            self.wait_terminal(id, wait_ms).await?
        } else {
            self.load(id).await?
        };
        Ok(job.to_wire(None))
    }

    async fn load(&self, id: JobId) -> ServiceResult<Job> {
        self.inner
            .queue
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound { id }.into())
    }

    /// Waits for a terminal state, ending early (with the job as it is) at
    /// shutdown.
    async fn wait_terminal(&self, id: JobId, wait_ms: u64) -> ServiceResult<Job> {
        let wait = self
            .inner
            .queue
            .wait_terminal(id, Duration::from_millis(wait_ms));
        tokio::select! {
            result = wait => Ok(result?),
            () = self.shutting_down() => self.load(id).await,
        }
    }

    /// `DELETE /v1/jobs/{id}`.
    ///
    /// # Errors
    /// The contract's: `conflict` for a finished job.
    pub async fn cancel(&self, id: &str) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        Ok(self.inner.queue.cancel(id).await?.to_wire(None))
    }

    /// `GET /v1/queues`.
    ///
    /// # Errors
    /// `unavailable` when storage fails.
    pub async fn queues(&self) -> ServiceResult<QueueList> {
        Ok(QueueList {
            queues: self.inner.queue.queues().await?,
        })
    }

    /// `GET /v1/queues/{queue}`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn stats(&self, queue: &str) -> ServiceResult<QueueStats> {
        Ok(self.inner.queue.stats(queue).await?)
    }

    /// `POST /v1/queues/{queue}/pause` (`paused`) and `…/resume`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> ServiceResult<QueueStats> {
        let queue_handle = &self.inner.queue;
        Ok(if paused {
            queue_handle.pause(queue).await?
        } else {
            queue_handle.resume(queue).await?
        })
    }

    /// `GET /v1/queues/{queue}/dead?limit&after`.
    ///
    /// # Errors
    /// The contract's: `invalid_request` for a limit outside 1..=1000 or an
    /// `after` that is no job id.
    pub async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> ServiceResult<DeadPage> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
        if !(1..=MAX_BATCH as u64).contains(&limit) {
            return Err(ServiceError::invalid(format!(
                "limit must be in 1..={MAX_BATCH}, got {limit}"
            )));
        }
        let after =
            match after {
                Some(raw) => Some(raw.parse::<JobId>().map_err(|_| {
                    ServiceError::invalid(format!("after: {raw:?} is not a job id"))
                })?),
                None => None,
            };
        let page = self
            .inner
            .queue
            .dead_letters(queue, after, usize::try_from(limit).unwrap_or(MAX_BATCH))
            .await?;
        Ok(DeadPage {
            jobs: page.jobs.iter().map(|j| j.to_wire(None)).collect(),
            next: page.next.map(|id| id.to_string()),
        })
    }

    /// `POST /v1/queues/{queue}/dead/requeue`: the ids given (a malformed
    /// one is refused; well-formed ids that are no dead job of the queue are
    /// skipped), or all.
    ///
    /// # Errors
    /// The contract's.
    pub async fn requeue_dead(
        &self,
        queue: &str,
        request: RequeueRequest,
    ) -> ServiceResult<RequeuedResponse> {
        let ids = match request.ids {
            Some(ids) => Some(
                ids.iter()
                    .map(|raw| {
                        raw.parse::<JobId>().map_err(|_| {
                            ServiceError::invalid(format!("ids: {raw:?} is not a job id"))
                        })
                    })
                    .collect::<ServiceResult<Vec<_>>>()?,
            ),
            None => None,
        };
        let requeued = self.inner.queue.requeue_dead(queue, ids.as_deref()).await?;
        Ok(RequeuedResponse { requeued })
    }

    /// `DELETE /v1/queues/{queue}/dead`.
    ///
    /// # Errors
    /// The contract's.
    pub async fn purge_dead(&self, queue: &str) -> ServiceResult<DeletedResponse> {
        Ok(DeletedResponse {
            deleted: self.inner.queue.purge_dead(queue).await?,
        })
    }

    /// `GET /v1/events?queue&job`: the state changes from now on that match
    /// the filter.
    ///
    /// # Errors
    /// `invalid_request` for a queue filter that is no queue name or a job
    /// filter that is no job id.
    pub fn events(&self, query: EventQuery) -> ServiceResult<EventFeed> {
        if let Some(queue) = &query.queue {
            check_queue(queue)
                .map_err(|e| ServiceError::invalid(format!("queue filter: {}", e.message)))?;
        }
        let job = match &query.job {
            Some(raw) => Some(raw.parse::<JobId>().map_err(|_| {
                ServiceError::invalid(format!("job filter: {raw:?} is not a job id"))
            })?),
            None => None,
        };
        Ok(EventFeed {
            subscription: self.inner.queue.subscribe(),
            queue: query.queue,
            job,
            shutdown: self.inner.shutdown.subscribe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_its_code() {
        let id = JobId::from_u64(1);
        let cases = [
            (Error::invalid("x", "y"), ErrorCode::InvalidRequest),
            (
                Error::TooLarge {
                    what: "payload",
                    size: 2,
                    limit: 1,
                },
                ErrorCode::PayloadTooLarge,
            ),
            (Error::NotFound { id }, ErrorCode::NotFound),
            (Error::LeaseLost { id }, ErrorCode::LeaseLost),
            (
                Error::Conflict {
                    id,
                    state: queue_proto::JobState::Completed,
                    operation: "cancel",
                },
                ErrorCode::Conflict,
            ),
            (Error::Closed, ErrorCode::Unavailable),
            (Error::Corrupt("disk".into()), ErrorCode::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(ServiceError::from(error).code, code);
        }
        // 5xx texts carry no internals.
        let hidden = ServiceError::from(Error::Internal("secret detail".into()));
        assert!(!hidden.message.contains("secret"));
    }

    #[test]
    fn ids_and_bounds_from_the_wire() {
        assert_eq!(
            parse_job_id("000000000000002a").unwrap(),
            JobId::from_u64(42)
        );
        assert_eq!(
            parse_job_id("../queues").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(check_wait_ms(MAX_WAIT_MS).unwrap(), MAX_WAIT_MS);
        assert_eq!(
            check_wait_ms(MAX_WAIT_MS + 1).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let reply = |replayed, finished| EnqueueReply {
            job: serde_json::from_str(
                r#"{"id":"x","queue":"q","state":"ready","payload":1,"priority":0,
                "attempts":0,"max_attempts":5,"backoff_ms":1000,"created_at":0,
                "updated_at":0,"run_at":0,"lease_expires_at":null,
                "idempotency_key":null,"result":null,"last_error":null}"#,
            )
            .unwrap(),
            replayed,
            finished,
        };
        assert_eq!(reply(false, false).status(), 202);
        assert_eq!(reply(true, false).status(), 200);
        assert_eq!(reply(false, true).status(), 200);
    }
}
