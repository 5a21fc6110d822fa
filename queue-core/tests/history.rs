//! History: a known workload spread over several minutes on a manual clock,
//! checked field by field; merging minutes into larger steps; surviving a
//! reopen; retention; history turned off; the query's bounds.

use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{
    Config, Error, Failure, HISTORY_PRECISION, HistoryPoint, HistoryQuery, JobState, LeaseOptions,
    ManualClock, NewJob,
};

use crate::common::{T0, assert_consistent, open_manual, payload};

const MINUTE: u64 = 60_000;

fn query(from: u64, to: u64, step_ms: Option<u64>) -> HistoryQuery {
    HistoryQuery {
        from: Some(from),
        to: Some(to),
        step: step_ms.map(Duration::from_millis),
    }
}

fn lease_one(queue: &Queue, lease_ms: u64) -> queue_core::Leased {
    let mut leased = queue
        .lease(
            "h",
            &LeaseOptions::default()
                .max_jobs(1)
                .lease(Duration::from_millis(lease_ms)),
        )
        .expect("lease");
    assert_eq!(leased.len(), 1, "a job to lease");
    leased.remove(0)
}

fn at(clock: &ManualClock, ms: u64) {
    let now = queue_core::Clock::now_ms(clock);
    assert!(T0 + ms >= now, "time moves forward");
    clock.advance(Duration::from_millis(T0 + ms - now));
}

/// What the workload of [`run_workload`] must leave, minute by minute.
fn expected(e_wait_in_minute_3: u64) -> Vec<HistoryPoint> {
    vec![
        HistoryPoint {
            at: T0,
            enqueued: 5,
            completed: 1,
            failed: 2,
            dead: 1,
            expired: 0,
            ready: 1,
            scheduled: 2,
            leased: 0,
            run_ms_p50: Some(10_000),
            run_ms_p95: Some(10_000),
            wait_ms_p50: Some(10_000),
            wait_ms_p95: Some(10_000),
        },
        HistoryPoint {
            at: T0 + MINUTE,
            failed: 1,
            scheduled: 2,
            wait_ms_p50: Some(61_000),
            wait_ms_p95: Some(61_000),
            ..HistoryPoint::default()
        },
        // Nothing happened: zeros, the depths carried forward.
        HistoryPoint {
            at: T0 + 2 * MINUTE,
            scheduled: 2,
            ..HistoryPoint::default()
        },
        HistoryPoint {
            at: T0 + 3 * MINUTE,
            enqueued: 1,
            completed: 1,
            dead: 1,
            expired: 1,
            ready: 2,
            run_ms_p50: Some(1_500),
            run_ms_p95: Some(1_500),
            wait_ms_p50: Some(e_wait_in_minute_3),
            wait_ms_p95: Some(e_wait_in_minute_3),
            ..HistoryPoint::default()
        },
    ]
}

