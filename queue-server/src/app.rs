//! The application: one `handle` per request, callable without a socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, LOCATION};
use http::{HeaderMap, Request, Response, StatusCode};
use queue_core::{Failure, Job, JobId, LeaseId, LeaseOptions, NewJob, Queue};
use queue_proto::limits::MAX_WAIT_MS;
use queue_proto::{
    BatchRequest, BatchResponse, CompleteRequest, DeletedResponse, EnqueueRequest, ErrorCode,
    FailRequest, HeartbeatRequest, LeaseRequest, LeaseResponse, QueueList, ReleaseRequest,
    RequeueRequest, RequeuedResponse,
};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::http::{Body, bounded, error_response, json, parse_json, query, read_body};
use crate::metrics::{self, HttpMetrics};
use crate::routes::{Endpoint, RouteError, Routed, route};
use crate::sse;

/// The server's shared state; cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Queue,
    config: ServerConfig,
    http: HttpMetrics,
    shutdown: watch::Sender<bool>,
    in_flight: watch::Sender<usize>,
    request_seq: AtomicU64,
    boot: u64,
}

type Handled = Result<Response<Body>, ApiError>;

impl App {
    /// An app serving `queue` with `config`.
    pub fn new(queue: Queue, config: ServerConfig) -> App {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        App {
            inner: Arc::new(Inner {
                queue,
                config,
                http: HttpMetrics::default(),
                shutdown: watch::Sender::new(false),
                in_flight: watch::Sender::new(0),
                request_seq: AtomicU64::new(0),
                boot,
            }),
        }
    }

    /// The queue served.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Ends long-polls (they answer with what they have) and event streams.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Whether [`App::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// The number of admitted requests being served (past authentication and
    /// the shutdown check), as a watch: tests wait on it, `/metrics` reports
    /// it.
    pub fn in_flight(&self) -> watch::Receiver<usize> {
        self.inner.in_flight.subscribe()
    }

