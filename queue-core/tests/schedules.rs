//! Schedules through the engine on a manual clock: ticks fire exactly once
//! with their key and `run_at`, pause and resume, trigger, and catching up
//! after the store was closed for hours under each policy.

use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{CatchUp, Error, Job, JobState, LeaseOptions, ManualClock, ScheduleRequest};

use crate::common::{T0, assert_consistent, open_manual, open_manual_with_timer};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

fn request(timing: serde_json::Value, catch_up: CatchUp) -> ScheduleRequest {
    let mut body = serde_json::json!({
        "queue": "reports",
        "job": {"payload": {"report": "daily"}, "max_attempts": 3, "priority": 2},
        "catch_up": catch_up,
    });
    for (key, value) in timing.as_object().expect("an object") {
        body[key] = value.clone();
    }
    serde_json::from_value(body).expect("a schedule body")
}

fn every(ms: u64, catch_up: CatchUp) -> ScheduleRequest {
    request(serde_json::json!({ "every_ms": ms }), catch_up)
}

fn cron(expr: &str, catch_up: CatchUp) -> ScheduleRequest {
    request(serde_json::json!({ "cron": expr }), catch_up)
}

fn advance(clock: &ManualClock, ms: u64) {
    clock.advance(Duration::from_millis(ms));
}

/// Every ready job of `queue`, leased (and so taken off the queue).
fn take_all(queue: &Queue, name: &str) -> Vec<Job> {
    let mut jobs: Vec<Job> = queue
        .lease(name, &LeaseOptions::default().max_jobs(1000))
        .expect("lease")
        .into_iter()
        .map(|leased| leased.job)
        .collect();
    jobs.sort_by_key(|job| job.run_at);
    jobs
}

/// The (key, run_at) of each job.
fn ticks_of(jobs: &[Job]) -> Vec<(String, u64)> {
    jobs.iter()
        .map(|job| (job.idempotency_key.clone().unwrap_or_default(), job.run_at))
        .collect()
}

fn key(name: &str, at: u64) -> (String, u64) {
    (format!("schedule:{name}:{at}"), at)
}

#[test]
fn each_tick_enqueues_one_job_with_its_key_and_run_at() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    let put = queue
        .put_schedule("minutely", &every(MINUTE, CatchUp::All))
        .unwrap();
    assert!(put.created);
    assert_eq!(put.schedule.next_run_at, Some(T0 + MINUTE));
    // T0 is midnight UTC: this cron's first tick is at T0 + 2 minutes.
    queue
        .put_schedule("even", &cron("*/2 * * * *", CatchUp::All))
        .unwrap();
    assert_eq!(queue.run_due().unwrap().ticks, 0);
    for _ in 0..4 {
        advance(&clock, MINUTE);
        let report = queue.run_due().unwrap();
        assert!(report.ticks >= 1, "{report:?}");
        // A second pass at the same time fires nothing more.
        assert_eq!(queue.run_due().unwrap().ticks, 0);
    }
    let jobs = take_all(&queue, "reports");
    let mut minutely: Vec<_> = jobs
        .iter()
        .filter(|job| job.schedule.as_deref() == Some("minutely"))
        .cloned()
        .collect();
    minutely.sort_by_key(|job| job.run_at);
    assert_eq!(
        ticks_of(&minutely),
        (1..=4)
            .map(|i| key("minutely", T0 + i * MINUTE))
            .collect::<Vec<_>>()
    );
    let even: Vec<_> = jobs
        .iter()
        .filter(|job| job.schedule.as_deref() == Some("even"))
        .cloned()
        .collect();
    assert_eq!(
        ticks_of(&even),
        vec![key("even", T0 + 2 * MINUTE), key("even", T0 + 4 * MINUTE)]
    );
    assert_eq!(jobs.len(), 6);
    for job in &jobs {
        assert_eq!(job.payload, br#"{"report":"daily"}"#);
        assert_eq!((job.max_attempts, job.priority), (3, 2));
        assert_eq!(job.correlation_id, job.idempotency_key);
    }
    let stored = queue.schedule("minutely").unwrap().unwrap();
    assert_eq!(stored.next_run_at, Some(T0 + 5 * MINUTE));
    assert_eq!(stored.last_run_at, Some(T0 + 4 * MINUTE));
    assert_eq!(stored.last_job_id, Some(minutely[3].id));
    assert_consistent(&queue);
}

