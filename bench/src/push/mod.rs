//! `bench push`: the push features — callbacks and the event stream —
//! against a baseline without them, in one run, on the real server.
//!
//! Every part starts a fresh durable server ([`Server`],
//! `Durability::Sync`: fsync before the acknowledgement, fresh data
//! directory, `127.0.0.1`) with the same configuration: one signing
//! secret (`whsec_…`), callback concurrency `--callback-concurrency`, a
//! connection cap above the largest subscriber count. The load generator
//! is [`crate::client`] on a single-threaded runtime on the main thread,
//! as in `bench http`.
//!
//! 1. **baseline**: C connections enqueue N jobs (no `callback_url`), then
//!    C connections lease (one job) and complete them. No subscriber.
//! 2. **callbacks**: the same two phases with `callback_url` pointing at
//!    the bench's own receiver ([`receiver`]: hyper 1, HTTP/1.1, on a
//!    runtime and thread of its own, answering 204 at once). Measured:
//!    callback deliveries per second, from the first complete response to
//!    the last job's first callback; and per job, the time from its
//!    complete response at the bench to its callback at the receiver (one
//!    monotonic clock, [`Instant`], one process). Then checked: every
//!    completed job's callback arrived (duplicates are counted and
//!    reported: delivery is at least once), nothing else arrived, the
//!    server lists all N as `delivered` (`GET /v1/callbacks?state=…`
//!    paging) and none pending or failed, sampled job objects say
//!    `delivered`, and sampled deliveries carry a valid signature.
//! 3. **fan-out**, for each S of `--subscribers`: S subscribers on
//!    `GET /v1/events?queue=<q>` (a filter that matches every job of the
//!    run), each on its own connection, read by [`sse`] on a multi-thread
//!    runtime of their own; once all are connected (their stream has
//!    opened with `: connected`), `--producers` connections enqueue M jobs
//!    on `q`. Measured: events delivered in all (S × M) per second, from
//!    the producer's start to the last event's arrival; and per event, the
//!    time from the enqueue response at the producer to the event's
//!    arrival at each subscriber, matched by the job id in the event's
//!    data. Checked: every subscriber got every job's event exactly once,
//!    in increasing `event_id` order, with no `gap`.
//!
//! Every loop stops at its count or at `--max-seconds`; every wait has a
//! timeout. A failed check fails the run (non-zero exit).

mod callbacks;
mod fanout;
mod receiver;
pub(crate) mod sse;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use queue_core::Durability;
use queue_proto::webhooks::Secret;
use queue_server::{CallbackConfig, ServerConfig};
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::claims::Claims;
use crate::client::{self, Connection, request};
use crate::core::json_payload;
use crate::http::{Server, thread_cpu_time};
use crate::report;
use crate::sdk::{cpu_of_threads_since, threads_cpu};
use crate::stats::{Latency, Summary};

/// How long past the time limit a phase may take to finish what is in
/// flight before it is declared stalled.
const STALL_GRACE: Duration = Duration::from_secs(10);
/// How long the server may take to record deliveries as `delivered` once
/// the receiver has them all.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// How long a subscriber may take to connect and see its stream open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Subscribers connecting at once (the listen backlog is finite).
const CONNECTING_AT_ONCE: usize = 64;
/// Lease length of the drains.
const LEASE_BODY: &[u8] = br#"{"max_jobs":1,"lease_ms":60000}"#;
/// Job objects checked for `callback.state == delivered`.
const JOB_SAMPLE: usize = 20;
/// The subscribers' threads (for their CPU time).
const SUBSCRIBER_THREAD: &str = "push-subs";
/// The server's threads (as [`Server`] names them).
const SERVER_THREAD: &str = "bench-server";
/// Descriptors the process needs besides two per connection (its
/// sockets' both ends are in this process): the store's files, the
/// runtimes, the receiver.
const FD_MARGIN: u64 = 512;

