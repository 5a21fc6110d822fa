//! `bench peers`: our queue against the job queues users would pick
//! instead, on the same machine, in the same run, with the same workload.
//!
//! Workload per system, mode and concurrency C, on a fresh instance with a
//! fresh data directory:
//!
//! 1. **enqueue**: C clients put N jobs with a `--payload-bytes` JSON
//!    payload, one at a time each;
//! 2. **drain**: C workers take those N jobs one at a time (lease / reserve
//!    / getNextJob) and finish each (complete / delete / moveToCompleted).
//!
//! One latency sample per put, and per take + finish. Every loop stops at
//! its count or at `--max-seconds`. Systems:
//!
//! - ours embedded and over HTTP, durable (`sync`: fsync before the
//!   acknowledgement) and periodic (flush every 100 ms); over HTTP the drain
//!   is measured twice, each on a fresh server: one lease and one complete
//!   per job, and **settle-and-lease** (one `POST /v1/queues/{q}/settle`
//!   per job that completes it and leases the next: [`settle_drain`]);
//! - the **physical limit** ([`crate::limit`]): a minimal hyper server that
//!   appends each body to a file and group-commits with `fdatasync`, driven
//!   by the same load generator and requests as our HTTP enqueue (enqueue
//!   only);
//! - beanstalkd with a binlog, `-f 0` (fsync every write) and `-F` (never
//!   fsync), driven by the same Rust code as our HTTP server (one tokio task
//!   per connection on one thread);
//! - Redis with `appendonly yes`, `appendfsync always` and `everysec`, driven
//!   by BullMQ from `bench/peers/bullmq/bench.mjs` (Node), same shape; its
//!   drain twice: getNextJob + moveToCompleted without fetch-next, and
//!   **fetch-next** (moveToCompleted that takes the next job in the same
//!   call, as BullMQ's Worker runs).
//!
//! A drain-only mode (settle-and-lease, fetch-next) puts its N jobs with
//! its system's enqueue first; that enqueue is not shown again.
//!
//! For the systems in this process (ours, the physical limit) each row also
//! gets its CPU time per job: the process's CPU time during the phase, less
//! the load generator's thread for HTTP.
//!
//! `--targets` runs only what the performance targets need (C = 64 durable,
//! plus single-caller durable enqueues) `--rounds` times, alternating the
//! systems, and prints each target's ratio per round, the median and
//! whether it is met. Beside the table it prints the physical limit's
//! single-caller p50 over one `fdatasync`: the floor that the HTTP
//! single-caller target is measured against on this machine, not a target.
//!
//! `bench/peers/setup.sh` installs beanstalkd, redis-server and bullmq.
//! `--smoke` runs only our systems and the physical limit with a tiny N (CI
//! runs it so that the harness cannot rot).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use queue_core::blocking::Queue;
use queue_core::{CommitStats, Config, Durability, LeaseOptions, NewJob};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::claims::Claims;
use crate::client::{BlockingConnection, Connection, Response, request};
use crate::core::json_payload;
use crate::fsync;
use crate::http::{Server, thread_cpu_time};
use crate::limit::LimitServer;
use crate::report::{self, Row};
use crate::stats::Summary;

/// The workload options `bench peers` and `bench sdk` share.
#[derive(Debug, Clone, clap::Args)]
pub struct Workload {
    /// Jobs per run (enqueued, then drained).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent callers (enqueue) and workers, or worker concurrency
    /// (drain), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Size of each job's JSON payload in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Time limit of each phase, in seconds.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Directory under which the data directories are made; default the
    /// system temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A [`Workload`] checked and resolved for one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Jobs per run.
    pub jobs: usize,
    /// The concurrencies to run.
    pub concurrency: Vec<usize>,
    /// Where the data directories go.
    pub parent: PathBuf,
    /// Time limit of each phase.
    pub limit: Duration,
    /// Each job's JSON payload.
    pub payload: Vec<u8>,
}

impl Workload {
    /// The run these options ask for; `smoke` means 300 jobs at C = 1 and 8.
    ///
    /// # Errors
    /// No jobs, or a concurrency of 0.
    pub fn plan(&self, smoke: bool) -> anyhow::Result<Plan> {
        let (jobs, concurrency) = if smoke {
            (300, vec![1, 8])
        } else {
            (self.jobs, self.concurrency.clone())
        };
        ensure!(jobs > 0, "--jobs must be at least 1");
        ensure!(
            !concurrency.is_empty() && concurrency.iter().all(|c| *c > 0),
            "--concurrency needs values of at least 1"
        );
        Ok(Plan {
            jobs,
            concurrency,
            parent: self.dir.clone().unwrap_or_else(std::env::temp_dir),
            limit: Duration::from_secs(self.max_seconds.max(1)),
            payload: json_payload(self.payload_bytes),
        })
    }
}

/// The raw enqueue body for `payload`: `{"payload":<payload>}`.
pub(crate) fn enqueue_body(payload: &[u8]) -> Vec<u8> {
    let mut body = br#"{"payload":"#.to_vec();
    body.extend_from_slice(payload);
    body.push(b'}');
    body
}

/// Options of `bench peers`.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// The workload.
    #[command(flatten)]
    pub workload: Workload,
    /// Systems to run, comma-separated (default all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub systems: Vec<SystemArg>,
    /// Our systems and the physical limit only, 300 jobs, C = 1 and 8: a
    /// quick check that the harness works (CI runs it).
    #[arg(long, conflicts_with = "targets")]
    pub smoke: bool,
    /// Only the rows of the performance targets (C = the largest
    /// `--concurrency`, durable modes, plus single-caller durable enqueues),
    /// `--rounds` times alternating, then each target's ratio per round, its
    /// median and whether it is met; and, for reference, the physical
    /// limit's single-caller p50 over one fdatasync. It picks its own
    /// systems.
    #[arg(long, conflicts_with = "systems")]
    pub targets: bool,
    /// Rounds of `--targets`.
    #[arg(long, default_value_t = 3, requires = "targets")]
    pub rounds: usize,
    /// Our rows (embedded and HTTP) enqueue then drain N jobs this many
    /// times on one store, and report all of it as one row: so that the
    /// store's laps of committed writes end during the measured phases,
    /// and their writes to the trees are counted (one round of 20,000
    /// jobs fits in one durable lap, whose writes reach the trees after
    /// the run). The other systems run one round.
    #[arg(long, default_value_t = 1)]
    pub store_rounds: usize,
    /// CPU per job (µs) of the build to compare with, from the `CPU per
    /// job` line of its own `--targets` run in the same sitting: the CPU
    /// target (at most half of it) is judged against it. The line names
    /// this build's allocator (builds before it was named used the
    /// system's); for the engine alone, compare builds with the same one
    /// (`--no-default-features`: the system's).
    #[arg(long, requires = "targets")]
    pub cpu_baseline_us: Option<f64>,
}

/// A system family for `--systems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemArg {
    /// queue-core in-process.
    Embedded,
    /// queue-server over loopback HTTP: lease + complete, and
    /// settle-and-lease.
    Http,
    /// The physical limit: append + group-committed fdatasync over HTTP.
    Limit,
    /// beanstalkd with a binlog.
    Beanstalkd,
    /// Redis + BullMQ: getNextJob + moveToCompleted, and fetch-next.
    Bullmq,
}

/// One system in one durability mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Embedded(Durability),
    /// Enqueue, then drain with one lease and one complete per job.
    Http(Durability),
    /// Drain only (the jobs are put first, not shown): one settle request
    /// per job, completing it and leasing the next.
    HttpSettle(Durability),
    /// Enqueue only: [`crate::limit`].
    Limit,
    /// `true`: fsync every write (`-f 0`).
    Beanstalkd(bool),
    /// `true`: `appendfsync always`. Enqueue, then drain with getNextJob +
    /// moveToCompleted (no fetch-next).
    Bullmq(bool),
    /// Drain only: moveToCompleted with fetch-next, as BullMQ's Worker.
    BullmqFetchNext(bool),
}

/// The periodic mode `bench peers` runs.
const PERIODIC: Durability = Durability::Periodic(100);

