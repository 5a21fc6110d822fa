//! `POST /v1/queues/{queue}/settle`: many settlements and the next lease in
//! one request and one durable commit, each item answered as its single
//! endpoint would, a bad request refused whole.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use queue_core::{Config, ManualClock};
use queue_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::{Backend, Store, TestServer};

/// 2026-11-25T00:00:00Z.
const T0: u64 = 1_795_564_800_000;

/// A server on `store` whose clock stands still at [`T0`] unless the test
/// moves it: nothing falls due behind the test's back.
async fn manual_server(store: &Store, clock: &ManualClock) -> TestServer {
    let core = clock.clone();
    TestServer::start_at(store, ServerConfig::default(), move |c: Config| {
        c.clock(core)
    })
    .await
}

/// Enqueues `n` jobs on `queue` and leases them all; returns the leased jobs.
async fn leased(s: &TestServer, queue: &str, n: u32) -> Vec<Value> {
    for i in 0..n {
        s.client.enqueue(queue, json!({"payload": i})).await;
    }
    let jobs = s.client.lease(queue, n, 60_000).await;
    assert_eq!(jobs.len(), n as usize);
    jobs
}

/// The HTTP status of each item of a settle's `results`, in order.
fn statuses(reply: &Value) -> Vec<u64> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect()
}

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

fn lease(job: &Value) -> String {
    job["lease_id"].as_str().unwrap().to_owned()
}

/// The job id of a job on the wire as PostgreSQL stores it (a `bigint`).
fn row_id(job: &Value) -> i64 {
    i64::from_str_radix(&id(job), 16).unwrap()
}

/// The frames of the sled store's journal in `dir` (its `journal` file:
/// frames of `len` u32 BE, CRC u32 BE, `len` bytes, from offset 0, then
/// zeroes): one per durable batch since the store was created (a lap
/// ends, and the next goes to the other file, only past 32 MiB, which no
/// test here comes near).
fn journal_frames(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("journal")).unwrap_or_default();
    let (mut at, mut frames) = (0, 0);
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        frames += 1;
        at += 8 + len;
    }
    frames
}

