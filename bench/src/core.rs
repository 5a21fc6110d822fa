//! The embedded mode: `queue-core` driven in-process by OS threads.
//!
//! First the raw fsync rate of the disk is measured (see [`crate::fsync`]).
//! Then, for each durability and each concurrency C, on a fresh data
//! directory each time:
//!
//! - **enqueue**: C threads share one [`Queue`] (each holds a clone) and
//!   enqueue jobs on one shared queue name until N jobs are in, claimed from
//!   a shared atomic counter. One sample per `enqueue` call.
//! - **cycle**: C threads each loop enqueue → lease → complete on a queue
//!   name of their own (`cycle-<thread>`), so every lease finds exactly the
//!   job its thread just enqueued and the cycle is measured without leasers
//!   racing each other for the head of one queue. N cycles in all; one
//!   sample per cycle (three durable operations).
//!
//! Every loop stops at its count or at the time limit, whichever comes first.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use clap::ValueEnum;
use queue_core::blocking::Queue;
use queue_core::{Config, Durability, LeaseOptions, NewJob};

use crate::claims::Claims;
use crate::fsync::{self, FsyncReport};
use crate::report::{self, Row};
use crate::stats::Latency;

/// Default jobs per run for durable runs with a single caller, which are
/// bound by the disk's fsync rate.
pub const DEFAULT_JOBS_DURABLE_SINGLE: usize = 2_000;
/// Default jobs per run otherwise.
pub const DEFAULT_JOBS: usize = 20_000;
/// The queue name every thread enqueues on in the enqueue phase.
const ENQUEUE_QUEUE: &str = "bench-enqueue";

/// The options every mode shares: what to run, how much, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Jobs (enqueue phase) or cycles (cycle phase) per run; overrides every
    /// default. Default: 2000 for durable runs with one caller (fsync-bound),
    /// 20000 for every other run.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Concurrent callers, comma-separated: OS threads in the embedded mode,
    /// keep-alive connections in the HTTP mode.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Size of each job's JSON payload in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Time limit of each run (one mode, phase and concurrency), in seconds;
    /// a run that hits it stops early and reports what it did.
    #[arg(long, default_value_t = 60.0)]
    pub max_seconds: f64,
    /// Directory under which the temporary data directories (and the fsync
    /// probe file) are made; default the system temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Durability modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sync,periodic")]
    pub modes: Vec<ModeArg>,
    /// Flush interval of the periodic mode, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub periodic_ms: u64,
}

impl RunArgs {
    /// Checks the counts and returns the time limit of one run.
    ///
    /// # Errors
    /// No concurrency, a concurrency or `--jobs` of 0, a bad time limit.
    pub fn check(&self) -> anyhow::Result<Duration> {
        ensure!(
            !self.concurrency.is_empty() && self.concurrency.iter().all(|c| *c >= 1),
            "--concurrency needs one or more values, each at least 1"
        );
        ensure!(self.jobs != Some(0), "--jobs must be at least 1");
        seconds("--max-seconds", self.max_seconds)
    }

    /// The directory the temporary data directories go in (created if
    /// missing).
    ///
    /// # Errors
    /// `--dir` cannot be created.
    pub fn parent_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Ok(dir.clone())
            }
            None => Ok(std::env::temp_dir()),
        }
    }

    /// The durabilities asked for, in order.
    pub fn durabilities(&self) -> Vec<Durability> {
        self.modes
            .iter()
            .map(|mode| match mode {
                ModeArg::Sync => Durability::Sync,
                ModeArg::Periodic => Durability::Periodic(self.periodic_ms),
            })
            .collect()
    }

    /// Jobs (or cycles) of one run.
    pub fn target(&self, durability: Durability, callers: usize) -> usize {
        self.jobs
            .unwrap_or(if durability == Durability::Sync && callers == 1 {
                DEFAULT_JOBS_DURABLE_SINGLE
            } else {
                DEFAULT_JOBS
            })
    }
}

/// Arguments of `bench core` (and of `bench compare`).
#[derive(Debug, clap::Args)]
pub struct CoreArgs {
    /// What to run, how much, and where.
    #[command(flatten)]
    pub run: RunArgs,
    /// Most rounds of the fsync probe.
    #[arg(long, default_value_t = 5_000)]
    pub fsync_max: usize,
    /// Time limit of the fsync probe, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub fsync_seconds: f64,
}

/// A durability mode to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// `Durability::Sync`: every acknowledged change is fsynced first.
    Sync,
    /// `Durability::Periodic(--periodic-ms)`: flushed in the background.
    Periodic,
}

/// The two timed phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Enqueue only, on one shared queue.
    Enqueue,
    /// Enqueue → lease → complete, each caller on a queue of its own.
    Cycle,
}