/// Options of `bench push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// Jobs of the baseline and callback parts (enqueued, then leased and
    /// completed).
    #[arg(long, default_value_t = 5_000)]
    pub jobs: usize,
    /// Jobs the producer enqueues in each fan-out run.
    #[arg(long, default_value_t = 1_000)]
    pub fanout_jobs: usize,
    /// Concurrent SSE subscribers, comma-separated: one fan-out run each.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub subscribers: Vec<usize>,
    /// Connections that enqueue, and that lease and complete, in the
    /// baseline and callback parts.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Connections of the fan-out producer.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Callback attempts under way at once (`CallbackConfig::concurrency`).
    #[arg(long, default_value_t = 32)]
    pub callback_concurrency: usize,
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
    /// 200 jobs, 100 fan-out jobs, 1 and 10 subscribers, 4 connections: a
    /// quick check that the harness works (for CI).
    #[arg(long)]
    pub smoke: bool,
}

/// The options, checked and resolved.
#[derive(Debug, Clone)]
struct Plan {
    jobs: usize,
    fanout_jobs: usize,
    subscribers: Vec<usize>,
    connections: usize,
    producers: usize,
    callback_concurrency: usize,
    payload: Vec<u8>,
    limit: Duration,
    parent: PathBuf,
}

impl Plan {
    fn new(args: &PushArgs) -> anyhow::Result<Plan> {
        let plan = if args.smoke {
            Plan {
                jobs: 200,
                fanout_jobs: 100,
                subscribers: vec![1, 10],
                connections: 4,
                producers: 1,
                callback_concurrency: args.callback_concurrency,
                payload: json_payload(args.payload_bytes),
                limit: Duration::from_secs(args.max_seconds.clamp(1, 20)),
                parent: args.dir.clone().unwrap_or_else(std::env::temp_dir),
            }
        } else {
            Plan {
                jobs: args.jobs,
                fanout_jobs: args.fanout_jobs,
                subscribers: args.subscribers.clone(),
                connections: args.connections,
                producers: args.producers,
                callback_concurrency: args.callback_concurrency,
                payload: json_payload(args.payload_bytes),
                limit: Duration::from_secs(args.max_seconds.max(1)),
                parent: args.dir.clone().unwrap_or_else(std::env::temp_dir),
            }
        };
        ensure!(plan.jobs > 0, "--jobs must be at least 1");
        ensure!(plan.fanout_jobs > 0, "--fanout-jobs must be at least 1");
        ensure!(
            plan.subscribers.iter().all(|s| *s > 0),
            "--subscribers needs values of at least 1"
        );
        ensure!(
            plan.connections > 0 && plan.producers > 0 && plan.callback_concurrency > 0,
            "--connections, --producers and --callback-concurrency must be at least 1"
        );
        Ok(plan)
    }

    /// The configuration of every server of the run.
    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let most = self.subscribers.iter().copied().max().unwrap_or(0);
        Ok(ServerConfig {
            max_connections: 1024.max(most + self.connections + self.producers + 64),
            callbacks: CallbackConfig {
                secrets: vec![secret()?],
                concurrency: self.callback_concurrency,
                ..CallbackConfig::default()
            },
            ..ServerConfig::default()
        })
    }

    /// `{"payload":…}` plus `extra` members (`,"name":value…`).
    fn enqueue_body(&self, extra: &str) -> Vec<u8> {
        let mut body = br#"{"payload":"#.to_vec();
        body.extend_from_slice(&self.payload);
        body.extend_from_slice(extra.as_bytes());
        body.push(b'}');
        body
    }
}

/// The signing secret of every server of the run: a fixed 32-byte key, as
/// an operator's `whsec_…` would parse to.
fn secret() -> anyhow::Result<Secret> {
    Secret::from_bytes(b"bench-push-webhook-secret-32-byt").map_err(|e| anyhow!("{e}"))
}

