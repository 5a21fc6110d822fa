//! The async worker runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use queue_client::{
    EnqueueOptions, Error, Failure, Job, JobState, LeaseOptions, Worker, WorkerReport,
};
use tokio::sync::{Barrier, Notify};

use crate::both;
use crate::common::{Harness, PATIENCE};

fn quick(worker: Worker) -> Worker {
    worker.poll_wait(Duration::from_millis(100))
}

both!(
    concurrency_is_honoured,
    heartbeats_keep_a_job_longer_than_one_lease,
    errors_and_panics_are_retried_then_dead_lettered,
    an_undecodable_payload_goes_straight_to_the_dead_letters,
    graceful_shutdown_loses_nothing,
    handlers_past_the_shutdown_limit_have_their_jobs_released,
    a_stale_worker_does_not_complete_a_job_leased_again,
    a_cancelled_job_tells_its_handler_and_is_not_completed,
    a_refused_lease_stops_the_worker_with_the_error,
    an_infallible_handler_needs_no_error_type,
    shutdown_cancels_the_lease_long_poll_at_once,
);

/// Waits (bounded) until `n` lease long-polls are parked on `queue`.
async fn until_lease_waiters(h: &Harness, queue: &str, n: usize) {
    let started = std::time::Instant::now();
    while h.core.lease_waiters(queue) != n {
        assert!(
            started.elapsed() < PATIENCE,
            "{} lease waiters on {queue}, expected {n}",
            h.core.lease_waiters(queue)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A shutdown does not wait out the worker's long-poll (60 s here): it
/// cancels it, and the server stops waiting too.
async fn shutdown_cancels_the_lease_long_poll_at_once(h: Harness) {
    let client = h.client();
    let worker = Worker::new(client.clone(), "idle").poll_wait(Duration::from_secs(60));
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run_infallible(|job: Job<u32>| async move { job.payload }));
    until_lease_waiters(&h, "idle", 1).await;
    stop.shutdown();
    let report = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("the shutdown does not wait for the 60 s long-poll")
        .unwrap()
        .unwrap();
    assert_eq!(report, WorkerReport::default());
    // Over HTTP the request's connection is closed; the server sees it and
    // stops waiting.
    until_lease_waiters(&h, "idle", 0).await;
}

/// `run_infallible`: the handler returns the result itself; no
/// `Ok::<_, Failure>` anywhere.
async fn an_infallible_handler_needs_no_error_type(h: Harness) {
    let client = h.client();
    let handles = client
        .queue::<u32>("double")
        .enqueue_batch(&[1, 2, 3])
        .await
        .unwrap();
    let worker = quick(Worker::new(client.clone(), "double"));
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run_infallible(|job: Job<u32>| async move { job.payload * 2 }));
    for (handle, n) in handles.iter().zip([1u32, 2, 3]) {
        assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), n * 2);
    }
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!(report.completed, 3);
}

async fn concurrency_is_honoured(h: Harness) {
    const CONCURRENCY: usize = 4;
    let client = h.client();
    let jobs = client.queue::<u32>("work");
    let payloads: Vec<u32> = (0..20).collect();
    let handles = jobs.enqueue_batch(&payloads).await.unwrap();

    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // Each generation of handlers only finishes once CONCURRENCY of them run
    // at the same time: fewer would hang, more would show in `most`.
    let barrier = Arc::new(Barrier::new(CONCURRENCY));
    let worker = quick(Worker::new(client.clone(), "work")).concurrency(CONCURRENCY);
    let stop = worker.shutdown_handle();
    let task = {
        let (running, most, barrier) = (running.clone(), most.clone(), barrier.clone());
        tokio::spawn(worker.run(move |job: Job<u32>| {
            let (running, most, barrier) = (running.clone(), most.clone(), barrier.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                barrier.wait().await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failure>(job.payload * 10)
            }
        }))
    };
    for (handle, n) in handles.iter().zip(&payloads) {
        assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), n * 10);
    }
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!(most.load(Ordering::SeqCst), CONCURRENCY);
    assert_eq!(report.completed, 20);
    assert_eq!(
        report,
        WorkerReport {
            completed: 20,
            ..WorkerReport::default()
        }
    );
}

async fn heartbeats_keep_a_job_longer_than_one_lease(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<u32>("slow");
    let handle = jobs.enqueue(&1).await.unwrap();
    let worker = quick(Worker::new(client.clone(), "slow"))
        .lease(Duration::from_millis(600))
        .heartbeat_interval(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run(|job: Job<u32>| async move {
        // The work itself takes more than three lease lengths.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        Ok::<_, Failure>(job.payload)
    }));
    assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), 1);
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!((report.completed, report.lease_lost), (1, 0));
    let job = handle.get().await.unwrap();
    assert_eq!(job.attempts, 1, "the lease never expired");
    assert_eq!(job.last_error, None);
}

