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
//!   acknowledgement) and periodic (flush every 100 ms);
//! - beanstalkd with a binlog, `-f 0` (fsync every write) and `-F` (never
//!   fsync), driven by the same Rust code as our HTTP server (one tokio task
//!   per connection on one thread);
//! - Redis with `appendonly yes`, `appendfsync always` and `everysec`, driven
//!   by BullMQ from `bench/peers/bullmq/bench.mjs` (Node), same shape.
//!
//! `bench/peers/setup.sh` installs beanstalkd, redis-server and bullmq.
//! `--smoke` runs only our systems with a tiny N (CI runs it so that the
//! harness cannot rot).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use queue_core::blocking::Queue;
use queue_core::{Config, Durability, LeaseOptions, NewJob};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::claims::Claims;
use crate::client::{BlockingConnection, Connection, Response, request};
use crate::core::json_payload;
use crate::fsync;
use crate::http::Server;
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
    /// Our systems only, 300 jobs, C = 1 and 8: a quick check that the
    /// harness works (CI runs it).
    #[arg(long)]
    pub smoke: bool,
}

/// A system family for `--systems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemArg {
    /// queue-core in-process.
    Embedded,
    /// queue-server over loopback HTTP.
    Http,
    /// beanstalkd with a binlog.
    Beanstalkd,
    /// Redis + BullMQ.
    Bullmq,
}

/// One system in one durability mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Embedded(Durability),
    Http(Durability),
    /// `true`: fsync every write (`-f 0`).
    Beanstalkd(bool),
    /// `true`: `appendfsync always`.
    Bullmq(bool),
}

impl Target {
    fn label(self) -> String {
        let durability = |d: Durability| match d {
            Durability::Sync => "durable: fsync before ack".to_owned(),
            Durability::Periodic(ms) => format!("periodic: flush every {ms} ms"),
        };
        match self {
            Target::Embedded(d) => format!("ours embedded ({})", durability(d)),
            Target::Http(d) => format!("ours http ({})", durability(d)),
            Target::Beanstalkd(true) => "beanstalkd -b -f 0 (fsync every write)".to_owned(),
            Target::Beanstalkd(false) => "beanstalkd -b -F (binlog, no fsync)".to_owned(),
            Target::Bullmq(true) => "redis+bullmq (appendfsync always)".to_owned(),
            Target::Bullmq(false) => "redis+bullmq (appendfsync everysec)".to_owned(),
        }
    }
}

