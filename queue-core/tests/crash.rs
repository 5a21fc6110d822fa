//! Crash test: a child process (this test binary, re-run on the ignored test
//! `crash::crash_child`) runs a workload of enqueues, batch enqueues, leases,
//! heartbeats, completions and failures on several threads, on the system
//! clock with the background timer running, and prints one line per
//! acknowledged operation. The parent reads those lines and kills the child
//! with SIGKILL after a random number of them, repeatedly on one data
//! directory. After each kill it reopens the store and checks that every
//! acknowledged operation is there, that the store is consistent (every job
//! in exactly one state, indexes and counts agree with the records), and at
//! the end that everything drains to a terminal state.
//!
//! `QUEUE_CRASH_SEED` and `QUEUE_CRASH_ROUNDS` override the defaults.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use queue_core::blocking::Queue;
use queue_core::{
    Clock, Config, Failure, JobId, JobState, LeaseOptions, ManualClock, NewJob, SystemClock,
    Transition,
};

use crate::common::assert_consistent;

const DIR_ENV: &str = "QUEUE_CRASH_CHILD_DIR";
const SEED_ENV: &str = "QUEUE_CRASH_CHILD_SEED";
const QUEUE: &str = "crash";
const LEASE_MS: u64 = 1_500;

/// A small deterministic generator (xorshift64*), so a failing run can be
/// repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the child acknowledged, as the parent learns it.
#[derive(Debug, Default)]
struct Acked {
    /// Every acknowledged enqueue, with its payload.
    enqueued: HashMap<JobId, String>,
    /// Jobs whose completion was acknowledged.
    completed: Vec<JobId>,
    /// Jobs acknowledged dead by a failure.
    dead: Vec<JobId>,
    /// Attempts reported by acknowledged failures that retried.
    failed: HashMap<JobId, u32>,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let mut parts = line.split(' ');
        let (Some(kind), Some(id)) = (parts.next(), parts.next()) else {
            panic!("bad ack line {line:?}");
        };
        let id: JobId = id.parse().expect("ack id");
        match kind {
            "E" => {
                let marker = parts.next().expect("marker").to_owned();
                self.enqueued.insert(id, marker);
            }
            "C" => self.completed.push(id),
            "D" => self.dead.push(id),
            "F" => {
                let attempts = parts.next().expect("attempts").parse().expect("attempts");
                let entry = self.failed.entry(id).or_default();
                *entry = (*entry).max(attempts);
            }
            other => panic!("unknown ack kind {other:?}"),
        }
    }
}

