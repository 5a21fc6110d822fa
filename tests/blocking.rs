//! The blocking client and worker: the same behaviour without a runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use queue_client::blocking::{CallOutcome, Worker};
use queue_client::{EnqueueOptions, Error, EventFilter, Failure, Job, JobState};

use crate::both_blocking;
use crate::common::{Backend, Harness, Kind, PATIENCE};
use crate::typed::{Email, email};

both_blocking!(
    blocking_handles_and_streams_work_from_any_thread,
    the_blocking_client_enqueues_waits_and_cancels,
    the_blocking_worker_honours_concurrency_and_survives_panics,
    the_blocking_worker_releases_a_stuck_closure_at_shutdown,
    the_blocking_call_and_event_iterator,
    the_blocking_worker_takes_an_infallible_closure,
    the_blocking_client_reads_history,
);

fn the_blocking_client_reads_history(h: Harness) {
    let client = h.blocking();
    let queue = client.queue::<u32>("charted");
    queue.enqueue(&1).unwrap();
    queue.enqueue(&2).unwrap();
    let history = client
        .history("charted", &queue_client::HistoryQuery::default())
        .unwrap();
    assert_eq!(history.points.len(), 61);
    assert_eq!(history.points.iter().map(|p| p.enqueued).sum::<u64>(), 2);
    assert_eq!(history.points.last().map(|p| p.ready), Some(2));
    assert!(matches!(
        client.history(
            "charted",
            &queue_client::HistoryQuery {
                from: Some(2),
                to: Some(1),
                step: None,
            },
        ),
        Err(Error::InvalidRequest { .. })
    ));
}

/// `run_infallible`: the closure returns the result itself.
fn the_blocking_worker_takes_an_infallible_closure(h: Harness) {
    let client = h.blocking();
    let handle = client
        .queue::<String>("words")
        .enqueue(&"to be or not to be".to_owned())
        .unwrap();
    let worker = Worker::new(client.clone(), "words").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let running = std::thread::spawn(move || {
        worker.run_infallible(|job: Job<String>| job.payload.split_whitespace().count())
    });
    assert_eq!(handle.wait::<usize>(PATIENCE).unwrap(), 6);
    stop.shutdown();
    assert_eq!(running.join().unwrap().unwrap().completed, 1);
}

fn the_blocking_client_enqueues_waits_and_cancels(h: Harness) {
    let client = h.blocking();
    let emails = client.queue::<Email>("emails");
    let first = emails.enqueue(&email(1)).unwrap();
    let second = emails
        .enqueue_with(&email(2), EnqueueOptions::new().idempotency_key("k"))
        .unwrap();
    let replay = emails
        .enqueue_with(&email(2), EnqueueOptions::new().idempotency_key("k"))
        .unwrap();
    assert_eq!((replay.id(), replay.replayed()), (second.id(), true));
    assert!(matches!(
        emails.enqueue_with(&email(3), EnqueueOptions::new().idempotency_key("k")),
        Err(Error::Conflict { .. })
    ));
    let batch = emails.enqueue_batch(&[email(4), email(5)]).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(first.get().unwrap().payload, email(1));
    assert_eq!(client.stats("emails").unwrap().ready, 4);

    second.cancel().unwrap();
    assert!(matches!(second.cancel(), Err(Error::Conflict { .. })));
    assert!(matches!(
        first.wait::<()>(Duration::from_millis(20)),
        Err(Error::JobTimedOut {
            state: JobState::Ready,
            ..
        })
    ));
    match emails
        .try_call::<String>(&email(6), EnqueueOptions::new(), Duration::from_millis(20))
        .unwrap()
    {
        CallOutcome::Pending(job) => assert_eq!(job.status().unwrap(), JobState::Ready),
        CallOutcome::Done(result) => panic!("nothing runs jobs here, got {result}"),
    }
    let mut leased = emails
        .lease(&queue_client::LeaseOptions::new().max_jobs(1))
        .unwrap();
    leased.pop().unwrap().complete(&"sent").unwrap();
    assert_eq!(first.wait::<String>(PATIENCE).unwrap(), "sent");
}

