//! Server-Sent Events, and graceful shutdown ending streams and long-polls.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};

/// An open event stream, read frame by frame.
pub(crate) struct Stream {
    body: Incoming,
    buffer: String,
}

/// One SSE event: its `id:`, `event:` and parsed `data:`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sse {
    pub(crate) id: Option<u64>,
    pub(crate) name: String,
    pub(crate) data: Value,
}

impl Stream {
    pub(crate) async fn open(server: &TestServer, path: &str) -> Stream {
        Self::open_with(server, path, &[]).await
    }

    pub(crate) async fn open_with(
        server: &TestServer,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Stream {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request = Request::get(format!("http://{}{path}", server.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Empty::new()).expect("request");
        let response = client.request(request).await.expect("stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next complete message (up to a blank line), or `None` when the
    /// stream ended.
    pub(crate) async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(message);
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame())
                .await
                .expect("an event within 30 s")?
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The next event (skipping comments), whole; within 30 s, however
    /// many keep-alive comments come meanwhile.
    pub(crate) async fn next_sse(&mut self) -> Option<Sse> {
        tokio::time::timeout(Duration::from_secs(30), self.next_sse_untimed())
            .await
            .expect("an event within 30 s")
    }

    async fn next_sse_untimed(&mut self) -> Option<Sse> {
        loop {
            let message = self.next().await?;
            let mut id = None;
            let mut name = None;
            let mut data = None;
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().expect("a numeric id"));
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                }
            }
            if let (Some(name), Some(data)) = (name, data) {
                return Some(Sse { id, name, data });
            }
        }
    }

    /// The next event (skipping comments): its name and data.
    pub(crate) async fn next_event(&mut self) -> Option<(String, Value)> {
        self.next_sse().await.map(|e| (e.name, e.data))
    }
}

async fn events_follow_each_state_change_with_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let mut all = Stream::open(&server, "/v1/events").await;
    assert_eq!(all.next().await.as_deref(), Some(": connected\nid: 0"));
    let mut only_b = Stream::open(&server, "/v1/events?queue=b").await;
    only_b.next().await;

    let a = c.enqueue("a", json!({"payload": 1})).await;
    let b = c.enqueue("b", json!({"payload": 2})).await;
    let id_a = a["id"].as_str().unwrap();
    let mut only_job = Stream::open(&server, &format!("/v1/events?job={id_a}")).await;
    only_job.next().await;
    let leased = c.lease("a", 1, 60000).await;
    c.post(
        &format!("/v1/jobs/{id_a}/complete"),
        json!({"lease_id": leased[0]["lease_id"]}),
    )
    .await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (name, data) = all.next_event().await.unwrap();
        assert_eq!(data["state"], name.as_str(), "the event name is the state");
        assert!(data["at"].as_u64().unwrap() > 0);
        seen.push((
            data["id"].as_str().unwrap().to_owned(),
            name,
            data["attempts"].as_u64().unwrap(),
        ));
    }
    let id_b = b["id"].as_str().unwrap();
    assert_eq!(
        seen,
        vec![
            (id_a.to_owned(), "ready".to_owned(), 0),
            (id_b.to_owned(), "ready".to_owned(), 0),
            (id_a.to_owned(), "leased".to_owned(), 1),
            (id_a.to_owned(), "completed".to_owned(), 1),
        ]
    );
    let (name, data) = only_b.next_event().await.unwrap();
    assert_eq!((name.as_str(), data["id"].as_str()), ("ready", Some(id_b)));
    let (name, _) = only_job.next_event().await.unwrap();
    assert_eq!(name, "leased");
    let (name, data) = only_job.next_event().await.unwrap();
    assert_eq!(
        (name.as_str(), data["queue"].as_str()),
        ("completed", Some("a"))
    );
    // The queue filter let nothing else through.
    c.enqueue("b", json!({"payload": 3})).await;
    let (_, data) = only_b.next_event().await.unwrap();
    assert_eq!(data["queue"], "b");
    server.stop().await;
}

async fn bad_filters_are_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    for path in ["/v1/events?queue=bad%20name", "/v1/events?job=nope"] {
        let reply = server.client.get(path).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}"
        );
    }
    server.stop().await;
}

async fn idle_streams_get_keep_alive_comments(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            sse_keep_alive: Duration::from_millis(20),
            ..ServerConfig::default()
        },
    )
    .await;
    let mut stream = Stream::open(&server, "/v1/events").await;
    assert_eq!(stream.next().await.as_deref(), Some(": connected\nid: 0"));
    assert_eq!(stream.next().await.as_deref(), Some(": keep-alive"));
    server.stop().await;
}

async fn shutdown_ends_streams_and_long_polls_and_keeps_the_data(backend: Backend) {
    let dir = Store::new(backend);
    let server = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    let c = server.client.clone();
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let mut stream = Stream::open(&server, "/v1/events").await;
    stream.next().await;
    let poll = {
        let c = c.clone();
        tokio::spawn(async move {
            c.post("/v1/queues/empty/lease", json!({"wait_ms": 60000}))
                .await
        })
    };
    let get = {
        let (c, id) = (c.clone(), job["id"].as_str().unwrap().to_owned());
        tokio::spawn(async move { c.get(&format!("/v1/jobs/{id}?wait_ms=60000")).await })
    };
    // Both long-polls are inside the server before it is told to stop.
    server.app.wait_in_flight(|n| n >= 2).await;
    let stopped = tokio::spawn(server.stop());
    let lease = poll.await.unwrap();
    assert_eq!(
        (lease.status, lease.json.clone()),
        (200, json!({"jobs": []}))
    );
    let got = get.await.unwrap();
    assert_eq!(
        (got.status, got.json["state"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(stream.next().await, None, "the event stream ends");
    stopped.await.unwrap();

    let again = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    assert_eq!(
        again.client.job(job["id"].as_str().unwrap()).await["state"],
        "ready"
    );
    again.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_follow_each_state_change_with_filters;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_filters_are_400;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_streams_get_keep_alive_comments;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_streams_and_long_polls_and_keeps_the_data;
}
