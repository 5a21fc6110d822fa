//! Every endpoint, default and error code of the contract, with several
//! jobs in flight.

use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};
use queue_server::ServerConfig;

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn enqueue_answers_202_with_location_and_the_job(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let reply = c
        .post("/v1/queues/emails/jobs", json!({"payload": {"to": "ada"}}))
        .await;
    assert_eq!(reply.status, 202);
    let id = reply.str("id");
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let job = &reply.json;
    assert_eq!(job["queue"], "emails");
    assert_eq!(job["state"], "ready");
    assert_eq!(job["payload"], json!({"to": "ada"}));
    assert_eq!(
        (job["priority"].as_i64(), job["attempts"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(job["max_attempts"], 5);
    assert_eq!(job["run_at"], job["created_at"]);
    for null in [
        "lease_expires_at",
        "idempotency_key",
        "result",
        "last_error",
    ] {
        assert!(job[null].is_null(), "{null} must be null");
    }
    assert!(job.get("lease_id").is_none());
    let second = c.enqueue("emails", json!({"payload": [1, 2]})).await;
    assert!(second["id"].as_str() > Some(id.as_str()), "ids increase");
    assert_eq!(c.job(&id).await, reply.json);
    server.stop().await;
}

async fn enqueue_options_are_honoured(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let delayed = c
        .enqueue(
            "q",
            json!({"payload": 1, "delay_ms": 60000, "priority": -3, "max_attempts": 2, "backoff_ms": 50}),
        )
        .await;
    assert_eq!(delayed["state"], "scheduled");
    assert_eq!(
        delayed["run_at"].as_u64().unwrap() - delayed["created_at"].as_u64().unwrap(),
        60000
    );
    assert_eq!(
        (
            delayed["priority"].as_i64(),
            delayed["max_attempts"].as_u64()
        ),
        (Some(-3), Some(2))
    );
    assert_eq!(delayed["backoff_ms"], 50);
    let past = c.enqueue("q", json!({"payload": 2, "run_at": 1000})).await;
    assert_eq!(past["state"], "ready");
    let stats = c.get("/v1/queues/q").await;
    assert_eq!(
        (
            stats.json["scheduled"].as_u64(),
            stats.json["ready"].as_u64()
        ),
        (Some(1), Some(1))
    );
    server.stop().await;
}

async fn invalid_requests_are_400_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    c.enqueue("q", json!({"payload": 0})).await;
    let bad_bodies = [
        "{\"payload\": ",
        "[]",
        "{}",
        r#"{"payload": 1, "priority": "high"}"#,
        r#"{"payload": 1, "priority": 3000000000}"#,
        r#"{"payload": 1, "max_attempts": 0}"#,
        r#"{"payload": 1, "max_attempts": 1001}"#,
        r#"{"payload": 1, "max_attempts": -1}"#,
        r#"{"payload": 1, "delay_ms": 5, "run_at": 5}"#,
        r#"{"payload": 1, "backoff_ms": 3600001}"#,
        r#"{"payload": 1, "idempotency_key": ""}"#,
    ];
    for body in bad_bodies {
        let reply = c.send("POST", "/v1/queues/q/jobs", Some(body), &[]).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.code(), "invalid_request");
        assert!(
            !reply.json["error"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        );
    }
    let long_key = json!({"payload": 1, "idempotency_key": "k".repeat(257)});
    assert_eq!(c.post("/v1/queues/q/jobs", long_key).await.status, 400);
    for path in [
        "/v1/queues/bad%20name/jobs",
        &format!("/v1/queues/{}/jobs", "x".repeat(129)),
    ] {
        let reply = c.post(path, json!({"payload": 1})).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}"
        );
    }
    let reply = c
        .post("/v1/queues/q/jobs?wait_ms=60001", json!({"payload": 1}))
        .await;
    assert_eq!(reply.status, 400);
    let reply = c.post("/v1/queues/q/lease", json!({"max_jobs": 0})).await;
    assert_eq!(reply.status, 400);
    let reply = c
        .post("/v1/queues/q/lease", json!({"lease_ms": 43200001}))
        .await;
    assert_eq!(reply.status, 400);
    let reply = c
        .post("/v1/queues/q/lease", json!({"wait_ms": 60001}))
        .await;
    assert_eq!(reply.status, 400);
    let reply = c.get("/v1/queues/q/dead?limit=0").await;
    assert_eq!(reply.status, 400);
    let reply = c.get("/v1/queues/q/dead?after=zzz").await;
    assert_eq!(reply.status, 400);
    let reply = c.get("/v1/jobs/0000000000000000?wait_ms=-1").await;
    assert_eq!(reply.status, 400);
    // Unknown fields are errors naming the field (1.1; 1.0 ignored them).
    let reply = c
        .post("/v1/queues/q/jobs", json!({"payload": 1, "colour": "red"}))
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.text.contains("colour"), "{}", reply.text);
    let stats = c.get("/v1/queues/q").await;
    assert_eq!(
        stats.json["ready"], 1,
        "only the one valid enqueue is stored"
    );
    server.stop().await;
}

