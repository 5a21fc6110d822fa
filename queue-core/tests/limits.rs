//! Queue limits (`max_leased`, `rate_limit`, `group_max_leased`): stored,
//! validated and durable; held by every lease round under many concurrent
//! leasers; FIFO per group; and the lease order with groups checked
//! against a model by random operation sequences.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};
use queue_core::blocking::Queue;
use queue_core::{
    Clock, Error, Job, JobId, JobState, LeaseOptions, ManualClock, NewJob, PatchQueueRequest,
    QueueLimits, RateLimit,
};

use crate::common::{T0, assert_consistent, open_fast, open_manual, payload};

fn limits(
    max_leased: Option<u32>,
    rate: Option<(u32, u64)>,
    group_max_leased: Option<u32>,
) -> PatchQueueRequest {
    PatchQueueRequest {
        paused: None,
        max_leased: Some(max_leased),
        rate_limit: Some(rate.map(|(jobs, per_ms)| RateLimit { jobs, per_ms })),
        group_max_leased: Some(group_max_leased),
    }
}

fn grouped(n: u64, group: &str) -> NewJob {
    NewJob::new(payload(n)).group(group)
}

fn lease(queue: &Queue, name: &str, max_jobs: u32) -> Vec<queue_core::Leased> {
    queue
        .lease(name, &LeaseOptions::default().max_jobs(max_jobs))
        .expect("lease")
}

// ---- stored and validated ----------------------------------------------------

#[test]
fn limits_are_stored_shown_in_stats_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let queue = open_manual(dir.path(), &clock);
        queue.enqueue("q", NewJob::new(payload(0))).unwrap();
        let stats = queue
            .update_queue("q", &limits(Some(32), Some((3, 1000)), Some(1)))
            .unwrap();
        let expected = QueueLimits {
            max_leased: Some(32),
            rate_limit: Some(RateLimit {
                jobs: 3,
                per_ms: 1000,
            }),
            group_max_leased: Some(1),
        };
        assert_eq!(stats.limits, expected);
        assert_eq!(stats.ready, 1);
        // A field absent keeps its value; null removes.
        let stats = queue
            .update_queue(
                "q",
                &PatchQueueRequest {
                    group_max_leased: Some(None),
                    ..PatchQueueRequest::default()
                },
            )
            .unwrap();
        assert_eq!(stats.limits.max_leased, Some(32));
        assert_eq!(stats.limits.group_max_leased, None);
        // Two of the bucket's three tokens are spent before the restart.
        for n in 1..=3 {
            queue.enqueue("q", NewJob::new(payload(n))).unwrap();
        }
        assert_eq!(lease(&queue, "q", 2).len(), 2);
        assert_consistent(&queue);
    }
    let queue = open_manual(dir.path(), &clock);
    let stats = queue.stats("q").unwrap();
    assert_eq!(stats.limits.max_leased, Some(32));
    assert_eq!(stats.limits.rate_limit.map(|r| r.jobs), Some(3));
    assert_eq!(queue.queues().unwrap().len(), 1);
    // The bucket's state survived: one token left, not a fresh three.
    assert_eq!(lease(&queue, "q", 10).len(), 1);
    assert!(lease(&queue, "q", 10).is_empty());
    clock.advance(Duration::from_millis(334));
    assert_eq!(lease(&queue, "q", 10).len(), 1);
    assert_consistent(&queue);
}

#[test]
fn a_limit_out_of_bounds_names_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    let before = queue
        .update_queue("q", &limits(Some(5), None, None))
        .unwrap();
    let bad = [
        (limits(Some(0), None, None), "max_leased"),
        (limits(Some(1_000_001), None, None), "max_leased"),
        (limits(None, Some((0, 1000)), None), "rate_limit.jobs"),
        (limits(None, Some((1, 0)), None), "rate_limit.per_ms"),
        (
            limits(None, Some((1, 86_400_001)), None),
            "rate_limit.per_ms",
        ),
        (limits(None, None, Some(0)), "group_max_leased"),
        // A good field beside a bad one is not applied either.
        (limits(Some(7), None, Some(2_000_000)), "group_max_leased"),
    ];
    for (update, field) in bad {
        match queue.update_queue("q", &update) {
            Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(queue.stats("q").unwrap(), before);
    }
    assert!(matches!(
        queue.update_queue("bad name", &PatchQueueRequest::default()),
        Err(Error::InvalidArgument { field: "queue", .. })
    ));
}

// ---- each limit ----------------------------------------------------------------

