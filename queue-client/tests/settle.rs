//! Settling many jobs and leasing the next in one request: `Client::settle`
//! with its typed per-item outcomes, and the worker, which settles each
//! finished job and refills its slot in one request.

use std::sync::Arc;
use std::time::Duration;

use queue_client::{
    Client, Error, Failure, Job, JobState, LeaseOptions, SettleRequest, Worker, WorkerReport,
};
use tokio::sync::{Notify, mpsc};

use crate::both;
use crate::common::{Backend, Harness, Kind, PATIENCE, RecordingProxy};

both!(
    settle_answers_each_item_and_leases_the_next,
    the_worker_settles_each_outcome_right,
);

async fn settle_answers_each_item_and_leases_the_next(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let jobs = client.queue::<u32>("cs");
    let mut handles = Vec::new();
    for n in 0..4 {
        handles.push(jobs.enqueue(&n).await.unwrap());
    }
    let held = jobs.lease(&LeaseOptions::new().max_jobs(3)).await.unwrap();
    assert_eq!(held.len(), 3);
    handles[2].cancel().await.unwrap();
    let request = SettleRequest::new()
        .complete(&held[0].job().id, held[0].lease_id(), &"done")
        .unwrap()
        .fail(
            &held[1].job().id,
            held[1].lease_id(),
            Failure::permanent("no"),
        )
        .complete(&held[2].job().id, held[2].lease_id(), &"late")
        .unwrap()
        .lease(LeaseOptions::new().max_jobs(5));
    assert_eq!(request.len(), 3);
    let settled = jobs.settle(request).await.unwrap();

    // Completions first, then failures, each with its own outcome.
    let ids: Vec<_> = settled.results.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            held[0].job().id.clone(),
            held[2].job().id.clone(),
            held[1].job().id.clone()
        ]
    );
    assert!(matches!(
        settled.results[0].outcome,
        Ok(JobState::Completed)
    ));
    assert!(
        matches!(settled.results[1].outcome, Err(Error::LeaseLost { .. })),
        "{:?}",
        settled.results[1].outcome
    );
    assert!(matches!(settled.results[2].outcome, Ok(JobState::Dead)));
    // The lease got the one job left, typed.
    assert_eq!(settled.jobs.len(), 1);
    assert_eq!(*settled.jobs[0].payload(), 3);
    assert_eq!(
        handles[0].wait::<String>(PATIENCE).await.unwrap(),
        "done".to_owned()
    );
    assert_eq!(handles[2].status().await.unwrap(), JobState::Cancelled);

    // A job of another queue is not found through this one; more than
    // 1,000 items is refused before anything is sent.
    let other = client.queue::<u32>("other");
    other.enqueue(&9).await.unwrap();
    let foreign = other.lease(&LeaseOptions::new()).await.unwrap();
    let settled = client
        .settle(
            "cs",
            SettleRequest::new()
                .complete(&foreign[0].job().id, foreign[0].lease_id(), &1)
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(
        settled.results[0].outcome,
        Err(Error::NotFound { .. })
    ));
    let mut many = SettleRequest::new();
    for _ in 0..1001 {
        many = many.fail(
            &foreign[0].job().id,
            foreign[0].lease_id(),
            Failure::new("x"),
        );
    }
    assert!(matches!(
        client.settle("cs", many).await,
        Err(Error::InvalidRequest { .. })
    ));
    assert_eq!(
        h.core.stats("other").await.unwrap().leased,
        1,
        "refused items change nothing"
    );
}

