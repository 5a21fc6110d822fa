//! The accept loop: one task per connection, a connection cap, graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;

/// Serves `app` on `listener` until `shutdown` completes, then shuts down
/// gracefully: stops accepting, ends long-polls and event streams, lets
/// in-flight requests finish within [`ServerConfig::shutdown_timeout`](crate::ServerConfig::shutdown_timeout),
/// and flushes the store. Jobs leased at that moment simply expire later.
///
/// # Errors
/// Only if the final flush fails.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> Result<(), queue_core::Error> {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(app.config().max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service_app = app.clone();
        let service = service_fn(move |request| {
            let app = service_app.clone();
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(app.config().header_read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending long-polls and event streams");
    app.begin_shutdown();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.config().shutdown_timeout) => {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
    app.queue().flush().await
}
