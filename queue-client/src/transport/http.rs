//! The HTTP transport: the v1 contract over hyper's pooled client.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use queue_proto::{
    BatchRequest, CompleteRequest, DeadPage, DeletedResponse, EnqueueRequest, ErrorBody, ErrorCode,
    FailRequest, Gap, HeartbeatRequest, Job, LeaseRequest, LeaseResponse, QueueList, QueueStats,
    ReleaseRequest, RequeueRequest, RequeuedResponse, Schedule, ScheduleList, ScheduleRequest,
    SettleRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pool::{Connection, Pool};
use super::sse::{MAX_EVENT_BYTES, Parsed, SseParser};
use super::{Delivery, EventConnection, EventSource, JobView, SettleReply};
use crate::options::millis;
use crate::{ClientOptions, Error, Result, StreamItem};

const AGENT: &str = concat!("queue-client/", env!("CARGO_PKG_VERSION"));
const REQUEST_ID: &str = "x-request-id";
const LAST_EVENT_ID: &str = "last-event-id";

pub(crate) struct Http {
    pool: Pool,
    /// The `Host` header: the URL's authority.
    host: HeaderValue,
    /// The URL's path, without a trailing slash: prefixed to every route.
    prefix: String,
    auth: Option<HeaderValue>,
    request_timeout: Duration,
}

/// A batch reply, read as the views the caller asked for.
#[derive(serde::Deserialize)]
#[serde(bound = "V: JobView")]
struct Jobs<V> {
    jobs: Vec<V>,
}

/// A successful response: its status, whether it was an idempotent replay,
/// and its body.
struct Reply<T> {
    replayed: bool,
    /// The answer was `201 Created`.
    created: bool,
    body: T,
}

