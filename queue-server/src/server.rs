//! The accept loop: one task per connection, a connection cap, graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;

/// Serves `app` on `listener`, and delivers its callbacks, until `shutdown`
/// completes, then shuts down gracefully: stops accepting, ends long-polls
/// and event streams, lets in-flight requests and callback attempts finish
/// within [`ServerConfig::shutdown_timeout`](crate::ServerConfig::shutdown_timeout),
/// and flushes the store. Jobs leased at that moment simply expire later;
/// callback attempts cut short are made again at the next start.
///
/// # Errors
/// If TLS for callbacks cannot be set up, or the final flush fails.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> Result<(), queue_core::Error> {
    // Connections watch this to close gracefully (finish the request in
    // flight, then close); each holds a permit until it ends, so holding
    // every permit means every connection has closed.
    let closing = tokio::sync::watch::Sender::new(false);
    let max_connections = app.config().max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let callbacks = &app.config().callbacks;
    let sender = crate::callbacks::Sender::new(
        callbacks.secrets.clone(),
        callbacks.hosts,
        callbacks.timeout,
        callbacks.concurrency,
    )
    .map_err(|e| queue_core::Error::Internal(format!("TLS for callbacks: {e}")))?;
    let stop_callbacks = tokio::sync::watch::Sender::new(false);
    let dispatcher = tokio::spawn(crate::callbacks::run(
        app.queue().clone(),
        sender,
        callbacks.clone(),
        app.callback_metrics(),
        stop_callbacks.subscribe(),
        app.config().shutdown_timeout,
    ));
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
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = closing.subscribe();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = closing.wait_for(|closing| *closing) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending long-polls and event streams");
    app.begin_shutdown();
    closing.send_replace(true);
    stop_callbacks.send_replace(true);
    let all_closed = permits.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.config().shutdown_timeout) => {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
    if dispatcher.await.is_err() {
        tracing::error!("the callback dispatcher ended abnormally");
    }
    app.queue().flush().await
}