/// A job id (16 hex digits) as a number.
pub(crate) fn job_number(id: &str) -> anyhow::Result<u64> {
    ensure!(
        !id.is_empty() && id.len() <= 16,
        "{id:?} is not a job id (16 hex digits)"
    );
    u64::from_str_radix(id, 16).with_context(|| format!("{id:?} is not a job id (16 hex digits)"))
}

/// One line of the table.
#[derive(Debug, Clone)]
struct PushRow {
    part: String,
    phase: &'static str,
    /// Client connections (enqueue, drain, producer).
    conns: usize,
    subscribers: Option<usize>,
    /// Jobs, deliveries or events done.
    count: usize,
    /// What was asked for.
    target: usize,
    elapsed: Duration,
    latency: Summary,
    notes: String,
}

impl PushRow {
    fn rate(&self) -> f64 {
        crate::fsync::per_second(self.count, self.elapsed)
    }

    fn line(&self) -> String {
        format!(
            "{} {} conns={}{}: {} in {:.2} s = {:.0}/s, p50 {}, p99 {}, max {}{}{}",
            self.part,
            self.phase,
            self.conns,
            self.subscribers
                .map(|s| format!(" subscribers={s}"))
                .unwrap_or_default(),
            self.count,
            self.elapsed.as_secs_f64(),
            self.rate(),
            Latency(self.latency.p50),
            Latency(self.latency.p99),
            Latency(self.latency.max),
            if self.count < self.target {
                format!(" (stopped by the time limit, {} asked for)", self.target)
            } else {
                String::new()
            },
            if self.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", self.notes)
            }
        )
    }
}

/// The rows as a markdown table.
fn table(rows: &[PushRow]) -> String {
    let header = [
        "part", "phase", "conns", "subs", "count", "seconds", "per s", "p50", "p99", "max", "notes",
    ];
    let right = [
        false, false, true, true, true, true, true, true, true, true, false,
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.part.clone(),
                row.phase.to_owned(),
                row.conns.to_string(),
                row.subscribers
                    .map_or_else(|| "–".to_owned(), |s| s.to_string()),
                format!(
                    "{}{}",
                    row.count,
                    if row.count < row.target { "*" } else { "" }
                ),
                format!("{:.2}", row.elapsed.as_secs_f64()),
                format!("{:.0}", row.rate()),
                Latency(row.latency.p50).to_string(),
                Latency(row.latency.p99).to_string(),
                Latency(row.latency.max).to_string(),
                row.notes.clone(),
            ]
        })
        .collect();
    let mut out = report::markdown(&header, &right, &cells);
    if rows.iter().any(|row| row.count < row.target) {
        out.push_str(report::TIMED_OUT_NOTE);
    }
    out
}

