//! Schedules over HTTP: `PUT` answers 201 then 200, validation names the
//! field and stores nothing, 404s, the object's fields, pause, resume,
//! trigger and delete, and ticks fired on the manual clock.

use std::time::Duration;

use queue_core::ManualClock;
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Client, Store, TestServer};

/// 2026-11-25T00:00:00Z.
const T0: u64 = 1_795_564_800_000;

const FIELDS: [&str; 13] = [
    "name",
    "queue",
    "cron",
    "every_ms",
    "timezone",
    "job",
    "catch_up",
    "paused",
    "next_run_at",
    "last_run_at",
    "last_job_id",
    "created_at",
    "updated_at",
];

async fn put(c: &Client, name: &str, body: Value) -> crate::common::Reply {
    c.send(
        "PUT",
        &format!("/v1/schedules/{name}"),
        Some(&body.to_string()),
        &[],
    )
    .await
}

async fn manual_server(clock: &ManualClock, dir: &Store) -> TestServer {
    let clock = clock.clone();
    TestServer::start_at(dir, ServerConfig::default(), move |c| c.clock(clock)).await
}

async fn put_creates_with_201_then_replaces_with_200(backend: Backend) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0 + 10_000);
    let server = manual_server(&clock, &dir).await;
    let c = &server.client;
    let body = json!({
        "queue": "reports",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "job": {"payload": {"report": "sales"}, "max_attempts": 3},
    });
    let created = put(c, "nightly", body.clone()).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let s = &created.json;
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = FIELDS.to_vec();
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(s["name"], "nightly");
    assert_eq!(s["queue"], "reports");
    assert_eq!(s["cron"], "0 3 * * *");
    assert!(s["every_ms"].is_null());
    assert_eq!(s["timezone"], "Europe/Paris");
    assert_eq!(
        s["job"],
        json!({"payload": {"report": "sales"}, "max_attempts": 3})
    );
    assert_eq!(s["catch_up"], "latest");
    assert_eq!(s["paused"], false);
    // 03:00 in Paris (CET, UTC+1) is 02:00 UTC.
    assert_eq!(s["next_run_at"], T0 + 2 * 3_600_000);
    assert!(s["last_run_at"].is_null() && s["last_job_id"].is_null());
    assert_eq!(
        (s["created_at"].as_u64(), s["updated_at"].as_u64()),
        (Some(T0 + 10_000), Some(T0 + 10_000))
    );

    clock.advance(Duration::from_secs(5));
    let replaced = put(c, "nightly", body).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.json["created_at"], T0 + 10_000);
    assert_eq!(replaced.json["updated_at"], T0 + 15_000);
    assert_eq!(replaced.json["next_run_at"], T0 + 2 * 3_600_000);

    let got = c.get("/v1/schedules/nightly").await;
    assert_eq!((got.status, &got.json), (200, &replaced.json));
    let every = put(
        c,
        "ping",
        json!({"queue": "q", "every_ms": 1000, "job": {"payload": null}, "catch_up": "all", "paused": true}),
    )
    .await;
    assert_eq!(every.status, 201, "{}", every.text);
    assert_eq!(every.json["every_ms"], 1000);
    assert!(every.json["cron"].is_null());
    assert_eq!(every.json["timezone"], "UTC");
    assert_eq!(every.json["catch_up"], "all");
    assert!(every.json["next_run_at"].is_null());
    let list = c.get("/v1/schedules").await;
    assert_eq!(list.status, 200);
    let names: Vec<&str> = list.json["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly", "ping"]);
    server.stop().await;
}

async fn a_bad_schedule_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let job = json!({"payload": 1});
    let cases = [
        ("s", json!({"queue": "q", "job": job}), "cron"),
        (
            "s",
            json!({"queue": "q", "cron": "* * * * *", "every_ms": 1000, "job": job}),
            "cron",
        ),
        (
            "s",
            json!({"queue": "q", "cron": "every tuesday", "job": job}),
            "cron",
        ),
        (
            "s",
            json!({"queue": "q", "cron": "0 0 31 2 *", "job": job}),
            "never fires",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 999, "job": job}),
            "every_ms",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 31_536_000_001u64, "job": job}),
            "every_ms",
        ),
        (
            "s",
            json!({"queue": "q", "cron": "@daily", "timezone": "Europe/Atlantis", "job": job}),
            "timezone",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "max_attempts": 0}}),
            "job.max_attempts",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "delay_ms": 5}}),
            "job.delay_ms",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "max_attempts": "three"}}),
            "job.max_attempts",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": "often", "job": job}),
            "every_ms",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "timeout_ms": 0}}),
            "job.timeout_ms",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1}, "catch_up": "some"}),
            "catch_up",
        ),
        (
            "s",
            json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1}, "prority": 1}),
            "prority",
        ),
        ("s", json!({"queue": "q", "every_ms": 1000}), "job"),
        (
            "s",
            json!({"queue": "no spaces", "every_ms": 1000, "job": job}),
            "queue",
        ),
        (
            "s.*",
            json!({"queue": "q", "every_ms": 1000, "job": job}),
            "name",
        ),
    ];
    for (name, body, field) in cases {
        let reply = put(c, name, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.code(), "invalid_request");
        let message = reply.json["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(field),
            "{body}: {message:?} should name {field}"
        );
    }
    let list = c.get("/v1/schedules").await;
    assert_eq!(list.json["schedules"], json!([]));
    server.stop().await;
}

