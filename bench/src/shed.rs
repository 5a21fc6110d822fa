//! The connection table under a hostile client: one client fills the table
//! with stalled request bodies and idle connections, then well-behaved
//! clients arrive one after another; each must be served within the 2 s
//! target (issue 15). Real server in-process on 127.0.0.1, raw TCP clients.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use queue_core::{Config, Queue};
use queue_server::{App, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request whose body stalls after 1 byte of 100.
const STALLED: &[u8] =
    b"POST /v1/queues/q/jobs HTTP/1.1\r\nHost: b\r\nContent-Length: 100\r\n\r\n{";

/// A new keep-alive client: connects, asks for `/healthz`, reads the whole
/// answer (within 60 s) and keeps the connection.
async fn served(addr: std::net::SocketAddr) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !answer.ends_with(b"\"ok\"}") {
            let n = tcp.read(&mut buffer).await?;
            anyhow::ensure!(n > 0, "the connection closed before the answer");
            answer.extend_from_slice(&buffer[..n]);
        }
        anyhow::ensure!(answer.starts_with(b"HTTP/1.1 200"), "no 200");
        Ok(tcp)
    })
    .await
    .context("a new client was not served in 60 s")?
}

/// Options of the `shed` mode.
#[derive(Debug, Clone, Args)]
pub(crate) struct ShedArgs {
    /// The server's connection cap, all filled by the hostile client.
    #[arg(long, default_value_t = 1024)]
    cap: usize,
    /// Well-behaved clients of the second phase (each sheds a stalled
    /// body); the first phase has one per idle connection.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// The latency target for each new client.
    #[arg(long, default_value_t = 2000)]
    target_ms: u64,
}

/// Runs the mode and prints its table.
pub(crate) fn run(args: &ShedArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: &ShedArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a data directory")?;
    let path = dir.path().to_owned();
    let queue = tokio::task::spawn_blocking(move || Queue::open_with(Config::new(path))).await??;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The defaults, but for the cap.
    let config = ServerConfig {
        max_connections: args.cap,
        ..ServerConfig::default()
    };
    let app = App::new(queue, config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(queue_server::run(listener, app.clone(), async {
        let _ = stopped.await;
    }));
    // The hostile client: half stalled bodies, half idle connections.
    let stalled_n = args.cap / 2;
    let mut hostile = Vec::with_capacity(args.cap);
    for n in 0..args.cap {
        let mut tcp = TcpStream::connect(addr).await?;
        if n < stalled_n {
            tcp.write_all(STALLED).await?;
        }
        hostile.push(tcp);
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        app.wait_in_flight(|n| n == stalled_n),
    )
    .await
    .context("the stalled bodies were not all admitted in 60 s")?;
    // Phase 1: new clients that keep their connection (keep-alive, as real
    // clients do): each finds the table full and sheds a hostile idle one.
    let idle_n = args.cap - stalled_n;
    let mut idle_latencies = Vec::with_capacity(idle_n);
    let mut kept = Vec::with_capacity(args.cap);
    for _ in 0..idle_n {
        let started = Instant::now();
        kept.push(served(addr).await?);
        idle_latencies.push(started.elapsed());
    }
    // They now stall bodies of their own, newer than the hostile ones.
    for tcp in &mut kept {
        tcp.write_all(STALLED).await?;
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        app.wait_in_flight(|n| n == args.cap),
    )
    .await
    .context("the new stalled bodies were not all admitted in 60 s")?;
    // Phase 2: each new client sheds the oldest stalled body (a hostile
    // one), then stalls its own.
    let mut stalled_latencies = Vec::with_capacity(args.clients);
    for _ in 0..args.clients.min(stalled_n) {
        let started = Instant::now();
        let mut tcp = served(addr).await?;
        stalled_latencies.push(started.elapsed());
        tcp.write_all(STALLED).await?;
        kept.push(tcp);
    }
    drop(hostile);
    let _ = stop.send(());
    serving.await??;
    drop(kept);
    let target = Duration::from_millis(args.target_ms);
    println!(
        "shed: cap {} filled by one client ({} stalled bodies, {} idle connections)",
        args.cap, stalled_n, idle_n
    );
    let mut met = true;
    for (what, mut latencies) in [
        ("shedding an idle connection", idle_latencies),
        ("shedding a stalled body", stalled_latencies),
    ] {
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let max = latencies.last().copied().unwrap_or_default();
        let median = latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default();
        met &= max <= target;
        println!(
            "{} new clients {what}: served in median {:.2} ms, max {:.2} ms; target {} ms: {}",
            latencies.len(),
            ms(median),
            ms(max),
            args.target_ms,
            if max <= target { "met" } else { "MISSED" }
        );
    }
    anyhow::ensure!(met, "the {} ms target was missed", args.target_ms);
    Ok(())
}
