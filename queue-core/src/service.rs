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
//! paging (job listings by state and by correlation id, dead letters,
//! callbacks); history ranges; event filters; schedule names in paths (a
//! malformed one is not found); the mapping of engine errors to codes; and
//! ending long-polls and event feeds at shutdown.

use std::sync::Arc;
use std::time::Duration;

use queue_proto::limits::{MAX_BATCH, MAX_WAIT_MS};
use queue_proto::{
    BatchRequest, BatchResponse, CallbackState, CompleteRequest, DeadPage, DeletedResponse,
    EnqueueRequest, ErrorCode, ErrorDetail, EventType, FailRequest, Gap, HeartbeatRequest, History,
    HistoryQuery, JobPage, JobState, LeaseRequest, LeaseResponse, PatchQueueRequest, QueueList,
    QueueStats, ReleaseRequest, RequeueRequest, RequeuedResponse, ScheduleList, ScheduleRequest,
    SettleRequest, SettleResponse, SettleResult, validate_queue_name,
};
use tokio::sync::watch;

use crate::{
    Error, Failure, Job, JobId, LeaseId, LeaseLostReason, LeaseOptions, NewJob, Queue, RecvError,
    Settle, Settlement, Subscription,
};

/// Jobs per page of a listing when the caller gives no `limit`.
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

    /// The error with `field: ` before its message, naming where in the
    /// request it is (`complete[3]`, `lease`).
    #[must_use]
    pub fn named(self, field: &str) -> Self {
        ServiceError {
            code: self.code,
            message: format!("{field}: {}", self.message),
        }
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
            Error::NotFound { .. } | Error::ScheduleNotFound { .. } => {
                ServiceError::not_found(error.to_string())
            }
            Error::LeaseLost { .. } => ServiceError::new(ErrorCode::LeaseLost, error.to_string()),
            Error::Conflict { .. } | Error::IdempotencyConflict { .. } => {
                ServiceError::new(ErrorCode::Conflict, error.to_string())
            }
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

/// A schedule name in a path: a malformed one names no schedule.
fn check_schedule_name(name: &str) -> ServiceResult<()> {
    validate_queue_name(name)
        .map_err(|_| ServiceError::not_found(format!("schedule {name:?} not found")))
}

fn check_queue(queue: &str) -> ServiceResult<()> {
    validate_queue_name(queue).map_err(|e| ServiceError::invalid(e.to_string()))
}

/// What a request carries for an enqueue besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The request's id (`X-Request-Id`): the job's correlation id unless
    /// the body names one.
    pub request_id: Option<String>,
    /// The W3C `traceparent` header.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header.
    pub tracestate: Option<String>,
}

/// Where callbacks may be sent. A server that takes jobs from producers it
/// does not trust should not let them make it POST to its own network
/// (server-side request forgery): [`CallbackHosts::Public`] refuses URLs
/// naming loopback, private, link-local and other non-public addresses (at
/// enqueue for addresses in the URL, at delivery for what a name resolves
/// to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallbackHosts {
    /// Any host (the default: the server and its producers are trusted).
    #[default]
    Any,
    /// Public addresses only.
    Public,
}

impl CallbackHosts {
    /// Whether a callback may be sent to `url` (an address in it is
    /// checked; a name is checked when it is resolved, at delivery).
    ///
    /// # Errors
    /// `invalid_request` naming the refused host.
    pub fn check_url(self, url: &str) -> ServiceResult<()> {
        if self == CallbackHosts::Any {
            return Ok(());
        }
        let host = url_host(url);
        let refused = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => !is_public(ip),
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if refused {
            return Err(ServiceError::invalid(format!(
                "callback_url: {host:?} is not a public address, and this server only sends \
                 callbacks to public addresses"
            )));
        }
        Ok(())
    }

    /// Whether a callback may be sent to `ip` (what the URL's host resolved to).
    pub fn allows(self, ip: std::net::IpAddr) -> bool {
        self == CallbackHosts::Any || is_public(ip)
    }
}

/// The host of an absolute URL (IPv6 literals without brackets).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.strip_prefix('[') {
        Some(literal) => literal.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// What a settle answers for each item it settled, as RFC 7240's
/// `Prefer: return=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// The job after the settlement, and its state (the default).
    #[default]
    Representation,
    /// Only the state the settlement left the job in.
    Minimal,
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

