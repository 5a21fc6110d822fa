//! The event streams: `GET /v1/events` (every job's events, filtered) and
//! `GET /v1/jobs/{id}/events` (one job's, ending after its terminal event),
//! as Server-Sent Events or, with `Upgrade: websocket`, as WebSocket text
//! messages.
//!
//! Each stream reads the service's event feed: the durable event log, from
//! the point the client resumes after (`Last-Event-ID` or `after`). The
//! forwarding waits for the client instead of dropping events: a slow
//! client only falls behind in the log (nothing is buffered for it beyond
//! a few frames), and if it falls behind the retained events it is told
//! with a `gap` event. Nothing here can slow the queue.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use queue_core::service::{EventFeed, EventQuery, FeedItem};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::spec::RouteSpec;
use crate::call::{Call, Handled};
use crate::error::ApiError;
use crate::http::Body;
use crate::metrics::{StreamOpen, Transport};

/// The endpoints of this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/events`
    Stream,
    /// `GET /v1/jobs/{id}/events`
    JobStream,
}

/// The routes of this resource.
pub static ROUTES: &[RouteSpec<Endpoint>] = &[
    RouteSpec {
        pattern: "/v1/events",
        methods: &[("GET", Endpoint::Stream)],
    },
    RouteSpec {
        pattern: "/v1/jobs/{id}/events",
        methods: &[("GET", Endpoint::JobStream)],
    },
];

/// SSE frames buffered per stream between the feed and the connection.
const BUFFER: usize = 16;

/// The largest message a WebSocket client may send us (it has nothing to
/// say beyond control frames).
const WS_MAX_INCOMING: usize = 64 * 1024;

/// Bytes a WebSocket may hold unsent before the stream waits for the client.
const WS_WRITE_BUFFER: usize = 256 * 1024;

pub(crate) async fn handle(endpoint: Endpoint, call: &Call<'_>) -> Handled {
    let service = call.service();
    let feed = match endpoint {
        Endpoint::Stream => service.events(EventQuery {
            queues: call.params.all("queue"),
            job: call.params.get("job").map(str::to_owned),
            types: call.params.all("type"),
            after: resume_after(call)?,
        })?,
        Endpoint::JobStream => service.job_events(call.id(), resume_after(call)?).await?,
    };
    if wants_websocket(call) {
        return websocket(call, feed);
    }
    let open = call.shared.http.stream_opened(Transport::Sse);
    Ok(sse(feed, call.shared.config.sse_keep_alive, open))
}

/// Where the client resumes: `Last-Event-ID` (what a reconnecting
/// `EventSource` sends), else `after`.
fn resume_after(call: &Call<'_>) -> Result<Option<u64>, ApiError> {
    if let Some(raw) = call.headers.get("last-event-id") {
        let text = raw.to_str().unwrap_or("").trim();
        if text.is_empty() {
            // An EventSource that has seen no id yet may send it empty.
            return call.number("after");
        }
        return text.parse::<u64>().map(Some).map_err(|_| {
            ApiError::invalid(format!(
                "Last-Event-ID must be an event id (a decimal integer), got {text:?}"
            ))
        });
    }
    call.number("after")
}

/// One feed item as an SSE frame: `id:`, `event:` and `data:` lines.
fn sse_frame(item: &FeedItem) -> Option<String> {
    match item {
        FeedItem::Event(event) => {
            let json = serde_json::to_string(event).ok()?;
            Some(format!(
                "id: {}\nevent: {}\ndata: {json}\n\n",
                event.event_id,
                event.kind().as_str()
            ))
        }
        FeedItem::Gap(gap) => {
            let json = serde_json::to_string(gap).ok()?;
            // The gap's id is the last one it covers, so a client that
            // reconnects after it resumes from the oldest retained event.
            Some(format!(
                "id: {}\nevent: gap\ndata: {json}\n\n",
                gap.oldest.saturating_sub(1)
            ))
        }
    }
}

/// One feed item as a WebSocket text message: `{"type": …, …data}`.
fn ws_text(item: &FeedItem) -> Option<String> {
    let (kind, json) = match item {
        FeedItem::Event(event) => (event.kind().as_str(), serde_json::to_string(event).ok()?),
        FeedItem::Gap(gap) => ("gap", serde_json::to_string(gap).ok()?),
    };
    // Both serialize as non-empty objects: splice the type in front.
    let fields = json.strip_prefix('{')?;
    Some(format!("{{\"type\":\"{kind}\",{fields}"))
}

/// The SSE response over `feed`; it ends when the feed does (shutdown, or
/// one job's terminal event) or the client goes away.
fn sse(mut feed: EventFeed, keep_alive: Duration, open: StreamOpen) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(BUFFER);
    tokio::spawn(async move {
        // Counted open until the stream ends or the client leaves.
        let _open = open;
        let frame = |text: String| Ok(Frame::data(Bytes::from(text)));
        // The feed's position as an `id:` with no data: an EventSource
        // (or the SDK) that drops before the first event resumes from
        // here, not from whatever is newest when it reconnects.
        let hello = format!(": connected\nid: {}\n\n", feed.position());
        if tx.send(frame(hello)).await.is_err() {
            return;
        }
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        loop {
            let text = tokio::select! {
                () = tx.closed() => return,
                _ = ticker.tick() => ": keep-alive\n\n".to_owned(),
                item = feed.next() => match item {
                    Some(item) => match sse_frame(&item) {
                        Some(text) => text,
                        None => continue,
                    },
                    None => return,
                },
            };
            // Waits while the client is slow: the feed stays behind in the
            // log rather than in memory.
            if tx.send(frame(text)).await.is_err() {
                return;
            }
            ticker.reset();
        }
    });
    let body = BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx)));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
