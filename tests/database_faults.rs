//! The built binary on PostgreSQL when the database fails.
//!
//! - The database stops mid-requests (its own throwaway cluster, started by
//!   `scripts/postgres.sh` on its own directory and port, stopped with an
//!   immediate shutdown while requests run, then started again): requests
//!   get 503 `unavailable` (never a 500, never a hang past a bound, the
//!   server keeps running), nothing is half-applied (after the restart every
//!   acknowledged enqueue is there once, every refused one is either wholly
//!   there or not at all, a completion refused during the outage left its job
//!   leased), and the server reconnects by itself.
//! - Started against an unreachable database, the server exits non-zero
//!   with a message naming the database without its password.
//! - Started against a database whose queue schema is newer than the
//!   binary's, it exits non-zero saying so.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::{TestDatabase, execute, fresh_database, postgres_script, start_cluster};

use crate::raw_http::{Client, Reply};

/// The bound on any one request, even while the database is away.
const REQUEST_BOUND: Duration = Duration::from_secs(20);

/// Starts the binary on `url` and waits for its ready line.
fn spawn(url: &str, data_dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--database-url")
        .arg(url)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start queue-server");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "queue-server ready" {
                let _ = ready_tx.send(entry["fields"]["listen"].as_str().map(str::to_owned));
            }
        }
    });
    let listen = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a ready line within 60 s")
        .expect("a listen field");
    (child, listen.parse().expect("an address"))
}

/// Runs the binary on `url` expecting it to fail at start: returns its
/// exit status and everything it printed.
fn start_fails(url: &str, data_dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("QUEUE_DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start queue-server");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the server did not give up within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status, output)
}