impl Target {
    fn label(self) -> String {
        let durability = |d: Durability| match d {
            Durability::Sync => "durable: fsync before ack".to_owned(),
            Durability::Periodic(ms) => format!("periodic: flush every {ms} ms"),
        };
        let fsync = |always: bool| {
            if always {
                "appendfsync always"
            } else {
                "appendfsync everysec"
            }
        };
        match self {
            Target::Embedded(d) => format!("ours embedded ({})", durability(d)),
            Target::Http(d) => format!("ours http ({})", durability(d)),
            Target::HttpSettle(d) => format!("ours http settle-and-lease ({})", durability(d)),
            Target::Limit => "physical limit (append + group fdatasync)".to_owned(),
            Target::Beanstalkd(true) => "beanstalkd -b -f 0 (fsync every write)".to_owned(),
            Target::Beanstalkd(false) => "beanstalkd -b -F (binlog, no fsync)".to_owned(),
            Target::Bullmq(always) => format!("redis+bullmq ({})", fsync(always)),
            Target::BullmqFetchNext(always) => {
                format!("redis+bullmq fetch-next ({})", fsync(always))
            }
        }
    }
}

/// One row and the CPU it cost.
#[derive(Debug, Clone)]
struct Measured {
    row: Row,
    /// CPU time of this process during the phase (less the load
    /// generator's thread for a network system) over the jobs done; `None`
    /// for systems in another process.
    cpu_per_job: Option<Duration>,
    /// How our store grouped its commits during the phase (ours only).
    commits: Option<CommitStats>,
}

/// Runs the comparison and prints the table.
///
/// # Errors
/// A system fails to start, a request fails, a check fails.
pub fn run(args: &PeersArgs) -> anyhow::Result<()> {
    if args.targets {
        return run_targets(args);
    }
    let Plan {
        jobs,
        concurrency,
        parent,
        limit,
        payload,
    } = args.workload.plan(args.smoke)?;
    let families: Vec<SystemArg> = if args.smoke {
        vec![SystemArg::Embedded, SystemArg::Http, SystemArg::Limit]
    } else if args.systems.is_empty() {
        vec![
            SystemArg::Embedded,
            SystemArg::Http,
            SystemArg::Limit,
            SystemArg::Beanstalkd,
            SystemArg::Bullmq,
        ]
    } else {
        args.systems.clone()
    };
    let mut targets = Vec::new();
    for family in &families {
        match family {
            SystemArg::Embedded => {
                targets.push(Target::Embedded(Durability::Sync));
                targets.push(Target::Embedded(PERIODIC));
            }
            SystemArg::Http => {
                targets.push(Target::Http(Durability::Sync));
                targets.push(Target::HttpSettle(Durability::Sync));
                targets.push(Target::Http(PERIODIC));
                targets.push(Target::HttpSettle(PERIODIC));
            }
            SystemArg::Limit => targets.push(Target::Limit),
            SystemArg::Beanstalkd => {
                require("beanstalkd")?;
                targets.push(Target::Beanstalkd(true));
                targets.push(Target::Beanstalkd(false));
            }
            SystemArg::Bullmq => {
                require_bullmq()?;
                targets.push(Target::Bullmq(true));
                targets.push(Target::BullmqFetchNext(true));
                targets.push(Target::Bullmq(false));
                targets.push(Target::BullmqFetchNext(false));
            }
        }
    }
    let probe = fsync::measure(&parent, 5000, Duration::from_secs(2))?;

    let mut rows = Vec::new();
    for target in &targets {
        for c in &concurrency {
            rows.extend(run_logged(
                *target,
                &parent,
                Load {
                    jobs,
                    c: *c,
                    store_rounds: args.store_rounds,
                },
                limit,
                &payload,
            )?);
        }
    }

    println!();
    println!(
        "Peers: N = {jobs} jobs of {} bytes per run; phase enqueue = C clients put N jobs; \
         phase drain = C workers take and finish the N jobs one at a time. Time limit {} s per phase.",
        args.workload.payload_bytes,
        limit.as_secs()
    );
    println!();
    println!("{}", fsync_line(&parent, &probe));
    println!();
    print_rows(&rows);
    // The targets are stated for the full run; a smoke run says nothing
    // about them.
    if !args.smoke {
        let c = concurrency.iter().max().copied().unwrap_or(1);
        let round = Round::of(&rows, c, &probe);
        println!();
        print!("{}", targets_table(&[round], None));
    }
    Ok(())
}

/// How much one system is given: `jobs` per round at concurrency `c`, in
/// `store_rounds` rounds on one store (our rows; others run one round).
#[derive(Debug, Clone, Copy)]
struct Load {
    jobs: usize,
    c: usize,
    store_rounds: usize,
}

/// `run_target` with progress lines.
fn run_logged(
    target: Target,
    parent: &Path,
    load: Load,
    limit: Duration,
    payload: &[u8],
) -> anyhow::Result<Vec<Measured>> {
    let c = load.c;
    eprintln!("{} C={c} ...", target.label());
    let rows = run_target(target, parent, load, limit, payload)
        .with_context(|| format!("{} at C={c}", target.label()))?;
    for measured in &rows {
        eprintln!("  {}", measured.row.line());
    }
    Ok(rows)
}

fn fsync_line(parent: &Path, probe: &fsync::FsyncReport) -> String {
    format!(
        "raw fsync (4 KiB append + fdatasync, in {}): {:.0} syncs/s, p50 {}",
        parent.display(),
        probe.rate(),
        crate::stats::Latency(probe.latency.p50)
    )
}

/// The table of `rows`, then the CPU per job of the systems measured
/// in-process.
fn print_rows(rows: &[Measured]) {
    let table: Vec<Row> = rows.iter().map(|m| m.row.clone()).collect();
    print!("{}", report::table(&table));
    println!();
    println!(
        "CPU per job (this process during the phase, less the load generator's thread for \
         HTTP; 10 ms clock ticks):"
    );
    for measured in rows {
        if let Some(cpu) = measured.cpu_per_job {
            println!(
                "  {} {} C={}: {:.1} µs",
                measured.row.mode,
                measured.row.phase,
                measured.row.concurrency,
                cpu.as_secs_f64() * 1e6
            );
        }
    }
    if rows.iter().any(|measured| measured.commits.is_some()) {
        println!();
        println!(
            "How our store grouped its commits during the phase (operations per batch and the \
             leader's busy share of the phase; per commit, a group of batches written together, \
             and the committer's busy share; the journal's fdatasyncs):"
        );
    }
    for measured in rows {
        if let Some(commits) = &measured.commits {
            println!(
                "  {} {} C={}: {}",
                measured.row.mode,
                measured.row.phase,
                measured.row.concurrency,
                commits_line(commits, measured.row.elapsed)
            );
        }
    }
}

/// One phase's [`CommitStats`] in words.
fn commits_line(commits: &CommitStats, elapsed: Duration) -> String {
    let per = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let share = |busy: Duration| {
        if elapsed.is_zero() {
            0.0
        } else {
            100.0 * busy.as_secs_f64() / elapsed.as_secs_f64()
        }
    };
    let mean_us = if commits.fdatasyncs == 0 {
        0.0
    } else {
        commits.fdatasync_time.as_secs_f64() * 1e6 / commits.fdatasyncs as f64
    };
    format!(
        "{:.1} per batch (leader busy {:.0} %), {:.1} per commit (committer busy {:.0} %), \
         {} fdatasyncs of {:.0} µs",
        per(commits.batch_operations, commits.batches),
        share(commits.batch_time),
        per(commits.commit_operations, commits.commits),
        share(commits.commit_time),
        commits.fdatasyncs,
        mean_us
    )
}