fn wants_websocket(call: &Call<'_>) -> bool {
    call.headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The WebSocket handshake's answer (`101 Switching Protocols`), and the
/// task that serves the connection once hyper hands it over.
fn websocket(call: &Call<'_>, feed: EventFeed) -> Handled {
    let upgrades_connection = call
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("upgrade"));
    if !upgrades_connection {
        return Err(ApiError::invalid(
            "a WebSocket handshake needs Connection: Upgrade",
        ));
    }
    if call.header("sec-websocket-version") != Some("13") {
        return Err(ApiError::invalid(
            "a WebSocket handshake needs Sec-WebSocket-Version: 13",
        ));
    }
    let key = call
        .headers
        .get("sec-websocket-key")
        .ok_or_else(|| ApiError::invalid("a WebSocket handshake needs Sec-WebSocket-Key"))?;
    let accept =
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(ApiError::internal)?;
    let upgrade = call
        .upgrade
        .lock()
        .map_err(|_| ApiError::internal("the upgrade lock is poisoned"))?
        .take()
        .ok_or_else(|| ApiError::invalid("this connection cannot be upgraded"))?;
    let keep_alive = call.shared.config.sse_keep_alive;
    let stopping = call.service().stopping();
    let open = call.shared.http.stream_opened(Transport::WebSocket);
    // The socket keeps its slot in the connection table while it is open.
    let conn = call.conn.cloned();
    tokio::spawn(async move {
        let _open = open;
        let _conn = conn;
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(WS_MAX_INCOMING);
        config.max_frame_size = Some(WS_MAX_INCOMING);
        config.max_write_buffer_size = WS_WRITE_BUFFER;
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve_websocket(socket, feed, keep_alive, stopping).await;
    });
    let mut response = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert("sec-websocket-accept", accept);
    Ok(response)
}

/// Sends the feed's items as text messages and pings an idle connection
/// every `keep_alive`, until the feed ends (a normal close), shutdown
/// begins (going away), or the client leaves.
async fn serve_websocket<S>(
    mut socket: WebSocketStream<S>,
    mut feed: EventFeed,
    keep_alive: Duration,
    stopping: impl std::future::Future<Output = ()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stopping = std::pin::pin!(stopping);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    let close = |code: CloseCode, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        let message = tokio::select! {
            biased;
            () = &mut stopping => close(CloseCode::Away, "the server is shutting down"),
            incoming = socket.next() => match incoming {
                // Pings are answered by the socket itself; text from the
                // client has no meaning here.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = ticker.tick() => Message::Ping(Bytes::new()),
            item = feed.next() => match item {
                Some(item) => match ws_text(&item) {
                    Some(text) => Message::text(text),
                    None => continue,
                },
                None => close(CloseCode::Normal, "the stream has ended"),
            },
        };
        let closing = matches!(message, Message::Close(_));
        let sent = tokio::select! {
            biased;
            () = &mut stopping, if !closing => {
                let _ = socket.close(None).await;
                return;
            }
            sent = socket.send(message) => sent,
        };
        if sent.is_err() || closing {
            let _ = socket.flush().await;
            return;
        }
        ticker.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_proto::{Event, Gap, JobState};

    fn event() -> Event {
        Event {
            event_id: 42,
            id: "00000000000000ab".into(),
            queue: "emails".into(),
            state: JobState::Completed,
            attempts: 1,
            at: 1_764_000_000_000,
            correlation_id: Some("req-1".into()),
            result: serde_json::value::to_raw_value(&serde_json::json!({"ok": true})).ok(),
            last_error: None,
            progress: None,
        }
    }

    #[test]
    fn sse_frames_carry_the_id_and_the_type() {
        let text = sse_frame(&FeedItem::Event(event())).unwrap();
        assert!(
            text.starts_with("id: 42\nevent: completed\ndata: {"),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
        assert!(text.contains("\"event_id\":42"));
        assert!(text.contains("\"correlation_id\":\"req-1\""));
        assert!(text.contains("\"result\":{\"ok\":true}"));
        let gap = sse_frame(&FeedItem::Gap(Gap {
            after: 3,
            oldest: 10,
        }))
        .unwrap();
        assert_eq!(
            gap,
            "id: 9\nevent: gap\ndata: {\"after\":3,\"oldest\":10}\n\n"
        );
    }

    #[test]
    fn websocket_messages_lead_with_the_type() {
        let text = ws_text(&FeedItem::Event(event())).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "completed");
        assert_eq!(value["event_id"], 42);
        assert_eq!(value["result"]["ok"], true);
        let mut progress = event();
        progress.state = JobState::Leased;
        progress.result = None;
        progress.progress = serde_json::value::to_raw_value(&serde_json::json!(0.5)).ok();
        let value: serde_json::Value =
            serde_json::from_str(&ws_text(&FeedItem::Event(progress)).unwrap()).unwrap();
        assert_eq!(value["type"], "progress");
        assert_eq!(value["progress"], 0.5);
        let gap = ws_text(&FeedItem::Gap(Gap {
            after: 3,
            oldest: 10,
        }))
        .unwrap();
        assert_eq!(gap, r#"{"type":"gap","after":3,"oldest":10}"#);
    }
}