/// Runs the push benchmark and prints the table.
///
/// # Errors
/// A server or the receiver fails to start or stop, a request fails, or a
/// correctness check fails.
pub fn run(args: &PushArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args)?;
    let config = plan.server_config()?;
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let fd_limit = open_file_limit();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    eprintln!("baseline: enqueue and drain {} jobs ...", plan.jobs);
    let baseline = baseline(&plan, &config, &client).context("baseline")?;
    report_rows(&mut rows, baseline);

    eprintln!("callbacks: {} jobs with a callback_url ...", plan.jobs);
    let (callback_rows, callback_notes) =
        callbacks::callbacks(&plan, &config, &client).context("callbacks")?;
    report_rows(&mut rows, callback_rows);
    notes.extend(callback_notes);

    for &s in &plan.subscribers {
        let needed = 2 * (s + plan.producers) as u64 + FD_MARGIN;
        if let Some(limit) = fd_limit.filter(|limit| *limit < needed) {
            let note = format!(
                "fan-out with {s} subscribers SKIPPED: the open-file limit is {limit} and this \
                 run needs about {needed} (both ends of every connection are in this process); \
                 raise it with `ulimit -n {needed}` before running"
            );
            eprintln!("{note}");
            notes.push(note);
            continue;
        }
        eprintln!(
            "fan-out: {s} subscribers, {} jobs enqueued ...",
            plan.fanout_jobs
        );
        let fan =
            fanout::fanout(&plan, &config, &client, s).with_context(|| format!("fan-out S={s}"))?;
        report_rows(&mut rows, fan);
    }

    println!();
    println!(
        "Push: durable server (fsync before ack) in-process on 127.0.0.1, a fresh one per part; \
         N = {} jobs of {} bytes (baseline, callbacks), M = {} jobs per fan-out run; {} \
         connections enqueue and drain (lease 1 + complete), {} producer connection(s) in \
         fan-out; callbacks signed with 1 whsec_ secret, dispatcher concurrency {}, receiver \
         in-process (hyper, 1 thread, 204); server max_connections {}; time limit {} s per \
         phase; open-file limit {}.",
        plan.jobs,
        plan.payload.len(),
        plan.fanout_jobs,
        plan.connections,
        plan.producers,
        plan.callback_concurrency,
        config.max_connections,
        plan.limit.as_secs(),
        fd_limit.map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
    );
    println!();
    print!("{}", table(&rows));
    println!();
    println!(
        "enqueue / drain: latency per request (drain: lease + complete), per s = jobs/s. \
         delivery: conns = the dispatcher's concurrency, count = jobs whose callback arrived, \
         seconds = first complete response to the last job's first callback, latency = complete \
         response at the bench -> that job's first callback at the receiver. events: count = \
         events received by all subscribers, seconds = producer start to last event, latency = \
         enqueue response at the producer -> the event at each subscriber (an event that arrives \
         before the response is `early` and counts as 0; `from request sent` measures from the \
         enqueue request instead). CPU: share of one core over the phase (client = the load \
         generator's thread; server = the server runtime's threads, not the store's own \
         committer and sled threads; subscribers = their runtime's 2 threads; receiver = its 1 \
         thread)."
    );
    for note in &notes {
        println!();
        println!("{note}");
    }
    for (name, phase) in [("enqueue", "enqueue"), ("drain", "drain")] {
        let rate = |part: &str| {
            rows.iter()
                .find(|r| r.part == part && r.phase == phase)
                .map(PushRow::rate)
        };
        if let (Some(base), Some(with)) = (rate("baseline"), rate("callbacks")) {
            println!();
            println!(
                "{name}: with callback_url / baseline = {:.2}× ({with:.0} / {base:.0} jobs/s)",
                if base > 0.0 { with / base } else { 0.0 }
            );
        }
    }
    Ok(())
}

fn report_rows(rows: &mut Vec<PushRow>, new: Vec<PushRow>) {
    for row in new {
        eprintln!("  {}", row.line());
        rows.push(row);
    }
}

/// The soft limit on open files (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU use of the threads named `prefix…` between two readings.
struct ThreadCpu {
    prefix: &'static str,
    before: Option<HashMap<u64, Duration>>,
}

impl ThreadCpu {
    fn start(prefix: &'static str) -> ThreadCpu {
        ThreadCpu {
            prefix,
            before: threads_cpu(prefix),
        }
    }

    /// The share of one core they used over `wall`, as `NN%`.
    fn share(&self, wall: Duration) -> String {
        let used = self
            .before
            .as_ref()
            .and_then(|before| cpu_of_threads_since(self.prefix, before));
        share(used, wall)
    }
}

fn share(used: Option<Duration>, wall: Duration) -> String {
    match used {
        Some(used) if wall > Duration::ZERO => {
            format!("{:.0}%", used.as_secs_f64() / wall.as_secs_f64() * 100.0)
        }
        _ => "?".to_owned(),
    }
}

/// What the C connections of one phase did.
struct Phase {
    /// Per request (or lease + complete pair).
    samples: Vec<Duration>,
    /// Per job: its id and when its (enqueue or complete) response arrived.
    acks: Vec<(u64, Instant)>,
    started: Instant,
    elapsed: Duration,
    /// CPU time of the load generator's thread (this one).
    client_cpu: Option<Duration>,
    /// CPU share of the server's threads, `NN%`.
    server_share: String,
}