#[test]
fn max_leased_counts_every_leased_job_of_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    for n in 0..10 {
        queue.enqueue("q", NewJob::new(payload(n))).unwrap();
    }
    queue.enqueue("other", NewJob::new(payload(99))).unwrap();
    queue
        .update_queue("q", &limits(Some(3), None, None))
        .unwrap();
    let first = lease(&queue, "q", 2);
    assert_eq!(first.len(), 2);
    assert_eq!(lease(&queue, "q", 10).len(), 1);
    assert!(lease(&queue, "q", 10).is_empty());
    // Another queue is not limited by it.
    assert_eq!(lease(&queue, "other", 10).len(), 1);
    queue
        .complete(first[0].job.id, first[0].lease_id, None)
        .unwrap();
    assert_eq!(lease(&queue, "q", 10).len(), 1);
    // Lowered below the number leased: nothing until enough finish.
    queue
        .update_queue("q", &limits(Some(1), None, None))
        .unwrap();
    queue.release(first[1].job.id, first[1].lease_id).unwrap();
    assert!(lease(&queue, "q", 10).is_empty());
    // Removed: everything ready.
    queue.update_queue("q", &limits(None, None, None)).unwrap();
    assert_eq!(lease(&queue, "q", 100).len(), 7);
    assert_consistent(&queue);
}

#[test]
fn groups_run_one_at_a_time_in_lease_order_and_do_not_hold_each_other_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue
        .update_queue("q", &limits(None, None, Some(1)))
        .unwrap();
    let a: Vec<Job> = (0..3)
        .map(|n| queue.enqueue("q", grouped(n, "a")).unwrap().job)
        .collect();
    let b = queue.enqueue("q", grouped(10, "b")).unwrap().job;
    let free: Vec<Job> = (0..2)
        .map(|n| {
            queue
                .enqueue("q", NewJob::new(payload(20 + n)))
                .unwrap()
                .job
        })
        .collect();
    // One of a, one of b, and every job without a group.
    let ids: Vec<JobId> = lease(&queue, "q", 10).iter().map(|l| l.job.id).collect();
    assert_eq!(ids, vec![a[0].id, b.id, free[0].id, free[1].id]);
    assert!(lease(&queue, "q", 10).is_empty());
    let stats = queue.stats("q").unwrap();
    assert_eq!((stats.ready, stats.leased), (2, 4));
    assert_consistent(&queue);
    // A higher priority job of a waits for the leased one, then goes first.
    let urgent = queue
        .enqueue("q", grouped(30, "a").priority(5))
        .unwrap()
        .job;
    assert!(lease(&queue, "q", 10).is_empty());
    let held = queue.get(a[0].id).unwrap().unwrap();
    let lease_id = held.lease.unwrap().id;
    queue
        .fail(
            a[0].id,
            lease_id,
            &queue_core::Failure::new("x").retry_in(Duration::from_secs(60)),
        )
        .unwrap();
    let next: Vec<JobId> = lease(&queue, "q", 10).iter().map(|l| l.job.id).collect();
    assert_eq!(next, vec![urgent.id]);
    assert_consistent(&queue);
}

#[test]
fn a_busy_group_with_many_ready_jobs_does_not_hide_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_fast(dir.path());
    queue
        .update_queue("q", &limits(None, None, Some(1)))
        .unwrap();
    let busy: Vec<NewJob> = (0..1000).map(|n| grouped(n, "busy")).collect();
    queue.enqueue_batch("q", busy).unwrap();
    let others: Vec<NewJob> = (0..50).map(|n| grouped(n, &format!("g{n}"))).collect();
    queue.enqueue_batch("q", others).unwrap();
    // The busy group's head and then one job of each other group, in
    // enqueue order, with its 999 other jobs skipped at the cost of one
    // index entry.
    let leased = lease(&queue, "q", 1000);
    assert_eq!(leased.len(), 51);
    assert_eq!(leased[0].job.group.as_deref(), Some("busy"));
    for (n, l) in leased[1..].iter().enumerate() {
        assert_eq!(l.job.group.as_deref(), Some(format!("g{n}").as_str()));
    }
    assert!(lease(&queue, "q", 1000).is_empty());
    // Without the limit the busy group's jobs follow in order.
    queue.update_queue("q", &limits(None, None, None)).unwrap();
    let rest = lease(&queue, "q", 1000);
    assert_eq!(rest.len(), 999);
    assert!(rest.windows(2).all(|w| w[0].job.id < w[1].job.id));
    assert_consistent(&queue);
}

// ---- under concurrency ----------------------------------------------------------

