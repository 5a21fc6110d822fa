//! `bench pg`: our queue on its PostgreSQL backend with one, two and three
//! `queue-server` processes on one database, against the PostgreSQL-backed
//! peers (graphile-worker, and BullMQ's PostgreSQL backend), on the same
//! PostgreSQL cluster in the same run.
//!
//! Each run of a variant gets a fresh database on the cluster (created before
//! and dropped after the run), so every system starts on an empty schema. A
//! run enqueues N jobs with C concurrent callers, then drains them with C
//! concurrent workers:
//!
//! - **ours, S servers**: S server processes on the one database (this
//!   binary re-run as `bench pg-serve`, which is `queue-server`'s own
//!   library with `queue-server`'s own flags, so each is a real server
//!   process with its own runtime and connection pool). Enqueue: C
//!   keep-alive HTTP connections, connection i on server i mod S, each
//!   `POST /v1/queues/bench-pg/jobs` one at a time. Drain: C connections
//!   spread the same way, each looping lease 1 (`wait_ms` 1000, so a
//!   lease never comes back empty only because another server's
//!   transaction holds the row) and complete. Every worker keeps the ids it
//!   completed: the run fails unless the N ids are N distinct jobs, and the
//!   queue's counts (asked of the first server) show N completed, none
//!   ready or leased.
//! - **graphile-worker** and **bullmq-pg**: `bench/peers/pg/bench.mjs`
//!   (Node), the system's own client for the enqueue (one job per call) and
//!   its own runner with concurrency C for the drain; it checks that each
//!   job finished once and that none is left.
//!
//! Variants alternate within each of `--runs` rounds (the order rotates
//! from round to round), and the table shows each round's rates and their
//! medians. The cluster's `fsync` and `synchronous_commit` are printed
//! above the table: the comparison is a durable one only when both are on.
//!
//! Without `--database-url`, `scripts/postgres.sh start` starts (or finds)
//! the project's throwaway cluster and gives its URL.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::claims::Claims;
use crate::client::{self, Connection};
use crate::peers::enqueue_body;
use crate::report::markdown;

/// The queue every run of ours uses (each run has a database of its own).
const QUEUE: &str = "bench-pg";
/// How long a lease of the drain waits for a job before it asks again.
const LEASE_BODY: &[u8] = br#"{"max_jobs":1,"lease_ms":60000,"wait_ms":1000}"#;
/// How long a server process may take to start (connect, migrate, listen).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server process may take to stop after its stdin closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `bench pg`.
#[derive(Debug, Clone, clap::Args)]
pub struct PgArgs {
    /// Jobs enqueued and drained per run.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Concurrent producers (enqueue) and workers (drain), the same for
    /// every system.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rounds; each runs every variant once (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Numbers of our servers on the one database, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub servers: Vec<usize>,
    /// Systems to run, comma-separated (default all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub systems: Vec<PgSystem>,
    /// Size of each job's JSON payload in bytes.
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Time limit of each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
    /// A PostgreSQL URL whose user may create and drop databases; each run
    /// gets a database of its own on that cluster. Default: the project's
    /// throwaway cluster, started by `scripts/postgres.sh start`.
    #[arg(long, env = "QUEUE_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Ours only, 200 jobs, C = 4, one round: a quick check that the
    /// harness works (CI runs it).
    #[arg(long)]
    pub smoke: bool,
}

/// A system family for `--systems`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgSystem {
    /// queue-server processes on the PostgreSQL backend.
    Ours,
    /// graphile-worker (npm).
    Graphile,
    /// BullMQ with its PostgreSQL backend (npm).
    Bullmq,
}

/// One column of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Ours with this many servers.
    Ours(usize),
    Graphile,
    Bullmq,
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::Ours(1) => "ours, 1 server".to_owned(),
            Variant::Ours(s) => format!("ours, {s} servers"),
            Variant::Graphile => "graphile-worker".to_owned(),
            Variant::Bullmq => "bullmq (PostgreSQL backend)".to_owned(),
        }
    }

    /// A short name for database names.
    fn slug(self) -> String {
        match self {
            Variant::Ours(s) => format!("ours{s}"),
            Variant::Graphile => "graphile".to_owned(),
            Variant::Bullmq => "bullmq".to_owned(),
        }
    }
}

