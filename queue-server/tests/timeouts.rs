//! Release 1.1's per-job deadlines over HTTP, on the manual clock: the
//! `timeout_ms` of an attempt (heartbeats cannot extend a lease past it),
//! the `ttl_ms` / `expires_at` of a job that waits to run, the new fields
//! of the job object, and their validation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use queue_core::{Config, ManualClock};
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};

/// 2026-11-25T00:00:00Z.
const T0: u64 = 1_795_564_800_000;

async fn manual_server(backend: Backend) -> (TestServer, ManualClock, Store) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let core = clock.clone();
    let server = TestServer::start_at(&dir, ServerConfig::default(), move |c: Config| {
        c.clock(core)
    })
    .await;
    (server, clock, dir)
}

/// Lets the server's timer act on what the clock moved past, by waiting
/// for `id` to reach `state` (a long-poll on the job, not a sleep).
async fn wait_state(server: &TestServer, id: &str, state: &str) -> Value {
    for _ in 0..100 {
        let job = server
            .client
            .get(&format!("/v1/jobs/{id}?wait_ms=200"))
            .await
            .json;
        if job["state"] == state {
            return job;
        }
    }
    panic!("job {id} never became {state}");
}

async fn every_job_object_carries_the_new_fields(backend: Backend) {
    let (server, _clock, _dir) = manual_server(backend).await;
    let c = &server.client;
    let plain = c.enqueue("q", json!({"payload": 1})).await;
    for field in [
        "group",
        "timeout_ms",
        "expires_at",
        "started_at",
        "schedule",
    ] {
        assert!(
            plain.get(field).is_some_and(Value::is_null),
            "{field}: {plain}"
        );
    }
    let full = c
        .enqueue(
            "q",
            json!({"payload": 2, "group": "tenant-7", "timeout_ms": 60000, "ttl_ms": 5000}),
        )
        .await;
    assert_eq!(full["group"], "tenant-7");
    assert_eq!(full["timeout_ms"], 60000);
    assert_eq!(full["expires_at"], T0 + 5000);
    let at = c
        .enqueue("q", json!({"payload": 3, "expires_at": T0 + 9000}))
        .await;
    assert_eq!(at["expires_at"], T0 + 9000);
    let leased = c.lease("q", 1, 30_000).await;
    assert_eq!(leased[0]["started_at"], T0);
    server.stop().await;
}

async fn bad_deadlines_are_refused_naming_the_field_and_change_nothing(backend: Backend) {
    let (server, _clock, _dir) = manual_server(backend).await;
    let c = &server.client;
    for (body, field) in [
        (json!({"payload": 1, "timeout_ms": 0}), "timeout_ms"),
        (
            json!({"payload": 1, "timeout_ms": 43_200_001u64}),
            "timeout_ms",
        ),
        (json!({"payload": 1, "timeout_ms": -1}), "timeout_ms"),
        (json!({"payload": 1, "timeout_ms": "1s"}), "timeout_ms"),
        (
            json!({"payload": 1, "ttl_ms": 1000, "expires_at": T0}),
            "ttl_ms",
        ),
        (
            json!({"payload": 1, "ttl_ms": 315_360_000_001u64}),
            "ttl_ms",
        ),
        (
            json!({"payload": 1, "expires_at": T0 + 315_360_000_001u64}),
            "expires_at",
        ),
        (json!({"payload": 1, "group": ""}), "group"),
        (json!({"payload": 1, "group": "g".repeat(129)}), "group"),
        (json!({"payload": 1, "group": 7}), "group"),
    ] {
        let reply = c.post("/v1/queues/q/jobs", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.code(), "invalid_request");
        assert!(reply.text.contains(field), "{body}: {}", reply.text);
        let batch = c
            .post(
                "/v1/queues/q/jobs/batch",
                json!({"jobs": [{"payload": 0}, body]}),
            )
            .await;
        assert_eq!(batch.status, 400);
    }
    assert_eq!(c.get("/v1/queues/q").await.json["ready"], 0);
    server.stop().await;
}

async fn heartbeats_stop_at_the_timeout_and_the_timer_fails_the_attempt(backend: Backend) {
    let (server, clock, _dir) = manual_server(backend).await;
    let c = &server.client;
    let job = c
        .enqueue(
            "q",
            json!({"payload": 1, "timeout_ms": 45000, "max_attempts": 1}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let leased = c.lease("q", 1, 30_000).await;
    let lease_id = leased[0]["lease_id"].as_str().unwrap().to_owned();
    assert_eq!(leased[0]["lease_expires_at"], T0 + 30_000);
    clock.advance(Duration::from_secs(20));
    let beat = c
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_id": lease_id, "lease_ms": 600000}),
        )
        .await;
    assert_eq!(beat.status, 200);
    assert_eq!(
        beat.json["lease_expires_at"],
        T0 + 45_000,
        "capped at the timeout"
    );
    clock.advance(Duration::from_secs(25));
    let late = c
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_id": lease_id}),
        )
        .await;
    assert_eq!((late.status, late.code()), (409, "lease_lost"));
    let dead = wait_state(&server, id, "dead").await;
    assert_eq!(dead["last_error"], "timed out after 45000 ms");
    assert_eq!(dead["attempts"], 1);
    server.stop().await;
}

async fn a_job_waiting_past_its_expiry_is_dead(backend: Backend) {
    let (server, clock, _dir) = manual_server(backend).await;
    let c = &server.client;
    let job = c.enqueue("q", json!({"payload": 1, "ttl_ms": 60000})).await;
    let id = job["id"].as_str().unwrap();
    let kept = c
        .enqueue("busy", json!({"payload": 2, "ttl_ms": 60000}))
        .await;
    let held = c.lease("busy", 1, 600_000).await;
    clock.advance(Duration::from_secs(60));
    let dead = wait_state(&server, id, "dead").await;
    assert_eq!(dead["last_error"], "expired before it ran");
    assert_eq!(dead["attempts"], 0);
    assert_eq!(dead["finished_at"], T0 + 60_000);
    let done = c
        .post(
            &format!("/v1/jobs/{}/complete", kept["id"].as_str().unwrap()),
            json!({"lease_id": held[0]["lease_id"]}),
        )
        .await;
    assert_eq!(
        done.json["state"], "completed",
        "a leased job is not affected"
    );
    let stats = c.get("/v1/queues/q").await.json;
    assert_eq!(
        (stats["dead"].as_u64(), stats["ready"].as_u64()),
        (Some(1), Some(0))
    );
    let metrics = c.get("/metrics").await.text;
    assert!(
        metrics.contains("queue_jobs_ttl_expired_total{queue=\"q\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("queue_jobs_ttl_expired_total{queue=\"busy\"} 0\n"),
        "{metrics}"
    );
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_object_carries_the_new_fields;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_deadlines_are_refused_naming_the_field_and_change_nothing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_stop_at_the_timeout_and_the_timer_fails_the_attempt;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_waiting_past_its_expiry_is_dead;
}
