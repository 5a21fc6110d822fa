//! Every operation of the core, with several jobs in flight so that a change
//! that touches the wrong job is caught. Time is a manual clock; timers run
//! when the test calls `run_due` (or, where named, on the background thread).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{
    Config, Error, Failure, JobId, JobState, LeaseId, LeaseLostReason, LeaseOptions, ManualClock,
    NewJob, RecvError, Retention, Settlement, Transition,
};

use crate::common::{
    T0, assert_consistent, enqueue_n, lease_n, open_fast, open_manual, open_manual_with_timer,
    payload,
};

const HOUR: Duration = Duration::from_secs(3600);

fn setup() -> (tempfile::TempDir, ManualClock, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    (dir, clock, queue)
}

fn state(queue: &Queue, id: JobId) -> JobState {
    queue.get(id).expect("get").expect("job exists").state
}

// ---- enqueue ---------------------------------------------------------------

#[test]
fn payloads_results_and_progress_nest_at_most_the_limit() {
    // The bound holds in the core, so an embedded user meets it too.
    use queue_proto::limits::MAX_JSON_DEPTH;
    let (_dir, _clock, queue) = setup();
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let field = |err: Error| match err {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("{other}"),
    };
    let err = queue.enqueue("q", NewJob::new(deep(MAX_JSON_DEPTH + 1)));
    assert_eq!(err.map(|_| ()).map_err(field), Err("payload"));
    let err = queue.enqueue_batch(
        "q",
        vec![NewJob::new(payload(1)), NewJob::new(deep(10_000))],
    );
    assert_eq!(err.map(|_| ()).map_err(field), Err("payload"));
    assert_eq!(queue.stats("q").expect("stats").ready, 0);
    let job = queue
        .enqueue("q", NewJob::new(deep(MAX_JSON_DEPTH)))
        .expect("at the limit");
    let leased = lease_n(&queue, "q", 1, 30_000);
    let lease = leased[0].lease_id;
    let err = queue.report_progress(job.job.id, lease, &deep(MAX_JSON_DEPTH + 1), None);
    assert_eq!(err.map(|_| ()).map_err(field), Err("progress"));
    let err = queue.complete(job.job.id, lease, Some(deep(MAX_JSON_DEPTH + 1)));
    assert_eq!(err.map(|_| ()).map_err(field), Err("result"));
    assert_eq!(state(&queue, job.job.id), JobState::Leased);
    let done = queue.complete(job.job.id, lease, Some(deep(MAX_JSON_DEPTH)));
    assert_eq!(done.expect("at the limit").state, JobState::Completed);
}

#[test]
fn enqueue_stores_a_ready_job_with_increasing_ids() {
    let (_dir, _clock, queue) = setup();
    let jobs = enqueue_n(&queue, "emails", 3);
    assert!(jobs.windows(2).all(|w| w[0].id < w[1].id));
    for (n, job) in jobs.iter().enumerate() {
        assert_eq!(job.state, JobState::Ready);
        assert_eq!((job.attempts, job.max_attempts), (0, 5));
        assert_eq!((job.created_at, job.run_at), (T0, T0));
        assert_eq!(job.payload, payload(n as u64));
        assert_eq!(queue.get(job.id).unwrap().as_ref(), Some(job));
    }
    assert_eq!(queue.stats("emails").unwrap().ready, 3);
    assert_consistent(&queue);
}