/// A request with a bound: the server must answer within [`REQUEST_BOUND`].
async fn bounded(request: impl std::future::Future<Output = Reply>) -> Reply {
    tokio::time::timeout(REQUEST_BOUND, request)
        .await
        .expect("an answer within the bound, even with the database away")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A throwaway cluster of this test's own, destroyed with this value.
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = start_cluster(Some((dir.path(), port)));
        OwnCluster { dir, port, url }
    }

    fn run(&self, args: &[&str]) {
        postgres_script(Some((self.dir.path(), self.port)), args);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.run(&["destroy"]));
        let lock = format!("{}.lock", self.dir.path().display());
        let _ = std::fs::remove_file(lock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_gives_503_nothing_half_applied_and_service_resumes() {
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let admin = cluster.url.clone();
    let database = tokio::task::spawn_blocking(move || TestDatabase::create_on(&admin))
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(database.url(), data.path());
    let c = Client::lenient(addr);

    // Before: acknowledged jobs, one of them leased.
    let mut acked: HashMap<String, String> = HashMap::new();
    for n in 0..10 {
        let key = format!("before-{n}");
        let reply = c
            .post(
                "/v1/queues/q/jobs",
                json!({"payload": n, "idempotency_key": key}),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        acked.insert(key, reply.str("id"));
    }
    let leased = c
        .post(
            "/v1/queues/q/lease",
            json!({"max_jobs": 1, "lease_ms": 600_000}),
        )
        .await;
    assert_eq!(leased.status, 200, "{}", leased.text);
    let held = leased.json["jobs"][0].clone();
    let held_id = held["id"].as_str().unwrap().to_owned();

    // Requests keep coming while the database stops.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut answers: Vec<(String, Reply)> = Vec::new();
            let mut unavailable = 0;
            for n in 0..2_000 {
                let key = format!("during-{n}");
                let reply = bounded(c.post(
                    "/v1/queues/q/jobs",
                    json!({"payload": n, "idempotency_key": key}),
                ))
                .await;
                if reply.status == 503 {
                    unavailable += 1;
                }
                answers.push((key, reply));
                if unavailable >= 5 {
                    break;
                }
            }
            answers
        })
    };
    tokio::task::spawn_blocking({
        let dir = cluster.dir.path().to_owned();
        let port = cluster.port;
        move || postgres_script(Some((&dir, port)), &["stop", "--immediate"])
    })
    .await
    .unwrap();
    let during = writer.await.unwrap();
    let mut refused = Vec::new();
    for (key, reply) in &during {
        match reply.status {
            202 => {
                acked.insert(key.clone(), reply.str("id"));
            }
            503 => {
                assert_eq!(reply.json["error"]["code"], "unavailable", "{}", reply.text);
                refused.push(key.clone());
            }
            other => panic!("{key}: {other} {}", reply.text),
        }
    }
    assert!(!refused.is_empty(), "no 503 while the database was down");

    // With the database down: reads, leases and completions are 503 too,
    // within the bound, and the server stays up.
    let read = bounded(c.get(&format!("/v1/jobs/{held_id}"))).await;
    assert_eq!(
        (read.status, read.json["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{}",
        read.text
    );
    let lease = bounded(c.post("/v1/queues/q/lease", json!({"max_jobs": 1}))).await;
    assert_eq!(lease.status, 503, "{}", lease.text);
    let complete = bounded(c.post(
        &format!("/v1/jobs/{held_id}/complete"),
        json!({"lease_id": held["lease_id"], "result": 1}),
    ))
    .await;
    assert_eq!(complete.status, 503, "{}", complete.text);
    let health = bounded(c.get("/healthz")).await;
    assert_ne!(health.status, 0, "the server is still running");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server is still running"
    );

    // The database comes back: the server reconnects by itself. (Across
    // processes there is nothing to wait on: poll, bounded.)
    tokio::task::spawn_blocking({
        let dir = cluster.dir.path().to_owned();
        let port = cluster.port;
        move || postgres_script(Some((&dir, port)), &["start"])
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = bounded(c.get("/v1/queues/q")).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert!(
            Instant::now() < deadline,
            "no service 60 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing half-applied: every acknowledged job is there, once; the
    // completion refused during the outage left its job leased.
    for (key, id) in &acked {
        let job = c.job(id).await;
        assert_eq!(job["idempotency_key"], key.as_str(), "{job}");
    }
    let job = c.job(&held_id).await;
    assert_eq!(job["state"], "leased", "{job}");
    // A refused enqueue either happened wholly (a replay finds it) or not
    // at all (it is new now); never a job without its key or twice.
    for key in &refused {
        let n: u64 = key.trim_start_matches("during-").parse().unwrap();
        let reply = c
            .post(
                "/v1/queues/q/jobs",
                json!({"payload": n, "idempotency_key": key}),
            )
            .await;
        assert!(reply.status == 200 || reply.status == 202, "{}", reply.text);
        acked.insert(key.clone(), reply.str("id"));
    }
    let ready = c.get("/v1/queues/q/jobs?state=ready&limit=1000").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let mut listed: Vec<String> = ready.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    listed.push(held_id.clone());
    listed.sort();
    let mut expected: Vec<String> = acked.values().cloned().collect();
    expected.sort();
    assert_eq!(listed, expected, "every job once, in one state");
    let stats = c.get("/v1/queues/q").await;
    assert_eq!(
        (stats.json["ready"].as_u64(), stats.json["leased"].as_u64()),
        (Some(acked.len() as u64 - 1), Some(1)),
        "{}",
        stats.text
    );
    // And it serves writes again: the held job completes.
    let done = c
        .post(
            &format!("/v1/jobs/{held_id}/complete"),
            json!({"lease_id": held["lease_id"], "result": 1}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);

    child.kill().unwrap();
    child.wait().unwrap();
    drop(database);
    drop(cluster);
}

#[test]
fn startup_against_an_unreachable_database_fails_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("postgres://queue:hunter2@127.0.0.1:{port}/jobs");
    let (status, output) = start_fails(&url, data.path());
    assert!(!status.success(), "{status}: {output}");
    assert!(
        output.contains(&format!("127.0.0.1:{port}")),
        "names the database: {output}"
    );
    assert!(!output.contains("hunter2"), "never the password: {output}");
}

#[test]
fn startup_against_a_newer_schema_fails_with_a_clear_message() {
    let database = fresh_database();
    let data = tempfile::tempdir().unwrap();
    // A first start creates the schema.
    let (mut child, _) = spawn(database.url(), data.path());
    child.kill().unwrap();
    child.wait().unwrap();
    execute(
        database.url(),
        "UPDATE queue_schema_version SET version = version + 100",
    )
    .unwrap();
    let (status, output) = start_fails(database.url(), data.path());
    assert!(!status.success(), "{status}: {output}");
    assert!(
        output.contains("newer"),
        "says the schema is newer: {output}"
    );
    assert!(
        output.contains(database.name()),
        "names the database: {output}"
    );
}