/// The distinct transactions (`xmin`) that last wrote the rows `sql`
/// selects (its first column must be `xmin::text`).
fn writers(store: &Store, sql: &str) -> Vec<String> {
    let url = store.url().unwrap();
    test_support::query_texts(url, sql)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

async fn settle_answers_each_item_as_its_endpoint_would_and_leases_the_next(backend: Backend) {
    let s = TestServer::start(backend).await;
    let c = &s.client;
    let held = leased(&s, "mail", 4).await;
    let foreign = leased(&s, "sms", 1).await;
    // Two more ready in the queue, for the lease part.
    let next_a = c.enqueue("mail", json!({"payload": "a"})).await;
    let next_b = c.enqueue("mail", json!({"payload": "b"})).await;
    c.enqueue("mail", json!({"payload": "c"})).await;

    let reply = c
        .post(
            "/v1/queues/mail/settle",
            json!({
                "complete": [
                    {"id": id(&held[0]), "lease_id": lease(&held[0]), "result": {"sent": 1}},
                    {"id": id(&held[1]), "lease_id": lease(&held[2])},
                    {"id": id(&held[1]), "lease_id": "garbage"},
                    {"id": "00000000ffffffff", "lease_id": lease(&held[1])},
                    {"id": "not-an-id", "lease_id": lease(&held[1])},
                    {"id": id(&foreign[0]), "lease_id": lease(&foreign[0])},
                ],
                "fail": [
                    {"id": id(&held[2]), "lease_id": lease(&held[2]), "error": "no", "retryable": false},
                    {"id": id(&held[3]), "lease_id": lease(&held[3]), "error": "later", "retry_in_ms": 60000},
                    {"id": id(&held[0]), "lease_id": lease(&held[0]), "error": "twice"},
                ],
                "lease": {"max_jobs": 2, "lease_ms": 30000},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let results = reply.json["results"].as_array().unwrap();
    let got: Vec<(String, u64, &str)> = results
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
                r["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let want = [
        (id(&held[0]), 200, ""),
        (id(&held[1]), 409, "lease_lost"),
        (id(&held[1]), 409, "lease_lost"),
        ("00000000ffffffff".to_owned(), 404, "not_found"),
        ("not-an-id".to_owned(), 404, "not_found"),
        (id(&foreign[0]), 404, "not_found"),
        (id(&held[2]), 200, ""),
        (id(&held[3]), 200, ""),
        // The second item about a job the request already completed.
        (id(&held[0]), 409, "lease_lost"),
    ];
    let want: Vec<(String, u64, &str)> = want.into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(results[0]["job"]["state"], "completed");
    assert_eq!(results[0]["state"], "completed");
    assert_eq!(results[0]["job"]["result"], json!({"sent": 1}));
    assert!(results[0].get("error").is_none());
    assert!(results[1].get("job").is_none());
    assert!(results[1].get("state").is_none());
    assert_eq!(results[6]["job"]["state"], "dead");
    assert_eq!(results[6]["state"], "dead");
    assert_eq!(results[7]["job"]["state"], "scheduled");
    assert_eq!(results[7]["state"], "scheduled");
    assert!(reply.header("preference-applied").is_none());
    assert_eq!(results[7]["job"]["last_error"], "later");
    let message = results[5]["error"]["message"].as_str().unwrap();
    assert!(message.contains("not found in queue mail"), "{message}");

    // The lease took the two oldest ready jobs, with their lease ids.
    let jobs = reply.json["jobs"].as_array().unwrap();
    let taken: Vec<String> = jobs.iter().map(id).collect();
    assert_eq!(taken, vec![id(&next_a), id(&next_b)]);
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "leased" && j["lease_id"].is_string())
    );

    // What the store says: the refused items changed nothing.
    assert_eq!(c.job(&id(&held[1])).await["state"], "leased");
    assert_eq!(c.job(&id(&foreign[0])).await["state"], "leased");
    assert_eq!(c.job(&id(&held[0])).await["state"], "completed");
    let stats = c.get("/v1/queues/mail").await.json;
    assert_eq!(
        (
            &stats["ready"],
            &stats["leased"],
            &stats["completed"],
            &stats["dead"],
            &stats["scheduled"]
        ),
        (&json!(1), &json!(3), &json!(1), &json!(1), &json!(1))
    );
    // Counted as the single endpoints count.
    let counters = s.app.queue().queue_counters();
    let mail = &counters["mail"];
    assert_eq!((mail.completed, mail.failed, mail.dead), (1, 2, 1));
}

async fn prefer_return_minimal_answers_each_settled_item_with_its_state_only(backend: Backend) {
    let s = TestServer::start(backend).await;
    let c = &s.client;
    let held = leased(&s, "mail", 3).await;
    let next = c.enqueue("mail", json!({"payload": "next"})).await;
    let body = json!({
        "complete": [
            {"id": id(&held[0]), "lease_id": lease(&held[0]), "result": {"sent": 1}},
            {"id": id(&held[1]), "lease_id": "garbage"},
        ],
        "fail": [
            {"id": id(&held[2]), "lease_id": lease(&held[2]), "error": "no", "retryable": false},
        ],
        "lease": {"max_jobs": 1},
    });
    let reply = c
        .send(
            "POST",
            "/v1/queues/mail/settle",
            Some(&body.to_string()),
            &[("prefer", "respond-async, Return=Minimal")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("preference-applied"), Some("return=minimal"));
    let results = reply.json["results"].as_array().unwrap();
    assert_eq!(
        results[0],
        json!({"id": id(&held[0]), "status": 200, "state": "completed"})
    );
    assert_eq!(results[1]["status"], 409);
    assert_eq!(results[1]["error"]["code"], "lease_lost");
    assert!(results[1].get("state").is_none());
    assert_eq!(
        results[2],
        json!({"id": id(&held[2]), "status": 200, "state": "dead"})
    );
    // The leased jobs come whole: the worker runs them.
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], next["id"]);
    assert_eq!(jobs[0]["payload"], "next");
    assert!(jobs[0]["lease_id"].is_string());
    // Settled as without the preference.
    let done = c.job(&id(&held[0])).await;
    assert_eq!(
        (&done["state"], &done["result"]),
        (&json!("completed"), &json!({"sent": 1}))
    );
    assert_eq!(c.job(&id(&held[1])).await["state"], "leased");
    assert_eq!(c.job(&id(&held[2])).await["state"], "dead");
}

async fn settle_emits_the_events_the_single_endpoints_emit(backend: Backend) {
    let s = TestServer::start(backend).await;
    let held = leased(&s, "ev", 2).await;
    let mut events = s.app.queue().subscribe();
    let reply = s
        .client
        .post(
            "/v1/queues/ev/settle",
            json!({
                "complete": [{"id": id(&held[0]), "lease_id": lease(&held[0])}],
                "fail": [{"id": id(&held[1]), "lease_id": lease(&held[1]), "error": "x", "retryable": false}],
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["jobs"], json!([]));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event")
            .expect("the log");
        seen.push((event.id.to_string(), event.state.to_string()));
    }
    assert_eq!(
        seen,
        vec![
            (id(&held[0]), "completed".to_owned()),
            (id(&held[1]), "dead".to_owned()),
        ]
    );
}

async fn a_bad_settle_is_refused_whole_naming_the_item_and_changes_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let c = &s.client;
    let held = leased(&s, "bad", 2).await;
    c.enqueue("bad", json!({"payload": "ready"})).await;
    let good = json!({"id": id(&held[0]), "lease_id": lease(&held[0])});
    let cases = [
        (
            json!({"complete": [good, {"id": id(&held[1]), "lease_id": lease(&held[1]), "reslt": 1}]}),
            "complete[1]",
        ),
        (
            json!({"complete": [good, {"id": id(&held[1])}]}),
            "complete[1]",
        ),
        (
            json!({"complete": [good], "fail": [{"id": id(&held[1]), "lease_id": lease(&held[1]), "retry_in_ms": u64::MAX}]}),
            "fail[0]",
        ),
        (
            json!({"complete": [good], "lease": {"max_jobs": 0}}),
            "lease",
        ),
        (
            json!({"complete": [good], "lease": {"wait_ms": 60001}}),
            "lease.wait_ms",
        ),
        (json!({"complete": [good], "lese": {}}), "lese"),
        (
            json!({"complete": vec![good.clone(); 600], "fail": vec![json!({"id": id(&held[1]), "lease_id": lease(&held[1])}); 401]}),
            "at most 1000",
        ),
    ];
    for (body, named) in cases {
        let reply = c.post("/v1/queues/bad/settle", body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{named}: {}",
            reply.text
        );
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{named}: {message}");
    }
    let bad_queue = c.post("/v1/queues/a%20b/settle", json!({})).await;
    assert_eq!(bad_queue.status, 400);
    // Nothing settled, nothing leased.
    let stats = c.get("/v1/queues/bad").await.json;
    assert_eq!((&stats["leased"], &stats["ready"]), (&json!(2), &json!(1)));

    // An empty body settles and leases nothing.
    let empty = c.send("POST", "/v1/queues/bad/settle", None, &[]).await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json, json!({"results": [], "jobs": []}));
}

