//! The HTTP server of the job queue: the v1 contract (`shared/API.md`,
//! `docs/openapi.yaml`) on hyper 1.
//!
//! - [`App`]: the application. [`App::handle`] serves one request without a
//!   socket (authentication, routing, the endpoint, request id, log line,
//!   metrics), so tests can call it directly.
//! - [`run`]: the accept loop over a [`tokio::net::TcpListener`], one task
//!   per connection, a connection cap and graceful shutdown.
//! - [`routes`]: the route table ([`routes::ROUTES`]); [`ApiError`]: the one
//!   mapping from failures to status codes.
//! - [`cli::Args`]: the binary's flags.
//!
//! Blocking store calls run on tokio's blocking pool; long-polls (`lease`
//! and `GET` with `wait_ms`, enqueue with `wait_ms`) wait on the store's
//! notifications and hold no thread.
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
pub mod cli;
mod config;
mod error;
mod http;
mod metrics;
pub mod routes;
mod server;
mod sse;

pub use app::App;
pub use config::ServerConfig;
pub use error::ApiError;
pub use server::run;