/// Runs the comparison and prints the table.
///
/// # Errors
/// A system fails to start, a request fails, a check fails.
pub fn run(args: &PeersArgs) -> anyhow::Result<()> {
    let Plan {
        jobs,
        concurrency,
        parent,
        limit,
        payload,
    } = args.workload.plan(args.smoke)?;
    let families: Vec<SystemArg> = if args.smoke {
        vec![SystemArg::Embedded, SystemArg::Http]
    } else if args.systems.is_empty() {
        vec![
            SystemArg::Embedded,
            SystemArg::Http,
            SystemArg::Beanstalkd,
            SystemArg::Bullmq,
        ]
    } else {
        args.systems.clone()
    };
    let periodic = Durability::Periodic(100);
    let mut targets = Vec::new();
    for family in &families {
        match family {
            SystemArg::Embedded => {
                targets.push(Target::Embedded(Durability::Sync));
                targets.push(Target::Embedded(periodic));
            }
            SystemArg::Http => {
                targets.push(Target::Http(Durability::Sync));
                targets.push(Target::Http(periodic));
            }
            SystemArg::Beanstalkd => {
                require("beanstalkd")?;
                targets.push(Target::Beanstalkd(true));
                targets.push(Target::Beanstalkd(false));
            }
            SystemArg::Bullmq => {
                require("redis-server")?;
                require("node")?;
                ensure!(
                    bullmq_dir().join("node_modules/bullmq").is_dir(),
                    "bullmq is not installed: run bench/peers/setup.sh first"
                );
                targets.push(Target::Bullmq(true));
                targets.push(Target::Bullmq(false));
            }
        }
    }
    let probe = fsync::measure(&parent, 5000, Duration::from_secs(2))?;

    let mut rows = Vec::new();
    for target in &targets {
        for c in &concurrency {
            eprintln!("{} C={c} ...", target.label());
            let (enqueue, drain) = run_target(*target, &parent, jobs, *c, limit, &payload)
                .with_context(|| format!("{} at C={c}", target.label()))?;
            eprintln!("  {}", enqueue.line());
            eprintln!("  {}", drain.line());
            rows.push(enqueue);
            rows.push(drain);
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
    println!(
        "raw fsync (4 KiB append + fdatasync, in {}): {:.0} syncs/s, p50 {}",
        parent.display(),
        probe.rate(),
        crate::stats::Latency(probe.latency.p50)
    );
    println!();
    print!("{}", report::table(&rows));
    println!();
    // The targets are stated for the full run; a smoke run says nothing
    // about them.
    if !args.smoke {
        for line in ratios(&rows, &concurrency) {
            println!("{line}");
        }
    }
    Ok(())
}

/// `ours http durable / peer durable` at the largest concurrency, per phase.
fn ratios(rows: &[Row], concurrency: &[usize]) -> Vec<String> {
    let Some(c) = concurrency.iter().max().copied() else {
        return Vec::new();
    };
    let rate = |mode: &str, phase: &str| {
        rows.iter()
            .find(|r| r.mode == mode && r.phase == phase && r.concurrency == c)
            .map(Row::rate)
    };
    let ours = Target::Http(Durability::Sync).label();
    let mut lines = Vec::new();
    for phase in ["enqueue", "drain"] {
        for peer in [Target::Beanstalkd(true), Target::Bullmq(true)] {
            if let (Some(a), Some(b)) = (rate(&ours, phase), rate(&peer.label(), phase)) {
                let x = if b > 0.0 { a / b } else { f64::INFINITY };
                lines.push(format!(
                    "{phase}@{c}: ours http durable / {} = {x:.1}× ({a:.0} / {b:.0} jobs/s) (target ≥ 3×: {})",
                    peer.label(),
                    if x >= 3.0 { "meets target" } else { "BELOW target" }
                ));
            }
        }
    }
    if let Some(a) = rate(&Target::Embedded(Durability::Sync).label(), "enqueue") {
        lines.push(format!(
            "enqueue@{c}: ours embedded durable = {a:.0} jobs/s (target ≥ 60000: {})",
            if a >= 60_000.0 {
                "meets target"
            } else {
                "BELOW target"
            }
        ));
    }
    lines
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

fn bullmq_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/bullmq")
}

/// Runs both phases of one system at one concurrency on a fresh instance.
fn run_target(
    target: Target,
    parent: &Path,
    jobs: usize,
    c: usize,
    limit: Duration,
    payload: &[u8],
) -> anyhow::Result<(Row, Row)> {
    let label = target.label();
    let row = |phase: &'static str, result: Phase| Row {
        mode: label.clone(),
        phase,
        concurrency: c,
        target: jobs,
        elapsed: result.elapsed,
        timed_out: result.timed_out,
        latency: Summary::of(result.samples),
    };
    match target {
        Target::Embedded(durability) => {
            let dir = tempfile::Builder::new()
                .prefix("peers-ours-")
                .tempdir_in(parent)?;
            let queue = Queue::open_with(Config::new(dir.path()).durability(durability))?;
            let enqueue = threads(c, jobs, limit, |_| {
                queue.enqueue("peers", NewJob::new(payload.to_vec()))?;
                Ok(())
            })?;
            let drain = threads(c, jobs, limit, |_| {
                let leased = queue.lease("peers", &LeaseOptions::default())?;
                let job = leased.first().ok_or_else(|| anyhow!("no job to lease"))?;
                queue.complete(job.job.id, job.lease_id, None)?;
                Ok(())
            })?;
            check_ours(&queue.stats("peers")?, &enqueue, &drain)?;
            Ok((row("enqueue", enqueue), row("drain", drain)))
        }
        Target::Http(durability) => {
            let server = Server::start(parent, durability)?;
            let addr = server.addr;
            let enqueue_body = enqueue_body(payload);
            let result = (|| {
                let enqueue = connections(c, jobs, limit, addr, Protocol::Http, move |conn| {
                    let body = enqueue_body.clone();
                    Box::pin(async move { conn.http_enqueue(&body).await })
                })?;
                let drain = connections(c, jobs, limit, addr, Protocol::Http, |conn| {
                    Box::pin(async move { conn.http_drain_one().await })
                })?;
                Ok::<_, anyhow::Error>((enqueue, drain))
            })();
            server.stop()?;
            let (enqueue, drain) = result?;
            Ok((row("enqueue", enqueue), row("drain", drain)))
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
            Ok((row("enqueue", enqueue), row("drain", drain)))
        }
        Target::Bullmq(always) => {
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
            let drain = bullmq(port, "drain", jobs, c, limit, payload.len())?;
            drop(process);
            Ok((row("enqueue", enqueue), row("drain", drain)))
        }
    }
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

#[derive(Deserialize)]
struct LeasedJobs {
    jobs: Vec<LeasedJob>,
}

#[derive(Deserialize)]
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
