//! Event streams of release 1.1: durable ids, resuming after a dropped
//! client and after a restart, the gap, type filters, progress, one job's
//! stream, correlation ids, and the WebSocket form of both paths.

// A test reports a failure by panicking; `unwrap` says where.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use queue_core::{Config, ManualClock};
use queue_server::ServerConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{Backend, Store, TestServer};
use crate::events::{Sse, Stream};

/// Enqueues, leases and completes a job on `queue`; returns its id.
async fn run_one(server: &TestServer, queue: &str, payload: Value) -> String {
    let c = &server.client;
    let job = c.enqueue(queue, json!({ "payload": payload })).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let leased = c.lease(queue, 1, 60_000).await;
    assert_eq!(leased[0]["id"], id.as_str());
    let done = c
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": leased[0]["lease_id"], "result": {"ok": payload}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    id
}

/// Reads `n` events.
async fn take(stream: &mut Stream, n: usize) -> Vec<Sse> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(stream.next_sse().await.expect("an event"));
    }
    out
}

async fn every_event_has_a_durable_id_and_a_dropped_client_resumes_without_gap_or_duplicate(
    backend: Backend,
) {
    let server = TestServer::start(backend).await;
    let mut stream = Stream::open(&server, "/v1/events").await;
    stream.next().await;
    let first = run_one(&server, "q", json!(1)).await;
    let seen = take(&mut stream, 3).await;
    let ids: Vec<u64> = seen.iter().map(|e| e.id.unwrap()).collect();
    for (event, id) in seen.iter().zip(&ids) {
        assert_eq!(event.data["event_id"], *id, "the id line is the event_id");
        assert_eq!(event.data["id"], first.as_str());
    }
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert_eq!(
        seen.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["ready", "leased", "completed"]
    );
    // The terminal event carries the result.
    assert_eq!(seen[2].data["result"], json!({"ok": 1}));
    drop(stream);

    // While nobody listens, two more jobs run.
    let second = run_one(&server, "q", json!(2)).await;
    let third = run_one(&server, "q", json!(3)).await;
    let last = ids[2].to_string();
    let mut resumed =
        Stream::open_with(&server, "/v1/events", &[("Last-Event-ID", last.as_str())]).await;
    resumed.next().await;
    let replayed = take(&mut resumed, 6).await;
    let want_ids: Vec<u64> = (ids[2] + 1..=ids[2] + 6).collect();
    assert_eq!(
        replayed.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        want_ids,
        "every event after the last one seen, once"
    );
    let jobs: Vec<&str> = replayed
        .iter()
        .map(|e| e.data["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        [&second, &second, &second, &third, &third, &third].map(String::as_str)
    );
    // Then live, with no duplicate.
    let fourth = server.client.enqueue("q", json!({"payload": 4})).await;
    let live = resumed.next_sse().await.unwrap();
    assert_eq!(live.id, Some(ids[2] + 7));
    assert_eq!(live.data["id"], fourth["id"]);

    // `after` does the same as Last-Event-ID; the header wins over it.
    let mut by_query = Stream::open(&server, &format!("/v1/events?after={}", ids[2] + 5)).await;
    by_query.next().await;
    assert_eq!(by_query.next_sse().await.unwrap().id, Some(ids[2] + 6));
    let header = (ids[2] + 6).to_string();
    let mut both = Stream::open_with(
        &server,
        "/v1/events?after=0",
        &[("last-event-id", header.as_str())],
    )
    .await;
    both.next().await;
    assert_eq!(both.next_sse().await.unwrap().id, Some(ids[2] + 7));
    server.stop().await;
}

async fn a_stream_resumes_after_a_server_restart(backend: Backend) {
    let dir = Store::new(backend);
    let server = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    let mut stream = Stream::open(&server, "/v1/events").await;
    stream.next().await;
    run_one(&server, "q", json!("a")).await;
    let seen = take(&mut stream, 2).await;
    let position = seen[1].id.unwrap();
    // Three events after the position are committed before the restart.
    let second = run_one(&server, "q", json!("b")).await;
    server.stop().await;
    drop(stream);
    let again = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    let after = position.to_string();
    let mut resumed =
        Stream::open_with(&again, "/v1/events", &[("Last-Event-ID", after.as_str())]).await;
    resumed.next().await;
    let replayed = take(&mut resumed, 4).await;
    assert_eq!(
        replayed.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>(),
        (position + 1..=position + 4).collect::<Vec<_>>()
    );
    assert_eq!(replayed[0].name, "completed", "the first job's last event");
    assert!(
        replayed[1..]
            .iter()
            .all(|e| e.data["id"] == second.as_str())
    );
    // New events after the restart continue the numbering.
    let third = again.client.enqueue("q", json!({"payload": "c"})).await;
    let live = resumed.next_sse().await.unwrap();
    assert_eq!(
        (live.id, &live.data["id"]),
        (Some(position + 5), &third["id"])
    );
    again.stop().await;
}

async fn resuming_from_a_pruned_id_starts_with_a_gap(backend: Backend) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(1_800_000_000_000);
    let core_clock = clock.clone();
    let server = TestServer::start_at(&dir, ServerConfig::default(), move |c: Config| {
        c.clock(core_clock)
            .background_timers(false)
            .event_retention(Duration::from_secs(60))
    })
    .await;
    for n in 0..3 {
        server.client.enqueue("q", json!({ "payload": n })).await;
    }
    clock.advance(Duration::from_secs(120));
    let report = server.app.queue().run_due().await.unwrap();
    assert_eq!(report.pruned_events, 3, "{report:?}");
    let kept = server.client.enqueue("q", json!({"payload": "new"})).await;
    let mut stream = Stream::open(&server, "/v1/events?after=1").await;
    stream.next().await;
    let gap = stream.next_sse().await.unwrap();
    assert_eq!(gap.name, "gap");
    assert_eq!(gap.data, json!({"after": 1, "oldest": 4}));
    assert_eq!(
        gap.id,
        Some(3),
        "a client resuming after the gap starts at the oldest"
    );
    let next = stream.next_sse().await.unwrap();
    assert_eq!((next.id, &next.data["id"]), (Some(4), &kept["id"]));
    // Resuming from the gap's own id: no gap any more.
    let mut after_gap = Stream::open_with(&server, "/v1/events", &[("Last-Event-ID", "3")]).await;
    after_gap.next().await;
    assert_eq!(after_gap.next_sse().await.unwrap().id, Some(4));
    server.stop().await;
}

