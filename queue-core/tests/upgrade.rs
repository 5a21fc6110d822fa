//! Data directories written by earlier releases open under this one, are
//! upgraded, serve and drain:
//!
//! - `fixtures/v1/data`: the first release (queue-core 0.1.0, format 1, job
//!   records of version 1, an interrupted batch in its write-ahead log);
//! - `fixtures/v2/data`: the engine-seams release (commit 3ce2ca7: format 2,
//!   job records of version 2, write-ahead slots with events of version 1,
//!   event chunks of version 1, a checkpoint with two slots after it).
//!
//! Each is sled's files as that release left them, except that the log
//! file `db` is stored without its trailing zero bytes (`db.head`, padded
//! back to `db.len` bytes here).

use std::path::Path;
use std::time::Duration;

use queue_core::blocking::Queue;
use queue_core::{Config, JobId, JobState, LeaseId, LeaseOptions, ManualClock, NewJob};

use crate::common::{T0, assert_consistent};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1/data");
const FIXTURE_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v2/data");

/// The job of the interrupted batch, applied when the directory is opened.
const WAL_JOB: JobId = JobId::from_u64(0x1e_8480);

fn restore(into: &Path) {
    restore_from(Path::new(FIXTURE), into);
}

fn restore_from(from: &Path, into: &Path) {
    std::fs::create_dir_all(into.join("blobs")).expect("restore the fixture");
    for entry in std::fs::read_dir(from).expect("restore the fixture") {
        let entry = entry.expect("restore the fixture");
        let name = entry
            .file_name()
            .into_string()
            .expect("restore the fixture");
        if name == "conf" || name.starts_with("snap.") {
            std::fs::copy(entry.path(), into.join(&name)).expect("restore the fixture");
        }
    }
    let mut db = std::fs::read(from.join("db.head")).expect("restore the fixture");
    let len: usize = std::fs::read_to_string(from.join("db.len"))
        .expect("restore the fixture")
        .trim()
        .parse()
        .expect("restore the fixture");
    db.resize(len, 0);
    std::fs::write(into.join("db"), db).expect("restore the fixture");
}

fn open(dir: &Path, clock: &ManualClock) -> Queue {
    Queue::open_with(
        Config::new(dir)
            .clock(clock.clone())
            .seed(3)
            .background_timers(false),
    )
    .expect("the first release's directory opens")
}

#[test]
fn a_first_release_directory_opens_serves_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    restore(dir.path());
    let clock = ManualClock::new(T0 + 1_000);
    let queue = open(dir.path(), &clock);
    assert_consistent(&queue);

    // Everything that release stored, and the batch its crash interrupted.
    let emails = queue.stats("emails").unwrap();
    assert_eq!(
        (emails.scheduled, emails.ready, emails.leased),
        (2, 3, 1),
        "{emails:?}"
    );
    assert_eq!((emails.completed, emails.dead, emails.cancelled), (1, 1, 1));
    assert!(!emails.paused);
    let reports = queue.stats("reports").unwrap();
    assert!(
        reports.paused,
        "format 1's paused flag survives the upgrade"
    );
    assert_eq!(reports.ready, 1);
    let replayed = queue.get(WAL_JOB).unwrap().expect("the interrupted batch");
    assert_eq!((replayed.state, replayed.priority), (JobState::Ready, -5));
    let done = queue.get(JobId::from_u64(3)).unwrap().unwrap();
    assert_eq!(done.result.as_deref(), Some(&br#"{"sent":true}"#[..]));

    // Idempotency keys written then still replay.
    let again = queue
        .enqueue(
            "emails",
            NewJob::new(b"{}".to_vec()).idempotency_key("welcome-ada"),
        )
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.job.id, JobId::from_u64(0));

    // The lease held then is still the job's lease.
    let held = queue
        .complete(
            JobId::from_u64(5),
            LeaseId::from_u64(9),
            Some(b"1".to_vec()),
        )
        .unwrap();
    assert_eq!(held.state, JobState::Completed);

    let mut events = queue.subscribe();
    let drain = |queue: &Queue, name: &str| -> Vec<JobId> {
        let leased = queue
            .lease(name, &LeaseOptions::default().max_jobs(100))
            .unwrap();
        for l in &leased {
            queue.complete(l.job.id, l.lease_id, None).unwrap();
        }
        leased.into_iter().map(|l| l.job.id).collect()
    };
    // Lease order across old and new records: priority, then run_at, then id.
    assert_eq!(
        drain(&queue, "emails"),
        [JobId::from_u64(1), JobId::from_u64(0), WAL_JOB]
    );
    assert_eq!(queue.requeue_dead("emails", None).unwrap(), 1);
    assert_eq!(drain(&queue, "emails"), [JobId::from_u64(4)]);
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(queue.run_due().unwrap().promoted, 2);
    assert_eq!(drain(&queue, "emails").len(), 2);
    queue.resume("reports").unwrap();
    assert_eq!(drain(&queue, "reports"), [JobId::from_u64(12)]);

    let emails = queue.stats("emails").unwrap();
    assert_eq!((emails.completed, emails.cancelled), (8, 1), "{emails:?}");
    assert_eq!(
        emails.ready + emails.scheduled + emails.leased + emails.dead,
        0
    );
    let next = events.try_recv().unwrap().expect("new events are logged");
    assert_eq!((next.event_id, next.id), (2, JobId::from_u64(1)));
    let first = queue.subscribe_after(0).try_recv().unwrap().unwrap();
    assert_eq!(
        (first.event_id, first.id, first.state),
        (1, JobId::from_u64(5), JobState::Completed)
    );
    assert_consistent(&queue);

    // Upgraded once: it opens again as this release's own format.
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert!(!queue.stats("reports").unwrap().paused);
    assert_eq!(queue.stats("reports").unwrap().completed, 1);
    assert_consistent(&queue);
}

