//! Listing jobs: a queue's jobs by state and every job of a correlation
//! id, paged oldest first, complete and stable while jobs change state.

// A test reports a failure by panicking; `unwrap` says where.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{
    Config, Error, Failure, JobId, JobPage, JobState, ManualClock, NewJob, Retention,
};

use crate::common::{T0, assert_consistent, enqueue_n, lease_n, open_manual, payload};

fn setup() -> (tempfile::TempDir, ManualClock, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let queue = open_manual(dir.path(), &clock);
    (dir, clock, queue)
}

fn ids(page: &JobPage) -> Vec<JobId> {
    page.jobs.iter().map(|j| j.id).collect()
}

/// Every page of `queue`'s jobs in `state`, `limit` at a time.
fn all_pages(queue: &Queue, name: &str, state: JobState, limit: usize) -> Vec<JobId> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = queue.jobs(name, state, after, limit).expect("a page");
        assert!(page.jobs.len() <= limit);
        out.extend(ids(&page));
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
    panic!("paging did not end");
}

/// Jobs of queue `name` in every state: returns them by state, in id order.
fn one_of_each(queue: &Queue, clock: &ManualClock, name: &str) -> BTreeMap<JobState, Vec<JobId>> {
    let enqueue = |job: NewJob| queue.enqueue(name, job).expect("enqueue").job.id;
    let completed = enqueue(NewJob::new(payload(1)));
    let dead = enqueue(NewJob::new(payload(2)).max_attempts(1));
    let cancelled = enqueue(NewJob::new(payload(3)));
    let leased = enqueue(NewJob::new(payload(4)));
    let scheduled = enqueue(NewJob::new(payload(5)).delay(Duration::from_secs(60)));
    let ready = enqueue(NewJob::new(payload(6)));
    let ready_too = enqueue(NewJob::new(payload(7)));
    for l in lease_n(queue, name, 4, 30_000) {
        let id = l.job.id;
        if id == completed {
            queue.complete(id, l.lease_id, None).expect("complete");
        } else if id == dead {
            queue
                .fail(id, l.lease_id, &Failure::new("no"))
                .expect("fail");
        } else if id == cancelled {
            queue.cancel(id).expect("cancel");
        } else {
            assert_eq!(id, leased);
        }
    }
    clock.advance(Duration::from_millis(1));
    BTreeMap::from([
        (JobState::Scheduled, vec![scheduled]),
        (JobState::Ready, vec![ready, ready_too]),
        (JobState::Leased, vec![leased]),
        (JobState::Completed, vec![completed]),
        (JobState::Dead, vec![dead]),
        (JobState::Cancelled, vec![cancelled]),
    ])
}

#[test]
fn every_state_lists_its_jobs_of_that_queue_only_oldest_first() {
    let (_dir, clock, queue) = setup();
    let q = one_of_each(&queue, &clock, "q");
    let other = one_of_each(&queue, &clock, "other");
    for state in JobState::ALL {
        let page = queue.jobs("q", state, None, 100).unwrap();
        assert_eq!(ids(&page), q[&state], "{state}");
        assert!(page.jobs.iter().all(|j| j.state == state && j.queue == "q"));
        assert_eq!(page.next, None);
        assert_eq!(all_pages(&queue, "other", state, 1), other[&state]);
    }
    // The dead-letter list is the dead state's listing.
    assert_eq!(
        queue.dead_letters("q", None, 100).unwrap(),
        queue.jobs("q", JobState::Dead, None, 100).unwrap()
    );
    // An unknown queue has no jobs.
    assert_eq!(
        queue.jobs("nobody", JobState::Ready, None, 100).unwrap(),
        JobPage {
            jobs: vec![],
            next: None
        }
    );
    assert_consistent(&queue);
}

#[test]
fn bad_arguments_are_refused_naming_them() {
    let (_dir, _clock, queue) = setup();
    enqueue_n(&queue, "q", 1);
    let field = |e: Error| match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("{other:?}"),
    };
    let bad = |r: queue_core::Result<JobPage>| field(r.expect_err("refused"));
    assert_eq!(bad(queue.jobs("q", JobState::Ready, None, 0)), "limit");
    assert_eq!(bad(queue.jobs("q", JobState::Ready, None, 1001)), "limit");
    assert_eq!(bad(queue.jobs("a b", JobState::Ready, None, 10)), "queue");
    for id in ["", "has space", "tab\t", "é", &"x".repeat(129)] {
        assert_eq!(
            bad(queue.jobs_by_correlation(id, None, 10)),
            "correlation_id",
            "{id:?}"
        );
    }
    assert_eq!(bad(queue.jobs_by_correlation("ok", None, 0)), "limit");
    assert!(
        queue
            .jobs_by_correlation(&"x".repeat(128), None, 10)
            .unwrap()
            .jobs
            .is_empty()
    );
}

