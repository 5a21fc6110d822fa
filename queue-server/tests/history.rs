//! `GET /v1/queues/{queue}/history` over HTTP on the manual clock: the
//! answer's shape to the letter, merging to `step_ms`, the defaults, the
//! 400s (each naming its field and changing nothing), an unknown queue,
//! and a restart.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use queue_core::{Config, ManualClock};
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};

/// 2026-11-25T00:00:00Z.
const T0: u64 = 1_795_564_800_000;
const MINUTE: u64 = 60_000;

async fn manual_server(dir: &Store, clock: &ManualClock) -> TestServer {
    let core = clock.clone();
    TestServer::start_at(dir, ServerConfig::default(), move |c: Config| c.clock(core)).await
}

/// A point with no activity and the given depths.
fn idle(at: u64, ready: u64, scheduled: u64, leased: u64) -> Value {
    json!({"at": at, "enqueued": 0, "completed": 0, "failed": 0, "dead": 0, "expired": 0,
           "ready": ready, "scheduled": scheduled, "leased": leased,
           "run_ms_p50": null, "run_ms_p95": null, "wait_ms_p50": null, "wait_ms_p95": null})
}

async fn history_reports_minutes_and_merges_them_to_the_step(backend: Backend) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let server = manual_server(&dir, &clock).await;
    let c = &server.client;
    for n in 0..3 {
        c.enqueue("h", json!({"payload": n})).await;
    }
    c.enqueue("h", json!({"payload": 9, "delay_ms": 600_000}))
        .await;
    clock.advance(Duration::from_millis(MINUTE + 2_000));
    let leased = c.lease("h", 2, 30_000).await;
    assert_eq!(leased.len(), 2);
    clock.advance(Duration::from_millis(500));
    let id = leased[0]["id"].as_str().unwrap();
    let lease_id = leased[0]["lease_id"].as_str().unwrap();
    let done = c
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": lease_id}),
        )
        .await;
    assert_eq!(done.status, 200);
    let to = T0 + 3 * MINUTE - 1;
    let reply = c
        .get(&format!("/v1/queues/h/history?from={T0}&to={to}"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(
        reply.json,
        json!({"step_ms": MINUTE, "points": [
            {"at": T0, "enqueued": 4, "completed": 0, "failed": 0, "dead": 0, "expired": 0,
             "ready": 3, "scheduled": 1, "leased": 0,
             "run_ms_p50": null, "run_ms_p95": null, "wait_ms_p50": null, "wait_ms_p95": null},
            {"at": T0 + MINUTE, "enqueued": 0, "completed": 1, "failed": 0, "dead": 0,
             "expired": 0, "ready": 1, "scheduled": 1, "leased": 1,
             "run_ms_p50": 500, "run_ms_p95": 500, "wait_ms_p50": 62_000, "wait_ms_p95": 62_000},
            idle(T0 + 2 * MINUTE, 1, 1, 1),
        ]})
    );
    let merged = c
        .get(&format!(
            "/v1/queues/h/history?from={T0}&to={to}&step_ms=180000"
        ))
        .await
        .json;
    assert_eq!(merged["step_ms"], 180_000);
    let points = merged["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(
        (
            &points[0]["enqueued"],
            &points[0]["completed"],
            &points[0]["ready"]
        ),
        (&json!(4), &json!(1), &json!(1))
    );
    // An unknown queue reads as zeros.
    let unknown = c
        .get(&format!("/v1/queues/nobody/history?from={T0}&to={T0}"))
        .await;
    assert_eq!(
        unknown.json,
        json!({"step_ms": MINUTE, "points": [idle(T0, 0, 0, 0)]})
    );
    // The default: the last hour, one point per minute, the current one
    // last.
    let default = c.get("/v1/queues/h/history").await.json;
    let points = default["points"].as_array().unwrap();
    assert_eq!(points.len(), 61);
    assert_eq!(points[60]["at"], T0 + MINUTE);
    server.stop().await;
    // A restart keeps the history.
    let server = manual_server(&dir, &clock).await;
    let again = server
        .client
        .get(&format!("/v1/queues/h/history?from={T0}&to={to}"))
        .await;
    assert_eq!(again.json, reply.json);
    server.stop().await;
}

async fn bad_history_queries_are_400_naming_the_field(backend: Backend) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let server = manual_server(&dir, &clock).await;
    let c = &server.client;
    c.enqueue("h", json!({"payload": 1})).await;
    let week = 10_080 * MINUTE;
    for (query, field) in [
        ("step_ms=1000", "step_ms"),
        ("step_ms=0", "step_ms"),
        ("step_ms=90000", "step_ms"),
        ("step_ms=-60000", "step_ms"),
        ("step_ms=1e5", "step_ms"),
        ("from=abc", "from"),
        ("to=-1", "to"),
        (&format!("from={}&to={T0}", T0 + 1) as &str, "from"),
        (&format!("from={T0}&to={}", T0 + week), "from"),
        ("form=1", "form"),
        ("limit=10", "limit"),
    ] {
        let reply = c.get(&format!("/v1/queues/h/history?{query}")).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{query}"
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }
    let ok = c
        .get(&format!(
            "/v1/queues/h/history?from={T0}&to={}",
            T0 + week - 1
        ))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json["points"].as_array().unwrap().len(), 10_080);
    let bad_name = c.get("/v1/queues/bad%20name/history").await;
    assert_eq!(bad_name.status, 400);
    // Nothing changed.
    let stats = c.get("/v1/queues/h").await.json;
    assert_eq!(stats["ready"], 1);
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_reports_minutes_and_merges_them_to_the_step;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_history_queries_are_400_naming_the_field;
}
