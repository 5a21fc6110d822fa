//! The HTTP server of the job queue: the v1 contract (`docs/HTTP.md` and
//! `docs/openapi.yaml` in the repository) on hyper 1.
//!
//! - [`App`]: the application. [`App::handle`] serves one request without a
//!   socket (authentication, routing, the endpoint, request id, log line,
//!   metrics), so tests can call it directly.
//! - [`run`]: the accept loop over a [`tokio::net::TcpListener`], one task
//!   per connection, a connection cap and graceful shutdown.
//! - [`routes`]: the route table ([`routes::table`]), one module per
//!   resource owning its routes and handlers.
//! - [`ApiError`]: an error answered to a client (the mapping from engine
//!   errors to the contract's codes is `queue_core::service`'s).
//! - [`cli::Args`]: the binary's flags.
//!
//! What each route does is written once, in `queue_core::service::Service`,
//! which the client SDK's embedded transport uses too; this crate adds HTTP
//! around it: bodies, query strings, headers, SSE, authentication, request
//! ids, logs and metrics. Long-polls (`lease` and `GET` with `wait_ms`,
//! enqueue with `wait_ms`) wait on the store's notifications and hold no
//! thread.
//!
//! ```no_run
//! use queue_server::{App, ServerConfig, run};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = queue_core::Queue::open("./queue-data")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! let app = App::new(queue, ServerConfig::default());
//! run(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod app;
mod call;
pub mod callbacks;
pub mod cli;
mod config;
mod conns;
mod error;
mod http;
mod metrics;
pub mod routes;
mod server;
mod signal;

pub use app::App;
pub use callbacks::CallbackConfig;
pub use config::ServerConfig;
pub use error::ApiError;
pub use server::run;
