//! The built binary is SIGKILLed between a completion and its callback:
//! one callback is under way (its receiver holds the request), another
//! was just acknowledged. After a restart on the same directory both
//! arrive — once or more, never zero times — signed with the secret the
//! server generated and stored at its first start. The job's log lines
//! carry the correlation id given at enqueue.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use queue_client::webhooks::{self, Secret};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::raw_http::Client;

/// The log lines of a running binary, as JSON.
type Log = Arc<Mutex<Vec<Value>>>;

/// Starts the binary on `dir` and waits for its ready line; its log lines
/// (JSON, at debug level for queue-core) are kept in the returned log.
fn spawn(dir: &Path) -> (Child, SocketAddr, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info,queue_core=debug")
        .env_remove("QUEUE_WEBHOOK_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start queue-server");
    let stdout = child.stdout.take().expect("stdout");
    let log: Log = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "queue-server ready" {
                let _ = ready_tx.send(entry["fields"]["listen"].as_str().map(str::to_owned));
            }
            kept.lock().unwrap().push(entry);
        }
    });
    let listen = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a ready line within 60 s")
        .expect("a listen field");
    (child, listen.parse().expect("an address"), log)
}

/// A request as the receiver got it.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver that holds the first request it gets unanswered (as if
/// slow) and answers every later one 204.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let first = Arc::new(Mutex::new(true));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, first) = (tx.clone(), Arc::clone(&first));
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (tx, first) = (tx.clone(), Arc::clone(&first));
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let hold = std::mem::replace(&mut *first.lock().unwrap(), false);
                        let _ = tx.send(Received {
                            headers: parts.headers,
                            body,
                        });
                        if hold {
                            std::future::pending::<()>().await;
                        }
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Enqueues a job that calls back `url` (with `request_id` as its
/// X-Request-Id), leases and completes it; returns its id once the
/// completion is acknowledged.
async fn complete_one(c: &Client, url: &str, request_id: &str) -> String {
    let body = json!({"payload": {"for": request_id}, "callback_url": url}).to_string();
    let reply = c
        .send(
            "POST",
            "/v1/queues/hooks/jobs",
            Some(&body),
            &[("x-request-id", request_id)],
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json["correlation_id"], request_id);
    let id = reply.str("id");
    let leased = c
        .post(
            "/v1/queues/hooks/lease",
            json!({"max_jobs": 1, "lease_ms": 60_000}),
        )
        .await;
    let job = &leased.json["jobs"][0];
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["correlation_id"], request_id, "the lease carries it");
    let done = c
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_id": job["lease_id"], "result": {"done": request_id}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["callback"]["state"], "pending");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_owed_at_a_sigkill_arrive_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (url_addr, mut received) = receiver().await;
    let url = format!("http://{url_addr}/hook");
    let (mut child, addr, first_log) = spawn(dir.path());
    let secret_file = dir.path().join("webhook-secret");
    let secret: Secret = std::fs::read_to_string(&secret_file)
        .expect("a secret generated at first start")
        .parse()
        .expect("a well-formed secret");
    let log_text = serde_json::to_string(&*first_log.lock().unwrap()).unwrap();
    assert!(
        log_text.contains("webhook-secret"),
        "the log says where the secret is"
    );
    assert!(
        !log_text.contains(&secret.expose()),
        "and never the secret itself"
    );

    let c = Client::lenient(addr);
    let held = complete_one(&c, &url, "kill9-held").await;
    // Its first attempt reached the receiver, which holds it unanswered.
    let first = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("the first attempt within 30 s")
        .unwrap();
    assert_eq!(first.headers["x-request-id"], "kill9-held");
    // The second is acknowledged; the kill comes right after.
    let fresh = complete_one(&c, &url, "kill9-fresh").await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let (mut child, addr, log) = spawn(dir.path());
    let c = Client::lenient(addr);
    // Both arrive (the held one again: at least once, not exactly once).
    let mut got: HashMap<String, Vec<Received>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(got.contains_key(&held) && got.contains_key(&fresh)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, received.recv())
            .await
            .expect("both callbacks within 60 s of the restart")
            .unwrap();
        let body: Value = serde_json::from_slice(&next.body).unwrap();
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        got.entry(id).or_default().push(next);
    }
    for (id, request_id) in [(&held, "kill9-held"), (&fresh, "kill9-fresh")] {
        let attempt = &got[id][0];
        assert_eq!(attempt.headers["x-request-id"], request_id);
        assert_eq!(
            attempt.headers["webhook-id"],
            format!("job_{id}_1").as_str()
        );
        webhooks::verify(
            std::slice::from_ref(&secret),
            &attempt.headers,
            &attempt.body,
            SystemTime::now(),
        )
        .expect("signed with the stored secret");
        let body: Value = serde_json::from_slice(&attempt.body).unwrap();
        assert_eq!(body["type"], "job.completed");
        assert_eq!(body["data"]["result"], json!({"done": request_id}));
    }
    // The store records them delivered. (Across processes there is no
    // notification to wait on: poll, bounded.)
    for id in [&held, &fresh] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = c.job(id).await;
            if job["callback"]["state"] == "delivered" {
                break;
            }
            assert!(Instant::now() < deadline, "not delivered: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The held attempt was counted, and the restart made it due again.
    let held_job = c.job(&held).await;
    assert!(
        held_job["callback"]["attempts"].as_u64().unwrap() >= 2,
        "{held_job}"
    );
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim(),
        secret.expose(),
        "the stored secret is kept across restarts"
    );

    // The job's log lines carry its correlation id: its state changes
    // (debug, INFO for the terminal one) before the kill, and its
    // delivery after.
    let lines = |log: &Log, id: &str| -> Vec<Value> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|e| e["fields"]["job"] == id || e["span"]["job_id"] == id)
            .cloned()
            .collect()
    };
    let before = lines(&first_log, &fresh);
    let states: Vec<&str> = before
        .iter()
        .filter(|e| e["fields"]["message"] == "job state changed")
        .map(|e| e["fields"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ready", "leased", "completed"], "{before:?}");
    for entry in &before {
        assert_eq!(entry["fields"]["correlation_id"], "kill9-fresh", "{entry}");
    }
    let completed = before
        .iter()
        .find(|e| e["fields"]["state"] == "completed")
        .unwrap();
    assert_eq!(completed["level"], "INFO");
    let after = lines(&log, &fresh);
    let delivered = after
        .iter()
        .find(|e| e["fields"]["message"] == "callback delivered")
        .unwrap_or_else(|| panic!("a delivery line: {after:?}"));
    assert_eq!(delivered["span"]["correlation_id"], "kill9-fresh");
    child.kill().unwrap();
    child.wait().unwrap();
}
