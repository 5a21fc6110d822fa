//! `GET /v1/events`: Server-Sent Events of state changes.
//!
//! Each stream is fed by a task that reads the service's event feed (the
//! durable event log, filtered) and forwards matching events into a small
//! buffer drained by the connection. Nothing here can slow the queue: the
//! feed reads the log at its own pace, and the task drops events (and says
//! how many) when the client does not keep up.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use queue_core::service::{EventFeed, EventQuery, FeedItem};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::http::Body;

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/events`
    Stream,
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[RouteSpec {
    pattern: "/v1/events",
    methods: &[("GET", Endpoint::Stream)],
}];

/// Frames buffered per stream before the forwarding task starts dropping.
const BUFFER: usize = 256;

pub(crate) fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    match endpoint {
        Endpoint::Stream => {
            let feed = call.service().events(EventQuery {
                queue: call.params.get("queue").cloned(),
                job: call.params.get("job").cloned(),
            })?;
            Ok(stream(feed, call.shared.config.sse_keep_alive))
        }
    }
}

/// The SSE response over `feed`; it ends when the feed does (shutdown) or
/// the client goes away.
fn stream(mut feed: EventFeed, keep_alive: Duration) -> Response<Body> {
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
                () = tx.closed() => return,
                _ = ticker.tick() => ": keep-alive\n\n".to_owned(),
                item = feed.next() => match item {
                    Some(FeedItem::Event(event)) => match serde_json::to_string(&event) {
                        Ok(json) => format!("event: {}\ndata: {json}\n\n", event.state),
                        Err(_) => continue,
                    },
                    Some(FeedItem::Skipped(n)) => format!(": skipped {n} events\n\n"),
                    None => return,
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