impl Phase {
    /// The phase's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Enqueue => "enqueue",
            Phase::Cycle => "cycle",
        }
    }
}

/// The durability's name in the table: `sync`, `periodic(100ms)`.
pub fn mode_name(durability: Durability) -> String {
    match durability {
        Durability::Sync => "sync".to_owned(),
        Durability::Periodic(ms) => format!("periodic({ms}ms)"),
    }
}

/// A positive number of seconds as a duration.
///
/// # Errors
/// Zero, negative, or not a finite number.
pub fn seconds(what: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("{what} must be a positive number of seconds, got {s}"))
}

/// A JSON object of exactly `size` bytes (`{"pad":"xxx…"}`); below 10 bytes,
/// `{}` padded with spaces (still valid JSON), and `{}` below 2.
pub fn json_payload(size: usize) -> Vec<u8> {
    json_payload_with_key("pad", size)
}

/// A JSON object of exactly `size` bytes with one string member `key`
/// (`{"<key>":"xxx…"}`); when that does not fit, `{}` padded with spaces
/// (still valid JSON), and `{}` below 2. `key` must need no JSON escaping.
pub fn json_payload_with_key(key: &str, size: usize) -> Vec<u8> {
    let overhead = key.len() + r#"{"":""}"#.len();
    if size >= overhead {
        format!(r#"{{"{key}":"{}"}}"#, "x".repeat(size - overhead)).into_bytes()
    } else {
        format!("{{}}{}", " ".repeat(size.saturating_sub(2))).into_bytes()
    }
}

/// What the embedded mode measured.
#[derive(Debug, Clone)]
pub struct CoreResults {
    /// The raw fsync probe.
    pub fsync: FsyncReport,
    /// One row per durability, concurrency and phase.
    pub rows: Vec<Row>,
    /// The process's CPU time (user + system, every thread: the callers,
    /// the batch leader, sled's threads) during each row's run, in the
    /// order of `rows`; `None` where it cannot be read.
    pub cpu: Vec<Option<Duration>>,
}

impl CoreResults {
    /// The fsync line.
    pub fn fsync_line(&self) -> String {
        fsync_line(&self.fsync)
    }

    /// The derived lines (group commit, single caller vs fsync).
    pub fn derived(&self) -> Vec<String> {
        derived(&self.rows, &self.fsync)
    }

    /// One line per row: the process's CPU time per operation (a job
    /// enqueued, or a cycle of enqueue, lease and complete).
    pub fn cpu_lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .zip(&self.cpu)
            .map(|(row, cpu)| {
                let per_job = match cpu {
                    Some(cpu) if row.jobs() > 0 => {
                        let per = cpu.as_secs_f64() / row.jobs() as f64;
                        format!("{:.1} µs/op ({:.2} s CPU)", per * 1e6, cpu.as_secs_f64())
                    }
                    _ => "n/a".to_owned(),
                };
                format!(
                    "CPU {} {} C={}: {per_job}",
                    row.mode, row.phase, row.concurrency
                )
            })
            .collect()
    }
}

/// Runs the embedded benchmark and prints the fsync figures, the table and
/// the derived ratios to standard output (progress goes to standard error).
///
/// # Errors
/// Bad arguments, I/O errors of the probe, and any queue error.
pub fn run(args: &CoreArgs) -> anyhow::Result<()> {
    let results = measure(args)?;
    println!();
    println!(
        "Embedded mode (queue-core in-process), payload {} bytes, time limit {} s per run.",
        json_payload(args.run.payload_bytes).len(),
        args.run.max_seconds
    );
    println!();
    println!("{}", results.fsync_line());
    println!();
    print!("{}", report::table(&results.rows));
    println!();
    for line in results.derived() {
        println!("{line}");
    }
    println!();
    println!("CPU time of the whole process (user + system, every thread) per operation:");
    for line in results.cpu_lines() {
        println!("{line}");
    }
    Ok(())
}