/// Runs `threads` workers that lease (up to `max_jobs` at once) and
/// complete until `total` jobs are done or the time limit passes; each
/// records what it holds in `held` around the lease and the completion, and
/// `check` sees every new lease.
fn run_workers(
    queue: &Queue,
    name: &str,
    threads: usize,
    total: u64,
    check: impl Fn(&[queue_core::Leased]) + Send + Sync,
    release_hold: impl Fn(&queue_core::Leased) + Send + Sync,
) {
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (done, check, release_hold) = (&done, &check, &release_hold);
            scope.spawn(move || {
                let opts = LeaseOptions::default().max_jobs(1 + (t as u32 % 4));
                while done.load(Ordering::SeqCst) < total
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let leased = queue
                        .lease_wait(name, &opts, Duration::from_millis(200))
                        .expect("lease");
                    check(&leased);
                    for l in &leased {
                        release_hold(l);
                        queue
                            .complete(l.job.id, l.lease_id, None)
                            .expect("complete");
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(
        done.load(Ordering::SeqCst),
        total,
        "every job was done in time"
    );
}

#[test]
fn max_leased_and_group_max_leased_hold_under_many_concurrent_leasers() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_fast(dir.path());
    const MAX: u64 = 6;
    const GROUP_MAX: u64 = 2;
    queue
        .update_queue("q", &limits(Some(MAX as u32), None, Some(GROUP_MAX as u32)))
        .unwrap();
    let jobs: Vec<NewJob> = (0..400)
        .map(|n| match n % 3 {
            0 => NewJob::new(payload(n)),
            g => grouped(n, &format!("g{g}")),
        })
        .collect();
    queue.enqueue_batch("q", jobs).unwrap();
    // Counted up after a lease returns and down before its completion is
    // sent: never more than what is really leased, so a count above the
    // limit is a limit broken.
    let held = AtomicU64::new(0);
    let held_by_group: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let peak = AtomicU64::new(0);
    run_workers(
        &queue,
        "q",
        12,
        400,
        |leased| {
            let now = held.fetch_add(leased.len() as u64, Ordering::SeqCst) + leased.len() as u64;
            assert!(now <= MAX, "{now} leased at once, max_leased is {MAX}");
            peak.fetch_max(now, Ordering::SeqCst);
            let mut groups = held_by_group.lock().unwrap();
            for l in leased {
                if let Some(group) = &l.job.group {
                    let count = groups.entry(group.clone()).or_default();
                    *count += 1;
                    assert!(
                        *count <= GROUP_MAX,
                        "{count} of group {group} leased at once"
                    );
                }
            }
            drop(groups);
            let stats = queue.stats("q").unwrap();
            assert!(stats.leased <= MAX, "stats say {} leased", stats.leased);
        },
        |l| {
            if let Some(group) = &l.job.group {
                *held_by_group.lock().unwrap().get_mut(group).unwrap() -= 1;
            }
            held.fetch_sub(1, Ordering::SeqCst);
        },
    );
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "the workers ran concurrently"
    );
    assert_eq!(queue.stats("q").unwrap().completed, 400);
    assert_consistent(&queue);
}

#[test]
fn groups_with_limit_one_complete_in_enqueue_order_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open_fast(dir.path());
    queue
        .update_queue("q", &limits(None, None, Some(1)))
        .unwrap();
    let mut expected: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
    // Interleaved groups.
    for n in 0..300u64 {
        let group = format!("g{}", n % 7);
        let job = queue.enqueue("q", grouped(n, &group)).unwrap().job;
        expected.entry(group).or_default().push(job.id);
    }
    let order: Mutex<BTreeMap<String, Vec<JobId>>> = Mutex::new(BTreeMap::new());
    run_workers(
        &queue,
        "q",
        10,
        300,
        |_| {},
        |l| {
            // Recorded before the completion is sent: the group's next job
            // cannot be leased before it is committed.
            let group = l.job.group.clone().expect("grouped");
            order
                .lock()
                .unwrap()
                .entry(group)
                .or_default()
                .push(l.job.id);
        },
    );
    assert_eq!(order.into_inner().unwrap(), expected);
    assert_consistent(&queue);
}

