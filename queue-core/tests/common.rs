//! Helpers shared by the test modules.

use std::path::Path;
use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{Config, Durability, Job, LeaseOptions, Leased, ManualClock, NewJob};

/// 2026-11-25T00:00:00Z, a fixed start for manual clocks.
pub const T0: u64 = 1_795_564_800_000;

/// A queue in `dir` on a manual clock, timers stepped by the test.
pub fn open_manual(dir: &Path, clock: &ManualClock) -> Queue {
    Queue::open_with(
        Config::new(dir)
            .clock(clock.clone())
            .seed(7)
            .background_timers(false),
    )
    .expect("open queue")
}

/// A queue in `dir` on a manual clock whose background timer is running.
pub fn open_manual_with_timer(dir: &Path, clock: &ManualClock) -> Queue {
    Queue::open_with(Config::new(dir).clock(clock.clone()).seed(7)).expect("open queue")
}

/// A queue in `dir` on the system clock, periodic durability (fast).
pub fn open_fast(dir: &Path) -> Queue {
    Queue::open_with(Config::new(dir).durability(Durability::Periodic(10))).expect("open queue")
}

/// A JSON payload with a number.
pub fn payload(n: u64) -> Vec<u8> {
    format!(r#"{{"n":{n}}}"#).into_bytes()
}

/// Enqueues `count` plain jobs, returning them in order.
pub fn enqueue_n(queue: &Queue, name: &str, count: u64) -> Vec<Job> {
    (0..count)
        .map(|n| {
            queue
                .enqueue(name, NewJob::new(payload(n)))
                .expect("enqueue")
                .job
        })
        .collect()
}

/// Leases up to `n` jobs with a lease of `lease_ms`.
pub fn lease_n(queue: &Queue, name: &str, n: u32, lease_ms: u64) -> Vec<Leased> {
    queue
        .lease(
            name,
            &LeaseOptions::default()
                .max_jobs(n)
                .lease(Duration::from_millis(lease_ms)),
        )
        .expect("lease")
}

/// Asserts the store is internally consistent.
pub fn assert_consistent(queue: &Queue) {
    let report = queue.verify().expect("verify");
    assert!(report.is_ok(), "inconsistent store: {:#?}", report.problems);
}
