//! The HTTP mode: the real `queue-server`, in-process, driven over loopback
//! by C keep-alive connections.
//!
//! For each durability, the server is started on `127.0.0.1:0` on a fresh
//! data directory, on a multi-threaded tokio runtime of its own (as
//! `#[tokio::main]` builds it for the binary), and stopped through its
//! shutdown future when that durability's runs are done. Then, for each
//! concurrency C:
//!
//! - **enqueue**: C connections `POST /v1/queues/{q}/jobs` on one shared
//!   queue until N jobs are in, claimed from a shared counter. One sample per
//!   request.
//! - **cycle**: each connection loops enqueue → lease → complete on a queue
//!   of its own (`cycle-<i>`), so every lease finds exactly the job its
//!   connection just enqueued. N cycles in all; one sample per cycle (three
//!   requests).
//!
//! Queue names carry the concurrency (`bench-enqueue-c8`, `cycle-3-c8`), so
//! that every run starts on empty queues and its counts can be checked
//! exactly with `GET /v1/queues/{q}` afterwards.
//!
//! The load generator is [`crate::client`] on a single-threaded tokio
//! runtime on the calling thread: one task per connection. BENCHMARKS.md
//! explains why; the CPU time of that thread is reported with each run so
//! a client-bound run shows itself.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use queue_core::{Config, Durability, Queue};
use queue_server::{App, ServerConfig};
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::claims::Claims;
use crate::client::{self, Connection};
use crate::core::{Phase, RunArgs, json_payload_with_key, mode_name};
use crate::report::{self, Row};
use crate::stats::Summary;

/// How long past the time limit a run may take to finish the requests in
/// flight before it is declared stalled.
const STALL_GRACE: Duration = Duration::from_secs(10);
/// The lease request of the cycle phase.
const LEASE_BODY: &[u8] = br#"{"max_jobs":1,"lease_ms":30000}"#;

/// Arguments of `bench http`.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// What to run, how much, and where.
    #[command(flatten)]
    pub run: RunArgs,
}

/// One timed run's outcome: the table row and the client's CPU use.
#[derive(Debug, Clone)]
pub struct HttpRow {
    /// The row of the table.
    pub row: Row,
    /// CPU time of the load generator's thread during the run, when the
    /// platform tells (Linux).
    pub client_cpu: Option<Duration>,
}

impl HttpRow {
    /// The client's CPU time as a share of one core over the run.
    pub fn client_share(&self) -> Option<f64> {
        let wall = self.row.elapsed.as_secs_f64();
        self.client_cpu
            .filter(|_| wall > 0.0)
            .map(|cpu| cpu.as_secs_f64() / wall)
    }

    /// The progress line: the row's, plus the client's CPU share.
    pub fn line(&self) -> String {
        match self.client_share() {
            Some(share) => format!(
                "{}; client thread {:.0}% of one core",
                self.row.line(),
                share * 100.0
            ),
            None => self.row.line(),
        }
    }
}

/// The payload of each job: `{"data":"xxx…"}` of `size` bytes.
pub fn payload(size: usize) -> Vec<u8> {
    json_payload_with_key("data", size)
}

/// The mode label of the table: `http sync`, `http periodic(100ms)`.
pub fn label(durability: Durability) -> String {
    format!("http {}", mode_name(durability))
}

/// Runs the HTTP benchmark and prints the table to standard output
/// (progress goes to standard error).
///
/// # Errors
/// Bad arguments, server start or stop failures, any non-expected status,
/// and counts that do not match what was acknowledged.
pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    let rows = measure(&args.run)?;
    println!();
    println!("{}", header(&args.run));
    println!();
    let table: Vec<Row> = rows.iter().map(|r| r.row.clone()).collect();
    print!("{}", report::table(&table));
    println!();
    println!("{}", client_line(&rows));
    Ok(())
}

/// The line above the table.
pub fn header(args: &RunArgs) -> String {
    format!(
        "HTTP mode (queue-server in-process on 127.0.0.1, C keep-alive HTTP/1.1 connections), \
         payload {} bytes, time limit {} s per run.",
        payload(args.payload_bytes).len(),
        args.max_seconds
    )
}