/// What one run of a variant measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Jobs per second of the enqueue phase.
    enqueue: f64,
    /// Jobs per second of the drain phase.
    drain: f64,
}

struct Plan {
    jobs: usize,
    concurrency: usize,
    runs: usize,
    payload_bytes: usize,
    limit: Duration,
}

/// Runs the comparison and prints the table.
///
/// # Errors
/// Bad options, no PostgreSQL, a server or peer that does not start, a run
/// that fails, times out or whose checks fail.
pub fn run(args: &PgArgs) -> anyhow::Result<()> {
    let plan = if args.smoke {
        Plan {
            jobs: 200,
            concurrency: 4,
            runs: 1,
            payload_bytes: args.payload_bytes,
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
            runs: args.runs,
            payload_bytes: args.payload_bytes,
            limit: Duration::from_secs(args.max_seconds.max(1)),
        }
    };
    ensure!(
        !args.servers.is_empty() && args.servers.iter().all(|s| (1..=16).contains(s)),
        "--servers takes numbers from 1 to 16"
    );
    let systems = if args.smoke {
        vec![PgSystem::Ours]
    } else if args.systems.is_empty() {
        vec![PgSystem::Ours, PgSystem::Graphile, PgSystem::Bullmq]
    } else {
        args.systems.clone()
    };
    let mut variants = Vec::new();
    for system in &systems {
        match system {
            PgSystem::Ours => variants.extend(args.servers.iter().map(|s| Variant::Ours(*s))),
            PgSystem::Graphile => variants.push(Variant::Graphile),
            PgSystem::Bullmq => variants.push(Variant::Bullmq),
        }
    }
    variants.dedup();
    if variants
        .iter()
        .any(|v| matches!(v, Variant::Graphile | Variant::Bullmq))
    {
        require("node")?;
        ensure!(
            node_dir().join("node_modules/graphile-worker").is_dir()
                && node_dir().join("node_modules/bullmq").is_dir(),
            "graphile-worker and bullmq are not installed: run bench/peers/setup.sh first"
        );
    }
    // The script installs PostgreSQL (psql with it) when it is missing.
    let admin = match &args.database_url {
        Some(url) => url.clone(),
        None => project_cluster()?,
    };
    require("psql")?;
    let cluster = Cluster::new(&admin)?;
    let settings = cluster.settings()?;

    let work = tempfile::Builder::new().prefix("bench-pg-").tempdir()?;
    let mut results: Vec<(Variant, Vec<Measured>)> =
        variants.iter().map(|v| (*v, Vec::new())).collect();
    for round in 0..plan.runs {
        // Rotate the order, so no variant always runs first or last.
        let n = results.len();
        for k in 0..n {
            let (variant, samples) = &mut results[(round + k) % n];
            let name = format!(
                "bench_pg_{}_{}_{}",
                std::process::id(),
                round + 1,
                variant.slug()
            );
            let measured = (|| {
                cluster.create(&name)?;
                let url = cluster.url(&name);
                let outcome = match *variant {
                    Variant::Ours(servers) => run_ours(&plan, servers, &url, work.path()),
                    Variant::Graphile => run_node(&plan, "graphile", &url),
                    Variant::Bullmq => run_node(&plan, "bullmq", &url),
                };
                let dropped = cluster.drop_database(&name);
                let measured = outcome?;
                dropped?;
                Ok::<_, anyhow::Error>(measured)
            })()
            .with_context(|| format!("{} round {}", variant.label(), round + 1))?;
            eprintln!(
                "  round {}: {:<28} enqueue {:>7.0} jobs/s, drain {:>7.0} jobs/s",
                round + 1,
                variant.label(),
                measured.enqueue,
                measured.drain
            );
            samples.push(measured);
        }
    }

    println!();
    println!(
        "pg: N = {} jobs of {} bytes per run, C = {} producers then C workers, {} round(s); \
         PostgreSQL {} at {} (fsync {}, synchronous_commit {}); {} CPU(s)",
        plan.jobs,
        plan.payload_bytes,
        plan.concurrency,
        plan.runs,
        settings.version,
        cluster.display(),
        settings.fsync,
        settings.synchronous_commit,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if settings.fsync != "on" || settings.synchronous_commit != "on" {
        println!("warning: fsync or synchronous_commit is off: this is not a durable comparison");
    }
    println!();
    print!("{}", table(&results));
    Ok(())
}

/// The result table: per variant, each round's rates and their medians.
fn table(results: &[(Variant, Vec<Measured>)]) -> String {
    let joined = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(variant, samples)| {
            let enqueue: Vec<f64> = samples.iter().map(|m| m.enqueue).collect();
            let drain: Vec<f64> = samples.iter().map(|m| m.drain).collect();
            vec![
                variant.label(),
                joined(&enqueue),
                format!("{:.0}", median(&enqueue)),
                joined(&drain),
                format!("{:.0}", median(&drain)),
            ]
        })
        .collect();
    markdown(
        &[
            "system",
            "enqueue runs (jobs/s)",
            "enqueue median",
            "drain runs (jobs/s)",
            "drain median",
        ],
        &[false, true, true, true, true],
        &rows,
    )
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

fn require(binary: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ensure!(
        found,
        "{binary} is not installed: run bench/peers/setup.sh (and scripts/postgres.sh start) first"
    );
    Ok(())
}

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/pg")
}