#[test]
fn pages_follow_one_another_with_next() {
    let (_dir, _clock, queue) = setup();
    let jobs: Vec<JobId> = enqueue_n(&queue, "q", 7).iter().map(|j| j.id).collect();
    let first = queue.jobs("q", JobState::Ready, None, 3).unwrap();
    assert_eq!(ids(&first), jobs[..3]);
    assert_eq!(first.next, Some(jobs[2]));
    let second = queue.jobs("q", JobState::Ready, first.next, 3).unwrap();
    assert_eq!(ids(&second), jobs[3..6]);
    let last = queue.jobs("q", JobState::Ready, second.next, 3).unwrap();
    assert_eq!(ids(&last), jobs[6..]);
    assert_eq!(last.next, None);
    // A page that ends exactly at the last job says so.
    let exact = queue.jobs("q", JobState::Ready, None, 7).unwrap();
    assert_eq!((exact.jobs.len(), exact.next), (7, None));
}

#[test]
fn the_jobs_of_a_correlation_id_span_queues_and_states() {
    let (_dir, _clock, queue) = setup();
    let enqueue = |name: &str, correlation: Option<&str>| {
        let mut job = NewJob::new(payload(0));
        if let Some(id) = correlation {
            job = job.correlation_id(id);
        }
        queue.enqueue(name, job).unwrap().job.id
    };
    let a = enqueue("emails", Some("req-1"));
    enqueue("emails", Some("req-10"));
    enqueue("emails", None);
    let b = enqueue("sms", Some("req-1"));
    enqueue("sms", Some("req-"));
    let c = enqueue("emails", Some("req-1"));
    let leased = lease_n(&queue, "sms", 10, 30_000);
    for l in leased {
        queue.complete(l.job.id, l.lease_id, None).unwrap();
    }
    let page = queue.jobs_by_correlation("req-1", None, 100).unwrap();
    assert_eq!(ids(&page), [a, b, c]);
    assert_eq!(page.jobs[1].state, JobState::Completed);
    assert_eq!(page.jobs[1].queue, "sms");
    let first = queue.jobs_by_correlation("req-1", None, 2).unwrap();
    assert_eq!((ids(&first), first.next), (vec![a, b], Some(b)));
    let rest = queue.jobs_by_correlation("req-1", first.next, 2).unwrap();
    assert_eq!((ids(&rest), rest.next), (vec![c], None));
    assert!(
        queue
            .jobs_by_correlation("nobody", None, 100)
            .unwrap()
            .jobs
            .is_empty()
    );
}

