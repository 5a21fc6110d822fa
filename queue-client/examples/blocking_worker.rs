//! The blocking API, for programs without an async runtime: no `async`, no
//! `#[tokio::main]`. It enqueues a few word-count jobs with
//! `blocking::Client`, runs a `blocking::Worker` on them with a plain
//! closure, and stops the worker from another thread through its
//! `ShutdownHandle`: once it has handled as many jobs as were enqueued
//! (counted with an `AtomicU64`), or after 10 s without a job. Then it reads
//! each job's outcome. It ends by itself.
//!
//! ```sh
//! cargo run --release -p queue-server                         # terminal 1
//! cargo run -p queue-client --example blocking_worker [URL]   # terminal 2
//! ```
//!
//! The server URL is the first argument, else `$QUEUE_URL`, else
//! `http://127.0.0.1:7878`. `$QUEUE_TOKEN`, when set, is sent as the bearer
//! token.

use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use queue_client::blocking::{Client, Worker};
use queue_client::{Error, Failure, Job};
use serde::{Deserialize, Serialize};

mod support;

/// The result of a `word-count` job.
#[derive(Debug, Serialize, Deserialize)]
struct WordCount {
    words: usize,
    longest: String,
}

/// The stop for an idle worker.
const IDLE: Duration = Duration::from_secs(10);

/// The work: a plain function, a typed result or a [`Failure`].
fn count_words(job: &Job<String>) -> Result<WordCount, Failure> {
    let text = job.payload.trim();
    if text.is_empty() {
        return Err(Failure::permanent("nothing to count: the text is empty"));
    }
    std::thread::sleep(Duration::from_millis(100)); // Pretend it takes a while.
    let longest = text
        .split_whitespace()
        .max_by_key(|word| word.chars().count())
        .unwrap_or_default();
    Ok(WordCount {
        words: text.split_whitespace().count(),
        longest: longest.to_owned(),
    })
}

fn main() -> Result<(), Box<dyn StdError>> {
    let url = support::server_url();
    let client = Client::connect_with(&url, support::options())?;
    client.health()?;
    println!("connected to {url}");

    let texts: Vec<String> = [
        "the quick brown fox jumps over the lazy dog",
        "a durable job queue for Rust",
        "",
        "every acknowledged enqueue is on disk before the call returns",
    ]
    .map(String::from)
    .into();
    let word_count = client.queue::<String>("word-count");
    let jobs = word_count.enqueue_batch(&texts)?;
    println!("enqueued {} jobs", jobs.len());

    let worker = Worker::new(client.clone(), "word-count")
        .concurrency(2)
        .poll_wait(Duration::from_secs(1));
    let stop = worker.shutdown_handle();

    // The handler counts the jobs it handled; another thread watches the
    // count and the clock, and stops the worker through its handle.
    let handled = Arc::new(AtomicU64::new(0));
    let target = u64::try_from(jobs.len())?;
    let watcher = {
        let handled = Arc::clone(&handled);
        std::thread::spawn(move || {
            let mut seen = 0;
            let mut last_change = Instant::now();
            while !stop.is_shutdown() {
                std::thread::sleep(Duration::from_millis(50));
                let now = handled.load(Ordering::Relaxed);
                if now != seen {
                    (seen, last_change) = (now, Instant::now());
                }
                if now >= target {
                    println!("handled {now} jobs; stopping the worker");
                    stop.shutdown();
                } else if last_change.elapsed() >= IDLE {
                    println!("no job for {IDLE:?}; stopping the worker");
                    stop.shutdown();
                }
            }
        })
    };

    // Blocks this thread until the watcher stops the worker. The closure
    // runs on the client's blocking pool, two jobs at a time.
    let counter = Arc::clone(&handled);
    let report = worker.run(move |job: Job<String>| {
        let outcome = count_words(&job);
        println!(
            "job {}: {}",
            job.id,
            match &outcome {
                Ok(count) => format!("{} words, longest {:?}", count.words, count.longest),
                Err(failure) => format!("failed: {failure}"),
            }
        );
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    })?;
    if watcher.join().is_err() {
        eprintln!("the watcher thread panicked");
    }
    println!(
        "worker stopped: {} completed, {} failed, {} released",
        report.completed, report.failed, report.released
    );

    // Each job's outcome, from its handle. (Jobs left over from an earlier
    // run may have been handled first; ours then are still queued.)
    for (job, text) in jobs.iter().zip(&texts) {
        match job.wait::<WordCount>(Duration::from_secs(1)) {
            Ok(count) => println!("{text:?}: {} words", count.words),
            Err(Error::JobFailed { last_error, .. }) => println!("{text:?}: dead, {last_error}"),
            Err(Error::JobTimedOut { id, state, .. }) => {
                println!("{text:?}: job {id} is still {state}")
            }
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}