#[test]
fn an_engine_seams_directory_opens_with_its_event_log_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    restore_from(Path::new(FIXTURE_V2), dir.path());
    let clock = ManualClock::new(T0 + 10_000);
    let queue = open(dir.path(), &clock);
    assert_consistent(&queue);
    let emails = queue.stats("emails").unwrap();
    assert_eq!(
        (emails.scheduled, emails.ready, emails.leased),
        (1, 2, 1),
        "{emails:?}"
    );
    assert_eq!((emails.completed, emails.dead, emails.cancelled), (1, 1, 1));
    assert_eq!(queue.stats("bulk").unwrap().ready, 70);
    let reports = queue.stats("reports").unwrap();
    assert!(
        reports.paused,
        "the pause of a slot after the checkpoint is replayed"
    );
    assert_eq!(reports.ready, 1);

    // Every event of that release, numbered as it numbered them, in order,
    // from its chunks and from its slots (the last one replayed at open).
    let mut log = queue.subscribe_after(0);
    let mut events = Vec::new();
    while let Some(event) = log.try_recv().unwrap() {
        events.push(event);
    }
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        (1..=84).collect::<Vec<_>>()
    );
    let at = |id: u64| &events[usize::try_from(id - 1).unwrap()];
    assert_eq!(
        (at(1).id, at(1).state),
        (JobId::from_u64(0), JobState::Ready)
    );
    assert_eq!(
        (at(10).id, at(10).state),
        (JobId::from_u64(3), JobState::Completed)
    );
    assert_eq!(
        (at(11).id, at(11).state),
        (JobId::from_u64(4), JobState::Dead)
    );
    assert_eq!(
        (at(13).id, at(13).state),
        (JobId::from_u64(9), JobState::Cancelled)
    );
    assert_eq!(at(84).queue, "reports");
    // Events of that release carry none of the new fields.
    assert!(
        events
            .iter()
            .all(|e| e.correlation_id.is_none() && e.result.is_none())
    );

    // Its records: the old fields, and the new ones empty.
    let done = queue.get(JobId::from_u64(3)).unwrap().unwrap();
    assert_eq!(done.result.as_deref(), Some(&br#"{"sent":true}"#[..]));
    let dead = queue.get(JobId::from_u64(4)).unwrap().unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("mailbox full"));
    for job in [&done, &dead] {
        assert_eq!(job.correlation_id, None);
        assert!(job.headers.is_empty());
        assert_eq!(
            (job.callback_url.as_deref(), job.last_event_id),
            (None, None)
        );
    }

    // New changes go on with the next ids, and records learn theirs.
    let cancelled = queue.cancel(JobId::from_u64(0)).unwrap();
    assert_eq!(cancelled.last_event_id, Some(85));
    let fresh = queue
        .enqueue(
            "emails",
            NewJob::new(b"{}".to_vec()).correlation_id("after-upgrade"),
        )
        .unwrap()
        .job;
    assert_eq!(fresh.last_event_id, Some(86));
    let lease = queue
        .get(JobId::from_u64(5))
        .unwrap()
        .unwrap()
        .lease
        .expect("leased then, leased now");
    assert_eq!(lease.worker.as_deref(), Some("fixture-worker"));
    let held = queue
        .complete(JobId::from_u64(5), lease.id, None)
        .unwrap_or_else(|e| panic!("the lease held then is still the job's: {e:?}"));
    assert_eq!(
        (held.state, held.last_event_id),
        (JobState::Completed, Some(87))
    );
    let next = log.try_recv().unwrap().unwrap();
    assert_eq!(
        (next.event_id, next.id, next.state),
        (85, JobId::from_u64(0), JobState::Cancelled)
    );
    assert_consistent(&queue);

    // Reopened: the same log, the new records, this release's format.
    drop(queue);
    let queue = open(dir.path(), &clock);
    let mut again = queue.subscribe_after(84);
    let ids: Vec<u64> = std::iter::from_fn(|| again.try_recv().unwrap())
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, [85, 86, 87]);
    let fresh = queue.get(fresh.id).unwrap().unwrap();
    assert_eq!(fresh.correlation_id.as_deref(), Some("after-upgrade"));
    assert_eq!(fresh.last_event_id, Some(86));
    assert_consistent(&queue);
}