/// `--targets`: the rows the targets need, `--rounds` times alternating,
/// each round's ratios and their medians.
fn run_targets(args: &PeersArgs) -> anyhow::Result<()> {
    let Plan {
        jobs,
        concurrency,
        parent,
        limit,
        payload,
    } = args.workload.plan(false)?;
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    require_bullmq()?;
    let c = concurrency.iter().max().copied().unwrap_or(1);
    let single = jobs.min(SINGLE_CALLER_JOBS);
    let plan = [
        (Target::Limit, c, jobs),
        (Target::Http(Durability::Sync), c, jobs),
        (Target::HttpSettle(Durability::Sync), c, jobs),
        (Target::Bullmq(true), c, jobs),
        (Target::BullmqFetchNext(true), c, jobs),
        (Target::Embedded(Durability::Sync), c, jobs),
        (Target::Embedded(PERIODIC), c, jobs),
        (Target::Embedded(Durability::Sync), 1, single),
        (Target::Http(Durability::Sync), 1, single),
        (Target::Limit, 1, single),
    ];
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round} of {}", args.rounds);
        let probe = fsync::measure(&parent, 5000, Duration::from_secs(2))?;
        let mut rows = Vec::new();
        for (target, c, jobs) in plan {
            let load = Load {
                jobs,
                c,
                store_rounds: args.store_rounds,
            };
            rows.extend(run_logged(target, &parent, load, limit, &payload)?);
        }
        println!();
        println!(
            "Round {round} of {}: N = {jobs} jobs of {} bytes at C = {c}, {single} at C = 1; \
             time limit {} s per phase.",
            args.rounds,
            args.workload.payload_bytes,
            limit.as_secs()
        );
        println!();
        println!("{}", fsync_line(&parent, &probe));
        println!();
        print_rows(&rows);
        rounds.push(Round::of(&rows, c, &probe));
    }
    println!();
    print!("{}", targets_table(&rounds, args.cpu_baseline_us));
    Ok(())
}

/// Jobs of a single-caller run in `--targets` (its p50 is what counts).
const SINGLE_CALLER_JOBS: usize = 2000;

/// What one round measured that the targets are stated in.
#[derive(Debug, Clone, Default, PartialEq)]
struct Round {
    /// Jobs/s at the largest C.
    http_enqueue: Option<f64>,
    http_drain: Option<f64>,
    http_settle_drain: Option<f64>,
    limit_enqueue: Option<f64>,
    bullmq_enqueue: Option<f64>,
    bullmq_drain: Option<f64>,
    bullmq_fetch_next_drain: Option<f64>,
    embedded_sync_enqueue: Option<f64>,
    embedded_periodic_enqueue: Option<f64>,
    /// Embedded durable enqueue + drain CPU at the largest C, per job, µs.
    embedded_cpu_us: Option<f64>,
    /// Single-caller durable enqueue p50, µs.
    embedded_single_p50_us: Option<f64>,
    http_single_p50_us: Option<f64>,
    /// The physical limit's single-caller p50, µs: the floor of an HTTP
    /// round trip plus one group-committed `fdatasync` (a reference for
    /// the HTTP single-caller target, not a target).
    limit_single_p50_us: Option<f64>,
    /// One fdatasync (the probe's p50), µs.
    fsync_p50_us: f64,
}

impl Round {
    fn of(rows: &[Measured], c: usize, probe: &fsync::FsyncReport) -> Round {
        let find = |target: Target, phase: &str, c: usize| {
            let label = target.label();
            rows.iter()
                .find(|m| m.row.mode == label && m.row.phase == phase && m.row.concurrency == c)
        };
        let rate = |target, phase| find(target, phase, c).map(|m| m.row.rate());
        let p50 =
            |target| find(target, "enqueue", 1).map(|m| m.row.latency.p50.as_secs_f64() * 1e6);
        let embedded_cpu_us = match (
            find(Target::Embedded(Durability::Sync), "enqueue", c),
            find(Target::Embedded(Durability::Sync), "drain", c),
        ) {
            (Some(enqueue), Some(drain)) => enqueue
                .cpu_per_job
                .zip(drain.cpu_per_job)
                .map(|(a, b)| (a + b).as_secs_f64() * 1e6),
            _ => None,
        };
        Round {
            http_enqueue: rate(Target::Http(Durability::Sync), "enqueue"),
            http_drain: rate(Target::Http(Durability::Sync), "drain"),
            http_settle_drain: rate(Target::HttpSettle(Durability::Sync), "drain"),
            limit_enqueue: rate(Target::Limit, "enqueue"),
            bullmq_enqueue: rate(Target::Bullmq(true), "enqueue"),
            bullmq_drain: rate(Target::Bullmq(true), "drain"),
            bullmq_fetch_next_drain: rate(Target::BullmqFetchNext(true), "drain"),
            embedded_sync_enqueue: rate(Target::Embedded(Durability::Sync), "enqueue"),
            embedded_periodic_enqueue: rate(Target::Embedded(PERIODIC), "enqueue"),
            embedded_cpu_us,
            embedded_single_p50_us: p50(Target::Embedded(Durability::Sync)),
            http_single_p50_us: p50(Target::Http(Durability::Sync)),
            limit_single_p50_us: p50(Target::Limit),
            fsync_p50_us: probe.latency.p50.as_secs_f64() * 1e6,
        }
    }
}