async fn unknown_schedules_are_404_and_wrong_methods_405(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    for (method, path) in [
        ("GET", "/v1/schedules/nope"),
        ("DELETE", "/v1/schedules/nope"),
        ("POST", "/v1/schedules/nope/pause"),
        ("POST", "/v1/schedules/nope/resume"),
        ("POST", "/v1/schedules/nope/trigger"),
        ("GET", "/v1/schedules/bad%20name"),
    ] {
        let reply = c.send(method, path, None, &[]).await;
        assert_eq!(
            (reply.status, reply.code()),
            (404, "not_found"),
            "{method} {path}"
        );
    }
    let reply = c.send("POST", "/v1/schedules/x", None, &[]).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, PUT, DELETE"));
    server.stop().await;
}

async fn ticks_pause_resume_trigger_and_delete(backend: Backend) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let server = manual_server(&clock, &dir).await;
    let c = &server.client;
    let reply = put(
        c,
        "minutely",
        json!({"queue": "q", "cron": "* * * * *", "job": {"payload": {"n": 1}, "priority": 4}}),
    )
    .await;
    assert_eq!(reply.status, 201);
    clock.advance(Duration::from_secs(60));
    // The timer fires the tick; a waiting lease sees its job.
    let leased = c
        .post("/v1/queues/q/lease", json!({"wait_ms": 10_000}))
        .await;
    let jobs = leased.json["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{}", leased.text);
    let tick = T0 + 60_000;
    assert_eq!(
        jobs[0]["idempotency_key"],
        format!("schedule:minutely:{tick}")
    );
    assert_eq!(jobs[0]["run_at"], tick);
    assert_eq!(jobs[0]["schedule"], "minutely");
    assert_eq!(jobs[0]["priority"], 4);
    assert_eq!(jobs[0]["payload"], json!({"n": 1}));
    let schedule = c.get("/v1/schedules/minutely").await.json;
    assert_eq!(schedule["last_run_at"], tick);
    assert_eq!(schedule["last_job_id"], jobs[0]["id"]);
    assert_eq!(schedule["next_run_at"], tick + 60_000);

    let paused = c.post("/v1/schedules/minutely/pause", json!({})).await;
    assert_eq!(paused.status, 200);
    assert_eq!(
        (
            paused.json["paused"].clone(),
            paused.json["next_run_at"].clone()
        ),
        (json!(true), Value::Null)
    );
    let triggered = c.post("/v1/schedules/minutely/trigger", json!({})).await;
    assert_eq!(triggered.status, 202, "{}", triggered.text);
    assert_eq!(triggered.json["schedule"], "minutely");
    assert_eq!(triggered.json["state"], "ready");
    assert!(triggered.json["idempotency_key"].is_null());
    assert_eq!(
        c.get("/v1/schedules/minutely").await.json["last_job_id"],
        triggered.json["id"]
    );
    clock.advance(Duration::from_secs(30));
    let resumed = c.post("/v1/schedules/minutely/resume", json!({})).await;
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.json["paused"], false);
    assert_eq!(resumed.json["next_run_at"], T0 + 120_000);

    let deleted = c.delete("/v1/schedules/minutely").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json["name"], "minutely");
    assert_eq!(c.get("/v1/schedules/minutely").await.status, 404);
    // The jobs it enqueued stay.
    assert_eq!(
        c.job(triggered.json["id"].as_str().unwrap()).await["state"],
        "ready"
    );
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_creates_with_201_then_replaces_with_200;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_schedule_is_a_400_naming_the_field_and_stores_nothing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_schedules_are_404_and_wrong_methods_405;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ticks_pause_resume_trigger_and_delete;
}