/// Every job of every queue, listed by state, page by page: the listing
/// must agree with the stats and with each job's own state.
fn assert_listings_agree_with_stats(queue: &Queue) -> usize {
    let mut listed = 0;
    for stats in queue.queues().expect("queues") {
        for state in JobState::ALL {
            let mut after = None;
            let mut ids = Vec::new();
            for _ in 0..1000 {
                let page = queue.jobs(&stats.queue, state, after, 7).expect("a page");
                for job in &page.jobs {
                    assert_eq!(
                        (job.state, job.queue.as_str()),
                        (state, stats.queue.as_str())
                    );
                }
                ids.extend(page.jobs.iter().map(|j| j.id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted, ids,
                "{} {state}: in id order, once each",
                stats.queue
            );
            let count = match state {
                JobState::Scheduled => stats.scheduled,
                JobState::Ready => stats.ready,
                JobState::Leased => stats.leased,
                JobState::Completed => stats.completed,
                JobState::Dead => stats.dead,
                JobState::Cancelled => stats.cancelled,
            };
            assert_eq!(ids.len() as u64, count, "{} {state}", stats.queue);
            listed += ids.len();
        }
    }
    listed
}

#[test]
fn directories_of_earlier_releases_list_their_jobs_after_the_upgrade() {
    let clock = ManualClock::new(T0 + 10_000);
    let dir = tempfile::tempdir().unwrap();
    restore(dir.path());
    let queue = open(dir.path(), &clock);
    assert_eq!(assert_listings_agree_with_stats(&queue), 10);
    let dead = queue.jobs("emails", JobState::Dead, None, 10).unwrap();
    assert_eq!(
        dead.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [JobId::from_u64(4)]
    );
    let ready = queue.jobs("emails", JobState::Ready, None, 10).unwrap();
    assert_eq!(
        ready.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [JobId::from_u64(0), JobId::from_u64(1), WAL_JOB]
    );
    // The dead-letter list moved to the new entries and still works.
    assert_eq!(queue.dead_letters("emails", None, 10).unwrap(), dead);
    assert_consistent(&queue);
    // A new job with a correlation id is listed by it.
    let fresh = queue
        .enqueue(
            "emails",
            NewJob::new(b"{}".to_vec()).correlation_id("after"),
        )
        .unwrap()
        .job;
    let by = queue.jobs_by_correlation("after", None, 10).unwrap();
    assert_eq!(by.jobs, [fresh]);
    drop(queue);

    let dir = tempfile::tempdir().unwrap();
    restore_from(Path::new(FIXTURE_V2), dir.path());
    let queue = open(dir.path(), &clock);
    assert_eq!(assert_listings_agree_with_stats(&queue), 78);
    assert_eq!(
        queue
            .jobs("bulk", JobState::Ready, None, 1000)
            .unwrap()
            .jobs
            .len(),
        70
    );
    assert_eq!(
        queue
            .jobs("emails", JobState::Dead, None, 10)
            .unwrap()
            .jobs
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        [JobId::from_u64(4)]
    );
    assert_consistent(&queue);
    // Reopened: already upgraded, the same listings.
    drop(queue);
    let queue = open(dir.path(), &clock);
    assert_eq!(assert_listings_agree_with_stats(&queue), 78);
    assert_consistent(&queue);
}