async fn type_and_queue_filters_repeat_and_unknown_values_are_400(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut done = Stream::open(
        &server,
        "/v1/events?type=completed&type=dead&queue=a&queue=b",
    )
    .await;
    done.next().await;
    let mut progress = Stream::open(&server, "/v1/events?type=progress").await;
    progress.next().await;
    run_one(&server, "c", json!("other queue")).await;
    let a = run_one(&server, "a", json!("a")).await;
    // A dead job on b.
    let c = &server.client;
    let job = c
        .enqueue("b", json!({"payload": 1, "max_attempts": 1}))
        .await;
    let leased = c.lease("b", 1, 60_000).await;
    let failed = c
        .post(
            &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
            json!({"lease_id": leased[0]["lease_id"], "error": "broken"}),
        )
        .await;
    assert_eq!(failed.json["state"], "dead");
    let first = done.next_sse().await.unwrap();
    assert_eq!(
        (first.name.as_str(), &first.data["id"]),
        ("completed", &json!(a))
    );
    let second = done.next_sse().await.unwrap();
    assert_eq!(second.name, "dead");
    assert_eq!(
        second.data["last_error"], "broken",
        "terminal events carry the error"
    );
    // Progress: a heartbeat that reports it.
    let job = c.enqueue("p", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap();
    let leased = c.lease("p", 1, 60_000).await;
    let beat = c
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_id": leased[0]["lease_id"], "progress": {"done": 3, "of": 10}}),
        )
        .await;
    assert_eq!(beat.status, 200, "{}", beat.text);
    assert_eq!(beat.json["progress"], json!({"done": 3, "of": 10}));
    let reported = progress.next_sse().await.unwrap();
    assert_eq!(reported.name, "progress");
    assert_eq!(reported.data["id"], id);
    assert_eq!(reported.data["state"], "leased");
    assert_eq!(reported.data["progress"], json!({"done": 3, "of": 10}));
    for bad in [
        "/v1/events?type=finished",
        "/v1/events?type=completed&type=",
        "/v1/events?queue=ok&queue=bad%20name",
        "/v1/events?quue=a",
        "/v1/events?after=-1",
        "/v1/jobs/00000000000000ab/events?type=ready",
    ] {
        let reply = c.get(bad).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{bad}"
        );
    }
    let reply = c
        .send("GET", "/v1/events", None, &[("Last-Event-ID", "yesterday")])
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply.text.contains("Last-Event-ID"), "{}", reply.text);
    server.stop().await;
}

