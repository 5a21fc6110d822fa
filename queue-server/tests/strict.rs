//! Strict input (issue 15): unknown body fields and query parameters,
//! arrays where objects are expected, nesting depth, percent-encoded path
//! segments and the bearer scheme. Every refusal is a 400 naming what is
//! wrong, and changes nothing.

use serde_json::{Value, json};

use crate::common::{Backend, Client, TestServer};
use queue_proto::limits::MAX_JSON_DEPTH;
use queue_server::ServerConfig;

async fn refused(c: &Client, method: &str, path: &str, body: Option<&str>, says: &str) {
    let reply = c.send(method, path, body, &[]).await;
    assert_eq!(
        reply.status, 400,
        "{method} {path} {body:?}: {}",
        reply.text
    );
    assert_eq!(reply.code(), "invalid_request");
    let message = reply.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "{method} {path} {body:?}: {message}"
    );
}

/// A dead job of `queue`, leased and failed once, with its id.
async fn dead_job(c: &Client, queue: &str) -> String {
    let job = c
        .enqueue(queue, json!({"payload": 1, "max_attempts": 1}))
        .await;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    let leased = c.lease(queue, 1, 30_000).await;
    let lease_id = leased[0]["lease_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let reply = c
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_id": lease_id, "error": "x"}),
        )
        .await;
    assert_eq!(reply.json["state"], "dead", "{}", reply.text);
    id
}

fn stats_count(stats: &Value, state: &str) -> u64 {
    stats[state].as_u64().unwrap_or(u64::MAX)
}

async fn unknown_body_fields_are_refused_on_every_route(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    for (method, path, body, says) in [
        (
            "POST",
            "/v1/queues/q/jobs".to_owned(),
            r#"{"payload": 1, "prority": 9}"#,
            "prority",
        ),
        (
            "POST",
            "/v1/queues/q/jobs/batch".to_owned(),
            r#"{"jobs": [{"payload": 1}, {"payload": 2, "prority": 9}]}"#,
            "prority",
        ),
        (
            "POST",
            "/v1/queues/q/jobs/batch".to_owned(),
            r#"{"jobs": [{"payload": 1}], "atomic": false}"#,
            "atomic",
        ),
        (
            "POST",
            "/v1/queues/q/lease".to_owned(),
            r#"{"wiat_ms": 1000}"#,
            "wiat_ms",
        ),
        (
            "POST",
            format!("/v1/jobs/{id}/heartbeat"),
            r#"{"lease_id": "x", "lease": 5}"#,
            "lease",
        ),
        (
            "POST",
            format!("/v1/jobs/{id}/complete"),
            r#"{"lease_id": "x", "results": 5}"#,
            "results",
        ),
        (
            "POST",
            format!("/v1/jobs/{id}/fail"),
            r#"{"lease_id": "x", "retriable": false}"#,
            "retriable",
        ),
        (
            "POST",
            format!("/v1/jobs/{id}/release"),
            r#"{"lease_id": "x", "now": true}"#,
            "now",
        ),
        (
            "POST",
            "/v1/queues/q/dead/requeue".to_owned(),
            r#"{"id": ["x"]}"#,
            "`id`",
        ),
        (
            "PATCH",
            "/v1/queues/q".to_owned(),
            r#"{"max_lease": 1}"#,
            "max_lease",
        ),
        (
            "PATCH",
            "/v1/queues/q".to_owned(),
            r#"{"rate_limit": {"jobs": 1, "per_ms": 1, "burst": 2}}"#,
            "burst",
        ),
        (
            "PUT",
            "/v1/schedules/s".to_owned(),
            r#"{"queue": "q", "every_ms": 1000, "job": {"payload": 1}, "timezon": "UTC"}"#,
            "timezon",
        ),
        (
            "PUT",
            "/v1/schedules/s".to_owned(),
            r#"{"queue": "q", "every_ms": 1000, "job": {"payload": 1, "prority": 2}}"#,
            "prority",
        ),
    ] {
        refused(c, method, &path, Some(body), says).await;
    }
    // Nothing changed: one job, still ready; no schedule.
    let stats = c.get("/v1/queues/q").await.json;
    assert_eq!(stats_count(&stats, "ready"), 1, "{stats}");
    assert_eq!(c.job(&id).await["state"], "ready");
    assert_eq!(c.get("/v1/schedules").await.json["schedules"], json!([]));
    server.stop().await;
}