async fn idempotent_replays_return_the_stored_job(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let first = c
        .enqueue("q", json!({"payload": 1, "idempotency_key": "order-7"}))
        .await;
    // The same request again, with other request headers (a new request
    // id, a trace context): a replay.
    let replay = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 1, "idempotency_key": "order-7"}"#),
            &[
                ("X-Request-Id", "retry-2"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json, first);
    let by_header = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 1}"#),
            &[("Idempotency-Key", "order-7")],
        )
        .await;
    assert_eq!(
        (by_header.status, by_header.str("id")),
        (200, first["id"].as_str().unwrap().to_owned())
    );
    // The key with a different request: 409, and nothing changes.
    let counts = |mut stats: Value| {
        stats["oldest_ready_age_ms"].take();
        stats
    };
    let stats_before = counts(c.get("/v1/queues/q").await.json);
    for different in [
        json!({"payload": 2, "idempotency_key": "order-7"}),
        json!({"payload": 1, "idempotency_key": "order-7", "priority": 3}),
        json!({"payload": 1, "idempotency_key": "order-7", "ttl_ms": 60000}),
        json!({"payload": 1, "idempotency_key": "order-7", "correlation_id": "other"}),
    ] {
        let conflict = c.post("/v1/queues/q/jobs", different.clone()).await;
        assert_eq!(conflict.status, 409, "{different}");
        assert_eq!(conflict.json["error"]["code"], "conflict");
        assert!(
            conflict.text.contains("order-7") && conflict.text.contains("different request"),
            "{}",
            conflict.text
        );
        let batch = c
            .post(
                "/v1/queues/q/jobs/batch",
                json!({"jobs": [{"payload": "new"}, different]}),
            )
            .await;
        assert_eq!(batch.status, 409, "{}", batch.text);
    }
    assert_eq!(counts(c.get("/v1/queues/q").await.json), stats_before);
    assert_eq!(
        c.get(&format!("/v1/jobs/{}", first["id"].as_str().unwrap()))
            .await
            .json,
        first
    );
    let fresh = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 3}"#),
            &[("Idempotency-Key", "order-8")],
        )
        .await;
    assert_eq!(fresh.status, 202);
    assert_eq!(fresh.json["idempotency_key"], "order-8");
    assert!(fresh.header("idempotent-replayed").is_none());
    let clash = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload": 3, "idempotency_key": "a"}"#),
            &[("Idempotency-Key", "b")],
        )
        .await;
    assert_eq!(clash.status, 400);
    let other_queue = c
        .post(
            "/v1/queues/other/jobs",
            json!({"payload": 1, "idempotency_key": "order-7"}),
        )
        .await;
    assert_eq!(other_queue.status, 202, "keys are per queue");
    assert_eq!(c.get("/v1/queues/q").await.json["ready"], 2);
    server.stop().await;
}

