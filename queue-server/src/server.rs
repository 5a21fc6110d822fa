//! The accept loop: one task per connection, the connection table (a cap
//! that sheds idle and stalled connections, see [`crate::conns`]), idle
//! timeouts, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;
use crate::conns::{Conn, Shed, State, Table};
use crate::http::Body;

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
    // flight, then close); each holds a slot in the table until it ends, so
    // an empty table means every connection has closed.
    let closing = tokio::sync::watch::Sender::new(false);
    let table = Table::new(app.config().max_connections);
    let reaper = tokio::spawn(reap_idle(
        Arc::clone(&table),
        app.config().idle_timeout,
        closing.subscribe(),
    ));
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
        // A slot for it: at once, or by shedding an idle or stalled
        // connection, or once a busy one ends.
        let (conn, shed) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            admitted = table.admit() => admitted,
        };
        let _ = stream.set_nodelay(true);
        let service_app = app.clone();
        let service_conn = conn.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            let app = service_app.clone();
            let conn = service_conn.clone();
            async move {
                conn.set(State::Busy);
                request.extensions_mut().insert(conn.clone());
                let response = app.handle(request).await;
                Ok::<_, Infallible>(track(response, conn))
            }
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
            let mut shed = shed;
            let mut stalled = shed.clone();
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = closing.wait_for(|closing| *closing) => None,
                told = shed.wait_for(Option::is_some) => match told.map(|t| *t) {
                    Ok(Some(Shed::Stalled)) => {
                        tracing::info!(%peer, "connection table full: dropped a connection stalled in its request body");
                        drop(conn);
                        return;
                    }
                    Ok(_) => {
                        tracing::debug!(%peer, "closing an idle connection");
                        None
                    }
                    // The table keeps the sender while the slot is held.
                    Err(_) => None,
                },
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    // Closes at once if idle; else after the request under
                    // way, unless its body stalls under a full table.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        ended = connection.as_mut() => ended,
                        _ = stalled.wait_for(|t| *t == Some(Shed::Stalled)) => {
                            tracing::info!(%peer, "connection table full: dropped a connection stalled in its request body");
                            drop(conn);
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(conn);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending long-polls and event streams");
    app.begin_shutdown();
    closing.send_replace(true);
    stop_callbacks.send_replace(true);
    tokio::select! {
        () = table.all_closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(app.config().shutdown_timeout) => {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
    reaper.abort();
    if dispatcher.await.is_err() {
        tracing::error!("the callback dispatcher ended abnormally");
    }
    app.queue().flush().await
}

/// Closes connections idle for longer than `idle_timeout`, checking a few
/// times per timeout (at most every second), until shutdown.
async fn reap_idle(
    table: Arc<Table>,
    idle_timeout: std::time::Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let every = (idle_timeout / 4).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_secs(1),
    );
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => return,
            _ = ticker.tick() => {
                let shed = table.shed_idle_since(idle_timeout);
                if shed > 0 {
                    tracing::debug!(connections = shed, "closed idle connections");
                }
            }
        }
    }
}

/// Marks the connection as streaming while an event stream is open, and as
/// idle once the answer is written (its body dropped). An upgraded
/// WebSocket keeps its own handle on the slot (see the events route).
fn track(response: Response<Body>, conn: Conn) -> Response<Body> {
    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let streaming = upgraded
        || response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        conn.set(State::Stream);
    }
    if upgraded {
        return response;
    }
    response.map(|body| Tracked { body, conn }.boxed())
}

/// A response body that marks its connection idle when dropped.
struct Tracked {
    body: Body,
    conn: Conn,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conn.set(State::Idle);
    }
}