#[test]
fn the_token_bucket_is_never_exceeded_by_concurrent_leasers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    // Capacity 4, refilled at 4 per 100 ms: one token every 25 ms.
    const JOBS: u64 = 4;
    const PER_MS: u64 = 100;
    queue
        .update_queue("q", &limits(None, Some((JOBS as u32, PER_MS)), None))
        .unwrap();
    let jobs: Vec<NewJob> = (0..200).map(|n| NewJob::new(payload(n))).collect();
    queue.enqueue_batch("q", jobs).unwrap();
    let granted = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..8u32 {
            let (queue, granted, calls, stop, clock) = (&queue, &granted, &calls, &stop, &clock);
            scope.spawn(move || {
                let opts = LeaseOptions::default().max_jobs(1 + t % 3);
                while !stop.load(Ordering::SeqCst) {
                    let leased = queue.lease("q", &opts).expect("lease");
                    calls.fetch_add(1, Ordering::SeqCst);
                    let total = granted.fetch_add(leased.len() as u64, Ordering::SeqCst)
                        + leased.len() as u64;
                    // The clock only moves forward: the bound read after the
                    // lease is at least the one in force when it was granted.
                    let elapsed = clock.now_ms() - T0;
                    let allowed = JOBS + elapsed * JOBS / PER_MS;
                    assert!(
                        total <= allowed,
                        "{total} granted, {allowed} allowed at +{elapsed} ms"
                    );
                    for l in leased {
                        queue
                            .complete(l.job.id, l.lease_id, None)
                            .expect("complete");
                    }
                }
            });
        }
        // Time moves in uneven steps while the leasers run: each step once
        // the leasers made several calls at the current time.
        let started = Instant::now();
        for step in 0..60u64 {
            let seen = calls.load(Ordering::SeqCst);
            while calls.load(Ordering::SeqCst) < seen + 8
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::yield_now();
            }
            clock.advance(Duration::from_millis(1 + step % 13));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = clock.now_ms() - T0;
    let total = granted.load(Ordering::SeqCst);
    assert!(total <= JOBS + elapsed * JOBS / PER_MS);
    assert!(total >= JOBS, "the bucket's capacity was granted");
    assert_eq!(queue.stats("q").unwrap().completed, total);
    assert_consistent(&queue);
}

// ---- lease order with groups, against a model --------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        group: Option<u8>,
        priority: i32,
    },
    Lease {
        max_jobs: u32,
    },
    Complete {
        pick: usize,
    },
    Release {
        pick: usize,
    },
    Limits {
        max_leased: Option<u32>,
        group_max_leased: Option<u32>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::weighted(0.8, 0u8..4), -1i32..=1)
            .prop_map(|(group, priority)| Op::Enqueue { group, priority }),
        3 => (1u32..6).prop_map(|max_jobs| Op::Lease { max_jobs }),
        2 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (proptest::option::of(1u32..6), proptest::option::of(1u32..3))
            .prop_map(|(max_leased, group_max_leased)| Op::Limits { max_leased, group_max_leased }),
        1 => Just(Op::Reopen),
    ]
}