/// One target: how its ratio is made from a round, and its goal.
struct Goal {
    name: &'static str,
    ratio: fn(&Round, Option<f64>) -> Option<f64>,
    /// The ratio must be at least this (`at_least`) or at most it.
    bound: f64,
    at_least: bool,
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Issue 14's targets, in its order.
const GOALS: &[Goal] = &[
    Goal {
        name: "HTTP enqueue / BullMQ enqueue (appendfsync always), C max",
        ratio: |r, _| div(r.http_enqueue, r.bullmq_enqueue),
        bound: 2.0,
        at_least: true,
    },
    Goal {
        name: "HTTP enqueue / physical limit, C max",
        ratio: |r, _| div(r.http_enqueue, r.limit_enqueue),
        bound: 0.75,
        at_least: true,
    },
    Goal {
        name: "HTTP drain (lease + complete) / BullMQ drain (getNextJob + moveToCompleted), C max",
        ratio: |r, _| div(r.http_drain, r.bullmq_drain),
        bound: 1.5,
        at_least: true,
    },
    Goal {
        name: "HTTP settle-and-lease drain / BullMQ fetch-next drain, C max",
        ratio: |r, _| div(r.http_settle_drain, r.bullmq_fetch_next_drain),
        bound: 2.0,
        at_least: true,
    },
    Goal {
        name: "embedded durable enqueue / embedded periodic enqueue, C max",
        ratio: |r, _| div(r.embedded_sync_enqueue, r.embedded_periodic_enqueue),
        bound: 0.9,
        at_least: true,
    },
    Goal {
        name: "embedded durable CPU per job (enqueue + drain) / baseline build's, C max",
        ratio: |r, baseline| div(r.embedded_cpu_us, baseline),
        bound: 0.5,
        at_least: false,
    },
    Goal {
        name: "single-caller durable enqueue p50 / one fdatasync p50, embedded",
        ratio: |r, _| div(r.embedded_single_p50_us, Some(r.fsync_p50_us)),
        bound: 1.5,
        at_least: false,
    },
    Goal {
        name: "single-caller durable enqueue p50 / one fdatasync p50, HTTP",
        ratio: |r, _| div(r.http_single_p50_us, Some(r.fsync_p50_us)),
        bound: 1.5,
        at_least: false,
    },
];

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The targets table: each goal's ratio per round, the median, met or not;
/// then the CPU per job of each round (the figure a later build's
/// `--cpu-baseline-us` takes).
fn targets_table(rounds: &[Round], cpu_baseline_us: Option<f64>) -> String {
    let mut header = vec!["target".to_owned(), "goal".to_owned()];
    header.extend((1..=rounds.len()).map(|i| format!("run {i}")));
    header.extend(["median".to_owned(), "result".to_owned()]);
    let mut cells = Vec::new();
    for goal in GOALS {
        let ratios: Vec<Option<f64>> = rounds
            .iter()
            .map(|r| (goal.ratio)(r, cpu_baseline_us))
            .collect();
        let measured: Vec<f64> = ratios.iter().flatten().copied().collect();
        let mid = if measured.len() == ratios.len() {
            median(&measured)
        } else {
            None
        };
        let mut row = vec![
            goal.name.to_owned(),
            format!(
                "{} {:.2}×",
                if goal.at_least { "≥" } else { "≤" },
                goal.bound
            ),
        ];
        row.extend(ratios.iter().map(|r| match r {
            Some(r) => format!("{r:.2}×"),
            None => "–".to_owned(),
        }));
        row.push(mid.map_or("–".to_owned(), |m| format!("{m:.2}×")));
        row.push(match mid {
            None => "not measured".to_owned(),
            Some(m)
                if (goal.at_least && m >= goal.bound) || (!goal.at_least && m <= goal.bound) =>
            {
                "met".to_owned()
            }
            Some(_) => "not met".to_owned(),
        });
        cells.push(row);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut right = vec![false, true];
    right.extend(std::iter::repeat_n(true, rounds.len() + 1));
    right.push(false);
    let mut out = report::markdown(&header, &right, &cells);
    let cpu: Vec<f64> = rounds.iter().filter_map(|r| r.embedded_cpu_us).collect();
    out.push('\n');
    // The floor of the HTTP single-caller target on this machine: the
    // physical limit's own round trip and sync, over the same fdatasync.
    let floor: Vec<f64> = rounds
        .iter()
        .filter_map(|r| div(r.limit_single_p50_us, Some(r.fsync_p50_us)))
        .collect();
    if !floor.is_empty() {
        out.push_str(&format!(
            "Reference, not a target: physical limit single-caller p50 / one fdatasync p50: {} \
             (median {})\n",
            floor
                .iter()
                .map(|r| format!("{r:.2}×"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&floor).map_or("–".to_owned(), |m| format!("{m:.2}×")),
        ));
    }
    out.push_str(&format!(
        "CPU per job, embedded durable enqueue + drain, with {}: {} µs (median {}){}\n",
        crate::ALLOCATOR_NAME,
        cpu.iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&cpu).map_or("–".to_owned(), |m| format!("{m:.1}")),
        match cpu_baseline_us {
            Some(b) => format!("; baseline {b:.1} µs"),
            None => "; no baseline given: pass a build's median with --cpu-baseline-us".to_owned(),
        }
    ));
    out
}

fn require(binary: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ensure!(
        found,
        "{binary} is not installed: run bench/peers/setup.sh first"
    );
    Ok(())
}

fn require_bullmq() -> anyhow::Result<()> {
    require("redis-server")?;
    require("node")?;
    ensure!(
        bullmq_dir().join("node_modules/bullmq").is_dir(),
        "bullmq is not installed: run bench/peers/setup.sh first"
    );
    Ok(())
}

fn bullmq_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/bullmq")
}

/// Runs the phases of one system at one concurrency on a fresh instance:
/// enqueue and drain, enqueue only ([`Target::Limit`]) or drain only (the
/// jobs put first, not shown: [`Target::HttpSettle`],
/// [`Target::BullmqFetchNext`]).
fn run_target(
    target: Target,
    parent: &Path,
    load: Load,
    limit: Duration,
    payload: &[u8],
) -> anyhow::Result<Vec<Measured>> {
    let Load { jobs, c, .. } = load;
    let label = target.label();
    let rounds = match target {
        Target::Embedded(_) | Target::Http(_) | Target::HttpSettle(_) => load.store_rounds.max(1),
        _ => 1,
    };
    let row = |phase: &'static str, (result, cpu, commits): Run| {
        let done = result.samples.len();
        Measured {
            row: Row {
                mode: label.clone(),
                phase,
                concurrency: c,
                target: jobs * rounds,
                elapsed: result.elapsed,
                timed_out: result.timed_out,
                latency: Summary::of(result.samples),
            },
            cpu_per_job: cpu.filter(|_| done > 0).map(|cpu| cpu / done as u32),
            commits,
        }
    };
    match target {
        Target::Embedded(durability) => {
            let dir = tempfile::Builder::new()
                .prefix("peers-ours-")
                .tempdir_in(parent)?;
            let queue = Queue::open_with(Config::new(dir.path()).durability(durability))?;
            let mut enqueues = Vec::new();
            let mut drains = Vec::new();
            let stats = || queue.commit_stats();
            for _ in 0..rounds {
                enqueues.push(with_commits(stats, || {
                    with_cpu(false, || {
                        threads(c, jobs, limit, |_| {
                            queue.enqueue("peers", NewJob::new(payload.to_vec()))?;
                            Ok(())
                        })
                    })
                })?);
                drains.push(with_commits(stats, || {
                    with_cpu(false, || {
                        threads(c, jobs, limit, |_| {
                            let leased = queue.lease("peers", &LeaseOptions::default())?;
                            let job = leased.first().ok_or_else(|| anyhow!("no job to lease"))?;
                            queue.complete(job.job.id, job.lease_id, None)?;
                            Ok(())
                        })
                    })
                })?);
            }
            let (enqueue, drain) = (merged(enqueues), merged(drains));
            check_ours(&queue.stats("peers")?, &enqueue.0, &drain.0)?;
            Ok(vec![row("enqueue", enqueue), row("drain", drain)])
        }
        Target::Http(durability) | Target::HttpSettle(durability) => {
            let settle = matches!(target, Target::HttpSettle(_));
            let server = Server::start(parent, durability)?;
            let addr = server.addr;
            let enqueue_body = enqueue_body(payload);
            let result = (|| {
                let mut enqueues = Vec::new();
                let mut drains = Vec::new();
                let stats = || server.commit_stats();
                for _ in 0..rounds {
                    let body = enqueue_body.clone();
                    enqueues.push(with_commits(stats, || {
                        with_cpu(true, || {
                            connections(c, jobs, limit, addr, Protocol::Http, move |conn| {
                                let body = body.clone();
                                Box::pin(async move { conn.http_enqueue(&body).await })
                            })
                        })
                    })?);
                    drains.push(with_commits(stats, || {
                        with_cpu(true, || {
                            if settle {
                                settle_drain(c, jobs, limit, addr)
                            } else {
                                connections(c, jobs, limit, addr, Protocol::Http, |conn| {
                                    Box::pin(async move { conn.http_drain_one().await })
                                })
                            }
                        })
                    })?);
                }
                let (enqueue, drain) = (merged(enqueues), merged(drains));
                check_http(addr, enqueue.0.samples.len(), drain.0.samples.len())?;
                Ok::<_, anyhow::Error>((enqueue, drain))
            })();
            server.stop()?;
            let (enqueue, drain) = result?;
            Ok(if settle {
                vec![row("drain", drain)]
            } else {
                vec![row("enqueue", enqueue), row("drain", drain)]
            })
        }
        Target::Limit => {
            let server = LimitServer::start(parent)?;
            let addr = server.addr;
            let enqueue_body = enqueue_body(payload);
            let enqueue = with_cpu(true, || {
                connections(c, jobs, limit, addr, Protocol::Http, move |conn| {
                    let body = enqueue_body.clone();
                    Box::pin(async move { conn.http_enqueue(&body).await })
                })
            });
            let stats = server.stop()?;
            let enqueue = enqueue?;
            let done = enqueue.0.samples.len() as u64;
            ensure!(
                stats.records == done,
                "the physical-limit server holds {} records, {done} were acknowledged",
                stats.records
            );
            eprintln!(
                "  physical limit: {} records in {} fdatasyncs ({:.1} per sync)",
                stats.records,
                stats.syncs,
                stats.records as f64 / stats.syncs.max(1) as f64
            );
            let (enqueue, cpu) = enqueue;
            Ok(vec![row("enqueue", (enqueue, cpu, None))])
        }
        Target::Beanstalkd(fsync_every_write) => {
            let dir = tempfile::Builder::new()
                .prefix("peers-beanstalkd-")
                .tempdir_in(parent)?;
            let port = free_port()?;
            let mut command = Command::new("beanstalkd");
            command.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-b"]);
            command.arg(dir.path());
            if fsync_every_write {
                command.args(["-f", "0"]);
            } else {
                command.arg("-F");
            }
            let process = Process::start(command, port)?;
            let addr = process.addr;
            let owned = payload.to_vec();
            let result = (|| {
                let enqueue =
                    connections(c, jobs, limit, addr, Protocol::Beanstalkd, move |conn| {
                        let payload = owned.clone();
                        Box::pin(async move { conn.beanstalk_put(&payload).await })
                    })?;
                let drain = connections(c, jobs, limit, addr, Protocol::Beanstalkd, |conn| {
                    Box::pin(async move { conn.beanstalk_reserve_delete().await })
                })?;
                Ok::<_, anyhow::Error>((enqueue, drain))
            })();
            drop(process);
            let (enqueue, drain) = result?;
            Ok(vec![
                row("enqueue", (enqueue, None, None)),
                row("drain", (drain, None, None)),
            ])
        }
        Target::Bullmq(always) | Target::BullmqFetchNext(always) => {
            let fetch_next = matches!(target, Target::BullmqFetchNext(_));
            let dir = tempfile::Builder::new()
                .prefix("peers-redis-")
                .tempdir_in(parent)?;
            let port = free_port()?;
            let mut command = Command::new("redis-server");
            command.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                if always { "always" } else { "everysec" },
                "--daemonize",
                "no",
                "--dir",
            ]);
            command.arg(dir.path());
            let process = Process::start(command, port)?;
            let enqueue = bullmq(port, "enqueue", jobs, c, limit, payload.len())?;
            let drain_phase = if fetch_next {
                "drain-fetch-next"
            } else {
                "drain"
            };
            let drain = bullmq(port, drain_phase, jobs, c, limit, payload.len())?;
            drop(process);
            Ok(if fetch_next {
                vec![row("drain", (drain, None, None))]
            } else {
                vec![
                    row("enqueue", (enqueue, None, None)),
                    row("drain", (drain, None, None)),
                ]
            })
        }
    }
}

