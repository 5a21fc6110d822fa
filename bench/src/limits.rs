//! The cost of queue limits on the lease path: `queue-core` in-process,
//! C threads each looping "lease 1, complete" over N pre-enqueued jobs,
//! in four scenarios on a fresh data directory each, in the same run:
//!
//! - **none**: no limits (the baseline);
//! - **max_leased**: `max_leased` = 32 (below C, so leasers also wait on
//!   each other's completions);
//! - **groups**: `group_max_leased` = 1, the jobs spread over 1,000 groups;
//! - **busy group**: as **groups**, plus one group with B ready jobs
//!   (default 100,000) whose first job is leased and held for the whole
//!   run: every lease scans past that group, which must cost one index
//!   entry, not B.
//!
//! A leaser that gets nothing waits (`lease_wait`, woken by completions),
//! as a worker would. Each scenario runs `--runs` times (default 3); the
//! table shows the median rate and its ratio to the median of **none**.
//! `--smoke` runs tiny N, C and B once, for CI.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use queue_core::blocking::Queue;
use queue_core::{Config, Durability, LeaseOptions, NewJob, PatchQueueRequest};

use crate::report::markdown;

/// The options of the limits mode.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// Jobs leased and completed per scenario run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Leasing threads.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Ready jobs of the busy group.
    #[arg(long, default_value_t = 100_000)]
    pub busy_jobs: usize,
    /// Runs of each scenario (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Durability: `sync` (each operation on disk before it returns) or
    /// `periodic` (flushed every 100 ms, which shows the lease path's CPU
    /// cost instead of the disk's fsync rate).
    #[arg(long, default_value = "periodic")]
    pub durability: String,
    /// Time limit of each scenario run, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
    /// Directory under which the data directories are made.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Tiny N, C and B, one run: for CI.
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    None,
    MaxLeased,
    Groups,
    BusyGroup,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::None,
        Scenario::MaxLeased,
        Scenario::Groups,
        Scenario::BusyGroup,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::None => "none",
            Scenario::MaxLeased => "max_leased 32",
            Scenario::Groups => "group_max_leased 1, 1000 groups",
            Scenario::BusyGroup => "the same + one busy group",
        }
    }

    fn patch(self) -> PatchQueueRequest {
        match self {
            Scenario::None => PatchQueueRequest::default(),
            Scenario::MaxLeased => PatchQueueRequest {
                max_leased: Some(Some(32)),
                ..PatchQueueRequest::default()
            },
            Scenario::Groups | Scenario::BusyGroup => PatchQueueRequest {
                group_max_leased: Some(Some(1)),
                ..PatchQueueRequest::default()
            },
        }
    }

    fn grouped(self) -> bool {
        matches!(self, Scenario::Groups | Scenario::BusyGroup)
    }
}

const QUEUE: &str = "bench-limits";
const GROUPS: usize = 1000;

struct Plan {
    jobs: usize,
    concurrency: usize,
    busy_jobs: usize,
    runs: usize,
    durability: Durability,
    limit: Duration,
}