/// The busiest the load generator was, so that a client-bound run shows.
pub fn client_line(rows: &[HttpRow]) -> String {
    let busiest = rows
        .iter()
        .filter_map(|r| r.client_share().map(|share| (share, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match busiest {
        Some((share, r)) => format!(
            "load generator: one thread, at most {:.0}% of one core ({} {} C={}); \
             the server had the rest of the machine.",
            share * 100.0,
            r.row.mode,
            r.row.phase,
            r.row.concurrency
        ),
        None => "load generator: one thread (its CPU time is not available here).".to_owned(),
    }
}

/// Runs every durability, concurrency and phase; prints progress to
/// standard error.
///
/// # Errors
/// As [`run`].
pub fn measure(args: &RunArgs) -> anyhow::Result<Vec<HttpRow>> {
    let max_time = args.check()?;
    let parent = args.parent_dir()?;
    let payload = payload(args.payload_bytes);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let mut rows = Vec::new();
    for durability in args.durabilities() {
        let server = Server::start(&parent, durability)
            .with_context(|| format!("starting the server ({})", label(durability)))?;
        eprintln!("{} listening on {}", label(durability), server.addr);
        let mut measured = || -> anyhow::Result<()> {
            for &callers in &args.concurrency {
                let target = args.target(durability, callers);
                for phase in [Phase::Enqueue, Phase::Cycle] {
                    let spec = RunSpec {
                        addr: server.addr,
                        label: label(durability),
                        phase,
                        callers,
                        target,
                        max_time,
                    };
                    let row = run_once(&client, &spec, &payload)
                        .with_context(|| format!("{} {} C={callers}", spec.label, phase.name()))?;
                    eprintln!("{}", row.line());
                    rows.push(row);
                }
            }
            Ok(())
        };
        let outcome = measured();
        // Stop the server whether or not the runs succeeded; a run's error
        // comes first.
        let stopped = server.stop();
        outcome?;
        stopped.with_context(|| format!("stopping the server ({})", label(durability)))?;
    }
    Ok(rows)
}

/// The in-process server of one durability.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    runtime: Runtime,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), queue_core::Error>>,
    /// The server's store, for its commit statistics; dropped before the
    /// data directory.
    queue: Queue,
    /// Removed after the runtime (and with it the store) is gone.
    dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start(parent: &Path, durability: Durability) -> anyhow::Result<Server> {
        Server::start_with(parent, durability, ServerConfig::default())
    }

    /// [`Server::start`] with a server configuration of the caller's
    /// (callbacks, connection cap).
    pub(crate) fn start_with(
        parent: &Path,
        durability: Durability,
        config: ServerConfig,
    ) -> anyhow::Result<Server> {
        Server::start_configured(parent, durability, config, |c| c)
    }

    /// [`Server::start_with`], the store's configuration adjusted by
    /// `adjust` (history retention, say).
    pub(crate) fn start_configured(
        parent: &Path,
        durability: Durability,
        config: ServerConfig,
        adjust: impl FnOnce(Config) -> Config,
    ) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("bench-http-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a data directory in {}", parent.display()))?;
        let queue = Queue::open_with(adjust(Config::new(dir.path()).durability(durability)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-server")
            .build()
            .context("building the server runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = App::new(queue.clone(), config);
        let serving = runtime.spawn(queue_server::run(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            runtime,
            stop,
            serving,
            queue,
            dir,
        })
    }

    /// How the server's store has grouped its commits so far.
    pub(crate) fn commit_stats(&self) -> Option<queue_core::CommitStats> {
        self.queue.commit_stats()
    }

    /// Graceful shutdown through the shutdown future; `run` flushes the
    /// store before it returns. Then the runtime (and the store it holds)
    /// is dropped and the data directory removed.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        let Server {
            runtime,
            stop,
            serving,
            queue,
            dir,
            ..
        } = self;
        let _ = stop.send(());
        let outcome = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), serving).await });
        drop(queue);
        runtime.shutdown_timeout(Duration::from_secs(10));
        drop(dir);
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!(e).context("the server's final flush failed")),
            Ok(Err(e)) => Err(anyhow!(e).context("the server task failed")),
            Err(_) => bail!("the server did not stop within 30 s of the shutdown signal"),
        }
    }
}

/// What one timed run does.
#[derive(Debug, Clone)]
struct RunSpec {
    addr: SocketAddr,
    label: String,
    phase: Phase,
    callers: usize,
    target: usize,
    max_time: Duration,
}

impl RunSpec {
    fn enqueue_queue(&self) -> String {
        format!("bench-enqueue-c{}", self.callers)
    }

    fn cycle_queue(&self, connection: usize) -> String {
        format!("cycle-{connection}-c{}", self.callers)
    }

    /// The queues whose counts the run is checked against.
    fn queues(&self) -> Vec<String> {
        match self.phase {
            Phase::Enqueue => vec![self.enqueue_queue()],
            Phase::Cycle => (0..self.callers).map(|i| self.cycle_queue(i)).collect(),
        }
    }
}