/// Enqueues, delays, leases, completes, fails with a retry and to dead,
/// expires a lease, expires a time-to-live, cancels and requeues, over
/// minutes 0 to 3 (nothing in minute 2), with a job of another queue that
/// must not count. Returns the wait of the lease in minute 3.
fn run_workload(queue: &Queue, clock: &ManualClock) -> u64 {
    // Minute 0.
    let enqueue = |job: NewJob| queue.enqueue("h", job).expect("enqueue").job;
    let a = enqueue(NewJob::new(payload(1)));
    let b = enqueue(NewJob::new(payload(2)));
    let c = enqueue(NewJob::new(payload(3)).max_attempts(1));
    let e = enqueue(NewJob::new(payload(4)));
    let d = enqueue(NewJob::new(payload(5)).delay(Duration::from_secs(90)));
    queue
        .enqueue("other", NewJob::new(payload(6)))
        .expect("another queue");
    at(clock, 10_000);
    let leased: Vec<_> = (0..3).map(|_| lease_one(queue, 30_000)).collect();
    let ids: Vec<_> = leased.iter().map(|l| l.job.id).collect();
    assert_eq!(ids, [a.id, b.id, c.id]);
    at(clock, 20_000);
    queue
        .complete(a.id, leased[0].lease_id, None)
        .expect("complete a");
    let retried = queue
        .fail(b.id, leased[1].lease_id, &Failure::new("again"))
        .expect("fail b");
    assert_eq!(retried.state, JobState::Scheduled);
    let dead = queue
        .fail(c.id, leased[2].lease_id, &Failure::new("final"))
        .expect("fail c");
    assert_eq!(dead.state, JobState::Dead);
    // Minute 1: b's retry comes due; e (older run_at) is leased and its
    // lease expires; b is cancelled.
    at(clock, 61_000);
    queue.run_due().expect("timers");
    let e_lease = lease_one(queue, 5_000);
    assert_eq!(e_lease.job.id, e.id);
    at(clock, 70_000);
    assert_eq!(queue.run_due().expect("timers").expired, 1);
    queue.cancel(b.id).expect("cancel b");
    // Minute 3: d and e are promoted, e is leased and completed, a job
    // reaches its time-to-live, c is requeued.
    at(clock, 185_000);
    queue.run_due().expect("timers");
    let e_run_at = queue.get(e.id).expect("get").expect("e").run_at;
    let f = enqueue(NewJob::new(payload(7)).ttl(Duration::from_secs(5)));
    let e_lease = lease_one(queue, 30_000);
    assert_eq!(e_lease.job.id, e.id);
    at(clock, 186_500);
    queue
        .complete(e.id, e_lease.lease_id, None)
        .expect("complete e");
    at(clock, 190_000);
    assert_eq!(queue.run_due().expect("timers").ttl_expired, 1);
    assert_eq!(
        queue.get(f.id).expect("get").expect("f").state,
        JobState::Dead
    );
    at(clock, 195_000);
    assert_eq!(queue.requeue_dead("h", Some(&[c.id])).expect("requeue"), 1);
    let stats = queue.stats("h").expect("stats");
    assert_eq!((stats.ready, stats.scheduled, stats.leased), (2, 0, 0));
    assert_eq!(d.state, JobState::Scheduled);
    T0 + 185_000 - e_run_at
}

#[test]
fn rollups_match_the_counts_of_a_known_workload_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    let e_wait = run_workload(&queue, &clock);
    let range = query(T0, T0 + 4 * MINUTE - 1, None);
    let history = queue.history("h", &range).expect("history");
    assert_eq!(history.step_ms, MINUTE);
    assert_eq!(history.points, expected(e_wait));
    // The other queue has its own.
    let other = queue.history("other", &range).expect("history");
    assert_eq!(other.points[0].enqueued, 1);
    assert_eq!(other.points[0].ready, 1);
    assert_consistent(&queue);
    drop(queue);
    let queue = open_manual(dir.path(), &clock);
    assert_eq!(
        queue
            .history("h", &range)
            .expect("history after reopen")
            .points,
        expected(e_wait),
        "history survives a reopen"
    );
    // Before the first minute: nothing; after the last: depths carried.
    let before = queue
        .history("h", &query(T0 - 2 * MINUTE, T0 - 1, None))
        .expect("history");
    assert!(before.points.iter().all(|p| *p
        == HistoryPoint {
            at: p.at,
            ..HistoryPoint::default()
        }));
    let after = queue
        .history("h", &query(T0 + 10 * MINUTE, T0 + 10 * MINUTE, None))
        .expect("history");
    assert_eq!(after.points.len(), 1);
    assert_eq!((after.points[0].ready, after.points[0].enqueued), (2, 0));
}

