//! `GET /v1/events`: Server-Sent Events of state changes.
//!
//! Each stream is fed by a task that reads the core's event subscription and
//! forwards matching events into a small buffer drained by the connection.
//! Nothing here can slow the queue: the subscription skips ahead when the
//! task falls behind, and the task drops events (and says how many) when the
//! client does not keep up.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use queue_core::{Queue, RecvError};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::http::Body;

/// Which events a stream wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this queue's.
    pub queue: Option<String>,
    /// Only this job's.
    pub job: Option<String>,
}

/// Frames buffered per stream before the forwarding task starts dropping.
const BUFFER: usize = 256;

/// Starts a stream.
pub fn stream(
    queue: &Queue,
    filter: Filter,
    keep_alive: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Response<Body> {
    let mut events = queue.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(BUFFER);
    tokio::spawn(async move {
        let send = |text: String| tx.try_send(Ok(Frame::data(Bytes::from(text))));
        if send(": connected\n\n".to_owned()).is_err() {
            return;
        }
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        let mut dropped = 0u64;
        loop {
            let text = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = tx.closed() => return,
                _ = ticker.tick() => ": keep-alive\n\n".to_owned(),
                received = events.recv() => match received {
                    Ok(event) => {
                        let id = event.id.to_string();
                        if filter.queue.as_deref().is_some_and(|q| q != event.queue)
                            || filter.job.as_deref().is_some_and(|j| j != id)
                        {
                            continue;
                        }
                        let data = event.to_wire();
                        match serde_json::to_string(&data) {
                            Ok(json) => format!("event: {}\ndata: {json}\n\n", event.state),
                            Err(_) => continue,
                        }
                    }
                    Err(RecvError::Lagged(n)) => format!(": skipped {n} events\n\n"),
                    Err(RecvError::Closed) => return,
                },
            };
            let text = if dropped > 0 {
                format!(": dropped {dropped} events\n\n{text}")
            } else {
                text
            };
            match send(text) {
                Ok(()) => dropped = 0,
                Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
