//! Callbacks: signed deliveries to real HTTP receivers on 127.0.0.1, the
//! retry schedule on the manual clock (no sleeps), `Retry-After`, `410
//! Gone`, receivers that never answer, operator retries and listings, the
//! bound on attempts under way, and the host policy.

// A test reports a failure by panicking; `unwrap` says where.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use queue_core::service::CallbackHosts;
use queue_core::{Config, ManualClock};
use queue_proto::webhooks::{self, Secret};
use queue_server::{CallbackConfig, ServerConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{Backend, Store, TestServer};

const T0: u64 = 1_800_000_000_000;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What a receiver does with a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer {
    /// Answers with this status (and `Retry-After` seconds).
    Status(u16, Option<u64>),
    /// Never answers (holds the connection open).
    Hang,
}

/// A request as the receiver got it.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A real HTTP receiver: answers from its script in order (the last
/// answer repeats), reports every request on a channel, and counts the
/// requests it holds unanswered. (The metrics tests use it too.)
pub(crate) struct Receiver {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    most_hanging: Arc<AtomicUsize>,
}

impl Receiver {
    pub(crate) async fn start(script: &[Answer]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (tx, received) = mpsc::unbounded_channel();
        let hanging = Arc::new(AtomicUsize::new(0));
        let most_hanging = Arc::new(AtomicUsize::new(0));
        let (h, m) = (Arc::clone(&hanging), Arc::clone(&most_hanging));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, tx, h, m) = (
                    Arc::clone(&script),
                    tx.clone(),
                    Arc::clone(&h),
                    Arc::clone(&m),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (script, tx, h, m) = (
                            Arc::clone(&script),
                            tx.clone(),
                            Arc::clone(&h),
                            Arc::clone(&m),
                        );
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let answer = {
                                let mut script = script.lock().unwrap();
                                if script.len() > 1 {
                                    script.pop_front().unwrap()
                                } else {
                                    *script.front().unwrap()
                                }
                            };
                            let _ = tx.send(Received {
                                headers: parts.headers,
                                body,
                            });
                            match answer {
                                Answer::Status(status, retry_after) => {
                                    let mut response = Response::new(Full::new(Bytes::from("ok")));
                                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                                    if let Some(seconds) = retry_after {
                                        response.headers_mut().insert(
                                            "retry-after",
                                            seconds.to_string().parse().unwrap(),
                                        );
                                    }
                                    Ok::<_, Infallible>(response)
                                }
                                Answer::Hang => {
                                    let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                                    m.fetch_max(now, Ordering::SeqCst);
                                    // Until the server gives up and drops us.
                                    let _guard = Decrement(Arc::clone(&h));
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                            }
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received,
            most_hanging,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks/jobs?source=test", self.addr)
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(30), self.received.recv())
            .await
            .expect("a callback within 30 s")
            .expect("the receiver runs")
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server on a fresh store of `backend` on the manual clock at `T0`,
/// with `callbacks`.
async fn server_with(
    backend: Backend,
    callbacks: CallbackConfig,
) -> (TestServer, ManualClock, Store) {
    let dir = Store::new(backend);
    let clock = ManualClock::new(T0);
    let core = clock.clone();
    let server = TestServer::start_at(
        &dir,
        ServerConfig {
            callbacks,
            ..ServerConfig::default()
        },
        move |c: Config| c.clock(core),
    )
    .await;
    (server, clock, dir)
}

fn signed(timeout: Duration) -> CallbackConfig {
    CallbackConfig {
        secrets: vec![SECRET.parse().unwrap(), OLD_SECRET.parse().unwrap()],
        timeout,
        ..CallbackConfig::default()
    }
}

/// Enqueues a job calling back `url`, leases and completes it; returns it.
async fn finish(server: &TestServer, url: &str, request_id: &str) -> Value {
    let c = &server.client;
    let body = json!({"payload": {"n": 1}, "callback_url": url}).to_string();
    let reply = c
        .send(
            "POST",
            "/v1/queues/q/jobs",
            Some(&body),
            &[
                ("x-request-id", request_id),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json["callback_url"], url);
    assert_eq!(reply.json["callback"], Value::Null, "nothing owed yet");
    let id = reply.json["id"].as_str().unwrap().to_owned();
    let leased = c.lease("q", 1, 60_000).await;
    let done = c
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": leased[0]["lease_id"], "result": {"sent": true}}),
        )
        .await;
    assert_eq!(done.status, 200);
    // Owed in the same commit as the completion.
    assert_eq!(done.json["callback"]["state"], "pending");
    done.json
}

/// Waits until `n` attempts have been settled.
async fn settled(server: &TestServer, n: u64) {
    let mut settled = server.app.callback_metrics().settled();
    tokio::time::timeout(Duration::from_secs(30), settled.wait_for(|s| *s >= n))
        .await
        .expect("settled within 30 s")
        .unwrap();
}

async fn failed_attempts_follow_the_schedule_and_retry_after_until_delivered(backend: Backend) {
    let mut receiver = Receiver::start(&[
        Answer::Status(500, None),
        Answer::Status(429, Some(120)),
        Answer::Status(204, None),
    ])
    .await;
    let (server, clock, _dir) = server_with(backend, signed(Duration::from_secs(10))).await;
    let job = finish(&server, &receiver.url(), "req-77").await;
    let id = job["id"].as_str().unwrap();

    // Attempt 1, at once: 500.
    let first = receiver.next().await;
    settled(&server, 1).await;
    let state = server.client.job(id).await;
    let callback = &state["callback"];
    assert_eq!(callback["state"], "pending");
    assert_eq!(callback["attempts"], 1);
    assert_eq!(callback["last_status"], 500);
    assert!(callback["last_error"].as_str().unwrap().contains("500"));
    let next = callback["next_attempt_at"].as_u64().unwrap();
    assert!(
        (T0 + 4_000..=T0 + 6_000).contains(&next),
        "5 s ±20 %: {next}"
    );

    // Attempt 2 when the clock reaches it: 429 with Retry-After: 120.
    clock.advance(Duration::from_millis(next - T0));
    let second = receiver.next().await;
    settled(&server, 2).await;
    let callback = server.client.job(id).await["callback"].clone();
    assert_eq!(
        (
            callback["attempts"].as_u64(),
            callback["last_status"].as_u64()
        ),
        (Some(2), Some(429))
    );
    assert_eq!(
        callback["next_attempt_at"],
        next + 120_000,
        "Retry-After wins over the schedule"
    );

    // Attempt 3: 204, delivered.
    clock.advance(Duration::from_secs(120));
    let third = receiver.next().await;
    settled(&server, 3).await;
    let state = server.client.job(id).await;
    let callback = &state["callback"];
    assert_eq!(callback["state"], "delivered");
    assert_eq!(callback["attempts"], 3);
    assert_eq!(callback["last_status"], 204);
    assert_eq!(callback["delivered_at"], next + 120_000);
    assert_eq!(callback["next_attempt_at"], Value::Null);

    // Every attempt is the same delivery, signed at its own time.
    let webhook_id = format!("job_{id}_1");
    for (attempt, at) in [(&first, T0), (&second, next), (&third, next + 120_000)] {
        assert_eq!(attempt.header("webhook-id"), webhook_id);
        assert_eq!(attempt.header("webhook-timestamp"), (at / 1000).to_string());
        assert_eq!(attempt.header("content-type"), "application/json");
        assert_eq!(attempt.header("x-request-id"), "req-77");
        assert_eq!(
            attempt.header("traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let body = attempt.json();
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["data"]["id"], id);
        assert_eq!(body["data"]["result"], json!({"sent": true}));
        assert_eq!(body["data"]["correlation_id"], "req-77");
        // When the job finished (T0), whatever the attempt's time.
        assert_eq!(body["data"]["finished_at"], T0);
        assert_eq!(body["timestamp"], "2027-01-15T08:00:00.000Z");
        // One signature per secret; each verifies alone, with our
        // verifier and with the reference one.
        let signatures: Vec<&str> = attempt.header("webhook-signature").split(' ').collect();
        assert_eq!(signatures.len(), 2);
        let now = UNIX_EPOCH + Duration::from_millis(at);
        for secret in [SECRET, OLD_SECRET] {
            let parsed: Secret = secret.parse().unwrap();
            webhooks::verify(&[parsed], &attempt.headers, &attempt.body, now).unwrap();
            // The reference library signs the same content the same way
            // (its verify() reads the real clock: see the 410 test).
            let reference = standardwebhooks::Webhook::new(secret).unwrap();
            let expected = reference
                .sign(
                    attempt.header("webhook-id"),
                    i64::try_from(at / 1000).unwrap(),
                    &attempt.body,
                )
                .unwrap();
            assert!(
                signatures.contains(&expected.as_str()),
                "{expected} in {signatures:?}"
            );
        }
        let stranger = Secret::from_bytes(&[9u8; 32]).unwrap();
        assert!(webhooks::verify(&[stranger], &attempt.headers, &attempt.body, now).is_err());
    }
    let listed = server.client.get("/v1/callbacks?state=delivered").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["jobs"][0]["id"], id);
    assert_eq!(listed.json["next"], Value::Null);
    let metrics = server.client.get("/metrics").await.text;
    assert!(
        metrics.contains("queue_callback_attempts_total{queue=\"q\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("queue_callback_attempts_total{queue=\"q\",outcome=\"retried\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

async fn gone_fails_at_once_and_an_operator_retry_is_a_new_delivery(backend: Backend) {
    let mut receiver =
        Receiver::start(&[Answer::Status(410, None), Answer::Status(200, None)]).await;
    // The system clock, so that the reference verifier (which reads it)
    // can check the timestamp.
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            callbacks: signed(Duration::from_secs(10)),
            ..ServerConfig::default()
        },
    )
    .await;
    let job = finish(&server, &receiver.url(), "req-gone").await;
    let id = job["id"].as_str().unwrap();
    let first = receiver.next().await;
    for secret in [SECRET, OLD_SECRET] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&first.body, &first.headers)
            .expect("the reference verifier accepts the delivery");
    }
    assert!(
        standardwebhooks::Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .unwrap()
            .verify(&first.body, &first.headers)
            .is_err()
    );
    settled(&server, 1).await;
    let callback = server.client.job(id).await["callback"].clone();
    assert_eq!(callback["state"], "failed");
    assert_eq!(
        (
            callback["attempts"].as_u64(),
            callback["last_status"].as_u64()
        ),
        (Some(1), Some(410))
    );
    assert_eq!(callback["next_attempt_at"], Value::Null);
    let failed = server.client.get("/v1/callbacks?state=failed").await;
    assert_eq!(failed.json["jobs"][0]["id"], id);
    let pending = server.client.get("/v1/callbacks?state=pending").await;
    assert_eq!(pending.json["jobs"], json!([]));

    let retried = server
        .client
        .post(&format!("/v1/jobs/{id}/callback/retry"), json!({}))
        .await;
    assert_eq!(retried.status, 202, "{}", retried.text);
    assert_eq!(retried.json["callback"]["state"], "pending");
    assert_eq!(retried.json["callback"]["attempts"], 0);
    let second = receiver.next().await;
    settled(&server, 2).await;
    assert_eq!(first.header("webhook-id"), format!("job_{id}_1"));
    assert_eq!(
        second.header("webhook-id"),
        format!("job_{id}_2"),
        "a new delivery"
    );
    assert_eq!(
        server.client.job(id).await["callback"]["state"],
        "delivered"
    );
    server.stop().await;
}

async fn a_receiver_that_never_answers_times_out_and_is_retried(backend: Backend) {
    let mut receiver = Receiver::start(&[Answer::Hang]).await;
    let (server, clock, _dir) = server_with(backend, signed(Duration::from_millis(300))).await;
    let job = finish(&server, &receiver.url(), "req-hang").await;
    let id = job["id"].as_str().unwrap();
    receiver.next().await;
    settled(&server, 1).await;
    let callback = server.client.job(id).await["callback"].clone();
    assert_eq!(callback["state"], "pending");
    assert_eq!(callback["last_status"], Value::Null);
    assert!(
        callback["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 300 ms"),
        "{callback}"
    );
    // The next attempt comes on the schedule, and times out the same way.
    clock.advance(Duration::from_secs(6));
    receiver.next().await;
    settled(&server, 2).await;
    assert_eq!(server.client.job(id).await["callback"]["attempts"], 2);
    server.stop().await;
}

async fn attempts_under_way_are_bounded_and_never_hold_up_the_queue(backend: Backend) {
    let mut receiver = Receiver::start(&[Answer::Hang]).await;
    let (server, _clock, _dir) = server_with(
        backend,
        CallbackConfig {
            concurrency: 2,
            timeout: Duration::from_secs(60),
            ..signed(Duration::from_secs(60))
        },
    )
    .await;
    for n in 0..5 {
        finish(&server, &receiver.url(), &format!("req-{n}")).await;
    }
    // Two attempts hang; the other three wait in the store.
    receiver.next().await;
    receiver.next().await;
    // The queue goes on meanwhile.
    for n in 0..20 {
        let job = server
            .client
            .enqueue("other", json!({ "payload": n }))
            .await;
        let leased = server.client.lease("other", 1, 60_000).await;
        assert_eq!(leased[0]["id"], job["id"]);
        let done = server
            .client
            .post(
                &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
                json!({"lease_id": leased[0]["lease_id"]}),
            )
            .await;
        assert_eq!(done.status, 200);
    }
    assert!(
        receiver.received.try_recv().is_err(),
        "no third attempt under way"
    );
    assert_eq!(receiver.most_hanging.load(Ordering::SeqCst), 2);
    let metrics = server.client.get("/metrics").await.text;
    assert!(
        metrics.contains("queue_callback_attempts_in_flight 2"),
        "{metrics}"
    );
    let pending = server
        .client
        .get("/v1/callbacks?state=pending&limit=2")
        .await;
    assert_eq!(pending.json["jobs"].as_array().unwrap().len(), 2);
    let rest = server
        .client
        .get(&format!(
            "/v1/callbacks?state=pending&limit=10&after={}",
            pending.json["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest.json["jobs"].as_array().unwrap().len(), 3);
    server.stop().await;
}

async fn callback_calls_refuse_what_does_not_fit(backend: Backend) {
    let (server, _clock, _dir) = server_with(backend, signed(Duration::from_secs(10))).await;
    let c = &server.client;
    let plain = c.enqueue("q", json!({"payload": 1})).await;
    let waiting = c
        .enqueue(
            "q",
            json!({"payload": 1, "callback_url": "http://127.0.0.1:9/x"}),
        )
        .await;
    for (id, status, code) in [
        (plain["id"].as_str().unwrap(), 409, "conflict"),
        (waiting["id"].as_str().unwrap(), 409, "conflict"),
        ("00000000000fffff", 404, "not_found"),
        ("nope", 404, "not_found"),
    ] {
        let reply = c
            .post(&format!("/v1/jobs/{id}/callback/retry"), json!({}))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{id}: {}",
            reply.text
        );
    }
    for path in [
        "/v1/callbacks",
        "/v1/callbacks?state=sent",
        "/v1/callbacks?state=pending&limit=0",
        "/v1/callbacks?state=pending&after=zz",
    ] {
        let reply = c.get(path).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}"
        );
    }
    server.stop().await;
}

async fn public_only_servers_refuse_private_and_loopback_receivers(backend: Backend) {
    let (server, _clock, _dir) = server_with(
        backend,
        CallbackConfig {
            hosts: CallbackHosts::Public,
            ..signed(Duration::from_secs(10))
        },
    )
    .await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ] {
        let reply = server
            .client
            .post(
                "/v1/queues/q/jobs",
                json!({"payload": 1, "callback_url": url}),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{url}"
        );
        assert!(reply.text.contains("public"), "{}", reply.text);
    }
    let fine = server
        .client
        .post(
            "/v1/queues/q/jobs",
            json!({"payload": 1, "callback_url": "https://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(fine.status, 202);
    server.stop().await;
}

async fn dead_and_cancelled_jobs_are_reported_too(backend: Backend) {
    let mut receiver = Receiver::start(&[Answer::Status(200, None)]).await;
    let (server, _clock, _dir) = server_with(backend, signed(Duration::from_secs(10))).await;
    let c = &server.client;
    let url = receiver.url();
    let doomed = c
        .enqueue(
            "q",
            json!({"payload": 1, "max_attempts": 1, "callback_url": url}),
        )
        .await;
    let leased = c.lease("q", 1, 60_000).await;
    let dead = c
        .post(
            &format!("/v1/jobs/{}/fail", doomed["id"].as_str().unwrap()),
            json!({"lease_id": leased[0]["lease_id"], "error": "no such mailbox"}),
        )
        .await;
    assert_eq!(dead.json["state"], "dead");
    let got = receiver.next().await.json();
    assert_eq!(got["type"], "job.dead");
    assert_eq!(got["data"]["last_error"], "no such mailbox");
    let waiting = c
        .enqueue("q", json!({"payload": 2, "callback_url": url}))
        .await;
    let id = waiting["id"].as_str().unwrap();
    let cancelled = c.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(cancelled.json["callback"]["state"], "pending");
    let got = receiver.next().await.json();
    assert_eq!(
        (got["type"].as_str(), got["data"]["id"].as_str()),
        (Some("job.cancelled"), Some(id))
    );
    settled(&server, 2).await;
    let delivered = c.get("/v1/callbacks?state=delivered").await;
    assert_eq!(delivered.json["jobs"].as_array().unwrap().len(), 2);
    server.stop().await;
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_attempts_follow_the_schedule_and_retry_after_until_delivered;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gone_fails_at_once_and_an_operator_retry_is_a_new_delivery;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_that_never_answers_times_out_and_is_retried;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_under_way_are_bounded_and_never_hold_up_the_queue;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callback_calls_refuse_what_does_not_fit;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn public_only_servers_refuse_private_and_loopback_receivers;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_and_cancelled_jobs_are_reported_too;
}