#[test]
fn delayed_jobs_wait_until_promoted() {
    let (_dir, clock, queue) = setup();
    let now = enqueue_n(&queue, "q", 1).remove(0);
    let later = queue
        .enqueue("q", NewJob::new(payload(1)).delay(Duration::from_secs(10)))
        .unwrap()
        .job;
    let past = queue
        .enqueue("q", NewJob::new(payload(2)).run_at(T0 - 5))
        .unwrap()
        .job;
    assert_eq!(later.state, JobState::Scheduled);
    assert_eq!(later.run_at, T0 + 10_000);
    assert_eq!(past.state, JobState::Ready);

    clock.advance(Duration::from_millis(9_999));
    assert_eq!(queue.run_due().unwrap().promoted, 0);
    let leased: Vec<_> = lease_n(&queue, "q", 10, 1000)
        .iter()
        .map(|l| l.job.id)
        .collect();
    assert_eq!(leased, vec![past.id, now.id], "oldest run_at first");

    clock.advance(Duration::from_millis(1));
    let report = queue.run_due().unwrap();
    assert_eq!(report.promoted, 1);
    assert_eq!(state(&queue, later.id), JobState::Ready);
    assert_consistent(&queue);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 2);
    let before = queue.stats("q").unwrap();
    let bad: Vec<(&str, NewJob)> = vec![
        ("", NewJob::new(payload(0))),
        ("has space", NewJob::new(payload(0))),
        ("q", NewJob::new(payload(0)).max_attempts(0)),
        ("q", NewJob::new(payload(0)).max_attempts(1001)),
        ("q", NewJob::new(payload(0)).idempotency_key("")),
        (
            "q",
            NewJob {
                delay_ms: Some(5),
                run_at: Some(T0),
                ..NewJob::new(payload(0))
            },
        ),
    ];
    for (name, job) in bad {
        let err = queue.enqueue(name, job).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
    let huge = queue
        .enqueue("q", NewJob::new(vec![b'x'; 1024 * 1024 + 1]))
        .unwrap_err();
    assert!(matches!(
        huge,
        Error::TooLarge {
            what: "payload",
            ..
        }
    ));
    assert_eq!(queue.stats("q").unwrap(), before);
    assert!(matches!(
        queue.lease("q", &LeaseOptions::default().max_jobs(0)),
        Err(Error::InvalidArgument {
            field: "max_jobs",
            ..
        })
    ));
    assert!(matches!(
        queue.stats("bad/name"),
        Err(Error::InvalidArgument { field: "queue", .. })
    ));
    assert!(matches!(
        "not-an-id".parse::<JobId>(),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(queue.verify().unwrap().jobs, 2);
    assert_consistent(&queue);
}

#[test]
fn idempotency_keys_replay_within_a_queue_only() {
    let (_dir, _clock, queue) = setup();
    let first = queue
        .enqueue("a", NewJob::new(payload(1)).idempotency_key("order-1"))
        .unwrap();
    assert!(!first.replayed);
    let again = queue
        .enqueue("a", NewJob::new(payload(1)).idempotency_key("order-1"))
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.job, first.job, "a replay returns the stored job");
    // The same key with another request is a conflict and changes nothing.
    let before = queue.verify().unwrap();
    for different in [
        NewJob::new(payload(2)).idempotency_key("order-1"),
        NewJob::new(payload(1))
            .idempotency_key("order-1")
            .priority(1),
        NewJob::new(payload(1))
            .idempotency_key("order-1")
            .group("g"),
        NewJob::new(payload(1))
            .idempotency_key("order-1")
            .delay(Duration::from_secs(1)),
    ] {
        match queue.enqueue("a", different) {
            Err(Error::IdempotencyConflict { queue: q, key, id }) => {
                assert_eq!(
                    (q.as_str(), key.as_str(), id),
                    ("a", "order-1", first.job.id)
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let batch = queue.enqueue_batch(
            "a",
            vec![
                NewJob::new(payload(7)),
                NewJob::new(payload(2)).idempotency_key("order-1"),
            ],
        );
        assert!(
            matches!(batch, Err(Error::IdempotencyConflict { .. })),
            "{batch:?}"
        );
    }
    assert_eq!(
        queue.verify().unwrap(),
        before,
        "a conflict changes nothing"
    );
    assert_eq!(queue.get(first.job.id).unwrap().unwrap(), first.job);
    let other_queue = queue
        .enqueue("b", NewJob::new(payload(3)).idempotency_key("order-1"))
        .unwrap();
    assert!(!other_queue.replayed);
    assert_ne!(other_queue.job.id, first.job.id);
    assert_eq!(queue.stats("a").unwrap().ready, 1);
    assert_consistent(&queue);
}

#[test]
fn idempotency_key_is_free_again_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .clock(clock.clone())
            .background_timers(false)
            .retention(Retention {
                completed: Duration::from_secs(60),
                ..Retention::default()
            }),
    )
    .unwrap();
    let first = queue
        .enqueue("q", NewJob::new(payload(1)).idempotency_key("k"))
        .unwrap()
        .job;
    let leased = lease_n(&queue, "q", 1, 1000).remove(0);
    queue.complete(first.id, leased.lease_id, None).unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(queue.run_due().unwrap().removed, 0);
    assert!(
        queue
            .enqueue("q", NewJob::new(payload(1)).idempotency_key("k"))
            .unwrap()
            .replayed
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(queue.run_due().unwrap().removed, 1);
    assert_eq!(queue.get(first.id).unwrap(), None);
    let fresh = queue
        .enqueue("q", NewJob::new(payload(3)).idempotency_key("k"))
        .unwrap();
    assert!(!fresh.replayed);
    assert!(fresh.job.id > first.id);
    assert_consistent(&queue);
}

#[test]
fn batches_are_all_or_nothing_and_keep_input_order() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 1);
    let bad_batch = vec![
        NewJob::new(payload(1)),
        NewJob::new(payload(2)).max_attempts(0),
        NewJob::new(payload(3)),
    ];
    let err = queue.enqueue_batch("q", bad_batch).unwrap_err();
    assert!(err.to_string().contains("jobs[1]"), "{err}");
    assert_eq!(queue.verify().unwrap().jobs, 1);
    assert!(queue.enqueue_batch("q", Vec::new()).is_err());
    assert!(
        queue
            .enqueue_batch("q", vec![NewJob::new(payload(0)); 1001])
            .is_err()
    );

    let stored = queue
        .enqueue("q", NewJob::new(payload(9)).idempotency_key("old"))
        .unwrap()
        .job;
    let batch = queue
        .enqueue_batch(
            "q",
            vec![
                NewJob::new(payload(10)).idempotency_key("new"),
                NewJob::new(payload(11)),
                NewJob::new(payload(10)).idempotency_key("new"),
                NewJob::new(payload(9)).idempotency_key("old"),
            ],
        )
        .unwrap();
    let replayed: Vec<bool> = batch.iter().map(|e| e.replayed).collect();
    assert_eq!(replayed, vec![false, false, true, true]);
    assert_eq!(batch[0].job.payload, payload(10));
    assert_eq!(batch[1].job.payload, payload(11));
    // Within one batch too, a key given twice must come with one request.
    let before = queue.verify().unwrap();
    let conflicting = queue.enqueue_batch(
        "q",
        vec![
            NewJob::new(payload(20)).idempotency_key("twice"),
            NewJob::new(payload(21)).idempotency_key("twice"),
        ],
    );
    assert!(
        matches!(conflicting, Err(Error::IdempotencyConflict { .. })),
        "{conflicting:?}"
    );
    assert_eq!(queue.verify().unwrap(), before);
    assert_eq!(batch[2].job.id, batch[0].job.id);
    assert_eq!(batch[3].job.id, stored.id);
    assert_eq!(queue.stats("q").unwrap().ready, 4);
    assert_consistent(&queue);
}

// ---- lease -------------------------------------------------------------------

#[test]
fn lease_order_is_priority_then_run_at_then_enqueue_order() {
    let (_dir, clock, queue) = setup();
    let low = queue
        .enqueue("q", NewJob::new(payload(0)).priority(-5))
        .unwrap()
        .job;
    let mid_a = queue.enqueue("q", NewJob::new(payload(1))).unwrap().job;
    let mid_b = queue.enqueue("q", NewJob::new(payload(2))).unwrap().job;
    let mid_old = queue
        .enqueue("q", NewJob::new(payload(3)).run_at(T0 - 1000))
        .unwrap()
        .job;
    let high = queue
        .enqueue("q", NewJob::new(payload(4)).priority(10))
        .unwrap()
        .job;
    let other = enqueue_n(&queue, "other", 1).remove(0);
    clock.advance(Duration::from_millis(1));

    let first = lease_n(&queue, "q", 2, 1000);
    let ids: Vec<JobId> = first.iter().map(|l| l.job.id).collect();
    assert_eq!(ids, vec![high.id, mid_old.id]);
    let rest = lease_n(&queue, "q", 10, 1000);
    let ids: Vec<JobId> = rest.iter().map(|l| l.job.id).collect();
    assert_eq!(ids, vec![mid_a.id, mid_b.id, low.id]);
    assert!(lease_n(&queue, "q", 1, 1000).is_empty());

    let all_leases: HashSet<LeaseId> = first.iter().chain(&rest).map(|l| l.lease_id).collect();
    assert_eq!(all_leases.len(), 5, "every lease id is fresh");
    for leased in first.iter().chain(&rest) {
        assert_eq!(leased.job.state, JobState::Leased);
        assert_eq!(leased.job.attempts, 1);
        assert_eq!(leased.job.lease_expires_at(), Some(T0 + 1 + 1000));
        assert_eq!(queue.get(leased.job.id).unwrap().unwrap(), leased.job);
    }
    assert_eq!(state(&queue, other.id), JobState::Ready);
    assert_eq!(queue.stats("q").unwrap().leased, 5);
    assert_consistent(&queue);
}

#[test]
fn paused_queues_lease_nothing_until_resumed() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 2);
    enqueue_n(&queue, "other", 1);
    assert!(queue.pause("q").unwrap().paused);
    assert!(lease_n(&queue, "q", 5, 1000).is_empty());
    assert_eq!(lease_n(&queue, "other", 5, 1000).len(), 1);
    queue.enqueue("q", NewJob::new(payload(3))).unwrap();
    assert_eq!(queue.stats("q").unwrap().ready, 3);
    let resumed = queue.resume("q").unwrap();
    assert!(!resumed.paused);
    assert_eq!(lease_n(&queue, "q", 5, 1000).len(), 3);
}