/// Which events an event feed delivers, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only these queues' (any if empty).
    pub queues: Vec<String>,
    /// Only this job's.
    pub job: Option<String>,
    /// Only these types: a state or `progress` (any if empty).
    pub types: Vec<String>,
    /// Resume after this event id (`Last-Event-ID` or `after`): the
    /// retained events after it first, then live.
    pub after: Option<u64>,
}

/// What an event feed yields.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A state change or progress report that matches the feed's filter.
    Event(queue_proto::Event),
    /// The events after `after` up to `oldest` are no longer retained:
    /// whoever relies on every change re-reads the state it cares about.
    Gap(Gap),
}

/// A filtered stream of events; ends at shutdown, when the queue closes,
/// or (for one job's feed) after the job's terminal event.
pub struct EventFeed {
    subscription: Subscription,
    queues: Vec<String>,
    job: Option<JobId>,
    types: Vec<EventType>,
    shutdown: watch::Receiver<bool>,
    /// The job's current state, sent first (one job's feed).
    snapshot: Option<queue_proto::Event>,
    /// One job's feed ends after its terminal event.
    until_terminal: bool,
    /// One job's feed: the queue, to re-read the job after a gap.
    rereads: Option<Queue>,
    done: bool,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFeed")
            .field("queues", &self.queues)
            .field("job", &self.job)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

impl EventFeed {
    /// The id of the last event the feed has read (delivered or passed
    /// over by its filter): a client that resumes after it misses nothing
    /// this feed would have sent.
    pub fn position(&self) -> u64 {
        self.subscription.position()
    }

    /// The next matching item; `None` once the feed has ended.
    pub async fn next(&mut self) -> Option<FeedItem> {
        if self.done {
            return None;
        }
        if let Some(snapshot) = self.snapshot.take() {
            self.done = self.until_terminal && snapshot.state.is_terminal();
            return Some(FeedItem::Event(snapshot));
        }
        loop {
            let received = tokio::select! {
                biased;
                () = stopped(&mut self.shutdown) => return None,
                received = self.subscription.recv() => received,
            };
            match received {
                Ok(event) => {
                    if !self.matches(&event) {
                        continue;
                    }
                    let event = event.to_wire();
                    self.done = self.until_terminal
                        && event.kind() == EventType::State(event.state)
                        && event.state.is_terminal();
                    return Some(FeedItem::Event(event));
                }
                Err(RecvError::Gap { after, oldest }) => {
                    let Some(queue) = self.rereads.clone() else {
                        return Some(FeedItem::Gap(Gap { after, oldest }));
                    };
                    // One job's feed: what matters is whether the gap hid
                    // this job's changes. Re-read it.
                    let job = match self.job {
                        Some(id) => queue.get(id).await.ok().flatten(),
                        None => None,
                    };
                    let Some(job) = job else {
                        return Some(FeedItem::Gap(Gap { after, oldest }));
                    };
                    let last = job.last_event_id.unwrap_or(0);
                    if last <= after || last >= oldest {
                        // Its latest change is before the gap (nothing of
                        // it was hidden) or after it (still to come).
                        continue;
                    }
                    // Its latest change was pruned: say so, then give its
                    // state as it is now (the end, if it is finished).
                    self.snapshot = Some(job.to_wire_event(last));
                    return Some(FeedItem::Gap(Gap { after, oldest }));
                }
                Err(RecvError::Closed) => return None,
                Err(RecvError::Failed(e)) => {
                    tracing::error!(error = %e, "event feed ended");
                    return None;
                }
            }
        }
    }

    fn matches(&self, event: &crate::Event) -> bool {
        let kind = if event.transition == crate::Transition::Progress {
            EventType::Progress
        } else {
            EventType::State(event.state)
        };
        (self.queues.is_empty() || self.queues.contains(&event.queue))
            && self.job.is_none_or(|j| j == event.id)
            && (self.types.is_empty() || self.types.contains(&kind))
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
    callback_hosts: CallbackHosts,
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
        Service::with_callback_hosts(queue, CallbackHosts::Any)
    }

    /// The contract over `queue`, with callbacks only to `hosts`.
    pub fn with_callback_hosts(queue: Queue, hosts: CallbackHosts) -> Service {
        Service {
            inner: Arc::new(Inner {
                queue,
                shutdown: watch::Sender::new(false),
                callback_hosts: hosts,
            }),
        }
    }

