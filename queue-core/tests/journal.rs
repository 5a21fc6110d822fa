//! Crash test of the journal (the write-ahead file of durable batches,
//! `backend/sled/journal.rs`): a child process (this test binary, re-run on
//! the ignored test `journal::journal_child`) enqueues jobs with large
//! payloads and leases and completes some, so that the journal passes its
//! size and ends its lap again and again (the next lap goes to the other
//! of its two files while the lap ended is applied to the trees behind, on
//! a thread of its own, and sled flushed); so kills land while a lap is
//! applied behind, and before and after the laps change files; the
//! parent kills it with SIGKILL after a random number of acknowledgements,
//! some rounds in the periodic durability (answered before the journal's
//! sync, which a kill of the process does not undo). After each kill it reopens the store and
//! checks that every acknowledged enqueue and completion is there, that the
//! store is consistent, and that each acknowledged change has its event
//! exactly once: a batch in the journal but not yet in the trees is applied
//! once, however often it is replayed.
//!
//! Half the rounds enqueue small jobs instead: many batches then sit in
//! the overlay of committed writes (`backend/sled/pending.rs`) that reach
//! the trees only at a checkpoint, so a kill takes them from memory and
//! the reopen must replay every one.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use queue_core::blocking::Queue;
use queue_core::{Config, Durability, JobId, JobState, LeaseOptions, NewJob, Transition};

use crate::common::assert_consistent;

const DIR_ENV: &str = "QUEUE_JOURNAL_CHILD_DIR";
const MODE_ENV: &str = "QUEUE_JOURNAL_CHILD_MODE";
const PAD_ENV: &str = "QUEUE_JOURNAL_CHILD_PAD";
const QUEUE: &str = "journal";
/// Large enough that a few hundred enqueues pass the journal's lap size
/// (32 MiB) more than once.
const PAD: usize = 256 * 1024;
/// Small enough that hundreds of batches stay in the overlay.
const SMALL_PAD: usize = 16;

fn payload(marker: &str, pad: usize) -> Vec<u8> {
    format!(r#"{{"marker":"{marker}","pad":"{}"}}"#, "x".repeat(pad)).into_bytes()
}

/// xorshift64*, so that a failing run repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[derive(Default)]
struct Acked {
    /// Each acknowledged job's marker and padding.
    enqueued: HashMap<JobId, (String, usize)>,
    completed: HashSet<JobId>,
}

#[test]
fn journal_cuts_and_replays_survive_sigkill() {
    let mut rng = Rng(0x10_0A11_CAFE);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = Acked::default();
    for round in 0..12u64 {
        // Every third round runs periodic: its batches are answered once
        // their frames are written, before the sync, and a kill of the
        // process must lose none of them (the kernel holds the writes;
        // only a crash of the machine may lose the last interval). The
        // journal of the round before is replayed by its open and must be
        // cut, not replayed again.
        let periodic = round % 3 == 2;
        // Two rounds of large jobs, then two of small ones.
        let pad = if (round / 2) % 2 == 0 { PAD } else { SMALL_PAD };
        let kill_after = match rng.below(4) {
            0 => rng.below(5),
            _ if pad == SMALL_PAD => 300 + rng.below(3000),
            _ => 50 + rng.below(300),
        };
        let seen = run_child(dir.path(), periodic, pad, kill_after, &mut acked);
        eprintln!("round {round} (periodic: {periodic}, pad {pad}): killed after {seen} acks");
        check(dir.path(), &acked);
    }
    for file in ["journal", "journal-2"] {
        let journal = std::fs::metadata(dir.path().join(file)).expect("journal file");
        assert!(
            journal.len() <= 34 * 1024 * 1024,
            "the journal's laps end as they grow: {file} has {} bytes",
            journal.len()
        );
    }
}

fn run_child(dir: &Path, periodic: bool, pad: usize, kill_after: u64, acked: &mut Acked) -> u64 {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "journal::journal_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(MODE_ENV, if periodic { "periodic" } else { "sync" })
        .env(PAD_ENV, pad.to_string())
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
    let mut record = |line: &str| {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("E"), Some(id), Some(marker)) => {
                acked
                    .enqueued
                    .insert(id.parse().expect("job id"), (marker.to_owned(), pad));
            }
            (Some("C"), Some(id), None) => {
                acked.completed.insert(id.parse().expect("job id"));
            }
            _ => panic!("unexpected ack line {line:?}"),
        }
    };
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < kill_after {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                record(&line);
                seen += 1;
            }
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("child output");
                panic!(
                    "child stopped acknowledging after {seen} acks ({:?}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap child");
    assert!(status.code().is_none(), "killed by the signal: {status:?}");
    reader.join().expect("reader thread");
    for line in rx.try_iter() {
        record(&line);
        seen += 1;
    }
    seen
}