#[test]
fn a_paused_schedule_does_not_fire_and_resumes_from_now() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue
        .put_schedule("s", &cron("* * * * *", CatchUp::All))
        .unwrap();
    let paused = queue.pause_schedule("s").unwrap();
    assert!(paused.paused);
    assert_eq!(paused.next_run_at, None);
    advance(&clock, 5 * MINUTE + 30_000);
    assert_eq!(queue.run_due().unwrap().ticks, 0);
    let resumed = queue.resume_schedule("s").unwrap();
    assert!(!resumed.paused);
    // The pause's ticks are not caught up: the next is the first after now.
    assert_eq!(resumed.next_run_at, Some(T0 + 6 * MINUTE));
    advance(&clock, 30_000);
    assert_eq!(queue.run_due().unwrap().ticks, 1);
    assert_eq!(
        ticks_of(&take_all(&queue, "reports")),
        vec![key("s", T0 + 6 * MINUTE)]
    );
    // Storing a schedule paused works the same.
    let mut body = every(MINUTE, CatchUp::All);
    body.paused = Some(true);
    let put = queue.put_schedule("p", &body).unwrap();
    assert_eq!(
        (put.schedule.paused, put.schedule.next_run_at),
        (true, None)
    );
    assert_consistent(&queue);
}

#[test]
fn a_trigger_enqueues_now_and_does_not_move_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 10_000);
    let queue = open_manual(dir.path(), &clock);
    let put = queue
        .put_schedule("hourly", &cron("@hourly", CatchUp::Latest))
        .unwrap();
    assert_eq!(put.schedule.next_run_at, Some(T0 + HOUR));
    let first = queue
        .trigger_schedule("hourly", Some("req-1".into()))
        .unwrap();
    let second = queue.trigger_schedule("hourly", None).unwrap();
    assert_ne!(first.id, second.id);
    for job in [&first, &second] {
        assert_eq!(job.state, JobState::Ready);
        assert_eq!(job.run_at, T0 + 10_000);
        assert_eq!(job.schedule.as_deref(), Some("hourly"));
        assert_eq!(job.idempotency_key, None);
    }
    assert_eq!(first.correlation_id.as_deref(), Some("req-1"));
    let stored = queue.schedule("hourly").unwrap().unwrap();
    assert_eq!(stored.next_run_at, Some(T0 + HOUR));
    assert_eq!(stored.last_run_at, None);
    assert_eq!(stored.last_job_id, Some(second.id));
    // A paused schedule can be triggered too.
    queue.pause_schedule("hourly").unwrap();
    queue.trigger_schedule("hourly", None).unwrap();
    assert_eq!(queue.stats("reports").unwrap().ready, 3);
    assert!(matches!(
        queue.trigger_schedule("missing", None),
        Err(Error::ScheduleNotFound { .. })
    ));
    assert_consistent(&queue);
}

/// An hourly schedule stored at T0 + 10 s, the store closed, the clock moved
/// by 3.5 hours (ticks at 1 h, 2 h and 3 h missed, the latest 30 minutes
/// ago), then reopened: the jobs the reopened store's first timer pass fires.
fn after_downtime(catch_up: CatchUp) -> (Vec<Job>, queue_core::Schedule) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0 + 10_000);
    {
        let queue = open_manual(dir.path(), &clock);
        queue
            .put_schedule("hourly", &cron("0 * * * *", catch_up))
            .expect("put");
    }
    advance(&clock, 3 * HOUR + 30 * MINUTE);
    let queue = open_manual(dir.path(), &clock);
    queue.run_due().expect("run_due");
    assert_eq!(queue.run_due().expect("run_due").ticks, 0);
    assert_consistent(&queue);
    let schedule = queue.schedule("hourly").expect("read").expect("stored");
    (take_all(&queue, "reports"), schedule)
}