#[test]
fn heartbeats_extend_live_leases_only() {
    let (_dir, clock, queue) = setup();
    enqueue_n(&queue, "q", 2);
    let leases = lease_n(&queue, "q", 2, 10_000);
    let (a, b) = (&leases[0], &leases[1]);
    clock.advance(Duration::from_secs(8));
    let beat = queue.heartbeat(a.job.id, a.lease_id, None).unwrap();
    assert_eq!(beat.lease_expires_at(), Some(T0 + 18_000));
    let beat = queue.heartbeat(a.job.id, a.lease_id, Some(60_000)).unwrap();
    assert_eq!(beat.lease_expires_at(), Some(T0 + 68_000));
    assert!(matches!(
        queue.heartbeat(a.job.id, a.lease_id, Some(0)),
        Err(Error::InvalidArgument {
            field: "lease_ms",
            ..
        })
    ));
    // b's lease reached its deadline: lost even before the timer reaps it.
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        queue.heartbeat(b.job.id, b.lease_id, None),
        Err(Error::LeaseLost { id, .. }) if id == b.job.id
    ));
    // A lease id of another job is foreign.
    assert!(matches!(
        queue.heartbeat(b.job.id, a.lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        queue.heartbeat(JobId::from_u64(u64::MAX), a.lease_id, None),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(queue.run_due().unwrap().expired, 1);
    assert_eq!(state(&queue, a.job.id), JobState::Leased);
    assert_consistent(&queue);
}

#[test]
fn complete_is_final_and_fenced() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 3);
    let leases = lease_n(&queue, "q", 3, 1000);
    let done = queue
        .complete(
            leases[1].job.id,
            leases[1].lease_id,
            Some(br#"{"ok":1}"#.to_vec()),
        )
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.as_deref(), Some(&br#"{"ok":1}"#[..]));
    assert!(matches!(
        queue.complete(leases[1].job.id, leases[1].lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        queue.complete(leases[0].job.id, leases[2].lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        queue.complete(
            leases[0].job.id,
            leases[0].lease_id,
            Some(vec![0; 1024 * 1024 + 1])
        ),
        Err(Error::TooLarge { what: "result", .. })
    ));
    assert_eq!(state(&queue, leases[0].job.id), JobState::Leased);
    assert_eq!(state(&queue, leases[2].job.id), JobState::Leased);
    let stats = queue.stats("q").unwrap();
    assert_eq!((stats.completed, stats.leased), (1, 2));
    assert_consistent(&queue);
}

#[test]
fn fail_retries_with_backoff_then_dead_letters() {
    let (_dir, clock, queue) = setup();
    let job = queue
        .enqueue(
            "q",
            NewJob::new(payload(0))
                .max_attempts(3)
                .backoff(Duration::from_secs(10)),
        )
        .unwrap()
        .job;
    let bystander = enqueue_n(&queue, "q", 1).remove(0);
    let mut expected_base = 10_000u64;
    for attempt in 1..=2u32 {
        let leased = queue
            .lease("q", &LeaseOptions::default().max_jobs(1))
            .unwrap()
            .into_iter()
            .find(|l| l.job.id == job.id);
        let leased = match leased {
            Some(leased) => leased,
            None => {
                // The bystander came first; give it back untouched.
                let other = lease_n(&queue, "q", 1, 1000);
                assert!(other.is_empty() || other[0].job.id == job.id);
                other.into_iter().next().expect("the job is ready")
            }
        };
        assert_eq!(leased.job.attempts, attempt);
        let now = clock.now_ms_for_test();
        let failed = queue
            .fail(
                job.id,
                leased.lease_id,
                &Failure::new(format!("boom {attempt}")),
            )
            .unwrap();
        assert_eq!(failed.state, JobState::Scheduled);
        assert_eq!(
            failed.last_error.as_deref(),
            Some(format!("boom {attempt}").as_str())
        );
        let delay = failed.run_at - now;
        assert!(
            (expected_base * 8 / 10..=expected_base * 12 / 10).contains(&delay),
            "attempt {attempt}: back-off {delay} outside ±20 % of {expected_base}"
        );
        expected_base *= 2;
        clock.advance(Duration::from_millis(delay));
        assert_eq!(queue.run_due().unwrap().promoted, 1);
    }
    let leased = lease_n(&queue, "q", 2, 1000);
    let mine = leased.iter().find(|l| l.job.id == job.id).unwrap();
    assert_eq!(mine.job.attempts, 3);
    let dead = queue
        .fail(job.id, mine.lease_id, &Failure::new("last"))
        .unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 3);
    assert_eq!(state(&queue, bystander.id), JobState::Leased);
    assert_eq!(queue.stats("q").unwrap().dead, 1);
    assert_consistent(&queue);
}

#[test]
fn fail_with_retry_delay_or_permanently() {
    let (_dir, clock, queue) = setup();
    enqueue_n(&queue, "q", 3);
    let l = lease_n(&queue, "q", 3, 1000);
    let later = queue
        .fail(
            l[0].job.id,
            l[0].lease_id,
            &Failure::new("x").retry_in(Duration::from_millis(250)),
        )
        .unwrap();
    assert_eq!((later.state, later.run_at), (JobState::Scheduled, T0 + 250));
    let now = queue
        .fail(
            l[1].job.id,
            l[1].lease_id,
            &Failure::new("x").retry_in(Duration::ZERO),
        )
        .unwrap();
    assert_eq!(now.state, JobState::Ready);
    let dead = queue
        .fail(
            l[2].job.id,
            l[2].lease_id,
            &Failure::new("bad input").permanent(),
        )
        .unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert!(matches!(
        queue.fail(l[2].job.id, l[2].lease_id, &Failure::new("again")),
        Err(Error::LeaseLost { .. })
    ));
    clock.advance(Duration::from_millis(250));
    assert_eq!(queue.run_due().unwrap().promoted, 1);
    assert_eq!(queue.stats("q").unwrap().ready, 2);
    assert_consistent(&queue);
}

#[test]
fn settle_decides_each_item_as_its_single_call_and_refuses_bad_input_whole() {
    let (_dir, clock, queue) = setup();
    enqueue_n(&queue, "q", 4);
    enqueue_n(&queue, "other", 1);
    let short = lease_n(&queue, "q", 1, 1000);
    let leases = lease_n(&queue, "q", 3, 60_000);
    let foreign = lease_n(&queue, "other", 1, 60_000);
    clock.advance(Duration::from_millis(1500)); // `short` has expired

    // Input out of bounds refuses the call before anything is written.
    let too_large = [
        Settlement::complete(leases[0].job.id, leases[0].lease_id, None),
        Settlement::complete(
            leases[1].job.id,
            leases[1].lease_id,
            Some(vec![b'1'; 1024 * 1024 + 1]),
        ),
    ];
    assert!(matches!(
        queue.settle("q", &too_large),
        Err(Error::TooLarge { what: "result", .. })
    ));
    let too_long = [Settlement::fail(
        leases[0].job.id,
        leases[0].lease_id,
        Failure {
            retry_in_ms: Some(u64::MAX),
            ..Failure::new("x")
        },
    )];
    assert!(matches!(
        queue.settle("q", &too_long),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(state(&queue, leases[0].job.id), JobState::Leased);

    let items = [
        Settlement::complete(leases[0].job.id, leases[0].lease_id, Some(b"1".to_vec())),
        Settlement::fail(
            leases[1].job.id,
            leases[1].lease_id,
            Failure::new("no").permanent(),
        ),
        // Stale, expired, another queue's, the same job twice.
        Settlement::complete(leases[2].job.id, leases[1].lease_id, None),
        Settlement::complete(short[0].job.id, short[0].lease_id, None),
        Settlement::complete(foreign[0].job.id, foreign[0].lease_id, None),
        Settlement::fail(leases[0].job.id, leases[0].lease_id, Failure::new("again")),
        Settlement::fail(leases[2].job.id, leases[2].lease_id, Failure::new("later")),
    ];
    let results = queue.settle("q", &items).unwrap();
    assert_eq!(results.len(), items.len());
    assert_eq!(results[0].as_ref().unwrap().state, JobState::Completed);
    assert_eq!(
        results[0].as_ref().unwrap().result.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(results[1].as_ref().unwrap().state, JobState::Dead);
    assert!(matches!(
        results[2],
        Err(Error::LeaseLost {
            reason: LeaseLostReason::NotCurrent,
            ..
        })
    ));
    assert!(matches!(
        results[3],
        Err(Error::LeaseLost {
            reason: LeaseLostReason::Expired,
            ..
        })
    ));
    assert!(matches!(results[4], Err(Error::NotFound { id }) if id == foreign[0].job.id));
    assert!(matches!(
        results[5],
        Err(Error::LeaseLost {
            reason: LeaseLostReason::Finished(JobState::Completed),
            ..
        })
    ));
    let later = results[6].as_ref().unwrap();
    assert_eq!(
        (later.state, later.last_error.as_deref()),
        (JobState::Scheduled, Some("later"))
    );
    assert_eq!(state(&queue, foreign[0].job.id), JobState::Leased);
    assert_eq!(state(&queue, short[0].job.id), JobState::Leased);
    let stats = queue.stats("q").unwrap();
    assert_eq!(
        (stats.completed, stats.dead, stats.scheduled, stats.leased),
        (1, 1, 1, 1)
    );
    let counted = queue.queue_counters();
    assert_eq!((counted["q"].completed, counted["q"].failed), (1, 2));
    assert!(queue.settle("q", &[]).unwrap().is_empty());
    assert_consistent(&queue);
}

#[test]
fn settle_and_lease_leases_what_its_settlements_free_in_the_same_commit() {
    let (_dir, _clock, queue) = setup();
    let limits = queue_core::PatchQueueRequest {
        max_leased: Some(Some(2)),
        group_max_leased: Some(Some(1)),
        ..queue_core::PatchQueueRequest::default()
    };
    queue.update_queue("q", &limits).unwrap();
    let grouped = |n: u64| NewJob::new(payload(n)).group("g");
    let g1 = queue.enqueue("q", grouped(1)).unwrap().job;
    let g2 = queue.enqueue("q", grouped(2)).unwrap().job;
    let free = enqueue_n(&queue, "q", 2);
    let held = lease_n(&queue, "q", 4, 60_000);
    let ids: Vec<JobId> = held.iter().map(|l| l.job.id).collect();
    assert_eq!(ids, vec![g1.id, free[0].id], "at both limits");

    // Completing g1 frees a max_leased slot and the group's: the round of
    // the same commit takes g2 (the group's next), not free[1].
    let items = [
        Settlement::complete(held[0].job.id, held[0].lease_id, None),
        // The same job again: decided in a later commit, after the round.
        Settlement::complete(held[0].job.id, held[0].lease_id, None),
    ];
    let opts = LeaseOptions::default().max_jobs(4);
    let (results, leased) = queue.settle_and_lease("q", &items, &opts).unwrap();
    assert_eq!(results[0].as_ref().unwrap().state, JobState::Completed);
    assert!(matches!(
        results[1],
        Err(Error::LeaseLost {
            reason: LeaseLostReason::Finished(JobState::Completed),
            ..
        })
    ));
    let taken: Vec<JobId> = leased.iter().map(|l| l.job.id).collect();
    assert_eq!(taken, vec![g2.id]);
    assert_eq!(state(&queue, g2.id), JobState::Leased);
    let stats = queue.stats("q").unwrap();
    assert_eq!((stats.leased, stats.ready, stats.completed), (2, 1, 1));
    // The counts and group entries the commit wrote twice (after the
    // settlements, then after the round) agree with the records.
    assert_consistent(&queue);

    // Nothing freed: the round takes nothing, and does not wait.
    let (results, leased) = queue.settle_and_lease("q", &[], &opts).unwrap();
    assert!(results.is_empty() && leased.is_empty());
    assert!(matches!(
        queue.settle_and_lease("q", &[], &LeaseOptions::default().max_jobs(0)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn release_gives_the_attempt_back_and_keeps_the_place() {
    let (_dir, _clock, queue) = setup();
    let jobs = enqueue_n(&queue, "q", 3);
    let first = lease_n(&queue, "q", 1, 1000).remove(0);
    assert_eq!(first.job.id, jobs[0].id);
    let released = queue.release(first.job.id, first.lease_id).unwrap();
    assert_eq!((released.state, released.attempts), (JobState::Ready, 0));
    assert!(matches!(
        queue.release(first.job.id, first.lease_id),
        Err(Error::LeaseLost { .. })
    ));
    let again = lease_n(&queue, "q", 1, 1000).remove(0);
    assert_eq!(again.job.id, jobs[0].id, "back at the head of the queue");
    assert_eq!(again.job.attempts, 1);
    assert_ne!(again.lease_id, first.lease_id);
    assert_consistent(&queue);
}

#[test]
fn expired_leases_count_as_failed_attempts_and_fence_the_old_holder() {
    let (_dir, clock, queue) = setup();
    let jobs = enqueue_n(&queue, "q", 2);
    let last = queue
        .enqueue("q", NewJob::new(payload(9)).max_attempts(1))
        .unwrap()
        .job;
    let leases = lease_n(&queue, "q", 3, 5_000);
    clock.advance(Duration::from_secs(5));
    let report = queue.run_due().unwrap();
    assert_eq!(report.expired, 3);
    for job in &jobs {
        let job = queue.get(job.id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Scheduled);
        assert_eq!(job.last_error.as_deref(), Some("lease expired"));
        assert_eq!(job.attempts, 1);
    }
    assert_eq!(state(&queue, last.id), JobState::Dead);
    for stale in &leases {
        assert!(matches!(
            queue.complete(stale.job.id, stale.lease_id, None),
            Err(Error::LeaseLost { .. })
        ));
    }
    clock.advance(HOUR);
    assert_eq!(queue.run_due().unwrap().promoted, 2);
    let second = lease_n(&queue, "q", 5, 5_000);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|l| l.job.attempts == 2));
    // The old holder still cannot touch the job now held by someone else.
    let old = leases
        .iter()
        .find(|l| l.job.id == second[0].job.id)
        .unwrap();
    assert!(matches!(
        queue.fail(old.job.id, old.lease_id, &Failure::new("late")),
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(state(&queue, second[0].job.id), JobState::Leased);
    assert_consistent(&queue);
}

// ---- cancel, get ---------------------------------------------------------------

#[test]
fn cancel_unfinished_jobs_and_revoke_leases() {
    let (_dir, _clock, queue) = setup();
    let ready = enqueue_n(&queue, "q", 2);
    let scheduled = queue
        .enqueue("q", NewJob::new(payload(5)).delay(HOUR))
        .unwrap()
        .job;
    let leased = lease_n(&queue, "q", 1, 1000).remove(0);
    assert_eq!(leased.job.id, ready[0].id);

    for id in [scheduled.id, leased.job.id] {
        assert_eq!(queue.cancel(id).unwrap().state, JobState::Cancelled);
    }
    assert!(matches!(
        queue.heartbeat(leased.job.id, leased.lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        queue.cancel(leased.job.id),
        Err(Error::Conflict {
            state: JobState::Cancelled,
            operation: "cancel",
            ..
        })
    ));
    assert!(matches!(
        queue.cancel(JobId::from_u64(123_456_789)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(state(&queue, ready[1].id), JobState::Ready);
    let stats = queue.stats("q").unwrap();
    assert_eq!(
        (stats.cancelled, stats.ready, stats.scheduled, stats.leased),
        (2, 1, 0, 0)
    );
    assert_consistent(&queue);
}

#[test]
fn completed_jobs_cannot_be_cancelled() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 1);
    let l = lease_n(&queue, "q", 1, 1000).remove(0);
    queue.complete(l.job.id, l.lease_id, None).unwrap();
    assert!(matches!(
        queue.cancel(l.job.id),
        Err(Error::Conflict {
            state: JobState::Completed,
            ..
        })
    ));
}

// ---- stats -------------------------------------------------------------------------

#[test]
fn stats_count_states_and_age_the_oldest_ready_job() {
    let (_dir, clock, queue) = setup();
    assert_eq!(queue.stats("nothing").unwrap().ready, 0);
    assert_eq!(queue.stats("nothing").unwrap().oldest_ready_age_ms, None);
    enqueue_n(&queue, "q", 4);
    queue
        .enqueue("q", NewJob::new(payload(0)).priority(9))
        .unwrap();
    queue
        .enqueue("q", NewJob::new(payload(0)).delay(HOUR))
        .unwrap();
    enqueue_n(&queue, "z", 1);
    clock.advance(Duration::from_secs(3));
    let l = lease_n(&queue, "q", 2, 60_000);
    queue.complete(l[0].job.id, l[0].lease_id, None).unwrap();
    let stats = queue.stats("q").unwrap();
    assert_eq!(
        (
            stats.scheduled,
            stats.ready,
            stats.leased,
            stats.completed,
            stats.dead,
            stats.cancelled
        ),
        (1, 3, 1, 1, 0, 0)
    );
    assert_eq!(stats.oldest_ready_age_ms, Some(3000));
    let names: Vec<String> = queue
        .queues()
        .unwrap()
        .into_iter()
        .map(|s| s.queue)
        .collect();
    assert_eq!(names, vec!["q".to_owned(), "z".to_owned()]);
}

// ---- dead letters ------------------------------------------------------------------

fn make_dead(queue: &Queue, name: &str, n: u64) -> Vec<JobId> {
    for i in 0..n {
        queue
            .enqueue(name, NewJob::new(payload(i)).max_attempts(1))
            .expect("make a dead job");
    }
    lease_n(queue, name, n as u32, 1000)
        .into_iter()
        .map(|l| {
            queue
                .fail(l.job.id, l.lease_id, &Failure::new("nope"))
                .expect("make a dead job")
                .id
        })
        .collect()
}

#[test]
fn dead_letters_page_oldest_first() {
    let (_dir, _clock, queue) = setup();
    let dead = make_dead(&queue, "q", 5);
    make_dead(&queue, "other", 2);
    enqueue_n(&queue, "q", 1);
    let page1 = queue.dead_letters("q", None, 2).unwrap();
    let ids1: Vec<JobId> = page1.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids1, dead[..2]);
    assert_eq!(page1.next, Some(dead[1]));
    let page2 = queue.dead_letters("q", page1.next, 2).unwrap();
    assert_eq!(
        page2.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        dead[2..4]
    );
    let page3 = queue.dead_letters("q", page2.next, 2).unwrap();
    assert_eq!(
        page3.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        dead[4..]
    );
    assert_eq!(page3.next, None);
    assert!(queue.dead_letters("q", None, 0).is_err());
    assert!(queue.dead_letters("q", None, 1001).is_err());
}

#[test]
fn requeue_some_or_all_dead_letters_then_purge() {
    let (_dir, clock, queue) = setup();
    let dead = make_dead(&queue, "q", 4);
    let other = make_dead(&queue, "other", 1);
    let ready = enqueue_n(&queue, "q", 1).remove(0);
    clock.advance(Duration::from_secs(1));

    // Ids that are not dead jobs of this queue are skipped.
    let n = queue
        .requeue_dead(
            "q",
            Some(&[dead[0], other[0], ready.id, JobId::from_u64(1 << 60)]),
        )
        .unwrap();
    assert_eq!(n, 1);
    let back = queue.get(dead[0]).unwrap().unwrap();
    assert_eq!(
        (back.state, back.attempts, back.run_at),
        (JobState::Ready, 0, T0 + 1000)
    );
    assert_eq!(state(&queue, other[0]), JobState::Dead);
    assert!(queue.requeue_dead("q", Some(&vec![dead[1]; 1001])).is_err());

    assert_eq!(queue.requeue_dead("q", None).unwrap(), 3);
    assert_eq!(queue.stats("q").unwrap().dead, 0);
    assert_eq!(queue.stats("q").unwrap().ready, 5);

    // Kill all five ready jobs again, permanently, then purge them.
    for l in lease_n(&queue, "q", 10, 1000) {
        queue
            .fail(l.job.id, l.lease_id, &Failure::new("x").permanent())
            .unwrap();
    }
    assert_eq!(queue.stats("q").unwrap().dead, 5);
    assert_eq!(queue.purge_dead("q").unwrap(), 5);
    assert_eq!(queue.stats("q").unwrap().dead, 0);
    assert_eq!(queue.get(dead[0]).unwrap(), None);
    assert_eq!(queue.stats("other").unwrap().dead, 1);
    assert_consistent(&queue);
}

// ---- retention ---------------------------------------------------------------------

#[test]
fn finished_jobs_are_removed_after_their_retention() {
    let (_dir, clock, queue) = setup();
    let jobs = enqueue_n(&queue, "q", 3);
    let l = lease_n(&queue, "q", 2, 1000);
    queue.complete(l[0].job.id, l[0].lease_id, None).unwrap();
    queue
        .fail(l[1].job.id, l[1].lease_id, &Failure::new("x").permanent())
        .unwrap();
    queue.cancel(jobs[2].id).unwrap();
    clock.advance(24 * HOUR - Duration::from_millis(1));
    assert_eq!(queue.run_due().unwrap().removed, 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(queue.run_due().unwrap().removed, 1, "completed after 24 h");
    assert_eq!(queue.get(l[0].job.id).unwrap(), None);
    clock.advance(6 * 24 * HOUR - Duration::from_millis(1));
    assert_eq!(queue.run_due().unwrap().removed, 0);
    clock.advance(Duration::from_millis(1));
    let report = queue.run_due().unwrap();
    assert_eq!(report.removed, 2, "dead and cancelled after 7 days");
    assert_eq!(report.next_due, None);
    assert_eq!(queue.verify().unwrap().jobs, 0);
    assert!(queue.queues().unwrap().is_empty());
    assert_consistent(&queue);
}

/// Regression: a terminal transition stored its retention deadline without
/// waking the timer, so on an idle queue a finished job stayed readable (and
/// a cancelled job's idempotency key kept replaying) until an unrelated
/// deadline woke the timer: here the lease deadline, a minute away.
///
/// Real time and the real background timer: a manual clock's advance wakes
/// the timer by itself and would hide the bug. Removal announces nothing,
/// so the test looks every few milliseconds, for at most ten seconds.
#[test]
fn retention_fires_on_an_idle_queue_through_the_background_timer() {
    let dir = tempfile::tempdir().unwrap();
    let short = Duration::from_millis(200);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .durability(queue_core::Durability::Periodic(10))
            .retention(Retention {
                completed: short,
                dead: short,
                cancelled: short,
            }),
    )
    .unwrap();
    let done = queue
        .enqueue("q", NewJob::new(payload(1)).idempotency_key("done"))
        .unwrap()
        .job;
    // The lease's own deadline is what the timer sleeps towards.
    let leased = lease_n(&queue, "q", 1, 60_000).remove(0);
    let cancelled = queue
        .enqueue("q", NewJob::new(payload(2)).idempotency_key("cancelled"))
        .unwrap()
        .job;
    queue.complete(done.id, leased.lease_id, None).unwrap();
    queue.cancel(cancelled.id).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.get(done.id).unwrap().is_some() || queue.get(cancelled.id).unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "finished jobs still stored 10 s after a retention of {short:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let again = queue
        .enqueue("q", NewJob::new(payload(3)).idempotency_key("cancelled"))
        .unwrap();
    assert!(!again.replayed, "the key is free once its job is gone");
    assert_consistent(&queue);
}

// ---- waiting -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_wakes_on_enqueue() {
    let (_dir, _clock, queue) = setup();
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .as_async()
                .lease_wait("q", &LeaseOptions::default(), Duration::from_secs(30))
                .await
        })
    };
    // Give the waiter no head start guarantee: it must work either way.
    tokio::task::yield_now().await;
    let job = queue.enqueue("q", NewJob::new(payload(1))).unwrap().job;
    let leased = waiter.await.unwrap().unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.id, job.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_times_out_empty() {
    let (_dir, _clock, queue) = setup();
    let got = queue
        .as_async()
        .lease_wait("q", &LeaseOptions::default(), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_wakes_when_the_timer_promotes_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual_with_timer(dir.path(), &clock);
    let job = queue
        .enqueue("q", NewJob::new(payload(1)).delay(Duration::from_secs(60)))
        .unwrap()
        .job;
    let mut events = queue.as_async().subscribe();
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .as_async()
                .lease_wait("q", &LeaseOptions::default(), Duration::from_secs(30))
                .await
        })
    };
    clock.advance(Duration::from_secs(60));
    let leased = waiter.await.unwrap().unwrap();
    assert_eq!(leased[0].job.id, job.id);
    let promoted = events.recv().await.unwrap();
    assert_eq!((promoted.id, promoted.state), (job.id, JobState::Ready));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_wakes_on_resume_and_release() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 1);
    queue.pause("q").unwrap();
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .as_async()
                .lease_wait("q", &LeaseOptions::default(), Duration::from_secs(30))
                .await
        })
    };
    queue.resume("q").unwrap();
    let leased = waiter.await.unwrap().unwrap().remove(0);

    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .as_async()
                .lease_wait("q", &LeaseOptions::default(), Duration::from_secs(30))
                .await
        })
    };
    queue.release(leased.job.id, leased.lease_id).unwrap();
    let again = waiter.await.unwrap().unwrap();
    assert_eq!(again[0].job.id, leased.job.id);
}