#[test]
fn a_job_removed_by_retention_leaves_the_listings() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let queue = Queue::open_with(
        Config::new(dir.path())
            .clock(clock.clone())
            .seed(7)
            .background_timers(false)
            .retention(Retention {
                completed: Duration::from_secs(10),
                ..Retention::default()
            }),
    )
    .unwrap();
    let job = queue
        .enqueue("q", NewJob::new(payload(0)).correlation_id("req-1"))
        .unwrap()
        .job;
    let l = lease_n(&queue, "q", 1, 30_000).remove(0);
    queue.complete(job.id, l.lease_id, None).unwrap();
    assert_eq!(
        ids(&queue.jobs("q", JobState::Completed, None, 10).unwrap()),
        [job.id]
    );
    clock.advance(Duration::from_secs(11));
    queue.run_due().unwrap();
    assert!(queue.get(job.id).unwrap().is_none());
    assert!(
        queue
            .jobs("q", JobState::Completed, None, 10)
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(
        queue
            .jobs_by_correlation("req-1", None, 10)
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_consistent(&queue);
}

/// A small deterministic generator (xorshift), so that a failure names
/// its seed and replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Pages through `state` of queue `q` while, between pages, jobs are
/// enqueued, leased, completed, failed, cancelled, requeued and purged
/// (on both queues). Then: no job is listed twice; every job listed was
/// in the state when its page was read; every job that was in the state
/// from the start to the end of paging is listed; every job enqueued
/// into the state during paging and never moved is listed too.
fn page_while_changing(seed: u64, state: JobState) {
    let (_dir, clock, queue) = setup();
    let mut rng = Rng(seed | 1);
    // The jobs of queue `q`: their records, not the listing, say which are
    // in the state.
    let mut known: Vec<JobId> = Vec::new();
    for name in ["q", "other"] {
        for n in 0..40 {
            let mut job = NewJob::new(payload(n)).max_attempts(1 + (n % 2) as u32);
            if n % 5 == 0 {
                job = job.delay(Duration::from_millis(500 + n * 10));
            }
            let id = queue.enqueue(name, job).unwrap().job.id;
            if name == "q" {
                known.push(id);
            }
        }
        for l in lease_n(&queue, name, 12, 1_000) {
            match l.job.id.as_u64() % 3 {
                0 => drop(queue.complete(l.job.id, l.lease_id, None).unwrap()),
                1 => drop(
                    queue
                        .fail(l.job.id, l.lease_id, &Failure::new("x").permanent())
                        .unwrap(),
                ),
                _ => {}
            }
        }
    }
    let in_state = |queue: &Queue, known: &[JobId]| -> BTreeSet<JobId> {
        known
            .iter()
            .filter(|id| {
                queue
                    .get(**id)
                    .unwrap()
                    .is_some_and(|job| job.state == state)
            })
            .copied()
            .collect()
    };
    let mut always: BTreeSet<JobId> = in_state(&queue, &known);
    assert!(
        state == JobState::Cancelled || !always.is_empty(),
        "{state}: the scenario starts with jobs in the state"
    );
    let mut listed = Vec::new();
    let mut after = None;
    let mut new_and_unmoved: BTreeSet<JobId> = BTreeSet::new();
    for _ in 0..1000 {
        let limit = 1 + rng.below(4) as usize;
        let page = queue.jobs("q", state, after, limit).unwrap();
        for job in &page.jobs {
            assert_eq!((job.state, job.queue.as_str()), (state, "q"), "seed {seed}");
        }
        listed.extend(ids(&page));
        let Some(next) = page.next else {
            break;
        };
        after = Some(next);
        // Between pages, some changes.
        for _ in 0..rng.below(6) {
            let name = if rng.below(4) == 0 { "other" } else { "q" };
            let touched: Vec<JobId> = match rng.below(8) {
                0 | 1 => {
                    let id = queue.enqueue(name, NewJob::new(payload(9))).unwrap().job.id;
                    if name == "q" {
                        known.push(id);
                    }
                    if name == "q" && state == JobState::Ready {
                        new_and_unmoved.insert(id);
                    }
                    vec![]
                }
                2 => lease_n(&queue, name, 1 + rng.below(3) as u32, 1_000)
                    .into_iter()
                    .map(|l| l.job.id)
                    .collect(),
                3 => {
                    let leased = queue.jobs(name, JobState::Leased, None, 10).unwrap();
                    let mut out = Vec::new();
                    for job in leased.jobs.iter().take(2) {
                        let lease = job.lease.as_ref().expect("leased").id;
                        if rng.below(2) == 0 {
                            queue.complete(job.id, lease, None).unwrap();
                        } else {
                            queue.fail(job.id, lease, &Failure::new("x")).unwrap();
                        }
                        out.push(job.id);
                    }
                    out
                }
                4 => {
                    let pick = JobState::ALL[rng.below(3) as usize];
                    let page = queue.jobs(name, pick, None, 20).unwrap();
                    match page.jobs.get(rng.below(20) as usize) {
                        Some(job) => {
                            queue.cancel(job.id).unwrap();
                            vec![job.id]
                        }
                        None => vec![],
                    }
                }
                5 => {
                    let dead = queue.jobs(name, JobState::Dead, None, 3).unwrap();
                    let chosen = ids(&dead);
                    queue.requeue_dead(name, Some(&chosen)).unwrap();
                    chosen
                }
                6 => {
                    clock.advance(Duration::from_millis(300));
                    let before = in_state(&queue, &known);
                    queue.run_due().unwrap();
                    let after = in_state(&queue, &known);
                    before.symmetric_difference(&after).copied().collect()
                }
                _ => {
                    let dead = queue.jobs(name, JobState::Dead, None, 1000).unwrap();
                    if rng.below(3) == 0 {
                        queue.purge_dead(name).unwrap();
                        ids(&dead)
                    } else {
                        vec![]
                    }
                }
            };
            for id in touched {
                always.remove(&id);
                new_and_unmoved.remove(&id);
            }
        }
        // Whatever left the state by other ways (a lease expiring during
        // run_due is in `touched`) is no longer "always".
        let now = in_state(&queue, &known);
        always.retain(|id| now.contains(id));
        new_and_unmoved.retain(|id| now.contains(id));
    }
    let unique: BTreeSet<JobId> = listed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "seed {seed}: a job listed twice"
    );
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, listed, "seed {seed}: pages in id order");
    let missing: Vec<_> = always.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "seed {seed}, {state}: never listed: {missing:?}"
    );
    let missing: Vec<_> = new_and_unmoved.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: new jobs not listed: {missing:?}"
    );
    assert_consistent(&queue);
}

#[test]
fn paging_is_complete_and_stable_while_jobs_change_state() {
    for seed in 1..=12 {
        for state in JobState::ALL {
            page_while_changing(seed * 7919, state);
        }
    }
}