#[test]
fn catch_up_none_skips_the_missed_ticks() {
    let (jobs, schedule) = after_downtime(CatchUp::None);
    assert!(jobs.is_empty(), "{:?}", ticks_of(&jobs));
    assert_eq!(schedule.next_run_at, Some(T0 + 4 * HOUR));
    assert_eq!(schedule.last_run_at, None);
}

#[test]
fn catch_up_latest_fires_the_latest_missed_tick_once() {
    let (jobs, schedule) = after_downtime(CatchUp::Latest);
    assert_eq!(ticks_of(&jobs), vec![key("hourly", T0 + 3 * HOUR)]);
    assert_eq!(schedule.next_run_at, Some(T0 + 4 * HOUR));
    assert_eq!(schedule.last_run_at, Some(T0 + 3 * HOUR));
}

#[test]
fn catch_up_all_fires_each_missed_tick() {
    let (jobs, schedule) = after_downtime(CatchUp::All);
    assert_eq!(
        ticks_of(&jobs),
        (1..=3)
            .map(|h| key("hourly", T0 + h * HOUR))
            .collect::<Vec<_>>()
    );
    assert_eq!(schedule.next_run_at, Some(T0 + 4 * HOUR));
}

#[test]
fn catch_up_all_fires_at_most_the_latest_thousand_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let queue = open_manual(dir.path(), &clock);
        queue
            .put_schedule("fast", &every(1_000, CatchUp::All))
            .unwrap();
    }
    // 3,600 ticks missed.
    advance(&clock, HOUR);
    let queue = open_manual(dir.path(), &clock);
    assert_eq!(queue.run_due().unwrap().ticks, 1_000);
    let jobs = take_all(&queue, "reports");
    assert_eq!(
        ticks_of(&jobs),
        (2_601..=3_600)
            .map(|i| key("fast", T0 + i * 1_000))
            .collect::<Vec<_>>()
    );
    let schedule = queue.schedule("fast").unwrap().unwrap();
    assert_eq!(schedule.next_run_at, Some(T0 + 3_601 * 1_000));
    assert_consistent(&queue);
}

#[test]
fn replacing_listing_and_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue
        .put_schedule("b", &every(MINUTE, CatchUp::Latest))
        .unwrap();
    queue
        .put_schedule("a", &cron("0 3 * * *", CatchUp::None))
        .unwrap();
    advance(&clock, 30_000);
    // The same timing again keeps the next tick; `created` is false.
    let again = queue
        .put_schedule("b", &every(MINUTE, CatchUp::Latest))
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.schedule.next_run_at, Some(T0 + MINUTE));
    assert_eq!(again.schedule.created_at, T0);
    assert_eq!(again.schedule.updated_at, T0 + 30_000);
    // A new timing starts from now.
    let changed = queue
        .put_schedule("b", &every(2 * MINUTE, CatchUp::Latest))
        .unwrap();
    assert_eq!(changed.schedule.next_run_at, Some(T0 + 30_000 + 2 * MINUTE));
    let names: Vec<_> = queue
        .schedules()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let deleted = queue.delete_schedule("a").unwrap();
    assert_eq!(deleted.cron.as_deref(), Some("0 3 * * *"));
    assert!(queue.schedule("a").unwrap().is_none());
    assert!(matches!(
        queue.delete_schedule("a"),
        Err(Error::ScheduleNotFound { .. })
    ));
    // A deleted schedule fires nothing.
    advance(&clock, 4 * HOUR);
    assert_eq!(queue.run_due().unwrap().ticks, 1);
    assert_consistent(&queue);
}