/// The phases of several rounds as one: their operations, wall times and
/// CPU times added up.
/// A phase run: what the load generator saw, the CPU time it cost (see
/// [`with_cpu`]) and, for ours, how the store grouped its commits (see
/// [`with_commits`]).
type Run = (Phase, Option<Duration>, Option<CommitStats>);

fn merged(phases: Vec<Run>) -> Run {
    let mut all = Phase {
        samples: Vec::new(),
        elapsed: Duration::ZERO,
        timed_out: false,
    };
    let mut cpu = Some(Duration::ZERO);
    let mut commits = Some(CommitStats::default());
    for (phase, phase_cpu, phase_commits) in phases {
        all.samples.extend(phase.samples);
        all.elapsed += phase.elapsed;
        all.timed_out |= phase.timed_out;
        cpu = cpu.zip(phase_cpu).map(|(a, b)| a + b);
        commits = commits.zip(phase_commits).map(|(a, b)| add_commits(&a, &b));
    }
    (all, cpu, commits)
}

/// The statistics of two intervals together.
fn add_commits(a: &CommitStats, b: &CommitStats) -> CommitStats {
    CommitStats {
        batches: a.batches + b.batches,
        batch_operations: a.batch_operations + b.batch_operations,
        batch_time: a.batch_time + b.batch_time,
        commits: a.commits + b.commits,
        commit_operations: a.commit_operations + b.commit_operations,
        commit_time: a.commit_time + b.commit_time,
        fdatasyncs: a.fdatasyncs + b.fdatasyncs,
        fdatasync_time: a.fdatasync_time + b.fdatasync_time,
    }
}

/// Runs `phase` and reads, from `stats`, how our store grouped its commits
/// meanwhile.
fn with_commits(
    stats: impl Fn() -> Option<CommitStats>,
    phase: impl FnOnce() -> anyhow::Result<(Phase, Option<Duration>)>,
) -> anyhow::Result<Run> {
    let before = stats();
    let (result, cpu) = phase()?;
    let commits = before
        .zip(stats())
        .map(|(before, after)| after.since(&before));
    Ok((result, cpu, commits))
}

/// Runs `phase` and measures the CPU time this process spent in it; with
/// `minus_caller`, less the calling thread's (the load generator of a
/// network system runs there). `None` where `/proc` does not tell.
fn with_cpu(
    minus_caller: bool,
    phase: impl FnOnce() -> anyhow::Result<Phase>,
) -> anyhow::Result<(Phase, Option<Duration>)> {
    let (process, caller) = (process_cpu_time(), thread_cpu_time());
    let result = phase()?;
    let process = process
        .zip(process_cpu_time())
        .map(|(before, after)| after.saturating_sub(before));
    let cpu = if minus_caller {
        let caller = caller
            .zip(thread_cpu_time())
            .map(|(before, after)| after.saturating_sub(before));
        process.zip(caller).map(|(p, c)| p.saturating_sub(c))
    } else {
        process
    };
    Ok((result, cpu))
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// in clock ticks of 10 ms (Linux reports them in `USER_HZ` = 100 on every
/// architecture), threads that have ended included.
fn process_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&text)
}

/// utime + stime of a `/proc/<pid>/stat` line.
fn parse_stat_cpu(text: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing one, from field 3 (state).
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Checks with `GET /v1/queues/peers` that the server counts what was
/// acknowledged: `drained` completed, the rest of `enqueued` ready, none
/// leased.
fn check_http(addr: SocketAddr, enqueued: usize, drained: usize) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Stats {
        ready: u64,
        leased: u64,
        completed: u64,
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut conn = Connection::connect(addr).await?;
        let req = request("GET", "/v1/queues/peers", conn.host(), b"");
        let response = conn.send(&req).await?;
        response.expect(200, "queue stats")?;
        let stats: Stats = serde_json::from_slice(response.body).context("queue stats")?;
        ensure!(
            stats.completed == drained as u64
                && stats.ready + stats.completed == enqueued as u64
                && stats.leased == 0,
            "acknowledged {enqueued} enqueues and {drained} completions, but the server counts \
             ready {}, leased {}, completed {}",
            stats.ready,
            stats.leased,
            stats.completed
        );
        Ok(())
    })
}

/// What one phase did.
pub(crate) struct Phase {
    /// One latency sample per operation done.
    pub(crate) samples: Vec<Duration>,
    /// Wall time from the start until the last caller stopped.
    pub(crate) elapsed: Duration,
    /// Whether the time limit stopped a caller.
    pub(crate) timed_out: bool,
}

/// C OS threads sharing `op` (the embedded system).
fn threads(
    c: usize,
    jobs: usize,
    limit: Duration,
    op: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Phase> {
    let claims = Claims::new(jobs);
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let results: Vec<anyhow::Result<Vec<Duration>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..c)
            .map(|i| {
                let (claims, op) = (&claims, &op);
                scope.spawn(move || {
                    let mut samples = Vec::new();
                    while claims.claim(deadline) {
                        let t = Instant::now();
                        if let Err(e) = op(i) {
                            claims.stop();
                            return Err(e);
                        }
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a caller panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut samples = Vec::with_capacity(jobs);
    for result in results {
        samples.extend(result?);
    }
    Ok(Phase {
        samples,
        elapsed,
        timed_out: claims.timed_out(),
    })
}

fn check_ours(
    stats: &queue_core::QueueStats,
    enqueue: &Phase,
    drain: &Phase,
) -> anyhow::Result<()> {
    ensure!(
        stats.completed == drain.samples.len() as u64
            && stats.ready + stats.completed == enqueue.samples.len() as u64
            && stats.leased == 0,
        "the store does not show what was acknowledged: {stats:?}"
    );
    Ok(())
}

/// Which wire protocol a connection speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    Http,
    Beanstalkd,
}

/// One client connection of a network system.
pub(crate) enum Conn {
    Http(Box<Connection>),
    Beanstalkd(BufReader<TcpStream>),
}

pub(crate) type OpFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// C connections on one single-threaded runtime, one task each.
pub(crate) fn connections<F>(
    c: usize,
    jobs: usize,
    limit: Duration,
    addr: SocketAddr,
    protocol: Protocol,
    op: F,
) -> anyhow::Result<Phase>
where
    F: for<'a> Fn(&'a mut Conn) -> OpFuture<'a> + Clone + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut conns = Vec::with_capacity(c);
        for _ in 0..c {
            conns.push(match protocol {
                Protocol::Http => Conn::Http(Box::new(Connection::connect(addr).await?)),
                Protocol::Beanstalkd => {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Conn::Beanstalkd(BufReader::new(stream))
                }
            });
        }
        let claims = Arc::new(Claims::new(jobs));
        let deadline = Instant::now() + limit;
        let started = Instant::now();
        let local = tokio::task::LocalSet::new();
        let handles: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let (claims, op) = (Arc::clone(&claims), op.clone());
                local.spawn_local(async move {
                    let mut samples = Vec::new();
                    while claims.claim(deadline) {
                        let t = Instant::now();
                        if let Err(e) = op(&mut conn).await {
                            claims.stop();
                            return Err(e);
                        }
                        samples.push(t.elapsed());
                    }
                    Ok::<_, anyhow::Error>(samples)
                })
            })
            .collect();
        let results = local
            .run_until(async {
                let mut results = Vec::new();
                for handle in handles {
                    results.push(handle.await);
                }
                results
            })
            .await;
        let elapsed = started.elapsed();
        let mut samples = Vec::with_capacity(jobs);
        for result in results {
            samples.extend(result.map_err(|e| anyhow!("a connection task failed: {e}"))??);
        }
        Ok(Phase {
            samples,
            elapsed,
            timed_out: claims.timed_out(),
        })
    })
}