#[test]
fn larger_steps_merge_minutes_and_their_histograms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    let e_wait = run_workload(&queue, &clock);
    let history = queue
        .history("h", &query(T0, T0 + 4 * MINUTE - 1, Some(2 * MINUTE)))
        .expect("history");
    assert_eq!(history.step_ms, 2 * MINUTE);
    let points = &history.points;
    assert_eq!(points.len(), 2);
    let first = &points[0];
    assert_eq!(first.at, T0);
    assert_eq!(
        (first.enqueued, first.completed, first.failed, first.dead),
        (5, 1, 3, 1)
    );
    assert_eq!((first.ready, first.scheduled, first.leased), (0, 2, 0));
    // Waits 10 s, 10 s, 10 s, 61 s: the median is 10 s, the 95th 61 s.
    assert_eq!(first.wait_ms_p50, Some(10_000));
    let p95 = first.wait_ms_p95.expect("p95") as f64;
    assert!((p95 - 61_000.0).abs() <= 61_000.0 * HISTORY_PRECISION);
    let second = &points[1];
    assert_eq!(second.at, T0 + 2 * MINUTE);
    assert_eq!((second.enqueued, second.expired, second.ready), (1, 1, 2));
    assert_eq!(second.wait_ms_p50, Some(e_wait));
    // A step that starts before the data: aligned to its multiple.
    let hourly = queue
        .history("h", &query(T0 + 1, T0 + 1, Some(60 * MINUTE)))
        .expect("history");
    assert_eq!(hourly.points.len(), 1);
    assert_eq!(hourly.points[0].at % (60 * MINUTE), 0);
    assert_eq!(hourly.points[0].enqueued, 6);
}

#[test]
fn many_samples_give_percentiles_within_the_documented_precision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    // Job i runs (100 + 37 i) ms: leased and completed one at a time.
    let mut runs = Vec::new();
    for i in 0..40u64 {
        let job = queue
            .enqueue("h", NewJob::new(payload(i)))
            .expect("enqueue")
            .job;
        let leased = lease_one(&queue, 60_000);
        assert_eq!(leased.job.id, job.id);
        let run = 100 + 37 * i;
        clock.advance(Duration::from_millis(run));
        queue
            .complete(job.id, leased.lease_id, None)
            .expect("complete");
        runs.push(run);
    }
    let now = queue_core::Clock::now_ms(&clock);
    let history = queue
        .history("h", &query(T0, now, Some(10 * MINUTE)))
        .expect("history");
    let point = &history.points[0];
    assert_eq!(point.completed, 40);
    let exact = |percent: usize| runs[(runs.len() * percent).div_ceil(100) - 1] as f64;
    for (got, percent) in [(point.run_ms_p50, 50), (point.run_ms_p95, 95)] {
        let got = got.expect("a percentile") as f64;
        let want = exact(percent);
        assert!(
            (got - want).abs() <= want * HISTORY_PRECISION,
            "p{percent}: {got} vs {want}"
        );
    }
    // Every wait is 0: leased at its enqueue time.
    assert_eq!((point.wait_ms_p50, point.wait_ms_p95), (Some(0), Some(0)));
}

#[test]
fn retention_removes_old_minutes_and_keeps_the_depths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let open = || {
        Queue::open_with(
            Config::new(dir.path())
                .clock(clock.clone())
                .seed(7)
                .background_timers(false)
                .history_retention(Duration::from_secs(600)),
        )
        .expect("open")
    };
    let queue = open();
    let range = query(T0, T0 + 30 * MINUTE, None);
    queue
        .enqueue("h", NewJob::new(payload(1)))
        .expect("enqueue");
    at(&clock, 5 * MINUTE);
    queue
        .enqueue("h", NewJob::new(payload(2)))
        .expect("enqueue");
    queue
        .enqueue("h", NewJob::new(payload(3)))
        .expect("enqueue");
    let before = queue.history("h", &range).expect("history");
    assert_eq!(before.points[0].enqueued, 1);
    assert_eq!(before.points[5].enqueued, 2);
    // Minute 30's first record prunes what started more than 10 minutes
    // before it: minute 0 goes, minute 5 (the newest of those) stays as
    // depths only.
    at(&clock, 30 * MINUTE);
    queue
        .enqueue("h", NewJob::new(payload(4)))
        .expect("enqueue");
    let after = queue.history("h", &range).expect("history");
    let summary = |p: &HistoryPoint| (p.enqueued, p.ready);
    assert_eq!(summary(&after.points[0]), (0, 0), "minute 0 is gone");
    assert_eq!(
        summary(&after.points[5]),
        (0, 3),
        "minute 5 keeps its depths"
    );
    assert_eq!(summary(&after.points[29]), (0, 3), "carried forward");
    assert_eq!(summary(&after.points[30]), (1, 4));
    assert_consistent(&queue);
    drop(queue);
    assert_eq!(open().history("h", &range).expect("history"), after);
}

