use std::time::Duration;

use queue_proto::limits::DEFAULT_MAX_PAYLOAD;

use crate::callbacks::CallbackConfig;

/// How the HTTP layer behaves (the store's own settings are in
/// [`queue_core::Config`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bearer token; when set, every route but `/healthz` needs it.
    pub token: Option<String>,
    /// Largest request body in bytes (413 above it). Default 1 MiB.
    pub max_body: usize,
    /// Connections open at once. When the table is full, a new connection
    /// sheds the connection idle the longest, else the one whose request
    /// body has been arriving the longest; with every connection busy or
    /// streaming events, it waits in the listen backlog until one ends.
    /// Default 1024.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests. Default 10 s.
    pub shutdown_timeout: Duration,
    /// Interval of the keep-alive comment on idle event streams. Default 15 s.
    pub sse_keep_alive: Duration,
    /// Time a client has to send its request headers (from the moment the
    /// server waits for them, idle keep-alive time included). Default 30 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body, from the end of its
    /// headers; a slower body is answered 400 `invalid_request` and the
    /// connection closed. Default 30 s.
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request under way
    /// before the server closes it. Default 20 s. (Event streams are never
    /// idle.)
    pub idle_timeout: Duration,
    /// How callbacks are delivered.
    pub callbacks: CallbackConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body: DEFAULT_MAX_PAYLOAD,
            max_connections: 1024,
            shutdown_timeout: Duration::from_secs(10),
            sse_keep_alive: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(20),
            callbacks: CallbackConfig::default(),
        }
    }
}