#[test]
fn lease_blocking_wakes_on_enqueue_from_another_thread() {
    let (_dir, _clock, queue) = setup();
    let waiter = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            queue.lease_wait("q", &LeaseOptions::default(), Duration::from_secs(30))
        })
    };
    let job = queue.enqueue("q", NewJob::new(payload(1))).unwrap().job;
    let leased = waiter.join().unwrap().unwrap();
    assert_eq!(leased[0].job.id, job.id);
    let empty = queue
        .lease_wait("q", &LeaseOptions::default(), Duration::from_millis(10))
        .unwrap();
    assert!(empty.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_terminal_returns_on_completion_or_timeout() {
    let (_dir, _clock, queue) = setup();
    let jobs = enqueue_n(&queue, "q", 2);
    let waiter = {
        let queue = queue.clone();
        let id = jobs[0].id;
        tokio::spawn(async move {
            queue
                .as_async()
                .wait_terminal(id, Duration::from_secs(30))
                .await
        })
    };
    let l = lease_n(&queue, "q", 2, 60_000);
    queue
        .complete(jobs[0].id, l[0].lease_id, Some(b"42".to_vec()))
        .unwrap();
    let done = waiter.await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result.as_deref(), Some(&b"42"[..]));

    let pending = queue
        .as_async()
        .wait_terminal(jobs[1].id, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(pending.state, JobState::Leased);
    assert!(matches!(
        queue
            .as_async()
            .wait_terminal(JobId::from_u64(1 << 62), Duration::from_millis(10))
            .await,
        Err(Error::NotFound { .. })
    ));
    let blocking = queue
        .wait_terminal(jobs[0].id, Duration::from_secs(1))
        .unwrap();
    assert_eq!(blocking.state, JobState::Completed);
}

#[test]
fn the_background_timer_expires_leases_on_a_manual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual_with_timer(dir.path(), &clock);
    let job = queue
        .enqueue("q", NewJob::new(payload(1)).max_attempts(1))
        .unwrap()
        .job;
    lease_n(&queue, "q", 1, 5_000);
    clock.advance(Duration::from_secs(5));
    let dead = queue
        .wait_terminal(job.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("lease expired"));
}