/// Runs the mode and prints the table.
///
/// # Errors
/// Bad options; storage failures; a run that leased or completed wrongly.
pub fn run(args: &LimitsArgs) -> anyhow::Result<()> {
    let durability = match args.durability.as_str() {
        "sync" => Durability::Sync,
        "periodic" => Durability::Periodic(100),
        other => anyhow::bail!("--durability is sync or periodic, not {other:?}"),
    };
    let plan = if args.smoke {
        Plan {
            jobs: 200,
            concurrency: 4,
            busy_jobs: 1000,
            runs: 1,
            durability,
            limit: Duration::from_secs(60),
        }
    } else {
        ensure!(
            args.jobs >= 1 && args.concurrency >= 1 && args.runs >= 1,
            "--jobs, --concurrency and --runs must be at least 1"
        );
        Plan {
            jobs: args.jobs,
            concurrency: args.concurrency,
            busy_jobs: args.busy_jobs,
            runs: args.runs,
            durability,
            limit: Duration::from_secs_f64(args.max_seconds),
        }
    };
    println!(
        "limits: N = {} jobs, C = {} threads, busy group B = {}, {} run(s) each, durability {}",
        plan.jobs, plan.concurrency, plan.busy_jobs, plan.runs, args.durability
    );
    let mut rates: Vec<(Scenario, Vec<f64>)> =
        Scenario::ALL.iter().map(|s| (*s, Vec::new())).collect();
    // Runs interleave the scenarios, so that a slow phase of the machine
    // does not fall on one scenario only.
    for run in 0..plan.runs {
        for (scenario, samples) in &mut rates {
            let rate = run_once(&plan, *scenario, args.dir.as_deref())
                .with_context(|| format!("{} run {}", scenario.name(), run + 1))?;
            println!(
                "  run {}: {:<34} {rate:>9.0} jobs/s",
                run + 1,
                scenario.name()
            );
            samples.push(rate);
        }
    }
    let base = median(&rates[0].1);
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|(scenario, samples)| {
            let m = median(samples);
            let runs: Vec<String> = samples.iter().map(|r| format!("{r:.0}")).collect();
            vec![
                scenario.name().to_owned(),
                runs.join(" / "),
                format!("{m:.0}"),
                format!("{:.2}", m / base),
            ]
        })
        .collect();
    print!(
        "{}",
        markdown(
            &["limits", "runs (jobs/s)", "median jobs/s", "vs none"],
            &[false, true, true, true],
            &rows
        )
    );
    Ok(())
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One run of `scenario` on a fresh directory: jobs per second.
fn run_once(plan: &Plan, scenario: Scenario, dir: Option<&std::path::Path>) -> anyhow::Result<f64> {
    let tmp = match dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let queue = Queue::open_with(Config::new(tmp.path()).durability(plan.durability))?;
    queue.update_queue(QUEUE, &scenario.patch())?;
    if scenario == Scenario::BusyGroup {
        let mut left = plan.busy_jobs;
        while left > 0 {
            let n = left.min(1000);
            let batch = (0..n)
                .map(|_| NewJob::new(b"0".to_vec()).group("busy"))
                .collect();
            queue.enqueue_batch(QUEUE, batch)?;
            left -= n;
        }
        // The busy group's head, held for the whole run.
        let held = queue.lease(
            QUEUE,
            &LeaseOptions::default().lease(Duration::from_secs(3600)),
        )?;
        ensure!(
            held.len() == 1 && held[0].job.group.as_deref() == Some("busy"),
            "the busy group's first job is leased first"
        );
    }
    let mut made = 0;
    while made < plan.jobs {
        let n = (plan.jobs - made).min(1000);
        let batch = (made..made + n)
            .map(|i| {
                let job = NewJob::new(format!("{i}").into_bytes());
                if scenario.grouped() {
                    job.group(format!("g{}", i % GROUPS))
                } else {
                    job
                }
            })
            .collect();
        queue.enqueue_batch(QUEUE, batch)?;
        made += n;
    }
    let done = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(plan.concurrency + 1));
    let mut threads = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (queue, done, start) = (queue.clone(), Arc::clone(&done), Arc::clone(&start));
        let (total, limit) = (plan.jobs, plan.limit);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            start.wait();
            let began = Instant::now();
            let opts = LeaseOptions::default().max_jobs(1);
            while done.load(Ordering::SeqCst) < total && began.elapsed() < limit {
                let leased = queue.lease_wait(QUEUE, &opts, Duration::from_millis(100))?;
                for l in leased {
                    ensure!(
                        l.job.group.as_deref() != Some("busy"),
                        "a busy job leased twice"
                    );
                    queue.complete(l.job.id, l.lease_id, None)?;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(())
        }));
    }
    start.wait();
    let began = Instant::now();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a leasing thread panicked"))??;
    }
    let elapsed = began.elapsed();
    let completed = done.load(Ordering::SeqCst);
    ensure!(
        completed == plan.jobs,
        "{completed} of {} jobs completed within the time limit",
        plan.jobs
    );
    let report = queue.verify()?;
    ensure!(report.is_ok(), "inconsistent store: {:?}", report.problems);
    Ok(completed as f64 / elapsed.as_secs_f64())
}