/// What each connection of a phase does per claim.
#[derive(Debug, Clone)]
enum Op {
    /// `POST /v1/queues/{q}/jobs` with this body; `202` expected.
    Enqueue { queue: String, body: Arc<Vec<u8>> },
    /// Lease one job of `{q}` and complete it.
    Drain { queue: String },
}

/// The part of a job object the loops need.
#[derive(Debug, Deserialize)]
struct JobRef<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    lease_id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Leased<'a> {
    #[serde(borrow)]
    jobs: Vec<JobRef<'a>>,
}

/// One connection's requests, written once.
struct Requests {
    first: Vec<u8>,
    complete: Vec<u8>,
    host: String,
}

impl Op {
    fn requests(&self, host: &str) -> Requests {
        let first = match self {
            Op::Enqueue { queue, body } => request(
                "POST",
                &format!("/v1/queues/{}/jobs", client::path_segment(queue)),
                host,
                body,
            ),
            Op::Drain { queue } => request(
                "POST",
                &format!("/v1/queues/{}/lease", client::path_segment(queue)),
                host,
                LEASE_BODY,
            ),
        };
        Requests {
            first,
            complete: Vec::with_capacity(256),
            host: host.to_owned(),
        }
    }

    /// One operation; the job it was about.
    async fn call(&self, conn: &mut Connection, requests: &mut Requests) -> anyhow::Result<u64> {
        match self {
            Op::Enqueue { .. } => {
                let response = conn.send(&requests.first).await?;
                response.expect(202, "enqueue")?;
                let job: JobRef<'_> =
                    serde_json::from_slice(response.body).context("the enqueue response")?;
                job_number(&job.id)
            }
            Op::Drain { queue } => {
                let response = conn.send(&requests.first).await?;
                response.expect(200, "lease")?;
                let leased: Leased<'_> =
                    serde_json::from_slice(response.body).context("the lease response")?;
                let [job] = leased.jobs.as_slice() else {
                    bail!(
                        "a lease on {queue} returned {} jobs, expected 1",
                        leased.jobs.len()
                    );
                };
                let id = job.id.clone().into_owned();
                let lease_id = job
                    .lease_id
                    .as_deref()
                    .ok_or_else(|| anyhow!("leased job {id} has no lease_id"))?;
                let body = format!(r#"{{"lease_id":{}}}"#, serde_json::to_string(lease_id)?);
                client::write_request(
                    &mut requests.complete,
                    "POST",
                    &format!("/v1/jobs/{}/complete", client::path_segment(&id)),
                    &requests.host,
                    body.as_bytes(),
                );
                conn.send(&requests.complete)
                    .await?
                    .expect(200, "complete")?;
                job_number(&id)
            }
        }
    }
}

/// `n` operations `op` from `c` connections on the client runtime (this
/// thread), claimed from a shared counter until `limit`.
fn phase(
    client: &Runtime,
    addr: SocketAddr,
    c: usize,
    n: usize,
    limit: Duration,
    op: &Op,
) -> anyhow::Result<Phase> {
    let cpu_before = thread_cpu_time();
    let server_cpu = ThreadCpu::start(SERVER_THREAD);
    let (outcomes, started, elapsed) = client.block_on(async {
        let connect = async {
            let mut connections = Vec::with_capacity(c);
            for _ in 0..c {
                connections.push(Connection::connect(addr).await?);
            }
            anyhow::Ok(connections)
        };
        let connections = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                anyhow!(
                    "{c} connections not made within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })??;
        let claims = Arc::new(Claims::new(n));
        let started = Instant::now();
        let deadline = started + limit;
        let give_up = tokio::time::Instant::from_std(deadline + STALL_GRACE);
        let mut tasks = JoinSet::new();
        for (i, mut conn) in connections.into_iter().enumerate() {
            let (claims, op) = (Arc::clone(&claims), op.clone());
            tasks.spawn(async move {
                let work = async {
                    let mut requests = op.requests(conn.host());
                    let mut samples = Vec::with_capacity(n / c + 1);
                    let mut acks = Vec::with_capacity(n / c + 1);
                    while claims.claim(deadline) {
                        let t = Instant::now();
                        let job = op.call(&mut conn, &mut requests).await?;
                        let at = Instant::now();
                        samples.push(at - t);
                        acks.push((job, at));
                    }
                    anyhow::Ok((samples, acks))
                };
                let outcome = match tokio::time::timeout_at(give_up, work).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(anyhow!(
                        "connection {i} stalled: a request was still unanswered {} s after the \
                         time limit",
                        STALL_GRACE.as_secs()
                    )),
                };
                if outcome.is_err() {
                    claims.stop();
                }
                outcome
            });
        }
        let mut outcomes = Vec::with_capacity(c);
        while let Some(joined) = tasks.join_next().await {
            outcomes.push(joined.unwrap_or_else(|e| Err(anyhow!("a connection task failed: {e}"))));
        }
        anyhow::Ok((outcomes, started, started.elapsed()))
    })?;
    let client_cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let server_share = server_cpu.share(elapsed);
    let mut samples = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    for outcome in outcomes {
        let (s, a) = outcome?;
        samples.extend(s);
        acks.extend(a);
    }
    Ok(Phase {
        samples,
        acks,
        started,
        elapsed,
        client_cpu,
        server_share,
    })
}

impl Phase {
    fn row(
        &self,
        part: &str,
        phase: &'static str,
        conns: usize,
        subscribers: Option<usize>,
        target: usize,
    ) -> PushRow {
        PushRow {
            part: part.to_owned(),
            phase,
            conns,
            subscribers,
            count: self.samples.len(),
            target,
            elapsed: self.elapsed,
            latency: Summary::of(self.samples.clone()),
            notes: format!(
                "CPU: client {}, server {}",
                share(self.client_cpu, self.elapsed),
                self.server_share
            ),
        }
    }
}

/// A queue's counts, from `GET /v1/queues/{q}`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Counts {
    scheduled: u64,
    ready: u64,
    leased: u64,
    completed: u64,
    dead: u64,
    cancelled: u64,
}