// ---- events ----------------------------------------------------------------------------

#[test]
fn events_follow_each_state_change() {
    let (_dir, clock, queue) = setup();
    let mut events = queue.subscribe();
    let job = enqueue_n(&queue, "q", 1).remove(0);
    let l = lease_n(&queue, "q", 1, 1000).remove(0);
    queue.heartbeat(job.id, l.lease_id, None).unwrap();
    queue.fail(job.id, l.lease_id, &Failure::new("x")).unwrap();
    clock.advance(HOUR);
    queue.run_due().unwrap();
    let l = lease_n(&queue, "q", 1, 1000).remove(0);
    queue.complete(job.id, l.lease_id, None).unwrap();
    let mut seen = Vec::new();
    while let Some(event) = events.try_recv().unwrap() {
        assert_eq!(event.id, job.id);
        seen.push((event.state, event.attempts));
    }
    assert_eq!(
        seen,
        vec![
            (JobState::Ready, 0),
            (JobState::Leased, 1),
            (JobState::Scheduled, 1),
            (JobState::Ready, 1),
            (JobState::Leased, 2),
            (JobState::Completed, 2),
        ],
        "a heartbeat is not a state change"
    );
}

#[test]
fn a_slow_subscriber_reads_the_log_and_never_blocks_writers() {
    let (_dir, _clock, queue) = setup();
    let mut slow = queue.subscribe();
    // Far more than the in-memory tail: writers go on regardless.
    let jobs = enqueue_n(&queue, "q", 5000);
    for job in &jobs {
        let event = slow.recv().unwrap();
        assert_eq!((event.id, event.state), (job.id, JobState::Ready));
    }
    assert_eq!(slow.try_recv().unwrap(), None);
}