/// Starts (or finds) the project's throwaway cluster; its URL.
fn project_cluster() -> anyhow::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    ensure!(
        script.is_file(),
        "{} is missing: pass --database-url",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .arg("start")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} start failed ({})",
        script.display(),
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("postgres://") || l.starts_with("postgresql://"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} start printed no URL: {text:?}", script.display()))
}

/// A PostgreSQL cluster reached through a URL: its databases are made and
/// dropped with `psql`.
struct Cluster {
    /// The URL up to the database name (`postgres://user@host:port`).
    base: String,
    /// What follows the database name (`?sslmode=…`), or nothing.
    query: String,
    /// The database the administrative commands run in.
    admin: String,
}

/// The cluster's settings that matter for the comparison.
struct Settings {
    version: String,
    fsync: String,
    synchronous_commit: String,
}

impl Cluster {
    fn new(url: &str) -> anyhow::Result<Cluster> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| *s == "postgres" || *s == "postgresql")
            .ok_or_else(|| anyhow!("--database-url must be a postgres:// URL, got {url:?}"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, format!("?{query}")),
            None => (rest, String::new()),
        };
        let (authority, database) = match rest.split_once('/') {
            Some((authority, "")) => (authority, "postgres"),
            Some((authority, database)) => (authority, database),
            None => (rest, "postgres"),
        };
        ensure!(
            !authority.is_empty(),
            "--database-url names no host: {url:?}"
        );
        Ok(Cluster {
            base: format!("{scheme}://{authority}"),
            query,
            admin: database.to_owned(),
        })
    }

    /// The URL of database `name`.
    fn url(&self, name: &str) -> String {
        format!("{}/{name}{}", self.base, self.query)
    }

    /// The cluster's address without the user and password.
    fn display(&self) -> String {
        let (scheme, authority) = self.base.split_once("://").unwrap_or(("", &self.base));
        let host = authority.rsplit('@').next().unwrap_or(authority);
        format!("{scheme}://{host}")
    }

    /// Runs `sql` in the admin database; its output, unaligned.
    fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let output = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(&self.admin))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        ensure!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            version: self.psql("SHOW server_version")?,
            fsync: self.psql("SHOW fsync")?,
            synchronous_commit: self.psql("SHOW synchronous_commit")?,
        })
    }

    fn create(&self, name: &str) -> anyhow::Result<()> {
        self.psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(())
    }

    fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        Ok(())
    }
}

