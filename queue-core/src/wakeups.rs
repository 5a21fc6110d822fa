//! A waiting lease on a queue with limits wakes when capacity frees up:
//! each test parks a waiter (checked through the queue's signal, so the
//! event surely comes after the waiter found nothing), then causes one
//! event; without the wake-up the waiter would sleep until its timeout and
//! come back empty.

use std::time::{Duration, Instant};

use queue_proto::{PatchQueueRequest, RateLimit};

use crate::blocking::Queue;
use crate::{Config, Failure, JobId, LeaseOptions, Leased, ManualClock, NewJob};

const T0: u64 = 1_795_564_800_000;
/// Far longer than any test needs: reaching it means no wake-up came.
const WAIT: Duration = Duration::from_secs(30);

fn open(dir: &std::path::Path, clock: &ManualClock) -> Queue {
    Queue::open_with(
        Config::new(dir)
            .clock(clock.clone())
            .seed(7)
            .background_timers(false),
    )
    .expect("open")
}

fn max_leased(n: Option<u32>) -> PatchQueueRequest {
    PatchQueueRequest {
        max_leased: Some(n),
        ..PatchQueueRequest::default()
    }
}

/// A queue with max_leased 1, one job leased (returned) and one ready.
fn one_leased_one_waiting(queue: &Queue, lease_ms: u64) -> (Leased, JobId) {
    queue.update_queue("q", &max_leased(Some(1))).unwrap();
    queue.enqueue("q", NewJob::new(b"1".to_vec())).unwrap();
    let waiting = queue
        .enqueue("q", NewJob::new(b"2".to_vec()))
        .unwrap()
        .job
        .id;
    let held = queue
        .lease(
            "q",
            &LeaseOptions::default().lease(Duration::from_millis(lease_ms)),
        )
        .unwrap()
        .remove(0);
    assert!(
        queue
            .lease("q", &LeaseOptions::default())
            .unwrap()
            .is_empty()
    );
    (held, waiting)
}

/// Starts a waiting lease and returns once it is parked.
fn park_waiter(queue: &Queue) -> std::thread::JoinHandle<Vec<Leased>> {
    let waiter = queue.clone();
    let handle = std::thread::spawn(move || {
        waiter
            .lease_wait("q", &LeaseOptions::default(), WAIT)
            .unwrap()
    });
    let started = Instant::now();
    while queue.engine().queue_signals.parked(&"q".to_owned()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the waiter parks"
        );
        std::thread::yield_now();
    }
    handle
}

fn woken_with(handle: std::thread::JoinHandle<Vec<Leased>>, expected: JobId) {
    let leased = handle.join().unwrap();
    let ids: Vec<JobId> = leased.iter().map(|l| l.job.id).collect();
    assert_eq!(ids, vec![expected], "the waiter was woken and took the job");
}

fn setup() -> (tempfile::TempDir, ManualClock, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open(dir.path(), &clock);
    (dir, clock, queue)
}