async fn one_jobs_stream_starts_with_its_state_and_ends_after_its_terminal_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let other = c.enqueue("q", json!({"payload": 2})).await;
    let mut stream = Stream::open(&server, &format!("/v1/jobs/{id}/events")).await;
    stream.next().await;
    let snapshot = stream.next_sse().await.unwrap();
    assert_eq!(snapshot.name, "ready");
    assert_eq!(snapshot.data["id"], id.as_str());
    let enqueue_event = snapshot.id.unwrap();
    assert_eq!(snapshot.data["event_id"], enqueue_event);
    // The snapshot's id is the job's own latest event (its enqueue), not
    // the other job's later one.
    let mut all = Stream::open(&server, "/v1/events?after=0").await;
    all.next().await;
    let history = take(&mut all, 2).await;
    assert_eq!(history[0].id, Some(enqueue_event));
    assert_eq!(history[1].data["id"], other["id"]);
    let leased = c.lease("q", 1, 60_000).await;
    assert_eq!(leased[0]["id"], id.as_str());
    c.post(
        &format!("/v1/jobs/{id}/fail"),
        json!({"lease_id": leased[0]["lease_id"], "error": "once", "retry_in_ms": 0}),
    )
    .await;
    let names: Vec<String> = {
        let mut names = Vec::new();
        while let Some(event) = stream.next_sse().await {
            assert_eq!(event.data["id"], id.as_str(), "only this job");
            names.push(event.name);
            if names.len() == 2 {
                break;
            }
        }
        names
    };
    assert_eq!(names[0], "leased");
    assert!(
        ["ready", "scheduled"].contains(&names[1].as_str()),
        "{names:?}"
    );
    let again = c.lease("q", 2, 60_000).await;
    let mine = again.iter().find(|j| j["id"] == id.as_str()).unwrap();
    c.post(
        &format!("/v1/jobs/{id}/complete"),
        json!({"lease_id": mine["lease_id"], "result": 42}),
    )
    .await;
    let leased_again = stream.next_sse().await.unwrap();
    assert_eq!(leased_again.name, "leased");
    let terminal = stream.next_sse().await.unwrap();
    assert_eq!(terminal.name, "completed");
    assert_eq!(terminal.data["result"], 42);
    assert_eq!(
        stream.next().await,
        None,
        "the stream ends after the terminal event"
    );

    // Opened after the job finished: its terminal event, then the end.
    let mut late = Stream::open(&server, &format!("/v1/jobs/{id}/events")).await;
    late.next().await;
    let only = late.next_sse().await.unwrap();
    assert_eq!((only.name.as_str(), only.id), ("completed", terminal.id));
    assert_eq!(only.data["result"], 42);
    assert_eq!(late.next().await, None);
    // Resuming after the terminal event: nothing more, the end.
    let after = terminal.id.unwrap().to_string();
    let mut resumed = Stream::open_with(
        &server,
        &format!("/v1/jobs/{id}/events"),
        &[("Last-Event-ID", after.as_str())],
    )
    .await;
    resumed.next().await;
    assert_eq!(resumed.next().await, None);
    // Resuming before it: the events since, up to the terminal one.
    let before = leased_again.id.unwrap() - 1;
    let mut replay = Stream::open(&server, &format!("/v1/jobs/{id}/events?after={before}")).await;
    replay.next().await;
    let names: Vec<String> = take(&mut replay, 2)
        .await
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["leased", "completed"]);
    assert_eq!(replay.next().await, None);
    let missing = c.get("/v1/jobs/00000000000fffff/events").await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    server.stop().await;
}

async fn a_request_id_given_at_enqueue_is_the_correlation_id_everywhere(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let mut stream = Stream::open(&server, "/v1/events").await;
    stream.next().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 1}"#),
            &[
                ("x-request-id", "req-8f2c"),
                ("traceparent", traceparent),
                ("tracestate", "vendor=1"),
            ],
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.header("x-request-id"), Some("req-8f2c"));
    assert_eq!(reply.json["correlation_id"], "req-8f2c");
    assert_eq!(
        reply.json["headers"],
        json!({"traceparent": traceparent, "tracestate": "vendor=1"})
    );
    let leased = c.lease("q", 1, 60_000).await;
    assert_eq!(leased[0]["correlation_id"], "req-8f2c");
    assert_eq!(leased[0]["headers"]["traceparent"], traceparent);
    let event = stream.next_sse().await.unwrap();
    assert_eq!(event.data["correlation_id"], "req-8f2c");
    let event = stream.next_sse().await.unwrap();
    assert_eq!(
        (event.name.as_str(), &event.data["correlation_id"]),
        ("leased", &json!("req-8f2c"))
    );

    // The body's correlation_id and headers win over the request's.
    let reply = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 2, "correlation_id": "order-7", "headers": {"traceparent": "mine", "tenant": "acme"}}"#),
            &[("x-request-id", "req-other"), ("traceparent", traceparent)],
        )
        .await;
    assert_eq!(reply.json["correlation_id"], "order-7");
    assert_eq!(
        reply.json["headers"],
        json!({"traceparent": "mine", "tenant": "acme"})
    );
    // A malformed trace context is ignored, not an error.
    let reply = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 3}"#),
            &[("traceparent", "not-a-trace")],
        )
        .await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.json["headers"], json!({}));
    // Without any, the server's own request id is the correlation id.
    let reply = c.post("/v1/queues/q/jobs", json!({"payload": 4})).await;
    assert_eq!(
        reply.json["correlation_id"].as_str(),
        reply.header("x-request-id")
    );
    // A batch: each item's own, else the request's.
    let reply = c
        .send(
            "POST",
            "/v1/queues/q/jobs/batch",
            Some(r#"{"jobs": [{"payload": 1}, {"payload": 2, "correlation_id": "own"}]}"#),
            &[("x-request-id", "batch-1")],
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json["jobs"][0]["correlation_id"], "batch-1");
    assert_eq!(reply.json["jobs"][1]["correlation_id"], "own");
    for (body, needle) in [
        (
            json!({"payload": 1, "correlation_id": ""}),
            "correlation_id",
        ),
        (
            json!({"payload": 1, "correlation_id": "a b"}),
            "correlation_id",
        ),
        (
            json!({"payload": 1, "headers": {"bad key": "v"}}),
            "headers",
        ),
        (
            json!({"payload": 1, "headers": {"k": 1}}),
            "expected a string",
        ),
        (
            json!({"payload": 1, "callback_url": "ftp://x/y"}),
            "callback_url",
        ),
        (
            json!({"payload": 1, "callback_url": "/relative"}),
            "callback_url",
        ),
    ] {
        let reply = c.post("/v1/queues/q/jobs", body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{body}"
        );
        assert!(reply.text.contains(needle), "{body}: {}", reply.text);
    }
    server.stop().await;
}