/// One of our server processes: `bench pg-serve` on the database.
struct ServerProcess {
    child: Child,
    /// Closing it stops the server gracefully.
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts one server on `url` and waits until it listens.
    fn start(url: &str, data_dir: &Path) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = Command::new(exe)
            .args(["pg-serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            // The environment rather than `--database-url`: a URL with a
            // password does not show in the process list.
            .env("QUEUE_DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting bench pg-serve")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(read.map(|_| line));
        });
        let mut process = ServerProcess {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(anyhow!(e).context("reading the server's address")),
            Err(_) => bail!("the server did not listen within {START_TIMEOUT:?}"),
        };
        let addr = line
            .trim()
            .strip_prefix(LISTENING)
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| match process.child.try_wait() {
                Ok(Some(status)) => anyhow!("the server exited ({status}) before listening"),
                _ => anyhow!("the server said {line:?} instead of its address"),
            })?;
        process.addr = addr;
        Ok(process)
    }

    /// Graceful stop: closes its stdin and waits for it to exit.
    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the server exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server did not stop within {STOP_TIMEOUT:?}");
            }
            // A child's exit has no notification to wait on with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The line `bench pg-serve` prints once it listens, before its address.
const LISTENING: &str = "listening on ";

/// `bench pg-serve`: one `queue-server` on a PostgreSQL database, with
/// `queue-server`'s flags, that prints its address on stdout once it
/// listens and stops gracefully when its stdin closes (so the harness needs
/// no signals). No log output.
///
/// # Errors
/// The store does not open, the address cannot be bound, or the server
/// fails.
pub fn serve(args: &queue_server::cli::Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the server runtime")?;
    ensure!(
        args.database_url
            .as_deref()
            .is_some_and(|url| !url.is_empty()),
        "pg-serve serves a PostgreSQL database: give --database-url or QUEUE_DATABASE_URL"
    );
    runtime.block_on(async {
        let config = args.queue_config();
        let queue = tokio::task::spawn_blocking(move || queue_core::Queue::open_with(config))
            .await?
            .context("opening the store")?;
        let addrs = args
            .listen
            .resolve()
            .await
            .with_context(|| format!("resolving {}", args.listen))?;
        let addr = addrs
            .first()
            .ok_or_else(|| anyhow!("{} resolves to no address", args.listen))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{LISTENING}{}", listener.local_addr()?)?;
        stdout.flush()?;
        let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = closed.send(());
        });
        let app = queue_server::App::new(queue, args.server_config());
        queue_server::run(listener, app, async {
            let _ = on_close.await;
        })
        .await?;
        Ok(())
    })
}

/// One run of ours with `servers` servers on the database at `url`.
fn run_ours(plan: &Plan, servers: usize, url: &str, work: &Path) -> anyhow::Result<Measured> {
    let dirs = tempfile::Builder::new()
        .prefix("servers-")
        .tempdir_in(work)?;
    let mut processes = Vec::with_capacity(servers);
    // One after the other: the first makes the schema.
    for i in 0..servers {
        processes.push(
            ServerProcess::start(url, &dirs.path().join(format!("server-{i}")))
                .with_context(|| format!("server {}", i + 1))?,
        );
    }
    let addrs: Vec<SocketAddr> = processes.iter().map(|p| p.addr).collect();
    let outcome = (|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let payload = crate::http::payload(plan.payload_bytes);
        let body = Arc::new(enqueue_body(&payload));
        let (enqueue, _) = runtime.block_on(phase(&addrs, plan, Work::Enqueue(body)))?;
        let (drain, ids) = runtime.block_on(phase(&addrs, plan, Work::Drain))?;
        let distinct: HashSet<&String> = ids.iter().collect();
        ensure!(
            ids.len() == plan.jobs && distinct.len() == plan.jobs,
            "the workers completed {} leases of {} distinct jobs, expected {} of {}",
            ids.len(),
            distinct.len(),
            plan.jobs,
            plan.jobs
        );
        runtime.block_on(check(addrs[0], plan.jobs))?;
        Ok(Measured {
            enqueue: plan.jobs as f64 / enqueue.as_secs_f64(),
            drain: plan.jobs as f64 / drain.as_secs_f64(),
        })
    })();
    let mut stopped = Ok(());
    for process in processes {
        if let Err(e) = process.stop() {
            stopped = Err(e);
        }
    }
    let measured = outcome?;
    stopped?;
    Ok(measured)
}

