//! Three built `queue-server` binaries on one PostgreSQL database, with
//! producers and workers (raw HTTP) spread over them, and the servers
//! SIGKILLed and restarted at random (seeded, a bounded number of times)
//! while they work. Afterwards:
//!
//! - every enqueue a producer was told succeeded is there, and completed
//!   (every job drains);
//! - every completion a worker was told succeeded is there;
//! - no job was ever leased twice at once: each worker records every lease
//!   it got (job, lease id, granted at, `lease_expires_at`) and whether its
//!   completion was acknowledged; a job's next lease is never granted before
//!   the previous one expired, and a job whose completion was acknowledged is
//!   never leased again (some leases are abandoned on purpose, so that jobs
//!   do come back);
//! - each tick of a per-second schedule (`catch_up: all`) fired exactly
//!   once: one job per idempotency key `schedule:<name>:<T>`, no tick
//!   missing between the first and the last;
//! - each callback owed (a quarter of the jobs carry a `callback_url` to a
//!   receiver in this process) was delivered at least once, signed with the
//!   servers' shared secret.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use queue_client::webhooks::{self, Secret};
use serde_json::{Value, json};
use test_support::{TestDatabase, fresh_database};
use tokio::sync::Notify;

use crate::raw_http::{Client, Reply};

/// The callback signing secret all three servers share.
const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1u";
/// The length of every lease the workers take.
const LEASE_MS: u64 = 1_500;
/// Servers SIGKILLed (and restarted) in one run.
const KILLS: usize = 6;
/// A bound for every wait of the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// When a callback attempt claimed by a killed server is given up as lost
/// (the default `--callback-timeout` plus the dispatcher's settle margin).
const CLAIM_GIVEN_UP: Duration = Duration::from_secs(10 + 60);

/// A small deterministic generator (xorshift64*), seeded per task.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Starts the binary on the database at `url` and waits for its ready line.
fn spawn(url: &str, data_dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue-server-under-test"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--database-url")
        .arg(url)
        .arg("--data-dir")
        .arg(data_dir)
        .env("QUEUE_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start queue-server");
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Reads every line, so that the server never blocks on a full pipe.
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
        .recv_timeout(PATIENCE)
        .expect("a ready line within 60 s")
        .expect("a listen field");
    (child, listen.parse().expect("an address"))
}

/// The live servers' addresses (a slot is `None` while its server is down).
#[derive(Clone, Default)]
struct Live(Arc<Mutex<Vec<Option<SocketAddr>>>>);

impl Live {
    /// A client of a random live server.
    fn pick(&self, rng: &mut Rng) -> Client {
        let live: Vec<SocketAddr> = self.0.lock().unwrap().iter().flatten().copied().collect();
        assert!(!live.is_empty(), "at least one server is always up");
        Client::lenient(live[rng.below(live.len() as u64) as usize])
    }
}

/// Whether an answer says the server (or its connection) went away: then
/// the request is tried again on another server.
fn gone(reply: &Reply) -> bool {
    reply.status == 0 || reply.status == 503
}

/// Sends `body` to `path` on random live servers until one answers
/// something else than "gone", within [`PATIENCE`].
async fn post_anywhere(live: &Live, rng: &mut Rng, path: &str, body: &Value) -> Reply {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = live.pick(rng).post(path, body.clone()).await;
        if !gone(&reply) {
            return reply;
        }
        assert!(Instant::now() < deadline, "{path}: no server answered");
        tokio::task::yield_now().await;
    }
}

/// The deliveries the callback receiver got, by job id.
#[derive(Default)]
struct Deliveries {
    by_job: Mutex<HashMap<String, Vec<(http::HeaderMap, Bytes)>>>,
    arrived: Notify,
}