/// A WebSocket client of `path`.
async fn websocket(
    server: &TestServer,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the handshake succeeds");
    assert_eq!(response.status(), 101);
    socket
}

/// The next text message as JSON, skipping pings; `None` at a close.
async fn next_message(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")?
            .expect("a good frame");
        match message {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

async fn websocket_clients_get_the_same_events_as_sse(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            sse_keep_alive: Duration::from_millis(50),
            ..ServerConfig::default()
        },
    )
    .await;
    let mut sse = Stream::open(&server, "/v1/events").await;
    sse.next().await;
    let mut ws = websocket(&server, "/v1/events").await;
    let id = run_one(&server, "q", json!({"n": 1})).await;
    let mut from_sse = Vec::new();
    let mut from_ws = Vec::new();
    for _ in 0..3 {
        let event = sse.next_sse().await.unwrap();
        let mut data = event.data.clone();
        data["type"] = json!(event.name);
        from_sse.push(data);
        from_ws.push(next_message(&mut ws).await.unwrap());
    }
    assert_eq!(from_ws, from_sse, "the same events, type first");
    assert_eq!(from_ws[2]["type"], "completed");
    assert_eq!(from_ws[2]["result"], json!({"ok": {"n": 1}}));

    // Resume with `after`, filters as for SSE, and the job's own stream
    // that closes normally after its terminal event.
    let after = from_ws[0]["event_id"].as_u64().unwrap();
    let mut resumed = websocket(&server, &format!("/v1/events?after={after}&type=completed")).await;
    let replayed = next_message(&mut resumed).await.unwrap();
    assert_eq!(replayed, from_ws[2]);
    let mut one = websocket(&server, &format!("/v1/jobs/{id}/events")).await;
    let only = next_message(&mut one).await.unwrap();
    assert_eq!(
        (only["type"].as_str(), &only["event_id"]),
        (Some("completed"), &from_ws[2]["event_id"])
    );
    assert_eq!(
        next_message(&mut one).await,
        None,
        "closed after the terminal event"
    );

    // An idle connection is pinged; the socket answers pings itself.
    let ping = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Ping(_) = message {
            break message;
        }
    };
    assert!(matches!(ping, Message::Ping(_)));
    ws.send(Message::Close(None)).await.unwrap();

    let bad = server
        .client
        .send(
            "GET",
            "/v1/events",
            None,
            &[("upgrade", "websocket"), ("connection", "Upgrade")],
        )
        .await;
    assert_eq!(bad.status, 400, "no key, no version: {}", bad.text);
    server.stop().await;
}

async fn shutdown_closes_websockets_as_going_away(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ws = websocket(&server, "/v1/events").await;
    server.client.enqueue("q", json!({"payload": 1})).await;
    assert!(next_message(&mut ws).await.is_some());
    server.stop().await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1001);
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_has_a_durable_id_and_a_dropped_client_resumes_without_gap_or_duplicate;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_resumes_after_a_server_restart;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resuming_from_a_pruned_id_starts_with_a_gap;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn type_and_queue_filters_repeat_and_unknown_values_are_400;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_jobs_stream_starts_with_its_state_and_ends_after_its_terminal_event;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_id_given_at_enqueue_is_the_correlation_id_everywhere;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn websocket_clients_get_the_same_events_as_sse;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_websockets_as_going_away;
}