/// The part of a job object the cycle needs.
#[derive(Debug, Deserialize)]
struct JobRef<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    lease_id: Option<std::borrow::Cow<'a, str>>,
}

/// A lease response.
#[derive(Debug, Deserialize)]
struct Leased<'a> {
    #[serde(borrow)]
    jobs: Vec<JobRef<'a>>,
}

/// A queue's counts, from `GET /v1/queues/{q}`.
#[derive(Debug, Deserialize)]
struct Stats {
    scheduled: u64,
    ready: u64,
    leased: u64,
    completed: u64,
    dead: u64,
    cancelled: u64,
}

/// One timed run against the server at `spec.addr`, on the client runtime.
fn run_once(client: &Runtime, spec: &RunSpec, payload: &[u8]) -> anyhow::Result<HttpRow> {
    let enqueue_body = {
        let mut body = br#"{"payload":"#.to_vec();
        body.extend_from_slice(payload);
        body.push(b'}');
        Arc::new(body)
    };
    let cpu_before = thread_cpu_time();
    let (outcomes, elapsed) = client.block_on(async {
        // Connect every connection before the clock starts.
        let mut connections = Vec::with_capacity(spec.callers);
        for _ in 0..spec.callers {
            connections.push(Connection::connect(spec.addr).await?);
        }
        let started = Instant::now();
        let shared = Arc::new(Claims::new(spec.target));
        let deadline = started + spec.max_time;
        let give_up = tokio::time::Instant::from_std(started + spec.max_time + STALL_GRACE);
        let mut tasks = JoinSet::new();
        for (i, connection) in connections.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let enqueue_body = Arc::clone(&enqueue_body);
            let phase = spec.phase;
            let queue = match phase {
                Phase::Enqueue => spec.enqueue_queue(),
                Phase::Cycle => spec.cycle_queue(i),
            };
            let per_connection = spec.target / spec.callers + 1;
            tasks.spawn(async move {
                let work = caller(connection, &shared, deadline, phase, &queue, &enqueue_body, per_connection);
                let outcome = match tokio::time::timeout_at(give_up, work).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(anyhow!(
                        "connection {i} stalled: a request was still unanswered {} s after the time limit",
                        STALL_GRACE.as_secs()
                    )),
                };
                if outcome.is_err() {
                    shared.stop();
                }
                outcome
            });
        }
        let mut outcomes = Vec::with_capacity(spec.callers);
        while let Some(joined) = tasks.join_next().await {
            outcomes.push(joined.unwrap_or_else(|e| Err(anyhow!("a connection task failed: {e}"))));
        }
        let elapsed = started.elapsed();
        let timed_out = shared.timed_out();
        anyhow::Ok(((outcomes, timed_out), elapsed))
    })?;
    let client_cpu = match (cpu_before, thread_cpu_time()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let (outcomes, timed_out) = outcomes;
    let mut latencies = Vec::with_capacity(spec.target);
    for outcome in outcomes {
        latencies.extend(outcome?);
    }
    let done = latencies.len();

    // Outside the clock: what was acknowledged is what the server counts.
    client.block_on(check_counts(spec, done))?;

    Ok(HttpRow {
        row: Row {
            mode: spec.label.clone(),
            phase: spec.phase.name(),
            concurrency: spec.callers,
            target: spec.target,
            elapsed,
            latency: Summary::of(latencies),
            timed_out: timed_out && done < spec.target,
        },
        client_cpu,
    })
}

