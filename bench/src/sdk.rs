//! `bench sdk`: what the typed client SDK (`queue-client`) costs over raw
//! HTTP load generators of the same threading model, on the same server and
//! workload.
//!
//! For each concurrency C and each client, a fresh durable server
//! ([`Server`], `Durability::Sync`, fresh data directory, 127.0.0.1) runs two
//! phases on the queue `peers`:
//!
//! 1. **enqueue**: N jobs with a `--payload-bytes` JSON payload, one at a
//!    time per caller, claimed from a shared [`Claims`] counter;
//! 2. **drain**: the N jobs are leased and completed.
//!
//! The clients, in this order at each C:
//!
//! - **raw http**: the loops of `bench peers` ([`peers::connections`]): C
//!   keep-alive connections on one single-threaded runtime; drain = lease
//!   (`max_jobs` 1) + complete per job.
//! - **raw blocking**: the same requests, checks and claims as raw http
//!   ([`peers::http_enqueue_blocking`], [`peers::http_drain_one_blocking`]),
//!   but from C OS threads, each with its own keep-alive
//!   [`BlockingConnection`] (a `std` socket, the framing of
//!   [`crate::client`]).
//! - **sdk async**: one [`queue_client::Client`] shared by C tokio tasks
//!   calling [`TypedQueue::enqueue`](queue_client::TypedQueue::enqueue), on a
//!   single-threaded runtime (as the raw client); drain = a
//!   [`queue_client::Worker`] with concurrency C whose handler returns
//!   `Ok(())` at once.
//! - **sdk blocking**: one [`queue_client::blocking::Client`] shared by C OS
//!   threads calling `enqueue`; drain = a
//!   [`queue_client::blocking::Worker`] with concurrency C and a trivial
//!   closure.
//!
//! Each SDK client is compared with the raw client of the same threading
//! model (its *baseline*): sdk async with raw http, sdk blocking with raw
//! blocking. C OS threads cost more CPU than one event loop whatever library
//! they call (at C = 64 on a 2-core machine, far more), so sdk blocking over
//! raw http would measure the threading model, not the SDK. That ratio is
//! still printed under the table, for information, with raw blocking over
//! raw http (the cost of the threads alone).
//!
//! Before the clock starts, the raw clients connect their C connections and
//! the SDK clients make C concurrent `GET /healthz` calls so that their pools
//! hold open connections (at most the pool's idle limit). A worker phase
//! ends when `GET /v1/queues/peers`, polled every [`POLL`] by the main thread,
//! shows all N jobs completed; then its [`ShutdownHandle`] stops the worker.
//! The raw drains run under the same poller (so the server serves the same
//! extra requests) but end when their own loops end: after N lease +
//! complete pairs claimed from a shared [`Claims`] of N (an empty lease is
//! an error, since exactly N jobs are ready).
//!
//! After every phase the counts are checked exactly (`ready` = N after the
//! enqueue, `completed` = N and nothing else after the drain; a worker's
//! [`WorkerReport`] must agree), and any mismatch fails the run.
//!
//! Each row also shows the client's CPU time per job: the threads of the
//! client (the load generator's thread; for raw blocking, its C threads; for
//! the blocking SDK, its caller threads and the SDK's own runtime threads),
//! from `/proc/.../schedstat`. On a shared 2-core machine that is steadier
//! than throughput and says where an SDK overhead comes from. And the TCP
//! connections accepted during the phase (`/proc/net/snmp`): C is expected;
//! more means the client's pool closes and reopens connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use queue_client::{Failure, Job, QueueStats, ShutdownHandle, WorkerReport};
use queue_core::Durability;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::claims::Claims;
use crate::client::{BlockingConnection, Connection, request};
use crate::http::{Server, thread_cpu_time};
use crate::peers::{self, Conn, Protocol};
use crate::report;
use crate::stats::{Latency, Summary};

/// The queue every phase uses: the one the raw loops of `bench peers` use.
const QUEUE: &str = "peers";
/// The throughput target: SDK at least this share of raw HTTP.
pub const TARGET: f64 = 0.85;
/// How often the main thread asks the server whether a drain is done.
const POLL: Duration = Duration::from_millis(5);
/// How long a worker's lease request waits for a job; it also bounds how
/// long its shutdown waits for that request.
const POLL_WAIT: Duration = Duration::from_millis(500);
/// How long past the time limit a phase may take to finish what is in
/// flight (and a worker to shut down) before it is declared stalled.
const STALL_GRACE: Duration = Duration::from_secs(30);
/// Lease length of every drain (raw: the `peers` loop's 60 s).
const LEASE: Duration = Duration::from_secs(60);
/// Name prefix of the bench's client threads (the blocking SDK's own
/// runtime threads are named `queue-client`).
const CLIENT_THREAD: &str = "sdk-client";

/// Options of `bench sdk`.
#[derive(Debug, Clone, clap::Args)]
pub struct SdkArgs {
    /// The workload (as `bench peers`).
    #[command(flatten)]
    pub workload: peers::Workload,
    /// 300 jobs, C = 1 and 8, no target verdicts: a quick check that the
    /// harness works (CI runs it).
    #[arg(long)]
    pub smoke: bool,
    /// Instead of the table above: the async SDK worker's drain with
    /// settle-and-lease (one request per job) against one call per job
    /// (`Worker::settle_and_lease(false)`), alternated `--rounds` times at
    /// each C, on a fresh durable server each, medians printed.
    #[arg(long)]
    pub settle_compare: bool,
    /// Rounds of `--settle-compare` (each runs both modes, the order
    /// alternating from round to round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// The payload type of the SDK runs: serializes to the same JSON as the raw
/// client's body (`{"pad":"xxx…"}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pad {
    #[serde(default)]
    pad: String,
}

/// Who talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// C connections on one single-threaded event loop.
    Raw,
    /// C OS threads, one blocking connection each.
    RawBlocking,
    Async,
    Blocking,
}

impl Client {
    /// The order of the runs at each C.
    const ALL: [Client; 4] = [
        Client::Raw,
        Client::RawBlocking,
        Client::Async,
        Client::Blocking,
    ];

    fn label(self) -> &'static str {
        match self {
            Client::Raw => "raw http",
            Client::RawBlocking => "raw blocking",
            Client::Async => "sdk async",
            Client::Blocking => "sdk blocking",
        }
    }

    /// The raw client with the same threading model, which an SDK client is
    /// measured against; `None` for the raw clients.
    fn baseline(self) -> Option<Client> {
        match self {
            Client::Async => Some(Client::Raw),
            Client::Blocking => Some(Client::RawBlocking),
            Client::Raw | Client::RawBlocking => None,
        }
    }
}

