//! What an endpoint sees of a request, and of the server: [`Call`].

use http::{HeaderMap, Response};
use queue_core::service::Service;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

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
    pub(crate) in_flight: watch::Sender<usize>,
    /// Callback outcomes.
    pub(crate) callbacks: std::sync::Arc<crate::callbacks::CallbackMetrics>,
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
