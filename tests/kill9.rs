//! The built `queue-server` binary is killed with SIGKILL while clients
//! enqueue and complete; after a restart on the same directory every
//! acknowledged enqueue and completion is there, and every job drains.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::raw_http::Client;

/// The binary under test: `QUEUE_TESTS_SERVER_BIN` if set (the soak runs a
/// copy, so that rebuilding meanwhile does not swap it), else the one built
/// with these tests.
fn server_binary() -> std::ffi::OsString {
    std::env::var_os("QUEUE_TESTS_SERVER_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_queue-server-under-test").into())
}

/// Starts the binary on `dir` at a free port and waits for its ready line.
pub fn spawn_server(dir: &Path) -> (Child, SocketAddr) {
    spawn_server_at(dir, "127.0.0.1:0")
}

/// Starts the binary on `dir` listening on `listen` and waits for its ready
/// line; returns it and the address it reports.
pub fn spawn_server_at(dir: &Path, listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(server_binary())
        .args(["--listen", listen, "--log-format", "json", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start queue-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server prints a ready line")
            .expect("read a log line");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "queue-server ready" {
            break entry["fields"]["listen"]
                .as_str()
                .expect("listen field")
                .parse()
                .expect("an address");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// What the clients were told succeeded.
#[derive(Default)]
pub struct Acked {
    /// Jobs whose enqueue was acknowledged.
    pub enqueued: Mutex<HashSet<String>>,
    /// Jobs whose completion was acknowledged.
    pub completed: Mutex<HashSet<String>>,
    /// Acknowledgements so far.
    pub count: AtomicU64,
    /// Notified at every acknowledgement.
    pub progress: Notify,
}

impl Acked {
    fn note(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_waiters();
    }
}

/// Enqueues to `k9` until the server fails a request.
pub async fn producer(c: Client, acked: Arc<Acked>, tag: usize) {
    for n in 0..100_000 {
        let reply = c
            .send(
                "POST",
                "/v1/queues/k9/jobs",
                Some(&json!({"payload": {"tag": tag, "n": n}, "backoff_ms": 0}).to_string()),
                &[],
            )
            .await;
        if reply.status != 202 {
            return;
        }
        acked.enqueued.lock().expect("lock").insert(reply.str("id"));
        acked.note();
    }
}

/// Leases from `k9` and completes until the server fails a request.
pub async fn worker(c: Client, acked: Arc<Acked>) {
    for _ in 0..100_000 {
        let reply = c
            .post(
                "/v1/queues/k9/lease",
                json!({"max_jobs": 4, "lease_ms": 1000, "wait_ms": 200}),
            )
            .await;
        if reply.status != 200 {
            return;
        }
        for job in reply.json["jobs"].as_array().cloned().unwrap_or_default() {
            let id = job["id"].as_str().expect("job id").to_owned();
            let done = c
                .post(
                    &format!("/v1/jobs/{id}/complete"),
                    json!({"lease_id": job["lease_id"]}),
                )
                .await;
            if done.status == 200 {
                acked.completed.lock().expect("lock").insert(id);
                acked.note();
            }
        }
    }
}

/// A client whose requests may fail because the server dies: failures are
/// reported as status 0 instead of panicking.
pub fn lenient(addr: SocketAddr) -> Client {
    Client::lenient(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Acked::default());
    for round in 0..3u64 {
        let (mut child, addr) = spawn_server(dir.path());
        let mut tasks = Vec::new();
        for tag in 0..3 {
            tasks.push(tokio::spawn(producer(
                lenient(addr),
                Arc::clone(&acked),
                tag,
            )));
        }
        for _ in 0..3 {
            tasks.push(tokio::spawn(worker(lenient(addr), Arc::clone(&acked))));
        }
        // Kill at a different amount of progress each round.
        let target = acked.count.load(Ordering::SeqCst) + 150 + round * 170;
        while acked.count.load(Ordering::SeqCst) < target {
            let progressed = acked.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if acked.count.load(Ordering::SeqCst) >= target {
                break;
            }
            tokio::time::timeout(Duration::from_secs(60), progressed)
                .await
                .expect("the clients make progress");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for task in tasks {
            task.await.unwrap();
        }

        let (mut child, addr) = spawn_server(dir.path());
        let c = Client::new(addr);
        let enqueued = acked.enqueued.lock().unwrap().clone();
        let completed = acked.completed.lock().unwrap().clone();
        for id in &enqueued {
            let reply = c.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(
                reply.status, 200,
                "round {round}: acknowledged enqueue {id} lost"
            );
        }
        for id in &completed {
            let job = c.job(id).await;
            assert_eq!(
                job["state"], "completed",
                "round {round}: acknowledged completion of {id} lost"
            );
        }
        child.kill().expect("stop the checker");
        child.wait().expect("reap");
    }

    // Everything drains: leases of the killed servers expire and are retried.
    let (mut child, addr) = spawn_server(dir.path());
    let c = Client::new(addr);
    drain(&c, 10_000).await;
    let stats = c.get("/v1/queues/k9").await.json;
    assert_eq!(
        (
            stats["scheduled"].as_u64(),
            stats["ready"].as_u64(),
            stats["leased"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "every job drained: {stats}"
    );
    let finished = stats["completed"].as_u64().unwrap() + stats["dead"].as_u64().unwrap();
    assert!(finished >= acked.enqueued.lock().unwrap().len() as u64);
    // SIGTERM: a graceful stop exits 0.
    assert_eq!(send_sigterm(child.id()), 0);
    let status = child.wait().expect("reap");
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
}

/// Leases and completes the `k9` queue's jobs until none is scheduled,
/// ready or leased (leases of killed servers expire and are retried), in
/// at most `rounds` lease calls.
pub async fn drain(c: &Client, rounds: usize) {
    for _ in 0..rounds {
        let stats = c.get("/v1/queues/k9").await.json;
        let open = ["scheduled", "ready", "leased"]
            .iter()
            .map(|s| stats[*s].as_u64().unwrap_or(0))
            .sum::<u64>();
        if open == 0 {
            return;
        }
        let reply = c
            .post(
                "/v1/queues/k9/lease",
                json!({"max_jobs": 100, "lease_ms": 60000, "wait_ms": 2000}),
            )
            .await;
        for job in reply.json["jobs"].as_array().cloned().unwrap_or_default() {
            let done = c
                .post(
                    &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
                    json!({"lease_id": job["lease_id"]}),
                )
                .await;
            assert_eq!(done.status, 200, "drain: {}", done.text);
        }
    }
}

/// Sends SIGTERM through the `kill` command (the workspace forbids unsafe
/// code, so no libc call).
pub fn send_sigterm(pid: u32) -> i32 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(-1))
        .unwrap_or(-1)
}