async fn batches_are_all_or_nothing_in_input_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let stored = c
        .enqueue("q", json!({"payload": 0, "idempotency_key": "old"}))
        .await;
    let bad = c
        .post(
            "/v1/queues/q/jobs/batch",
            json!({"jobs": [{"payload": 1}, {"payload": 2, "max_attempts": 0}, {"payload": 3}]}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("jobs[1]"), "{}", bad.text);
    assert_eq!(
        c.get("/v1/queues/q").await.json["ready"],
        1,
        "nothing of the bad batch is stored"
    );
    assert_eq!(
        c.post("/v1/queues/q/jobs/batch", json!({"jobs": []}))
            .await
            .status,
        400
    );
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"payload": i})).collect();
    assert_eq!(
        c.post("/v1/queues/q/jobs/batch", json!({"jobs": too_many}))
            .await
            .status,
        400
    );
    let reply = c
        .post(
            "/v1/queues/q/jobs/batch",
            json!({"jobs": [
                {"payload": "a", "priority": 5},
                {"payload": 0, "idempotency_key": "old"},
                {"payload": "c", "idempotency_key": "new"},
                {"payload": "c", "idempotency_key": "new"}
            ]}),
        )
        .await;
    assert_eq!(reply.status, 202);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(jobs[0]["payload"], "a");
    assert_eq!(jobs[1]["id"], stored["id"]);
    assert_eq!(jobs[2]["payload"], "c");
    assert_eq!(jobs[3]["id"], jobs[2]["id"]);
    assert_eq!(c.get("/v1/queues/q").await.json["ready"], 3);
    server.stop().await;
}