/// Runs the fsync probe and the embedded benchmark, printing progress to
/// standard error.
///
/// # Errors
/// Bad arguments, I/O errors of the probe, and any queue error.
pub fn measure(args: &CoreArgs) -> anyhow::Result<CoreResults> {
    let max_time = args.run.check()?;
    ensure!(args.fsync_max >= 1, "--fsync-max must be at least 1");
    let fsync_time = seconds("--fsync-seconds", args.fsync_seconds)?;
    let parent = args.run.parent_dir()?;
    let payload = json_payload(args.run.payload_bytes);

    eprintln!("fsync probe in {} ...", parent.display());
    let fsync = fsync::measure(&parent, args.fsync_max, fsync_time)?;
    eprintln!("{}", fsync_line(&fsync));

    let mut rows = Vec::new();
    let mut cpu = Vec::new();
    for durability in args.run.durabilities() {
        for &callers in &args.run.concurrency {
            let target = args.run.target(durability, callers);
            for phase in [Phase::Enqueue, Phase::Cycle] {
                let (row, used) = run_once(
                    &parent, durability, phase, callers, target, &payload, max_time,
                )
                .with_context(|| {
                    format!("{} {} C={callers}", mode_name(durability), phase.name())
                })?;
                eprintln!("{}", row.line());
                rows.push(row);
                cpu.push(used);
            }
        }
    }
    Ok(CoreResults { fsync, rows, cpu })
}

fn fsync_line(fsync: &FsyncReport) -> String {
    format!(
        "raw fsync ({} KiB append + fdatasync, in {}): {} syncs in {:.2} s = {:.0} syncs/s, p50 {}, p99 {}",
        fsync::BLOCK / 1024,
        fsync.dir.display(),
        fsync.syncs,
        fsync.elapsed.as_secs_f64(),
        fsync.rate(),
        Latency(fsync.latency.p50),
        Latency(fsync.latency.p99),
    )
}

/// The two ratios the targets are stated in: durable enqueue throughput at
/// the most callers over one caller (group commit; target at least 20× with
/// 64 callers), and durable single-caller enqueue over the raw fsync rate
/// (target within 2×, i.e. at least 0.5×).
fn derived(rows: &[Row], fsync: &FsyncReport) -> Vec<String> {
    let durable_enqueue = |c: usize| {
        rows.iter()
            .find(|r| r.mode == "sync" && r.phase == "enqueue" && r.concurrency == c)
    };
    let verdict = |ok: bool| if ok { "meets target" } else { "BELOW target" };
    let mut lines = Vec::new();
    let most = rows
        .iter()
        .filter(|r| r.mode == "sync" && r.phase == "enqueue")
        .map(|r| r.concurrency)
        .max();
    match (durable_enqueue(1), most.and_then(durable_enqueue)) {
        (Some(one), Some(many)) if many.concurrency > 1 && one.rate() > 0.0 => {
            let ratio = many.rate() / one.rate();
            let judged = if many.concurrency >= 64 {
                format!(" (target ≥ 20×: {})", verdict(ratio >= 20.0))
            } else {
                " (target ≥ 20× is stated for 64 callers)".to_owned()
            };
            lines.push(format!(
                "group commit: enqueue@{} / enqueue@1 = {ratio:.1}× ({:.0} / {:.0} jobs/s, durable){judged}",
                many.concurrency,
                many.rate(),
                one.rate()
            ));
        }
        _ => lines.push(
            "group commit: n/a (needs durable enqueue runs at C=1 and at a larger C)".to_owned(),
        ),
    }
    match durable_enqueue(1) {
        Some(one) if fsync.rate() > 0.0 => {
            let ratio = one.rate() / fsync.rate();
            lines.push(format!(
                "single-caller durable enqueue vs raw fsync rate = {ratio:.2}× ({:.0} jobs/s / {:.0} syncs/s) (target ≥ 0.5×, i.e. within 2×: {})",
                one.rate(),
                fsync.rate(),
                verdict(ratio >= 0.5)
            ));
        }
        _ => lines.push(
            "single-caller durable enqueue vs raw fsync rate: n/a (needs a durable enqueue run at C=1)"
                .to_owned(),
        ),
    }
    lines
}

/// Shared state of the callers of one run.
struct Run<'a> {
    queue: &'a Queue,
    phase: Phase,
    target: usize,
    callers: usize,
    payload: &'a [u8],
    max_time: Duration,
    claims: Claims,
    start: Barrier,
}

impl Run<'_> {
    /// One caller's loop; returns the latency of each operation it did.
    fn caller(&self, thread: usize) -> anyhow::Result<Vec<Duration>> {
        // A clone per thread, as separate callers of one process would hold.
        let queue = self.queue.clone();
        let name = match self.phase {
            Phase::Enqueue => ENQUEUE_QUEUE.to_owned(),
            Phase::Cycle => format!("cycle-{thread}"),
        };
        let opts = LeaseOptions::default();
        let mut latencies = Vec::with_capacity(self.target / self.callers + 1);
        self.start.wait();
        let deadline = Instant::now() + self.max_time;
        while self.claims.claim(deadline) {
            let job = NewJob::new(self.payload.to_vec());
            let t = Instant::now();
            match self.phase {
                Phase::Enqueue => {
                    queue.enqueue(&name, job)?;
                }
                Phase::Cycle => {
                    let sent = queue.enqueue(&name, job)?;
                    let leased = queue.lease(&name, &opts)?;
                    let [got] = leased.as_slice() else {
                        bail!("lease on {name} returned {} jobs, expected 1", leased.len());
                    };
                    ensure!(
                        got.job.id == sent.job.id,
                        "lease on {name} returned job {}, expected {}",
                        got.job.id,
                        sent.job.id
                    );
                    queue.complete(got.job.id, got.lease_id, None)?;
                }
            }
            latencies.push(t.elapsed());
        }
        Ok(latencies)
    }
}