    /// Where callbacks may go.
    pub fn callback_hosts(&self) -> CallbackHosts {
        self.inner.callback_hosts
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

    /// Resolves when shutdown begins (or the service is gone): for
    /// connections that outlive their request, such as a WebSocket.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// `POST /v1/queues/{queue}/jobs`. `context` is what the request
    /// carries besides its body (the `Idempotency-Key` header, which must
    /// agree with the body's key if both are given; its `X-Request-Id`, the
    /// job's correlation id unless the body names one; its W3C trace
    /// context, kept in the job's headers unless the body sets those keys).
    /// With `wait_ms`, the answer waits for the job to finish (the
    /// synchronous style).
    ///
    /// # Errors
    /// The contract's: `invalid_request`, `payload_too_large`, …
    pub async fn enqueue(
        &self,
        queue: &str,
        request: EnqueueRequest,
        context: &RequestContext,
        wait_ms: u64,
    ) -> ServiceResult<EnqueueReply> {
        check_wait_ms(wait_ms)?;
        let job = self.new_job(request, context, true)?;
        let enqueued = self.inner.queue.enqueue(queue, job).await?;
        let mut job = enqueued.job;
        if wait_ms > 0 && !job.state.is_terminal() {
            job = self.wait_terminal(job.id, wait_ms).await?;
        }
        Ok(EnqueueReply {
            finished: wait_ms > 0 && job.state.is_terminal(),
            job: job.into_wire(None),
            replayed: enqueued.replayed,
        })
    }

    /// `POST /v1/queues/{queue}/jobs/batch`; `context` as for
    /// [`Service::enqueue`] (each item names its own idempotency key).
    ///
    /// # Errors
    /// The contract's; one bad item refuses the batch.
    pub async fn enqueue_batch(
        &self,
        queue: &str,
        request: BatchRequest,
        context: &RequestContext,
    ) -> ServiceResult<BatchResponse> {
        let jobs = request
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                self.new_job(item, context, false)
                    .map_err(|e| ServiceError {
                        message: format!("jobs[{i}]: {}", e.message),
                        ..e
                    })
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        let enqueued = self.inner.queue.enqueue_batch(queue, jobs).await?;
        Ok(BatchResponse {
            jobs: enqueued
                .into_iter()
                .map(|e| e.job.into_wire(None))
                .collect(),
        })
    }

    /// An enqueue body and its request's context as a new job.
    fn new_job(
        &self,
        mut request: EnqueueRequest,
        context: &RequestContext,
        header_key_applies: bool,
    ) -> ServiceResult<NewJob> {
        if header_key_applies {
            request.idempotency_key = match (
                context.idempotency_key.clone(),
                request.idempotency_key.take(),
            ) {
                (Some(header), Some(body)) if header != body => {
                    return Err(ServiceError::invalid(
                        "the Idempotency-Key header and the body's idempotency_key differ",
                    ));
                }
                (header, body) => header.or(body),
            };
        }
        let mut job = NewJob::from(request);
        // The request as the caller wrote it, before what the request's
        // headers add: what an idempotent replay is compared with. Only a
        // keyed request needs it.
        if job.idempotency_key.is_some() {
            job.request_digest = Some(job.digest());
        }
        if job.correlation_id.is_none() {
            job.correlation_id = context.request_id.clone();
        }
        // A malformed trace context is ignored, as W3C Trace Context asks
        // (it is a request header, not part of the job the caller wrote).
        if let Some(traceparent) = context.traceparent.as_deref().filter(|t| is_traceparent(t)) {
            let tracestate = context
                .tracestate
                .as_deref()
                .filter(|t| t.len() <= queue_proto::limits::MAX_HEADER_VALUE_LEN);
            for (key, value) in [
                ("traceparent", Some(traceparent)),
                ("tracestate", tracestate),
            ] {
                let Some(value) = value else { continue };
                let headers = &mut job.headers;
                if headers.len() < queue_proto::limits::MAX_HEADERS || headers.contains_key(key) {
                    headers
                        .entry(key.to_owned())
                        .or_insert_with(|| value.to_owned());
                }
            }
        }
        if let Some(url) = &job.callback_url {
            self.inner.callback_hosts.check_url(url)?;
        }
        Ok(job)
    }

    /// `POST /v1/queues/{queue}/lease`, waiting up to `wait_ms` for a job
    /// (an empty answer at shutdown).
    ///
    /// # Errors
    /// The contract's.
    pub async fn lease(&self, queue: &str, request: LeaseRequest) -> ServiceResult<LeaseResponse> {
        self.lease_until(queue, request, std::future::pending())
            .await
    }

    /// [`Service::lease`] whose wait also ends, with an empty answer, when
    /// `cancel` completes; a lease granted meanwhile is still returned (see
    /// [`Queue::lease_wait_until`]). The SDK's embedded worker cancels its
    /// long-poll this way at shutdown.
    ///
    /// # Errors
    /// The contract's.
    pub async fn lease_until(
        &self,
        queue: &str,
        request: LeaseRequest,
        cancel: impl Future<Output = ()>,
    ) -> ServiceResult<LeaseResponse> {
        let wait_ms = check_wait_ms(request.wait_ms.unwrap_or(0))?;
        let opts = LeaseOptions::from(request);
        let queue_handle = &self.inner.queue;
        let leased = if wait_ms == 0 {
            queue_handle.lease(queue, &opts).await?
        } else {
            // Shutdown ends the wait like the caller's cancel: only while
            // waiting, never in the middle of a grant (which would strand
            // the leases it took until they expire).
            let cancel = async {
                tokio::select! {
                    () = cancel => {}
                    () = self.shutting_down() => {}
                }
            };
            queue_handle
                .lease_wait_until(queue, &opts, Duration::from_millis(wait_ms), cancel)
                .await?
        };
        Ok(LeaseResponse {
            jobs: leased
                .into_iter()
                .map(|l| l.job.into_wire(Some(l.lease_id)))
                .collect(),
        })
    }

    /// `POST /v1/queues/{queue}/settle`: settles the items and runs the
    /// request's `lease` in one commit (see [`Queue::settle_and_lease`]:
    /// one durable flush for the settlements and the lease, the lease
    /// seeing the capacity they free). If that lease takes nothing and
    /// `lease.wait_ms` is above 0, it then waits as [`Service::lease`]
    /// does, the settlements already durable. Without items, the lease is
    /// a plain [`Service::lease`].
    ///
    /// Each item is answered as its single endpoint would: a malformed job
    /// id, an unknown job or a job of another queue is a 404 result, a
    /// malformed or stale lease id a 409 `lease_lost`. What would be a 400
    /// or 413 of the single endpoint (a result too large, a retry delay out
    /// of range), more than 1,000 items, or a bad `lease`, refuses the
    /// whole request before anything changes, naming the item
    /// (`complete[3].result`).
    ///
    /// # Errors
    /// The contract's.
    pub async fn settle(
        &self,
        queue: &str,
        request: SettleRequest,
    ) -> ServiceResult<SettleResponse> {
        self.settle_until(
            queue,
            request,
            Return::Representation,
            std::future::pending(),
        )
        .await
    }

    /// [`Service::settle`] whose lease wait also ends, with no jobs, when
    /// `cancel` completes (see [`Service::lease_until`]); the settlements
    /// are made in any case.
    ///
    /// `give`: whether each settled item carries its job
    /// ([`Return::Representation`]) or only the state it was left in
    /// ([`Return::Minimal`], `Prefer: return=minimal`: what a worker needs,
    /// without its payload and result sent back).
    ///
    /// # Errors
    /// The contract's.
    pub async fn settle_until(
        &self,
        queue: &str,
        request: SettleRequest,
        give: Return,
        cancel: impl Future<Output = ()>,
    ) -> ServiceResult<SettleResponse> {
        check_queue(queue)?;
        let count = request.complete.len() + request.fail.len();
        if count > MAX_BATCH {
            return Err(ServiceError::invalid(format!(
                "complete and fail hold at most {MAX_BATCH} items together, got {count}"
            )));
        }
        if let Some(lease) = &request.lease {
            check_wait_ms(lease.wait_ms.unwrap_or(0))
                .map_err(|e| ServiceError::new(e.code, format!("lease.{}", e.message)))?;
            crate::rules::lease::validate(&LeaseOptions::from(lease.clone()))
                .map_err(|e| ServiceError::from(e).named("lease"))?;
        }
        let engine = self.inner.queue.engine();
        // Every item as the wire gave it, in answer order; the well-formed
        // ones go to the engine, the others are answered here.
        let mut answers: Vec<(String, Option<ServiceResult<Job>>)> = Vec::with_capacity(count);
        let mut settlements = Vec::with_capacity(count);
        let mut positions = Vec::with_capacity(count);
        let items = request
            .complete
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let outcome = Settle::Complete {
                    result: item.result.map(|raw| raw.get().as_bytes().to_vec()),
                };
                (format!("complete[{i}]"), item.id, item.lease_id, outcome)
            })
            .chain(request.fail.into_iter().enumerate().map(|(i, item)| {
                let outcome = Settle::Fail(Failure {
                    error: item.error,
                    retry_in_ms: item.retry_in_ms,
                    retryable: item.retryable,
                });
                (format!("fail[{i}]"), item.id, item.lease_id, outcome)
            }));
        for (name, raw_id, raw_lease, outcome) in items {
            let answer = match (raw_id.parse::<JobId>(), raw_lease.parse::<LeaseId>()) {
                (Ok(id), Ok(lease_id)) => {
                    let settlement = Settlement {
                        id,
                        lease_id,
                        outcome,
                    };
                    engine
                        .check_settlement(&settlement)
                        .map_err(|e| ServiceError::from(e).named(&name))?;
                    positions.push(answers.len());
                    settlements.push(settlement);
                    None
                }
                (Err(_), _) => Some(Err(ServiceError::not_found(format!(
                    "job {raw_id:?} not found"
                )))),
                (Ok(id), Err(_)) => Some(Err(self.malformed_lease(queue, id).await?)),
            };
            answers.push((raw_id, answer));
        }
        // The settlements and the lease's first round in one commit.
        let (settled, leased) = match &request.lease {
            Some(lease) if !settlements.is_empty() => {
                let opts = LeaseOptions::from(lease.clone());
                let (settled, leased) = self
                    .inner
                    .queue
                    .settle_and_lease(queue, &settlements, &opts)
                    .await?;
                (settled, Some(leased))
            }
            Some(_) | None => (self.inner.queue.settle(queue, &settlements).await?, None),
        };
        for (position, result) in positions.into_iter().zip(settled) {
            answers[position].1 = Some(result.map_err(|e| match e {
                Error::NotFound { id } => {
                    ServiceError::not_found(format!("job {id} not found in queue {queue}"))
                }
                e => ServiceError::from(e),
            }));
        }
        let results = answers
            .into_iter()
            .map(|(id, answer)| match answer {
                Some(Ok(job)) => SettleResult {
                    id,
                    status: 200,
                    state: Some(job.state),
                    job: (give == Return::Representation).then(|| job.into_wire(None)),
                    error: None,
                },
                Some(Err(e)) => SettleResult {
                    id,
                    status: e.code.status(),
                    state: None,
                    job: None,
                    error: Some(ErrorDetail {
                        code: e.code,
                        message: e.message,
                    }),
                },
                None => SettleResult {
                    id,
                    status: 500,
                    state: None,
                    job: None,
                    error: Some(ErrorDetail {
                        code: ErrorCode::Internal,
                        message: "internal error".into(),
                    }),
                },
            })
            .collect();
        let jobs = match (request.lease, leased) {
            (Some(lease), Some(leased))
                if !leased.is_empty() || lease.wait_ms.unwrap_or(0) == 0 =>
            {
                leased
                    .into_iter()
                    .map(|l| l.job.into_wire(Some(l.lease_id)))
                    .collect()
            }
            // Nothing taken and a wait asked for (or no items): a lease
            // call, whose wait starts with a round of its own, so that a
            // job that became ready since is not missed.
            (Some(lease), _) => self.lease_until(queue, lease, cancel).await?.jobs,
            (None, _) => Vec::new(),
        };
        Ok(SettleResponse { results, jobs })
    }

