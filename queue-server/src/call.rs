//! What an endpoint sees of a request, and of the server: [`Call`].

use http::{HeaderMap, Response};
use queue_core::service::Service;
use serde::de::DeserializeOwned;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::http::{Body, Params, parse_json};
use crate::metrics::HttpMetrics;

/// The server's state the endpoints use.
pub(crate) struct Shared {
    pub(crate) service: Service,
    pub(crate) config: ServerConfig,
    pub(crate) http: HttpMetrics,
    /// Admitted requests being served.
    pub(crate) in_flight: InFlight,
    /// Callback outcomes.
    pub(crate) callbacks: std::sync::Arc<crate::callbacks::CallbackMetrics>,
}

/// The number of admitted requests being served, for `/metrics` and for
/// those who wait for a number of them (tests, the bench).
#[derive(Default)]
pub(crate) struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    changed: crate::signal::Signal,
}

impl InFlight {
    /// Counts a request until the guard drops.
    pub(crate) fn enter(&self) -> Serving<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.changed();
        Serving(self)
    }

    pub(crate) fn get(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `until` holds of the count; the count then.
    pub(crate) async fn wait_for(&self, until: impl Fn(usize) -> bool) -> usize {
        self.changed
            .wait_until(|| Some(self.get()).filter(|n| until(*n)))
            .await
    }
}

/// One request counted in [`InFlight`]: counted out however its future
/// ends (a client that disconnects drops it midway).
pub(crate) struct Serving<'a>(&'a InFlight);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.changed();
    }
}

/// What an endpoint answers.
pub(crate) type Handled = Result<Response<Body>, ApiError>;

/// One admitted request, as the endpoints see it.
pub(crate) struct Call<'a> {
    pub(crate) shared: &'a Shared,
    /// The captured path segments.
    pub(crate) captures: &'a crate::routes::spec::Captures,
    pub(crate) headers: &'a HeaderMap,
    /// The query string, decoded.
    pub(crate) params: &'a Params,
    /// The body, for endpoints that read one (else empty).
    pub(crate) body: &'a [u8],
    /// The request's id (`X-Request-Id`, given or made).
    pub(crate) request_id: &'a str,
    /// The connection's upgrade, for a WebSocket handshake.
    pub(crate) upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
    /// The connection's slot in the table (none without a socket): an
    /// upgraded WebSocket holds it for as long as it is open.
    pub(crate) conn: Option<&'a crate::conns::Conn>,
}

impl Call<'_> {
    pub(crate) fn service(&self) -> &Service {
        &self.shared.service
    }

    /// The `{queue}` segment (empty for routes without one).
    pub(crate) fn queue(&self) -> &str {
        self.captures.queue.as_deref().unwrap_or("")
    }

    /// The `{id}` segment (empty for routes without one).
    pub(crate) fn id(&self) -> &str {
        self.captures.id.as_deref().unwrap_or("")
    }

    /// The body as JSON; an empty body reads as `{}` when `empty_is_object`.
    pub(crate) fn json<T: DeserializeOwned>(&self, empty_is_object: bool) -> Result<T, ApiError> {
        parse_json(self.body, empty_is_object)
    }

    /// A request header as text, if it is visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A numeric query parameter; its range is the service's to check.
    pub(crate) fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        crate::http::number(self.params, name)
    }
}