impl Http {
    pub(crate) fn new(url: &str, options: &ClientOptions) -> Result<Http> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported by this client; put a TLS-terminating proxy \
                     next to it or use an http:// URL on a trusted network",
                ));
            }
            _ => return Err(bad("the URL must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("the URL has no host"))?;
        if uri.query().is_some() {
            return Err(bad("the URL must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad("the host is not a valid header value"))?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let auth = match &options.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| Error::invalid("the token must be visible ASCII"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let pool = Pool::new(
            address,
            options.connect_timeout,
            options.pool_max_idle_per_host,
            options.pool_idle_timeout,
        );
        Ok(Http {
            pool,
            host,
            prefix,
            auth,
            request_timeout: options.request_timeout,
        })
    }

    /// The same transport with a pool of its own (for another runtime).
    pub(crate) fn fresh(&self) -> Http {
        Http {
            pool: self.pool.fresh(),
            host: self.host.clone(),
            prefix: self.prefix.clone(),
            auth: self.auth.clone(),
            request_timeout: self.request_timeout,
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.host.clone())
            .header(USER_AGENT, AGENT);
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::invalid(format!("cannot build the request: {e}")))
    }

    /// Sends a request and decodes a 2xx body as `T`; any other status
    /// becomes the matching error. `wait` is the server-side wait the call
    /// asked for, added to the response timeout.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> Result<Reply<T>> {
        self.call_as(method, path, body, wait, None, None).await
    }

    /// A request without a body and without a long-poll: its answer's body.
    async fn fetch<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T> {
        Ok(self
            .call(method, path, None::<&()>, Duration::ZERO)
            .await?
            .body)
    }

    /// [`Http::call`] sent with `X-Request-Id: request_id` and `header`,
    /// when given.
    async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        wait: Duration,
        request_id: Option<&str>,
        header: Option<(http::HeaderName, HeaderValue)>,
    ) -> Result<Reply<T>> {
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|source| Error::Encode {
                what: "request",
                source,
            })?),
            None => None,
        };
        let mut request = self.request(method, path, body)?;
        if let Some(id) = request_id {
            // A correlation id is visible ASCII (the server checked it at
            // enqueue); one that is not a header value is not sent.
            if let Ok(value) = HeaderValue::from_str(id) {
                request.headers_mut().insert(REQUEST_ID, value);
            }
        }
        if let Some((name, value)) = header {
            request.headers_mut().insert(name, value);
        }
        let limit = self.request_timeout.saturating_add(wait);
        let exchange = async {
            let (connection, response) = self.pool.send(request).await?;
            let status = response.status();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::Transport(Box::new(e)))?
                .to_bytes();
            self.pool.put(connection);
            if !status.is_success() {
                return Err(error_from(status, &bytes));
            }
            let body = serde_json::from_slice(&bytes)
                .map_err(|e| Error::decode(format!("the server's response to {path}"), e))?;
            Ok(Reply {
                replayed,
                created: status == http::StatusCode::CREATED,
                body,
            })
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Error::Timeout { after: limit })?
    }

    pub(crate) async fn enqueue<V: JobView>(
        &self,
        queue: &str,
        request: &EnqueueRequest,
        wait: Option<Duration>,
    ) -> Result<(V, bool)> {
        let wait = wait.unwrap_or_default();
        let mut path = format!("/v1/queues/{queue}/jobs");
        if !wait.is_zero() {
            path.push_str(&format!("?wait_ms={}", millis(wait)));
        }
        let reply: Reply<V> = self.call(Method::POST, &path, Some(request), wait).await?;
        Ok((reply.body, reply.replayed))
    }

    pub(crate) async fn enqueue_batch<V: JobView>(
        &self,
        queue: &str,
        request: &BatchRequest,
    ) -> Result<Vec<V>> {
        let path = format!("/v1/queues/{queue}/jobs/batch");
        let reply: Reply<Jobs<V>> = self
            .call(Method::POST, &path, Some(request), Duration::ZERO)
            .await?;
        Ok(reply.body.jobs)
    }

    pub(crate) async fn lease(&self, queue: &str, request: &LeaseRequest) -> Result<Vec<Job>> {
        let path = format!("/v1/queues/{queue}/lease");
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0));
        let reply: Reply<LeaseResponse> =
            self.call(Method::POST, &path, Some(request), wait).await?;
        Ok(reply.body.jobs)
    }

    async fn on_job<V: JobView>(
        &self,
        id: &str,
        action: &str,
        body: &impl Serialize,
        request_id: Option<&str>,
    ) -> Result<V> {
        let path = format!("/v1/jobs/{}/{action}", encode(id));
        Ok(self
            .call_as(
                Method::POST,
                &path,
                Some(body),
                Duration::ZERO,
                request_id,
                None,
            )
            .await?
            .body)
    }

    pub(crate) async fn heartbeat(
        &self,
        id: &str,
        request: &HeartbeatRequest,
        request_id: Option<&str>,
    ) -> Result<Job> {
        self.on_job(id, "heartbeat", request, request_id).await
    }

    pub(crate) async fn complete<V: JobView>(
        &self,
        id: &str,
        request: &CompleteRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        self.on_job(id, "complete", request, request_id).await
    }

    pub(crate) async fn fail<V: JobView>(
        &self,
        id: &str,
        request: &FailRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        self.on_job(id, "fail", request, request_id).await
    }

    pub(crate) async fn settle(
        &self,
        queue: &str,
        request: &SettleRequest,
        request_id: Option<&str>,
    ) -> Result<SettleReply> {
        let path = format!("/v1/queues/{queue}/settle");
        let wait = Duration::from_millis(
            request
                .lease
                .as_ref()
                .and_then(|lease| lease.wait_ms)
                .unwrap_or(0),
        );
        // Each settled item's state is all the SDK reads of it: not its
        // job, payload and result included, sent back.
        let minimal = (
            http::HeaderName::from_static("prefer"),
            HeaderValue::from_static("return=minimal"),
        );
        Ok(self
            .call_as(
                Method::POST,
                &path,
                Some(request),
                wait,
                request_id,
                Some(minimal),
            )
            .await?
            .body)
    }

    pub(crate) async fn release<V: JobView>(
        &self,
        id: &str,
        request: &ReleaseRequest,
        request_id: Option<&str>,
    ) -> Result<V> {
        self.on_job(id, "release", request, request_id).await
    }

    pub(crate) async fn get<V: JobView>(&self, id: &str, wait: Option<Duration>) -> Result<V> {
        let wait = wait.unwrap_or_default();
        let mut path = format!("/v1/jobs/{}", encode(id));
        if !wait.is_zero() {
            path.push_str(&format!("?wait_ms={}", millis(wait)));
        }
        Ok(self.call(Method::GET, &path, None::<&()>, wait).await?.body)
    }

    pub(crate) async fn cancel<V: JobView>(&self, id: &str) -> Result<V> {
        let path = format!("/v1/jobs/{}", encode(id));
        self.fetch(Method::DELETE, &path).await
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let path = format!("/v1/queues/{queue}");
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn history(
        &self,
        queue: &str,
        query: &queue_proto::HistoryQuery,
    ) -> Result<queue_proto::History> {
        let mut params = Vec::new();
        for (name, value) in [
            ("from", query.from),
            ("to", query.to),
            ("step_ms", query.step_ms()),
        ] {
            if let Some(value) = value {
                params.push(format!("{name}={value}"));
            }
        }
        let mut path = format!("/v1/queues/{queue}/history");
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        let reply: QueueList = self.fetch(Method::GET, "/v1/queues").await?;
        Ok(reply.queues)
    }

    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/v1/queues/{queue}/{action}");
        self.fetch(Method::POST, &path).await
    }

    pub(crate) async fn patch_queue(
        &self,
        queue: &str,
        request: &queue_proto::PatchQueueRequest,
    ) -> Result<QueueStats> {
        let path = format!("/v1/queues/{queue}");
        Ok(self
            .call(Method::PATCH, &path, Some(request), Duration::ZERO)
            .await?
            .body)
    }

    pub(crate) async fn dead_letters(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        let mut path = format!("/v1/queues/{queue}/dead?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn jobs(
        &self,
        queue: &str,
        state: queue_proto::JobState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        let mut path = format!("/v1/queues/{queue}/jobs?state={state}&limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn jobs_by_correlation(
        &self,
        correlation_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<queue_proto::JobPage> {
        let mut path = format!(
            "/v1/jobs?correlation_id={}&limit={limit}",
            encode(correlation_id)
        );
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn requeue_dead(&self, queue: &str, request: &RequeueRequest) -> Result<u64> {
        let path = format!("/v1/queues/{queue}/dead/requeue");
        let reply: Reply<RequeuedResponse> = self
            .call(Method::POST, &path, Some(request), Duration::ZERO)
            .await?;
        Ok(reply.body.requeued)
    }

    pub(crate) async fn purge_dead(&self, queue: &str) -> Result<u64> {
        let path = format!("/v1/queues/{queue}/dead");
        let reply: DeletedResponse = self.fetch(Method::DELETE, &path).await?;
        Ok(reply.deleted)
    }

    pub(crate) async fn put_schedule(
        &self,
        name: &str,
        request: &ScheduleRequest,
    ) -> Result<(Schedule, bool)> {
        let path = format!("/v1/schedules/{name}");
        let reply: Reply<Schedule> = self
            .call(Method::PUT, &path, Some(request), Duration::ZERO)
            .await?;
        Ok((reply.body, reply.created))
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<Schedule>> {
        let reply: ScheduleList = self.fetch(Method::GET, "/v1/schedules").await?;
        Ok(reply.schedules)
    }

    pub(crate) async fn schedule(&self, name: &str) -> Result<Schedule> {
        let path = format!("/v1/schedules/{name}");
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn delete_schedule(&self, name: &str) -> Result<Schedule> {
        let path = format!("/v1/schedules/{name}");
        self.fetch(Method::DELETE, &path).await
    }

    pub(crate) async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Schedule> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/v1/schedules/{name}/{action}");
        self.fetch(Method::POST, &path).await
    }

    pub(crate) async fn trigger_schedule<V: JobView>(&self, name: &str) -> Result<V> {
        let path = format!("/v1/schedules/{name}/trigger");
        self.fetch(Method::POST, &path).await
    }

    pub(crate) async fn callbacks(
        &self,
        state: queue_proto::CallbackState,
        after: Option<&str>,
        limit: u32,
    ) -> Result<DeadPage> {
        let mut path = format!("/v1/callbacks?state={}&limit={limit}", state.as_str());
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.fetch(Method::GET, &path).await
    }

    pub(crate) async fn retry_callback<V: JobView>(&self, id: &str) -> Result<V> {
        let path = format!("/v1/jobs/{}/callback/retry", encode(id));
        self.fetch(Method::POST, &path).await
    }

    pub(crate) async fn health(&self) -> Result<()> {
        let _: serde_json::Value = self.fetch(Method::GET, "/healthz").await?;
        Ok(())
    }

    /// Opens one connection of an event stream: `GET /v1/events` with the
    /// filter's query, or `GET /v1/jobs/{id}/events`, resuming with
    /// `Last-Event-ID: after`. Returns once the response has started (a
    /// refusal is the matching error).
    pub(crate) async fn open_events(
        &self,
        source: &EventSource,
        after: Option<u64>,
    ) -> Result<EventConnection> {
        let path = match source {
            EventSource::Filter(filter) => {
                let mut query = Vec::new();
                for queue in &filter.queues {
                    query.push(format!("queue={}", encode(queue)));
                }
                if let Some(job) = &filter.job {
                    query.push(format!("job={}", encode(job.as_str())));
                }
                for kind in &filter.types {
                    query.push(format!("type={}", kind.as_str()));
                }
                if query.is_empty() {
                    "/v1/events".to_owned()
                } else {
                    format!("/v1/events?{}", query.join("&"))
                }
            }
            EventSource::Job(id) => format!("/v1/jobs/{}/events", encode(id.as_str())),
        };
        let mut request = self.request(Method::GET, &path, None)?;
        let headers = request.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(after) = after {
            headers.insert(LAST_EVENT_ID, HeaderValue::from(after));
        }
        let limit = self.request_timeout;
        let (connection, response) = tokio::time::timeout(limit, self.pool.send(request))
            .await
            .map_err(|_| Error::Timeout { after: limit })??;
        let status = response.status();
        if !status.is_success() {
            let bytes = tokio::time::timeout(limit, response.into_body().collect())
                .await
                .map_err(|_| Error::Timeout { after: limit })?
                .map_err(|e| Error::Transport(Box::new(e)))?
                .to_bytes();
            return Err(error_from(status, &bytes));
        }
        Ok(EventConnection::Http(Box::new(HttpEvents {
            _connection: connection,
            body: response.into_body(),
            parser: SseParser::default(),
            pending: VecDeque::new(),
            ended: false,
        })))
    }
}

/// The longest an event stream may stay silent before its connection is
/// taken for dead and reopened: the server sends a comment every 15 s.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One SSE response being read.
pub(crate) struct HttpEvents {
    /// The stream has the connection to itself until it ends; it is never
    /// put back in the pool.
    _connection: Connection,
    body: Incoming,
    parser: SseParser,
    /// Items parsed and not yet handed out.
    pending: VecDeque<Delivery>,
    ended: bool,
}

impl HttpEvents {
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.pending.pop_front() {
                return Some(delivery);
            }
            if self.ended {
                return None;
            }
            let failed = |error: Error| {
                Some(Delivery {
                    id: None,
                    item: Some(Err(error)),
                })
            };
            match tokio::time::timeout(IDLE_LIMIT, self.body.frame()).await {
                Err(_) => {
                    self.ended = true;
                    return failed(Error::Timeout { after: IDLE_LIMIT });
                }
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return failed(Error::Transport(Box::new(e)));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let parsed = self.parser.push(&data);
                        self.pending.extend(parsed.into_iter().map(delivery));
                    }
                }
            }
        }
    }
}

