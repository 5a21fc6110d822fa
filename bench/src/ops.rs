//! What the operator tools cost: HTTP enqueue-then-drain throughput of the
//! real `queue-server` with history rollups off and on, and with an event
//! subscriber doing what the dashboard does, in the same run.
//!
//! Variants, each on a fresh data directory and server:
//!
//! - **off**: `history_retention` zero (no rollups), no subscriber (the
//!   baseline);
//! - **history**: history on (the default, 7 days), no subscriber;
//! - **history + dashboard**: history on, plus one subscriber reading
//!   `GET /v1/events` (every queue) continuously as Server-Sent Events, as
//!   the dashboard's page does, on a thread of its own (a browser is
//!   another process).
//!
//! A run enqueues N jobs over C keep-alive connections (the load generator
//! of the `http` mode, [`crate::client`], on one current-thread runtime),
//! then drains them: each connection loops lease 1, complete, until N are
//! completed. Throughput is N / (enqueue time + drain time); the enqueue
//! and drain rates are shown too. Variants alternate within each of
//! `--runs` rounds (so a slow phase of the machine does not fall on one
//! variant), and the table shows medians and their ratio to **off**. A
//! subscriber must have received every event of the run (3 per job:
//! enqueue, lease, complete), or the run fails.
//!
//! Adding a subscriber kind (a real headless browser on `/ui/`, say) is a
//! new [`Subscriber`] variant and its arm in [`Subscriber::start`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use queue_core::Durability;
use queue_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::claims::Claims;
use crate::client::{self, Connection};
use crate::http::Server;
use crate::push::sse;
use crate::report::markdown;

/// The options of the ops mode.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Jobs enqueued and drained per run.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Rounds; each runs every variant once (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Durability: `sync` (the default of the server: each acknowledged
    /// write is on disk) or `periodic` (flushed every 100 ms, which shows
    /// the CPU cost instead of the disk's fsync rate).
    #[arg(long, default_value = "sync")]
    pub durability: String,
    /// Time limit of each run, in seconds.
    #[arg(long, default_value_t = 300.0)]
    pub max_seconds: f64,
    /// Directory under which the data directories are made.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Tiny N and C, one round: for CI.
    #[arg(long)]
    pub smoke: bool,
}

/// Who watches the server during a run, besides the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscriber {
    /// Nobody.
    None,
    /// One SSE stream on `GET /v1/events` (all queues), read continuously.
    EventStream,
}

/// A subscriber at work: how many events it has read, and its thread.
struct Watching {
    events: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Subscriber {
    /// Starts watching the server at `addr`; returns once the stream is
    /// open (its head and opening frame read), so that the run's events
    /// all come after.
    fn start(self, addr: SocketAddr) -> anyhow::Result<Option<Watching>> {
        match self {
            Subscriber::None => Ok(None),
            Subscriber::EventStream => {
                let events = Arc::new(AtomicU64::new(0));
                let stop = Arc::new(AtomicBool::new(false));
                let (opened, is_open) = std::sync::mpsc::channel();
                let thread = std::thread::Builder::new()
                    .name("bench-dashboard".into())
                    .spawn({
                        let (events, stop) = (Arc::clone(&events), Arc::clone(&stop));
                        move || read_events(addr, &events, &stop, &opened)
                    })?;
                match is_open.recv_timeout(Duration::from_secs(30)) {
                    Ok(()) => Ok(Some(Watching {
                        events,
                        stop,
                        thread,
                    })),
                    Err(_) => {
                        let outcome = thread
                            .join()
                            .map_err(|_| anyhow!("the subscriber panicked"))?;
                        Err(outcome.err().unwrap_or_else(|| anyhow!("no stream")))
                            .context("opening the event stream")
                    }
                }
            }
        }
    }
}

impl Watching {
    /// Stops the subscriber once it has read `expected` events (or after
    /// 30 s); returns how many it read.
    fn finish(self, expected: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.events.load(Ordering::Relaxed) < expected
            && Instant::now() < deadline
            && !self.thread.is_finished()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("the subscriber panicked"))??;
        Ok(self.events.load(Ordering::Relaxed))
    }
}