async fn workers_lease_heartbeat_and_complete_with_fencing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let low = c
        .enqueue("q", json!({"payload": "low", "priority": -1}))
        .await;
    let a = c.enqueue("q", json!({"payload": "a"})).await;
    let high = c
        .enqueue("q", json!({"payload": "high", "priority": 9}))
        .await;
    let reply = c
        .post(
            "/v1/queues/q/lease",
            json!({"max_jobs": 2, "lease_ms": 60000, "worker": "w-1"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let leased = reply.json["jobs"].as_array().unwrap().clone();
    assert_eq!(
        ids(&leased),
        vec![high["id"].as_str().unwrap(), a["id"].as_str().unwrap()]
    );
    for job in &leased {
        assert_eq!(job["state"], "leased");
        assert_eq!(job["attempts"], 1);
        assert_eq!(job["worker"], "w-1");
        assert!(job["lease_id"].is_string());
        assert!(job["lease_expires_at"].as_u64().unwrap() > job["updated_at"].as_u64().unwrap());
    }
    let (first, second) = (&leased[0], &leased[1]);
    let id1 = first["id"].as_str().unwrap();
    let lease1 = first["lease_id"].as_str().unwrap();

    let beat = c
        .post(
            &format!("/v1/jobs/{id1}/heartbeat"),
            json!({"lease_id": lease1, "lease_ms": 120000}),
        )
        .await;
    assert_eq!(beat.status, 200);
    assert!(beat.json["lease_expires_at"].as_u64() > first["lease_expires_at"].as_u64());
    assert!(beat.json.get("lease_id").is_none());

    // Someone else's lease, a garbage lease and an unknown job.
    let foreign = c
        .post(
            &format!("/v1/jobs/{id1}/complete"),
            json!({"lease_id": second["lease_id"]}),
        )
        .await;
    assert_eq!((foreign.status, foreign.code()), (409, "lease_lost"));
    let garbage = c
        .post(
            &format!("/v1/jobs/{id1}/complete"),
            json!({"lease_id": "nope"}),
        )
        .await;
    assert_eq!((garbage.status, garbage.code()), (409, "lease_lost"));
    let unknown = c
        .post(
            "/v1/jobs/00000000ffffffff/complete",
            json!({"lease_id": lease1}),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let missing_field = c.post(&format!("/v1/jobs/{id1}/complete"), json!({})).await;
    assert_eq!(missing_field.status, 400);

    let done = c
        .post(
            &format!("/v1/jobs/{id1}/complete"),
            json!({"lease_id": lease1, "result": {"sent": true}}),
        )
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(done.json["state"], "completed");
    assert_eq!(done.json["result"], json!({"sent": true}));
    let again = c
        .post(
            &format!("/v1/jobs/{id1}/complete"),
            json!({"lease_id": lease1}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "lease_lost"),
        "completing is final"
    );
    assert_eq!(c.job(id1).await["result"], json!({"sent": true}));
    // The untouched jobs are as they were.
    assert_eq!(
        c.job(second["id"].as_str().unwrap()).await["state"],
        "leased"
    );
    assert_eq!(c.job(low["id"].as_str().unwrap()).await["state"], "ready");
    server.stop().await;
}

async fn fail_retries_or_dead_letters_and_release_gives_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    for i in 0..3 {
        c.enqueue(
            "q",
            json!({"payload": i, "max_attempts": 2, "backoff_ms": 1000}),
        )
        .await;
    }
    let leased = c.lease("q", 3, 60000).await;
    let call = |job: &Value, action: &str, extra: Value| {
        let mut body = json!({"lease_id": job["lease_id"]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        (
            format!("/v1/jobs/{}/{action}", job["id"].as_str().unwrap()),
            body,
        )
    };
    let (path, body) = call(&leased[0], "fail", json!({"error": "smtp down"}));
    let failed = c.post(&path, body).await;
    assert_eq!(failed.status, 200);
    assert_eq!(failed.json["state"], "scheduled");
    assert_eq!(failed.json["last_error"], "smtp down");
    let delay =
        failed.json["run_at"].as_u64().unwrap() - failed.json["updated_at"].as_u64().unwrap();
    assert!(
        (800..=1200).contains(&delay),
        "back-off {delay} within ±20 % of 1000"
    );

    let (path, body) = call(
        &leased[1],
        "fail",
        json!({"error": "bad", "retryable": false}),
    );
    assert_eq!(c.post(&path, body).await.json["state"], "dead");

    let (path, body) = call(
        &leased[2],
        "fail",
        json!({"error": "later", "retry_in_ms": 0}),
    );
    let retried = c.post(&path, body).await;
    assert_eq!(
        (
            retried.json["state"].as_str(),
            retried.json["attempts"].as_u64()
        ),
        (Some("ready"), Some(1))
    );

    let again = c.lease("q", 1, 60000).await;
    assert_eq!(again[0]["id"], leased[2]["id"]);
    assert_eq!(again[0]["attempts"], 2);
    let (path, body) = call(&again[0], "release", json!({}));
    let released = c.post(&path, body).await;
    assert_eq!(
        (released.status, released.json["state"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(
        released.json["attempts"], 1,
        "release gives the attempt back"
    );
    let (path, body) = call(&again[0], "release", json!({}));
    assert_eq!(c.post(&path, body).await.code(), "lease_lost");
    let last = c.lease("q", 1, 60000).await;
    let (path, body) = call(&last[0], "fail", json!({"error": "out of attempts"}));
    assert_eq!(c.post(&path, body).await.json["state"], "dead");
    server.stop().await;
}

async fn cancel_revokes_leases_and_conflicts_when_finished(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let a = c.enqueue("q", json!({"payload": 1})).await;
    let b = c.enqueue("q", json!({"payload": 2})).await;
    let leased = c.lease("q", 1, 60000).await;
    assert_eq!(leased[0]["id"], a["id"]);
    let cancelled = c
        .delete(&format!("/v1/jobs/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        (cancelled.status, cancelled.json["state"].as_str()),
        (200, Some("cancelled"))
    );
    let beat = c
        .post(
            &format!("/v1/jobs/{}/heartbeat", a["id"].as_str().unwrap()),
            json!({"lease_id": leased[0]["lease_id"]}),
        )
        .await;
    assert_eq!(
        (beat.status, beat.code()),
        (409, "lease_lost"),
        "the worker learns of the cancel"
    );
    let twice = c
        .delete(&format!("/v1/jobs/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!((twice.status, twice.code()), (409, "conflict"));
    assert_eq!(c.delete("/v1/jobs/00000000deadbeef").await.status, 404);
    assert_eq!(c.delete("/v1/jobs/not-an-id").await.status, 404);
    assert_eq!(c.get("/v1/jobs/not-an-id").await.code(), "not_found");
    assert_eq!(c.job(b["id"].as_str().unwrap()).await["state"], "ready");
    server.stop().await;
}

async fn get_with_wait_ms_long_polls_until_terminal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = server.client.clone();
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let poll = {
        let (c, id) = (c.clone(), id.clone());
        tokio::spawn(async move { c.get(&format!("/v1/jobs/{id}?wait_ms=30000")).await })
    };
    let leased = c.lease("q", 1, 60000).await;
    let done = c
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": leased[0]["lease_id"], "result": 42}),
        )
        .await;
    assert_eq!(done.status, 200);
    let reply = poll.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        (reply.json["state"].as_str(), reply.json["result"].as_i64()),
        (Some("completed"), Some(42))
    );
    // A timeout answers 200 with the job as it is.
    let other = c.enqueue("q", json!({"payload": 2})).await;
    let reply = c
        .get(&format!(
            "/v1/jobs/{}?wait_ms=20",
            other["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (reply.status, reply.json["state"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(
        c.get("/v1/jobs/00000000000fffff?wait_ms=20").await.status,
        404
    );
    server.stop().await;
}

async fn the_synchronous_call_returns_the_result(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = server.client.clone();
    let worker = {
        let c = c.clone();
        tokio::spawn(async move {
            let reply = c
                .post(
                    "/v1/queues/rpc/lease",
                    json!({"wait_ms": 30000, "lease_ms": 60000}),
                )
                .await;
            let job = reply.json["jobs"][0].clone();
            let n = job["payload"]["n"].as_i64().unwrap();
            c.post(
                &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
                json!({"lease_id": job["lease_id"], "result": {"square": n * n}}),
            )
            .await
        })
    };
    let reply = c
        .post(
            "/v1/queues/rpc/jobs?wait_ms=30000",
            json!({"payload": {"n": 7}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["state"], "completed");
    assert_eq!(reply.json["result"], json!({"square": 49}));
    assert_eq!(worker.await.unwrap().status, 200);
    // Nobody works the queue: the wait ends with 202 and the job keeps going.
    let reply = c
        .post(
            "/v1/queues/rpc/jobs?wait_ms=30",
            json!({"payload": {"n": 1}}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.json["state"].as_str()),
        (202, Some("ready"))
    );
    assert!(reply.header("location").is_some());
    server.stop().await;
}

async fn lease_long_polls_wake_on_enqueue(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = server.client.clone();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.post("/v1/queues/q/lease", json!({"wait_ms": 30000}))
                .await
        })
    };
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let reply = waiter.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json["jobs"][0]["id"], job["id"]);
    let empty = c.post("/v1/queues/q/lease", json!({"wait_ms": 20})).await;
    assert_eq!(empty.json, json!({"jobs": []}));
    let empty_body = c.send("POST", "/v1/queues/q/lease", None, &[]).await;
    assert_eq!(empty_body.status, 200, "an empty body means the defaults");
    server.stop().await;
}

async fn queues_stats_pause_and_resume(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    c.enqueue("b", json!({"payload": 1})).await;
    c.enqueue("a", json!({"payload": 1})).await;
    c.enqueue("a", json!({"payload": 2, "delay_ms": 60000}))
        .await;
    let list = c.get("/v1/queues").await;
    let names: Vec<&str> = list.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    let stats = c.get("/v1/queues/a").await.json;
    assert_eq!(
        stats,
        json!({"queue": "a", "paused": false, "scheduled": 1, "ready": 1, "leased": 0,
               "completed": 0, "dead": 0, "cancelled": 0,
               "oldest_ready_age_ms": stats["oldest_ready_age_ms"],
               "limits": {"max_leased": null, "rate_limit": null, "group_max_leased": null}})
    );
    assert!(stats["oldest_ready_age_ms"].is_u64());
    let unknown = c.get("/v1/queues/nobody").await.json;
    assert_eq!(
        (
            unknown["ready"].as_u64(),
            unknown["oldest_ready_age_ms"].is_null()
        ),
        (Some(0), true)
    );
    let paused = c.post("/v1/queues/a/pause", json!({})).await;
    assert_eq!(
        (paused.status, paused.json["paused"].as_bool()),
        (200, Some(true))
    );
    assert!(
        c.lease("a", 5, 1000).await.is_empty(),
        "a paused queue leases nothing"
    );
    assert_eq!(c.lease("b", 5, 1000).await.len(), 1);
    let resumed = c.send("POST", "/v1/queues/a/resume", None, &[]).await;
    assert_eq!(resumed.json["paused"], false);
    assert_eq!(c.lease("a", 5, 1000).await.len(), 1);
    server.stop().await;
}

async fn dead_letters_list_requeue_and_purge(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let mut dead = Vec::new();
    for i in 0..5 {
        c.enqueue("q", json!({"payload": i, "max_attempts": 1}))
            .await;
    }
    c.enqueue("q", json!({"payload": "alive"})).await;
    for job in c.lease("q", 5, 60000).await {
        let reply = c
            .post(
                &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
                json!({"lease_id": job["lease_id"], "error": "x"}),
            )
            .await;
        assert_eq!(reply.json["state"], "dead");
        dead.push(reply.str("id"));
    }
    let page = c.get("/v1/queues/q/dead?limit=2").await;
    assert_eq!(ids(page.json["jobs"].as_array().unwrap()), dead[..2]);
    assert_eq!(page.json["next"], dead[1]);
    let page2 = c
        .get(&format!("/v1/queues/q/dead?limit=2&after={}", dead[1]))
        .await;
    assert_eq!(ids(page2.json["jobs"].as_array().unwrap()), dead[2..4]);
    let last = c.get(&format!("/v1/queues/q/dead?after={}", dead[3])).await;
    assert_eq!(ids(last.json["jobs"].as_array().unwrap()), dead[4..]);
    assert!(last.json["next"].is_null());

    let some = c
        .post("/v1/queues/q/dead/requeue", json!({"ids": [dead[0]]}))
        .await;
    assert_eq!(some.json, json!({"requeued": 1}));
    let back = c.job(&dead[0]).await;
    assert_eq!(
        (back["state"].as_str(), back["attempts"].as_u64()),
        (Some("ready"), Some(0))
    );
    let bad = c
        .post("/v1/queues/q/dead/requeue", json!({"ids": ["zz"]}))
        .await;
    assert_eq!(bad.status, 400);
    let all = c.post("/v1/queues/q/dead/requeue", json!({})).await;
    assert_eq!(all.json, json!({"requeued": 4}));
    assert_eq!(c.get("/v1/queues/q").await.json["ready"], 6);

    for job in c.lease("q", 6, 60000).await {
        c.post(
            &format!("/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
            json!({"lease_id": job["lease_id"], "retryable": false}),
        )
        .await;
    }
    let purged = c.delete("/v1/queues/q/dead").await;
    assert_eq!(purged.json, json!({"deleted": 6}));
    assert_eq!(c.get(&format!("/v1/jobs/{}", dead[0])).await.status, 404);
    server.stop().await;
}

async fn oversized_bodies_are_413_and_store_nothing(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            max_body: 1024,
            ..ServerConfig::default()
        },
    )
    .await;
    let c = &server.client;
    let big = json!({"payload": "x".repeat(2000)});
    let reply = c.post("/v1/queues/q/jobs", big.clone()).await;
    assert_eq!((reply.status, reply.code()), (413, "payload_too_large"));
    let jobs: Vec<Value> = (0..20)
        .map(|_| json!({"payload": "y".repeat(100)}))
        .collect();
    let reply = c
        .post("/v1/queues/q/jobs/batch", json!({"jobs": jobs}))
        .await;
    assert_eq!(reply.status, 413);
    assert!(
        c.get("/v1/queues").await.json["queues"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let small = c.post("/v1/queues/q/jobs", json!({"payload": "ok"})).await;
    assert_eq!(
        small.status, 202,
        "the connection and server are fine afterwards"
    );
    server.stop().await;
}

async fn unknown_routes_404_and_wrong_methods_405_with_allow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let reply = c.get("/v2/nothing").await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    let reply = c.send("PUT", "/v1/queues/q/dead", None, &[]).await;
    assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"));
    assert_eq!(reply.header("allow"), Some("GET, DELETE"));
    let reply = c.send("PUT", "/v1/queues/q/jobs", None, &[]).await;
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, Some("GET, POST"))
    );
    server.stop().await;
}

async fn a_token_guards_everything_but_healthz(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let c = &server.client;
    let health = c.get("/healthz").await;
    assert_eq!(
        (health.status, health.json.clone()),
        (200, json!({"status": "ok"}))
    );
    for (method, path) in [
        ("POST", "/v1/queues/q/jobs"),
        ("GET", "/v1/queues"),
        ("GET", "/metrics"),
        ("GET", "/v1/events"),
        ("GET", "/v2/unknown"),
    ] {
        let none = c.send(method, path, Some(r#"{"payload":1}"#), &[]).await;
        assert_eq!(
            (none.status, none.code()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        let wrong = c
            .send(
                method,
                path,
                Some(r#"{"payload":1}"#),
                &[("Authorization", "Bearer nope")],
            )
            .await;
        assert_eq!(wrong.status, 401);
    }
    let ok = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(r#"{"payload":1}"#),
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(ok.status, 202);
    let list = c
        .send(
            "GET",
            "/v1/queues",
            None,
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(
        list.json["queues"][0]["ready"], 1,
        "only the authorized enqueue stored"
    );
    server.stop().await;
}

async fn request_ids_are_echoed_or_generated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let mine = c
        .send("GET", "/healthz", None, &[("X-Request-Id", "trace-42")])
        .await;
    assert_eq!(mine.header("x-request-id"), Some("trace-42"));
    let long = "x".repeat(129);
    let replaced = c
        .send("GET", "/healthz", None, &[("X-Request-Id", long.as_str())])
        .await;
    let generated = replaced.header("x-request-id").unwrap();
    assert_ne!(generated, long);
    let a = c.get("/v2/nothing").await;
    let b = c.get("/v2/nothing").await;
    assert!(a.header("x-request-id").is_some());
    assert_ne!(
        a.header("x-request-id"),
        b.header("x-request-id"),
        "errors get ids too, fresh ones"
    );
    server.stop().await;
}

async fn metrics_report_queues_counters_run_times_and_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    for i in 0..3 {
        c.enqueue("mail", json!({"payload": i})).await;
    }
    let leased = c.lease("mail", 2, 60000).await;
    c.post(
        &format!("/v1/jobs/{}/complete", leased[0]["id"].as_str().unwrap()),
        json!({"lease_id": leased[0]["lease_id"]}),
    )
    .await;
    c.get("/v2/nothing").await;
    let reply = c.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = &reply.text;
    for line in [
        "queue_jobs{queue=\"mail\",state=\"ready\"} 1",
        "queue_jobs{queue=\"mail\",state=\"leased\"} 1",
        "queue_jobs{queue=\"mail\",state=\"completed\"} 1",
        "queue_paused{queue=\"mail\"} 0",
        "queue_jobs_enqueued_total{queue=\"mail\"} 3",
        "queue_jobs_leased_total{queue=\"mail\"} 2",
        "queue_jobs_completed_total{queue=\"mail\"} 1",
        "queue_jobs_failed_total{queue=\"mail\"} 0",
        "queue_job_run_seconds_count{queue=\"mail\"} 1",
        "queue_job_run_seconds_bucket{queue=\"mail\",le=\"+Inf\"} 1",
        "# TYPE queue_job_run_seconds histogram",
        "queue_http_requests_total{route=\"/v1/queues/{queue}/jobs\",method=\"POST\",status=\"202\"} 3",
        "queue_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    server.stop().await;
}

async fn a_restart_keeps_the_data(backend: Backend) {
    let dir = Store::new(backend);
    let server = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    let job = server
        .client
        .enqueue("q", json!({"payload": {"keep": "me"}}))
        .await;
    let leased = server.client.lease("q", 1, 600_000).await;
    server
        .client
        .post("/v1/queues/paused/pause", json!({}))
        .await;
    server.stop().await;

    let server = TestServer::start_at(&dir, ServerConfig::default(), |c| c).await;
    let back = server.client.job(job["id"].as_str().unwrap()).await;
    assert_eq!(back["payload"], json!({"keep": "me"}));
    assert_eq!(back["state"], "leased");
    assert!(
        server.client.get("/v1/queues/paused").await.json["paused"]
            .as_bool()
            .unwrap()
    );
    let done = server
        .client
        .post(
            &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
            json!({"lease_id": leased[0]["lease_id"]}),
        )
        .await;
    assert_eq!(done.status, 200, "a lease survives the restart");
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_answers_202_with_location_and_the_job;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_options_are_honoured;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalid_requests_are_400_and_change_nothing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotent_replays_return_the_stored_job;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_all_or_nothing_in_input_order;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_lease_heartbeat_and_complete_with_fencing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_retries_or_dead_letters_and_release_gives_back;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_revokes_leases_and_conflicts_when_finished;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_with_wait_ms_long_polls_until_terminal;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_synchronous_call_returns_the_result;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lease_long_polls_wake_on_enqueue;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queues_stats_pause_and_resume;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_letters_list_requeue_and_purge;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_bodies_are_413_and_store_nothing;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_routes_404_and_wrong_methods_405_with_allow;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_guards_everything_but_healthz;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_ids_are_echoed_or_generated;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_report_queues_counters_run_times_and_requests;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_keeps_the_data;
}