/// A parsed SSE event as a stream item: `gap` events carry a [`Gap`], the
/// others an [`Event`](queue_proto::Event).
fn delivery(parsed: Parsed) -> Delivery {
    match parsed {
        Parsed::TooLarge { id } => {
            let event_id = id.and_then(|id| id.trim().parse().ok());
            Delivery {
                id: event_id,
                item: Some(Err(Error::EventTooLarge {
                    event_id,
                    limit: MAX_EVENT_BYTES,
                })),
            }
        }
        Parsed::Position { id } => Delivery {
            id: id.trim().parse().ok(),
            item: None,
        },
        Parsed::Frame(frame) => {
            let id = frame.id.and_then(|id| id.trim().parse().ok());
            let item = if frame.event == "gap" {
                serde_json::from_str::<Gap>(&frame.data)
                    .map(StreamItem::Gap)
                    .map_err(|e| Error::decode("a gap of the event stream", e))
            } else {
                serde_json::from_str(&frame.data)
                    .map(StreamItem::Event)
                    .map_err(|e| Error::decode("an event of the stream", e))
            };
            Delivery {
                id,
                item: Some(item),
            }
        }
    }
}

/// The error for a non-2xx response: the contract's envelope when the body
/// is one, else a code inferred from the status (a proxy may answer too).
fn error_from(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(envelope) => Error::from_code(
            status.as_u16(),
            Some(envelope.error.code),
            envelope.error.message,
        ),
        Err(_) => {
            let code = ErrorCode::ALL
                .into_iter()
                .find(|c| c.status() == status.as_u16() && *c != ErrorCode::LeaseLost);
            let text = String::from_utf8_lossy(body);
            let message = if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.chars().take(512).collect()
            };
            Error::from_code(status.as_u16(), code, message)
        }
    }
}