#[test]
fn event_ids_increase_in_commit_order_and_resume_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (seen, resume_at) = {
        let queue = open_manual(dir.path(), &clock);
        let mut events = queue.subscribe();
        let jobs = enqueue_n(&queue, "q", 3);
        let leased = lease_n(&queue, "q", 1, 1000).remove(0);
        queue
            .complete(leased.job.id, leased.lease_id, None)
            .unwrap();
        let mut seen = Vec::new();
        while let Some(event) = events.try_recv().unwrap() {
            seen.push(event);
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[1].event_id == w[0].event_id + 1));
        assert_eq!(seen[4].id, jobs[0].id);
        (seen, events.position())
    };
    let queue = open_manual(dir.path(), &clock);
    // Resume after the second event: the rest, from disk, then live.
    let mut resumed = queue.subscribe_after(seen[1].event_id);
    for expected in &seen[2..] {
        assert_eq!(&resumed.recv().unwrap(), expected);
    }
    let job = enqueue_n(&queue, "q", 1).remove(0);
    let next = resumed.recv().unwrap();
    assert_eq!((next.id, next.event_id), (job.id, resume_at + 1));
}

#[test]
fn pruned_events_are_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .clock(clock.clone())
            .background_timers(false)
            .max_events(4),
    )
    .unwrap();
    let mut behind = queue.subscribe();
    let jobs = enqueue_n(&queue, "q", 10);
    assert_eq!(queue.run_due().unwrap().pruned_events, 6);
    assert_eq!(
        behind.recv(),
        Err(RecvError::Gap {
            after: 0,
            oldest: 7
        })
    );
    let next = behind.recv().unwrap();
    assert_eq!((next.event_id, next.id), (7, jobs[6].id));
    // Age prunes too.
    let queue = {
        drop(queue);
        Queue::open_with(
            Config::new(dir.path())
                .clock(clock.clone())
                .background_timers(false)
                .event_retention(Duration::from_secs(60)),
        )
        .unwrap()
    };
    clock.advance(Duration::from_secs(61));
    assert_eq!(queue.run_due().unwrap().pruned_events, 4);
    assert_eq!(
        queue.subscribe_after(8).recv(),
        Err(RecvError::Gap {
            after: 8,
            oldest: 11
        })
    );
    // An event after everything was pruned is the next one, and readable.
    let fresh = queue.enqueue("q", NewJob::new(payload(99))).unwrap().job;
    let mut late = queue.subscribe_after(8);
    assert_eq!(
        late.recv(),
        Err(RecvError::Gap {
            after: 8,
            oldest: 11
        })
    );
    let next = late.recv().unwrap();
    assert_eq!((next.event_id, next.id), (11, fresh.id));
    assert_consistent(&queue);
}

// ---- durability and restarts ---------------------------------------------------------

#[test]
fn reopening_keeps_jobs_leases_pauses_and_deadlines() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (held, scheduled, dead) = {
        let queue = open_manual(dir.path(), &clock);
        enqueue_n(&queue, "q", 3);
        let held = lease_n(&queue, "q", 1, 10_000).remove(0);
        let scheduled = queue
            .enqueue("q", NewJob::new(payload(7)).delay(Duration::from_secs(30)))
            .unwrap()
            .job;
        let dead = make_dead(&queue, "d", 1)[0];
        queue.pause("paused").unwrap();
        (held, scheduled, dead)
    };
    let queue = open_manual(dir.path(), &clock);
    assert_consistent(&queue);
    assert_eq!(queue.get(held.job.id).unwrap().unwrap(), held.job);
    assert!(queue.stats("paused").unwrap().paused);
    assert_eq!(queue.dead_letters("d", None, 10).unwrap().jobs[0].id, dead);
    // The stored deadlines still fire after the restart.
    clock.advance(Duration::from_secs(30));
    let report = queue.run_due().unwrap();
    assert_eq!((report.promoted, report.expired), (1, 1));
    assert_eq!(state(&queue, scheduled.id), JobState::Ready);
    assert!(matches!(
        queue.complete(held.job.id, held.lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    let next = enqueue_n(&queue, "q", 1).remove(0);
    assert!(next.id > scheduled.id, "ids are not reused after a restart");
    assert_consistent(&queue);
}

#[test]
fn periodic_durability_works_and_flushes_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<JobId> = {
        let queue = open_fast(dir.path());
        enqueue_n(&queue, "q", 50).iter().map(|j| j.id).collect()
    };
    let queue = open_fast(dir.path());
    for id in ids {
        assert_eq!(state(&queue, id), JobState::Ready);
    }
}

#[test]
fn concurrent_workers_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_fast(dir.path());
    let total = 400u64;
    enqueue_n(&queue, "q", total);
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                loop {
                    let leased = queue
                        .lease("q", &LeaseOptions::default().max_jobs(3))
                        .unwrap();
                    if leased.is_empty() {
                        return;
                    }
                    for l in leased {
                        let job = queue.complete(l.job.id, l.lease_id, None).unwrap();
                        done.lock().unwrap().push(job.id);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let done = done.lock().unwrap();
    let unique: HashSet<_> = done.iter().collect();
    assert_eq!(done.len() as u64, total, "every job completed exactly once");
    assert_eq!(unique.len() as u64, total);
    assert_eq!(queue.stats("q").unwrap().completed, total);
    assert_consistent(&queue);
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}

impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        queue_core::Clock::now_ms(self)
    }
}

#[test]
fn counters_total_the_transitions_and_time_the_runs() {
    let (_dir, clock, queue) = setup();
    let jobs = enqueue_n(&queue, "q", 3);
    queue
        .enqueue("q", NewJob::new(payload(9)).max_attempts(1))
        .unwrap();
    let l = lease_n(&queue, "q", 4, 1000);
    clock.advance(Duration::from_millis(40));
    queue.complete(l[0].job.id, l[0].lease_id, None).unwrap();
    queue.heartbeat(l[1].job.id, l[1].lease_id, None).unwrap();
    queue
        .fail(l[1].job.id, l[1].lease_id, &Failure::new("x"))
        .unwrap();
    queue.release(l[2].job.id, l[2].lease_id).unwrap();
    clock.advance(Duration::from_secs(2));
    queue.run_due().unwrap(); // l[3] (max 1 attempt) expires dead, l[1] promoted
    queue.cancel(jobs[2].id).unwrap();
    let c = queue.counters();
    assert_eq!(
        (c.enqueued, c.leased, c.completed, c.failed, c.released),
        (4, 4, 1, 1, 1)
    );
    assert_eq!((c.expired, c.dead, c.promoted, c.cancelled), (1, 1, 1, 1));
    assert_eq!(c.run_time_sum_ms, 40);
    let bucket = queue_core::RUN_TIME_BOUNDS_MS
        .iter()
        .position(|b| 40 <= *b)
        .unwrap();
    assert_eq!(c.run_time_buckets[bucket], 1);
    assert_eq!(c.run_time_buckets.iter().sum::<u64>(), 1);
}