async fn errors_and_panics_are_retried_then_dead_lettered(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<String>("flaky");
    let retry_now = || {
        EnqueueOptions::new()
            .max_attempts(3)
            .backoff(Duration::ZERO)
    };
    let doomed = jobs
        .enqueue_with(&"doomed".into(), retry_now())
        .await
        .unwrap();
    let recovers = jobs
        .enqueue_with(&"recovers".into(), retry_now())
        .await
        .unwrap();
    let hopeless = jobs
        .enqueue_with(&"hopeless".into(), retry_now())
        .await
        .unwrap();

    let worker = quick(Worker::new(client.clone(), "flaky")).concurrency(2);
    let stop = worker.shutdown_handle();
    let task = tokio::spawn(worker.run(|job: Job<String>| async move {
        match (job.payload.as_str(), job.attempts) {
            ("hopeless", _) => Err(Failure::permanent("no such mailbox")),
            (_, 1) => panic!("boom on the first attempt"),
            ("recovers", _) => Ok(format!("ok on attempt {}", job.attempts)),
            (_, 2) => Err(Failure::new("flaky network")),
            _ => {
                let parsed: u32 = "x".parse()?; // a std error becomes a Failure
                Ok(parsed.to_string())
            }
        }
    }));

    assert_eq!(
        recovers.wait::<String>(PATIENCE).await.unwrap(),
        "ok on attempt 2"
    );
    match doomed.wait::<String>(PATIENCE).await {
        Err(Error::JobFailed {
            attempts,
            last_error,
            ..
        }) => {
            assert_eq!(attempts, 3);
            assert!(last_error.contains("invalid digit"), "{last_error}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    match hopeless.wait::<String>(PATIENCE).await {
        Err(Error::JobFailed {
            attempts,
            last_error,
            ..
        }) => {
            assert_eq!((attempts, last_error.as_str()), (1, "no such mailbox"));
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!((report.completed, report.failed), (1, 5));

    let dead = jobs.dead_letters(None, 10).await.unwrap();
    let mut names: Vec<_> = dead.jobs.iter().map(|j| j.payload.clone()).collect();
    names.sort();
    assert_eq!(names, ["doomed", "hopeless"]);
    // The panic was the first attempt's error; the job kept its text.
    let recovered = recovers.get().await.unwrap();
    assert_eq!(recovered.attempts, 2);
    assert_eq!(
        recovered.last_error.as_deref(),
        Some("handler panicked: boom on the first attempt")
    );
}

async fn an_undecodable_payload_goes_straight_to_the_dead_letters(h: Harness) {
    let client = h.client();
    let handle = client
        .queue::<String>("numbers")
        .enqueue(&"not a number".into())
        .await
        .unwrap();
    let worker = quick(Worker::new(client.clone(), "numbers"));
    let stop = worker.shutdown_handle();
    let called = Arc::new(AtomicU32::new(0));
    let task = {
        let called = called.clone();
        tokio::spawn(worker.run(move |job: Job<u32>| {
            called.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Failure>(job.payload) }
        }))
    };
    match handle.wait::<u32>(PATIENCE).await {
        Err(Error::JobFailed {
            attempts,
            last_error,
            ..
        }) => {
            assert_eq!(attempts, 1, "no retry can decode it");
            assert!(last_error.contains("payload"), "{last_error}");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    stop.shutdown();
    assert_eq!(task.await.unwrap().unwrap().failed, 1);
    assert_eq!(called.load(Ordering::SeqCst), 0, "the handler never saw it");
}

async fn graceful_shutdown_loses_nothing(h: Harness) {
    const JOBS: u32 = 30;
    let client = h.client();
    let jobs = client.queue::<u32>("batch");
    let payloads: Vec<u32> = (0..JOBS).collect();
    let handles = jobs.enqueue_batch(&payloads).await.unwrap();

    let worker = quick(Worker::new(client.clone(), "batch")).concurrency(3);
    let stop = worker.shutdown_handle();
    let started = Arc::new(AtomicU32::new(0));
    let task = {
        let (stop, started) = (stop.clone(), started.clone());
        tokio::spawn(worker.run(move |job: Job<u32>| {
            // Ask for the shutdown from inside the tenth handler: the others
            // in flight must still finish, and nothing may be lost.
            if started.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                stop.shutdown();
            }
            async move {
                tokio::task::yield_now().await;
                Ok::<_, Failure>(job.payload)
            }
        }))
    };
    let report = task.await.unwrap().unwrap();
    let stats = jobs.stats().await.unwrap();
    assert_eq!(stats.leased, 0, "nothing is left leased");
    assert_eq!(stats.completed, report.completed);
    assert!(report.completed >= 10, "{report:?}");
    assert_eq!(stats.ready, u64::from(JOBS) - report.completed);
    assert_eq!(
        (report.failed, report.lease_lost, report.unreported),
        (0, 0, 0)
    );
    for handle in &handles {
        let job = handle.get().await.unwrap();
        if job.state == JobState::Ready {
            assert_eq!(job.attempts, 0, "a released job keeps its attempt");
        }
    }

    // A second worker finishes the rest: every job completed exactly once.
    let worker = quick(Worker::new(client.clone(), "batch")).concurrency(3);
    let stop = worker.shutdown_handle();
    let task =
        tokio::spawn(worker.run(|job: Job<u32>| async move { Ok::<_, Failure>(job.payload) }));
    for (handle, n) in handles.iter().zip(&payloads) {
        assert_eq!(handle.wait::<u32>(PATIENCE).await.unwrap(), *n);
        assert_eq!(handle.get().await.unwrap().attempts, 1);
    }
    stop.shutdown();
    let second = task.await.unwrap().unwrap();
    assert_eq!(report.completed + second.completed, u64::from(JOBS));
}

async fn handlers_past_the_shutdown_limit_have_their_jobs_released(h: Harness) {
    let client = h.client();
    let handle = client.queue::<u32>("stuck").enqueue(&1).await.unwrap();
    let started = Arc::new(Notify::new());
    let worker =
        quick(Worker::new(client.clone(), "stuck")).shutdown_timeout(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let task = {
        let started = started.clone();
        tokio::spawn(worker.run(move |_: Job<u32>| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok::<_, Failure>(())
            }
        }))
    };
    started.notified().await;
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!((report.released, report.completed), (1, 0));
    let job = handle.get().await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Ready, 0));
}

async fn a_stale_worker_does_not_complete_a_job_leased_again(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<u32>("stale");
    let handle = jobs
        .enqueue_with(&1, EnqueueOptions::new().backoff(Duration::ZERO))
        .await
        .unwrap();
    let started = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    // A short lease and no heartbeat to speak of: the lease expires while
    // the handler runs, and the job is handed to someone else.
    let worker = quick(Worker::new(client.clone(), "stale"))
        .lease(Duration::from_millis(300))
        .heartbeat_interval(Duration::from_secs(3600));
    let stop = worker.shutdown_handle();
    let task = {
        let (started, finish) = (started.clone(), finish.clone());
        tokio::spawn(worker.run(move |_: Job<u32>| {
            let (started, finish) = (started.clone(), finish.clone());
            async move {
                started.notify_one();
                finish.notified().await;
                Ok::<_, Failure>("stale result")
            }
        }))
    };
    started.notified().await;
    stop.shutdown(); // lease nothing more once this job is done
    let mut again = jobs
        .lease(&LeaseOptions::new().wait(PATIENCE))
        .await
        .unwrap();
    let second = again.pop().expect("the expired job is leased again");
    assert_eq!(second.job().attempts, 2);
    assert_eq!(second.job().last_error.as_deref(), Some("lease expired"));

    finish.notify_one();
    let report = task.await.unwrap().unwrap();
    assert_eq!((report.completed, report.lease_lost), (0, 1));
    assert_eq!(handle.status().await.unwrap(), JobState::Leased);
    second.complete(&"fresh result").await.unwrap();
    assert_eq!(
        handle.wait::<String>(PATIENCE).await.unwrap(),
        "fresh result"
    );
}

async fn a_cancelled_job_tells_its_handler_and_is_not_completed(h: Harness) {
    let client = h.client();
    let jobs = client.queue::<u32>("cancel");
    let handle = jobs.enqueue(&1).await.unwrap();
    let other = jobs.enqueue(&2).await.unwrap();
    let started = Arc::new(Notify::new());
    let worker = quick(Worker::new(client.clone(), "cancel"))
        .lease(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_millis(50));
    let stop = worker.shutdown_handle();
    let task = {
        let started = started.clone();
        tokio::spawn(worker.run(move |job: Job<u32>| {
            let started = started.clone();
            async move {
                if job.payload == 1 {
                    started.notify_one();
                    job.lease_lost().await;
                    assert!(job.is_lease_lost());
                }
                Ok::<_, Failure>(job.payload)
            }
        }))
    };
    started.notified().await;
    handle.cancel().await.unwrap();
    assert_eq!(other.wait::<u32>(PATIENCE).await.unwrap(), 2);
    assert!(matches!(
        handle.wait::<u32>(PATIENCE).await,
        Err(Error::JobCancelled { .. })
    ));
    stop.shutdown();
    let report = task.await.unwrap().unwrap();
    assert_eq!((report.completed, report.lease_lost), (1, 1));
    assert_eq!(handle.status().await.unwrap(), JobState::Cancelled);
}

async fn a_refused_lease_stops_the_worker_with_the_error(h: Harness) {
    let worker = quick(Worker::new(h.client(), "no spaces allowed"));
    let error = worker
        .run(|job: Job<u32>| async move { Ok::<_, Failure>(job.payload) })
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
    let error = quick(Worker::new(h.client(), "fine"))
        .concurrency(0)
        .run(|job: Job<u32>| async move { Ok::<_, Failure>(job.payload) })
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest { .. }), "{error:?}");
}