/// What a lease must return: the ready jobs in lease order (priority,
/// run_at, id), each taken while the queue and its group have room.
fn expected_lease(
    jobs: &[Job],
    max_jobs: u32,
    max_leased: Option<u32>,
    group_max: Option<u32>,
) -> Vec<JobId> {
    let mut ready: Vec<&Job> = jobs.iter().filter(|j| j.state == JobState::Ready).collect();
    ready.sort_by_key(|j| (-i64::from(j.priority), j.run_at, j.id));
    let leased = jobs.iter().filter(|j| j.state == JobState::Leased).count() as u64;
    let mut room = u64::from(max_jobs);
    if let Some(max) = max_leased {
        room = room.min(u64::from(max).saturating_sub(leased));
    }
    let mut by_group: HashMap<&str, u64> = HashMap::new();
    for j in jobs.iter().filter(|j| j.state == JobState::Leased) {
        if let Some(g) = &j.group {
            *by_group.entry(g).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for job in ready {
        if out.len() as u64 >= room {
            break;
        }
        if let (Some(g), Some(max)) = (&job.group, group_max) {
            let count = by_group.entry(g).or_default();
            if *count >= u64::from(max) {
                continue;
            }
            *count += 1;
        }
        out.push(job.id);
    }
    out
}

fn run_sequence(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("model step");
    let clock = ManualClock::new(T0);
    let mut queue = Some(open_manual(dir.path(), &clock));
    let mut ids: Vec<JobId> = Vec::new();
    let (mut max_leased, mut group_max) = (None, None);
    for (step, op) in ops.into_iter().enumerate() {
        let q = queue.as_ref().expect("model step");
        let load = |ids: &[JobId]| -> Vec<Job> {
            ids.iter()
                .filter_map(|id| q.get(*id).expect("model step"))
                .collect()
        };
        match op {
            Op::Enqueue { group, priority } => {
                let mut spec = NewJob::new(payload(step as u64)).priority(priority);
                if let Some(g) = group {
                    spec = spec.group(format!("g{g}"));
                }
                ids.push(q.enqueue("q", spec).expect("model step").job.id);
            }
            Op::Lease { max_jobs } => {
                let expected = expected_lease(&load(&ids), max_jobs, max_leased, group_max);
                let got: Vec<JobId> = lease(q, "q", max_jobs).iter().map(|l| l.job.id).collect();
                prop_assert_eq!(got, expected, "step {}", step);
            }
            Op::Complete { pick } | Op::Release { pick } => {
                let leased: Vec<Job> = load(&ids)
                    .into_iter()
                    .filter(|j| j.state == JobState::Leased)
                    .collect();
                if !leased.is_empty() {
                    let job = &leased[pick % leased.len()];
                    let lease_id = job.lease.as_ref().expect("model step").id;
                    if matches!(op, Op::Complete { .. }) {
                        q.complete(job.id, lease_id, None).expect("model step");
                    } else {
                        q.release(job.id, lease_id).expect("model step");
                    }
                }
            }
            Op::Limits {
                max_leased: m,
                group_max_leased: g,
            } => {
                q.update_queue("q", &limits(m, None, g))
                    .expect("model step");
                (max_leased, group_max) = (m, g);
            }
            Op::Reopen => {
                drop(queue.take());
                queue = Some(open_manual(dir.path(), &clock));
            }
        }
        clock.advance(Duration::from_millis(1));
        let report = queue
            .as_ref()
            .expect("model step")
            .verify()
            .expect("model step");
        prop_assert!(report.is_ok(), "step {}: {:?}", step, report.problems);
    }
    Ok(())
}

#[test]
fn leases_with_limits_and_groups_follow_the_model() {
    let config = RunnerConfig {
        cases: 24,
        rng_seed: RngSeed::Fixed(11),
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&proptest::collection::vec(op(), 1..60), run_sequence)
        .unwrap();
}

#[test]
fn a_paused_queue_with_limits_leases_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue.enqueue("q", NewJob::new(payload(0))).unwrap();
    let mut patch = limits(Some(1), None, None);
    patch.paused = Some(true);
    let stats = queue.update_queue("q", &patch).unwrap();
    assert!(stats.paused);
    assert!(lease(&queue, "q", 1).is_empty());
    let stats = queue.resume("q").unwrap();
    assert_eq!(stats.limits.max_leased, Some(1), "resume keeps the limits");
    assert_eq!(lease(&queue, "q", 1).len(), 1);
}

#[test]
fn every_transition_of_grouped_jobs_keeps_heads_and_group_counts_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    queue
        .update_queue("q", &limits(None, None, Some(2)))
        .expect("limits");
    let jobs: Vec<Job> = (0..6)
        .map(|n| {
            let spec = grouped(n, if n % 2 == 0 { "a" } else { "b" }).max_attempts(1);
            queue.enqueue("q", spec).expect("enqueue").job
        })
        .collect();
    assert_consistent(&queue);
    let opts = LeaseOptions::default()
        .max_jobs(10)
        .lease(Duration::from_millis(1000));
    let leased = queue.lease("q", &opts).expect("lease");
    assert_eq!(leased.len(), 4, "two of each group");
    assert_consistent(&queue);
    // Cancel a ready job (the rest of group a) and a leased one.
    queue.cancel(jobs[4].id).expect("cancel ready");
    queue.cancel(leased[0].job.id).expect("cancel leased");
    assert_consistent(&queue);
    // The rest expire (max_attempts 1: dead), freeing their groups.
    clock.advance(Duration::from_millis(1000));
    assert_eq!(queue.run_due().expect("run due").expired, 3);
    assert_consistent(&queue);
    assert_eq!(queue.stats("q").expect("stats").dead, 3);
    // Requeued, they are ready again (run_at now) behind group b's waiting
    // job, which goes first; b's limit of two holds one requeued job back.
    assert_eq!(queue.requeue_dead("q", None).expect("requeue"), 3);
    assert_consistent(&queue);
    let again = queue.lease("q", &opts).expect("lease");
    assert_eq!(again.len(), 3);
    assert_eq!(again[0].job.id, jobs[5].id);
    let groups: Vec<&str> = again
        .iter()
        .filter_map(|l| l.job.group.as_deref())
        .collect();
    assert_eq!(groups.iter().filter(|g| **g == "a").count(), 1);
    assert_eq!(groups.iter().filter(|g| **g == "b").count(), 2);
    assert_consistent(&queue);
}