#[test]
fn counters_are_kept_per_queue_and_time_the_queue_wait() {
    let (_dir, clock, queue) = setup();
    let wait_bucket = |ms: u64| {
        queue_core::WAIT_TIME_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap()
    };
    // "a": two jobs, leased after 30 ms.
    enqueue_n(&queue, "a", 2);
    // "b": one due in 100 ms, promoted late (at 250 ms): it waits from its
    // run_at, so 150 ms, timer lag included.
    queue
        .enqueue(
            "b",
            NewJob::new(payload(1)).delay(Duration::from_millis(100)),
        )
        .unwrap();
    // "c": one that is never leased; its queue is counted all the same.
    enqueue_n(&queue, "c", 1);
    clock.advance(Duration::from_millis(30));
    let a = lease_n(&queue, "a", 1, 10_000);
    clock.advance(Duration::from_millis(220));
    queue.run_due().unwrap();
    let b = lease_n(&queue, "b", 1, 10_000);
    // Released after 40 ms and leased again 70 ms later: it waits 70 ms
    // (from its release, not from its run_at).
    clock.advance(Duration::from_millis(40));
    queue.release(b[0].job.id, b[0].lease_id).unwrap();
    clock.advance(Duration::from_millis(70));
    let b = lease_n(&queue, "b", 1, 10_000);
    clock.advance(Duration::from_millis(5));
    queue.complete(b[0].job.id, b[0].lease_id, None).unwrap();
    queue
        .fail(a[0].job.id, a[0].lease_id, &Failure::new("x").permanent())
        .unwrap();

    let by_queue = queue.queue_counters();
    assert_eq!(by_queue.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    let (a, b, c) = (&by_queue["a"], &by_queue["b"], &by_queue["c"]);
    assert_eq!(
        (a.enqueued, a.leased, a.failed, a.dead, a.completed),
        (2, 1, 1, 1, 0)
    );
    assert_eq!(
        (b.enqueued, b.promoted, b.leased, b.released, b.completed),
        (1, 1, 2, 1, 1)
    );
    assert_eq!((c.enqueued, c.leased), (1, 0));
    // Waits: a 30 ms; b 150 ms then 70 ms.
    assert_eq!(a.wait_time_sum_ms, 30);
    assert_eq!(a.wait_time_buckets[wait_bucket(30)], 1);
    assert_eq!(a.wait_time_buckets.iter().sum::<u64>(), 1);
    assert_eq!(b.wait_time_sum_ms, 220);
    assert_eq!(b.wait_time_buckets[wait_bucket(150)], 1);
    assert_eq!(b.wait_time_buckets[wait_bucket(70)], 1);
    assert_eq!(b.wait_time_buckets.iter().sum::<u64>(), 2);
    assert_eq!(c.wait_time_buckets.iter().sum::<u64>(), 0);
    // Run time: b's second attempt, 5 ms.
    assert_eq!((b.run_time_sum_ms, a.run_time_sum_ms), (5, 0));
    // The totals are their sum.
    let total = queue.counters();
    assert_eq!(
        (total.enqueued, total.leased, total.wait_time_sum_ms),
        (4, 3, 250)
    );
    assert_eq!(total.wait_time_buckets.iter().sum::<u64>(), 3);
}

/// Regression: leases scanned candidates outside the write batch, so under
/// contention a lease could lose every candidate to concurrent leasers and
/// come back empty while jobs were ready.
#[test]
fn a_lease_under_contention_never_comes_back_empty_while_jobs_are_ready() {
    let dir = tempfile::tempdir().unwrap();
    // Durable commits make large batches, where many leasers race for the
    // head of the queue at once: the condition the bug needed.
    let queue = Queue::open(dir.path()).unwrap();
    let total = 2000usize;
    let batch: Vec<NewJob> = (0..1000).map(|n| NewJob::new(payload(n))).collect();
    queue.enqueue_batch("q", batch.clone()).unwrap();
    queue.enqueue_batch("q", batch).unwrap();
    let claimed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (queue, claimed) = (queue.clone(), Arc::clone(&claimed));
            std::thread::spawn(move || {
                // Each claim stands for one ready job, so each lease must
                // find one.
                while claimed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                    let leased = queue.lease("q", &LeaseOptions::default()).unwrap();
                    assert_eq!(leased.len(), 1, "a lease came back empty with jobs ready");
                    queue
                        .complete(leased[0].job.id, leased[0].lease_id, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(queue.stats("q").unwrap().completed, total as u64);
    assert_consistent(&queue);
}

#[tokio::test(flavor = "current_thread")]
async fn async_operations_share_batches_on_a_single_threaded_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    // 40 tasks on one thread: each enqueues, leases and completes a job of
    // its own queue. They can only all finish if no call blocks the thread.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let name = format!("q{i}");
                let job = queue
                    .as_async()
                    .enqueue(&name, NewJob::new(payload(i)))
                    .await
                    .unwrap()
                    .job;
                let leased = queue
                    .as_async()
                    .lease(&name, &LeaseOptions::default())
                    .await
                    .unwrap()
                    .remove(0);
                assert_eq!(leased.job.id, job.id);
                queue
                    .as_async()
                    .heartbeat(job.id, leased.lease_id, None)
                    .await
                    .unwrap();
                let done = queue
                    .as_async()
                    .complete(job.id, leased.lease_id, None)
                    .await
                    .unwrap();
                assert_eq!(done.state, JobState::Completed);
                assert!(matches!(
                    queue.as_async().release(job.id, leased.lease_id).await,
                    Err(Error::LeaseLost { .. })
                ));
                done.id
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 40);
    let batch = queue
        .as_async()
        .enqueue_batch("b", vec![NewJob::new(payload(1)), NewJob::new(payload(2))])
        .await
        .unwrap();
    let leased = queue
        .as_async()
        .lease("b", &LeaseOptions::default().max_jobs(2))
        .await
        .unwrap();
    let failed = queue
        .as_async()
        .fail(
            leased[0].job.id,
            leased[0].lease_id,
            &Failure::new("x").permanent(),
        )
        .await
        .unwrap();
    assert_eq!(failed.state, JobState::Dead);
    let cancelled = queue.as_async().cancel(batch[1].job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(matches!(
        queue.as_async().cancel(batch[1].job.id).await,
        Err(Error::Conflict { .. })
    ));
    assert_consistent(&queue);
}

// ---- timeouts and time-to-live -----------------------------------------------------------

#[test]
fn a_worker_that_keeps_heartbeating_still_loses_its_lease_at_the_timeout() {
    let (_dir, clock, queue) = setup();
    let job = queue
        .enqueue(
            "q",
            NewJob::new(payload(1))
                .timeout(Duration::from_secs(45))
                .max_attempts(2),
        )
        .unwrap()
        .job;
    assert_eq!(job.timeout_ms, Some(45_000));
    let held = lease_n(&queue, "q", 1, 30_000).remove(0);
    assert_eq!(held.job.started_at, Some(T0));
    assert_eq!(held.job.lease_expires_at(), Some(T0 + 30_000));
    for _ in 0..4 {
        clock.advance(Duration::from_secs(10));
        match queue.heartbeat(job.id, held.lease_id, Some(60_000)) {
            Ok(beat) => assert!(beat.lease_expires_at().unwrap() <= T0 + 45_000),
            Err(Error::LeaseLost { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    // 40 s in: the lease ends at the timeout, not later.
    assert_eq!(
        queue.get(job.id).unwrap().unwrap().lease_expires_at(),
        Some(T0 + 45_000)
    );
    clock.advance(Duration::from_secs(5));
    assert!(matches!(
        queue.heartbeat(job.id, held.lease_id, None),
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(queue.run_due().unwrap().expired, 1);
    let failed = queue.get(job.id).unwrap().unwrap();
    assert_eq!(failed.state, JobState::Scheduled);
    assert_eq!(failed.attempts, 1, "the attempt is counted");
    assert_eq!(
        failed.last_error.as_deref(),
        Some("timed out after 45000 ms")
    );
    // The next attempt has its own timeout, counted from its own start.
    clock.advance(HOUR);
    queue.run_due().unwrap();
    let again = lease_n(&queue, "q", 1, 60_000).remove(0);
    let started = T0 + 45_000 + HOUR.as_millis() as u64;
    assert_eq!(again.job.started_at, Some(started));
    assert_eq!(again.job.lease_expires_at(), Some(started + 45_000));
    clock.advance(Duration::from_secs(45));
    queue.run_due().unwrap();
    let dead = queue.get(job.id).unwrap().unwrap();
    assert_eq!(
        (dead.state, dead.attempts, dead.last_error.as_deref()),
        (JobState::Dead, 2, Some("timed out after 45000 ms"))
    );
    assert_consistent(&queue);
}

#[test]
fn a_job_not_leased_by_its_expiry_is_dead_and_a_leased_one_runs_on() {
    let (_dir, clock, queue) = setup();
    let mut events = queue.subscribe();
    let late = queue
        .enqueue("q", NewJob::new(payload(1)).ttl(Duration::from_secs(60)))
        .unwrap()
        .job;
    assert_eq!(late.expires_at, Some(T0 + 60_000));
    let delayed = queue
        .enqueue(
            "q",
            NewJob::new(payload(2))
                .delay(Duration::from_secs(120))
                .expires_at(T0 + 90_000),
        )
        .unwrap()
        .job;
    let taken = queue
        .enqueue("busy", NewJob::new(payload(3)).ttl(Duration::from_secs(60)))
        .unwrap()
        .job;
    let held = lease_n(&queue, "busy", 1, 600_000).remove(0);
    clock.advance(Duration::from_secs(59));
    assert_eq!(queue.run_due().unwrap().ttl_expired, 0);
    clock.advance(Duration::from_secs(1));
    // Past its expiry a job is not leased, even before the timer runs.
    assert!(lease_n(&queue, "q", 10, 1000).is_empty());
    let report = queue.run_due().unwrap();
    assert_eq!(report.ttl_expired, 1);
    let dead = queue.get(late.id).unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("expired before it ran"));
    assert_eq!(dead.finished_at, Some(T0 + 60_000));
    assert_eq!(dead.attempts, 0);
    // The scheduled job dies at its own expiry, before its run_at.
    clock.advance(Duration::from_secs(30));
    assert_eq!(queue.run_due().unwrap().ttl_expired, 1);
    assert_eq!(
        queue.get(delayed.id).unwrap().unwrap().state,
        JobState::Dead
    );
    // The leased one is not affected and completes.
    let done = queue.complete(taken.id, held.lease_id, None).unwrap();
    assert_eq!(done.state, JobState::Completed);
    let mut dead_events = 0;
    while let Some(event) = events.try_recv().unwrap() {
        if event.state == JobState::Dead {
            assert_eq!(event.transition, Transition::Ttl);
            assert_eq!(event.last_error.as_deref(), Some("expired before it ran"));
            dead_events += 1;
        }
    }
    assert_eq!(dead_events, 2);
    // Requeued by an operator, it runs: the ended expiry is dropped.
    let back = queue.requeue_dead("q", Some(&[late.id])).unwrap();
    assert_eq!(back, 1);
    assert_eq!(lease_n(&queue, "q", 1, 1000).remove(0).job.id, late.id);
    assert_consistent(&queue);
}

#[test]
fn expiries_and_timeouts_are_stored_deadlines_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (expiring, timed) = {
        let queue = open_manual(dir.path(), &clock);
        let expiring = queue
            .enqueue("q", NewJob::new(payload(1)).ttl(Duration::from_secs(10)))
            .unwrap()
            .job;
        let timed = queue
            .enqueue(
                "t",
                NewJob::new(payload(2))
                    .timeout(Duration::from_secs(5))
                    .max_attempts(1),
            )
            .unwrap()
            .job;
        lease_n(&queue, "t", 1, 600_000);
        (expiring, timed)
    };
    clock.advance(Duration::from_secs(10));
    // Reopened with the background timer: it finds both deadlines passed.
    let queue = open_manual_with_timer(dir.path(), &clock);
    let dead = queue
        .wait_terminal(expiring.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("expired before it ran"));
    let dead = queue
        .wait_terminal(timed.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        (dead.state, dead.last_error.as_deref()),
        (JobState::Dead, Some("timed out after 5000 ms"))
    );
    assert_consistent(&queue);
}

#[test]
fn timeout_and_expiry_options_are_checked() {
    let (_dir, _clock, queue) = setup();
    let refused = |job: NewJob| match queue.enqueue("q", job) {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(NewJob::new(payload(1)).timeout(Duration::ZERO)),
        "timeout_ms"
    );
    assert_eq!(
        refused(NewJob::new(payload(1)).timeout(Duration::from_millis(43_200_001))),
        "timeout_ms"
    );
    let mut both = NewJob::new(payload(1)).ttl(Duration::from_secs(1));
    both.expires_at = Some(T0);
    assert_eq!(refused(both), "ttl_ms");
    assert_eq!(
        refused(NewJob::new(payload(1)).expires_at(T0 + 11 * 365 * 24 * 3_600_000)),
        "expires_at"
    );
    assert_eq!(refused(NewJob::new(payload(1)).group("")), "group");
    assert_eq!(
        refused(NewJob::new(payload(1)).group("g".repeat(129))),
        "group"
    );
    assert_eq!(queue.verify().unwrap().jobs, 0);
}

// ---- why a lease is refused ------------------------------------------------

/// The reason a refused lease id carries, from `result`.
fn refused_because(result: queue_core::Result<queue_core::Job>) -> LeaseLostReason {
    match result {
        Err(Error::LeaseLost { reason, .. }) => reason,
        other => panic!("expected lease_lost, got {other:?}"),
    }
}

#[test]
fn a_refused_lease_says_why() {
    let (_dir, clock, queue) = setup();
    let jobs = enqueue_n(&queue, "why", 2);
    let leased = lease_n(&queue, "why", 2, 1000);
    let (a, b) = (&leased[0], &leased[1]);
    // Another job's lease: not this job's current lease.
    assert_eq!(
        refused_because(queue.complete(a.job.id, b.lease_id, None)),
        LeaseLostReason::NotCurrent
    );
    // Past the deadline, before the timer reaps it: expired.
    clock.advance(Duration::from_millis(1000));
    assert_eq!(
        refused_because(queue.heartbeat(a.job.id, a.lease_id, None)),
        LeaseLostReason::Expired
    );
    // Reaped: the job is ready again (a retry is scheduled or ready).
    queue.run_due().expect("timers");
    match refused_because(queue.release(a.job.id, a.lease_id)) {
        LeaseLostReason::NotLeased(state) => {
            assert!(matches!(state, JobState::Ready | JobState::Scheduled));
        }
        other => panic!("expected not leased, got {other:?}"),
    }
    // Finished: says the job's state.
    queue.cancel(jobs[1].id).expect("cancel");
    let refused = queue.complete(b.job.id, b.lease_id, None);
    let message = refused.as_ref().map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        refused_because(refused),
        LeaseLostReason::Finished(JobState::Cancelled)
    );
    assert!(message.contains("cancelled"), "{message}");
}

#[test]
fn a_malformed_lease_id_is_called_malformed() {
    let (_dir, _clock, queue) = setup();
    let job = enqueue_n(&queue, "why", 1).remove(0);
    let service = queue_core::service::Service::new(queue.as_async().clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = runtime
        .block_on(service.complete(
            &job.id.to_string(),
            queue_proto::CompleteRequest {
                lease_id: "not-a-lease".into(),
                result: None,
            },
        ))
        .expect_err("refused");
    assert_eq!(refused.code, queue_proto::ErrorCode::LeaseLost);
    assert!(refused.message.contains("malformed"), "{}", refused.message);
}

// ---- commit statistics -----------------------------------------------------

#[test]
fn the_store_counts_its_batches_commits_and_syncs() {
    use queue_core::Durability;
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open_with(Config::new(dir.path()).durability(Durability::Sync)).unwrap();
    let before = queue.commit_stats().expect("the embedded store counts");
    for _ in 0..5 {
        queue.enqueue("q", NewJob::new(payload(1))).unwrap();
    }
    let alone = queue.commit_stats().unwrap().since(&before);
    // One caller: each enqueue is a batch of its own, committed alone, and
    // waits for its own fdatasync.
    assert_eq!(
        (
            alone.batches,
            alone.batch_operations,
            alone.commits,
            alone.commit_operations,
            alone.fdatasyncs
        ),
        (5, 5, 5, 5, 5),
        "{alone:?}"
    );
    assert!(!alone.batch_time.is_zero(), "{alone:?}");
    assert!(alone.commit_time >= alone.fdatasync_time, "{alone:?}");
    assert!(!alone.fdatasync_time.is_zero(), "{alone:?}");

    // Concurrent callers: every operation counted once, in as many batches
    // as the leader made of them, each commit synced once.
    let before = queue.commit_stats().unwrap();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..25 {
                    queue.enqueue("q", NewJob::new(payload(1))).unwrap();
                }
            });
        }
    });
    let together = queue.commit_stats().unwrap().since(&before);
    assert_eq!(together.batch_operations, 200, "{together:?}");
    assert_eq!(together.commit_operations, 200, "{together:?}");
    assert!(
        (1..=200).contains(&together.batches) && together.commits <= together.batches,
        "{together:?}"
    );
    assert_eq!(together.fdatasyncs, together.commits, "{together:?}");
    drop(queue);

    // Periodic: commits are answered without a sync; the flush syncs the
    // journal's two files.
    let dir = tempfile::tempdir().expect("tempdir");
    let queue =
        Queue::open_with(Config::new(dir.path()).durability(Durability::Periodic(3_600_000)))
            .unwrap();
    let before = queue.commit_stats().unwrap();
    for _ in 0..3 {
        queue.enqueue("q", NewJob::new(payload(1))).unwrap();
    }
    let unsynced = queue.commit_stats().unwrap().since(&before);
    assert_eq!(
        (unsynced.batches, unsynced.commits, unsynced.fdatasyncs),
        (3, 3, 0),
        "{unsynced:?}"
    );
    queue.flush().unwrap();
    let flushed = queue.commit_stats().unwrap().since(&before);
    assert_eq!(flushed.fdatasyncs, 2, "{flushed:?}");
}