/// Percent-encodes everything but unreserved characters, for path segments
/// and query values.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_become_stream_items_with_their_ids() {
        let mut parser = SseParser::default();
        let parsed = parser.push(
            b": connected\n\nid: 9\nevent: gap\ndata: {\"after\":3,\"oldest\":10}\n\n\
              id: 10\nevent: ready\ndata: {\"event_id\":10,\"id\":\"1\",\"queue\":\"q\",\
              \"state\":\"ready\",\"attempts\":0,\"at\":5}\n\nid: 11\ndata: {\"id\":\n\n",
        );
        let items: Vec<Delivery> = parsed.into_iter().map(delivery).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].id, Some(9));
        assert!(matches!(
            items[0].item,
            Some(Ok(StreamItem::Gap(Gap {
                after: 3,
                oldest: 10
            })))
        ));
        match &items[1].item {
            Some(Ok(StreamItem::Event(event))) => {
                assert_eq!((event.event_id, event.at), (10, 5));
            }
            other => panic!("{other:?}"),
        }
        // An event that does not decode is an error item that keeps its id.
        assert_eq!(items[2].id, Some(11));
        assert!(matches!(items[2].item, Some(Err(Error::Decode { .. }))));
        // The server's opening `id:` without data is a position.
        let opening: Vec<Delivery> = SseParser::default()
            .push(b": connected\nid: 42\n\n")
            .into_iter()
            .map(delivery)
            .collect();
        assert_eq!(opening.len(), 1);
        assert_eq!(opening[0].id, Some(42));
        assert!(opening[0].item.is_none());
        let too_large = delivery(Parsed::TooLarge {
            id: Some("12".to_owned()),
        });
        assert!(matches!(
            too_large.item,
            Some(Err(Error::EventTooLarge {
                event_id: Some(12),
                ..
            }))
        ));
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode("0000000000000001"), "0000000000000001");
        assert_eq!(encode("../queues"), "..%2Fqueues");
        assert_eq!(encode("a b?"), "a%20b%3F");
    }

    #[test]
    fn urls_must_be_plain_http() {
        let options = ClientOptions::default();
        assert!(Http::new("http://127.0.0.1:7878/", &options).is_ok());
        for bad in [
            "https://example.com",
            "127.0.0.1:7878",
            "http://x/?a=1",
            "http:///",
        ] {
            assert!(
                matches!(Http::new(bad, &options), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bare_status_still_maps_to_its_code() {
        assert!(matches!(
            error_from(StatusCode::PAYLOAD_TOO_LARGE, b""),
            Error::PayloadTooLarge { .. }
        ));
        assert!(matches!(
            error_from(StatusCode::BAD_GATEWAY, b"<html>"),
            Error::Server { status: 502, .. }
        ));
        assert!(matches!(
            error_from(
                StatusCode::CONFLICT,
                br#"{"error":{"code":"lease_lost","message":"m"}}"#
            ),
            Error::LeaseLost { .. }
        ));
    }
}