fn the_blocking_worker_honours_concurrency_and_survives_panics(h: Harness) {
    const CONCURRENCY: usize = 3;
    let client = h.blocking();
    let jobs = client.queue::<u32>("work");
    // Eight jobs and one retry: three full generations of the barrier.
    let payloads: Vec<u32> = (0..8).collect();
    let handles = jobs
        .enqueue_batch_with(
            payloads
                .iter()
                .map(|p| (p, EnqueueOptions::new().backoff(Duration::ZERO))),
        )
        .unwrap();
    let worker = Worker::new(client.clone(), "work")
        .concurrency(CONCURRENCY)
        .poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let barrier = Arc::new(Barrier::new(CONCURRENCY));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let thread = {
        let (barrier, running, most) = (barrier.clone(), running.clone(), most.clone());
        std::thread::spawn(move || {
            worker.run(move |job: Job<u32>| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                barrier.wait();
                running.fetch_sub(1, Ordering::SeqCst);
                if job.payload == 4 && job.attempts == 1 {
                    panic!("closure panicked on purpose");
                }
                Ok::<_, Failure>(job.payload + 100)
            })
        })
    };
    for (handle, n) in handles.iter().zip(&payloads) {
        assert_eq!(handle.wait::<u32>(PATIENCE).unwrap(), n + 100);
    }
    stop.shutdown();
    let report = thread.join().unwrap().unwrap();
    assert_eq!(most.load(Ordering::SeqCst), CONCURRENCY);
    assert_eq!((report.completed, report.failed), (8, 1));
    let retried = handles[4].get().unwrap();
    assert_eq!(retried.attempts, 2);
    assert!(
        retried
            .last_error
            .unwrap()
            .contains("closure panicked on purpose")
    );
}

fn the_blocking_worker_releases_a_stuck_closure_at_shutdown(h: Harness) {
    let client = h.blocking();
    let handle = client.queue::<u32>("stuck").enqueue(&1).unwrap();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let finish_rx = Arc::new(std::sync::Mutex::new(finish_rx));
    let worker = Worker::new(client.clone(), "stuck")
        .poll_wait(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let thread = std::thread::spawn(move || {
        worker.run(move |_: Job<u32>| {
            let _ = started_tx.send(());
            let _ = finish_rx.lock().map(|rx| rx.recv());
            Ok::<_, Failure>(())
        })
    });
    started_rx.recv_timeout(PATIENCE).unwrap();
    stop.shutdown();
    let report = thread.join().unwrap().unwrap();
    assert_eq!((report.released, report.completed), (1, 0));
    assert_eq!(handle.status().unwrap(), JobState::Ready);
    // Let the abandoned closure end; its result is discarded.
    finish_tx.send(()).unwrap();
    assert_eq!(handle.get().unwrap().attempts, 0);
}

fn the_blocking_call_and_event_iterator(h: Harness) {
    let client = h.blocking();
    let mut events = client.events(EventFilter::new().queue("double")).unwrap();
    let worker = Worker::new(client.clone(), "double").poll_wait(Duration::from_millis(100));
    let stop = worker.shutdown_handle();
    let thread =
        std::thread::spawn(move || worker.run(|job: Job<i32>| Ok::<_, Failure>(job.payload * 2)));
    let double = client.queue::<i32>("double");
    assert_eq!(double.call::<i32>(&21, PATIENCE).unwrap(), 42);
    let states: Vec<JobState> = (0..3)
        .map(|_| events.next().unwrap().unwrap().into_event().unwrap().state)
        .collect();
    assert_eq!(
        states,
        [JobState::Ready, JobState::Leased, JobState::Completed]
    );
    stop.shutdown();
    assert_eq!(thread.join().unwrap().unwrap().completed, 1);
}

async fn blocking_calls_inside_a_runtime_are_refused_not_panics(backend: Backend) {
    for kind in [Kind::Http, Kind::Embedded] {
        let h = Harness::new(kind, backend);
        let client = h.blocking();
        let queue = client.queue::<u32>("q");
        assert!(matches!(queue.enqueue(&1), Err(Error::BlockingInRuntime)));
        assert!(matches!(client.stats("q"), Err(Error::BlockingInRuntime)));
        let report =
            Worker::new(client.clone(), "q").run(|job: Job<u32>| Ok::<_, Failure>(job.payload));
        assert!(matches!(report, Err(Error::BlockingInRuntime)));
        // Nothing was enqueued; dropping the client here does not panic.
        assert_eq!(h.core.stats("q").await.unwrap().ready, 0);
        drop(client);
    }
}

fn blocking_handles_and_streams_work_from_any_thread(h: Harness) {
    let client = h.blocking();
    // Made on threads that then end: each thread had its own connections.
    let (handle, leased, mut events) = std::thread::spawn({
        let client = client.clone();
        move || {
            let events = client.events(EventFilter::new().queue("moves")).unwrap();
            let queue = client.queue::<u32>("moves");
            let handle = queue.enqueue(&7).unwrap();
            let leased = queue
                .lease(&queue_client::LeaseOptions::new())
                .unwrap()
                .pop()
                .unwrap();
            (handle, leased, events)
        }
    })
    .join()
    .unwrap();
    // Used here, on this thread's own client.
    assert_eq!(handle.status().unwrap(), JobState::Leased);
    leased.complete(&8).unwrap();
    assert_eq!(handle.wait::<u32>(PATIENCE).unwrap(), 8);
    let states: Vec<JobState> = (0..3)
        .map(|_| events.next().unwrap().unwrap().into_event().unwrap().state)
        .collect();
    assert_eq!(
        states,
        [JobState::Ready, JobState::Leased, JobState::Completed]
    );
}

test_support::backend_tests! {
    #[tokio::test]
    async fn blocking_calls_inside_a_runtime_are_refused_not_panics;
}