/// One connection's loop; returns the latency of each operation it did.
async fn caller(
    mut connection: Connection,
    shared: &Claims,
    deadline: Instant,
    phase: Phase,
    queue: &str,
    enqueue_body: &[u8],
    capacity: usize,
) -> anyhow::Result<Vec<Duration>> {
    let queue_path = client::path_segment(queue);
    let host = connection.host().to_owned();
    let enqueue = client::request(
        "POST",
        &format!("/v1/queues/{queue_path}/jobs"),
        &host,
        enqueue_body,
    );
    let lease = client::request(
        "POST",
        &format!("/v1/queues/{queue_path}/lease"),
        &host,
        LEASE_BODY,
    );
    let mut complete = Vec::with_capacity(256);
    let mut latencies = Vec::with_capacity(capacity);
    while shared.claim(deadline) {
        let t = Instant::now();
        match phase {
            Phase::Enqueue => {
                connection.send(&enqueue).await?.expect(202, "enqueue")?;
            }
            Phase::Cycle => {
                let response = connection.send(&enqueue).await?;
                response.expect(202, "enqueue")?;
                let sent: JobRef<'_> = serde_json::from_slice(response.body)
                    .context("parsing the enqueue response")?;
                let sent_id = sent.id.into_owned();

                let response = connection.send(&lease).await?;
                response.expect(200, "lease")?;
                let leased: Leased<'_> =
                    serde_json::from_slice(response.body).context("parsing the lease response")?;
                let [got] = leased.jobs.as_slice() else {
                    bail!(
                        "lease on {queue} returned {} jobs, expected 1",
                        leased.jobs.len()
                    );
                };
                ensure!(
                    got.id == sent_id,
                    "lease on {queue} returned job {}, expected {sent_id}",
                    got.id
                );
                let lease_id = got
                    .lease_id
                    .as_deref()
                    .ok_or_else(|| anyhow!("lease on {queue}: job {sent_id} has no lease_id"))?;
                let body = format!(r#"{{"lease_id":{}}}"#, serde_json::to_string(lease_id)?);
                client::write_request(
                    &mut complete,
                    "POST",
                    &format!("/v1/jobs/{}/complete", client::path_segment(&sent_id)),
                    &host,
                    body.as_bytes(),
                );
                connection.send(&complete).await?.expect(200, "complete")?;
            }
        }
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

/// Checks with `GET /v1/queues/{q}` that the server stores exactly what the
/// run acknowledged: `done` ready jobs for enqueue; `done` completed jobs
/// and nothing else for cycle.
async fn check_counts(spec: &RunSpec, done: usize) -> anyhow::Result<()> {
    let mut connection = Connection::connect(spec.addr).await?;
    let mut total = Stats {
        scheduled: 0,
        ready: 0,
        leased: 0,
        completed: 0,
        dead: 0,
        cancelled: 0,
    };
    for queue in spec.queues() {
        let get = client::request(
            "GET",
            &format!("/v1/queues/{}", client::path_segment(&queue)),
            connection.host(),
            b"",
        );
        let response = connection.send(&get).await?;
        response.expect(200, "queue stats")?;
        let stats: Stats =
            serde_json::from_slice(response.body).context("parsing the queue stats")?;
        total.scheduled += stats.scheduled;
        total.ready += stats.ready;
        total.leased += stats.leased;
        total.completed += stats.completed;
        total.dead += stats.dead;
        total.cancelled += stats.cancelled;
    }
    let done = done as u64;
    let expected = match spec.phase {
        Phase::Enqueue => (done, 0),
        Phase::Cycle => (0, done),
    };
    ensure!(
        (total.ready, total.completed) == expected
            && total.scheduled + total.leased + total.dead + total.cancelled == 0,
        "{} acknowledged {done} jobs but the server counts {total:?}",
        spec.phase.name()
    );
    Ok(())
}

/// CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`).
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_payloads() {
        assert_eq!(label(Durability::Sync), "http sync");
        assert_eq!(label(Durability::Periodic(100)), "http periodic(100ms)");
        assert_eq!(payload(200).len(), 200);
        assert!(payload(200).starts_with(br#"{"data":"xx"#));
    }

    #[test]
    fn a_small_run_against_the_real_server_counts_what_it_did() {
        let parent = tempfile::tempdir().unwrap();
        let server = Server::start(parent.path(), Durability::Periodic(100)).unwrap();
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let payload = payload(50);
        for phase in [Phase::Enqueue, Phase::Cycle] {
            let spec = RunSpec {
                addr: server.addr,
                label: label(Durability::Periodic(100)),
                phase,
                callers: 3,
                target: 30,
                max_time: Duration::from_secs(30),
            };
            let row = run_once(&client, &spec, &payload).unwrap();
            assert_eq!(row.row.jobs(), 30);
            assert!(!row.row.timed_out);
            assert_eq!(row.row.concurrency, 3);
            assert_eq!(row.row.mode, "http periodic(100ms)");
        }
        // A second run with the same concurrency finds the counts off.
        let spec = RunSpec {
            addr: server.addr,
            label: label(Durability::Periodic(100)),
            phase: Phase::Enqueue,
            callers: 3,
            target: 5,
            max_time: Duration::from_secs(30),
        };
        let error = run_once(&client, &spec, &payload).unwrap_err();
        assert!(
            format!("{error:#}").contains("the server counts"),
            "{error:#}"
        );
        server.stop().unwrap();
    }
}