    async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Serves one request: authentication, routing, the endpoint, the
    /// `X-Request-Id` header, the log line and the request metrics.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let request_id = self.request_id(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (label, handled) = self.dispatch(request).await;
        let mut response = handled.unwrap_or_else(|e| error_response(&e));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let status = response.status().as_u16();
        self.inner.http.record(label, method.as_str(), status);
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(%method, route = label, %path, status, duration_ms, request_id, "request");
        } else {
            tracing::info!(%method, route = label, %path, status, duration_ms, request_id, "request");
        }
        response
    }

    /// The caller's request id if it is 1..=128 visible ASCII characters,
    /// else a fresh one.
    fn request_id(&self, headers: &HeaderMap) -> String {
        if let Some(given) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            if (1..=128).contains(&given.len()) && given.bytes().all(|b| b.is_ascii_graphic()) {
                return given.to_owned();
            }
        }
        let seq = self.inner.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{seq:08x}", (self.inner.boot >> 16) as u32)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.inner.config.token else {
            return true;
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    async fn dispatch<B>(&self, request: Request<B>) -> (&'static str, Handled)
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let routed = match route(&parts.method, parts.uri.path()) {
            Ok(routed) => routed,
            Err(RouteError::NotFound) => {
                // Unknown routes also need the token, so they reveal nothing.
                if !self.authorized(&parts.headers) {
                    return ("unmatched", Err(unauthorized()));
                }
                return ("unmatched", Err(ApiError::not_found("no such route")));
            }
            Err(RouteError::MethodNotAllowed { pattern, allow }) => {
                if !self.authorized(&parts.headers) {
                    return (pattern, Err(unauthorized()));
                }
                let mut error = ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{} is not allowed here; allowed: {allow}", parts.method),
                );
                error.allow = Some(allow);
                return (pattern, Err(error));
            }
        };
        if routed.endpoint != Endpoint::Health && !self.authorized(&parts.headers) {
            return (routed.pattern, Err(unauthorized()));
        }
        if self.is_shutting_down()
            && !matches!(routed.endpoint, Endpoint::Health | Endpoint::Metrics)
        {
            return (
                routed.pattern,
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the server is shutting down",
                )),
            );
        }
        // Admitted: from here on the request is served to the end, and a
        // long-poll answers with what it has when shutdown begins.
        self.inner.in_flight.send_modify(|n| *n += 1);
        let _in_flight = InFlight(&self.inner.in_flight);
        let params = query(parts.uri.query());
        let label = routed.pattern;
        let max = self.inner.config.max_body;
        let handled = async {
            let body = match routed.endpoint {
                Endpoint::Enqueue
                | Endpoint::EnqueueBatch
                | Endpoint::Lease
                | Endpoint::Heartbeat
                | Endpoint::Complete
                | Endpoint::Fail
                | Endpoint::Release
                | Endpoint::RequeueDead => read_body(&parts.headers, body, max).await?,
                _ => Bytes::new(),
            };
            self.endpoint(&routed, &parts.headers, &params, &body).await
        }
        .await;
        (label, handled)
    }

    async fn endpoint(
        &self,
        routed: &Routed,
        headers: &HeaderMap,
        params: &std::collections::HashMap<String, String>,
        body: &[u8],
    ) -> Handled {
        let queue_name = || routed.queue.clone().unwrap_or_default();
        match routed.endpoint {
            Endpoint::Health => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
            Endpoint::Metrics => self.metrics().await,
            Endpoint::Events => {
                let filter = sse::Filter {
                    queue: params.get("queue").cloned(),
                    job: params.get("job").cloned(),
                };
                if let Some(queue) = &filter.queue {
                    queue_proto::validate_queue_name(queue)
                        .map_err(|e| ApiError::invalid(format!("queue filter: {e}")))?;
                }
                if let Some(job) = &filter.job {
                    job.parse::<JobId>().map_err(|_| {
                        ApiError::invalid(format!("job filter: {job:?} is not a job id"))
                    })?;
                }
                Ok(sse::stream(
                    &self.inner.queue,
                    filter,
                    self.inner.config.sse_keep_alive,
                    self.inner.shutdown.subscribe(),
                ))
            }
            Endpoint::Enqueue => self.enqueue(queue_name(), headers, params, body).await,
            Endpoint::EnqueueBatch => self.enqueue_batch(queue_name(), body).await,
            Endpoint::Lease => self.lease(queue_name(), body).await,
            Endpoint::Heartbeat | Endpoint::Complete | Endpoint::Fail | Endpoint::Release => {
                self.fenced(routed.endpoint, routed.id.as_deref().unwrap_or(""), body)
                    .await
            }
            Endpoint::GetJob => {
                self.get_job(routed.id.as_deref().unwrap_or(""), params)
                    .await
            }
            Endpoint::CancelJob => {
                let id = parse_job_id(routed.id.as_deref().unwrap_or(""))?;
                let job = self.inner.queue.cancel_async(id).await?;
                Ok(json(StatusCode::OK, &job.to_wire(None)))
            }
            Endpoint::ListQueues => {
                let queues = self.blocking(|q| q.queues()).await?;
                Ok(json(StatusCode::OK, &QueueList { queues }))
            }
            Endpoint::QueueStats => {
                let name = queue_name();
                self.stats_response(move |q| q.stats(&name)).await
            }
            Endpoint::Pause => {
                let name = queue_name();
                self.stats_response(move |q| q.pause(&name)).await
            }
            Endpoint::Resume => {
                let name = queue_name();
                self.stats_response(move |q| q.resume(&name)).await
            }
            Endpoint::ListDead => {
                let limit = bounded(params, "limit", 100, 1, 1000)?;
                let after = match params.get("after") {
                    Some(raw) => Some(raw.parse::<JobId>().map_err(|_| {
                        ApiError::invalid(format!("after: {raw:?} is not a job id"))
                    })?),
                    None => None,
                };
                let name = queue_name();
                let page = self
                    .blocking(move |q| q.dead_letters(&name, after, limit as usize))
                    .await?;
                Ok(json(
                    StatusCode::OK,
                    &queue_proto::DeadPage {
                        jobs: page.jobs.iter().map(|j| j.to_wire(None)).collect(),
                        next: page.next.map(|id| id.to_string()),
                    },
                ))
            }
            Endpoint::RequeueDead => {
                let request: RequeueRequest = parse_json(body, true)?;
                let ids = match request.ids {
                    Some(ids) => Some(
                        ids.iter()
                            .map(|raw| {
                                raw.parse::<JobId>().map_err(|_| {
                                    ApiError::invalid(format!("ids: {raw:?} is not a job id"))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    None => None,
                };
                let name = queue_name();
                let requeued = self
                    .blocking(move |q| q.requeue_dead(&name, ids.as_deref()))
                    .await?;
                Ok(json(StatusCode::OK, &RequeuedResponse { requeued }))
            }
            Endpoint::PurgeDead => {
                let name = queue_name();
                let deleted = self.blocking(move |q| q.purge_dead(&name)).await?;
                Ok(json(StatusCode::OK, &DeletedResponse { deleted }))
            }
        }
    }

    /// Runs a blocking core call (reads, admin calls) on tokio's blocking
    /// pool. Writes on the hot path use the core's async calls instead,
    /// which wait for their batch without holding a thread.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Queue) -> queue_core::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let queue = self.inner.queue.clone();
        match tokio::task::spawn_blocking(move || call(&queue)).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    async fn stats_response(
        &self,
        call: impl FnOnce(&Queue) -> queue_core::Result<queue_core::QueueStats> + Send + 'static,
    ) -> Handled {
        let stats = self.blocking(call).await?;
        Ok(json(StatusCode::OK, &stats))
    }

    async fn metrics(&self) -> Handled {
        let queues = self.blocking(|q| q.queues()).await?;
        let in_flight = *self.inner.in_flight.borrow();
        let text = metrics::render(
            &queues,
            &self.inner.queue.counters(),
            &self.inner.http,
            in_flight,
        );
        let mut response = Response::new(crate::http::full(text));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(response)
    }

    async fn enqueue(
        &self,
        queue: String,
        headers: &HeaderMap,
        params: &std::collections::HashMap<String, String>,
        body: &[u8],
    ) -> Handled {
        let wait_ms = bounded(params, "wait_ms", 0, 0, MAX_WAIT_MS)?;
        let mut request: EnqueueRequest = parse_json(body, false)?;
        let header_key = match headers.get("idempotency-key") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?
                    .to_owned(),
            ),
            None => None,
        };
        let key = match (header_key, request.idempotency_key.clone()) {
            (Some(h), Some(b)) if h != b => {
                return Err(ApiError::invalid(
                    "the Idempotency-Key header and the body's idempotency_key differ",
                ));
            }
            (h, b) => h.or(b),
        };
        request.idempotency_key = key;
        let enqueued = self
            .inner
            .queue
            .enqueue_async(&queue, NewJob::from(request))
            .await?;
        let mut job = enqueued.job;
        if wait_ms > 0 && !job.state.is_terminal() {
            job = self.wait_terminal(job.id, wait_ms).await?;
        }
        let status = if job.state.is_terminal() && wait_ms > 0 || enqueued.replayed {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let mut response = json(status, &job.to_wire(None));
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
            response.headers_mut().insert(LOCATION, location);
        }
        if enqueued.replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    /// Waits for a terminal state, ending early (with the job as it is) on
    /// shutdown.
    async fn wait_terminal(&self, id: JobId, wait_ms: u64) -> Result<Job, ApiError> {
        let wait = self
            .inner
            .queue
            .wait_terminal(id, Duration::from_millis(wait_ms));
        tokio::select! {
            result = wait => Ok(result?),
            () = self.shutting_down() => {
                let job = self.blocking(move |q| q.get(id)).await?;
                job.ok_or_else(|| ApiError::not_found(format!("job {id} not found")))
            }
        }
    }

    async fn enqueue_batch(&self, queue: String, body: &[u8]) -> Handled {
        let request: BatchRequest = parse_json(body, false)?;
        let jobs: Vec<NewJob> = request.jobs.into_iter().map(NewJob::from).collect();
        let enqueued = self.inner.queue.enqueue_batch_async(&queue, jobs).await?;
        Ok(json(
            StatusCode::ACCEPTED,
            &BatchResponse {
                jobs: enqueued.iter().map(|e| e.job.to_wire(None)).collect(),
            },
        ))
    }

    async fn lease(&self, queue: String, body: &[u8]) -> Handled {
        let request: LeaseRequest = parse_json(body, true)?;
        let wait_ms = request.wait_ms.unwrap_or(0);
        if wait_ms > MAX_WAIT_MS {
            return Err(ApiError::invalid(format!(
                "wait_ms must be in 0..={MAX_WAIT_MS}, got {wait_ms}"
            )));
        }
        let opts = LeaseOptions::from(request);
        let leased = if wait_ms == 0 {
            self.inner.queue.lease_async(&queue, &opts).await?
        } else {
            let wait = self
                .inner
                .queue
                .lease_wait(&queue, &opts, Duration::from_millis(wait_ms));
            tokio::select! {
                result = wait => result?,
                () = self.shutting_down() => Vec::new(),
            }
        };
        Ok(json(
            StatusCode::OK,
            &LeaseResponse {
                jobs: leased
                    .iter()
                    .map(|l| l.job.to_wire(Some(l.lease_id)))
                    .collect(),
            },
        ))
    }

    /// Heartbeat, complete, fail and release: the calls fenced by a lease.
    async fn fenced(&self, endpoint: Endpoint, raw_id: &str, body: &[u8]) -> Handled {
        let id = parse_job_id(raw_id)?;
        let queue = &self.inner.queue;
        // A malformed lease id cannot be the job's lease: lease_lost, or
        // not_found when there is no such job either.
        let lease = |raw: &str| raw.parse::<LeaseId>().ok();
        let lost = || async move {
            let known = self.blocking(move |q| q.get(id)).await?;
            Err::<Job, ApiError>(match known {
                Some(_) => queue_core::Error::LeaseLost { id }.into(),
                None => queue_core::Error::NotFound { id }.into(),
            })
        };
        let job = match endpoint {
            Endpoint::Heartbeat => {
                let r: HeartbeatRequest = parse_json(body, false)?;
                match lease(&r.lease_id) {
                    Some(lease) => queue.heartbeat_async(id, lease, r.lease_ms).await?,
                    None => lost().await?,
                }
            }
            Endpoint::Complete => {
                let r: CompleteRequest = parse_json(body, false)?;
                let result = r.result.map(|raw| raw.get().as_bytes().to_vec());
                match lease(&r.lease_id) {
                    Some(lease) => queue.complete_async(id, lease, result).await?,
                    None => lost().await?,
                }
            }
            Endpoint::Fail => {
                let r: FailRequest = parse_json(body, false)?;
                let held = lease(&r.lease_id);
                let failure = Failure::from(r);
                match held {
                    Some(lease) => queue.fail_async(id, lease, &failure).await?,
                    None => lost().await?,
                }
            }
            _ => {
                let r: ReleaseRequest = parse_json(body, false)?;
                match lease(&r.lease_id) {
                    Some(lease) => queue.release_async(id, lease).await?,
                    None => lost().await?,
                }
            }
        };
        Ok(json(StatusCode::OK, &job.to_wire(None)))
    }

    async fn get_job(
        &self,
        raw_id: &str,
        params: &std::collections::HashMap<String, String>,
    ) -> Handled {
        let wait_ms = bounded(params, "wait_ms", 0, 0, MAX_WAIT_MS)?;
        let id = parse_job_id(raw_id)?;
        let job = if wait_ms > 0 {
            self.wait_terminal(id, wait_ms).await?
        } else {
            self.blocking(move |q| q.get(id))
                .await?
                .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?
        };
        Ok(json(StatusCode::OK, &job.to_wire(None)))
    }
}

/// Counts a request out of the in-flight gauge however its future ends
/// (a client that disconnects drops it midway).
struct InFlight<'a>(&'a watch::Sender<usize>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "missing or wrong bearer token (Authorization: Bearer <token>)",
    )
}

/// A malformed id names no job: 404, like an unknown one.
fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>()
        .map_err(|_| ApiError::not_found(format!("job {raw:?} not found")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