/// The enqueue phase of a part: `plan.jobs` jobs of `body` on `queue` from
/// `plan.connections` connections, then a check that the queue holds every
/// acknowledged job, ready.
fn enqueue_phase(
    plan: &Plan,
    client: &Runtime,
    addr: SocketAddr,
    queue: &str,
    body: Arc<Vec<u8>>,
) -> anyhow::Result<Phase> {
    let enqueue = phase(
        client,
        addr,
        plan.connections,
        plan.jobs,
        plan.limit,
        &Op::Enqueue {
            queue: queue.to_owned(),
            body,
        },
    )
    .context("enqueue")?;
    check_counts(client, addr, queue, enqueue.acks.len(), 0)?;
    Ok(enqueue)
}

/// Checks that `queue` holds exactly `ready` ready and `completed`
/// completed jobs, and nothing else.
fn check_counts(
    client: &Runtime,
    addr: SocketAddr,
    queue: &str,
    ready: usize,
    completed: usize,
) -> anyhow::Result<()> {
    let counts: Counts = client.block_on(get_json(
        addr,
        &format!("/v1/queues/{}", client::path_segment(queue)),
    ))?;
    let expected = Counts {
        scheduled: 0,
        ready: ready as u64,
        leased: 0,
        completed: completed as u64,
        dead: 0,
        cancelled: 0,
    };
    ensure!(
        counts == expected,
        "{queue}: the bench acknowledged {ready} ready and {completed} completed jobs, but the \
         server counts {counts:?}"
    );
    Ok(())
}