/// The subscriber's thread: opens `GET /v1/events`, says so on `opened`,
/// then counts event frames until told to stop.
fn read_events(
    addr: SocketAddr,
    events: &AtomicU64,
    stop: &AtomicBool,
    opened: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let get = format!(
            "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\n\r\n"
        );
        stream.write_all(get.as_bytes()).await?;
        let mut raw = Vec::with_capacity(64 * 1024);
        let head = loop {
            if let Some(head) = sse::parse_stream_head(&raw)? {
                break head;
            }
            let read = stream.read_buf(&mut raw).await?;
            ensure!(read > 0, "the server closed the stream before its head");
        };
        let _ = opened.send(());
        let mut dechunker = sse::Dechunker::default();
        let mut frames = sse::FrameReader::default();
        let mut body = raw.split_off(head.head_len);
        loop {
            if head.chunked {
                dechunker.feed(&body, frames.buffer())?;
            } else {
                frames.buffer().extend_from_slice(&body);
            }
            while let Some(frame) = frames.next_frame()? {
                if frame.event.is_some() && frame.id.is_some() {
                    events.fetch_add(1, Ordering::Relaxed);
                }
            }
            body.clear();
            // Reading a socket is cancel-safe: a read cut short by the
            // timeout consumed nothing. The timeout only bounds how late
            // the stop is seen.
            match tokio::time::timeout(STOP_POLL, stream.read_buf(&mut body)).await {
                Ok(read) => ensure!(read? > 0, "the server closed the event stream"),
                Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
                Err(_) => {}
            }
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    history: bool,
    subscriber: Subscriber,
}

impl Variant {
    const ALL: [Variant; 3] = [
        Variant {
            history: false,
            subscriber: Subscriber::None,
        },
        Variant {
            history: true,
            subscriber: Subscriber::None,
        },
        Variant {
            history: true,
            subscriber: Subscriber::EventStream,
        },
    ];

    fn name(self) -> &'static str {
        match (self.history, self.subscriber) {
            (false, Subscriber::None) => "off",
            (true, Subscriber::None) => "history",
            (false, Subscriber::EventStream) => "dashboard",
            (true, Subscriber::EventStream) => "history + dashboard",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Measured {
    enqueue: Duration,
    drain: Duration,
    jobs: usize,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.jobs as f64 / (self.enqueue + self.drain).as_secs_f64()
    }
}

struct Plan {
    jobs: usize,
    concurrency: usize,
    runs: usize,
    durability: Durability,
    limit: Duration,
}

/// Runs the mode and prints the table.
///
/// # Errors
/// Bad options; a server that does not start; a run that fails, times out
/// or whose subscriber misses events.
pub fn run(args: &OpsArgs) -> anyhow::Result<()> {
    let durability = match args.durability.as_str() {
        "sync" => Durability::Sync,
        "periodic" => Durability::Periodic(100),
        other => anyhow::bail!("--durability is sync or periodic, not {other:?}"),
    };
    let plan = if args.smoke {
        Plan {
            jobs: 200,
            concurrency: 4,
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
            runs: args.runs,
            durability,
            limit: Duration::from_secs_f64(args.max_seconds),
        }
    };
    let parent = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    println!(
        "ops: N = {} jobs enqueued then drained over HTTP, C = {} connections, {} round(s), \
         durability {}",
        plan.jobs, plan.concurrency, plan.runs, args.durability
    );
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let mut results: Vec<(Variant, Vec<Measured>)> =
        Variant::ALL.iter().map(|v| (*v, Vec::new())).collect();
    for round in 0..plan.runs {
        for (variant, samples) in &mut results {
            let measured = run_once(&client, &plan, *variant, &parent)
                .with_context(|| format!("{} round {}", variant.name(), round + 1))?;
            println!(
                "  round {}: {:<20} {:>8.0} jobs/s (enqueue {:>8.0}/s, drain {:>8.0}/s)",
                round + 1,
                variant.name(),
                measured.rate(),
                measured.jobs as f64 / measured.enqueue.as_secs_f64(),
                measured.jobs as f64 / measured.drain.as_secs_f64(),
            );
            samples.push(measured);
        }
    }
    let base = median(&results[0].1.iter().map(Measured::rate).collect::<Vec<_>>());
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(variant, samples)| {
            let rates: Vec<f64> = samples.iter().map(Measured::rate).collect();
            let enqueue: Vec<f64> = samples
                .iter()
                .map(|m| m.jobs as f64 / m.enqueue.as_secs_f64())
                .collect();
            let drain: Vec<f64> = samples
                .iter()
                .map(|m| m.jobs as f64 / m.drain.as_secs_f64())
                .collect();
            let m = median(&rates);
            vec![
                variant.name().to_owned(),
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("{m:.0}"),
                format!("{:.0}", median(&enqueue)),
                format!("{:.0}", median(&drain)),
                format!("{:.3}", m / base),
            ]
        })
        .collect();
    print!(
        "{}",
        markdown(
            &[
                "variant",
                "runs (jobs/s)",
                "median jobs/s",
                "enqueue/s",
                "drain/s",
                "vs off"
            ],
            &[false, true, true, true, true, true],
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

const QUEUE: &str = "bench-ops";
/// How late the subscriber may notice that it is told to stop.
const STOP_POLL: Duration = Duration::from_millis(50);
const LEASE_BODY: &[u8] = br#"{"max_jobs":1,"lease_ms":60000}"#;

/// One run of `variant` on a fresh server.
fn run_once(
    client: &tokio::runtime::Runtime,
    plan: &Plan,
    variant: Variant,
    parent: &std::path::Path,
) -> anyhow::Result<Measured> {
    let retention = if variant.history {
        Duration::from_secs(7 * 86_400)
    } else {
        Duration::ZERO
    };
    let server = Server::start_configured(
        parent,
        plan.durability,
        ServerConfig::default(),
        move |config| config.history_retention(retention),
    )?;
    let outcome = (|| {
        let watching = variant.subscriber.start(server.addr)?;
        let enqueue = client.block_on(phase(server.addr, plan, Phase::Enqueue))?;
        let drain = client.block_on(phase(server.addr, plan, Phase::Drain))?;
        if let Some(watching) = watching {
            let expected = 3 * plan.jobs as u64;
            let seen = watching.finish(expected)?;
            ensure!(
                seen == expected,
                "the subscriber read {seen} events, expected {expected}"
            );
        }
        client.block_on(check(server.addr, plan, variant))?;
        Ok(Measured {
            enqueue,
            drain,
            jobs: plan.jobs,
        })
    })();
    let stopped = server.stop();
    let measured = outcome?;
    stopped?;
    Ok(measured)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Enqueue,
    Drain,
}

/// One phase over C connections; its wall time.
async fn phase(addr: SocketAddr, plan: &Plan, phase: Phase) -> anyhow::Result<Duration> {
    let mut connections = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        connections.push(Connection::connect(addr).await?);
    }
    let claims = Arc::new(Claims::new(plan.jobs));
    let started = Instant::now();
    let deadline = started + plan.limit;
    let mut tasks = JoinSet::new();
    for connection in connections {
        let claims = Arc::clone(&claims);
        tasks.spawn(async move {
            let outcome = worker(connection, &claims, deadline, phase).await;
            if outcome.is_err() {
                claims.stop();
            }
            outcome
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined.map_err(|e| anyhow!("a connection task failed: {e}"))??;
    }
    let elapsed = started.elapsed();
    ensure!(!claims.timed_out(), "the phase ran into the time limit");
    ensure!(
        done == plan.jobs,
        "{done} of {} operations acknowledged",
        plan.jobs
    );
    Ok(elapsed)
}

/// One connection's loop: enqueues, or leases and completes (every claim
/// is a job that is ready: only this phase leases, one job per claim).
async fn worker(
    mut connection: Connection,
    claims: &Claims,
    deadline: Instant,
    phase: Phase,
) -> anyhow::Result<usize> {
    let host = connection.host().to_owned();
    let enqueue = client::request(
        "POST",
        &format!("/v1/queues/{QUEUE}/jobs"),
        &host,
        br#"{"payload":{"to":"someone@example.com","n":1}}"#,
    );
    let lease = client::request(
        "POST",
        &format!("/v1/queues/{QUEUE}/lease"),
        &host,
        LEASE_BODY,
    );
    let mut complete = Vec::with_capacity(256);
    let mut done = 0;
    while claims.claim(deadline) {
        match phase {
            Phase::Enqueue => connection.send(&enqueue).await?.expect(202, "enqueue")?,
            Phase::Drain => {
                let response = connection.send(&lease).await?;
                response.expect(200, "lease")?;
                let leased: serde_json::Value =
                    serde_json::from_slice(response.body).context("parsing the lease")?;
                let job = &leased["jobs"][0];
                let (Some(id), Some(lease_id)) = (job["id"].as_str(), job["lease_id"].as_str())
                else {
                    anyhow::bail!("a lease found no ready job: {leased}");
                };
                let body = format!(r#"{{"lease_id":"{lease_id}"}}"#);
                complete.clear();
                client::write_request(
                    &mut complete,
                    "POST",
                    &format!("/v1/jobs/{id}/complete"),
                    &host,
                    body.as_bytes(),
                );
                connection.send(&complete).await?.expect(200, "complete")?;
            }
        }
        done += 1;
    }
    Ok(done)
}

/// After a run: the server completed every job, and its history says so
/// (or, with history off, says nothing).
async fn check(addr: SocketAddr, plan: &Plan, variant: Variant) -> anyhow::Result<()> {
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
        stats["completed"] == plan.jobs && stats["ready"] == 0 && stats["leased"] == 0,
        "the server counts {stats}"
    );
    let response = connection
        .send(&client::request(
            "GET",
            &format!("/v1/queues/{QUEUE}/history?step_ms=3600000"),
            &host,
            b"",
        ))
        .await?;
    response.expect(200, "history")?;
    let history: queue_proto::History = serde_json::from_slice(response.body)?;
    let completed: u64 = history.points.iter().map(|p| p.completed).sum();
    let expected = if variant.history { plan.jobs as u64 } else { 0 };
    ensure!(
        completed == expected,
        "history counts {completed} completions, expected {expected}"
    );
    Ok(())
}