#[test]
fn a_bad_schedule_is_refused_naming_its_field_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    let field = |name: &str, body: serde_json::Value| -> &'static str {
        let request: ScheduleRequest = serde_json::from_value(body).expect("a body");
        match queue.put_schedule(name, &request) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    };
    let job = serde_json::json!({"payload": 1});
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "max_attempts": 0}})
        ),
        "job.max_attempts"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "run_at": T0}})
        ),
        "job.run_at"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "idempotency_key": "k"}})
        ),
        "job.idempotency_key"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "every_ms": 1000, "job": {"payload": 1, "callback_url": "ftp://x"}})
        ),
        "job.callback_url"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "every_ms": 1000, "cron": "* * * * *", "job": job})
        ),
        "cron"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "q", "cron": "* * * * *", "timezone": "Europe/Nowhere", "job": job})
        ),
        "timezone"
    );
    assert_eq!(
        field(
            "s",
            serde_json::json!({"queue": "bad queue", "every_ms": 1000, "job": job})
        ),
        "queue"
    );
    assert_eq!(
        field(
            "bad name",
            serde_json::json!({"queue": "q", "every_ms": 1000, "job": job})
        ),
        "name"
    );
    assert!(queue.schedules().unwrap().is_empty());
    assert_consistent(&queue);
}

#[test]
fn the_background_timer_fires_a_tick_when_the_clock_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual_with_timer(dir.path(), &clock);
    queue
        .put_schedule("s", &every(1_000, CatchUp::All))
        .unwrap();
    advance(&clock, 1_000);
    // The timer sleeps towards the tick; the clock's advance wakes it.
    let leased = queue
        .lease_wait("reports", &LeaseOptions::default(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(
        leased[0].job.idempotency_key.as_deref(),
        Some(format!("schedule:s:{}", T0 + 1_000).as_str())
    );
}

#[test]
fn storing_a_schedule_wakes_a_timer_that_sleeps_towards_a_later_deadline() {
    // The system clock. A delayed job, once the timer has promoted it and
    // it is leased, leaves the timer asleep until its lease expires (30 s);
    // only the wake-up of the PUT can make the tick fire a second later.
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open_with(queue_core::Config::new(dir.path())).expect("open");
    queue
        .enqueue(
            "warm-up",
            queue_core::NewJob::new(b"{}".to_vec()).delay(Duration::from_millis(200)),
        )
        .expect("enqueue");
    let patience = Duration::from_secs(20);
    let warm = queue
        .lease_wait("warm-up", &LeaseOptions::default(), patience)
        .expect("lease");
    assert_eq!(warm.len(), 1, "the timer promoted the delayed job");
    queue
        .put_schedule("s", &every(1_000, CatchUp::All))
        .expect("put");
    let leased = queue
        .lease_wait("reports", &LeaseOptions::default(), patience)
        .expect("lease");
    assert_eq!(leased.len(), 1, "the tick fired");
    assert_eq!(leased[0].job.schedule.as_deref(), Some("s"));
}

#[test]
fn a_tick_whose_key_is_taken_enqueues_nothing_more() {
    // As after a schedule was deleted and stored again, or a second
    // attempt at the tick: the job holding the key counts as the tick's.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue
        .put_schedule("s", &cron("* * * * *", CatchUp::All))
        .expect("put");
    let tick = T0 + MINUTE;
    let mut first = queue_core::NewJob::new(b"{}".to_vec());
    first.idempotency_key = Some(format!("schedule:s:{tick}"));
    let holder = queue.enqueue("reports", first).expect("enqueue").job;
    advance(&clock, MINUTE);
    assert_eq!(queue.run_due().expect("run_due").ticks, 0);
    let stored = queue.schedule("s").expect("read").expect("stored");
    assert_eq!(stored.last_run_at, Some(tick));
    assert_eq!(stored.last_job_id, Some(holder.id));
    assert_eq!(stored.next_run_at, Some(tick + MINUTE));
    assert_eq!(queue.stats("reports").expect("stats").ready, 1);
    advance(&clock, MINUTE);
    assert_eq!(queue.run_due().expect("run_due").ticks, 1);
    assert_consistent(&queue);
}