fn check(dir: &Path, acked: &Acked) {
    let queue = Queue::open_with(Config::new(dir).background_timers(false)).expect("reopen");
    assert_consistent(&queue);
    for (id, (marker, pad)) in &acked.enqueued {
        let job = queue
            .get(*id)
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged enqueue of {id} lost"));
        assert!(job.payload == payload(marker, *pad), "payload of {id}");
    }
    for id in &acked.completed {
        let job = queue.get(*id).expect("get").expect("completed job exists");
        assert_eq!(job.state, JobState::Completed, "completion of {id} lost");
    }
    let mut log = queue.subscribe_after(0);
    let mut enqueues: HashMap<JobId, u32> = HashMap::new();
    let mut completions: HashMap<JobId, u32> = HashMap::new();
    while let Some(event) = log.try_recv().expect("read the event log") {
        match event.transition {
            Transition::Enqueue => *enqueues.entry(event.id).or_default() += 1,
            Transition::Complete => *completions.entry(event.id).or_default() += 1,
            _ => {}
        }
    }
    for id in acked.enqueued.keys() {
        assert_eq!(enqueues.get(id), Some(&1), "enqueue events of {id}");
    }
    for id in &acked.completed {
        assert_eq!(completions.get(id), Some(&1), "completion events of {id}");
    }
    assert!(
        enqueues
            .values()
            .chain(completions.values())
            .all(|n| *n == 1),
        "no event is logged twice"
    );
}

/// The child's workload; does nothing unless started by the test above.
#[test]
#[ignore = "run by journal_cuts_and_replays_survive_sigkill as a child process"]
fn journal_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let durability = match std::env::var(MODE_ENV).as_deref() {
        Ok("periodic") => Durability::Periodic(50),
        _ => Durability::Sync,
    };
    let pad: usize = std::env::var(PAD_ENV)
        .ok()
        .and_then(|pad| pad.parse().ok())
        .unwrap_or(PAD);
    let queue = Queue::open_with(Config::new(&dir).durability(durability)).expect("child opens");
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..2u64)
        .map(|worker| {
            let queue = queue.clone();
            let stdout = std::sync::Arc::clone(&stdout);
            std::thread::spawn(move || {
                let ack = |line: String| {
                    let mut out = stdout.lock().expect("stdout");
                    out.write_all(format!("ACK {line}\n").as_bytes())
                        .expect("ack");
                    out.flush().expect("flush ack");
                };
                let started = Instant::now();
                let stamp = std::process::id();
                let mut n = 0u64;
                // Bounded in time in case the parent is gone.
                while started.elapsed() < Duration::from_secs(60) {
                    n += 1;
                    let marker = format!("{stamp}-{worker}-{n}");
                    let done = queue
                        .enqueue(QUEUE, NewJob::new(payload(&marker, pad)))
                        .expect("enqueue");
                    ack(format!("E {} {marker}", done.job.id));
                    if n % 3 == 0 {
                        let leased = queue
                            .lease(QUEUE, &LeaseOptions::default().max_jobs(2))
                            .expect("lease");
                        for job in leased {
                            queue
                                .complete(job.job.id, job.lease_id, None)
                                .expect("complete");
                            ack(format!("C {}", job.job.id));
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
}