/// One phase of one client at one concurrency.
#[derive(Debug, Clone)]
struct SdkRow {
    phase: &'static str,
    client: Client,
    concurrency: usize,
    target: usize,
    /// Jobs done (acknowledged enqueues; completed jobs).
    jobs: usize,
    elapsed: Duration,
    /// Per-call latency; `None` for a worker, whose calls are its own.
    latency: Option<Summary>,
    timed_out: bool,
    /// CPU time of the client's threads during the phase.
    client_cpu: Option<Duration>,
    /// TCP connections the host accepted during the phase.
    connections: Option<u64>,
}

impl SdkRow {
    fn rate(&self) -> f64 {
        crate::fsync::per_second(self.jobs, self.elapsed)
    }

    fn cpu_per_job(&self) -> Option<Duration> {
        let jobs = u32::try_from(self.jobs).ok().filter(|j| *j > 0)?;
        self.client_cpu.map(|cpu| cpu / jobs)
    }

    fn line(&self) -> String {
        let latency = match &self.latency {
            Some(s) => format!(", p50 {}, p99 {}", Latency(s.p50), Latency(s.p99)),
            None => String::new(),
        };
        let cpu = match self.cpu_per_job() {
            Some(cpu) => format!(", client CPU {}/job", Latency(cpu)),
            None => String::new(),
        };
        let connections = match self.connections {
            Some(n) => format!(", connections accepted: {n}"),
            None => String::new(),
        };
        format!(
            "{} {} C={}: {} jobs in {:.2} s = {:.0} jobs/s{latency}{cpu}{connections}{}",
            self.client.label(),
            self.phase,
            self.concurrency,
            self.jobs,
            self.elapsed.as_secs_f64(),
            self.rate(),
            if self.timed_out {
                format!(" (stopped by the time limit, {} asked for)", self.target)
            } else {
                String::new()
            }
        )
    }
}

/// What a measured phase yields before it becomes a row.
#[derive(Debug)]
struct Measured {
    jobs: usize,
    elapsed: Duration,
    samples: Option<Vec<Duration>>,
    timed_out: bool,
    client_cpu: Option<Duration>,
    /// Set by [`run_client`].
    connections: Option<u64>,
}

/// What every phase of one run needs.
#[derive(Debug, Clone)]
struct Spec {
    addr: SocketAddr,
    url: String,
    /// Jobs to enqueue; in the drain, the jobs the enqueue put in.
    jobs: usize,
    c: usize,
    limit: Duration,
    /// The raw enqueue body, `{"payload":<payload>}`.
    body: Vec<u8>,
    pad: Pad,
}

