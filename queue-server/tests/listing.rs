//! Listing jobs over HTTP: `GET /v1/queues/{queue}/jobs?state` and
//! `GET /v1/jobs?correlation_id`, their paging and their refusals.

// A missing field fails the test where it is read.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common::{Backend, Client, TestServer};

fn ids(reply: &Value) -> Vec<String> {
    reply["jobs"]
        .as_array()
        .expect("a page has jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Jobs of `queue` in every state; returns their ids by state, oldest
/// first.
async fn one_of_each(c: &Client, queue: &str) -> BTreeMap<&'static str, Vec<String>> {
    let path = format!("/v1/queues/{queue}/jobs");
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let completed = id(c.enqueue(queue, json!({"payload": 1})).await);
    let dead = id(c
        .enqueue(queue, json!({"payload": 2, "max_attempts": 1}))
        .await);
    let cancelled = id(c.enqueue(queue, json!({"payload": 3})).await);
    let leased = id(c.enqueue(queue, json!({"payload": 4})).await);
    let scheduled = id(c
        .enqueue(queue, json!({"payload": 5, "delay_ms": 3_600_000}))
        .await);
    let ready = id(c.enqueue(queue, json!({"payload": 6})).await);
    let ready_too = id(c.enqueue(queue, json!({"payload": 7})).await);
    for job in c.lease(queue, 4, 60_000).await {
        let job_id = job["id"].as_str().unwrap();
        let lease = &job["lease_id"];
        let reply = if job_id == completed {
            c.post(
                &format!("/v1/jobs/{job_id}/complete"),
                json!({"lease_id": lease}),
            )
            .await
        } else if job_id == dead {
            c.post(
                &format!("/v1/jobs/{job_id}/fail"),
                json!({"lease_id": lease, "error": "no"}),
            )
            .await
        } else if job_id == cancelled {
            c.delete(&format!("/v1/jobs/{job_id}")).await
        } else {
            assert_eq!(job_id, leased, "{path}");
            continue;
        };
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    BTreeMap::from([
        ("scheduled", vec![scheduled]),
        ("ready", vec![ready, ready_too]),
        ("leased", vec![leased]),
        ("completed", vec![completed]),
        ("dead", vec![dead]),
        ("cancelled", vec![cancelled]),
    ])
}

async fn every_state_lists_the_queues_jobs_in_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let q = one_of_each(c, "q").await;
    let other = one_of_each(c, "other").await;
    for (state, want) in &q {
        let reply = c.get(&format!("/v1/queues/q/jobs?state={state}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(&ids(&reply.json), want, "{state}");
        assert!(reply.json["next"].is_null());
        for job in reply.json["jobs"].as_array().unwrap() {
            assert_eq!((&job["state"], &job["queue"]), (&json!(state), &json!("q")));
            // The whole job object, as GET /v1/jobs/{id} gives it.
            let alone = c.job(job["id"].as_str().unwrap()).await;
            assert_eq!(job, &alone);
        }
        let reply = c.get(&format!("/v1/queues/other/jobs?state={state}")).await;
        assert_eq!(&ids(&reply.json), &other[state]);
    }
    // The dead-letter list agrees with the dead state's.
    let dead = c.get("/v1/queues/q/dead").await;
    assert_eq!(ids(&dead.json), q["dead"]);
    // An unknown queue has no jobs.
    let none = c.get("/v1/queues/nobody/jobs?state=ready").await;
    assert_eq!(
        (none.status, none.json.clone()),
        (200, json!({"jobs": [], "next": null}))
    );
    server.stop().await;
}

async fn pages_follow_next_to_the_end(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let mut want = Vec::new();
    for i in 0..7 {
        let job = c
            .enqueue("q", json!({"payload": i, "correlation_id": "order-17"}))
            .await;
        want.push(job["id"].as_str().unwrap().to_owned());
        c.enqueue("q2", json!({"payload": i, "correlation_id": "order-18"}))
            .await;
    }
    for path in [
        "/v1/queues/q/jobs?state=ready&limit=3",
        "/v1/jobs?correlation_id=order-17&limit=3",
    ] {
        let mut got = Vec::new();
        let mut next: Option<String> = None;
        for round in 0..10 {
            let url = match &next {
                Some(after) => format!("{path}&after={after}"),
                None => path.to_owned(),
            };
            let reply = c.get(&url).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            let page = ids(&reply.json);
            assert!(page.len() <= 3);
            got.extend(page.clone());
            match reply.json["next"].as_str() {
                Some(n) => {
                    assert_eq!(Some(n), page.last().map(String::as_str));
                    next = Some(n.to_owned());
                }
                None => {
                    assert_eq!(round, 2, "{path}: three pages");
                    break;
                }
            }
        }
        assert_eq!(got, want, "{path}");
    }
    server.stop().await;
}

async fn a_correlation_id_lists_its_jobs_across_queues(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    let a = c
        .enqueue(
            "emails",
            json!({"payload": 1, "correlation_id": "req-8f2c"}),
        )
        .await;
    c.enqueue("emails", json!({"payload": 2, "correlation_id": "req-8f2"}))
        .await;
    // Without a body field, the request id is the correlation id.
    let b = c
        .send(
            "POST",
            "/v1/queues/sms/jobs",
            Some(r#"{"payload": 3}"#),
            &[("x-request-id", "req-8f2c")],
        )
        .await;
    assert_eq!(b.status, 202);
    c.enqueue("sms", json!({"payload": 4})).await;
    let reply = c.get("/v1/jobs?correlation_id=req-8f2c").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(ids(&reply.json), [a.str_id(), b.json.str_id()]);
    let queues: Vec<&str> = reply.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["emails", "sms"]);
    // Percent-encoded ids: visible ASCII such as & and + is fine.
    let odd = c
        .enqueue(
            "emails",
            json!({"payload": 5, "correlation_id": "a&b+c=d%"}),
        )
        .await;
    let reply = c.get("/v1/jobs?correlation_id=a%26b%2Bc%3Dd%25").await;
    assert_eq!(ids(&reply.json), [odd.str_id()]);
    let none = c.get("/v1/jobs?correlation_id=nobody").await;
    assert_eq!(none.json, json!({"jobs": [], "next": null}));
    server.stop().await;
}

async fn bad_or_missing_parameters_are_refused_naming_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = &server.client;
    c.enqueue("q", json!({"payload": 1})).await;
    let refused = [
        ("/v1/queues/q/jobs", "state"),
        ("/v1/queues/q/jobs?state=", "state"),
        ("/v1/queues/q/jobs?state=done", "state"),
        ("/v1/queues/q/jobs?state=Ready", "state"),
        ("/v1/queues/q/jobs?state=ready&limit=0", "limit"),
        ("/v1/queues/q/jobs?state=ready&limit=1001", "limit"),
        ("/v1/queues/q/jobs?state=ready&limit=x", "limit"),
        ("/v1/queues/q/jobs?state=ready&after=zzz", "after"),
        ("/v1/queues/q/jobs?state=ready&colour=red", "colour"),
        (
            "/v1/queues/q/jobs?state=ready&correlation_id=x",
            "correlation_id",
        ),
        ("/v1/queues/a%20b/jobs?state=ready", "queue name"),
        ("/v1/jobs", "correlation_id"),
        ("/v1/jobs?correlation_id=", "correlation_id"),
        ("/v1/jobs?correlation_id=has%20space", "correlation_id"),
        ("/v1/jobs?correlation_id=%C3%A9", "correlation_id"),
        ("/v1/jobs?correlation_id=x&limit=0", "limit"),
        ("/v1/jobs?correlation_id=x&after=zzz", "after"),
        ("/v1/jobs?correlation_id=x&state=ready", "state"),
    ];
    for (path, named) in refused {
        let reply = c.get(path).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}: {}",
            reply.text
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{path}: {message}");
    }
    let long = format!("/v1/jobs?correlation_id={}", "x".repeat(129));
    assert_eq!(c.get(&long).await.status, 400);
    let longest = format!("/v1/jobs?correlation_id={}", "x".repeat(128));
    assert_eq!(c.get(&longest).await.status, 200);
    // Other methods on the new paths.
    let reply = c.delete("/v1/jobs").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = c.delete("/v1/queues/q/jobs").await;
    assert_eq!(reply.status, 405);
    // Nothing changed.
    let stats = c.get("/v1/queues/q").await;
    assert_eq!(stats.json["ready"], 1);
    server.stop().await;
}

trait StrId {
    fn str_id(&self) -> String;
}

impl StrId for Value {
    fn str_id(&self) -> String {
        self["id"].as_str().expect("an id").to_owned()
    }
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_state_lists_the_queues_jobs_in_it;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_follow_next_to_the_end;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_correlation_id_lists_its_jobs_across_queues;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_or_missing_parameters_are_refused_naming_them;
}
