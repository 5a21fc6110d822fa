//! The soak: the built binary SIGKILLed again and again (default 1,000
//! cycles) on one data directory while producers enqueue and workers lease
//! and complete. After every restart, every enqueue and completion
//! acknowledged before the kill is checked; at the end all of them are
//! checked again, every job drains, and a SIGTERM stops the server cleanly.
//!
//! Ignored by default (it runs for many minutes): `scripts/soak.sh` runs it.
//! Knobs (environment): `SOAK_CYCLES` (default 1000) and
//! `SOAK_MAX_SECONDS` (default 3600): the run stops starting new cycles
//! once the time bound is spent, checks everything as usual, and reports
//! how many cycles it ran.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::kill9::{Acked, drain, lenient, producer, send_sigterm, spawn_server, worker};
use crate::raw_http::Client;

/// A `u64` from the environment, or `default`.
fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {text:?}")),
        Err(_) => default,
    }
}

/// Waits until `acked` has counted `target` acknowledgements.
async fn reach(acked: &Acked, target: u64, cycle: u64) {
    while acked.count.load(Ordering::SeqCst) < target {
        let progressed = acked.progress.notified();
        tokio::pin!(progressed);
        progressed.as_mut().enable();
        if acked.count.load(Ordering::SeqCst) >= target {
            break;
        }
        tokio::time::timeout(Duration::from_secs(60), progressed)
            .await
            .unwrap_or_else(|_| panic!("cycle {cycle}: no progress for 60 s"));
    }
}

/// Checks the acknowledgements not checked yet (all of them when the
/// `checked` sets are empty) against the server behind `c`.
async fn check(
    c: &Client,
    acked: &Acked,
    checked_enqueued: &mut HashSet<String>,
    checked_completed: &mut HashSet<String>,
    cycle: u64,
) {
    let enqueued = acked.enqueued.lock().unwrap().clone();
    let completed = acked.completed.lock().unwrap().clone();
    for id in enqueued.difference(checked_enqueued) {
        let reply = c.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            reply.status, 200,
            "cycle {cycle}: acknowledged enqueue {id} lost: {}",
            reply.text
        );
    }
    for id in completed.difference(checked_completed) {
        let job = c.job(id).await;
        assert_eq!(
            job["state"], "completed",
            "cycle {cycle}: acknowledged completion of {id} lost: {job}"
        );
    }
    checked_enqueued.extend(enqueued);
    checked_completed.extend(completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak: run it with scripts/soak.sh"]
async fn soak_sigkill_cycles() {
    let cycles = knob("SOAK_CYCLES", 1000);
    let max = Duration::from_secs(knob("SOAK_MAX_SECONDS", 3600));
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Acked::default());
    let (mut checked_enqueued, mut checked_completed) = (HashSet::new(), HashSet::new());
    let mut ran = 0;
    for cycle in 0..cycles {
        if started.elapsed() >= max {
            break;
        }
        let (mut child, addr) = spawn_server(dir.path());
        // What the previous cycle was told before its kill is there.
        check(
            &Client::new(addr),
            &acked,
            &mut checked_enqueued,
            &mut checked_completed,
            cycle,
        )
        .await;
        let mut tasks = Vec::new();
        for tag in 0..2 {
            let tag = usize::try_from(cycle).unwrap() * 2 + tag;
            tasks.push(tokio::spawn(producer(
                lenient(addr),
                Arc::clone(&acked),
                tag,
            )));
            tasks.push(tokio::spawn(worker(lenient(addr), Arc::clone(&acked))));
        }
        // Kill at a different amount of progress each cycle.
        let target = acked.count.load(Ordering::SeqCst) + 20 + (cycle * 53) % 150;
        reach(&acked, target, cycle).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for task in tasks {
            task.await.unwrap();
        }
        ran += 1;
        if ran % 50 == 0 {
            eprintln!(
                "soak: {ran} cycles, {} s, {} enqueues and {} completions acknowledged",
                started.elapsed().as_secs(),
                checked_enqueued.len(),
                checked_completed.len()
            );
        }
    }

    // Everything, again, on a fresh start; then everything drains.
    let (mut child, addr) = spawn_server(dir.path());
    let c = Client::new(addr);
    check(&c, &acked, &mut HashSet::new(), &mut HashSet::new(), ran).await;
    drain(&c, 100_000).await;
    let stats = c.get("/v1/queues/k9").await.json;
    assert_eq!(
        (
            stats["scheduled"].as_u64(),
            stats["ready"].as_u64(),
            stats["leased"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "every job drained: {stats}"
    );
    let enqueued = acked.enqueued.lock().unwrap().len() as u64;
    let completed = acked.completed.lock().unwrap().len();
    let finished = stats["completed"].as_u64().unwrap() + stats["dead"].as_u64().unwrap();
    assert!(
        finished >= enqueued,
        "{finished} finished < {enqueued} acknowledged"
    );
    assert_eq!(send_sigterm(child.id()), 0);
    let status = child.wait().expect("reap");
    assert!(status.success(), "graceful stop exits 0, got {status:?}");
    let size = std::process::Command::new("du")
        .arg("-sh")
        .arg(dir.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "soak: {ran} of {cycles} kill -9 cycles in {} s; {enqueued} acknowledged enqueues and \
         {completed} acknowledged completions all present after every restart; \
         {finished} jobs finished, none left open; data directory {size}",
        started.elapsed().as_secs()
    );
}