/// Runs the SDK benchmark and prints the table.
///
/// # Errors
/// A server fails to start or stop, a call fails, a count does not match.
pub fn run(args: &SdkArgs) -> anyhow::Result<()> {
    if args.settle_compare {
        return settle_compare(args);
    }
    let peers::Plan {
        jobs,
        concurrency,
        parent,
        limit,
        payload,
    } = args.workload.plan(args.smoke)?;
    let pad: Pad = serde_json::from_slice(&payload).context("the payload is not a Pad")?;
    let body = peers::enqueue_body(&payload);

    let mut rows = Vec::new();
    for &c in &concurrency {
        for client in Client::ALL {
            eprintln!("{} C={c} ...", client.label());
            let server = Server::start(&parent, Durability::Sync)
                .with_context(|| format!("starting the server for {} C={c}", client.label()))?;
            let spec = Spec {
                addr: server.addr,
                url: format!("http://{}", server.addr),
                jobs,
                c,
                limit,
                body: body.clone(),
                pad: pad.clone(),
            };
            let outcome = run_client(client, &spec);
            // Stop the server whether or not the phases succeeded; their
            // error comes first.
            let stopped = server.stop();
            let (enqueue, drain) =
                outcome.with_context(|| format!("{} at C={c}", client.label()))?;
            stopped.with_context(|| format!("stopping the server of {} C={c}", client.label()))?;
            for (phase, measured) in [("enqueue", enqueue), ("drain", drain)] {
                let row = SdkRow {
                    phase,
                    client,
                    concurrency: c,
                    target: jobs,
                    jobs: measured.jobs,
                    elapsed: measured.elapsed,
                    latency: measured.samples.map(Summary::of),
                    timed_out: measured.timed_out,
                    client_cpu: measured.client_cpu,
                    connections: measured.connections,
                };
                eprintln!("  {}", row.line());
                rows.push(row);
            }
        }
    }

    println!();
    println!(
        "SDK overhead: N = {jobs} jobs of {} bytes per run, durable server (fsync before ack) \
         in-process on 127.0.0.1, fresh per client and C; enqueue = C callers put N jobs one at \
         a time; drain = lease + complete of the N jobs (raw: C connections, lease of 1 job; \
         SDK: a Worker of concurrency C). raw http = C connections on one event loop; raw \
         blocking = C OS threads, one connection each. Time limit {} s per phase.",
        args.workload.payload_bytes,
        limit.as_secs()
    );
    println!();
    print!("{}", table(&rows, !args.smoke));
    println!();
    println!(
        "p50/p99: per call (a worker's calls are its own: none). client CPU/job: CPU time of the \
         client's threads over jobs done. conns: TCP connections accepted during the phase (C \
         expected, plus the poller's and the check's in a drain; more means the client \
         reconnects). SDK / baseline: the row's throughput over that of the raw client with the \
         same threading model, same phase and C: sdk async over raw http (one event loop), sdk \
         blocking over raw blocking (C OS threads)."
    );
    println!();
    if !args.smoke {
        for line in verdicts(&rows) {
            println!("{line}");
        }
        for line in against_event_loop(&rows) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `--settle-compare`: at each C, `--rounds` rounds of two runs, the async
/// worker's drain with settle-and-lease and with one call per job (the
/// order alternating from round to round), each on a fresh durable server
/// whose N jobs the raw client enqueued; then the medians.
fn settle_compare(args: &SdkArgs) -> anyhow::Result<()> {
    let peers::Plan {
        jobs,
        concurrency,
        parent,
        limit,
        payload,
    } = args.workload.plan(args.smoke)?;
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let pad: Pad = serde_json::from_slice(&payload).context("the payload is not a Pad")?;
    let body = peers::enqueue_body(&payload);
    let mut lines = Vec::new();
    for &c in &concurrency {
        // (jobs/s, client CPU per job) of each run: [settle, per call].
        let mut runs: [Vec<(f64, Option<Duration>)>; 2] = [Vec::new(), Vec::new()];
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for settle in order {
                let label = if settle { "settle" } else { "per call" };
                eprintln!("worker drain ({label}) C={c} round {} ...", round + 1);
                let server = Server::start(&parent, Durability::Sync)
                    .with_context(|| format!("starting the server for {label} C={c}"))?;
                let spec = Spec {
                    addr: server.addr,
                    url: format!("http://{}", server.addr),
                    jobs,
                    c,
                    limit,
                    body: body.clone(),
                    pad: pad.clone(),
                };
                let outcome = raw_enqueue(&spec).and_then(|enqueue| {
                    check_enqueued(spec.addr, &enqueue)?;
                    let spec = Spec {
                        jobs: enqueue.jobs,
                        ..spec.clone()
                    };
                    async_drain(&spec, settle)
                });
                let stopped = server.stop();
                let drain = outcome.with_context(|| format!("{label} at C={c}"))?;
                stopped.with_context(|| format!("stopping the server of {label} C={c}"))?;
                ensure!(!drain.timed_out, "{label} at C={c} hit the time limit");
                let rate = crate::fsync::per_second(drain.jobs, drain.elapsed);
                let cpu = u32::try_from(drain.jobs)
                    .ok()
                    .filter(|j| *j > 0)
                    .and_then(|j| drain.client_cpu.map(|cpu| cpu / j));
                eprintln!("  {rate:.0} jobs/s");
                runs[usize::from(!settle)].push((rate, cpu));
            }
        }
        let [with, without] = runs.map(|runs| median_run(&runs));
        lines.push(format!(
            "| {c} | {:.0} | {:.0} | {:.2}× | {} | {} |",
            with.0,
            without.0,
            with.0 / without.0,
            with.1.map_or("–".into(), |d| Latency(d).to_string()),
            without.1.map_or("–".into(), |d| Latency(d).to_string()),
        ));
    }
    println!();
    println!(
        "Worker drain, settle-and-lease against one call per job: N = {jobs} jobs of {} bytes, \
         durable server (fsync before ack) in-process on 127.0.0.1, fresh per run; the async SDK \
         Worker of concurrency C, handler returning at once; medians of {} alternated rounds.",
        args.workload.payload_bytes, args.rounds
    );
    println!();
    println!(
        "| C | settle jobs/s | per call jobs/s | settle / per call | client CPU/job, settle | client CPU/job, per call |"
    );
    println!("|---|---|---|---|---|---|");
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The median of runs by throughput, and the median of their CPU per job.
fn median_run(runs: &[(f64, Option<Duration>)]) -> (f64, Option<Duration>) {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
    rates.sort_by(f64::total_cmp);
    let mut cpus: Vec<Duration> = runs.iter().filter_map(|r| r.1).collect();
    cpus.sort();
    (
        rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        cpus.get(cpus.len() / 2).copied(),
    )
}

/// Both phases of one client on the server of `spec`, with the TCP
/// connections accepted during each (the drain's include the poller's and
/// the check's).
fn run_client(client: Client, spec: &Spec) -> anyhow::Result<(Measured, Measured)> {
    let opens = accepted_connections();
    let mut enqueue = match client {
        Client::Raw => raw_enqueue(spec),
        Client::RawBlocking => raw_blocking_enqueue(spec),
        Client::Async => async_enqueue(spec),
        Client::Blocking => blocking_enqueue(spec),
    }
    .context("enqueue")?;
    enqueue.connections = since(opens, accepted_connections());
    check_enqueued(spec.addr, &enqueue).context("enqueue")?;
    // The drain takes what is there: N, unless the time limit cut the
    // enqueue short.
    let spec = &Spec {
        jobs: enqueue.jobs,
        ..spec.clone()
    };
    let opens = accepted_connections();
    let mut drain = match client {
        Client::Raw => raw_drain(spec),
        Client::RawBlocking => raw_blocking_drain(spec),
        Client::Async => async_drain(spec, true),
        Client::Blocking => blocking_drain(spec),
    }
    .context("drain")?;
    drain.connections = since(opens, accepted_connections());
    Ok((enqueue, drain))
}

fn since(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// TCP connections this host has accepted so far (Linux:
/// `PassiveOpens` in `/proc/net/snmp`). Host-wide, but during a run
/// nothing else here accepts loopback connections at any rate that shows.
fn accepted_connections() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = text.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names
        .split_whitespace()
        .position(|name| name == "PassiveOpens")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Raw enqueue bodies that carry a fresh idempotency key each, as every
/// enqueue of the SDK does, so that raw and SDK put the same work on the
/// server and their difference is the client's.
#[derive(Clone)]
struct KeyedBodies {
    /// `{"payload":…` without its closing brace.
    open: Arc<Vec<u8>>,
    next: Arc<AtomicU64>,
}

impl KeyedBodies {
    fn new(body: &[u8]) -> KeyedBodies {
        let open = body.strip_suffix(b"}").unwrap_or(body).to_vec();
        KeyedBodies {
            open: Arc::new(open),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The next body, keyed like the SDK's keys (`qc-` and 32 hex digits).
    fn next(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut body = Vec::with_capacity(self.open.len() + 64);
        body.extend_from_slice(&self.open);
        body.extend_from_slice(format!(r#","idempotency_key":"qc-raw{n:029x}"}}"#).as_bytes());
        body
    }
}

/// The raw enqueue: the `peers` loop, on a thread of its own whose CPU time
/// is the client's.
fn raw_enqueue(spec: &Spec) -> anyhow::Result<Measured> {
    let (addr, jobs, c, limit) = (spec.addr, spec.jobs, spec.c, spec.limit);
    let keyed = KeyedBodies::new(&spec.body);
    let worker = spawn_client(format!("{CLIENT_THREAD}-raw"), move || {
        let cpu = thread_cpu_time();
        let phase = peers::connections(c, jobs, limit, addr, Protocol::Http, move |conn| {
            let body = keyed.next();
            Box::pin(async move { conn.http_enqueue(&body).await })
        })?;
        Ok(measured(phase, cpu_since(cpu)))
    })?;
    worker.wait(Instant::now() + limit + STALL_GRACE)
}

/// The raw drain: the `peers` loop, under the same completion poller as
/// the workers; its time is its own.
fn raw_drain(spec: &Spec) -> anyhow::Result<Measured> {
    let (addr, jobs, c, limit) = (spec.addr, spec.jobs, spec.c, spec.limit);
    let worker = spawn_client(format!("{CLIENT_THREAD}-raw"), move || {
        let cpu = thread_cpu_time();
        let phase = peers::connections(c, jobs, limit, addr, Protocol::Http, |conn: &mut Conn| {
            Box::pin(async move { conn.http_drain_one().await })
        })?;
        Ok(measured(phase, cpu_since(cpu)))
    })?;
    let started = Instant::now();
    let deadline = started + limit;
    watch_drain(spec.addr, spec.jobs, deadline, || worker.finished())?;
    let drained = worker.wait(deadline + STALL_GRACE)?;
    check_drained(spec.addr, spec.jobs, drained.jobs, drained.timed_out)?;
    Ok(drained)
}

/// The raw blocking enqueue: C OS threads, each with its own keep-alive
/// connection, put the jobs with the raw client's request.
fn raw_blocking_enqueue(spec: &Spec) -> anyhow::Result<Measured> {
    let (addr, keyed) = (spec.addr, KeyedBodies::new(&spec.body));
    start_callers(
        "raw-",
        spec,
        move |_| BlockingConnection::connect(addr, STALL_GRACE),
        move |conn| peers::http_enqueue_blocking(conn, &keyed.next()),
        || (),
    )?
    .finish()
}

/// The raw blocking drain: C OS threads, each with its own keep-alive
/// connection, lease one job and complete it, N times between them (as the
/// raw drain), under the same completion poller; its time is its own.
fn raw_blocking_drain(spec: &Spec) -> anyhow::Result<Measured> {
    let addr = spec.addr;
    let callers = start_callers(
        "raw-",
        spec,
        move |_| BlockingConnection::connect(addr, STALL_GRACE),
        peers::http_drain_one_blocking,
        || (),
    )?;
    watch_drain(spec.addr, spec.jobs, callers.deadline, || {
        callers.finished()
    })?;
    let drained = callers.finish()?;
    check_drained(spec.addr, spec.jobs, drained.jobs, drained.timed_out)?;
    Ok(drained)
}

/// What a caller thread of [`start_callers`] hands back: its latency
/// samples, its CPU time in the loop, and when its loop ended.
type CallerOutcome = (Vec<Duration>, Option<Duration>, Instant);

/// C OS threads calling one operation each until the shared claims run out;
/// see [`start_callers`].
struct Callers {
    threads: Vec<ClientThread<CallerOutcome>>,
    claims: Arc<Claims>,
    started: Instant,
    /// The claims' deadline: `started` + the time limit.
    deadline: Instant,
}

/// Starts C OS threads named `{CLIENT_THREAD}-{tag}{i}`. Each makes its
/// state with `setup` (a connection, a warm-up call) before the clock
/// starts; once all have, `before_clock` runs on this thread, the clock
/// starts, and each thread calls `op` once per claim from a shared
/// [`Claims`] of `spec.jobs` with one deadline, timing each call and its
/// own CPU time in the loop.
fn start_callers<S, Setup, Op>(
    tag: &str,
    spec: &Spec,
    setup: Setup,
    op: Op,
    before_clock: impl FnOnce(),
) -> anyhow::Result<Callers>
where
    S: 'static,
    Setup: Fn(usize) -> anyhow::Result<S> + Send + Sync + 'static,
    Op: Fn(&mut S) -> anyhow::Result<()> + Send + Sync + 'static,
{
    let (jobs, c) = (spec.jobs, spec.c);
    let (setup, op) = (Arc::new(setup), Arc::new(op));
    let claims = Arc::new(Claims::new(jobs));
    let clock = Arc::new(OnceLock::<Instant>::new());
    // Every caller sets up and waits for the others; the clock starts at
    // the second barrier.
    let ready = Arc::new(Barrier::new(c + 1));
    let start = Arc::new(Barrier::new(c + 1));
    let mut threads = Vec::with_capacity(c);
    for i in 0..c {
        let (setup, op, claims, clock, ready, start) = (
            Arc::clone(&setup),
            Arc::clone(&op),
            Arc::clone(&claims),
            Arc::clone(&clock),
            Arc::clone(&ready),
            Arc::clone(&start),
        );
        threads.push(spawn_client(
            format!("{CLIENT_THREAD}-{tag}{i}"),
            move || {
                let state = setup(i);
                ready.wait();
                start.wait();
                let mut state = match state {
                    Ok(state) => state,
                    Err(e) => {
                        claims.stop();
                        return Err(e.context(format!("setting up caller {i}")));
                    }
                };
                let deadline = clock
                    .get()
                    .copied()
                    .ok_or_else(|| anyhow!("the clock did not start"))?;
                let cpu = thread_cpu_time();
                let mut samples = Vec::with_capacity(jobs / c + 1);
                while claims.claim(deadline) {
                    let t = Instant::now();
                    if let Err(e) = op(&mut state) {
                        claims.stop();
                        return Err(e);
                    }
                    samples.push(t.elapsed());
                }
                Ok((samples, cpu_since(cpu), Instant::now()))
            },
        )?);
    }
    ready.wait();
    before_clock();
    let started = Instant::now();
    let deadline = started + spec.limit;
    // Set before the barrier that releases the callers.
    let _ = clock.set(deadline);
    start.wait();
    Ok(Callers {
        threads,
        claims,
        started,
        deadline,
    })
}

impl Callers {
    /// Whether every caller has ended.
    fn finished(&self) -> bool {
        self.threads.iter().all(ClientThread::finished)
    }

    /// Waits for every caller (until [`STALL_GRACE`] past the deadline) and
    /// sums them up: elapsed until the last loop ended, CPU time of all the
    /// loops. Any caller's failure fails the phase.
    fn finish(self) -> anyhow::Result<Measured> {
        let give_up = self.deadline + STALL_GRACE;
        let mut samples = Vec::new();
        let mut cpu = Some(Duration::ZERO);
        let mut ended = self.started;
        let mut failure = None;
        for caller in self.threads {
            match caller.wait(give_up) {
                Ok((done, used, at)) => {
                    samples.extend(done);
                    cpu = cpu.zip(used).map(|(a, b)| a + b);
                    ended = ended.max(at);
                }
                Err(e) => {
                    self.claims.stop();
                    failure = failure.or(Some(e));
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Measured {
            jobs: samples.len(),
            elapsed: ended - self.started,
            samples: Some(samples),
            timed_out: self.claims.timed_out(),
            client_cpu: cpu,
            connections: None,
        })
    }
}

fn measured(phase: peers::Phase, client_cpu: Option<Duration>) -> Measured {
    Measured {
        jobs: phase.samples.len(),
        elapsed: phase.elapsed,
        samples: Some(phase.samples),
        timed_out: phase.timed_out,
        client_cpu,
        connections: None,
    }
}

/// A single-threaded runtime, as the raw load generator has.
fn current_thread() -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")
}

/// C concurrent `GET /healthz`, so that the pool holds open connections
/// before the clock starts.
async fn warm_up(client: &queue_client::Client, c: usize) -> anyhow::Result<()> {
    let mut calls = JoinSet::new();
    for _ in 0..c {
        let client = client.clone();
        calls.spawn(async move { client.health().await });
    }
    while let Some(done) = calls.join_next().await {
        done.context("a warm-up call panicked")?
            .context("warming up the connection pool")?;
    }
    Ok(())
}

/// The async SDK enqueue: C tasks on one single-threaded runtime share one
/// client.
fn async_enqueue(spec: &Spec) -> anyhow::Result<Measured> {
    let (url, jobs, c, limit, pad) = (
        spec.url.clone(),
        spec.jobs,
        spec.c,
        spec.limit,
        spec.pad.clone(),
    );
    let worker = spawn_client(format!("{CLIENT_THREAD}-async"), move || {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let client = queue_client::Client::connect(&url)?;
            warm_up(&client, c).await?;
            let queue = client.queue::<Pad>(QUEUE);
            let pad = Arc::new(pad);
            let claims = Arc::new(Claims::new(jobs));
            let cpu = thread_cpu_time();
            let started = Instant::now();
            let deadline = started + limit;
            let give_up = tokio::time::Instant::from_std(deadline + STALL_GRACE);
            let mut tasks = JoinSet::new();
            for _ in 0..c {
                let (queue, pad, claims) = (queue.clone(), Arc::clone(&pad), Arc::clone(&claims));
                tasks.spawn(async move {
                    let mut samples = Vec::with_capacity(jobs / c + 1);
                    while claims.claim(deadline) {
                        let t = Instant::now();
                        if let Err(e) = queue.enqueue(&pad).await {
                            claims.stop();
                            return Err(anyhow!(e).context("enqueue"));
                        }
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                });
            }
            let mut samples = Vec::with_capacity(jobs);
            let mut failure = None;
            loop {
                match tokio::time::timeout_at(give_up, tasks.join_next()).await {
                    Err(_) => bail!(
                        "stalled: a call was still unanswered {} s after the time limit",
                        STALL_GRACE.as_secs()
                    ),
                    Ok(None) => break,
                    Ok(Some(Ok(Ok(done)))) => samples.extend(done),
                    Ok(Some(Ok(Err(e)))) => failure = failure.or(Some(e)),
                    Ok(Some(Err(e))) => {
                        failure = failure.or(Some(anyhow!("a caller task failed: {e}")));
                    }
                }
            }
            let elapsed = started.elapsed();
            if let Some(e) = failure {
                return Err(e);
            }
            Ok(Measured {
                jobs: samples.len(),
                elapsed,
                samples: Some(samples),
                timed_out: claims.timed_out(),
                client_cpu: cpu_since(cpu),
                connections: None,
            })
        })
    })?;
    worker.wait(Instant::now() + limit + 2 * STALL_GRACE)
}

/// The async SDK drain: a [`queue_client::Worker`] of concurrency C on a
/// single-threaded runtime, until the server counts N completed jobs.
/// With `settle` false the worker settles job by job
/// ([`queue_client::Worker::settle_and_lease`]).
fn async_drain(spec: &Spec, settle: bool) -> anyhow::Result<Measured> {
    let (url, c) = (spec.url.clone(), spec.c);
    let (ready_tx, ready_rx) = mpsc::channel::<(ShutdownHandle, Instant)>();
    let worker = spawn_client(format!("{CLIENT_THREAD}-async"), move || {
        let runtime = current_thread()?;
        runtime.block_on(async move {
            let client = queue_client::Client::connect(&url)?;
            warm_up(&client, c).await?;
            let worker = queue_client::Worker::new(client, QUEUE)
                .concurrency(c)
                .lease(LEASE)
                .poll_wait(POLL_WAIT)
                .settle_and_lease(settle);
            let cpu = thread_cpu_time();
            ready_tx
                .send((worker.shutdown_handle(), Instant::now()))
                .map_err(|_| anyhow!("the poller is gone"))?;
            let report = worker
                .run(|job: Job<Pad>| async move {
                    drop(job);
                    Ok::<(), Failure>(())
                })
                .await?;
            Ok((report, cpu_since(cpu)))
        })
    })?;
    drain_with_worker(spec, &ready_rx, worker)
}

/// The blocking SDK enqueue: C OS threads share one blocking client.
fn blocking_enqueue(spec: &Spec) -> anyhow::Result<Measured> {
    let client = queue_client::blocking::Client::connect(&spec.url)?;
    let queue = client.queue::<Pad>(QUEUE);
    let pad = spec.pad.clone();
    let warm = client.clone();
    // The SDK's runtime threads count from when every caller has warmed the
    // pool up.
    let mut runtime_cpu = None;
    let callers = start_callers(
        "",
        spec,
        move |_| warm.health().context("warming up the connection pool"),
        move |_: &mut ()| {
            queue
                .enqueue(&pad)
                .map(drop)
                .map_err(|e| anyhow!(e).context("enqueue"))
        },
        || runtime_cpu = threads_cpu("queue-client"),
    )?;
    let mut measured = callers.finish()?;
    let runtime_cpu = runtime_cpu.and_then(|before| cpu_of_threads_since("queue-client", &before));
    measured.client_cpu = measured.client_cpu.zip(runtime_cpu).map(|(a, b)| a + b);
    drop(client);
    Ok(measured)
}

/// The blocking SDK drain: a [`queue_client::blocking::Worker`] of
/// concurrency C on a thread of its own, until the server counts N
/// completed jobs.
fn blocking_drain(spec: &Spec) -> anyhow::Result<Measured> {
    let c = spec.c;
    let client = queue_client::blocking::Client::connect(&spec.url)?;
    // Warm the pool up from C threads at once.
    let start = Arc::new(Barrier::new(c));
    let mut warmers = Vec::with_capacity(c);
    for i in 0..c {
        let (client, start) = (client.clone(), Arc::clone(&start));
        warmers.push(spawn_client(format!("{CLIENT_THREAD}-{i}"), move || {
            start.wait();
            client.health().context("warming up the connection pool")
        })?);
    }
    let warm_deadline = Instant::now() + STALL_GRACE;
    for warmer in warmers {
        warmer.wait(warm_deadline)?;
    }
    let runtime_cpu = threads_cpu("queue-client");
    let (ready_tx, ready_rx) = mpsc::channel::<(ShutdownHandle, Instant)>();
    let worker = queue_client::blocking::Worker::new(client.clone(), QUEUE)
        .concurrency(c)
        .lease(LEASE)
        .poll_wait(POLL_WAIT);
    let running = spawn_client(format!("{CLIENT_THREAD}-worker"), move || {
        let cpu = thread_cpu_time();
        ready_tx
            .send((worker.shutdown_handle(), Instant::now()))
            .map_err(|_| anyhow!("the poller is gone"))?;
        let report = worker.run(|job: Job<Pad>| {
            drop(job);
            Ok::<(), Failure>(())
        })?;
        Ok((report, cpu_since(cpu)))
    })?;
    let mut drained = drain_with_worker(spec, &ready_rx, running)?;
    let runtime_cpu = runtime_cpu.and_then(|before| cpu_of_threads_since("queue-client", &before));
    drained.client_cpu = drained.client_cpu.zip(runtime_cpu).map(|(a, b)| a + b);
    drop(client);
    Ok(drained)
}

/// The common end of a worker drain: waits for the worker to start, polls
/// the server until N jobs are completed (or the time limit), shuts the
/// worker down, and checks its report against the server's counts.
fn drain_with_worker(
    spec: &Spec,
    ready: &mpsc::Receiver<(ShutdownHandle, Instant)>,
    worker: ClientThread<(WorkerReport, Option<Duration>)>,
) -> anyhow::Result<Measured> {
    let (stop, started) = match ready.recv_timeout(STALL_GRACE) {
        Ok(ready) => ready,
        Err(_) => {
            // The worker thread failed before starting (or hangs): its
            // error, if it has one, says why.
            return match worker.wait(Instant::now() + Duration::from_secs(1)) {
                Ok(_) => Err(anyhow!("the worker returned before it started")),
                Err(e) => Err(e.context("the worker did not start")),
            };
        }
    };
    let deadline = started + spec.limit;
    let watched = watch_drain(spec.addr, spec.jobs, deadline, || worker.finished());
    let finished = Instant::now();
    stop.shutdown();
    let watched = watched?;
    // The shutdown waits for the lease in flight and the running handlers.
    let (report, cpu) = worker.wait(Instant::now() + POLL_WAIT + STALL_GRACE)?;
    let timed_out = !watched.all_done;
    ensure!(
        report.failed == 0 && report.lease_lost == 0 && report.unreported == 0,
        "the worker did not complete every job it leased: {report:?}"
    );
    ensure!(
        timed_out || report.released == 0,
        "the worker released jobs although all were done: {report:?}"
    );
    let completed = usize::try_from(report.completed)?;
    check_drained(spec.addr, spec.jobs, completed, timed_out)?;
    Ok(Measured {
        jobs: completed,
        elapsed: if timed_out {
            finished - started
        } else {
            watched.at - started
        },
        samples: None,
        timed_out,
        client_cpu: cpu,
        connections: None,
    })
}

/// What the completion poller saw.
struct Watched {
    /// Whether the server counted all N jobs completed.
    all_done: bool,
    /// When it first did (or when the poller gave up).
    at: Instant,
}

/// Polls `GET /v1/queues/peers` every [`POLL`] until it shows `jobs`
/// completed, until `deadline`, or until `finished` says the client is done
/// (it then checks once more).
fn watch_drain(
    addr: SocketAddr,
    jobs: usize,
    deadline: Instant,
    finished: impl Fn() -> bool,
) -> anyhow::Result<Watched> {
    let runtime = current_thread()?;
    let jobs = jobs as u64;
    runtime.block_on(async {
        let mut connection = Connection::connect(addr).await?;
        loop {
            let client_done = finished();
            let stats = tokio::time::timeout(STALL_GRACE, stats(&mut connection))
                .await
                .map_err(|_| anyhow!("the server did not answer GET /v1/queues/{QUEUE}"))??;
            let now = Instant::now();
            if stats.completed >= jobs {
                return Ok(Watched {
                    all_done: true,
                    at: now,
                });
            }
            if client_done || now >= deadline {
                return Ok(Watched {
                    all_done: false,
                    at: now,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// The counts of the queue, over a raw connection.
async fn stats(connection: &mut Connection) -> anyhow::Result<QueueStats> {
    let get = request(
        "GET",
        &format!("/v1/queues/{QUEUE}"),
        connection.host(),
        b"",
    );
    let response = connection.send(&get).await?;
    response.expect(200, "queue stats")?;
    serde_json::from_slice(response.body).context("parsing the queue stats")
}

fn stats_of(addr: SocketAddr) -> anyhow::Result<QueueStats> {
    current_thread()?.block_on(async {
        let mut connection = Connection::connect(addr).await?;
        tokio::time::timeout(STALL_GRACE, stats(&mut connection))
            .await
            .map_err(|_| anyhow!("the server did not answer GET /v1/queues/{QUEUE}"))?
    })
}

/// After an enqueue: exactly the acknowledged jobs are `ready`, nothing
/// else; all N unless the time limit stopped the phase.
fn check_enqueued(addr: SocketAddr, enqueue: &Measured) -> anyhow::Result<()> {
    let stats = stats_of(addr)?;
    let done = enqueue.jobs as u64;
    ensure!(
        stats.ready == done
            && stats.scheduled + stats.leased + stats.completed + stats.dead + stats.cancelled == 0,
        "{done} enqueues were acknowledged but the server counts {stats:?}"
    );
    Ok(())
}

/// After a drain: `completed` jobs are completed, the rest of the N still
/// `ready`, nothing leased, dead or cancelled; all N unless timed out.
fn check_drained(
    addr: SocketAddr,
    jobs: usize,
    completed: usize,
    timed_out: bool,
) -> anyhow::Result<()> {
    let stats = stats_of(addr)?;
    ensure!(
        timed_out || completed == jobs,
        "the drain completed {completed} of {jobs} jobs without running into the time limit"
    );
    ensure!(
        stats.completed == completed as u64
            && stats.ready + stats.completed == jobs as u64
            && stats.scheduled + stats.leased + stats.dead + stats.cancelled == 0,
        "{completed} jobs of {jobs} were completed but the server counts {stats:?}"
    );
    Ok(())
}

/// A client thread and the channel its outcome comes back on, so that the
/// wait for it has a deadline.
struct ClientThread<T> {
    outcome: mpsc::Receiver<anyhow::Result<T>>,
    handle: std::thread::JoinHandle<()>,
}

fn spawn_client<T, F>(name: String, work: F) -> anyhow::Result<ClientThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let (tx, outcome) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .with_context(|| format!("starting thread {name}"))?;
    Ok(ClientThread { outcome, handle })
}

impl<T> ClientThread<T> {
    /// Whether the thread has ended.
    fn finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Its outcome, waiting at most until `deadline`.
    fn wait(self, deadline: Instant) -> anyhow::Result<T> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.outcome.recv_timeout(left) {
            Ok(outcome) => {
                let _ = self.handle.join();
                outcome
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!(
                "stalled: the client was still running {} s after the time limit",
                STALL_GRACE.as_secs()
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(anyhow!("the client thread panicked")),
        }
    }
}

/// CPU time of the calling thread since `before`.
fn cpu_since(before: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu_time()?.saturating_sub(before?))
}

/// CPU time so far of each thread of this process whose name starts with
/// `prefix`, by thread id (Linux: `/proc/self/task/*/schedstat`).
pub(crate) fn threads_cpu(prefix: &str) -> Option<HashMap<u64, Duration>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        if let Some(nanos) = text.split_whitespace().next().and_then(|n| n.parse().ok()) {
            out.insert(tid, Duration::from_nanos(nanos));
        }
    }
    Some(out)
}

/// CPU time used since `before` by the threads named `prefix…` (threads
/// started since count from zero).
pub(crate) fn cpu_of_threads_since(
    prefix: &str,
    before: &HashMap<u64, Duration>,
) -> Option<Duration> {
    let now = threads_cpu(prefix)?;
    Some(
        now.iter()
            .map(|(tid, cpu)| cpu.saturating_sub(before.get(tid).copied().unwrap_or_default()))
            .sum(),
    )
}

/// The table: phase, client, C, jobs, seconds, jobs/s, p50, p99, client
/// CPU per job, connections accepted, the baseline of an SDK row, its
/// throughput over that baseline's and, with `verdicts`, the verdict
/// against [`TARGET`].
fn table(rows: &[SdkRow], verdicts: bool) -> String {
    let target = format!("target ≥ {TARGET}");
    let mut header = vec![
        "phase",
        "client",
        "C",
        "jobs",
        "seconds",
        "jobs/s",
        "p50",
        "p99",
        "client CPU/job",
        "conns",
        "baseline",
        "SDK / baseline",
    ];
    if verdicts {
        header.push(&target);
    }
    let mut cells = Vec::with_capacity(rows.len());
    for row in rows {
        let latency = |pick: fn(&Summary) -> Duration| {
            row.latency
                .as_ref()
                .map_or_else(|| "–".to_owned(), |s| Latency(pick(s)).to_string())
        };
        let ratio = ratio(rows, row);
        let mut line = vec![
            row.phase.to_owned(),
            row.client.label().to_owned(),
            row.concurrency.to_string(),
            format!("{}{}", row.jobs, if row.timed_out { "*" } else { "" }),
            format!("{:.2}", row.elapsed.as_secs_f64()),
            format!("{:.0}", row.rate()),
            latency(|s| s.p50),
            latency(|s| s.p99),
            row.cpu_per_job()
                .map_or_else(|| "–".to_owned(), |cpu| Latency(cpu).to_string()),
            row.connections
                .map_or_else(|| "–".to_owned(), |n| n.to_string()),
            row.client
                .baseline()
                .map_or_else(|| "–".to_owned(), |base| base.label().to_owned()),
            ratio.map_or_else(|| "–".to_owned(), |x| format!("{x:.2}")),
        ];
        if verdicts {
            line.push(match ratio {
                Some(x) if x >= TARGET => "meets".to_owned(),
                Some(_) => "**below**".to_owned(),
                None => "–".to_owned(),
            });
        }
        cells.push(line);
    }
    let right = [
        false, false, true, true, true, true, true, true, true, true, false, true, false,
    ];
    let mut out = report::markdown(&header, &right, &cells);
    if rows.iter().any(|row| row.timed_out) {
        out.push_str(report::TIMED_OUT_NOTE);
    }
    out
}

/// `row`'s throughput over `base`'s in the same phase and C, if both ran.
fn ratio_to(rows: &[SdkRow], row: &SdkRow, base: Client) -> Option<f64> {
    let base = rows
        .iter()
        .find(|r| r.client == base && r.phase == row.phase && r.concurrency == row.concurrency)?;
    let base = base.rate();
    (base > 0.0).then(|| row.rate() / base)
}

/// An SDK row's throughput over its [baseline](Client::baseline)'s in the
/// same phase and C (`None` for the raw rows themselves).
fn ratio(rows: &[SdkRow], row: &SdkRow) -> Option<f64> {
    ratio_to(rows, row, row.client.baseline()?)
}

/// One line per SDK row below the target, and the overall verdict.
fn verdicts(rows: &[SdkRow]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut worst: Option<(f64, &SdkRow)> = None;
    for row in rows {
        let (Some(x), Some(base)) = (ratio(rows, row), row.client.baseline()) else {
            continue;
        };
        if worst.is_none_or(|(w, _)| x < w) {
            worst = Some((x, row));
        }
        if x < TARGET {
            lines.push(format!(
                "{} {}@{}: {x:.2}× {} ({:.0} / {:.0} jobs/s) (target ≥ {TARGET}: BELOW target)",
                row.client.label(),
                row.phase,
                row.concurrency,
                base.label(),
                row.rate(),
                row.rate() / x
            ));
        }
    }
    if let Some((x, row)) = worst {
        lines.push(format!(
            "worst SDK / baseline: {x:.2}× ({} {}@{} / {}); target ≥ {TARGET} everywhere: {}",
            row.client.label(),
            row.phase,
            row.concurrency,
            row.client.baseline().map_or("?", Client::label),
            if x >= TARGET {
                "meets target"
            } else {
                "BELOW target"
            }
        ));
    }
    lines
}

/// For information, no verdict: the blocking clients against the event
/// loop (`raw http`), which is a different threading model. One line for
/// the SDK, one for the raw blocking client (the cost of the threads
/// alone); each is empty when nothing to compare ran.
fn against_event_loop(rows: &[SdkRow]) -> Vec<String> {
    let mut lines = Vec::new();
    for (client, why) in [
        (
            Client::Blocking,
            "the SDK's overhead plus the cost of C OS threads",
        ),
        (Client::RawBlocking, "the cost of C OS threads alone"),
    ] {
        let ratios: Vec<String> = rows
            .iter()
            .filter(|row| row.client == client)
            .filter_map(|row| {
                let x = ratio_to(rows, row, Client::Raw)?;
                Some(format!("{}@{} {x:.2}×", row.phase, row.concurrency))
            })
            .collect();
        if !ratios.is_empty() {
            lines.push(format!(
                "for information (no target): {} / {}: {} ({why})",
                client.label(),
                Client::Raw.label(),
                ratios.join(", ")
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::json_payload;

    fn row(client: Client, phase: &'static str, jobs: usize, seconds: u64) -> SdkRow {
        SdkRow {
            phase,
            client,
            concurrency: 8,
            target: jobs,
            jobs,
            elapsed: Duration::from_secs(seconds),
            latency: None,
            timed_out: false,
            client_cpu: Some(Duration::from_millis(jobs as u64)),
            connections: Some(8),
        }
    }

    #[test]
    fn the_pad_serializes_as_the_raw_payload() {
        let payload = json_payload(200);
        let pad: Pad = serde_json::from_slice(&payload).unwrap();
        assert_eq!(serde_json::to_vec(&pad).unwrap(), payload);
    }

    #[test]
    fn each_sdk_client_is_compared_with_the_raw_client_of_its_threading_model() {
        let rows = vec![
            row(Client::Raw, "enqueue", 1000, 1),
            row(Client::RawBlocking, "enqueue", 500, 1),
            row(Client::Async, "enqueue", 900, 1),
            row(Client::Blocking, "enqueue", 400, 1),
            row(Client::Raw, "drain", 1000, 2),
            row(Client::RawBlocking, "drain", 1000, 2),
            row(Client::Async, "drain", 1000, 2),
            row(Client::Blocking, "drain", 900, 2),
        ];
        assert_eq!(ratio(&rows, &rows[0]), None);
        assert_eq!(ratio(&rows, &rows[1]), None);
        assert_eq!(ratio(&rows, &rows[2]), Some(0.9));
        // Blocking over raw blocking, not over raw http.
        assert_eq!(ratio(&rows, &rows[3]), Some(0.8));
        assert_eq!(ratio(&rows, &rows[6]), Some(1.0));
        assert_eq!(ratio(&rows, &rows[7]), Some(0.9));
        let lines = verdicts(&rows);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("sdk blocking enqueue@8: 0.80× raw blocking (400 / 500 jobs/s)"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("0.80× (sdk blocking enqueue@8 / raw blocking)")
                && lines[1].contains("BELOW target"),
            "{lines:?}"
        );
        let info = against_event_loop(&rows);
        assert_eq!(
            info,
            [
                "for information (no target): sdk blocking / raw http: enqueue@8 0.40×, \
                 drain@8 0.90× (the SDK's overhead plus the cost of C OS threads)",
                "for information (no target): raw blocking / raw http: enqueue@8 0.50×, \
                 drain@8 1.00× (the cost of C OS threads alone)",
            ]
        );
        let text = table(&rows, true);
        assert!(text.contains("**below**") && text.contains("meets"));
        let cells = |line: usize| -> Vec<String> {
            text.lines()
                .nth(line)
                .unwrap()
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        assert_eq!(cells(0)[11..13], ["baseline", "SDK / baseline"], "{text}");
        assert_eq!(cells(2)[11..13], ["–", "–"], "{text}");
        assert_eq!(cells(4)[11..14], ["raw http", "0.90", "meets"], "{text}");
        assert_eq!(
            cells(5)[11..14],
            ["raw blocking", "0.80", "**below**"],
            "{text}"
        );
        assert!(
            text.lines().nth(2).unwrap().contains(" 1.00 ms |"),
            "{text}"
        );
        assert!(!table(&rows, false).contains("target"));
        // Without its baseline, an SDK row has no ratio.
        assert_eq!(ratio(&rows[2..4], &rows[3]), None);
    }

    #[test]
    fn a_raw_blocking_caller_that_cannot_connect_fails_the_phase() {
        // A port nothing listens on any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let spec = Spec {
            addr,
            url: format!("http://{addr}"),
            jobs: 10,
            c: 3,
            limit: Duration::from_secs(5),
            body: b"{}".to_vec(),
            pad: Pad { pad: String::new() },
        };
        let started = Instant::now();
        let error = raw_blocking_enqueue(&spec).unwrap_err();
        assert!(
            format!("{error:#}").contains("setting up caller"),
            "{error:#}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_smoke_sized_run_counts_every_job() {
        let parent = tempfile::tempdir().unwrap();
        let payload = json_payload(50);
        let mut body = br#"{"payload":"#.to_vec();
        body.extend_from_slice(&payload);
        body.push(b'}');
        for client in Client::ALL {
            let server = Server::start(parent.path(), Durability::Periodic(100)).unwrap();
            let spec = Spec {
                addr: server.addr,
                url: format!("http://{}", server.addr),
                jobs: 40,
                c: 3,
                limit: Duration::from_secs(30),
                body: body.clone(),
                pad: serde_json::from_slice(&payload).unwrap(),
            };
            let (enqueue, drain) = run_client(client, &spec).unwrap();
            server.stop().unwrap();
            assert_eq!((enqueue.jobs, drain.jobs), (40, 40), "{client:?}");
            assert!(!enqueue.timed_out && !drain.timed_out);
            assert_eq!(enqueue.samples.map(|s| s.len()), Some(40));
            assert_eq!(
                drain.samples.is_some(),
                matches!(client, Client::Raw | Client::RawBlocking)
            );
        }
    }
}