#[test]
fn an_idle_queue_s_old_minutes_are_swept_while_others_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .clock(clock.clone())
            .background_timers(false)
            .history_retention(Duration::from_secs(600)),
    )
    .expect("open");
    // "idle" has a job left ready; "gone" ends with nothing; both then
    // stay idle while "busy" works.
    queue
        .enqueue("idle", NewJob::new(payload(1)))
        .expect("enqueue");
    at(&clock, MINUTE);
    queue
        .enqueue("idle", NewJob::new(payload(2)))
        .expect("enqueue");
    let gone = queue
        .enqueue("gone", NewJob::new(payload(3)))
        .expect("enqueue");
    queue.cancel(gone.job.id).expect("cancel");
    let range = query(T0, T0 + 40 * MINUTE, None);
    let summary = |name: &str| -> Vec<(u64, u64)> {
        queue
            .history(name, &range)
            .expect("history")
            .points
            .iter()
            .take(3)
            .map(|p| (p.enqueued, p.ready))
            .collect()
    };
    assert_eq!(summary("idle"), [(1, 1), (1, 2), (0, 2)]);
    assert_eq!(summary("gone"), [(0, 0), (1, 0), (0, 0)]);
    at(&clock, 40 * MINUTE);
    queue
        .enqueue("busy", NewJob::new(payload(4)))
        .expect("enqueue");
    // Older than 10 minutes: idle's minute 0 goes, its minute 1 (the
    // newest) keeps only its depths; gone's only minute goes (no depths).
    assert_eq!(summary("idle"), [(0, 0), (0, 2), (0, 2)]);
    assert_eq!(summary("gone"), [(0, 0), (0, 0), (0, 0)]);
    let busy = queue.history("busy", &range).expect("history");
    assert_eq!(busy.points[40].enqueued, 1);
    assert_consistent(&queue);
}

#[test]
fn zero_retention_records_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .clock(clock.clone())
            .background_timers(false)
            .history_retention(Duration::ZERO),
    )
    .expect("open");
    queue
        .enqueue("h", NewJob::new(payload(1)))
        .expect("enqueue");
    let leased = lease_one(&queue, 30_000);
    queue
        .complete(leased.job.id, leased.lease_id, None)
        .expect("complete");
    queue
        .enqueue("h", NewJob::new(payload(2)))
        .expect("enqueue");
    let history = queue
        .history("h", &query(T0, T0 + MINUTE, None))
        .expect("history");
    assert_eq!(history.points.len(), 2);
    for point in &history.points {
        assert_eq!(
            *point,
            HistoryPoint {
                at: point.at,
                ..HistoryPoint::default()
            }
        );
    }
    assert_eq!(queue.stats("h").expect("stats").ready, 1);
}

#[test]
fn queries_are_checked_and_default_to_the_last_hour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 30_000);
    let queue = open_manual(dir.path(), &clock);
    let history = queue
        .history("h", &HistoryQuery::default())
        .expect("history");
    assert_eq!(history.step_ms, MINUTE);
    assert_eq!(history.points.len(), 61);
    assert_eq!(history.points[0].at, T0 - 60 * MINUTE);
    assert_eq!(history.points[60].at, T0);
    let field = |q: HistoryQuery| match queue.history("h", &q) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(field(query(T0, T0, Some(1000))), "step_ms");
    assert_eq!(field(query(T0, T0, Some(0))), "step_ms");
    assert_eq!(field(query(T0 + 1, T0, None)), "from");
    assert_eq!(field(query(T0, T0 + 10_080 * MINUTE, None)), "from");
    assert!(
        queue
            .history("h", &query(T0, T0 + 10_079 * MINUTE, None))
            .is_ok()
    );
    assert!(matches!(
        queue.history("bad name", &HistoryQuery::default()),
        Err(Error::InvalidArgument { field: "queue", .. })
    ));
}