/// A callback receiver on 127.0.0.1 that records every delivery and
/// answers 204.
async fn receiver() -> (String, Arc<Deliveries>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let deliveries = Arc::new(Deliveries::default());
    let kept = Arc::clone(&deliveries);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if let Some(id) = parsed["data"]["id"].as_str() {
                            kept.by_job
                                .lock()
                                .unwrap()
                                .entry(id.to_owned())
                                .or_default()
                                .push((parts.headers, body));
                            kept.arrived.notify_waiters();
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
    (url, deliveries)
}

/// One lease a worker got.
#[derive(Debug, Clone)]
struct LeaseRecord {
    lease_id: String,
    granted_at: u64,
    expires_at: u64,
    /// Whether the worker's completion with this lease was acknowledged.
    completed: bool,
}

/// A producer: enqueues until told to stop (at most `max` jobs), each
/// with its own idempotency key so that a retry after a lost answer does
/// not make a second job. Returns the acknowledged jobs: id and whether it
/// carries a callback.
async fn produce(
    live: Live,
    seed: u64,
    callback: String,
    stop: Arc<AtomicBool>,
    max: usize,
) -> Vec<(String, bool)> {
    let mut rng = Rng::new(seed);
    let mut acked = Vec::new();
    for n in 0..max {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let with_callback = n % 4 == 0;
        let mut body = json!({
            "payload": {"producer": seed, "n": n},
            "idempotency_key": format!("p{seed}-{n}"),
        });
        if with_callback {
            body["callback_url"] = json!(callback);
        }
        let reply = post_anywhere(&live, &mut rng, "/v1/queues/work/jobs", &body).await;
        assert!(
            reply.status == 202 || reply.status == 200,
            "enqueue: {} {}",
            reply.status,
            reply.text
        );
        acked.push((reply.str("id"), with_callback));
    }
    acked
}

/// A worker: leases from random servers until told to stop, completes
/// what it leased (on random servers), except a few leases it abandons so
/// that they expire and the job is leased again. Returns its lease records
/// by job.
async fn work(live: Live, seed: u64, stop: Arc<AtomicBool>) -> Vec<(String, LeaseRecord)> {
    let mut rng = Rng::new(seed);
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !stop.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the worker ran for 180 s");
        let reply = live
            .pick(&mut rng)
            .post(
                "/v1/queues/work/lease",
                json!({"max_jobs": 4, "lease_ms": LEASE_MS, "wait_ms": 200}),
            )
            .await;
        if gone(&reply) {
            tokio::task::yield_now().await;
            continue;
        }
        assert_eq!(reply.status, 200, "lease: {}", reply.text);
        for job in reply.json["jobs"].as_array().cloned().unwrap_or_default() {
            let id = job["id"].as_str().unwrap().to_owned();
            let lease_id = job["lease_id"].as_str().unwrap().to_owned();
            let expires_at = job["lease_expires_at"].as_u64().unwrap();
            let mut record = LeaseRecord {
                lease_id: lease_id.clone(),
                granted_at: expires_at - LEASE_MS,
                expires_at,
                completed: false,
            };
            if rng.below(20) != 0 {
                let done = post_anywhere(
                    &live,
                    &mut rng,
                    &format!("/v1/jobs/{id}/complete"),
                    &json!({"lease_id": lease_id, "result": {"by": seed}}),
                )
                .await;
                // 409: the lease expired first (or an answer was lost and
                // the retry found the job completed already).
                assert!(
                    done.status == 200 || done.status == 409,
                    "complete: {} {}",
                    done.status,
                    done.text
                );
                record.completed = done.status == 200;
            }
            records.push((id, record));
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_on_one_database_survive_sigkills() {
    let database: TestDatabase = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let url = database.url().to_owned();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (callback, deliveries) = receiver().await;
    let started = Instant::now();

    let mut children = Vec::new();
    let live = Live::default();
    for dir in &dirs {
        let (child, addr) = spawn(&url, dir.path());
        children.push(child);
        live.0.lock().unwrap().push(Some(addr));
    }
    let mut rng = Rng::new(13);
    let put = live
        .pick(&mut rng)
        .send(
            "PUT",
            "/v1/schedules/tick",
            Some(
                &json!({"queue": "ticks", "every_ms": 1000, "job": {"payload": {}}, "catch_up": "all"})
                    .to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text);

    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_working = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            tokio::spawn(produce(
                live.clone(),
                100 + p,
                callback.clone(),
                Arc::clone(&stop_producing),
                2_000,
            ))
        })
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(work(live.clone(), 200 + w, Arc::clone(&stop_working))))
        .collect();

    // The kills: a random server, at a random moment, restarted at once on
    // the same database (on a new port).
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let victim = rng.below(3) as usize;
        live.0.lock().unwrap()[victim] = None;
        children[victim].kill().expect("SIGKILL");
        children[victim].wait().unwrap();
        let (child, addr) = tokio::task::spawn_blocking({
            let url = url.clone();
            let dir = dirs[victim].path().to_owned();
            move || spawn(&url, &dir)
        })
        .await
        .unwrap();
        children[victim] = child;
        live.0.lock().unwrap()[victim] = Some(addr);
    }
    stop_producing.store(true, Ordering::SeqCst);
    let mut enqueued = Vec::new();
    for producer in producers {
        enqueued.extend(producer.await.unwrap());
    }
    assert!(enqueued.len() >= 30, "enqueued only {}", enqueued.len());

    // Every acknowledged job drains: wait for each to complete (a long
    // poll on a live server; abandoned leases come back after LEASE_MS).
    let c = live.pick(&mut rng);
    for (id, _) in &enqueued {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let reply = c.get(&format!("/v1/jobs/{id}?wait_ms=5000")).await;
            assert_eq!(reply.status, 200, "job {id}: {}", reply.text);
            if reply.json["state"] == "completed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not drain: {}",
                reply.text
            );
        }
    }
    stop_working.store(true, Ordering::SeqCst);
    let mut leases: BTreeMap<String, Vec<LeaseRecord>> = BTreeMap::new();
    for worker in workers {
        for (id, record) in worker.await.unwrap() {
            leases.entry(id).or_default().push(record);
        }
    }
    // No job leased twice at once; nothing leased after an acknowledged
    // completion; every acknowledged completion is there.
    let known: HashSet<&str> = enqueued.iter().map(|(id, _)| id.as_str()).collect();
    let mut relet = 0;
    for (id, records) in &mut leases {
        assert!(
            known.contains(id.as_str()),
            "leased a job nobody enqueued: {id}"
        );
        records.sort_by_key(|r| r.granted_at);
        for pair in records.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                !a.completed,
                "job {id} leased again after an acknowledged completion: {records:?}"
            );
            assert!(
                b.granted_at >= a.expires_at,
                "job {id} leased twice at once: {a:?} then {b:?}"
            );
            assert_ne!(a.lease_id, b.lease_id, "job {id}: a lease id reused");
            relet += 1;
        }
        if records.iter().any(|r| r.completed) {
            let job = c.job(id).await;
            assert_eq!(job["state"], "completed", "{job}");
        }
    }
    assert!(relet > 0, "no job came back after an abandoned lease");
    let stats = c.get("/v1/queues/work").await;
    assert_eq!(
        (stats.json["ready"].as_u64(), stats.json["leased"].as_u64()),
        (Some(0), Some(0)),
        "{}",
        stats.text
    );

    // Each owed callback arrived (at least once), signed with the secret.
    let secret: Secret = SECRET.parse().unwrap();
    let owed: Vec<&str> = enqueued
        .iter()
        .filter(|(_, callback)| *callback)
        .map(|(id, _)| id.as_str())
        .collect();
    // An attempt claimed by a server SIGKILLed before it settled is
    // claimed again only once the claim is given up as lost: the callback
    // timeout (10 s by default) plus the dispatcher's 60 s settle margin.
    // On a shared database no server can tell that claim from a live
    // server's, so nothing shortens that wait.
    let deadline = Instant::now() + CLAIM_GIVEN_UP + PATIENCE;
    loop {
        let arrived = deliveries.arrived.notified();
        let missing: Vec<&str> = {
            let by_job = deliveries.by_job.lock().unwrap();
            owed.iter()
                .copied()
                .filter(|id| !by_job.contains_key(*id))
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(left, arrived).await.is_ok(),
            "callbacks never delivered: {missing:?}"
        );
    }
    for id in &owed {
        let by_job = deliveries.by_job.lock().unwrap();
        let (headers, body) = &by_job[*id][0];
        webhooks::verify(
            std::slice::from_ref(&secret),
            headers,
            body,
            SystemTime::now(),
        )
        .expect("signed with the shared secret");
    }

    // Each tick of the schedule fired once, none missing.
    let ticks = c.get("/v1/queues/ticks/jobs?state=ready&limit=1000").await;
    assert_eq!(ticks.status, 200, "{}", ticks.text);
    let keys: Vec<u64> = ticks.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            let key = job["idempotency_key"].as_str().unwrap();
            key.strip_prefix("schedule:tick:")
                .unwrap_or_else(|| panic!("a tick's key: {key}"))
                .parse()
                .unwrap()
        })
        .collect();
    let distinct: HashSet<u64> = keys.iter().copied().collect();
    assert_eq!(distinct.len(), keys.len(), "a tick fired twice: {keys:?}");
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a tick missing: {sorted:?}");
    }
    let expected = started.elapsed().as_secs().saturating_sub(3);
    assert!(
        sorted.len() as u64 >= expected,
        "{} ticks in {:?}: {sorted:?}",
        sorted.len(),
        started.elapsed()
    );

    println!(
        "multi_server: {} jobs enqueued and drained, {} leases ({relet} after an expiry), \
         {KILLS} SIGKILLs, {} callbacks owed, {} ticks, in {:?}",
        enqueued.len(),
        leases.values().map(Vec::len).sum::<usize>(),
        owed.len(),
        sorted.len(),
        started.elapsed()
    );
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    drop(database);
}