/// The settle-and-lease drain over raw HTTP: C connections on one
/// single-threaded runtime, one task each, as [`connections`]. Each task
/// leases one job, then sends one `POST /v1/queues/peers/settle` per job
/// that completes the job it holds and, if it claimed another, leases the
/// next in the same request; its last settle leases nothing. Each lease is
/// asked for only under a claim, so (as in the lease + complete drain)
/// there are never more leases than ready jobs and an empty one is an
/// error.
///
/// One sample per job: the time from the end of the previous job's settle
/// (or the task's first lease) to the end of this job's settle, i.e. one
/// round trip per job once running.
fn settle_drain(c: usize, jobs: usize, limit: Duration, addr: SocketAddr) -> anyhow::Result<Phase> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut conns = Vec::with_capacity(c);
        for _ in 0..c {
            conns.push(Connection::connect(addr).await?);
        }
        let claims = Arc::new(Claims::new(jobs));
        let deadline = Instant::now() + limit;
        let started = Instant::now();
        let local = tokio::task::LocalSet::new();
        let handles: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let claims = Arc::clone(&claims);
                local.spawn_local(async move {
                    let result = settle_loop(&mut conn, &claims, deadline).await;
                    if result.is_err() {
                        claims.stop();
                    }
                    result
                })
            })
            .collect();
        let results = local
            .run_until(async {
                let mut results = Vec::new();
                for handle in handles {
                    results.push(handle.await);
                }
                results
            })
            .await;
        let elapsed = started.elapsed();
        let mut samples = Vec::with_capacity(jobs);
        for result in results {
            samples.extend(result.map_err(|e| anyhow!("a connection task failed: {e}"))??);
        }
        Ok(Phase {
            samples,
            elapsed,
            timed_out: claims.timed_out(),
        })
    })
}

/// One connection's loop of [`settle_drain`].
async fn settle_loop(
    conn: &mut Connection,
    claims: &Claims,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    if !claims.claim(deadline) {
        return Ok(samples);
    }
    let mut since = Instant::now();
    let req = lease_one_request(conn.host());
    let mut held = leased_one(conn.send(&req).await?)?;
    loop {
        let more = claims.claim(deadline);
        let req = settle_request(conn.host(), &held, more);
        let next = settled(conn.send(&req).await?, &held, more)?;
        samples.push(since.elapsed());
        since = Instant::now();
        match next {
            Some(job) => held = job,
            None => return Ok(samples),
        }
    }
}

/// The raw settle request completing `job` and, with `lease_next`, leasing
/// one more job as [`lease_one_request`] does. It prefers `return=minimal`,
/// as the SDK's worker does: each settled item's state, not its job.
fn settle_request(host: &str, job: &LeasedJob, lease_next: bool) -> Vec<u8> {
    let lease = if lease_next {
        r#","lease":{"max_jobs":1,"lease_ms":60000}"#
    } else {
        ""
    };
    let body = format!(
        r#"{{"complete":[{{"id":"{}","lease_id":"{}"}}]{lease}}}"#,
        job.id, job.lease_id
    );
    let mut out = request("POST", "/v1/queues/peers/settle", host, body.as_bytes());
    let after_request_line = out
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(0, |at| at + 2);
    out.splice(
        after_request_line..after_request_line,
        b"Prefer: return=minimal\r\n".iter().copied(),
    );
    out
}