/// What the connections of a phase do.
#[derive(Clone)]
enum Work {
    /// Enqueue this body.
    Enqueue(Arc<Vec<u8>>),
    /// Lease one job, complete it.
    Drain,
}

/// One phase over C connections spread round-robin over `addrs`: its wall
/// time and the ids of the jobs completed (drain).
async fn phase(
    addrs: &[SocketAddr],
    plan: &Plan,
    work: Work,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let mut connections = Vec::with_capacity(plan.concurrency);
    for i in 0..plan.concurrency {
        connections.push(Connection::connect(addrs[i % addrs.len()]).await?);
    }
    let claims = Arc::new(Claims::new(plan.jobs));
    let started = Instant::now();
    let deadline = started + plan.limit;
    let mut tasks = JoinSet::new();
    for connection in connections {
        let (claims, work) = (Arc::clone(&claims), work.clone());
        tasks.spawn(async move {
            let outcome = worker(connection, &claims, deadline, work).await;
            if outcome.is_err() {
                claims.stop();
            }
            outcome
        });
    }
    let mut done = 0;
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (n, mut completed) = joined.map_err(|e| anyhow!("a connection task failed: {e}"))??;
        done += n;
        ids.append(&mut completed);
    }
    let elapsed = started.elapsed();
    ensure!(!claims.timed_out(), "the phase ran into the time limit");
    ensure!(
        done == plan.jobs,
        "{done} of {} operations acknowledged",
        plan.jobs
    );
    Ok((elapsed, ids))
}

#[derive(Deserialize)]
struct Leased {
    jobs: Vec<LeasedJob>,
}

#[derive(Deserialize)]
struct LeasedJob {
    id: String,
    lease_id: String,
}

