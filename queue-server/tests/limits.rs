//! Queue limits over HTTP: `PATCH /v1/queues/{queue}` (validation naming
//! the field, `null` removing, absent keeping, an empty body), the `limits`
//! object in every stats answer, a restart keeping them, and the limits
//! holding for many workers leasing at once with long-polls woken when
//! capacity frees up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};

async fn patch(server: &TestServer, queue: &str, body: &str) -> crate::common::Reply {
    server
        .client
        .send("PATCH", &format!("/v1/queues/{queue}"), Some(body), &[])
        .await
}

fn no_limits() -> Value {
    json!({"max_leased": null, "rate_limit": null, "group_max_leased": null})
}

async fn patch_sets_limits_and_every_stats_answer_shows_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.client.enqueue("q", json!({"payload": 1})).await;
    let stats = server.client.get("/v1/queues/q").await;
    assert_eq!(stats.json["limits"], no_limits(), "{}", stats.text);

    let reply = patch(
        &server,
        "q",
        r#"{"max_leased": 32, "rate_limit": {"jobs": 100, "per_ms": 1000}, "group_max_leased": 1}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let limits = json!({"max_leased": 32, "rate_limit": {"jobs": 100, "per_ms": 1000}, "group_max_leased": 1});
    assert_eq!(reply.json["limits"], limits);
    assert_eq!(reply.json["queue"], "q");
    assert_eq!(reply.json["ready"], 1);
    assert_eq!(
        server.client.get("/v1/queues/q").await.json["limits"],
        limits
    );
    let list = server.client.get("/v1/queues").await;
    assert_eq!(list.json["queues"][0]["limits"], limits);
    let paused = server.client.post("/v1/queues/q/pause", json!({})).await;
    assert_eq!(paused.json["limits"], limits);
    assert_eq!(paused.json["paused"], true);

    // An empty body and `{}` change nothing and answer the stats.
    for body in ["", "{}"] {
        let reply = patch(&server, "q", body).await;
        assert_eq!(reply.status, 200, "{body:?}: {}", reply.text);
        assert_eq!(reply.json["limits"], limits);
    }
    // Absent keeps, null removes, `paused` works here too.
    let reply = patch(&server, "q", r#"{"rate_limit": null, "paused": false}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["limits"],
        json!({"max_leased": 32, "rate_limit": null, "group_max_leased": 1})
    );
    assert_eq!(reply.json["paused"], false);
    let reply = patch(
        &server,
        "q",
        r#"{"max_leased": null, "group_max_leased": null}"#,
    )
    .await;
    assert_eq!(reply.json["limits"], no_limits());
    // A queue is known once a setting is made on it.
    let reply = patch(&server, "fresh", r#"{"max_leased": 2}"#).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["ready"], 0);
    let names: Vec<Value> = server.client.get("/v1/queues").await.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].clone())
        .collect();
    assert_eq!(names, vec![json!("fresh"), json!("q")]);
    server.stop().await;
}