/// Waits (bounded) until `queue`'s counts satisfy `done`.
async fn until_counts(h: &Harness, queue: &str, done: impl Fn(&queue_client::QueueStats) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let stats = h.core.stats(queue).await.unwrap();
        if done(&stats) {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Completed, failed and retried, failed for good, and cancelled while it
/// ran (the worker learns it from the settle's answer, not a heartbeat):
/// each counted as what it is, each job in its state.
async fn the_worker_settles_each_outcome_right(kind: Kind, backend: Backend) {
    let h = Harness::new(kind, backend);
    let client = h.client();
    let mix = client.queue::<String>("mix");
    let mut handles = Vec::new();
    for what in ["ok", "retry", "dead", "cancelled", "ok"] {
        handles.push(mix.enqueue(&what.to_owned()).await.unwrap());
    }
    let (started, mut running) = mpsc::unbounded_channel();
    let go_on = Arc::new(Notify::new());
    let gate = Arc::clone(&go_on);
    let worker = Worker::new(client.clone(), "mix")
        .concurrency(3)
        .poll_wait(Duration::from_millis(100))
        // No heartbeat before the job ends: the settle finds the lease lost.
        .heartbeat_interval(Duration::from_secs(600));
    let stop = worker.shutdown_handle();
    let run = tokio::spawn(worker.run(move |job: Job<String>| {
        let started = started.clone();
        let gate = Arc::clone(&gate);
        async move {
            match job.payload.as_str() {
                "ok" => Ok(format!("done {}", job.id)),
                "retry" => Err(Failure::new("again").retry_in(Duration::from_secs(3600))),
                "dead" => Err(Failure::permanent("never")),
                _ => {
                    started.send(()).unwrap();
                    gate.notified().await;
                    Ok("too late".to_owned())
                }
            }
        }
    }));
    tokio::time::timeout(PATIENCE, running.recv())
        .await
        .unwrap()
        .unwrap();
    handles[3].cancel().await.unwrap();
    go_on.notify_one();
    until_counts(&h, "mix", |s| {
        s.completed == 2 && s.scheduled == 1 && s.dead == 1 && s.cancelled == 1
    })
    .await;
    stop.shutdown();
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        report,
        WorkerReport {
            completed: 2,
            failed: 2,
            lease_lost: 1,
            ..WorkerReport::default()
        }
    );
    let states = [
        JobState::Completed,
        JobState::Scheduled,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Completed,
    ];
    for (handle, state) in handles.iter().zip(states) {
        assert_eq!(handle.status().await.unwrap(), state);
    }
    assert_eq!(
        handles[0].wait::<String>(PATIENCE).await.unwrap(),
        format!("done {}", handles[0].id())
    );
}

/// Runs a worker of `concurrency` on `jobs` jobs already enqueued, through
/// a recording proxy, until all are completed; returns the (method, path)
/// of every request it sent before the last completion was counted.
async fn drain_through_proxy(
    backend: Backend,
    jobs: u32,
    concurrency: usize,
    settle: bool,
) -> Vec<String> {
    let h = Harness::new(Kind::Http, backend);
    let proxy = RecordingProxy::start(&h.server.as_ref().unwrap().url).await;
    let queue = h.client().queue::<u32>("count");
    for n in 0..jobs {
        queue.enqueue(&n).await.unwrap();
    }
    let worker = Worker::new(Client::connect(&proxy.url).unwrap(), "count")
        .concurrency(concurrency)
        .settle_and_lease(settle)
        .poll_wait(Duration::from_secs(30))
        .shutdown_timeout(Duration::ZERO);
    let stop = worker.shutdown_handle();
    let run =
        tokio::spawn(worker.run(|job: Job<u32>| async move { Ok::<_, Failure>(job.payload) }));
    until_counts(&h, "count", |s| s.completed == u64::from(jobs)).await;
    let requests = proxy.requests();
    stop.shutdown();
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.completed, u64::from(jobs));
    // The worker reads each settled item's state only: it asks the server
    // not to send the jobs back.
    for settle in requests.iter().filter(|r| r.path.ends_with("/settle")) {
        assert_eq!(
            settle.headers.get("prefer").map(String::as_str),
            Some("return=minimal"),
            "{settle:?}"
        );
    }
    requests
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn count(requests: &[String], suffix: &str) -> usize {
    requests.iter().filter(|r| r.ends_with(suffix)).count()
}

/// One handler: each job costs one request, the settle that completes it
/// and leases the next (the first job comes from a lease).
async fn the_worker_pays_one_request_per_job_over_http(backend: Backend) {
    let requests = drain_through_proxy(backend, 20, 1, true).await;
    assert_eq!(count(&requests, "/settle"), 20, "{requests:?}");
    // The first lease, and perhaps the long-poll sent once the queue ran
    // dry.
    let leases = count(&requests, "/lease");
    assert!((1..=2).contains(&leases), "{requests:?}");
    assert_eq!(requests.len(), 20 + leases, "{requests:?}");
}

/// Several handlers: still at most one request per job (plus the pollers'
/// first leases); never a complete or fail call of its own.
async fn handlers_finishing_together_share_settle_requests(backend: Backend) {
    let requests = drain_through_proxy(backend, 60, 6, true).await;
    assert_eq!(count(&requests, "/complete"), 0, "{requests:?}");
    assert_eq!(count(&requests, "/fail"), 0, "{requests:?}");
    assert!(count(&requests, "/settle") <= 60, "{requests:?}");
    assert!(requests.len() <= 60 + 6, "{requests:?}");
}

/// Without settle, the old way: a complete per job and leases between.
async fn without_settle_the_worker_completes_job_by_job(backend: Backend) {
    let requests = drain_through_proxy(backend, 10, 1, false).await;
    assert_eq!(count(&requests, "/settle"), 0, "{requests:?}");
    assert_eq!(count(&requests, "/complete"), 10, "{requests:?}");
    assert!(count(&requests, "/lease") >= 10, "{requests:?}");
}

test_support::backend_tests! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_worker_pays_one_request_per_job_over_http;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_finishing_together_share_settle_requests;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_settle_the_worker_completes_job_by_job;
}
