//! The HTTP transport: the v1 contract over hyper's pooled client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use queue_proto::{
    BatchRequest, CompleteRequest, DeadPage, DeletedResponse, EnqueueRequest, ErrorBody, ErrorCode,
    FailRequest, HeartbeatRequest, Job, LeaseRequest, LeaseResponse, QueueList, QueueStats,
    ReleaseRequest, RequeueRequest, RequeuedResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::pool::Pool;
use super::{EVENT_BUFFER, EventReceiver, JobView};
use crate::options::millis;
use crate::{ClientOptions, Error, EventFilter, Result};

const AGENT: &str = concat!("queue-client/", env!("CARGO_PKG_VERSION"));

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
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|source| Error::Encode {
                what: "request",
                source,
            })?),
            None => None,
        };
        let request = self.request(method, path, body)?;
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
            Ok(Reply { replayed, body })
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

    async fn on_job<V: JobView>(&self, id: &str, action: &str, body: &impl Serialize) -> Result<V> {
        let path = format!("/v1/jobs/{}/{action}", encode(id));
        Ok(self
            .call(Method::POST, &path, Some(body), Duration::ZERO)
            .await?
            .body)
    }

    pub(crate) async fn heartbeat(&self, id: &str, request: &HeartbeatRequest) -> Result<Job> {
        self.on_job(id, "heartbeat", request).await
    }

    pub(crate) async fn complete<V: JobView>(
        &self,
        id: &str,
        request: &CompleteRequest,
    ) -> Result<V> {
        self.on_job(id, "complete", request).await
    }

    pub(crate) async fn fail<V: JobView>(&self, id: &str, request: &FailRequest) -> Result<V> {
        self.on_job(id, "fail", request).await
    }

    pub(crate) async fn release<V: JobView>(
        &self,
        id: &str,
        request: &ReleaseRequest,
    ) -> Result<V> {
        self.on_job(id, "release", request).await
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
        Ok(self
            .call(Method::DELETE, &path, None::<&()>, Duration::ZERO)
            .await?
            .body)
    }

    pub(crate) async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let path = format!("/v1/queues/{queue}");
        Ok(self
            .call(Method::GET, &path, None::<&()>, Duration::ZERO)
            .await?
            .body)
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueStats>> {
        let reply: Reply<QueueList> = self
            .call(Method::GET, "/v1/queues", None::<&()>, Duration::ZERO)
            .await?;
        Ok(reply.body.queues)
    }

    pub(crate) async fn set_paused(&self, queue: &str, paused: bool) -> Result<QueueStats> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/v1/queues/{queue}/{action}");
        Ok(self
            .call(Method::POST, &path, None::<&()>, Duration::ZERO)
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
        Ok(self
            .call(Method::GET, &path, None::<&()>, Duration::ZERO)
            .await?
            .body)
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
        let reply: Reply<DeletedResponse> = self
            .call(Method::DELETE, &path, None::<&()>, Duration::ZERO)
            .await?;
        Ok(reply.body.deleted)
    }

    pub(crate) async fn health(&self) -> Result<()> {
        let _: Reply<serde_json::Value> = self
            .call(Method::GET, "/healthz", None::<&()>, Duration::ZERO)
            .await?;
        Ok(())
    }

    /// Opens `GET /v1/events` and hands its events to a task that parses the
    /// stream; the task ends when the server closes the stream or the
    /// receiver is dropped (which closes the connection).
    pub(crate) async fn events(&self, filter: &EventFilter) -> Result<EventReceiver> {
        let mut query = Vec::new();
        if let Some(queue) = &filter.queue {
            query.push(format!("queue={}", encode(queue)));
        }
        if let Some(job) = &filter.job {
            query.push(format!("job={}", encode(job.as_str())));
        }
        let mut path = "/v1/events".to_owned();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let request = self.request(Method::GET, &path, None)?;
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
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let mut body = response.into_body();
        tokio::spawn(async move {
            // The stream has the connection to itself until it ends.
            let _connection = connection;
            let mut parser = SseParser::default();
            loop {
                let frame = tokio::select! {
                    () = tx.closed() => return,
                    frame = body.frame() => frame,
                };
                let data = match frame {
                    None => return,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Error::Transport(Box::new(e)))).await;
                        return;
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_) => continue,
                    },
                };
                for item in parser.push(&data) {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
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

/// Incremental Server-Sent Events parser: feeds on body chunks, yields the
/// events (and the server's "skipped/dropped N events" comments) they
/// complete.
#[derive(Default)]
struct SseParser {
    buffer: BytesMut,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<Result<queue_proto::Event>> {
        self.buffer.extend_from_slice(chunk);
        let mut items = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block = self.buffer.split_to(end.0);
            let _separator = self.buffer.split_to(end.1);
            let text = String::from_utf8_lossy(&block);
            let mut data = String::new();
            for line in text.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    if let Some(missed) = missed_count(comment) {
                        items.push(Err(Error::EventsMissed { missed }));
                    }
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                items.push(
                    serde_json::from_str(&data)
                        .map_err(|e| Error::decode("an event of the stream", e)),
                );
            }
        }
        items
    }
}

/// The end of the first event block: (block length, separator length).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// `N` of the server's `: skipped N events` / `: dropped N events` comments.
fn missed_count(comment: &str) -> Option<u64> {
    let mut words = comment.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("skipped" | "dropped"), Some(n), Some("events")) => n.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_comments() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .push(b": connected\n\nevent: ready\ndata: {\"id\":\"1\",")
                .is_empty()
        );
        let items = parser.push(
            b"\"queue\":\"q\",\"state\":\"ready\",\"attempts\":0,\"at\":5}\n\n: keep-alive\n\n: dropped 3 events\n\n",
        );
        assert_eq!(items.len(), 2);
        let event = items[0].as_ref().unwrap();
        assert_eq!((event.id.as_str(), event.at), ("1", 5));
        assert!(matches!(items[1], Err(Error::EventsMissed { missed: 3 })));
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