#[test]
fn acknowledged_work_survives_sigkill() {
    let seed: u64 = std::env::var("QUEUE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CAFE);
    let rounds: u64 = std::env::var("QUEUE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("crash test: seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();

    for round in 0..rounds {
        // Kill after a random number of acknowledgements: sometimes almost
        // at once (during open and recovery), sometimes well into the work.
        let kill_after = match rng.below(4) {
            0 => rng.below(5),
            _ => 20 + rng.below(400),
        };
        let seen = run_child_until_killed(dir.path(), rng.next(), kill_after, &mut acked);
        eprintln!("round {round}: killed after {seen} acks (wanted {kill_after})");
        check_after_crash(dir.path(), &acked);
    }
    drain(dir.path(), &acked);
}

/// Runs one child, records its acknowledgements, kills it with SIGKILL once
/// `kill_after` have been read, and returns how many were read in all
/// (including those still in the pipe at the moment of the kill).
fn run_child_until_killed(dir: &Path, seed: u64, kill_after: u64, acked: &mut Acked) -> u64 {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "crash::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = line.strip_prefix("ACK ") {
                if tx.send(ack.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                acked.record(&line);
                seen += 1;
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("child output");
                panic!(
                    "child stopped acknowledging after {seen} acks (status {:?}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap child");
    assert!(
        status.code().is_none(),
        "the child must die by the signal, got {status:?}"
    );
    // Whatever the child printed before it died was acknowledged.
    reader.join().expect("reader thread");
    for line in rx.try_iter() {
        acked.record(&line);
        seen += 1;
    }
    seen
}

fn check_after_crash(dir: &Path, acked: &Acked) {
    let queue = Queue::open_with(Config::new(dir).background_timers(false)).expect("reopen");
    assert_consistent(&queue);
    for (id, marker) in &acked.enqueued {
        let job = queue
            .get(*id)
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged enqueue of {id} lost"));
        assert_eq!(job.queue, QUEUE);
        let expected = format!(r#"{{"marker":"{marker}"}}"#);
        assert_eq!(job.payload, expected.as_bytes(), "payload of {id}");
    }
    for id in &acked.completed {
        let job = queue.get(*id).expect("get").expect("completed job exists");
        assert_eq!(
            job.state,
            JobState::Completed,
            "acknowledged completion of {id} lost"
        );
    }
    for id in &acked.dead {
        let job = queue.get(*id).expect("get").expect("dead job exists");
        assert_eq!(
            job.state,
            JobState::Dead,
            "acknowledged dead letter {id} lost"
        );
    }
    for (id, attempts) in &acked.failed {
        let job = queue.get(*id).expect("get").expect("failed job exists");
        assert!(
            job.attempts >= *attempts || job.state == JobState::Completed,
            "acknowledged failure of {id} at attempt {attempts} lost: {job:?}"
        );
        assert!(job.last_error.is_some(), "failure text of {id} lost");
    }
    // Each acknowledged change's event was committed with it.
    let mut log = queue.subscribe_after(0);
    let mut enqueued = std::collections::HashSet::new();
    let mut completed = std::collections::HashSet::new();
    while let Some(event) = log.try_recv().expect("read the event log") {
        match event.transition {
            Transition::Enqueue => enqueued.insert(event.id),
            Transition::Complete => completed.insert(event.id),
            _ => false,
        };
    }
    for id in acked.enqueued.keys() {
        assert!(enqueued.contains(id), "event of the enqueue of {id} lost");
    }
    check_history(&queue);
    for id in &acked.completed {
        assert!(
            completed.contains(id),
            "event of the completion of {id} lost"
        );
    }
}

/// History is committed with the changes it counts: after any crash, the
/// totals of the history equal what the store holds (this workload
/// neither requeues, cancels nor removes jobs), so every committed
/// enqueue, completion and dead letter is counted exactly once, and the
/// latest minute's depths are the queue's.
fn check_history(queue: &Queue) {
    let now = SystemClock.now_ms();
    let query = queue_core::HistoryQuery {
        from: Some(now.saturating_sub(6 * 3_600_000)),
        to: Some(now),
        step: None,
    };
    let history = queue.history(QUEUE, &query).expect("history");
    let sum = |f: fn(&queue_core::HistoryPoint) -> u64| history.points.iter().map(f).sum::<u64>();
    let report = queue.verify().expect("verify");
    assert_eq!(sum(|p| p.enqueued), report.jobs, "enqueues in history");
    assert_eq!(
        sum(|p| p.completed),
        report.count(JobState::Completed),
        "completions in history"
    );
    assert_eq!(
        sum(|p| p.dead),
        report.count(JobState::Dead),
        "dead letters in history"
    );
    let last = history.points.last().expect("points");
    let stats = queue.stats(QUEUE).expect("stats");
    assert_eq!(
        (last.ready, last.scheduled, last.leased),
        (stats.ready, stats.scheduled, stats.leased),
        "depths of the latest minute"
    );
}

/// After the last crash: move time past every lease and back-off and work
/// the queue until every job is terminal.
fn drain(dir: &Path, acked: &Acked) {
    let clock = ManualClock::new(SystemClock.now_ms() + 3_600_000);
    let queue = Queue::open_with(
        Config::new(dir)
            .clock(clock.clone())
            .background_timers(false),
    )
    .expect("reopen");
    for _ in 0..1000 {
        queue.run_due().expect("run timers");
        let leased = queue
            .lease(QUEUE, &LeaseOptions::default().max_jobs(1000))
            .expect("lease");
        for job in &leased {
            queue
                .complete(job.job.id, job.lease_id, None)
                .expect("complete while draining");
        }
        let stats = queue.stats(QUEUE).expect("stats");
        if stats.scheduled + stats.ready + stats.leased == 0 {
            break;
        }
        if leased.is_empty() {
            clock.advance(Duration::from_secs(3600));
        }
    }
    let report = queue.verify().expect("verify");
    assert!(report.is_ok(), "{:#?}", report.problems);
    let unfinished = report.count(JobState::Scheduled)
        + report.count(JobState::Ready)
        + report.count(JobState::Leased);
    assert_eq!(
        unfinished, 0,
        "every job drains to a terminal state: {report:?}"
    );
    assert!(report.jobs >= acked.enqueued.len() as u64);
    eprintln!(
        "drained {} jobs ({} acknowledged enqueues, {} completions, {} dead)",
        report.jobs,
        acked.enqueued.len(),
        acked.completed.len(),
        acked.dead.len()
    );
}

/// The child's workload; does nothing unless started by the crash test.
#[test]
#[ignore = "run by acknowledged_work_survives_sigkill as a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let queue = Queue::open(&dir).expect("child opens the queue");
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..4u64)
        .map(|worker| {
            let queue = queue.clone();
            let stdout = std::sync::Arc::clone(&stdout);
            std::thread::spawn(move || {
                let ack = |line: String| {
                    let mut out = stdout.lock().expect("stdout");
                    // One write per line, so a kill cannot split a line.
                    out.write_all(format!("ACK {line}\n").as_bytes())
                        .expect("ack");
                    out.flush().expect("flush ack");
                };
                child_worker(&queue, seed ^ (worker << 32), worker, ack);
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
}

fn child_worker(queue: &Queue, seed: u64, worker: u64, ack: impl Fn(String)) {
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut n = 0u64;
    // Bounded in time in case the parent is gone.
    while started.elapsed() < Duration::from_secs(60) {
        n += 1;
        let marker = |i: u64| format!("{seed:x}-{worker}-{n}-{i}");
        let new_job = |m: &str| {
            NewJob::new(format!(r#"{{"marker":"{m}"}}"#).into_bytes())
                .max_attempts(3)
                .backoff(Duration::from_millis(10))
                .priority(i32::try_from(rng_priority(m)).unwrap_or(0))
        };
        match rng.below(10) {
            0 => {
                let markers: Vec<String> = (0..3).map(marker).collect();
                let batch = markers.iter().map(|m| new_job(m)).collect();
                let done = queue.enqueue_batch(QUEUE, batch).expect("batch enqueue");
                for (enqueued, m) in done.iter().zip(&markers) {
                    ack(format!("E {} {m}", enqueued.job.id));
                }
            }
            1..=4 => {
                let m = marker(0);
                let done = queue.enqueue(QUEUE, new_job(&m)).expect("enqueue");
                ack(format!("E {} {m}", done.job.id));
            }
            _ => {
                let leased = queue
                    .lease(
                        QUEUE,
                        &LeaseOptions::default()
                            .max_jobs(2)
                            .lease(Duration::from_millis(LEASE_MS)),
                    )
                    .expect("lease");
                for job in leased {
                    let id = job.job.id;
                    match rng.below(20) {
                        0 => {} // abandoned: its lease will expire
                        1..=5 => {
                            let failure = if rng.below(4) == 0 {
                                Failure::new("permanent").permanent()
                            } else {
                                Failure::new("transient")
                            };
                            match queue.fail(id, job.lease_id, &failure) {
                                Ok(failed) if failed.state == JobState::Dead => {
                                    ack(format!("D {id}"));
                                }
                                Ok(failed) => ack(format!("F {id} {}", failed.attempts)),
                                // Slow enough for the timer to expire it first.
                                Err(queue_core::Error::LeaseLost { .. }) => {}
                                Err(e) => panic!("fail: {e}"),
                            }
                        }
                        _ => {
                            if rng.below(3) == 0 {
                                match queue.heartbeat(id, job.lease_id, None) {
                                    Ok(_) | Err(queue_core::Error::LeaseLost { .. }) => {}
                                    Err(e) => panic!("heartbeat: {e}"),
                                }
                            }
                            match queue.complete(id, job.lease_id, Some(b"true".to_vec())) {
                                Ok(_) => ack(format!("C {id}")),
                                Err(queue_core::Error::LeaseLost { .. }) => {}
                                Err(e) => panic!("complete: {e}"),
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rng_priority(marker: &str) -> u64 {
    marker.bytes().map(u64::from).sum::<u64>() % 3
}