/// `GET path` on a fresh connection; `200` and a JSON body expected.
async fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<T> {
    let get = async {
        let mut conn = Connection::connect(addr).await?;
        let get = request("GET", path, conn.host(), b"");
        let response = conn.send(&get).await?;
        response.expect(200, &format!("GET {path}"))?;
        serde_json::from_slice(response.body).with_context(|| format!("GET {path}: the body"))
    };
    tokio::time::timeout(STALL_GRACE, get)
        .await
        .map_err(|_| anyhow!("GET {path}: no answer within {} s", STALL_GRACE.as_secs()))?
}

/// Part 1: enqueue and drain without push features.
fn baseline(plan: &Plan, config: &ServerConfig, client: &Runtime) -> anyhow::Result<Vec<PushRow>> {
    let server = Server::start_with(&plan.parent, Durability::Sync, config.clone())?;
    let outcome = (|| {
        let queue = "push-baseline".to_owned();
        let body = Arc::new(plan.enqueue_body(""));
        let c = plan.connections;
        let enqueue = enqueue_phase(plan, client, server.addr, &queue, body)?;
        let enqueued = enqueue.acks.len();
        let drain = phase(
            client,
            server.addr,
            c,
            enqueued,
            plan.limit,
            &Op::Drain {
                queue: queue.clone(),
            },
        )
        .context("drain")?;
        check_counts(
            client,
            server.addr,
            &queue,
            enqueued - drain.acks.len(),
            drain.acks.len(),
        )?;
        anyhow::Ok(vec![
            enqueue.row("baseline", "enqueue", c, None, plan.jobs),
            drain.row("baseline", "drain", c, None, enqueued),
        ])
    })();
    let stopped = server.stop();
    let rows = outcome?;
    stopped.context("stopping the server")?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_hex_numbers() {
        assert_eq!(job_number("00000000000000ab").unwrap(), 0xab);
        assert!(job_number("").is_err());
        assert!(job_number("xyz").is_err());
        assert!(job_number("00000000000000000001").is_err());
    }

    #[test]
    fn the_smoke_plan_is_small_and_the_server_can_take_the_subscribers() {
        let args = PushArgs {
            jobs: 5000,
            fanout_jobs: 1000,
            subscribers: vec![1, 100, 1000],
            connections: 8,
            producers: 1,
            callback_concurrency: 32,
            payload_bytes: 200,
            max_seconds: 60,
            dir: None,
            smoke: true,
        };
        let smoke = Plan::new(&args).unwrap();
        assert_eq!(smoke.subscribers, vec![1, 10]);
        assert!(smoke.jobs <= 200);
        let full = Plan::new(&PushArgs {
            smoke: false,
            ..args
        })
        .unwrap();
        let config = full.server_config().unwrap();
        assert!(config.max_connections > 1000);
        assert_eq!(config.callbacks.secrets.len(), 1);
        assert_eq!(config.callbacks.concurrency, 32);
        assert!(full.enqueue_body(r#","x":1"#).ends_with(br#"},"x":1}"#));
    }

    #[test]
    fn a_small_run_against_the_real_server_checks_out() {
        let parent = tempfile::tempdir().unwrap();
        let plan = Plan {
            jobs: 30,
            fanout_jobs: 20,
            subscribers: vec![3],
            connections: 3,
            producers: 2,
            callback_concurrency: 4,
            payload: json_payload(50),
            limit: Duration::from_secs(30),
            parent: parent.path().to_owned(),
        };
        let config = plan.server_config().unwrap();
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let rows = baseline(&plan, &config, &client).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.phase, r.count)).collect::<Vec<_>>(),
            vec![("enqueue", 30), ("drain", 30)]
        );
        let (rows, notes) = callbacks::callbacks(&plan, &config, &client).unwrap();
        let delivery = rows.iter().find(|r| r.phase == "delivery").unwrap();
        assert_eq!(delivery.count, 30);
        assert!(notes[0].contains("none missing"), "{notes:?}");
        let rows = fanout::fanout(&plan, &config, &client, 3).unwrap();
        let events = rows.iter().find(|r| r.phase == "events").unwrap();
        assert_eq!(events.count, 3 * 20);
        assert_eq!(events.subscribers, Some(3));
    }
}