async fn unknown_query_parameters_are_refused_on_every_route(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    refused(
        c,
        "POST",
        "/v1/queues/q/jobs?wiat_ms=1000",
        Some(r#"{"payload": 2}"#),
        "wiat_ms",
    )
    .await;
    refused(
        c,
        "GET",
        &format!("/v1/jobs/{id}?wiat_ms=1000"),
        None,
        "wiat_ms",
    )
    .await;
    refused(c, "GET", "/v1/queues/q/dead?limt=5", None, "limt").await;
    refused(c, "GET", "/v1/callbacks?state=pending&page=2", None, "page").await;
    refused(c, "GET", "/v1/queues?verbose=1", None, "verbose").await;
    refused(
        c,
        "POST",
        "/v1/queues/q/lease?wait_ms=5",
        Some("{}"),
        "wait_ms",
    )
    .await;
    refused(
        c,
        "DELETE",
        &format!("/v1/jobs/{id}?force=true"),
        None,
        "force",
    )
    .await;
    refused(c, "GET", "/v1/events?queue=q&typ=ready", None, "typ").await;
    // Nothing changed: still one ready job, not leased, not cancelled.
    let stats = c.get("/v1/queues/q").await.json;
    assert_eq!(stats_count(&stats, "ready"), 1, "{stats}");
    // The names the contract gives still work.
    assert_eq!(c.get(&format!("/v1/jobs/{id}?wait_ms=0")).await.status, 200);
    assert_eq!(c.get("/v1/queues/q/dead?limit=5").await.status, 200);
    server.stop().await;
}

async fn arrays_where_objects_are_expected_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let dead = dead_job(c, "q").await;
    let job = c.enqueue("q", json!({"payload": 1})).await;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    let leased = c.lease("q", 1, 30_000).await;
    let lease_id = leased[0]["lease_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let says = "expected a JSON object";
    // `[]` requeued every dead job; a positional complete completed a job;
    // `[{"a":1}, 7]` enqueued at priority 7.
    refused(c, "POST", "/v1/queues/q/dead/requeue", Some("[]"), says).await;
    let complete = format!(r#"["{lease_id}", {{"done": true}}]"#);
    refused(
        c,
        "POST",
        &format!("/v1/jobs/{id}/complete"),
        Some(&complete),
        says,
    )
    .await;
    refused(
        c,
        "POST",
        "/v1/queues/q/jobs",
        Some(r#"[{"a": 1}, 7]"#),
        says,
    )
    .await;
    refused(
        c,
        "POST",
        "/v1/queues/q/jobs/batch",
        Some(r#"{"jobs": [[{"a": 1}, 7]]}"#),
        says,
    )
    .await;
    refused(
        c,
        "POST",
        "/v1/queues/q/jobs/batch",
        Some(r#"[[[{"a": 1}]]]"#),
        says,
    )
    .await;
    refused(c, "POST", "/v1/queues/q/lease", Some("[5]"), says).await;
    let heartbeat = format!(r#"["{lease_id}"]"#);
    refused(
        c,
        "POST",
        &format!("/v1/jobs/{id}/heartbeat"),
        Some(&heartbeat),
        says,
    )
    .await;
    refused(
        c,
        "POST",
        &format!("/v1/jobs/{id}/fail"),
        Some(&heartbeat),
        says,
    )
    .await;
    refused(
        c,
        "POST",
        &format!("/v1/jobs/{id}/release"),
        Some(&heartbeat),
        says,
    )
    .await;
    refused(c, "PATCH", "/v1/queues/q", Some("[true]"), "object").await;
    refused(
        c,
        "PATCH",
        "/v1/queues/q",
        Some(r#"{"rate_limit": [1, 1000]}"#),
        "rate_limit",
    )
    .await;
    let schedule = r#"{"queue": "q", "every_ms": 1000, "job": [{"a": 1}, 7]}"#;
    refused(c, "PUT", "/v1/schedules/s", Some(schedule), says).await;
    refused(
        c,
        "PUT",
        "/v1/schedules/s",
        Some(r#"["q", null, 1000]"#),
        says,
    )
    .await;
    // Nothing changed.
    assert_eq!(c.job(&dead).await["state"], "dead");
    assert_eq!(c.job(&id).await["state"], "leased");
    let stats = c.get("/v1/queues/q").await.json;
    assert_eq!(
        (stats_count(&stats, "ready"), stats_count(&stats, "leased")),
        (0, 1),
        "{stats}"
    );
    assert_eq!(stats["limits"]["rate_limit"], Value::Null);
    server.stop().await;
}

async fn payloads_results_and_progress_nest_at_most_the_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let at_limit = deep(MAX_JSON_DEPTH);
    let over = deep(MAX_JSON_DEPTH + 1);
    let huge = deep(10_000);
    for payload in [&over, &huge] {
        let body = format!(r#"{{"payload": {payload}}}"#);
        refused(c, "POST", "/v1/queues/q/jobs", Some(&body), "payload").await;
        let batch = format!(r#"{{"jobs": [{{"payload": 1}}, {{"payload": {payload}}}]}}"#);
        refused(
            c,
            "POST",
            "/v1/queues/q/jobs/batch",
            Some(&batch),
            "jobs[1]",
        )
        .await;
        let schedule =
            format!(r#"{{"queue": "q", "every_ms": 1000, "job": {{"payload": {payload}}}}}"#);
        refused(c, "PUT", "/v1/schedules/s", Some(&schedule), "job.payload").await;
    }
    let stats = c.get("/v1/queues/q").await.json;
    assert_eq!(stats_count(&stats, "ready"), 0, "{stats}");
    // At the limit: stored and handed back as given.
    let body = format!(r#"{{"payload": {at_limit}}}"#);
    let reply = c.send("POST", "/v1/queues/q/jobs", Some(&body), &[]).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.str("id");
    let leased = c.lease("q", 1, 30_000).await;
    let lease_id = leased[0]["lease_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for value in [&over, &huge] {
        let progress = format!(r#"{{"lease_id": "{lease_id}", "progress": {value}}}"#);
        refused(
            c,
            "POST",
            &format!("/v1/jobs/{id}/heartbeat"),
            Some(&progress),
            "progress",
        )
        .await;
        let result = format!(r#"{{"lease_id": "{lease_id}", "result": {value}}}"#);
        refused(
            c,
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(&result),
            "result",
        )
        .await;
    }
    let job = c.job(&id).await;
    assert_eq!(
        (job["state"].as_str(), &job["progress"]),
        (Some("leased"), &Value::Null)
    );
    let result = format!(r#"{{"lease_id": "{lease_id}", "result": {at_limit}}}"#);
    let reply = c
        .send(
            "POST",
            &format!("/v1/jobs/{id}/complete"),
            Some(&result),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["result"].to_string(), at_limit);
    server.stop().await;
}

async fn percent_encoded_queue_names_name_the_real_character(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    for (segment, shown) in [
        ("a%20b", "' '"),
        ("a%2Fb", "'/'"),
        ("%C3%A9", "'é'"),
        ("%25", "'%'"),
    ] {
        let path = format!("/v1/queues/{segment}/jobs");
        refused(
            c,
            "POST",
            &path,
            Some(r#"{"payload": 1}"#),
            &format!("queue name contains {shown}"),
        )
        .await;
    }
    // An encoded name the contract allows is that name.
    let job = c.enqueue("%71ueue-1", json!({"payload": 1})).await;
    assert_eq!(job["queue"], "queue-1");
    server.stop().await;
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            token: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .await;
    let c = &server.client;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} s3cret");
        let reply = c
            .send("GET", "/v1/queues", None, &[("authorization", &auth)])
            .await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.text);
    }
    for auth in ["bearer wrong", "Basic s3cret", "s3cret", "Bearers3cret"] {
        let reply = c
            .send("GET", "/v1/queues", None, &[("authorization", auth)])
            .await;
        assert_eq!(reply.status, 401, "{auth}: {}", reply.text);
    }
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_body_fields_are_refused_on_every_route;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_query_parameters_are_refused_on_every_route;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn arrays_where_objects_are_expected_are_refused;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn payloads_results_and_progress_nest_at_most_the_limit;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn percent_encoded_queue_names_name_the_real_character;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bearer_scheme_is_case_insensitive;
}
