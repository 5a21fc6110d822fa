//! The application: one `handle` per request, callable without a socket.
//! Authentication, routing, admission, the request id, the log line and the
//! request metrics are here; what each route does is in its resource
//! module under [`crate::routes`], over the shared [`Service`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response};
use queue_core::Queue;
use queue_core::service::Service;
use queue_proto::ErrorCode;

use crate::call::{Call, Handled, Shared};
use crate::config::ServerConfig;
use crate::conns::{Conn, State};
use crate::error::ApiError;
use crate::http::{Body, error_response, query, read_body};
use crate::metrics::HttpMetrics;
use crate::routes::{self, RouteError};

/// The server's shared state; cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    request_seq: AtomicU64,
    boot: u64,
}

impl App {
    /// An app serving `queue` with `config`.
    pub fn new(queue: Queue, config: ServerConfig) -> App {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        App {
            inner: Arc::new(Inner {
                shared: Shared {
                    service: Service::with_callback_hosts(queue, config.callbacks.hosts),
                    config,
                    http: HttpMetrics::default(),
                    in_flight: crate::call::InFlight::default(),
                    callbacks: Arc::default(),
                },
                request_seq: AtomicU64::new(0),
                boot,
            }),
        }
    }

    /// The queue served.
    pub fn queue(&self) -> &Queue {
        self.inner.shared.service.queue()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.shared.config
    }

    /// Callback outcomes so far.
    pub fn callback_metrics(&self) -> Arc<crate::callbacks::CallbackMetrics> {
        Arc::clone(&self.inner.shared.callbacks)
    }

    /// Ends long-polls (they answer with what they have) and event streams.
    pub fn begin_shutdown(&self) {
        self.inner.shared.service.begin_shutdown();
    }

    /// Whether [`App::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shared.service.is_shutting_down()
    }

    /// The number of admitted requests being served (past authentication and
    /// the shutdown check); `/metrics` reports it.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.in_flight.get()
    }

    /// Waits until `until` holds of the number of admitted requests being
    /// served (see [`App::in_flight`]); the number then.
    pub async fn wait_in_flight(&self, until: impl Fn(usize) -> bool) -> usize {
        self.inner.shared.in_flight.wait_for(until).await
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
        // For the log line: a clone shares the request's bytes.
        let uri = request.uri().clone();
        let path = uri.path();
        let (label, handled) = self.dispatch(request, &request_id).await;
        let mut response = handled.unwrap_or_else(|e| error_response(&e));
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        let status = response.status().as_u16();
        // Up to the response head: an event stream's life is not its
        // duration (queue_event_streams_open counts the open ones).
        let elapsed = started.elapsed();
        self.inner
            .shared
            .http
            .record(label, &method, status, elapsed);
        // Whole microseconds, shown in milliseconds: `0.02`, not
        // `0.020338000000000002`.
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let duration_ms = micros as f64 / 1000.0;
        if status >= 500 {
            tracing::error!(%method, route = label, %path, status, duration_ms, request_id, "request");
        } else if is_scrape(label) && status < 400 {
            // Health checks and scrapes come every few seconds: at DEBUG,
            // so that they do not drown the log.
            tracing::debug!(%method, route = label, %path, status, duration_ms, request_id, "request");
        } else {
            tracing::info!(%method, route = label, %path, status, duration_ms, request_id, "request");
        }
        response
    }

    /// The caller's request id if it is 1..=128 visible ASCII characters,
    /// else a fresh one.
    fn request_id(&self, headers: &HeaderMap) -> String {
        if let Some(given) = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            if (1..=128).contains(&given.len()) && given.bytes().all(|b| b.is_ascii_graphic()) {
                return given.to_owned();
            }
        }
        let seq = self.inner.request_seq.fetch_add(1, Ordering::Relaxed);
        made_request_id((self.inner.boot >> 16) as u32, seq)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.inner.shared.config.token else {
            return true;
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_credentials)
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    async fn dispatch<B>(&self, request: Request<B>, request_id: &str) -> (&'static str, Handled)
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut parts, body) = request.into_parts();
        let routed = match routes::route(&parts.method, parts.uri.path()) {
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
        let endpoint = routed.endpoint;
        if !endpoint.is_public() && !self.authorized(&parts.headers) {
            return (routed.pattern, Err(unauthorized()));
        }
        if self.is_shutting_down() && !endpoint.serves_during_shutdown() {
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
        let shared = &self.inner.shared;
        let _in_flight = shared.in_flight.enter();
        let params = query(parts.uri.query());
        let max = shared.config.max_body;
        let conn = parts.extensions.remove::<Conn>();
        let handled = async {
            endpoint.check_query(&params)?;
            let body = if endpoint.reads_body() {
                if let Some(conn) = &conn {
                    conn.set(State::Body);
                }
                let timeout = shared.config.body_timeout;
                let read = tokio::time::timeout(timeout, read_body(&parts.headers, body, max))
                    .await
                    .map_err(|_| body_timed_out(timeout))??;
                if let Some(conn) = &conn {
                    conn.set(State::Busy);
                }
                read
            } else {
                Bytes::new()
            };
            let call = Call {
                shared,
                captures: &routed.captures,
                headers: &parts.headers,
                params: &params,
                body: &body,
                request_id,
                upgrade: std::sync::Mutex::new(
                    parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
                ),
                conn: conn.as_ref(),
            };
            routes::handle(endpoint, &call).await
        }
        .await;
        (routed.pattern, handled)
    }
}

/// The request id header (named once, not parsed per request).
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A request id made here: `{boot:08x}-{seq:08x}` (at least eight hex
/// digits of the sequence), through the ids' sixteen-digit writer
/// ([`JobId`](queue_core::JobId)'s `Display`) rather than `{:08x}`, which
/// writes its zero padding one character at a time.
fn made_request_id(boot: u32, seq: u64) -> String {
    fn hex(n: u64) -> String {
        let digits = queue_core::JobId::from_u64(n).to_string();
        let significant = usize::try_from((64 - n.leading_zeros()).div_ceil(4)).unwrap_or(16);
        digits[16 - significant.max(8)..].to_owned()
    }
    let mut id = hex(u64::from(boot));
    id.push('-');
    id.push_str(&hex(seq));
    id
}

/// `/healthz` and `/metrics`, logged at DEBUG when they succeed.
fn is_scrape(route: &str) -> bool {
    matches!(route, "/healthz" | "/metrics")
}

fn body_timed_out(timeout: std::time::Duration) -> ApiError {
    ApiError::invalid(format!(
        "the request body did not arrive within {} ms (the server's body timeout)",
        timeout.as_millis()
    ))
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "missing or wrong bearer token (Authorization: Bearer <token>)",
    )
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive and may be followed by several spaces (RFC 9110,
/// 11.1 and 11.4).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, made_request_id};

    #[test]
    fn made_request_ids_read_as_the_formatted_ones() {
        for (boot, seq) in [
            (0, 0),
            (0xdead_beef, 1),
            (7, 0xffff_ffff),
            (u32::MAX, 0x1_0000_0000),
            (0x0123_4567, u64::MAX),
        ] {
            assert_eq!(
                made_request_id(boot, seq),
                format!("{boot:08x}-{seq:08x}"),
                "{boot} {seq}"
            );
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k"] {
            assert_eq!(bearer_credentials(value), Some("t0k"), "{value}");
        }
        for value in ["Basic t0k", "Bearert0k", "Bearer", "t0k", "Bearer_ t0k"] {
            assert_ne!(bearer_credentials(value), Some("t0k"), "{value}");
        }
    }
}