/// One connection's loop: each claim is one job enqueued, or one job leased
/// and completed.
async fn worker(
    mut connection: Connection,
    claims: &Claims,
    deadline: Instant,
    work: Work,
) -> anyhow::Result<(usize, Vec<String>)> {
    let host = connection.host().to_owned();
    let lease = client::request(
        "POST",
        &format!("/v1/queues/{QUEUE}/lease"),
        &host,
        LEASE_BODY,
    );
    let enqueue = match &work {
        Work::Enqueue(body) => {
            client::request("POST", &format!("/v1/queues/{QUEUE}/jobs"), &host, body)
        }
        Work::Drain => Vec::new(),
    };
    let mut complete = Vec::with_capacity(256);
    let mut done = 0;
    let mut ids = Vec::new();
    while claims.claim(deadline) {
        match work {
            Work::Enqueue(_) => connection.send(&enqueue).await?.expect(202, "enqueue")?,
            Work::Drain => {
                // Every claim has a ready job somewhere; a lease that finds
                // none (all the ready rows held by other transactions at
                // that instant) waits, then asks again, until the deadline.
                let job = loop {
                    let response = connection.send(&lease).await?;
                    response.expect(200, "lease")?;
                    let leased: Leased =
                        serde_json::from_slice(response.body).context("parsing the lease")?;
                    if let Some(job) = leased.jobs.into_iter().next() {
                        break job;
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "no job to lease before the time limit"
                    );
                };
                let body = format!(r#"{{"lease_id":"{}"}}"#, job.lease_id);
                complete.clear();
                client::write_request(
                    &mut complete,
                    "POST",
                    &format!("/v1/jobs/{}/complete", job.id),
                    &host,
                    body.as_bytes(),
                );
                connection.send(&complete).await?.expect(200, "complete")?;
                ids.push(job.id);
            }
        }
        done += 1;
    }
    Ok((done, ids))
}

/// After a run: the queue's counts show every job completed.
async fn check(addr: SocketAddr, jobs: usize) -> anyhow::Result<()> {
    let mut connection = Connection::connect(addr).await?;
    let host = connection.host().to_owned();
    let response = connection
        .send(&client::request(
            "GET",
            &format!("/v1/queues/{QUEUE}"),
            &host,
            b"",
        ))
        .await?;
    response.expect(200, "stats")?;
    let stats: serde_json::Value = serde_json::from_slice(response.body)?;
    ensure!(
        stats["completed"] == jobs && stats["ready"] == 0 && stats["leased"] == 0,
        "the server counts {stats}"
    );
    Ok(())
}

/// What the Node driver prints at the end of a phase.
#[derive(Deserialize)]
struct NodeResult {
    jobs: usize,
    seconds: f64,
    #[serde(default)]
    distinct: Option<usize>,
    #[serde(default)]
    duplicates: Option<usize>,
    #[serde(default)]
    left: Option<u64>,
}

/// One run of a Node peer (`graphile` or `bullmq`) on the database at `url`.
fn run_node(plan: &Plan, system: &str, url: &str) -> anyhow::Result<Measured> {
    let enqueue = node_phase(plan, system, url, "enqueue")?;
    ensure!(
        enqueue.jobs == plan.jobs,
        "{system} enqueued {} of {} jobs",
        enqueue.jobs,
        plan.jobs
    );
    let drain = node_phase(plan, system, url, "drain")?;
    ensure!(
        drain.jobs == plan.jobs
            && drain.distinct == Some(plan.jobs)
            && drain.duplicates == Some(0)
            && drain.left == Some(0),
        "{system} drained {} jobs ({:?} distinct, {:?} finished twice, {:?} left), expected {}",
        drain.jobs,
        drain.distinct,
        drain.duplicates,
        drain.left,
        plan.jobs
    );
    Ok(Measured {
        enqueue: plan.jobs as f64 / enqueue.seconds,
        drain: plan.jobs as f64 / drain.seconds,
    })
}

fn node_phase(plan: &Plan, system: &str, url: &str, phase: &str) -> anyhow::Result<NodeResult> {
    let output = Command::new("node")
        .arg(node_dir().join("bench.mjs"))
        .args(["--system", system, "--url", url, "--phase", phase])
        .args(["--jobs", &plan.jobs.to_string()])
        .args(["--concurrency", &plan.concurrency.to_string()])
        .args(["--payload-bytes", &plan.payload_bytes.to_string()])
        .args(["--max-seconds", &plan.limit.as_secs().to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running node bench/peers/pg/bench.mjs")?;
    ensure!(
        output.status.success(),
        "the {system} driver failed ({}) in phase {phase}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("the {system} driver printed {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_keep_the_user_host_and_parameters() {
        let cluster = Cluster::new("postgres://postgres@127.0.0.1:55432/postgres").unwrap();
        assert_eq!(cluster.url("x"), "postgres://postgres@127.0.0.1:55432/x");
        assert_eq!(cluster.admin, "postgres");
        assert_eq!(cluster.display(), "postgres://127.0.0.1:55432");

        let cluster = Cluster::new("postgresql://u:secret@db:5432/app?sslmode=disable").unwrap();
        assert_eq!(
            cluster.url("x"),
            "postgresql://u:secret@db:5432/x?sslmode=disable"
        );
        assert_eq!(cluster.admin, "app");
        assert_eq!(cluster.display(), "postgresql://db:5432");

        let cluster = Cluster::new("postgres://u@db:5432").unwrap();
        assert_eq!(cluster.url("x"), "postgres://u@db:5432/x");
        assert_eq!(cluster.admin, "postgres");

        assert!(Cluster::new("mysql://u@db/x").is_err());
        assert!(Cluster::new("postgres:///x").is_err());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