/// The settle response of [`settle_request`]: `200`, one result of status
/// `200` for `job`, and the next job when one was asked for.
fn settled(
    response: Response<'_>,
    job: &LeasedJob,
    lease_next: bool,
) -> anyhow::Result<Option<LeasedJob>> {
    #[derive(Deserialize)]
    struct Settled {
        results: Vec<SettleResult>,
        jobs: Vec<LeasedJob>,
    }
    #[derive(Deserialize)]
    struct SettleResult {
        id: String,
        status: u16,
        #[serde(default)]
        state: Option<String>,
        #[serde(default)]
        job: Option<serde_json::Value>,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    response.expect(200, "settle")?;
    let settled: Settled = serde_json::from_slice(response.body).context("settle response")?;
    match settled.results.as_slice() {
        [result]
            if result.id == job.id
                && result.status == 200
                && result.state.as_deref() == Some("completed")
                && result.job.is_none() => {}
        [result] => bail!(
            "settle: job {} answered {} {:?}",
            result.id,
            result.status,
            result.error
        ),
        results => bail!("settle: {} results for one item", results.len()),
    }
    let mut jobs = settled.jobs.into_iter();
    match (lease_next, jobs.next(), jobs.next()) {
        (true, Some(next), None) => Ok(Some(next)),
        (false, None, None) => Ok(None),
        (true, None, _) => bail!("settle: no job to lease"),
        _ => bail!("settle: more jobs leased than asked for"),
    }
}

#[derive(Deserialize)]
struct LeasedJobs {
    jobs: Vec<LeasedJob>,
}

#[derive(Debug, Deserialize)]
struct LeasedJob {
    id: String,
    lease_id: String,
}

/// The raw enqueue request: `POST /v1/queues/peers/jobs` with `body`.
fn enqueue_request(host: &str, body: &[u8]) -> Vec<u8> {
    request("POST", "/v1/queues/peers/jobs", host, body)
}

/// The raw lease request: at most one job of `peers`, leased for 60 s, no
/// waiting (the drain only leases jobs it knows are ready).
fn lease_one_request(host: &str) -> Vec<u8> {
    request(
        "POST",
        "/v1/queues/peers/lease",
        host,
        br#"{"max_jobs":1,"lease_ms":60000}"#,
    )
}

/// The job of a lease response (`200` expected); an empty lease is an error:
/// a drain claims exactly as many leases as there are ready jobs.
fn leased_one(response: Response<'_>) -> anyhow::Result<LeasedJob> {
    response.expect(200, "lease")?;
    let leased: LeasedJobs = serde_json::from_slice(response.body).context("lease response")?;
    leased
        .jobs
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no job to lease"))
}

/// The raw complete request of a leased job.
fn complete_request(host: &str, job: &LeasedJob) -> Vec<u8> {
    let body = format!(r#"{{"lease_id":"{}"}}"#, job.lease_id);
    request(
        "POST",
        &format!("/v1/jobs/{}/complete", job.id),
        host,
        body.as_bytes(),
    )
}

impl Conn {
    /// One `POST /v1/queues/peers/jobs` with `body`; `202` expected.
    pub(crate) async fn http_enqueue(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let Conn::Http(conn) = self else {
            bail!("not an HTTP connection")
        };
        let req = enqueue_request(conn.host(), body);
        conn.send(&req).await?.expect(202, "enqueue")
    }

    /// One lease of one job on `peers` and its complete.
    pub(crate) async fn http_drain_one(&mut self) -> anyhow::Result<()> {
        let Conn::Http(conn) = self else {
            bail!("not an HTTP connection")
        };
        let req = lease_one_request(conn.host());
        let job = leased_one(conn.send(&req).await?)?;
        let req = complete_request(conn.host(), &job);
        conn.send(&req).await?.expect(200, "complete")
    }

    fn beanstalk(&mut self) -> anyhow::Result<&mut BufReader<TcpStream>> {
        match self {
            Conn::Beanstalkd(stream) => Ok(stream),
            Conn::Http(_) => bail!("not a beanstalkd connection"),
        }
    }

    async fn beanstalk_put(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let stream = self.beanstalk()?;
        let mut command = format!("put 1024 0 120 {}\r\n", payload.len()).into_bytes();
        command.extend_from_slice(payload);
        command.extend_from_slice(b"\r\n");
        stream.get_mut().write_all(&command).await?;
        let line = read_line(stream).await?;
        ensure!(line.starts_with("INSERTED "), "put answered {line:?}");
        Ok(())
    }

    async fn beanstalk_reserve_delete(&mut self) -> anyhow::Result<()> {
        let stream = self.beanstalk()?;
        stream
            .get_mut()
            .write_all(b"reserve-with-timeout 10\r\n")
            .await?;
        let line = read_line(stream).await?;
        let mut parts = line.split(' ');
        let (Some("RESERVED"), Some(id), Some(bytes)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("reserve answered {line:?}");
        };
        let bytes: usize = bytes.parse().context("reserved job size")?;
        let mut body = vec![0u8; bytes + 2];
        stream.read_exact(&mut body).await?;
        let id = id.to_owned();
        stream
            .get_mut()
            .write_all(format!("delete {id}\r\n").as_bytes())
            .await?;
        let line = read_line(stream).await?;
        ensure!(line == "DELETED", "delete answered {line:?}");
        Ok(())
    }
}

/// [`Conn::http_enqueue`] on a blocking connection: the same request and
/// check.
pub(crate) fn http_enqueue_blocking(
    conn: &mut BlockingConnection,
    body: &[u8],
) -> anyhow::Result<()> {
    let req = enqueue_request(conn.host(), body);
    conn.send(&req)?.expect(202, "enqueue")
}

/// [`Conn::http_drain_one`] on a blocking connection: the same lease of one
/// job, the same complete, the same checks.
pub(crate) fn http_drain_one_blocking(conn: &mut BlockingConnection) -> anyhow::Result<()> {
    let req = lease_one_request(conn.host());
    let job = leased_one(conn.send(&req)?)?;
    let req = complete_request(conn.host(), &job);
    conn.send(&req)?.expect(200, "complete")
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = stream.read_line(&mut line).await?;
    ensure!(n > 0, "the server closed the connection");
    Ok(line.trim_end().to_owned())
}

/// A peer server process, killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts `command` and waits (at most 10 s) until it accepts TCP
    /// connections on `port`.
    fn start(mut command: Command, port: u16) -> anyhow::Result<Process> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut process = Process { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(process);
            }
            if let Some(status) = process.child.try_wait()? {
                bail!("{command:?} exited with {status} before accepting connections");
            }
            ensure!(
                Instant::now() < deadline,
                "{command:?} did not start within 10 s"
            );
            // Process start-up has no notification to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = StdListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

#[derive(Deserialize)]
struct NodeResult {
    jobs: usize,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Runs one phase of the BullMQ driver. It reports percentiles, not
/// samples, so the row is rebuilt from them.
fn bullmq(
    port: u16,
    phase: &str,
    jobs: usize,
    c: usize,
    limit: Duration,
    payload_bytes: usize,
) -> anyhow::Result<Phase> {
    let output = Command::new("node")
        .arg(bullmq_dir().join("bench.mjs"))
        .args([
            "--port",
            &port.to_string(),
            "--phase",
            phase,
            "--jobs",
            &jobs.to_string(),
            "--concurrency",
            &c.to_string(),
            "--payload-bytes",
            &payload_bytes.to_string(),
            "--max-seconds",
            &limit.as_secs().to_string(),
            "--queue",
            "peers",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running node bench.mjs")?;
    ensure!(
        output.status.success(),
        "the BullMQ driver failed ({}) in phase {phase}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let result: NodeResult = serde_json::from_str(text.trim())
        .with_context(|| format!("the BullMQ driver printed {text:?}"))?;
    Ok(Phase {
        samples: synthetic_samples(result.jobs, result.p50_us, result.p99_us),
        elapsed: Duration::from_secs_f64(result.seconds),
        timed_out: result.jobs < jobs,
    })
}

/// Samples with the reported count, median and 99th percentile, so that the
/// shared table code shows the driver's own figures.
fn synthetic_samples(count: usize, p50_us: u64, p99_us: u64) -> Vec<Duration> {
    let p99_from = (count * 99).div_ceil(100).saturating_sub(1);
    (0..count)
        .map(|i| {
            if i < count / 2 + 1 && i < p99_from {
                Duration::from_micros(p50_us)
            } else {
                Duration::from_micros(p99_us)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rows_and_the_limit_row_count_what_they_did() {
        let parent = tempfile::tempdir().unwrap();
        let payload = json_payload(50);
        let limit = Duration::from_secs(60);
        let cases = [
            (Target::Embedded(PERIODIC), &["enqueue", "drain"][..]),
            (Target::Http(PERIODIC), &["enqueue", "drain"][..]),
            (Target::HttpSettle(PERIODIC), &["drain"][..]),
            (Target::Limit, &["enqueue"][..]),
        ];
        for (target, phases) in cases {
            // 31 jobs over 4 workers: the settle loops end unevenly.
            let load = Load {
                jobs: 31,
                c: 4,
                store_rounds: 1,
            };
            let rows = run_target(target, parent.path(), load, limit, &payload).unwrap();
            let got: Vec<&str> = rows.iter().map(|m| m.row.phase).collect();
            assert_eq!(got, phases, "{}", target.label());
            for measured in &rows {
                assert_eq!(measured.row.jobs(), 31, "{}", measured.row.line());
                assert!(!measured.row.timed_out);
                assert_eq!(measured.row.mode, target.label());
                assert!(measured.cpu_per_job.is_some(), "{}", measured.row.line());
            }
        }
        // Nothing left behind in the parent directory.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn rounds_on_one_store_count_as_one_row() {
        let parent = tempfile::tempdir().unwrap();
        let load = Load {
            jobs: 31,
            c: 4,
            store_rounds: 3,
        };
        for (target, phases) in [
            (
                Target::Embedded(Durability::Sync),
                &["enqueue", "drain"][..],
            ),
            (Target::Http(Durability::Sync), &["enqueue", "drain"][..]),
            (Target::HttpSettle(Durability::Sync), &["drain"][..]),
        ] {
            let rows = run_target(
                target,
                parent.path(),
                load,
                Duration::from_secs(60),
                &json_payload(50),
            )
            .unwrap();
            let got: Vec<(&str, usize, usize)> = rows
                .iter()
                .map(|m| (m.row.phase, m.row.jobs(), m.row.target))
                .collect();
            // The store's own counts were checked against all three rounds.
            let want: Vec<(&str, usize, usize)> = phases.iter().map(|p| (*p, 93, 93)).collect();
            assert_eq!(got, want, "{}", target.label());
        }
    }

    #[test]
    fn stat_cpu_is_utime_plus_stime_after_the_command_name() {
        // Fields 14 and 15 (utime 250, stime 50 ticks); the name holds a
        // space and a parenthesis.
        let line = "1234 (my (bench) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100";
        assert_eq!(parse_stat_cpu(line), Some(Duration::from_millis(3000)));
        assert_eq!(parse_stat_cpu("1234 (x) S 1 2"), None);
        assert!(process_cpu_time().is_some());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn round(http_enqueue: f64) -> Round {
        Round {
            http_enqueue: Some(http_enqueue),
            http_drain: Some(30_000.0),
            http_settle_drain: None,
            limit_enqueue: Some(100_000.0),
            bullmq_enqueue: Some(30_000.0),
            bullmq_drain: Some(15_000.0),
            bullmq_fetch_next_drain: Some(20_000.0),
            embedded_sync_enqueue: Some(40_000.0),
            embedded_periodic_enqueue: Some(50_000.0),
            embedded_cpu_us: Some(40.0),
            embedded_single_p50_us: Some(200.0),
            http_single_p50_us: Some(300.0),
            limit_single_p50_us: Some(270.0),
            fsync_p50_us: 150.0,
        }
    }

    fn result_of(table: &str, goal: &str) -> String {
        let line = table
            .lines()
            .find(|l| l.contains(goal))
            .unwrap_or_else(|| panic!("no line for {goal:?} in\n{table}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | target | goal | runs… | median | result |
        format!("{} {}", cells[cells.len() - 3], cells[cells.len() - 2])
    }

    #[test]
    fn targets_table_takes_the_median_ratio_and_judges_it() {
        // HTTP enqueue over BullMQ's: 1.0, 3.0, 2.5 → median 2.5, met.
        let rounds = [round(30_000.0), round(90_000.0), round(75_000.0)];
        let table = targets_table(&rounds, Some(100.0));
        assert_eq!(
            result_of(&table, "HTTP enqueue / BullMQ"),
            "2.50× met",
            "{table}"
        );
        assert!(
            table.contains("| 1.00× |") && table.contains("| 3.00× |"),
            "{table}"
        );
        // Over the physical limit: 0.3, 0.9, 0.75 → 0.75 (the bound), met.
        assert_eq!(result_of(&table, "physical limit"), "0.75× met");
        assert_eq!(result_of(&table, "HTTP drain (lease"), "2.00× met");
        // Not measured in any round: said so, not judged.
        assert_eq!(result_of(&table, "settle-and-lease"), "– not measured");
        assert_eq!(
            result_of(&table, "embedded durable enqueue"),
            "0.80× not met"
        );
        // At most: CPU 40 µs over a baseline of 100 is 0.40×, met.
        assert_eq!(result_of(&table, "CPU per job"), "0.40× met");
        assert_eq!(result_of(&table, "fdatasync p50, embedded"), "1.33× met");
        assert_eq!(result_of(&table, "fdatasync p50, HTTP"), "2.00× not met");
        // The physical limit's single-caller floor, beside the table.
        assert!(
            table.contains(
                "physical limit single-caller p50 / one fdatasync p50: 1.80×, 1.80×, 1.80× \
                 (median 1.80×)"
            ),
            "{table}"
        );
        assert!(table.contains("40.0, 40.0, 40.0 µs (median 40.0); baseline 100.0 µs"));
        // The allocator the CPU was measured with is named.
        assert!(
            table.contains(&format!("drain, with {}:", crate::ALLOCATOR_NAME)),
            "{table}"
        );
        // Without a baseline the CPU target is not judged.
        let table = targets_table(&rounds, None);
        assert_eq!(result_of(&table, "CPU per job"), "– not measured");
        assert!(table.contains("--cpu-baseline-us"), "{table}");
    }

    #[test]
    fn a_phase_of_commits_reads_as_shares_and_means() {
        let commits = CommitStats {
            batches: 100,
            batch_operations: 650,
            batch_time: Duration::from_millis(250),
            commits: 40,
            commit_operations: 640,
            commit_time: Duration::from_millis(800),
            fdatasyncs: 40,
            fdatasync_time: Duration::from_millis(10),
        };
        assert_eq!(
            commits_line(&commits, Duration::from_secs(1)),
            "6.5 per batch (leader busy 25 %), 16.0 per commit (committer busy 80 %), \
             40 fdatasyncs of 250 µs"
        );
        let none = CommitStats::default();
        assert_eq!(
            commits_line(&none, Duration::ZERO),
            "0.0 per batch (leader busy 0 %), 0.0 per commit (committer busy 0 %), \
             0 fdatasyncs of 0 µs"
        );
        let round = || {
            let phase = Phase {
                samples: Vec::new(),
                elapsed: Duration::from_secs(1),
                timed_out: false,
            };
            (phase, None, Some(commits))
        };
        let two = merged(vec![round(), round()]);
        assert_eq!(
            two.2.map(|c| (c.batches, c.fdatasync_time)),
            Some((200, Duration::from_millis(20)))
        );
    }

    #[test]
    fn a_round_reads_its_rows_by_label_phase_and_concurrency() {
        let measured = |target: Target, phase: &'static str, c: usize, jobs: usize, cpu| Measured {
            row: Row {
                mode: target.label(),
                phase,
                concurrency: c,
                target: jobs,
                elapsed: Duration::from_secs(1),
                latency: Summary::of(vec![Duration::from_micros(300); jobs]),
                timed_out: false,
            },
            cpu_per_job: cpu,
            commits: None,
        };
        let us = Duration::from_micros;
        let rows = [
            measured(
                Target::Http(Durability::Sync),
                "enqueue",
                64,
                4000,
                Some(us(30)),
            ),
            measured(Target::Http(Durability::Sync), "enqueue", 1, 10, None),
            measured(
                Target::HttpSettle(Durability::Sync),
                "drain",
                64,
                3000,
                None,
            ),
            measured(
                Target::Embedded(Durability::Sync),
                "enqueue",
                64,
                100,
                Some(us(20)),
            ),
            measured(
                Target::Embedded(Durability::Sync),
                "drain",
                64,
                100,
                Some(us(25)),
            ),
            measured(Target::Embedded(PERIODIC), "enqueue", 64, 200, None),
            measured(Target::BullmqFetchNext(true), "drain", 64, 1500, None),
            measured(Target::Limit, "enqueue", 1, 20, None),
        ];
        let probe = fsync::FsyncReport {
            dir: PathBuf::new(),
            syncs: 3,
            elapsed: Duration::from_secs(1),
            latency: Summary::of(vec![us(150); 3]),
        };
        let round = Round::of(&rows, 64, &probe);
        assert_eq!(round.http_enqueue, Some(4000.0));
        assert_eq!(round.http_settle_drain, Some(3000.0));
        assert_eq!(round.bullmq_fetch_next_drain, Some(1500.0));
        assert_eq!(round.http_drain, None);
        assert_eq!(round.embedded_sync_enqueue, Some(100.0));
        assert_eq!(round.embedded_periodic_enqueue, Some(200.0));
        assert_eq!(round.embedded_cpu_us, Some(45.0));
        assert_eq!(round.http_single_p50_us, Some(300.0));
        assert_eq!(round.embedded_single_p50_us, None);
        assert_eq!(round.limit_single_p50_us, Some(300.0));
        assert_eq!(round.fsync_p50_us, 150.0);
    }

    #[test]
    fn settle_requests_lease_the_next_job_only_when_asked() {
        let job = LeasedJob {
            id: "j1".to_owned(),
            lease_id: "l1".to_owned(),
        };
        let with = String::from_utf8(settle_request("h", &job, true)).unwrap();
        assert!(with.starts_with(
            "POST /v1/queues/peers/settle HTTP/1.1\r\nPrefer: return=minimal\r\nHost: h\r\n"
        ));
        assert!(with.ends_with(
            r#"{"complete":[{"id":"j1","lease_id":"l1"}],"lease":{"max_jobs":1,"lease_ms":60000}}"#
        ));
        let without = String::from_utf8(settle_request("h", &job, false)).unwrap();
        assert!(without.ends_with(r#"{"complete":[{"id":"j1","lease_id":"l1"}]}"#));
    }

    #[test]
    fn settle_responses_are_checked_item_by_item() {
        let job = LeasedJob {
            id: "j1".to_owned(),
            lease_id: "l1".to_owned(),
        };
        let ok = |body: &'static str| Response {
            status: 200,
            body: body.as_bytes(),
        };
        let next = settled(
            ok(r#"{"results":[{"id":"j1","status":200,"state":"completed"}],"jobs":[{"id":"j2","lease_id":"l2","payload":1}]}"#),
            &job,
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!((next.id.as_str(), next.lease_id.as_str()), ("j2", "l2"));
        assert!(
            settled(
                ok(r#"{"results":[{"id":"j1","status":200,"state":"completed"}],"jobs":[]}"#),
                &job,
                false
            )
            .unwrap()
            .is_none()
        );
        let lost = r#"{"results":[{"id":"j1","status":409,"error":{"code":"lease_lost","message":"x"}}],"jobs":[]}"#;
        let error = settled(ok(lost), &job, false).unwrap_err();
        assert!(format!("{error:#}").contains("409"), "{error:#}");
        let empty = r#"{"results":[{"id":"j1","status":200,"state":"completed"}],"jobs":[]}"#;
        let error = settled(ok(empty), &job, true).unwrap_err();
        assert!(
            format!("{error:#}").contains("no job to lease"),
            "{error:#}"
        );
        let extra = r#"{"results":[{"id":"j1","status":200,"state":"completed"}],"jobs":[{"id":"j2","lease_id":"l2"}]}"#;
        assert!(settled(ok(extra), &job, false).is_err());
        // The preference not applied: the whole job came back.
        let whole =
            r#"{"results":[{"id":"j1","status":200,"state":"completed","job":{}}],"jobs":[]}"#;
        assert!(settled(ok(whole), &job, false).is_err());
        let refused = Response {
            status: 404,
            body: b"{}",
        };
        assert!(settled(refused, &job, true).is_err());
    }

    #[test]
    fn synthetic_samples_reproduce_the_reported_percentiles() {
        for count in [1, 2, 3, 99, 100, 101, 2000] {
            let summary = Summary::of(synthetic_samples(count, 150, 900));
            assert_eq!(summary.count, count);
            if count >= 3 {
                assert_eq!(summary.p50, Duration::from_micros(150), "count {count}");
            }
            assert_eq!(summary.p99, Duration::from_micros(900), "count {count}");
        }
    }
}