async fn a_settle_lease_with_wait_ms_waits_for_a_job_after_settling(backend: Backend) {
    let s = TestServer::start(backend).await;
    let held = leased(&s, "wait", 1).await;
    let c = s.client.clone();
    let body = json!({
        "complete": [{"id": id(&held[0]), "lease_id": lease(&held[0])}],
        "lease": {"wait_ms": 20000},
    });
    let settling = tokio::spawn(async move { c.post("/v1/queues/wait/settle", body).await });
    // Parked on the queue: the settlement is durable by then.
    let queue = s.app.queue().clone();
    tokio::time::timeout(Duration::from_secs(20), async {
        while queue.lease_waiters("wait") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the settle's lease parks");
    assert_eq!(s.client.job(&id(&held[0])).await["state"], "completed");
    let next = s.client.enqueue("wait", json!({"payload": "next"})).await;
    let reply = settling.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["results"][0]["status"], 200);
    assert_eq!(reply.json["jobs"][0]["id"], next["id"]);
}

async fn a_settle_and_its_lease_are_one_durable_commit(backend: Backend) {
    let store = Store::new(backend);
    let clock = ManualClock::new(T0);
    let s = manual_server(&store, &clock).await;
    let c = &s.client;
    let held = leased(&s, "one", 2).await;
    let mut ready = Vec::new();
    for n in 0..3 {
        ready.push(c.enqueue("one", json!({"payload": n})).await);
    }
    let frames_before = store.dir().map(journal_frames);
    let last_event_before = store.url().map(|url| {
        test_support::query_texts(url, "SELECT coalesce(max(id), 0)::text FROM queue_events")
            .unwrap()[0]
            .clone()
            .unwrap()
    });

    let reply = c
        .post(
            "/v1/queues/one/settle",
            json!({
                "complete": [{"id": id(&held[0]), "lease_id": lease(&held[0])}],
                "fail": [{"id": id(&held[1]), "lease_id": lease(&held[1]), "error": "no", "retryable": false}],
                "lease": {"max_jobs": 2, "lease_ms": 30000},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(statuses(&reply.json), [200, 200]);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.iter().map(id).collect::<Vec<_>>(),
        vec![id(&ready[0]), id(&ready[1])]
    );

    match backend {
        // One durable batch: one frame appended and fdatasynced.
        Backend::Sled => {
            let frames = journal_frames(store.dir().unwrap());
            assert_eq!(
                frames - frames_before.unwrap(),
                1,
                "the settlements and the lease are one journal frame"
            );
        }
        // One transaction: every row the request wrote, and every event
        // it logged, carries the same xmin.
        Backend::Postgres => {
            let ids = [&held[0], &held[1], &jobs[0], &jobs[1]]
                .map(|job| row_id(job).to_string())
                .join(",");
            let rows = writers(
                &store,
                &format!("SELECT DISTINCT xmin::text FROM queue_jobs WHERE id IN ({ids})"),
            );
            assert_eq!(rows.len(), 1, "rows written by {rows:?}");
            let events = writers(
                &store,
                &format!(
                    "SELECT DISTINCT xmin::text FROM queue_events WHERE id > {}",
                    last_event_before.unwrap()
                ),
            );
            assert_eq!(events, rows, "the events are the same transaction's");
            // The rows the request did not touch were written before.
            let untouched = writers(
                &store,
                &format!(
                    "SELECT DISTINCT xmin::text FROM queue_jobs WHERE id = {}",
                    row_id(&ready[2])
                ),
            );
            assert_ne!(untouched, rows);
        }
    }
    let stats = c.get("/v1/queues/one").await.json;
    assert_eq!(
        (
            &stats["ready"],
            &stats["leased"],
            &stats["completed"],
            &stats["dead"]
        ),
        (&json!(1), &json!(2), &json!(1), &json!(1))
    );
}

async fn a_settlement_that_frees_a_limit_lets_the_same_request_lease(backend: Backend) {
    let store = Store::new(backend);
    let clock = ManualClock::new(T0);
    let s = manual_server(&store, &clock).await;
    let c = &s.client;
    let patch = |queue: &'static str, body: &'static str| async move {
        let path = format!("/v1/queues/{queue}");
        let reply = c.send("PATCH", &path, Some(body), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    };

    // max_leased: the queue is full until the settlement frees its slot.
    patch("cap", r#"{"max_leased": 1}"#).await;
    let first = c.enqueue("cap", json!({"payload": 1})).await;
    let second = c.enqueue("cap", json!({"payload": 2})).await;
    c.enqueue("cap", json!({"payload": 3})).await;
    let held = c.lease("cap", 3, 60_000).await;
    assert_eq!(held.iter().map(id).collect::<Vec<_>>(), vec![id(&first)]);
    assert!(c.lease("cap", 1, 60_000).await.is_empty(), "at max_leased");
    let reply = c
        .post(
            "/v1/queues/cap/settle",
            json!({
                "complete": [{"id": id(&held[0]), "lease_id": lease(&held[0])}],
                "lease": {"max_jobs": 3},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["results"][0]["status"], 200);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.iter().map(id).collect::<Vec<_>>(), vec![id(&second)]);
    let stats = c.get("/v1/queues/cap").await.json;
    assert_eq!((&stats["leased"], &stats["ready"]), (&json!(1), &json!(1)));

    // group_max_leased: a failure retried at once puts its job back at the
    // head of its group (the clock stands still: same run_at, lower id)
    // and frees the group's slot; the same request leases it again.
    patch("grp", r#"{"group_max_leased": 1}"#).await;
    let g1 = c.enqueue("grp", json!({"payload": 1, "group": "g"})).await;
    c.enqueue("grp", json!({"payload": 2, "group": "g"})).await;
    let held = c.lease("grp", 2, 60_000).await;
    assert_eq!(held.iter().map(id).collect::<Vec<_>>(), vec![id(&g1)]);
    let reply = c
        .post(
            "/v1/queues/grp/settle",
            json!({
                "fail": [{"id": id(&held[0]), "lease_id": lease(&held[0]), "error": "again", "retry_in_ms": 0}],
                "lease": {"max_jobs": 2},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["results"][0]["job"]["state"], "ready");
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.iter().map(id).collect::<Vec<_>>(), vec![id(&g1)]);
    assert_eq!(jobs[0]["attempts"], 2);
    assert_ne!(lease(&jobs[0]), lease(&held[0]));
    let stats = c.get("/v1/queues/grp").await.json;
    assert_eq!((&stats["leased"], &stats["ready"]), (&json!(1), &json!(1)));
    // Counts and group counts as the records imply, on either backend.
    let report = s.app.queue().verify().await.expect("verify");
    assert!(report.is_ok(), "{:?}", report.problems);
}

async fn lost_leases_and_unknown_jobs_do_not_stop_the_lease(backend: Backend) {
    let s = TestServer::start(backend).await;
    let c = &s.client;
    let held = leased(&s, "mixed", 2).await;
    let mut ready = Vec::new();
    for n in 0..3 {
        ready.push(c.enqueue("mixed", json!({"payload": n})).await);
    }
    let unknown = "00000000ffffffff";
    // One good item among a lost lease and an unknown job.
    let reply = c
        .post(
            "/v1/queues/mixed/settle",
            json!({
                "complete": [
                    {"id": id(&held[0]), "lease_id": lease(&held[1])},
                    {"id": id(&held[0]), "lease_id": lease(&held[0])},
                    {"id": unknown, "lease_id": lease(&held[0])},
                ],
                "lease": {"max_jobs": 1},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(statuses(&reply.json), [409, 200, 404]);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.iter().map(id).collect::<Vec<_>>(), vec![id(&ready[0])]);

    // Nothing to commit at all: every item refused, the lease still runs.
    let reply = c
        .post(
            "/v1/queues/mixed/settle",
            json!({
                "complete": [{"id": id(&held[1]), "lease_id": lease(&held[0])}],
                "fail": [{"id": unknown, "lease_id": lease(&held[1]), "error": "x"}],
                "lease": {"max_jobs": 1},
            }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(statuses(&reply.json), [409, 404]);
    let jobs = reply.json["jobs"].as_array().unwrap();
    assert_eq!(jobs.iter().map(id).collect::<Vec<_>>(), vec![id(&ready[1])]);
    assert_eq!(c.job(&id(&held[1])).await["state"], "leased");
    let stats = c.get("/v1/queues/mixed").await.json;
    assert_eq!(
        (&stats["ready"], &stats["leased"], &stats["completed"]),
        (&json!(1), &json!(3), &json!(1))
    );
}

/// Workers settling and leasing at the same time share batches (sled) and
/// transactions (PostgreSQL), where each commit and lease's events lie
/// among the others': every job it returns, settled or leased, carries the
/// id of its own latest event, as the store keeps it.
async fn concurrent_settles_and_leases_get_their_own_event_ids(backend: Backend) {
    let store = Store::new(backend);
    let config = store.config();
    let queue = tokio::task::spawn_blocking(move || queue_core::Queue::open_with(config))
        .await
        .unwrap()
        .unwrap();
    const WORKERS: u32 = 8;
    const JOBS: u32 = 64;
    for n in 0..JOBS {
        let payload = format!("{{\"n\":{n}}}").into_bytes();
        queue
            .enqueue("ids", queue_core::NewJob::new(payload))
            .await
            .unwrap();
    }
    let opts = queue_core::LeaseOptions::default()
        .max_jobs(1)
        .lease(Duration::from_secs(60));
    let first = queue
        .lease("ids", &opts.clone().max_jobs(WORKERS))
        .await
        .unwrap();
    assert_eq!(first.len(), WORKERS as usize);
    let mut workers = Vec::new();
    for held in first {
        let (queue, opts) = (queue.clone(), opts.clone());
        workers.push(tokio::spawn(async move {
            let mut held = Some(held);
            let mut checked = 0;
            // Bounded: each round completes one job of the JOBS.
            for _ in 0..JOBS {
                let Some(job) = held.take() else { break };
                let settlement = queue_core::Settlement {
                    id: job.job.id,
                    lease_id: job.lease_id,
                    outcome: queue_core::Settle::Complete { result: None },
                };
                let (results, leased) = queue
                    .settle_and_lease("ids", &[settlement], &opts)
                    .await
                    .unwrap();
                let settled = results.into_iter().next().unwrap().unwrap();
                let stored = queue.get(settled.id).await.unwrap().unwrap();
                assert_eq!(settled.last_event_id, stored.last_event_id, "settled");
                assert!(settled.last_event_id.is_some());
                checked += 1;
                if let Some(next) = leased.into_iter().next() {
                    // Held by this worker alone: nothing changes it meanwhile.
                    let stored = queue.get(next.job.id).await.unwrap().unwrap();
                    assert_eq!(next.job.last_event_id, stored.last_event_id, "leased");
                    assert!(next.job.last_event_id.is_some());
                    assert!(next.job.last_event_id > settled.last_event_id);
                    held = Some(next);
                }
            }
            checked
        }));
    }
    let mut settled = 0;
    for worker in workers {
        settled += worker.await.unwrap();
    }
    assert_eq!(settled, JOBS);
    assert_eq!(queue.stats("ids").await.unwrap().completed, u64::from(JOBS));
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_settles_and_leases_get_their_own_event_ids;
    #[tokio::test]
    async fn a_settle_and_its_lease_are_one_durable_commit;
    #[tokio::test]
    async fn a_settlement_that_frees_a_limit_lets_the_same_request_lease;
    #[tokio::test]
    async fn lost_leases_and_unknown_jobs_do_not_stop_the_lease;
    #[tokio::test]
    async fn settle_answers_each_item_as_its_endpoint_would_and_leases_the_next;
    #[tokio::test]
    async fn settle_emits_the_events_the_single_endpoints_emit;
    #[tokio::test]
    async fn prefer_return_minimal_answers_each_settled_item_with_its_state_only;
    #[tokio::test]
    async fn a_bad_settle_is_refused_whole_naming_the_item_and_changes_nothing;
    #[tokio::test]
    async fn a_settle_lease_with_wait_ms_waits_for_a_job_after_settling;
}