async fn each_bad_field_is_a_400_naming_it_and_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let set = patch(&server, "q", r#"{"max_leased": 5, "group_max_leased": 2}"#).await;
    assert_eq!(set.status, 200);
    let before = server.client.get("/v1/queues/q").await.json;
    let cases = [
        (r#"{"max_leased": 0}"#, "max_leased"),
        (r#"{"max_leased": 1000001}"#, "max_leased"),
        (r#"{"max_leased": -1}"#, "max_leased"),
        (r#"{"max_leased": 1.5}"#, "max_leased"),
        (r#"{"max_leased": "10"}"#, "max_leased"),
        (r#"{"max_leased": 99999999999}"#, "max_leased"),
        (r#"{"group_max_leased": 0}"#, "group_max_leased"),
        (r#"{"group_max_leased": true}"#, "group_max_leased"),
        (
            r#"{"rate_limit": {"jobs": 0, "per_ms": 1000}}"#,
            "rate_limit.jobs",
        ),
        (
            r#"{"rate_limit": {"jobs": 10, "per_ms": 0}}"#,
            "rate_limit.per_ms",
        ),
        (
            r#"{"rate_limit": {"jobs": 10, "per_ms": 86400001}}"#,
            "rate_limit.per_ms",
        ),
        (r#"{"rate_limit": {"jobs": 10}}"#, "rate_limit.per_ms"),
        (
            r#"{"rate_limit": {"jobs": null, "per_ms": 5}}"#,
            "rate_limit.jobs",
        ),
        (
            r#"{"rate_limit": {"jobs": 1, "per_ms": 5, "burst": 2}}"#,
            "rate_limit.burst",
        ),
        (r#"{"rate_limit": 100}"#, "rate_limit"),
        (r#"{"paused": "yes"}"#, "paused"),
        (r#"{"max_leasd": 3}"#, "max_leasd"),
        // A good field beside a bad one: nothing is applied.
        (
            r#"{"max_leased": 7, "group_max_leased": 0}"#,
            "group_max_leased",
        ),
        (
            r#"{"paused": true, "rate_limit": {"jobs": 0, "per_ms": 1}}"#,
            "rate_limit.jobs",
        ),
    ];
    for (body, field) in cases {
        let reply = patch(&server, "q", body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.code(), "invalid_request", "{body}");
        let message = reply.json["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{body}: {message:?} names {field}");
        assert_eq!(
            server.client.get("/v1/queues/q").await.json,
            before,
            "{body}"
        );
    }
    for body in ["[1]", "not json", "null"] {
        let reply = patch(&server, "q", body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
    }
    assert_eq!(patch(&server, "bad%20name", "{}").await.status, 400);
    server.stop().await;
}

async fn a_restart_keeps_the_limits(backend: Backend) {
    let dir = Store::new(backend);
    let config = queue_server::ServerConfig::default;
    let server = TestServer::start_at(&dir, config(), |c| c).await;
    let body =
        r#"{"max_leased": 2, "rate_limit": {"jobs": 10, "per_ms": 60000}, "group_max_leased": 1}"#;
    assert_eq!(patch(&server, "q", body).await.status, 200);
    for n in 0..4 {
        server.client.enqueue("q", json!({"payload": n})).await;
    }
    assert_eq!(server.client.lease("q", 10, 600_000).await.len(), 2);
    server.stop().await;

    let server = TestServer::start_at(&dir, config(), |c| c).await;
    let stats = server.client.get("/v1/queues/q").await.json;
    assert_eq!(
        stats["limits"],
        json!({"max_leased": 2, "rate_limit": {"jobs": 10, "per_ms": 60000}, "group_max_leased": 1})
    );
    assert_eq!(stats["leased"], 2);
    assert!(
        server.client.lease("q", 10, 600_000).await.is_empty(),
        "max_leased holds after the restart"
    );
    server.stop().await;
}

async fn limits_hold_for_many_workers_and_groups_run_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    const MAX: usize = 4;
    let set = patch(
        &server,
        "work",
        &format!(r#"{{"max_leased": {MAX}, "group_max_leased": 1}}"#),
    )
    .await;
    assert_eq!(set.status, 200);
    let total = 240usize;
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let jobs: Vec<Value> = (0..total)
        .map(|i| json!({"payload": i, "group": format!("g{}", i % 6)}))
        .collect();
    for chunk in jobs.chunks(120) {
        let reply = server
            .client
            .post("/v1/queues/work/jobs/batch", json!({"jobs": chunk}))
            .await;
        assert_eq!(reply.status, 202);
        for job in reply.json["jobs"].as_array().unwrap() {
            expected
                .entry(job["group"].as_str().unwrap().to_owned())
                .or_default()
                .push(job["id"].as_str().unwrap().to_owned());
        }
    }
    let held = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let order = Arc::new(Mutex::new(HashMap::<String, Vec<String>>::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..10)
        .map(|w| {
            let c = server.client.clone();
            let (held, order, done) = (Arc::clone(&held), Arc::clone(&order), Arc::clone(&done));
            tokio::spawn(async move {
                // Bounded: at most one round per job and worker.
                for _ in 0..total {
                    if done.load(std::sync::atomic::Ordering::SeqCst) >= total {
                        return;
                    }
                    // Long-polls: a worker woken by a completion takes the
                    // capacity it freed.
                    let reply = c
                        .post(
                            "/v1/queues/work/lease",
                            json!({"max_jobs": 1 + w % 3, "wait_ms": 1000}),
                        )
                        .await;
                    assert_eq!(reply.status, 200);
                    let jobs = reply.json["jobs"].as_array().cloned().unwrap_or_default();
                    {
                        let mut held = held.lock().unwrap();
                        for job in &jobs {
                            let group = job["group"].as_str().unwrap().to_owned();
                            let count = held.entry(group.clone()).or_default();
                            *count += 1;
                            assert_eq!(*count, 1, "two jobs of {group} leased at once");
                        }
                        let all: usize = held.values().sum();
                        assert!(all <= MAX, "{all} leased at once");
                    }
                    for job in jobs {
                        let id = job["id"].as_str().unwrap().to_owned();
                        let group = job["group"].as_str().unwrap().to_owned();
                        order
                            .lock()
                            .unwrap()
                            .entry(group.clone())
                            .or_default()
                            .push(id.clone());
                        *held.lock().unwrap().get_mut(&group).unwrap() -= 1;
                        let reply = c
                            .post(
                                &format!("/v1/jobs/{id}/complete"),
                                json!({"lease_id": job["lease_id"]}),
                            )
                            .await;
                        assert_eq!(reply.status, 200, "{}", reply.text);
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), total);
    assert_eq!(
        *order.lock().unwrap(),
        expected,
        "each group ran in enqueue order"
    );
    server.stop().await;
}

async fn a_long_poll_waiting_on_max_leased_wakes_when_a_job_completes(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(
        patch(&server, "q", r#"{"max_leased": 1}"#).await.status,
        200
    );
    server.client.enqueue("q", json!({"payload": 1})).await;
    let second = server.client.enqueue("q", json!({"payload": 2})).await;
    let held = server.client.lease("q", 1, 600_000).await.remove(0);
    let c = server.client.clone();
    let waiter = tokio::spawn(async move {
        c.post("/v1/queues/q/lease", json!({"wait_ms": 60000}))
            .await
    });
    // Whether the waiter is parked yet or not, it must get the job: at
    // once if it looks after the completion, woken by it otherwise (the
    // core's tests make sure of the wake-up itself).
    let done = server
        .client
        .post(
            &format!("/v1/jobs/{}/complete", held["id"].as_str().unwrap()),
            json!({"lease_id": held["lease_id"]}),
        )
        .await;
    assert_eq!(done.status, 200);
    let reply = waiter.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["jobs"][0]["id"], second["id"]);
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patch_sets_limits_and_every_stats_answer_shows_them;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_bad_field_is_a_400_naming_it_and_changes_nothing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_keeps_the_limits;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_hold_for_many_workers_and_groups_run_in_order;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_waiting_on_max_leased_wakes_when_a_job_completes;
}