    /// The answer to an item of a settle with a malformed lease id:
    /// `lease_lost` if the job is one of `queue`'s, else `not_found`.
    async fn malformed_lease(&self, queue: &str, id: JobId) -> ServiceResult<ServiceError> {
        Ok(match self.inner.queue.get(id).await? {
            Some(job) if job.queue == queue => Error::LeaseLost {
                id,
                reason: LeaseLostReason::Malformed,
            }
            .into(),
            Some(_) | None => {
                ServiceError::not_found(format!("job {id} not found in queue {queue}"))
            }
        })
    }

    /// A lease id from the wire. A malformed one cannot be the job's lease:
    /// `lease_lost`, or `not_found` when there is no such job either.
    async fn lease_id(&self, id: JobId, raw: &str) -> ServiceResult<LeaseId> {
        match raw.parse() {
            Ok(lease) => Ok(lease),
            Err(_) => match self.inner.queue.get(id).await? {
                Some(_) => Err(Error::LeaseLost {
                    id,
                    reason: LeaseLostReason::Malformed,
                }
                .into()),
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
        let queue = &self.inner.queue;
        let job = match &request.progress {
            Some(progress) => {
                queue
                    .report_progress(id, lease, progress.get().as_bytes(), request.lease_ms)
                    .await?
            }
            None => queue.heartbeat(id, lease, request.lease_ms).await?,
        };
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

    /// `PATCH /v1/queues/{queue}`: the paused flag and the limits (see
    /// [`Queue::update_queue`]).
    ///
    /// # Errors
    /// The contract's: `invalid_request` naming the field for a limit out
    /// of its bounds (nothing changes).
    pub async fn patch_queue(
        &self,
        queue: &str,
        request: &PatchQueueRequest,
    ) -> ServiceResult<QueueStats> {
        check_queue(queue)?;
        Ok(self.inner.queue.update_queue(queue, request).await?)
    }

    /// `GET /v1/queues/{queue}/history?from&to&step_ms`: the queue's
    /// per-minute history merged to `step_ms` (see [`Queue::history`]).
    ///
    /// # Errors
    /// The contract's: `invalid_request` naming `step_ms` when it is not a
    /// positive multiple of 60000, `from` when it is after `to` or the
    /// range holds more than 10080 points.
    pub async fn history(
        &self,
        queue: &str,
        from: Option<u64>,
        to: Option<u64>,
        step_ms: Option<u64>,
    ) -> ServiceResult<History> {
        check_queue(queue)?;
        let query = HistoryQuery {
            from,
            to,
            step: step_ms.map(Duration::from_millis),
        };
        Ok(self.inner.queue.history(queue, &query).await?)
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
        let (after, limit) = page_bounds(after, limit)?;
        let page = self.inner.queue.dead_letters(queue, after, limit).await?;
        Ok(wire_page(&page))
    }

    /// `GET /v1/queues/{queue}/jobs?state&limit&after`: the queue's jobs in
    /// `state`, oldest first (see [`Queue::jobs`] for what paging
    /// promises). An unknown queue gives an empty page.
    ///
    /// # Errors
    /// `invalid_request` naming the parameter for a missing or unknown
    /// state, a bad queue name, a limit outside 1..=1000 or an `after`
    /// that is no job id.
    pub async fn jobs(
        &self,
        queue: &str,
        state: Option<&str>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> ServiceResult<JobPage> {
        check_queue(queue)?;
        let states = || {
            JobState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let state: JobState = state
            .ok_or_else(|| {
                ServiceError::invalid(format!("state is required: one of {}", states()))
            })?
            .parse()
            .map_err(|_| {
                ServiceError::invalid(format!(
                    "state: {:?} is not one of {}",
                    state.unwrap_or_default(),
                    states()
                ))
            })?;
        let (after, limit) = page_bounds(after, limit)?;
        let page = self.inner.queue.jobs(queue, state, after, limit).await?;
        Ok(wire_page(&page))
    }

    /// `GET /v1/jobs?correlation_id&limit&after`: every stored job with
    /// that correlation id, in any queue, oldest first.
    ///
    /// # Errors
    /// `invalid_request` naming the parameter for a missing correlation id
    /// or one that is not 1..=128 visible ASCII characters (as the enqueue
    /// field), a bad limit or `after`.
    pub async fn jobs_by_correlation(
        &self,
        correlation_id: Option<&str>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> ServiceResult<JobPage> {
        let correlation_id =
            correlation_id.ok_or_else(|| ServiceError::invalid("correlation_id is required"))?;
        let (after, limit) = page_bounds(after, limit)?;
        let page = self
            .inner
            .queue
            .jobs_by_correlation(correlation_id, after, limit)
            .await?;
        Ok(wire_page(&page))
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

    /// `GET /v1/events`: the events that match `query`, from now on or
    /// after `query.after`.
    ///
    /// # Errors
    /// `invalid_request` for a queue filter that is no queue name, a job
    /// filter that is no job id, or a type that is no state or `progress`.
    pub fn events(&self, query: EventQuery) -> ServiceResult<EventFeed> {
        for queue in &query.queues {
            check_queue(queue)
                .map_err(|e| ServiceError::invalid(format!("queue filter: {}", e.message)))?;
        }
        let job = match &query.job {
            Some(raw) => Some(raw.parse::<JobId>().map_err(|_| {
                ServiceError::invalid(format!("job filter: {raw:?} is not a job id"))
            })?),
            None => None,
        };
        let types = query
            .types
            .iter()
            .map(|t| t.parse::<EventType>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServiceError::invalid(format!("type filter: {e}")))?;
        let queue = &self.inner.queue;
        Ok(EventFeed {
            subscription: match query.after {
                Some(after) => queue.subscribe_after(after),
                None => queue.subscribe(),
            },
            queues: query.queues,
            job,
            types,
            shutdown: self.inner.shutdown.subscribe(),
            snapshot: None,
            until_terminal: false,
            rereads: None,
            done: false,
        })
    }

    /// `GET /v1/jobs/{id}/events`: job `id`'s current state first (an event
    /// with its latest event id), then its events, ending after its
    /// terminal event; or, resuming after `after`, its events after that.
    ///
    /// # Errors
    /// `not_found` for an unknown job.
    pub async fn job_events(&self, id: &str, after: Option<u64>) -> ServiceResult<EventFeed> {
        let id = parse_job_id(id)?;
        let queue = &self.inner.queue;
        // Subscribe first: nothing committed after the job is read is missed.
        let latest = queue.subscribe();
        let job = self.load(id).await?;
        let last = job.last_event_id.unwrap_or(latest.position());
        let (subscription, snapshot, done) = match after {
            Some(after) => (
                queue.subscribe_after(after),
                None,
                job.state.is_terminal() && after >= last,
            ),
            None => {
                let snapshot = job.to_wire_event(last);
                (queue.subscribe_after(last), Some(snapshot), false)
            }
        };
        Ok(EventFeed {
            subscription,
            queues: Vec::new(),
            job: Some(id),
            types: Vec::new(),
            shutdown: self.inner.shutdown.subscribe(),
            snapshot,
            until_terminal: true,
            rereads: Some(queue.clone()),
            done,
        })
    }

    /// `PUT /v1/schedules/{name}`: stores the schedule; `created` tells a
    /// new one (201) from a replaced one (200). The job body is checked as
    /// an enqueue body, its `callback_url` against the callback policy.
    ///
    /// # Errors
    /// `invalid_request` naming the field; nothing is stored.
    pub async fn put_schedule(
        &self,
        name: &str,
        request: ScheduleRequest,
    ) -> ServiceResult<(queue_proto::Schedule, bool)> {
        if let Some(url) = &request.job.callback_url {
            self.inner
                .callback_hosts
                .check_url(url)
                .map_err(|e| ServiceError::invalid(format!("job.{}", e.message)))?;
        }
        let put = self.inner.queue.put_schedule(name, &request).await?;
        Ok((put.schedule.to_wire()?, put.created))
    }

    /// `GET /v1/schedules`: every schedule, by name.
    ///
    /// # Errors
    /// `unavailable` when storage fails.
    pub async fn schedules(&self) -> ServiceResult<ScheduleList> {
        let schedules = self
            .inner
            .queue
            .schedules()
            .await?
            .iter()
            .map(crate::Schedule::to_wire)
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(ScheduleList { schedules })
    }

    /// `GET /v1/schedules/{name}`.
    ///
    /// # Errors
    /// `not_found` for an unknown (or malformed) name.
    pub async fn schedule(&self, name: &str) -> ServiceResult<queue_proto::Schedule> {
        let not_found = || ServiceError::not_found(format!("schedule {name:?} not found"));
        if validate_queue_name(name).is_err() {
            return Err(not_found());
        }
        match self.inner.queue.schedule(name).await? {
            Some(schedule) => Ok(schedule.to_wire()?),
            None => Err(not_found()),
        }
    }

    /// `DELETE /v1/schedules/{name}`: the deleted schedule.
    ///
    /// # Errors
    /// `not_found` for an unknown name.
    pub async fn delete_schedule(&self, name: &str) -> ServiceResult<queue_proto::Schedule> {
        check_schedule_name(name)?;
        Ok(self.inner.queue.delete_schedule(name).await?.to_wire()?)
    }

    /// `POST /v1/schedules/{name}/pause` (`true`) and `…/resume`.
    ///
    /// # Errors
    /// `not_found` for an unknown name.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> ServiceResult<queue_proto::Schedule> {
        check_schedule_name(name)?;
        let schedule = if paused {
            self.inner.queue.pause_schedule(name).await?
        } else {
            self.inner.queue.resume_schedule(name).await?
        };
        Ok(schedule.to_wire()?)
    }

    /// `POST /v1/schedules/{name}/trigger`: the job enqueued now (202). Its
    /// correlation id is the job body's, else the request's id.
    ///
    /// # Errors
    /// `not_found` for an unknown name.
    pub async fn trigger_schedule(
        &self,
        name: &str,
        context: &RequestContext,
    ) -> ServiceResult<queue_proto::Job> {
        check_schedule_name(name)?;
        let job = self
            .inner
            .queue
            .trigger_schedule(name, context.request_id.clone())
            .await?;
        Ok(job.to_wire(None))
    }

    /// `POST /v1/jobs/{id}/callback/retry`: a new delivery of a finished
    /// job's callback, now.
    ///
    /// # Errors
    /// `conflict` if the job has no `callback_url` or is not finished.
    pub async fn retry_callback(&self, id: &str) -> ServiceResult<queue_proto::Job> {
        let id = parse_job_id(id)?;
        // The reasons, in words (the store checks them again atomically).
        let job = self.load(id).await?;
        let refusal = if job.callback_url.is_none() {
            Some(format!("job {id} has no callback_url"))
        } else if !job.state.is_terminal() {
            Some(format!(
                "job {id} is {}: its callback is sent when it finishes",
                job.state
            ))
        } else if job.callback.as_ref().is_some_and(|c| c.in_flight) {
            Some(format!(
                "an attempt of job {id}'s callback is under way; retry once it is settled"
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(ServiceError::new(ErrorCode::Conflict, message));
        }
        Ok(self.inner.queue.retry_callback(id).await?.to_wire(None))
    }

    /// `GET /v1/callbacks?state&limit&after`: the jobs whose callback
    /// delivery is in `state`, oldest first.
    ///
    /// # Errors
    /// `invalid_request` for a missing or unknown state, a bad limit or
    /// `after`.
    pub async fn callbacks(
        &self,
        state: Option<&str>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> ServiceResult<DeadPage> {
        let state: CallbackState = state
            .ok_or_else(|| {
                ServiceError::invalid("state is required: pending, delivered or failed")
            })?
            .parse()
            .map_err(|e| ServiceError::invalid(format!("state: {e}")))?;
        let (after, limit) = page_bounds(after, limit)?;
        let page = self
            .inner
            .queue
            .callbacks(state.into(), after, limit)
            .await?;
        Ok(wire_page(&page))
    }
}

/// Whether `value` is a W3C `traceparent`: `version-traceid-parentid-flags`
/// in lowercase hex, the ids not all zero, version `ff` invalid.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// A page of jobs as the wire carries it.
fn wire_page(page: &crate::JobPage) -> JobPage {
    JobPage {
        jobs: page.jobs.iter().map(|j| j.to_wire(None)).collect(),
        next: page.next.map(|id| id.to_string()),
    }
}

/// A page's `after` and `limit` from the wire.
fn page_bounds(after: Option<&str>, limit: Option<u64>) -> ServiceResult<(Option<JobId>, usize)> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_BATCH as u64).contains(&limit) {
        return Err(ServiceError::invalid(format!(
            "limit must be in 1..={MAX_BATCH}, got {limit}"
        )));
    }
    let after = match after {
        Some(raw) => Some(
            raw.parse::<JobId>()
                .map_err(|_| ServiceError::invalid(format!("after: {raw:?} is not a job id")))?,
        ),
        None => None,
    };
    Ok((after, usize::try_from(limit).unwrap_or(MAX_BATCH)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parents_are_checked_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_traceparent(good));
        assert!(is_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

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
            (
                Error::LeaseLost {
                    id,
                    reason: LeaseLostReason::Expired,
                },
                ErrorCode::LeaseLost,
            ),
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