#[test]
fn a_completion_wakes_a_lease_waiting_for_max_leased() {
    let (_dir, _clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let waiter = park_waiter(&queue);
    queue.complete(held.job.id, held.lease_id, None).unwrap();
    woken_with(waiter, waiting);
}

#[test]
fn a_failure_wakes_a_waiting_lease() {
    let (_dir, _clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let waiter = park_waiter(&queue);
    let failure = Failure::new("boom").retry_in(Duration::from_secs(60));
    queue.fail(held.job.id, held.lease_id, &failure).unwrap();
    woken_with(waiter, waiting);
}

#[test]
fn a_release_wakes_a_waiting_lease() {
    let (_dir, _clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 30_000);
    // Both jobs are ready once the held one is released; the waiter takes
    // the first in lease order.
    let waiter = park_waiter(&queue);
    queue.release(held.job.id, held.lease_id).unwrap();
    let leased = waiter.join().unwrap();
    assert_eq!(leased.len(), 1, "woken by the release");
    assert!(leased[0].job.id == held.job.id || leased[0].job.id == waiting);
}

#[test]
fn a_cancel_of_a_leased_job_wakes_a_waiting_lease() {
    let (_dir, _clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let waiter = park_waiter(&queue);
    queue.cancel(held.job.id).unwrap();
    woken_with(waiter, waiting);
}

#[test]
fn a_lease_expiry_wakes_a_waiting_lease() {
    let (_dir, clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 1000);
    // The lease is due; the timer has not run yet, so it is still held.
    clock.advance(Duration::from_millis(1000));
    let waiter = park_waiter(&queue);
    assert_eq!(queue.run_due().unwrap().expired, 1);
    let _ = held;
    woken_with(waiter, waiting);
}

#[test]
fn raising_or_removing_a_limit_wakes_a_waiting_lease() {
    let (_dir, _clock, queue) = setup();
    let (_held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let waiter = park_waiter(&queue);
    queue.update_queue("q", &max_leased(Some(2))).unwrap();
    woken_with(waiter, waiting);

    let (_dir, _clock, queue) = setup();
    let (_held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let waiter = park_waiter(&queue);
    queue.update_queue("q", &max_leased(None)).unwrap();
    woken_with(waiter, waiting);
}

#[test]
fn a_resume_wakes_a_waiting_lease() {
    let (_dir, _clock, queue) = setup();
    let waiting = queue
        .enqueue("q", NewJob::new(b"1".to_vec()))
        .unwrap()
        .job
        .id;
    queue.pause("q").unwrap();
    let waiter = park_waiter(&queue);
    queue.resume("q").unwrap();
    woken_with(waiter, waiting);
}

fn rate_limited(queue: &Queue, per_ms: u64) -> JobId {
    let patch = PatchQueueRequest {
        rate_limit: Some(Some(RateLimit { jobs: 1, per_ms })),
        ..PatchQueueRequest::default()
    };
    queue.update_queue("q", &patch).unwrap();
    queue.enqueue("q", NewJob::new(b"1".to_vec())).unwrap();
    let waiting = queue
        .enqueue("q", NewJob::new(b"2".to_vec()))
        .unwrap()
        .job
        .id;
    assert_eq!(queue.lease("q", &LeaseOptions::default()).unwrap().len(), 1);
    assert!(
        queue
            .lease("q", &LeaseOptions::default())
            .unwrap()
            .is_empty()
    );
    waiting
}

#[test]
fn a_refill_of_the_bucket_wakes_a_waiting_lease_on_a_manual_clock() {
    let (_dir, clock, queue) = setup();
    let waiting = rate_limited(&queue, 1000);
    let waiter = park_waiter(&queue);
    // Not yet a whole token: the waiter looks and parks again.
    clock.advance(Duration::from_millis(999));
    let started = Instant::now();
    while queue.engine().queue_signals.parked(&"q".to_owned()) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::yield_now();
    }
    assert!(!waiter.is_finished());
    clock.advance(Duration::from_millis(1));
    woken_with(waiter, waiting);
}

#[test]
fn a_refill_of_the_bucket_wakes_a_waiting_lease_at_the_next_token() {
    // The system clock: the waiter computes when the next token arrives
    // (200 ms) and tries again then; nothing else wakes it.
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open_with(Config::new(dir.path()).background_timers(false)).unwrap();
    let waiting = rate_limited(&queue, 200);
    let leased = queue
        .lease_wait("q", &LeaseOptions::default(), WAIT)
        .unwrap();
    assert_eq!(
        leased.iter().map(|l| l.job.id).collect::<Vec<_>>(),
        vec![waiting]
    );
}

#[test]
fn an_async_waiting_lease_wakes_on_a_completion() {
    let (_dir, _clock, queue) = setup();
    let (held, waiting) = one_leased_one_waiting(&queue, 30_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let async_queue = queue.engine_queue();
    let handle = runtime.spawn(async move {
        async_queue
            .lease_wait("q", &LeaseOptions::default(), WAIT)
            .await
            .unwrap()
    });
    let started = Instant::now();
    while queue.engine().queue_signals.parked(&"q".to_owned()) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the waiter parks"
        );
        std::thread::yield_now();
    }
    queue.complete(held.job.id, held.lease_id, None).unwrap();
    let leased = runtime.block_on(handle).unwrap();
    assert_eq!(
        leased.iter().map(|l| l.job.id).collect::<Vec<_>>(),
        vec![waiting]
    );
}