/// The CPU time (user + system) of the whole process so far, every thread
/// included, exited ones too (Linux: fields 14 and 15 of `/proc/self/stat`,
/// in clock ticks of 10 ms, the value of `CLK_TCK` on Linux).
fn process_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3: utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One timed run on a fresh data directory under `parent`, with the
/// process's CPU time from the start signal until the last caller stopped.
fn run_once(
    parent: &Path,
    durability: Durability,
    phase: Phase,
    callers: usize,
    target: usize,
    payload: &[u8],
    max_time: Duration,
) -> anyhow::Result<(Row, Option<Duration>)> {
    let dir = tempfile::Builder::new()
        .prefix("bench-core-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a data directory in {}", parent.display()))?;
    let queue = Queue::open_with(Config::new(dir.path()).durability(durability))?;
    let run = Run {
        queue: &queue,
        phase,
        target,
        callers,
        payload,
        max_time,
        claims: Claims::new(target),
        // The callers and this thread, which starts the clock.
        start: Barrier::new(callers + 1),
    };
    let (outcomes, elapsed, used) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|thread| {
                let run = &run;
                s.spawn(move || {
                    let outcome = run.caller(thread);
                    if outcome.is_err() {
                        run.claims.stop();
                    }
                    outcome
                })
            })
            .collect();
        run.start.wait();
        let started = Instant::now();
        let cpu_before = process_cpu_time();
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a caller thread panicked")))
            })
            .collect();
        let used = match (cpu_before, process_cpu_time()) {
            (Some(before), Some(after)) => after.checked_sub(before),
            _ => None,
        };
        (outcomes, started.elapsed(), used)
    });
    let mut latencies = Vec::with_capacity(target);
    for outcome in outcomes {
        latencies.extend(outcome?);
    }
    let done = latencies.len();
    let timed_out = run.claims.timed_out() && done < target;

    // Outside the clock: check that what was acknowledged is stored.
    let stored = match phase {
        Phase::Enqueue => queue.stats(ENQUEUE_QUEUE)?.ready,
        Phase::Cycle => (0..callers)
            .map(|t| queue.stats(&format!("cycle-{t}")).map(|s| s.completed))
            .sum::<Result<u64, _>>()?,
    };
    ensure!(
        stored == done as u64,
        "{} acknowledged {done} jobs but the store counts {stored}",
        phase.name()
    );
    // Close the queue (final flush, threads joined) before removing its
    // directory.
    drop(queue);
    drop(dir);

    let row = Row {
        mode: mode_name(durability),
        phase: phase.name(),
        concurrency: callers,
        target,
        elapsed,
        latency: crate::stats::Summary::of(latencies),
        timed_out,
    };
    Ok((row, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_is_json() {
        for size in [0, 1, 2, 5, 9, 10, 11, 200, 4096] {
            let payload = json_payload(size);
            assert_eq!(payload.len(), size.max(2), "size {size}");
            let text = std::str::from_utf8(&payload).unwrap();
            assert!(text.starts_with('{') && text.trim_end().ends_with('}'));
        }
        assert_eq!(json_payload(11), br#"{"pad":"x"}"#);
        for size in [0, 2, 10, 11, 12, 200] {
            let payload = json_payload_with_key("data", size);
            assert_eq!(payload.len(), size.max(2), "size {size}");
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert!(value.is_object());
        }
        assert_eq!(json_payload_with_key("data", 12), br#"{"data":"x"}"#);
    }

    #[test]
    fn a_small_run_counts_what_it_did() {
        let parent = tempfile::tempdir().unwrap();
        let payload = json_payload(50);
        for phase in [Phase::Enqueue, Phase::Cycle] {
            let (row, cpu) = run_once(
                parent.path(),
                Durability::Periodic(100),
                phase,
                3,
                30,
                &payload,
                Duration::from_secs(30),
            )
            .unwrap();
            assert_eq!(row.jobs(), 30);
            assert!(!row.timed_out);
            assert_eq!(row.concurrency, 3);
            assert!(cpu.is_some(), "the process's CPU time is read on Linux");
        }
    }
}
